/*-------------------------------------------------------------------------
 *
 * aws_config.c
 *	  The AWS credential chain (environment, shared credentials file,
 *	  config file) and region resolution, as the AWS CLI and SDKs do it.
 *	  Secrets are never logged nor put in messages.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <ctype.h>

#include "aws_config.h"

static const char *
profile_name(void)
{
	const char *p = getenv("AWS_PROFILE");

	return (p != NULL && *p != '\0') ? p : "default";
}

static char *
file_path(const char *env, const char *default_name)
{
	const char *p = getenv(env);
	const char *home;

	if (p != NULL && *p != '\0')
		return pg_strdup(p);
	home = getenv("HOME");
	if (home == NULL)
		return NULL;
	return psprintf("%s/.aws/%s", home, default_name);
}

static char *
trim(char *s)
{
	char	   *end;

	while (isspace((unsigned char) *s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char) end[-1]))
		*--end = '\0';
	return s;
}

/*
 * Looks up "key" in section "section" of an INI file.  Returns a malloc'd
 * value, or NULL.  *section_found tells whether the section exists.
 */
static char *
ini_lookup(const char *path, const char *section, const char *key,
		   bool *section_found)
{
	FILE	   *f;
	char		line[8192];
	bool		in_section = false;
	char	   *result = NULL;

	if (path == NULL || (f = fopen(path, "r")) == NULL)
		return NULL;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		char	   *l = trim(line);
		char	   *eq;

		if (*l == '\0' || *l == '#' || *l == ';')
			continue;
		if (*l == '[')
		{
			char	   *close = strchr(l, ']');

			if (close == NULL)
				continue;
			*close = '\0';
			in_section = strcmp(trim(l + 1), section) == 0;
			if (in_section && section_found)
				*section_found = true;
			continue;
		}
		if (!in_section || (eq = strchr(l, '=')) == NULL)
			continue;
		*eq = '\0';
		if (strcmp(trim(l), key) == 0)
		{
			free(result);
			result = pg_strdup(trim(eq + 1));
		}
	}
	fclose(f);
	return result;
}

/* The config file names sections "profile NAME", except "default". */
static char *
config_section(const char *profile)
{
	if (strcmp(profile, "default") == 0)
		return pg_strdup("default");
	return psprintf("profile %s", profile);
}

char *
aws_load_credentials(AwsCredentials *creds)
{
	const char *ak = getenv("AWS_ACCESS_KEY_ID");
	const char *sk = getenv("AWS_SECRET_ACCESS_KEY");
	const char *token = getenv("AWS_SESSION_TOKEN");
	const char *profile;
	char	   *cred_file;
	char	   *conf_file;
	char	   *section;
	bool		found_cred = false;
	bool		found_conf = false;

	memset(creds, 0, sizeof(*creds));

	if ((ak && *ak) || (sk && *sk))
	{
		if (!(ak && *ak))
			return pg_strdup("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
		if (!(sk && *sk))
			return pg_strdup("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
		creds->access_key = pg_strdup(ak);
		creds->secret_key = pg_strdup(sk);
		creds->session_token = (token && *token) ? pg_strdup(token) : NULL;
		creds->source = pg_strdup("environment");
		return NULL;
	}

	profile = profile_name();
	cred_file = file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials");
	conf_file = file_path("AWS_CONFIG_FILE", "config");
	section = config_section(profile);

	creds->access_key = ini_lookup(cred_file, profile, "aws_access_key_id", &found_cred);
	if (creds->access_key != NULL)
	{
		creds->secret_key = ini_lookup(cred_file, profile, "aws_secret_access_key", NULL);
		creds->session_token = ini_lookup(cred_file, profile, "aws_session_token", NULL);
		creds->source = psprintf("profile \"%s\" in %s", profile, cred_file);
	}
	else
	{
		creds->access_key = ini_lookup(conf_file, section, "aws_access_key_id", &found_conf);
		if (creds->access_key != NULL)
		{
			creds->secret_key = ini_lookup(conf_file, section, "aws_secret_access_key", NULL);
			creds->session_token = ini_lookup(conf_file, section, "aws_session_token", NULL);
			creds->source = psprintf("profile \"%s\" in %s", profile, conf_file);
		}
		else
			(void) ini_lookup(conf_file, section, "region", &found_conf);
	}

	if (creds->access_key != NULL && creds->secret_key == NULL)
	{
		char	   *msg = psprintf("%s has aws_access_key_id but no aws_secret_access_key",
								   creds->source);

		free(creds->access_key);
		free(creds->session_token);
		free(creds->source);
		memset(creds, 0, sizeof(*creds));
		return msg;
	}
	if (creds->access_key == NULL)
	{
		if (getenv("AWS_PROFILE") != NULL && !found_cred && !found_conf)
			return psprintf("AWS profile \"%s\" was not found in %s or %s",
							profile, cred_file ? cred_file : "~/.aws/credentials",
							conf_file ? conf_file : "~/.aws/config");
		return psprintf("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
						"or AWS_PROFILE with %s",
						cred_file ? cred_file : "~/.aws/credentials");
	}
	return NULL;
}

char *
aws_resolve_region(const char *cli_region)
{
	const char *r;
	char	   *conf_file;
	char	   *section;
	char	   *region;

	if (cli_region != NULL && *cli_region != '\0')
		return pg_strdup(cli_region);
	if ((r = getenv("AWS_REGION")) != NULL && *r != '\0')
		return pg_strdup(r);
	if ((r = getenv("AWS_DEFAULT_REGION")) != NULL && *r != '\0')
		return pg_strdup(r);
	conf_file = file_path("AWS_CONFIG_FILE", "config");
	section = config_section(profile_name());
	region = ini_lookup(conf_file, section, "region", NULL);
	free(conf_file);
	free(section);
	return region;
}
