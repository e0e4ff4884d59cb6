/*-------------------------------------------------------------------------
 *
 * credentials_int.h
 *	  Inside the AWS credential providers: the provider, and each source's
 *	  fetch (cred_*.c); cred_chain.c chooses the source, credentials.c
 *	  refreshes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDENTIALS_INT_H
#define CREDENTIALS_INT_H

#include <pthread.h>

#include "credentials.h"

typedef enum SourceKind
{
	SRC_ENV,
	SRC_ASSUME_ROLE,
	SRC_WEB_IDENTITY,
	SRC_SHARED_FILE,
	SRC_PROCESS,
	SRC_CONFIG_FILE,
	SRC_CONTAINER,
	SRC_IMDS
} SourceKind;


/*
 * A source's fetch: fills *out, or sets *err (malloc'd) and returns false;
 * *config_error when the configuration is wrong (exit 2) rather than the
 * source not answering.
 */
typedef bool (*CredFetchFn) (AwsCredentialProvider *p, AwsCredentials *out, char **err,
							 bool *config_error);

struct AwsCredentialProvider
{
	SourceKind	kind;
	CredFetchFn fetch;			/* its source's (cred_chain.c sets it) */
	char	   *description;
	char	   *profile;		/* the profile whose keys or settings are read */
	bool		verbose;

	/* assume-role and web identity */
	char	   *role_arn;
	char	   *session_name;
	char	   *external_id;
	int			duration_s;
	AwsCredentialProvider *source;	/* assume-role: what signs the call */
	char	   *token_file;		/* web identity: read at every refresh */
	char	   *sts_endpoint;
	char	   *sts_region;

	/* custom-process */
	char	   *command;
	int			process_timeout_s;

	/* container-role */
	char	   *container_url;

	/* iam-role */
	char	   *imds_endpoint;
	long		imds_timeout_ms;
	int			imds_attempts;
	bool		imds_v1_disabled;
	char	   *imds_role;		/* the role and protocol found first */
	bool		imds_unreachable;	/* nothing answered at the address */

	/* state */
	pthread_mutex_t lock;
	pthread_cond_t refreshed;	/* a refresh ended */
	bool		refreshing;		/* a fetch is under way (one at a time) */
	bool		have;
	AwsCredentials cur;
	double		obtained_at;
	double		refresh_at;		/* when to refresh, 0: only when told */
	double		next_try;		/* after a failed refresh, not before this */
	int			failures;
	bool		invalid;
};

/*
 * A source's fetch: fills *out, or sets *err (malloc'd) and returns false;
 * *config_error when the configuration is wrong (exit 2) rather than the
 * source not answering.
 */
extern bool cred_fetch_env(AwsCredentials *out, char **err, bool *config_error);
extern bool cred_fetch_file_keys(const char *profile, bool config_file, AwsCredentials *out,
								 char **err, bool *config_error);
extern bool cred_fetch_assume_role(AwsCredentialProvider *p, AwsCredentials *out, char **err,
								   bool *config_error);
extern bool cred_fetch_web_identity(AwsCredentialProvider *p, AwsCredentials *out, char **err,
									bool *config_error);
extern bool cred_fetch_process(AwsCredentialProvider *p, AwsCredentials *out, char **err,
							   bool *config_error);
extern bool cred_fetch_container(AwsCredentialProvider *p, AwsCredentials *out, char **err,
								 bool *config_error);
extern bool cred_fetch_imds(AwsCredentialProvider *p, AwsCredentials *out, char **err,
							bool *config_error);

/* Puts a provider's first credentials in use (credentials.c). */
extern void cred_provider_start(AwsCredentialProvider *p, AwsCredentials *c);

/* The STS endpoint and signing region for a region (cred_sts.c). */
extern void cred_sts_endpoint(const char *region, char **endpoint, char **signing_region);

/* Why a container credentials URL is refused, or NULL (cred_metadata.c). */
extern char *cred_container_url_problem(const char *url);

/* Helpers (cred_parse.c). */
extern const char *cred_env(const char *name);
extern bool cred_env_true(const char *name);
extern void cred_copy(const AwsCredentials *from, AwsCredentials *to);
extern void cred_format_time(double t, char *buf, size_t len);
extern char *cred_read_file(const char *path, char **err);
extern char *cred_xml_value(const char *xml, const char *tag);

#endif							/* CREDENTIALS_INT_H */
