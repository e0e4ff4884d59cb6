/*-------------------------------------------------------------------------
 *
 * aws_config.h
 *	  The shared AWS files (credentials and config) and the region, found
 *	  the way AWS tools find them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef AWS_CONFIG_H
#define AWS_CONFIG_H

#include <stdbool.h>

/* AWS_PROFILE, or "default"; whether AWS_PROFILE names it. */
extern const char *aws_profile_name(void);
extern bool aws_profile_is_explicit(void);

/* AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE, or ~/.aws/...; malloc'd. */
extern char *aws_credentials_file_path(void);
extern char *aws_config_file_path(void);

/*
 * A key of a profile: in the credentials file ([NAME]), in the config file
 * ([profile NAME], [default]), or the credentials file's value else the
 * config file's (as botocore merges a profile).  malloc'd or NULL; *found,
 * when given, is set if the section exists.  The files are read each time:
 * a refresh sees what changed.
 */
extern char *aws_credfile_value(const char *profile, const char *key, bool *found);
extern char *aws_config_value(const char *profile, const char *key, bool *found);
extern char *aws_profile_value(const char *profile, const char *key);
extern bool aws_profile_exists(const char *profile);

/* --region, AWS_REGION, AWS_DEFAULT_REGION, then the profile's region. */
extern char *aws_resolve_region(const char *cli_region);

/*
 * A service's endpoint from the environment, as the SDKs read it:
 * AWS_ENDPOINT_URL_<SERVICE> (KINESIS, S3, STS), then AWS_ENDPOINT_URL,
 * none when AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true.  Command-line flags
 * win over both; the result is not to be freed.
 */
extern const char *aws_endpoint_from_env(const char *service);

#endif							/* AWS_CONFIG_H */
