/*-------------------------------------------------------------------------
 *
 * aws_config.c
 *	  The shared AWS files (~/.aws/credentials and ~/.aws/config, INI) and
 *	  region resolution, as the AWS CLI and SDKs read them.  The credential
 *	  chain that uses them is in credentials.c.
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

const char *
aws_profile_name(void)
{
	return profile_name();
}

bool
aws_profile_is_explicit(void)
{
	const char *p = getenv("AWS_PROFILE");

	return p != NULL && *p != '\0';
}

char *
aws_credentials_file_path(void)
{
	return file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials");
}

char *
aws_config_file_path(void)
{
	return file_path("AWS_CONFIG_FILE", "config");
}

char *
aws_credfile_value(const char *profile, const char *key, bool *found)
{
	char	   *path = aws_credentials_file_path();
	char	   *v = ini_lookup(path, profile, key, found);

	free(path);
	return v;
}

char *
aws_config_value(const char *profile, const char *key, bool *found)
{
	char	   *path = aws_config_file_path();
	char	   *section = config_section(profile);
	char	   *v = ini_lookup(path, section, key, found);

	free(path);
	free(section);
	return v;
}

char *
aws_profile_value(const char *profile, const char *key)
{
	char	   *v = aws_credfile_value(profile, key, NULL);

	return v != NULL ? v : aws_config_value(profile, key, NULL);
}

bool
aws_profile_exists(const char *profile)
{
	bool		found = false;

	free(aws_credfile_value(profile, "aws_access_key_id", &found));
	if (!found)
		free(aws_config_value(profile, "region", &found));
	return found;
}

char *
aws_resolve_region(const char *cli_region)
{
	const char *r;

	if (cli_region != NULL && *cli_region != '\0')
		return pg_strdup(cli_region);
	if ((r = getenv("AWS_REGION")) != NULL && *r != '\0')
		return pg_strdup(r);
	if ((r = getenv("AWS_DEFAULT_REGION")) != NULL && *r != '\0')
		return pg_strdup(r);
	return aws_config_value(profile_name(), "region", NULL);
}

const char *
aws_endpoint_from_env(const char *service)
{
	char		name[64];
	const char *v;

	v = getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
	if (v != NULL && pg_strcasecmp(v, "true") == 0)
		return NULL;
	snprintf(name, sizeof(name), "AWS_ENDPOINT_URL_%s", service);
	if ((v = getenv(name)) != NULL && *v != '\0')
		return v;
	if ((v = getenv("AWS_ENDPOINT_URL")) != NULL && *v != '\0')
		return v;
	return NULL;
}
