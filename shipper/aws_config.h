/*-------------------------------------------------------------------------
 *
 * aws_config.h
 *	  AWS credentials and region, found the way AWS tools find them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef AWS_CONFIG_H
#define AWS_CONFIG_H

typedef struct AwsCredentials
{
	char	   *access_key;
	char	   *secret_key;
	char	   *session_token;	/* or NULL */
	char	   *source;			/* where they came from, for messages */
} AwsCredentials;

/*
 * Fills creds from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN,
 * else from the profile (AWS_PROFILE or "default") in the shared
 * credentials file, then the config file.  On failure returns a message
 * (never containing a secret) and leaves creds empty.
 */
extern char *aws_load_credentials(AwsCredentials *creds);

/* --region, AWS_REGION, AWS_DEFAULT_REGION, then the profile's region. */
extern char *aws_resolve_region(const char *cli_region);

#endif							/* AWS_CONFIG_H */
