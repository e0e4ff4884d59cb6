/*-------------------------------------------------------------------------
 *
 * cred_chain.c
 *	  The AWS credential chain: which source the configuration names (see
 *	  credentials.h), made into a provider (credentials.c refreshes it).
 *
 * The order is botocore's (botocore/credentials.py, create_credential_
 * resolver): env, assume-role, assume-role-with-web-identity,
 * shared-credentials-file, custom-process, config-file, container-role,
 * iam-role.  The first source that is configured is the one used; one
 * that is configured but fails is an error, not a fall-through, as in
 * botocore.  Each source fetches in a file of its own: the environment
 * and the shared files below, STS in cred_sts.c (which takes the provider
 * of its source credentials, as aws-c-auth's STS provider does),
 * credential_process in cred_process.c, the container and instance
 * metadata endpoints in cred_metadata.c; what they share, and the parsers
 * of their answers, in cred_parse.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <unistd.h>

#include "aws_config.h"
#include "credentials_int.h"
#include "log.h"
#include "retry.h"

/* ----------------------------------------------------------------
 * Static sources: the environment and the shared files
 * ----------------------------------------------------------------
 */

bool
cred_fetch_env(AwsCredentials *out, char **err, bool *config_error)
{
	const char *ak = cred_env("AWS_ACCESS_KEY_ID");
	const char *sk = cred_env("AWS_SECRET_ACCESS_KEY");
	const char *tk = cred_env("AWS_SESSION_TOKEN");

	if (ak == NULL || sk == NULL)
	{
		*config_error = true;
		*err = pg_strdup(ak ? "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not" :
						 "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
		return false;
	}
	out->access_key = pg_strdup(ak);
	out->secret_key = pg_strdup(sk);
	out->session_token = tk ? pg_strdup(tk) : NULL;
	out->expiration = 0;
	return true;
}

/* The keys of a profile in the credentials file or the config file. */
bool
cred_fetch_file_keys(const char *profile, bool config_file, AwsCredentials *out, char **err,
					 bool *config_error)
{
	char	   *(*get) (const char *, const char *, bool *) =
	config_file ? aws_config_value : aws_credfile_value;
	char	   *path = config_file ? aws_config_file_path() : aws_credentials_file_path();

	out->access_key = get(profile, "aws_access_key_id", NULL);
	out->secret_key = get(profile, "aws_secret_access_key", NULL);
	out->session_token = get(profile, "aws_session_token", NULL);
	out->expiration = 0;
	if (out->access_key == NULL || out->secret_key == NULL)
	{
		*config_error = true;
		*err = psprintf("profile \"%s\" in %s has %s", profile, path ? path : "~/.aws",
						out->access_key ? "aws_access_key_id but no aws_secret_access_key" :
						"no aws_access_key_id (any more)");
		aws_credentials_clear(out);
		free(path);
		return false;
	}
	free(path);
	return true;
}

/* ----------------------------------------------------------------
 * The chain
 * ----------------------------------------------------------------
 */

/*
 * Each source's fetch, by kind: the provider calls it (credentials.c) at
 * every refresh without knowing the source.
 */
static bool
fetch_env(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	return cred_fetch_env(out, err, config_error);
}

static bool
fetch_shared_file(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	return cred_fetch_file_keys(p->profile, false, out, err, config_error);
}

static bool
fetch_config_file(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	return cred_fetch_file_keys(p->profile, true, out, err, config_error);
}

static const CredFetchFn source_fetch[] = {
	[SRC_ENV] = fetch_env,
	[SRC_ASSUME_ROLE] = cred_fetch_assume_role,
	[SRC_WEB_IDENTITY] = cred_fetch_web_identity,
	[SRC_SHARED_FILE] = fetch_shared_file,
	[SRC_PROCESS] = cred_fetch_process,
	[SRC_CONFIG_FILE] = fetch_config_file,
	[SRC_CONTAINER] = cred_fetch_container,
	[SRC_IMDS] = cred_fetch_imds,
};

static AwsCredentialProvider *
new_provider(SourceKind kind, const char *profile, bool verbose)
{
	AwsCredentialProvider *p = pg_malloc0(sizeof(AwsCredentialProvider));

	p->kind = kind;
	p->fetch = source_fetch[kind];
	p->profile = pg_strdup(profile);
	p->verbose = verbose;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->refreshed, NULL);
	return p;
}

static char *
default_session_name(void)
{
	return psprintf("fundrecs_shipper-%ld", (long) time(NULL));
}

static AwsCredentialProvider *imds_provider(const char *profile, bool verbose);
static AwsCredentialProvider *container_provider(const char *profile, bool verbose, char **err);

/*
 * The source of a role_arn profile: source_profile (its static keys, or
 * its own role, up to a depth) or credential_source.
 */
static AwsCredentialProvider *
role_provider(const char *profile, const char *region, bool verbose, int depth, char **err)
{
	char	   *role_arn = aws_profile_value(profile, "role_arn");
	char	   *source_profile = aws_profile_value(profile, "source_profile");
	char	   *credential_source = aws_profile_value(profile, "credential_source");
	char	   *duration = aws_profile_value(profile, "duration_seconds");
	AwsCredentialProvider *p;
	AwsCredentialProvider *src = NULL;

	if (depth > 4)
	{
		*err = psprintf("profile \"%s\": the chain of source_profile roles is too long (a loop?)", profile);
		return NULL;
	}
	if (source_profile && credential_source)
	{
		*err = psprintf("profile \"%s\" has both source_profile and credential_source: give one", profile);
		return NULL;
	}
	if (!source_profile && !credential_source)
	{
		*err = psprintf("profile \"%s\" has role_arn but neither source_profile nor credential_source", profile);
		return NULL;
	}
	if (source_profile)
	{
		char	   *src_role = aws_profile_value(source_profile, "role_arn");
		char	   *src_key = aws_credfile_value(source_profile, "aws_access_key_id", NULL);

		if (!aws_profile_exists(source_profile) && src_role == NULL)
		{
			*err = psprintf("profile \"%s\": source_profile \"%s\" was not found", profile, source_profile);
			return NULL;
		}
		/* A profile that is its own source uses its static keys. */
		if (src_role != NULL && strcmp(source_profile, profile) != 0 && src_key == NULL)
			src = role_provider(source_profile, region, verbose, depth + 1, err);
		else
		{
			src = new_provider(src_key ? SRC_SHARED_FILE : SRC_CONFIG_FILE, source_profile, verbose);
			src->description = psprintf("static keys of profile \"%s\"", source_profile);
		}
		free(src_role);
		free(src_key);
		if (src == NULL)
			return NULL;
	}
	else if (strcmp(credential_source, "Environment") == 0)
	{
		src = new_provider(SRC_ENV, profile, verbose);
		src->description = pg_strdup("environment");
	}
	else if (strcmp(credential_source, "Ec2InstanceMetadata") == 0)
		src = imds_provider(profile, verbose);
	else if (strcmp(credential_source, "EcsContainer") == 0)
	{
		src = container_provider(profile, verbose, err);
		if (src == NULL)
			return NULL;
	}
	else
	{
		*err = psprintf("profile \"%s\": credential_source \"%s\" is not one of Environment, Ec2InstanceMetadata, EcsContainer",
						profile, credential_source);
		return NULL;
	}

	p = new_provider(SRC_ASSUME_ROLE, profile, verbose);
	p->role_arn = role_arn;
	p->source = src;
	p->session_name = aws_profile_value(profile, "role_session_name");
	if (p->session_name == NULL)
		p->session_name = default_session_name();
	p->external_id = aws_profile_value(profile, "external_id");
	if (duration)
	{
		char	   *end;
		long		d = strtol(duration, &end, 10);

		if (*end != '\0' || d < 900 || d > 43200)
		{
			*err = psprintf("profile \"%s\": duration_seconds \"%s\" must be from 900 to 43200", profile, duration);
			return NULL;
		}
		p->duration_s = (int) d;
	}
	cred_sts_endpoint(region, &p->sts_endpoint, &p->sts_region);
	p->description = psprintf("assume-role (role %s, session %s, profile \"%s\", source: %s; STS %s)",
							  role_arn, p->session_name, profile,
							  src->description ? src->description : aws_credentials_method(src),
							  p->sts_endpoint);
	free(source_profile);
	free(credential_source);
	free(duration);
	return p;
}

static AwsCredentialProvider *
container_provider(const char *profile, bool verbose, char **err)
{
	const char *rel = cred_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *full = cred_env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	AwsCredentialProvider *p;

	if (rel == NULL && full == NULL)
	{
		*err = pg_strdup("credential_source EcsContainer needs AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI");
		return NULL;
	}
	if (rel == NULL && (*err = cred_container_url_problem(full)) != NULL)
		return NULL;
	p = new_provider(SRC_CONTAINER, profile, verbose);
	p->container_url = rel ? psprintf("http://169.254.170.2%s", rel) : pg_strdup(full);
	p->description = psprintf("container-role (%s)", p->container_url);
	return p;
}

static long
env_long(const char *name, long def, long min, long max)
{
	const char *v = cred_env(name);
	char	   *end;
	double		d;

	if (v == NULL)
		return def;
	d = strtod(v, &end);
	if (*end != '\0' || d < min || d > max)
	{
		log_warning("ignoring %s=\"%s\": not a number from %ld to %ld", name, v, min, max);
		return def;
	}
	return (long) d;
}

static AwsCredentialProvider *
imds_provider(const char *profile, bool verbose)
{
	AwsCredentialProvider *p = new_provider(SRC_IMDS, profile, verbose);
	const char *e = cred_env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	const char *mode = cred_env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
	size_t		len;

	if (e != NULL)
		p->imds_endpoint = pg_strdup(e);
	else if (mode != NULL && pg_strcasecmp(mode, "IPv6") == 0)
		p->imds_endpoint = pg_strdup("http://[fd00:ec2::254]");
	else
		p->imds_endpoint = pg_strdup("http://169.254.169.254");
	len = strlen(p->imds_endpoint);
	while (len > 0 && p->imds_endpoint[len - 1] == '/')
		p->imds_endpoint[--len] = '\0';
	/* botocore: 1 s and 1 attempt unless told otherwise. */
	p->imds_timeout_ms = env_long("AWS_METADATA_SERVICE_TIMEOUT", 1, 1, 3600) * 1000;
	p->imds_attempts = (int) env_long("AWS_METADATA_SERVICE_NUM_ATTEMPTS", 1, 1, 100);
	p->imds_v1_disabled = cred_env_true("AWS_EC2_METADATA_V1_DISABLED");
	p->description = psprintf("iam-role (instance metadata at %s)", p->imds_endpoint);
	return p;
}

/*
 * Picks the source: the first of the chain that is configured.  NULL with
 * *err when nothing is, or a configured source is malformed.
 */
/*
 * choose_source met a shared file that exists but cannot be read: like a
 * source that does not answer, a runtime failure (exit 1: the service is
 * started again, as when the file's rights are mended or its volume is
 * mounted late), not a configuration error.
 */
static bool unreadable_file = false;

static AwsCredentialProvider *
choose_source(const char *region, bool verbose, char **err)
{
	const char *profile = aws_profile_name();
	AwsCredentialProvider *p;
	char	   *v;
	char	   *path;

	*err = NULL;

	/* 1. Environment (either key set: a half-set pair is an error). */
	if (cred_env("AWS_ACCESS_KEY_ID") || cred_env("AWS_SECRET_ACCESS_KEY"))
	{
		p = new_provider(SRC_ENV, profile, verbose);
		p->description = pg_strdup("env (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)");
		return p;
	}

	/*
	 * The shared files next: one that exists but cannot be read (the service
	 * user lacks the rights) is said to be so, not passed over as if it held
	 * nothing.
	 */
	{
		char	   *files[2] = {aws_credentials_file_path(), aws_config_file_path()};

		for (int i = 0; i < 2; i++)
		{
			if (*err == NULL && files[i] != NULL && access(files[i], F_OK) == 0 &&
				access(files[i], R_OK) != 0)
			{
				*err = psprintf("could not read the AWS %s file \"%s\": %m",
								i == 0 ? "credentials" : "config", files[i]);
				unreadable_file = true;
			}
			free(files[i]);
		}
		if (*err != NULL)
			return NULL;
	}

	if (aws_profile_is_explicit() && !aws_profile_exists(profile) &&
		(v = aws_profile_value(profile, "role_arn")) == NULL)
	{
		char	   *cf = aws_credentials_file_path();
		char	   *cg = aws_config_file_path();

		*err = psprintf("AWS profile \"%s\" was not found in %s or %s", profile,
						cf ? cf : "~/.aws/credentials", cg ? cg : "~/.aws/config");
		free(cf);
		free(cg);
		return NULL;
	}

	/* 2. A role_arn profile with source_profile or credential_source. */
	v = aws_profile_value(profile, "role_arn");
	if (v != NULL)
	{
		char	   *wit = aws_profile_value(profile, "web_identity_token_file");

		free(v);
		if (wit == NULL)
			return role_provider(profile, region, verbose, 0, err);
		free(wit);
	}

	/* 3. Web identity: the environment, else the profile. */
	{
		char	   *token_file = cred_env("AWS_WEB_IDENTITY_TOKEN_FILE") ?
		pg_strdup(cred_env("AWS_WEB_IDENTITY_TOKEN_FILE")) :
		aws_profile_value(profile, "web_identity_token_file");
		char	   *role_arn = cred_env("AWS_ROLE_ARN") ? pg_strdup(cred_env("AWS_ROLE_ARN")) :
		aws_profile_value(profile, "role_arn");

		if (token_file != NULL)
		{
			if (role_arn == NULL)
			{
				*err = pg_strdup("a web identity token file is set (AWS_WEB_IDENTITY_TOKEN_FILE or web_identity_token_file) but no role: set AWS_ROLE_ARN or role_arn");
				return NULL;
			}
			p = new_provider(SRC_WEB_IDENTITY, profile, verbose);
			p->token_file = token_file;
			p->role_arn = role_arn;
			p->session_name = cred_env("AWS_ROLE_SESSION_NAME") ? pg_strdup(cred_env("AWS_ROLE_SESSION_NAME")) :
				aws_profile_value(profile, "role_session_name");
			if (p->session_name == NULL)
				p->session_name = default_session_name();
			cred_sts_endpoint(region, &p->sts_endpoint, &p->sts_region);
			p->description = psprintf("assume-role-with-web-identity (role %s, session %s, token file %s; STS %s)",
									  role_arn, p->session_name, token_file, p->sts_endpoint);
			return p;
		}
		free(role_arn);
	}

	/* 4. The shared credentials file. */
	if ((v = aws_credfile_value(profile, "aws_access_key_id", NULL)) != NULL)
	{
		free(v);
		path = aws_credentials_file_path();
		p = new_provider(SRC_SHARED_FILE, profile, verbose);
		p->description = psprintf("shared-credentials-file (profile \"%s\" in %s)", profile, path);
		free(path);
		return p;
	}

	/* 5. credential_process. */
	if ((v = aws_config_value(profile, "credential_process", NULL)) != NULL)
	{
		p = new_provider(SRC_PROCESS, profile, verbose);
		p->command = v;
		p->process_timeout_s = (int) env_long("FUNDRECS_CREDENTIAL_PROCESS_TIMEOUT", 60, 1, 3600);
		/* The command may hold arguments worth keeping private: not shown. */
		p->description = psprintf("custom-process (credential_process of profile \"%s\")", profile);
		return p;
	}

	/* 6. The config file. */
	if ((v = aws_config_value(profile, "aws_access_key_id", NULL)) != NULL)
	{
		free(v);
		path = aws_config_file_path();
		p = new_provider(SRC_CONFIG_FILE, profile, verbose);
		p->description = psprintf("config-file (profile \"%s\" in %s)", profile, path);
		free(path);
		return p;
	}

	/* 7. The container endpoint. */
	if (cred_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") || cred_env("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
		return container_provider(profile, verbose, err);

	/* 8. Instance metadata. */
	if (!cred_env_true("AWS_EC2_METADATA_DISABLED"))
		return imds_provider(profile, verbose);

	path = aws_credentials_file_path();
	*err = psprintf("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
					"AWS_PROFILE with %s, a role (role_arn, AWS_WEB_IDENTITY_TOKEN_FILE), or run where "
					"a container or instance role is available (AWS_EC2_METADATA_DISABLED is set)",
					path ? path : "~/.aws/credentials");
	free(path);
	return NULL;
}

/*
 * Should instance metadata be here?  Its address was configured, or the
 * machine says it is an EC2 instance (the DMI fields that cloud-init and
 * the SDKs' platform checks read; FUNDRECS_DMI_DIR points tests elsewhere).
 */
static bool
imds_expected(void)
{
	const char *dir = cred_env("FUNDRECS_DMI_DIR") ? cred_env("FUNDRECS_DMI_DIR") : "/sys/class/dmi/id";
	const char *fields[] = {"sys_vendor", "board_vendor", "bios_vendor", "product_name"};

	if (cred_env("AWS_EC2_METADATA_SERVICE_ENDPOINT"))
		return true;
	for (int i = 0; i < lengthof(fields); i++)
	{
		char	   *path = psprintf("%s/%s", dir, fields[i]);
		char	   *err = NULL;
		char	   *v = cred_read_file(path, &err);
		bool		ec2 = v != NULL && (strstr(v, "Amazon EC2") != NULL || strncmp(v, "Amazon", 6) == 0);

		free(path);
		free(v);
		free(err);
		if (ec2)
			return true;
	}
	return false;
}

char *
aws_credentials_resolve(const char *region, bool verbose, AwsCredentialProvider **out,
						bool *config_error)
{
	char	   *err = NULL;
	AwsCredentialProvider *p;
	AwsCredentials c;

	*out = NULL;
	*config_error = false;
	p = choose_source(region, verbose, &err);
	if (p == NULL)
	{
		*config_error = !unreadable_file;
		return err;
	}
	memset(&c, 0, sizeof(c));
	if (!p->fetch(p, &c, &err, config_error))
	{
		char	   *msg;

		/*
		 * Nothing at the instance metadata address: nothing configured,
		 * unless the address was set (AWS_EC2_METADATA_SERVICE_ENDPOINT) or
		 * this is an EC2 instance, where it is an outage (at boot, IMDS may
		 * answer late): a runtime failure, exit 1, so that the service is
		 * started again.
		 */
		if (p->kind == SRC_IMDS && p->imds_unreachable && !imds_expected())
		{
			msg = psprintf("no AWS credentials found: not in the environment nor in a profile, and no instance role (%s)",
						   err);
			*config_error = true;
		}
		else if (p->kind == SRC_IMDS && p->imds_unreachable)
			msg = psprintf("could not get AWS credentials from %s, which this host should have (%s): %s",
						   p->description, cred_env("AWS_EC2_METADATA_SERVICE_ENDPOINT") ?
						   "AWS_EC2_METADATA_SERVICE_ENDPOINT is set" : "an EC2 instance", err);
		else
			msg = psprintf("could not get AWS credentials from %s: %s", p->description, err);
		free(err);
		return msg;
	}
	if (p->kind == SRC_IMDS && p->imds_role != NULL)
	{
		char	   *d = psprintf("iam-role (instance profile role %s at %s)", p->imds_role,
								 p->imds_endpoint);

		free(p->description);
		p->description = d;
	}
	cred_provider_start(p, &c);
	*out = p;
	return NULL;
}
