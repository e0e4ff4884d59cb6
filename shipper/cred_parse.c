/*-------------------------------------------------------------------------
 *
 * cred_parse.c
 *	  What the credential sources share: the environment, small files, and
 *	  the parsers of their answers (JSON, STS XML, ISO 8601 times).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <ctype.h>
#include <time.h>

#include <jansson.h>

#include "credentials_int.h"
#include "log.h"

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

void
cred_copy(const AwsCredentials *from, AwsCredentials *to)
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

bool
aws_error_is_bad_key(const char *code, const char *message)
{
	if (code == NULL || (message != NULL && strstr(message, "Signature expired") != NULL))
		return false;
	return strcmp(code, "InvalidAccessKeyId") == 0 || strcmp(code, "SignatureDoesNotMatch") == 0 ||
		strcmp(code, "UnrecognizedClientException") == 0 ||
		strcmp(code, "InvalidSignatureException") == 0 ||
		strcmp(code, "InvalidClientTokenId") == 0;
}

const char *
cred_env(const char *name)
{
	const char *v = getenv(name);

	return (v != NULL && *v != '\0') ? v : NULL;
}

bool
cred_env_true(const char *name)
{
	const char *v = cred_env(name);

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

void
cred_format_time(double t, char *buf, size_t len)
{
	time_t		tt = (time_t) t;
	struct tm	tm;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Reads a whole small file (a token); trailing newlines dropped. */
char *
cred_read_file(const char *path, char **err)
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
char *
cred_xml_value(const char *xml, const char *tag)
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
