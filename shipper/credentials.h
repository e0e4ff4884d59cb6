/*-------------------------------------------------------------------------
 *
 * credentials.h
 *	  AWS credentials as the SDKs find them (botocore's chain, in its
 *	  order), refreshed before they expire without stopping shipping.
 *
 * The chain: environment; a profile with role_arn (source_profile or
 * credential_source) through STS AssumeRole; web identity (environment or
 * profile) through STS AssumeRoleWithWebIdentity; the shared credentials
 * file; the profile's credential_process; the config file; the container
 * endpoint (ECS, EKS Pod Identity); EC2 instance metadata (IMDSv2).
 *
 * Secrets stay in this process's memory only: never in arguments, logs or
 * messages; copies are zeroed when dropped.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CREDENTIALS_H
#define CREDENTIALS_H

#include <stdbool.h>

typedef struct AwsCredentials
{
	char	   *access_key;
	char	   *secret_key;
	char	   *session_token;	/* or NULL */
	double		expiration;		/* seconds since the epoch, 0: does not expire */
} AwsCredentials;

typedef struct AwsCredentialProvider AwsCredentialProvider;

/*
 * Finds the first source of the chain that is configured and gets its
 * credentials once.  On failure returns a message (never a secret) and
 * sets *config_error when the configuration is wrong (nothing found, a
 * malformed profile, a forbidden container URL) rather than a source
 * failing to answer.  region is the shipper's, for STS.
 */
extern char *aws_credentials_resolve(const char *region, bool verbose,
									 AwsCredentialProvider **out, bool *config_error);

/*
 * Copies the current credentials into *snapshot (freeing what it held),
 * refreshing them first when they are due: a few minutes (with jitter, at
 * most half their lifetime) before they expire, or after an invalidation.
 * A refresh that fails keeps the current credentials, even expired (the
 * call they sign will fail and be retried), and is tried again with
 * backoff.  Thread-safe.
 */
extern void aws_credentials_get(AwsCredentialProvider *p, AwsCredentials *snapshot);

/* The service refused the credentials as expired: refresh on next get. */
extern void aws_credentials_invalidate(AwsCredentialProvider *p);

/* Shutting down: nothing waits for a refresh any more. */
extern void aws_credentials_shutdown(void);

/* SIGHUP: files and sources are read again on the next get. */
extern void aws_credentials_reload(AwsCredentialProvider *p);

/*
 * When the credentials held now expire (seconds since the epoch; 0 when they
 * do not, or none are held yet), and how many refreshes in a row failed;
 * never fetches.
 */
extern double aws_credentials_expiration(AwsCredentialProvider *p, int *failures);

/* botocore's name of the source ("env", "assume-role", "iam-role", ...). */
extern const char *aws_credentials_method(const AwsCredentialProvider *p);

/* The source for messages: method and where (profile, file, role, URL). */
extern const char *aws_credentials_describe(const AwsCredentialProvider *p);

/* "****************ABCD", as aws configure list shows an access key. */
extern void aws_mask_key(const char *key, char *out, int outlen);

/* Zeroes and frees the strings of c. */
extern void aws_credentials_clear(AwsCredentials *c);

/* Whether an error code means the credentials expired. */
extern bool aws_error_is_expired_token(const char *code);

/*
 * Whether an error says the key or its signature is not accepted (an
 * unknown or wrong key, a wrong secret), not an expiry nor a clock skew.
 */
extern bool aws_error_is_bad_key(const char *code, const char *message);

/*
 * Whether fetching the credentials again may bring other keys (roles,
 * STS, a process, metadata): false for the environment and static keys in
 * the shared files, which only an operator can change.
 */
extern bool aws_credentials_refreshable(const AwsCredentialProvider *p);

/*
 * The parsers of the sources' answers (also run by the fuzz targets):
 * an STS AssumeRole* XML answer; a JSON document of credentials (IMDS and
 * the container endpoint: token_name "Token", a "Code" other than Success
 * refused; credential_process: "SessionToken", version_1); an ISO 8601
 * time.  False with *err (JSON) when malformed.
 */
extern bool aws_parse_sts_credentials(const char *xml, AwsCredentials *out);
extern bool aws_parse_credentials_json(const char *text, size_t len, const char *token_name,
									   bool version_1, AwsCredentials *out, char **err);
extern bool aws_parse_iso8601(const char *s, double *out);

#endif							/* CREDENTIALS_H */
