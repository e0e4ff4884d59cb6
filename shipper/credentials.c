/*-------------------------------------------------------------------------
 *
 * credentials.c
 *	  The AWS credential chain and its refresh (see credentials.h).
 *
 * The order is botocore's (botocore/credentials.py, create_credential_
 * resolver): env, assume-role, assume-role-with-web-identity,
 * shared-credentials-file, custom-process, config-file, container-role,
 * iam-role.  The first source that is configured is the one used; one
 * that is configured but fails is an error, not a fall-through, as in
 * botocore.  The method names are botocore's, so that `-v` and
 * `--check-credentials` say what `aws configure list` would.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <ctype.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "aws_config.h"
#include "credentials.h"
#include "http.h"
#include "log.h"
#include "retry.h"

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

static const char *const method_names[] = {
	"env", "assume-role", "assume-role-with-web-identity", "shared-credentials-file",
	"custom-process", "config-file", "container-role", "iam-role"
};

struct AwsCredentialProvider
{
	SourceKind	kind;
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

static bool fetch(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error);

/* ----------------------------------------------------------------
 * Small helpers
 * ----------------------------------------------------------------
 */

void
aws_credentials_clear(AwsCredentials *c)
{
	if (c->secret_key)
		explicit_bzero(c->secret_key, strlen(c->secret_key));
	if (c->session_token)
		explicit_bzero(c->session_token, strlen(c->session_token));
	free(c->access_key);
	free(c->secret_key);
	free(c->session_token);
	memset(c, 0, sizeof(*c));
}

static void
copy_credentials(const AwsCredentials *from, AwsCredentials *to)
{
	to->access_key = from->access_key ? pg_strdup(from->access_key) : NULL;
	to->secret_key = from->secret_key ? pg_strdup(from->secret_key) : NULL;
	to->session_token = from->session_token ? pg_strdup(from->session_token) : NULL;
	to->expiration = from->expiration;
}

void
aws_mask_key(const char *key, char *out, int outlen)
{
	size_t		len = key ? strlen(key) : 0;

	if (len <= 4)
		strlcpy(out, "****", outlen);
	else
		snprintf(out, outlen, "****************%s", key + len - 4);
}

bool
aws_error_is_expired_token(const char *code)
{
	return code != NULL &&
		(strcmp(code, "ExpiredTokenException") == 0 || strcmp(code, "ExpiredToken") == 0 ||
		 strcmp(code, "TokenRefreshRequired") == 0);
}

static const char *
env(const char *name)
{
	const char *v = getenv(name);

	return (v != NULL && *v != '\0') ? v : NULL;
}

static bool
env_true(const char *name)
{
	const char *v = env(name);

	return v != NULL && pg_strcasecmp(v, "true") == 0;
}

/* ISO 8601 ("2026-11-26T03:00:00Z", fractions and offsets allowed) to epoch. */
bool
aws_parse_iso8601(const char *s, double *out)
{
	struct tm	tm;
	int			y,
				mo,
				d,
				h,
				mi;
	double		sec;
	int			n = 0;
	const char *rest;
	int			off = 0;

	if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6)
		return false;
	rest = s + n;
	if (*rest == '+' || *rest == '-')
	{
		int			oh,
					om;

		if (sscanf(rest + 1, "%2d:%2d", &oh, &om) != 2)
			return false;
		off = (oh * 3600 + om * 60) * (*rest == '-' ? -1 : 1);
	}
	else if (*rest != 'Z' && *rest != 'z' && *rest != '\0')
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = 0;
	*out = (double) timegm(&tm) + sec - off;
	return true;
}

static void
format_time(double t, char *buf, size_t len)
{
	time_t		tt = (time_t) t;
	struct tm	tm;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Reads a whole small file (a token); trailing newlines dropped. */
static char *
read_small_file(const char *path, char **err)
{
	FILE	   *f = fopen(path, "r");
	char	   *buf;
	size_t		n;

	if (f == NULL)
	{
		*err = psprintf("could not read \"%s\": %m", path);
		return NULL;
	}
	buf = pg_malloc(65536 + 1);
	n = fread(buf, 1, 65536, f);
	fclose(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (n == 0)
	{
		free(buf);
		*err = psprintf("\"%s\" is empty", path);
		return NULL;
	}
	return buf;
}

/* The value of <tag>...</tag> in an XML document (entities decoded). */
static char *
xml_value(const char *xml, const char *tag)
{
	char	   *open = psprintf("<%s>", tag);
	char	   *close = psprintf("</%s>", tag);
	const char *a = strstr(xml, open);
	const char *b = a ? strstr(a, close) : NULL;
	char	   *out = NULL;

	if (a && b)
	{
		const char *p = a + strlen(open);
		char	   *o;

		out = pg_malloc(b - p + 1);
		o = out;
		while (p < b)
		{
			static const struct
			{
				const char *ent;
				char		c;
			}			ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
			bool		done = false;

			if (*p == '&')
			{
				for (int i = 0; i < 5; i++)
				{
					size_t		l = strlen(ents[i].ent);

					if ((size_t) (b - p) >= l && strncmp(p, ents[i].ent, l) == 0)
					{
						*o++ = ents[i].c;
						p += l;
						done = true;
						break;
					}
				}
			}
			if (!done)
				*o++ = *p++;
		}
		*o = '\0';
	}
	free(open);
	free(close);
	return out;
}

/*
 * Credentials from a JSON object with the given member names (IMDS and
 * the container endpoint say "Token", credential_process "SessionToken").
 */
static bool
json_credentials(json_t *obj, const char *token_name, bool expiration_required,
				 AwsCredentials *out, char **err)
{
	json_t	   *ak = json_object_get(obj, "AccessKeyId");
	json_t	   *sk = json_object_get(obj, "SecretAccessKey");
	json_t	   *tk = json_object_get(obj, token_name);
	json_t	   *ex = json_object_get(obj, "Expiration");

	if (!json_is_string(ak) || !json_is_string(sk) || json_string_length(ak) == 0 ||
		json_string_length(sk) == 0)
	{
		*err = pg_strdup("the answer has no AccessKeyId or SecretAccessKey");
		return false;
	}
	if (tk != NULL && !json_is_null(tk) && !json_is_string(tk))
	{
		*err = psprintf("the answer's %s is not a string", token_name);
		return false;
	}
	memset(out, 0, sizeof(*out));
	if (ex != NULL && !json_is_null(ex))
	{
		if (!json_is_string(ex) || !aws_parse_iso8601(json_string_value(ex), &out->expiration))
		{
			*err = pg_strdup("the answer's Expiration is not an ISO 8601 time");
			return false;
		}
	}
	else if (expiration_required)
	{
		*err = pg_strdup("the answer has no Expiration");
		return false;
	}
	out->access_key = pg_strdup(json_string_value(ak));
	out->secret_key = pg_strdup(json_string_value(sk));
	if (json_is_string(tk) && json_string_length(tk) > 0)
		out->session_token = pg_strdup(json_string_value(tk));
	return true;
}

bool
aws_parse_credentials_json(const char *text, size_t len, const char *token_name,
						   bool version_1, AwsCredentials *out, char **err)
{
	json_error_t jerr;
	json_t	   *doc = json_loadb(text, len, 0, &jerr);
	bool		ok = false;

	memset(out, 0, sizeof(*out));
	/*
	 * Not jansson's message: it quotes the bytes near the error ("near
	 * 'wJalrXUtnFEMI/K7'"), and those may be a secret key or a token.  The
	 * position alone says where to look.
	 */
	if (doc == NULL)
		*err = psprintf("not a JSON object (invalid JSON at line %d, column %d; its bytes are not shown, they may hold a secret)",
						jerr.line, jerr.column);
	else if (!json_is_object(doc))
		*err = pg_strdup("not a JSON object");
	else if (version_1 && (!json_is_integer(json_object_get(doc, "Version")) ||
						   json_integer_value(json_object_get(doc, "Version")) != 1))
		*err = pg_strdup("unsupported Version (expected 1)");
	else if (!version_1 && json_object_get(doc, "Code") != NULL &&
			 (!json_is_string(json_object_get(doc, "Code")) ||
			  strcmp(json_string_value(json_object_get(doc, "Code")), "Success") != 0))
		*err = psprintf("Code %s", json_is_string(json_object_get(doc, "Code")) ?
						json_string_value(json_object_get(doc, "Code")) : "(not a string)");
	else
		ok = json_credentials(doc, token_name, false, out, err);
	json_decref(doc);
	return ok;
}

/* ----------------------------------------------------------------
 * Static sources: the environment and the shared files
 * ----------------------------------------------------------------
 */

static bool
fetch_env(AwsCredentials *out, char **err, bool *config_error)
{
	const char *ak = env("AWS_ACCESS_KEY_ID");
	const char *sk = env("AWS_SECRET_ACCESS_KEY");
	const char *tk = env("AWS_SESSION_TOKEN");

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
static bool
fetch_file_keys(const char *profile, bool config_file, AwsCredentials *out, char **err,
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
 * STS: AssumeRole and AssumeRoleWithWebIdentity
 * ----------------------------------------------------------------
 */

/* Regions where AWS_STS_REGIONAL_ENDPOINTS=legacy means the global endpoint. */
static const char *const legacy_sts_regions[] = {
	"ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "aws-global",
	"ca-central-1", "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3",
	"sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2", NULL
};

/*
 * The STS endpoint as botocore picks it: AWS_ENDPOINT_URL_STS, then
 * AWS_ENDPOINT_URL (unless AWS_IGNORE_CONFIGURED_ENDPOINT_URLS), else
 * regional, except the global endpoint for the legacy regions when
 * AWS_STS_REGIONAL_ENDPOINTS=legacy, or without a region.
 */
static void
sts_endpoint(const char *region, char **endpoint, char **signing_region)
{
	const char *e = NULL;
	bool		legacy = false;

	if (!env_true("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"))
		e = env("AWS_ENDPOINT_URL_STS") ? env("AWS_ENDPOINT_URL_STS") : env("AWS_ENDPOINT_URL");
	*signing_region = pg_strdup(region ? region : "us-east-1");
	if (e != NULL)
	{
		*endpoint = pg_strdup(e);
		return;
	}
	if (region != NULL && env("AWS_STS_REGIONAL_ENDPOINTS") &&
		pg_strcasecmp(env("AWS_STS_REGIONAL_ENDPOINTS"), "legacy") == 0)
	{
		for (int i = 0; legacy_sts_regions[i]; i++)
			if (strcmp(legacy_sts_regions[i], region) == 0)
				legacy = true;
	}
	if (region == NULL || legacy)
	{
		free(*signing_region);
		*signing_region = pg_strdup("us-east-1");
		*endpoint = pg_strdup("https://sts.amazonaws.com");
	}
	else if (strncmp(region, "cn-", 3) == 0)
		*endpoint = psprintf("https://sts.%s.amazonaws.com.cn", region);
	else
		*endpoint = psprintf("https://sts.%s.amazonaws.com", region);
}

bool
aws_parse_sts_credentials(const char *xml, AwsCredentials *out)
{
	char	   *ak = xml_value(xml, "AccessKeyId");
	char	   *sk = xml_value(xml, "SecretAccessKey");
	char	   *tk = xml_value(xml, "SessionToken");
	char	   *ex = xml_value(xml, "Expiration");
	bool		ok = false;

	memset(out, 0, sizeof(*out));
	if (ak != NULL && sk != NULL && tk != NULL && ex != NULL && *ak != '\0' && *sk != '\0' &&
		aws_parse_iso8601(ex, &out->expiration))
	{
		out->access_key = ak;
		out->secret_key = sk;
		out->session_token = tk;
		ok = true;
	}
	else
	{
		free(ak);
		if (sk)
			explicit_bzero(sk, strlen(sk));
		free(sk);
		if (tk)
			explicit_bzero(tk, strlen(tk));
		free(tk);
		out->expiration = 0;
	}
	free(ex);
	return ok;
}

static void
append_form(PQExpBuffer b, const char *name, const char *value)
{
	char	   *enc = sigv4_uri_encode(value, strlen(value), false);

	appendPQExpBuffer(b, "&%s=%s", name, enc);
	free(enc);
}

/*
 * One STS call (form-encoded Query API), signed with signer unless NULL
 * (AssumeRoleWithWebIdentity is not signed), answered with the XML of
 * <action>Response.  Retries transport failures and 5xx a few times.
 */
static bool
sts_call(AwsCredentialProvider *p, const char *action, PQExpBuffer form,
		 const AwsCredentials *signer, AwsCredentials *out, char **err)
{
	HttpClient	http;
	HttpResponse resp;
	char	   *host;
	char	   *path;
	char	   *herr;
	bool		ok = false;

	host = http_host_header(p->sts_endpoint, &path, &herr);
	if (host == NULL)
	{
		*err = psprintf("STS endpoint: %s", herr);
		return false;
	}
	http_client_init(&http, NULL, 10000);
	http_response_init(&resp);
	for (int attempt = 1; attempt <= 3; attempt++)
	{
		struct curl_slist *headers;
		bool		reached;
		SigV4Header extra[1] = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}};

		if (signer != NULL)
		{
			AwsRequestSpec spec;

			memset(&spec, 0, sizeof(spec));
			spec.method = "POST";
			spec.host = host;
			spec.path = path;
			spec.extra = extra;
			spec.nextra = 1;
			spec.body = form->data;
			spec.len = form->len;
			spec.region = p->sts_region;
			spec.service = "sts";
			headers = aws_signed_headers(&spec, signer);
		}
		else
		{
			headers = curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded; charset=utf-8");
			headers = curl_slist_append(headers, "Expect:");
		}
		reached = http_request(&http, "POST", p->sts_endpoint, headers, form->data, form->len, &resp);
		curl_slist_free_all(headers);
		if (reached && resp.status == 200)
		{
			if (aws_parse_sts_credentials(resp.body.data, out))
				ok = true;
			else
				*err = psprintf("malformed %s response from %s (HTTP 200, %zu bytes): no credentials with an expiration",
								action, p->sts_endpoint, resp.body.len);
			explicit_bzero(resp.body.data, resp.body.len);
			break;
		}
		if (reached && resp.status < 500 && resp.status != 429)
		{
			char	   *code = xml_value(resp.body.data, "Code");
			char	   *msg = xml_value(resp.body.data, "Message");

			*err = psprintf("STS %s at %s refused: HTTP %ld%s%s%s%s", action, p->sts_endpoint,
							resp.status, code ? ": " : "", code ? code : "",
							msg ? ": " : "", msg ? msg : "");
			free(code);
			free(msg);
			break;
		}
		*err = reached ? psprintf("STS %s at %s: HTTP %ld", action, p->sts_endpoint, resp.status) :
			psprintf("could not reach STS at %s: %s", p->sts_endpoint, resp.error);
		if (attempt < 3)
		{
			free(*err);
			*err = NULL;
			pg_usleep(retry_backoff_ms(attempt) * 1000L);
		}
	}
	http_response_free(&resp);
	curl_easy_cleanup(http.curl);
	free(host);
	free(path);
	return ok;
}

static bool
fetch_assume_role(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	AwsCredentials src;
	PQExpBufferData form;
	bool		ok;

	memset(&src, 0, sizeof(src));
	aws_credentials_get(p->source, &src);
	if (src.access_key == NULL)
	{
		*err = psprintf("no credentials from the source of role %s", p->role_arn);
		return false;
	}
	initPQExpBuffer(&form);
	appendPQExpBufferStr(&form, "Action=AssumeRole&Version=2011-06-15");
	append_form(&form, "RoleArn", p->role_arn);
	append_form(&form, "RoleSessionName", p->session_name);
	if (p->external_id)
		append_form(&form, "ExternalId", p->external_id);
	if (p->duration_s > 0)
		appendPQExpBuffer(&form, "&DurationSeconds=%d", p->duration_s);
	ok = sts_call(p, "AssumeRole", &form, &src, out, err);
	aws_credentials_clear(&src);
	termPQExpBuffer(&form);
	return ok;
}

static bool
fetch_web_identity(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	PQExpBufferData form;
	char	   *token = read_small_file(p->token_file, err);
	bool		ok;

	if (token == NULL)
		return false;
	initPQExpBuffer(&form);
	appendPQExpBufferStr(&form, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15");
	append_form(&form, "RoleArn", p->role_arn);
	append_form(&form, "RoleSessionName", p->session_name);
	append_form(&form, "WebIdentityToken", token);
	if (p->duration_s > 0)
		appendPQExpBuffer(&form, "&DurationSeconds=%d", p->duration_s);
	ok = sts_call(p, "AssumeRoleWithWebIdentity", &form, NULL, out, err);
	explicit_bzero(token, strlen(token));
	free(token);
	explicit_bzero(form.data, form.len);
	termPQExpBuffer(&form);
	return ok;
}

/* ----------------------------------------------------------------
 * credential_process
 * ----------------------------------------------------------------
 */

/*
 * Runs the profile's credential_process with /bin/sh -c, reads at most
 * 64 kB of its standard output, kills it (its process group) after the
 * timeout.  Its standard error goes into the message when it fails.
 */
/*
 * The credential_process child running now (the leader of its own process
 * group), killed when the shipper exits: a hung one must not outlive it.
 */
static volatile pid_t process_child = 0;
static pthread_once_t process_child_once = PTHREAD_ONCE_INIT;

static void
kill_process_child(void)
{
	pid_t		pid = process_child;

	if (pid > 0)
	{
		kill(-pid, SIGKILL);
		/* Reaped here: no zombie left for whoever inherits it. */
		(void) waitpid(pid, NULL, 0);
	}
}

static void
register_process_child_cleanup(void)
{
	atexit(kill_process_child);
}

static bool
fetch_process(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	int			outp[2],
				errp[2];
	pid_t		pid;
	PQExpBufferData so,
				se;
	double		deadline = now_seconds() + p->process_timeout_s;
	bool		timed_out = false;
	int			status = 0;
	bool		ok = false;

	if (pipe(outp) < 0 || pipe(errp) < 0)
	{
		*err = psprintf("could not create a pipe: %m");
		return false;
	}
	pthread_once(&process_child_once, register_process_child_cleanup);
	pid = fork();
	if (pid < 0)
	{
		*err = psprintf("could not start credential_process: %m");
		return false;
	}
	if (pid > 0)
		process_child = pid;
	if (pid == 0)
	{
		setpgid(0, 0);
		dup2(outp[1], STDOUT_FILENO);
		dup2(errp[1], STDERR_FILENO);
		close(outp[0]);
		close(errp[0]);
		close(outp[1]);
		close(errp[1]);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", p->command, (char *) NULL);
		_exit(127);
	}
	close(outp[1]);
	close(errp[1]);
	initPQExpBuffer(&so);
	initPQExpBuffer(&se);
	{
		struct pollfd fds[2] = {{outp[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
		int			open_fds = 2;

		while (open_fds > 0)
		{
			double		left = deadline - now_seconds();
			int			r;

			if (left <= 0)
			{
				timed_out = true;
				break;
			}
			r = poll(fds, 2, (int) Min(left * 1000 + 1, 1000));
			if (r < 0 && errno != EINTR)
				break;
			for (int i = 0; i < 2; i++)
			{
				if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				{
					char		buf[4096];
					ssize_t		n = read(fds[i].fd, buf, sizeof(buf));
					PQExpBuffer b = i == 0 ? &so : &se;

					if (n <= 0)
					{
						close(fds[i].fd);
						fds[i].fd = -1;
						open_fds--;
					}
					else if (b->len < 65536)
						appendBinaryPQExpBuffer(b, buf, n);
				}
			}
		}
		for (int i = 0; i < 2; i++)
			if (fds[i].fd >= 0)
				close(fds[i].fd);
	}
	if (timed_out)
		kill(-pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	process_child = 0;

	while (se.len > 0 && (se.data[se.len - 1] == '\n' || se.data[se.len - 1] == '\r'))
		se.data[--se.len] = '\0';
	if (timed_out)
		*err = psprintf("credential_process of profile \"%s\" did not finish within %d s and was killed",
						p->profile, p->process_timeout_s);
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		*err = psprintf("credential_process of profile \"%s\" failed (%s %d)%s%.*s", p->profile,
						WIFEXITED(status) ? "exit code" : "signal",
						WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
						se.len ? ": " : "", (int) Min(se.len, 500), se.data);
	else if (aws_parse_credentials_json(so.data, so.len, "SessionToken", true, out, err))
		ok = true;
	else
	{
		char	   *inner = *err;

		*err = strncmp(inner, "not a JSON", 10) == 0 ?
			psprintf("credential_process of profile \"%s\" did not print a JSON object", p->profile) :
			psprintf("credential_process of profile \"%s\": %s", p->profile, inner);
		free(inner);
	}
	explicit_bzero(so.data, so.len);
	termPQExpBuffer(&so);
	termPQExpBuffer(&se);
	return ok;
}

/* ----------------------------------------------------------------
 * Container credentials (ECS task role, EKS Pod Identity)
 * ----------------------------------------------------------------
 */

/*
 * Plain http only to the hosts the SDKs allow: loopback, the ECS and EKS
 * link-local addresses.  Returns NULL if allowed, else why not.
 */
static char *
container_url_problem(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *problem = NULL;

	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		problem = psprintf("AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\" is not a URL", url);
	else if (strcmp(scheme, "https") == 0)
		;
	else if (strcmp(scheme, "http") != 0)
		problem = psprintf("AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\": the scheme must be http or https", url);
	else if (!(strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0 ||
			   strcmp(host, "[::1]") == 0 || strcmp(host, "169.254.170.2") == 0 ||
			   strcmp(host, "169.254.170.23") == 0 || strcmp(host, "[fd00:ec2::23]") == 0))
		problem = psprintf("AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\": plain http is allowed only to loopback, 169.254.170.2, 169.254.170.23 and fd00:ec2::23", url);
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return problem;
}

static bool
fetch_container(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	HttpClient	http;
	HttpResponse resp;
	struct curl_slist *headers = NULL;
	char	   *token = NULL;
	const char *tfile = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	bool		ok = false;

	/* The token file first (EKS Pod Identity rotates it), read every time. */
	if (tfile != NULL)
	{
		if ((token = read_small_file(tfile, err)) == NULL)
			return false;
	}
	else if (env("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
		token = pg_strdup(env("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
	if (token != NULL)
	{
		char	   *line;

		if (strpbrk(token, "\r\n") != NULL)
		{
			*config_error = true;
			*err = pg_strdup("the container authorization token holds a line break");
			explicit_bzero(token, strlen(token));
			free(token);
			return false;
		}
		line = psprintf("Authorization: %s", token);
		headers = curl_slist_append(headers, line);
		explicit_bzero(line, strlen(line));
		explicit_bzero(token, strlen(token));
		free(line);
		free(token);
	}
	headers = curl_slist_append(headers, "Accept: application/json");
	http_client_init(&http, NULL, 2000);
	http_response_init(&resp);
	for (int attempt = 1; attempt <= 3; attempt++)
	{
		bool		reached = http_request(&http, "GET", p->container_url, headers, NULL, 0, &resp);

		if (reached && resp.status == 200)
		{
			if (aws_parse_credentials_json(resp.body.data, resp.body.len, "Token", false, out, err))
				ok = true;
			else
			{
				char	   *inner = *err;

				*err = psprintf("malformed answer from the container credentials endpoint %s: %s",
								p->container_url, inner);
				free(inner);
			}
			explicit_bzero(resp.body.data, resp.body.len);
			break;
		}
		*err = reached ?
			psprintf("container credentials endpoint %s answered HTTP %ld", p->container_url, resp.status) :
			psprintf("could not reach the container credentials endpoint %s: %s", p->container_url, resp.error);
		if (reached && resp.status < 500)
			break;
		if (attempt < 3)
		{
			free(*err);
			*err = NULL;
			pg_usleep(1000000L);
		}
	}
	/* The Authorization line is in the list. */
	for (struct curl_slist *h = headers; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(headers);
	http_response_free(&resp);
	curl_easy_cleanup(http.curl);
	return ok;
}

/* ----------------------------------------------------------------
 * EC2 instance metadata (IMDSv2, IMDSv1 only as the SDKs fall back)
 * ----------------------------------------------------------------
 */

static bool
imds_get(AwsCredentialProvider *p, HttpClient *http, const char *path, const char *token,
		 HttpResponse *resp, char **err)
{
	char	   *url = psprintf("%s%s", p->imds_endpoint, path);
	struct curl_slist *headers = NULL;
	bool		ok = false;

	if (token)
	{
		char	   *line = psprintf("X-aws-ec2-metadata-token: %s", token);

		headers = curl_slist_append(headers, line);
		free(line);
	}
	for (int attempt = 1; attempt <= p->imds_attempts; attempt++)
	{
		bool		reached = http_request(http, "GET", url, headers, NULL, 0, resp);

		if (reached && resp->status == 200)
		{
			ok = true;
			break;
		}
		free(*err);
		*err = reached ? psprintf("instance metadata %s answered HTTP %ld", url, resp->status) :
			psprintf("could not reach the instance metadata service at %s: %s", p->imds_endpoint, resp->error);
		if (reached && resp->status < 500)
			break;
	}
	curl_slist_free_all(headers);
	free(url);
	return ok;
}

static bool
fetch_imds(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	HttpClient	http;
	HttpResponse resp;
	char	   *token = NULL;
	char	   *role = NULL;
	char	   *path;
	bool		ok = false;
	bool		v1_fallback = false;

	*err = NULL;
	http_client_init(&http, NULL, p->imds_timeout_ms);
	http.connect_timeout_ms = p->imds_timeout_ms;
	http_response_init(&resp);

	/* IMDSv2: a session token first. */
	{
		char	   *url = psprintf("%s/latest/api/token", p->imds_endpoint);
		struct curl_slist *headers = curl_slist_append(NULL, "X-aws-ec2-metadata-token-ttl-seconds: 21600");
		bool		reached = false;

		for (int attempt = 1; attempt <= p->imds_attempts && !reached; attempt++)
			reached = http_request(&http, "PUT", url, headers, "", 0, &resp);
		curl_slist_free_all(headers);
		free(url);
		if (reached && resp.status == 200 && resp.body.len > 0)
			token = pg_strdup(resp.body.data);
		else if (reached && resp.status == 400)
		{
			*err = psprintf("the instance metadata service at %s refused the token request (HTTP 400)",
							p->imds_endpoint);
			goto done;
		}
		else
			v1_fallback = true;	/* 403, 404, 405, a timeout: as the SDKs do */
	}
	if (v1_fallback && p->imds_v1_disabled)
	{
		p->imds_unreachable = resp.status == 0;
		*err = psprintf("could not get an IMDSv2 token from %s (%s), and AWS_EC2_METADATA_V1_DISABLED forbids IMDSv1",
						p->imds_endpoint, resp.status ? "an HTTP error" : resp.error);
		goto done;
	}

	if (!imds_get(p, &http, "/latest/meta-data/iam/security-credentials/", token, &resp, err))
	{
		p->imds_unreachable = resp.status == 0;
		goto done;
	}
	role = pnstrdup(resp.body.data, strcspn(resp.body.data, "\r\n"));
	if (*role == '\0' || strchr(role, '/') != NULL)
	{
		*err = psprintf("the instance metadata service at %s names no IAM role (is an instance profile attached?)",
						p->imds_endpoint);
		goto done;
	}
	path = psprintf("/latest/meta-data/iam/security-credentials/%s", role);
	if (imds_get(p, &http, path, token, &resp, err))
	{
		free(*err);
		*err = NULL;
		if (aws_parse_credentials_json(resp.body.data, resp.body.len, "Token", false, out, err))
			ok = true;
		else
		{
			char	   *inner = *err;

			*err = psprintf("malformed instance metadata credentials for role %s: %s", role, inner);
			free(inner);
		}
		explicit_bzero(resp.body.data, resp.body.len);
	}
	free(path);
	if (ok && p->imds_role == NULL)
		p->imds_role = psprintf("%s, %s", role, v1_fallback ? "IMDSv1" : "IMDSv2");

done:
	if (token)
		explicit_bzero(token, strlen(token));
	free(token);
	free(role);
	http_response_free(&resp);
	curl_easy_cleanup(http.curl);
	return ok;
}

/* ----------------------------------------------------------------
 * The chain
 * ----------------------------------------------------------------
 */

static bool
fetch(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	memset(out, 0, sizeof(*out));
	*err = NULL;
	switch (p->kind)
	{
		case SRC_ENV:
			return fetch_env(out, err, config_error);
		case SRC_SHARED_FILE:
			return fetch_file_keys(p->profile, false, out, err, config_error);
		case SRC_CONFIG_FILE:
			return fetch_file_keys(p->profile, true, out, err, config_error);
		case SRC_ASSUME_ROLE:
			return fetch_assume_role(p, out, err, config_error);
		case SRC_WEB_IDENTITY:
			return fetch_web_identity(p, out, err, config_error);
		case SRC_PROCESS:
			return fetch_process(p, out, err, config_error);
		case SRC_CONTAINER:
			return fetch_container(p, out, err, config_error);
		case SRC_IMDS:
			return fetch_imds(p, out, err, config_error);
	}
	return false;
}

static AwsCredentialProvider *
new_provider(SourceKind kind, const char *profile, bool verbose)
{
	AwsCredentialProvider *p = pg_malloc0(sizeof(AwsCredentialProvider));

	p->kind = kind;
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
	sts_endpoint(region, &p->sts_endpoint, &p->sts_region);
	p->description = psprintf("assume-role (role %s, session %s, profile \"%s\", source: %s; STS %s)",
							  role_arn, p->session_name, profile,
							  src->description ? src->description : method_names[src->kind],
							  p->sts_endpoint);
	free(source_profile);
	free(credential_source);
	free(duration);
	return p;
}

static AwsCredentialProvider *
container_provider(const char *profile, bool verbose, char **err)
{
	const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	AwsCredentialProvider *p;

	if (rel == NULL && full == NULL)
	{
		*err = pg_strdup("credential_source EcsContainer needs AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI");
		return NULL;
	}
	if (rel == NULL && (*err = container_url_problem(full)) != NULL)
		return NULL;
	p = new_provider(SRC_CONTAINER, profile, verbose);
	p->container_url = rel ? psprintf("http://169.254.170.2%s", rel) : pg_strdup(full);
	p->description = psprintf("container-role (%s)", p->container_url);
	return p;
}

static long
env_long(const char *name, long def, long min, long max)
{
	const char *v = env(name);
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
	const char *e = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	const char *mode = env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
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
	p->imds_v1_disabled = env_true("AWS_EC2_METADATA_V1_DISABLED");
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
	if (env("AWS_ACCESS_KEY_ID") || env("AWS_SECRET_ACCESS_KEY"))
	{
		p = new_provider(SRC_ENV, profile, verbose);
		p->description = pg_strdup("env (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)");
		return p;
	}

	/*
	 * The shared files next: one that exists but cannot be read (the
	 * service user lacks the rights) is said to be so, not passed over as
	 * if it held nothing.
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
		char	   *token_file = env("AWS_WEB_IDENTITY_TOKEN_FILE") ?
			pg_strdup(env("AWS_WEB_IDENTITY_TOKEN_FILE")) :
			aws_profile_value(profile, "web_identity_token_file");
		char	   *role_arn = env("AWS_ROLE_ARN") ? pg_strdup(env("AWS_ROLE_ARN")) :
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
			p->session_name = env("AWS_ROLE_SESSION_NAME") ? pg_strdup(env("AWS_ROLE_SESSION_NAME")) :
				aws_profile_value(profile, "role_session_name");
			if (p->session_name == NULL)
				p->session_name = default_session_name();
			sts_endpoint(region, &p->sts_endpoint, &p->sts_region);
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
	if (env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") || env("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
		return container_provider(profile, verbose, err);

	/* 8. Instance metadata. */
	if (!env_true("AWS_EC2_METADATA_DISABLED"))
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
	const char *dir = env("FUNDRECS_DMI_DIR") ? env("FUNDRECS_DMI_DIR") : "/sys/class/dmi/id";
	const char *fields[] = {"sys_vendor", "board_vendor", "bios_vendor", "product_name"};

	if (env("AWS_EC2_METADATA_SERVICE_ENDPOINT"))
		return true;
	for (int i = 0; i < lengthof(fields); i++)
	{
		char	   *path = psprintf("%s/%s", dir, fields[i]);
		char	   *err = NULL;
		char	   *v = read_small_file(path, &err);
		bool		ec2 = v != NULL && (strstr(v, "Amazon EC2") != NULL || strncmp(v, "Amazon", 6) == 0);

		free(path);
		free(v);
		free(err);
		if (ec2)
			return true;
	}
	return false;
}

static void
schedule(AwsCredentialProvider *p, double now)
{
	double		lifetime;
	double		window;

	if (p->cur.expiration <= 0)
	{
		p->refresh_at = 0;
		return;
	}
	/* The SDKs refresh a few minutes ahead, with jitter; short lives at half. */
	lifetime = p->cur.expiration - now;
	window = 300 + (double) (random() % 60000) / 1000.0;
	if (window > lifetime / 2)
		window = lifetime / 2;
	p->refresh_at = p->cur.expiration - window;
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
	if (!fetch(p, &c, &err, config_error))
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
						   p->description, env("AWS_EC2_METADATA_SERVICE_ENDPOINT") ?
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
	p->cur = c;
	p->have = true;
	p->obtained_at = now_seconds();
	schedule(p, p->obtained_at);
	*out = p;
	return NULL;
}

/* Set by aws_credentials_shutdown: waits for a refresh end at once. */
static volatile bool shutting_down = false;

/* Keys that may still be used for a while (10 s at least). */
static bool
usable(AwsCredentialProvider *p, double now)
{
	return p->have && !p->invalid && (p->cur.expiration <= 0 || p->cur.expiration - now > 10);
}

/*
 * Fetches credentials (without the lock: the current keys stay usable by
 * every other thread meanwhile) and installs them, or counts the failure.
 * The caller set p->refreshing.
 */
static void
refresh_now(AwsCredentialProvider *p)
{
	AwsCredentials c;
	char	   *err = NULL;
	bool		config_error = false;
	bool		ok = fetch(p, &c, &err, &config_error);
	double		now = now_seconds();

	pthread_mutex_lock(&p->lock);
	if (ok)
	{
		char		masked[32];
		char		until[32] = "";

		if (p->verbose)
		{
			aws_mask_key(c.access_key, masked, sizeof(masked));
			if (c.expiration > 0)
				format_time(c.expiration, until, sizeof(until));
			log_info("AWS credentials refreshed from %s: access key %s%s%s",
					 p->description, masked, until[0] ? ", expire at " : "", until);
		}
		aws_credentials_clear(&p->cur);
		p->cur = c;
		p->have = true;
		p->invalid = false;
		p->failures = 0;
		p->next_try = 0;
		p->obtained_at = now;
		schedule(p, now);
	}
	else
	{
		double		wait = Min(60.0, (double) (1 << Min(p->failures, 6)));
		char		until[32];

		p->failures++;
		p->next_try = now + wait;
		if (p->have && p->cur.expiration > now && !p->invalid)
		{
			format_time(p->cur.expiration, until, sizeof(until));
			log_warning("could not refresh AWS credentials from %s: %s; the current ones stay in use until they expire at %s",
						p->description, err, until);
		}
		else
			log_warning("could not refresh AWS credentials from %s: %s; trying again in %.0f s",
						p->description, err, wait);
		free(err);
	}
	p->refreshing = false;
	pthread_cond_broadcast(&p->refreshed);
	pthread_mutex_unlock(&p->lock);
}

static void *
refresh_thread(void *arg)
{
	refresh_now((AwsCredentialProvider *) arg);
	return NULL;
}

/*
 * The credentials to sign with.  A refresh that is due while the current
 * keys are still good runs in a thread of its own, so that a slow or hung
 * source (credential_process, STS, instance metadata) never holds up a
 * delivery; only a caller with no usable keys waits for one, and not past
 * aws_credentials_shutdown().
 */
void
aws_credentials_get(AwsCredentialProvider *p, AwsCredentials *snapshot)
{
	double		now = now_seconds();

	pthread_mutex_lock(&p->lock);
	if (!p->refreshing && now >= p->next_try &&
		(!p->have || p->invalid || (p->refresh_at > 0 && now >= p->refresh_at)))
	{
		bool		in_background;
		pthread_t	thread;
		pthread_attr_t attr;

		/*
		 * Always in a thread of its own: a caller with no usable keys waits
		 * below, where a shutdown can end the wait; the fetch itself (a
		 * credential_process may take a minute) cannot be interrupted.
		 */
		p->refreshing = true;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		in_background = pthread_create(&thread, &attr, refresh_thread, p) == 0;
		pthread_attr_destroy(&attr);
		if (!in_background)
		{
			pthread_mutex_unlock(&p->lock);
			refresh_now(p);
			pthread_mutex_lock(&p->lock);
		}
	}
	while (p->refreshing && !usable(p, now_seconds()) && !shutting_down)
	{
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 200 * 1000 * 1000;
		if (until.tv_nsec >= 1000 * 1000 * 1000)
		{
			until.tv_sec++;
			until.tv_nsec -= 1000 * 1000 * 1000;
		}
		pthread_cond_timedwait(&p->refreshed, &p->lock, &until);
	}
	aws_credentials_clear(snapshot);
	if (p->have)
		copy_credentials(&p->cur, snapshot);
	pthread_mutex_unlock(&p->lock);
}

void
aws_credentials_shutdown(void)
{
	shutting_down = true;
}

void
aws_credentials_invalidate(AwsCredentialProvider *p)
{
	pthread_mutex_lock(&p->lock);
	if (!p->invalid)
		p->next_try = 0;
	p->invalid = true;
	pthread_mutex_unlock(&p->lock);
	/* An assumed role's source may be what expired. */
	if (p->source)
		aws_credentials_invalidate(p->source);
}

void
aws_credentials_reload(AwsCredentialProvider *p)
{
	aws_credentials_invalidate(p);
}

const char *
aws_credentials_method(const AwsCredentialProvider *p)
{
	return method_names[p->kind];
}

const char *
aws_credentials_describe(const AwsCredentialProvider *p)
{
	return p->description;
}
