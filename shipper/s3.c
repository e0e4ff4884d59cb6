/*-------------------------------------------------------------------------
 *
 * s3.c
 *	  The S3 target: rows are held per route and day, gzip-compressed as
 *	  they arrive, and written at each flush as one object per route and
 *	  day with PutObject, signed with SigV4 (service s3, with
 *	  x-amz-content-sha256).
 *
 *	  Object names carry the commit LSNs of their first and last rows as
 *	  zero-padded hex, so names sort in commit order.  After a crash, rows
 *	  after the confirmed position are shipped again, possibly into objects
 *	  with other names; every row carries its own lsn and key, and the
 *	  Athena views keep one row per (table, key, lsn) (see scripts/athena).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <time.h>

#include "log.h"
#include "pqexpbuffer.h"
#include "s3.h"
#include "sigv4.h"

char *
s3_init(S3Target *s, AwsCredentialProvider *provider, const char *url,
		const char *endpoint, const char *region,
		const char *addressing, bool gzip, const char *ca_file, long timeout_ms,
		int retry_timeout_s)
{
	const char *rest;
	const char *slash;
	char	   *err;
	char	   *host;

	memset(s, 0, sizeof(*s));
	if (strncmp(url, "s3://", 5) != 0 || url[5] == '\0' || url[5] == '/')
		return psprintf("invalid --s3-url \"%s\": use s3://BUCKET/PREFIX", url);
	rest = url + 5;
	slash = strchr(rest, '/');
	s->bucket = slash ? pnstrdup(rest, slash - rest) : pg_strdup(rest);
	s->prefix = pg_strdup(slash ? slash + 1 : "");
	while (strlen(s->prefix) > 0 && s->prefix[strlen(s->prefix) - 1] == '/')
		s->prefix[strlen(s->prefix) - 1] = '\0';
	for (const char *c = s->bucket; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '.'))
			return psprintf("invalid bucket name \"%s\" in --s3-url", s->bucket);

	s->region = pg_strdup(region);
	s->gzip = gzip;
	s->run_id = (uint32_t) time(NULL);
	s->retry_timeout_s = retry_timeout_s;
	if (endpoint != NULL)
	{
		s->endpoint = pg_strdup(endpoint);
		while (strlen(s->endpoint) > 0 && s->endpoint[strlen(s->endpoint) - 1] == '/')
			s->endpoint[strlen(s->endpoint) - 1] = '\0';
		/* An endpoint means an emulator or a VPC endpoint: path style by default. */
		s->path_style = addressing == NULL || strcmp(addressing, "path") == 0;
	}
	else
	{
		s->endpoint = psprintf("https://s3.%s.amazonaws.com", region);
		s->path_style = addressing != NULL && strcmp(addressing, "path") == 0;
	}
	if (addressing != NULL && strcmp(addressing, "path") != 0 && strcmp(addressing, "virtual") != 0)
		return psprintf("invalid --s3-addressing \"%s\": use path or virtual", addressing);
	if ((host = http_host_header(s->endpoint, NULL, &err)) == NULL)
		return psprintf("--s3-endpoint-url: %s", err);
	free(host);
	s->provider = provider;
	http_client_init(&s->http, ca_file, timeout_ms);
	return NULL;
}

bool
s3_has_rows(const S3Target *s)
{
	return s->nobjects > 0;
}

/* URL and Host of an object (key NULL: the bucket itself). */
static void
object_url(S3Target *s, const char *key, char **url, char **host, char **path)
{
	char	   *err;
	char	   *ep_host = http_host_header(s->endpoint, NULL, &err);
	const char *scheme_end = strstr(s->endpoint, "://");
	char	   *scheme = pnstrdup(s->endpoint, scheme_end - s->endpoint);
	char	   *raw_path;
	char	   *encoded;

	if (s->path_style)
	{
		*host = ep_host;
		raw_path = key ? psprintf("/%s/%s", s->bucket, key) : psprintf("/%s", s->bucket);
	}
	else
	{
		*host = psprintf("%s.%s", s->bucket, ep_host);
		free(ep_host);
		raw_path = key ? psprintf("/%s", key) : pg_strdup("/");
	}
	encoded = sigv4_uri_encode(raw_path, strlen(raw_path), true);
	*url = psprintf("%s://%s%s", scheme, *host, encoded);
	*path = raw_path;
	free(encoded);
	free(scheme);
}

/* One signed S3 request. */
static bool
s3_request(S3Target *s, const char *method, const char *key, const char *content_type,
		   const char *body, size_t len, HttpResponse *resp)
{
	char	   *url;
	char	   *host;
	char	   *path;
	SigV4Header extra[1];
	AwsRequestSpec spec;
	struct curl_slist *headers = NULL;
	bool		ok;

	object_url(s, key, &url, &host, &path);
	aws_credentials_get(s->provider, &s->creds);
	memset(&spec, 0, sizeof(spec));
	if (content_type)
	{
		extra[0] = (SigV4Header) {"Content-Type", content_type};
		spec.extra = extra;
		spec.nextra = 1;
	}
	spec.method = method;
	spec.host = host;
	spec.path = path;
	spec.body = body;
	spec.len = len;
	spec.region = s->region;
	spec.service = "s3";
	spec.s3 = true;
	headers = aws_signed_headers(&spec, &s->creds);

	ok = http_request(&s->http, method, url, headers,
					  strcmp(method, "PUT") == 0 ? (body ? body : "") : NULL, len, resp);

	curl_slist_free_all(headers);
	free(url);
	free(host);
	free(path);
	return ok;
}

/* <Code>...</Code> of an S3 error document, or NULL. */
char *
s3_error_code(const char *body)
{
	const char *a = body ? strstr(body, "<Code>") : NULL;
	const char *b = a ? strstr(a, "</Code>") : NULL;

	return (a && b) ? pnstrdup(a + 6, b - a - 6) : NULL;
}

/* Retryable failure: a description; permanent: reported, NULL. */
static char *
s3_failure(S3Target *s, const char *what, bool reached, HttpResponse *resp)
{
	char	   *code;
	char	   *problem = NULL;

	if (!reached)
		return http_transport_failure(&s->http, s->endpoint, resp);
	code = s3_error_code(resp->body.data);
	if (aws_error_is_expired_token(code))
	{
		aws_credentials_invalidate(s->provider);
		problem = psprintf("HTTP %ld from %s for %s: %s: the credentials (from %s) expired; refreshing them",
						   resp->status, s->endpoint, what, code, aws_credentials_describe(s->provider));
	}
	else if (resp->status >= 500 || resp->status == 429 ||
		(code && (strcmp(code, "SlowDown") == 0 || strcmp(code, "RequestTimeout") == 0 ||
				  strcmp(code, "InternalError") == 0 || strcmp(code, "ServiceUnavailable") == 0)))
		problem = psprintf("HTTP %ld from %s for %s%s%s", resp->status, s->endpoint, what,
						   code ? ": " : "", code ? code : "");
	else if (resp->status == 404 || (code && strcmp(code, "NoSuchBucket") == 0))
	{
		log_error("S3 bucket \"%s\" does not exist at %s", s->bucket, s->endpoint);
		retry_note_permanent();
	}
	else
	{
		log_error("S3 refused %s at %s: HTTP %ld%s%s", what, s->endpoint, resp->status,
					 code ? ": " : "", code ? code : "");
		if (aws_error_is_clock_skew(code, NULL))
			log_error_hint("The request's time is too far from AWS's: check this machine's clock (NTP); the signature embeds it.");
		else if (code && (strcmp(code, "AccessDenied") == 0 || strcmp(code, "SignatureDoesNotMatch") == 0 ||
						  strcmp(code, "InvalidAccessKeyId") == 0))
			log_error_hint("Check the AWS credentials (from %s) and the IAM policy.",
							  aws_credentials_describe(s->provider));
		/* The IAM policy will not change by starting again. */
		if (code && strcmp(code, "AccessDenied") == 0)
			retry_note_permanent();
	}
	free(code);
	return problem;
}

/* One S3 request and what it is about, for retry_call(). */
typedef struct S3Call
{
	S3Target   *s;
	const char *what;			/* "bucket ..." or "object ..." */
	const char *method;
	const char *key;			/* NULL: the bucket */
	S3Object   *object;			/* PUT: its body */
	HttpResponse resp;
	bool		startup;		/* a wrong endpoint is fatal */
} S3Call;

static CallOutcome
s3_attempt(void *arg, int attempt, char **problem)
{
	S3Call	   *c = arg;
	bool		reached = c->object ?
		s3_request(c->s, c->method, c->key, "application/x-ndjson", c->object->body.data,
				   c->object->body.len, &c->resp) :
		s3_request(c->s, c->method, NULL, NULL, NULL, 0, &c->resp);

	if (reached && c->resp.status >= 200 && c->resp.status < 300)
		return CALL_DONE;
	if (c->startup && !reached && attempt >= 3 && http_error_is_wrong_endpoint(&c->resp))
	{
		http_report_wrong_endpoint(c->s->endpoint, &c->resp);
		return CALL_FATAL;
	}
	*problem = s3_failure(c->s, c->what, reached, &c->resp);
	return *problem == NULL ? CALL_FATAL : CALL_RETRY;
}

ShipResult
s3_check_bucket(S3Target *s, volatile sig_atomic_t *stop)
{
	S3Call		c;
	char	   *what = psprintf("bucket \"%s\"", s->bucket);
	ShipResult	result;

	memset(&c, 0, sizeof(c));
	c.s = s;
	c.what = what;
	c.method = "HEAD";
	c.startup = true;
	http_response_init(&c.resp);
	result = retry_call(what, s->retry_timeout_s, s3_attempt, &c, stop);
	http_response_free(&c.resp);
	free(what);
	return result;
}

static void
deflate_into(S3Object *o, const char *data, size_t len, int flush)
{
	unsigned char out[65536];

	o->z.next_in = (unsigned char *) data;
	o->z.avail_in = (uInt) len;
	do
	{
		o->z.next_out = out;
		o->z.avail_out = sizeof(out);
		if (deflate(&o->z, flush) == Z_STREAM_ERROR)
		{
			log_error("could not compress an S3 object");
			exit(1);
		}
		appendBinaryPQExpBuffer(&o->body, (char *) out, sizeof(out) - o->z.avail_out);
	} while (o->z.avail_out == 0 || (flush == Z_FINISH && o->z.avail_in > 0));
}

void
s3_add(S3Target *s, const char *route, const char *dt, const char *row, size_t len,
	   uint64_t commit_lsn, uint64_t safe_lsn)
{
	S3Object   *o = NULL;

	for (int i = 0; i < s->nobjects; i++)
	{
		if (strcmp(s->objects[i].route, route) == 0 && strcmp(s->objects[i].dt, dt) == 0)
		{
			o = &s->objects[i];
			break;
		}
	}
	if (o == NULL)
	{
		if (s->nobjects == s->maxobjects)
		{
			s->maxobjects = Max(8, s->maxobjects * 2);
			s->objects = pg_realloc(s->objects, sizeof(S3Object) * s->maxobjects);
		}
		o = &s->objects[s->nobjects++];
		memset(o, 0, sizeof(*o));
		o->route = pg_strdup(route);
		strlcpy(o->dt, dt, sizeof(o->dt));
		o->first_lsn = commit_lsn;
		initPQExpBuffer(&o->body);
		/* windowBits 15 + 16: a gzip wrapper */
		if (s->gzip && deflateInit2(&o->z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		{
			log_error("could not start gzip compression");
			exit(1);
		}
	}
	if (s->buffered == 0)
	{
		s->first_at = now_seconds();
		s->safe_lsn = safe_lsn;
	}
	o->last_lsn = commit_lsn;
	o->rows++;
	if (s->gzip)
	{
		deflate_into(o, row, len, Z_NO_FLUSH);
		deflate_into(o, "\n", 1, Z_NO_FLUSH);
	}
	else
	{
		appendBinaryPQExpBuffer(&o->body, row, len);
		appendPQExpBufferChar(&o->body, '\n');
	}
	s->buffered += len + 1;
}

/*
 * PREFIX/<route>/dt=<day>/<first>-<last>-<run>-<flush>.json.gz: the commit
 * LSNs of the first and last rows (zero-padded hex, so names sort in commit
 * order), then this run's start time and flush number.  The suffix keeps
 * names unique where LSNs alone are not (load rows all carry the consistent
 * point; a large transaction can span flushes), so no object is ever
 * overwritten.
 */
static char *
object_key(S3Target *s, S3Object *o)
{
	return psprintf("%s%s%s/dt=%s/%08X%08X-%08X%08X-%08X-%06u.json%s",
					s->prefix, s->prefix[0] ? "/" : "", o->route, o->dt,
					(uint32_t) (o->first_lsn >> 32), (uint32_t) o->first_lsn,
					(uint32_t) (o->last_lsn >> 32), (uint32_t) o->last_lsn,
					(uint32_t) s->run_id, s->flushes, s->gzip ? ".gz" : "");
}

ShipResult
s3_flush(S3Target *s, volatile sig_atomic_t *stop)
{
	ShipResult	result = SHIP_OK;

	if (s->nobjects == 0)
		return SHIP_OK;

	for (int i = 0; i < s->nobjects && result == SHIP_OK; i++)
	{
		S3Object   *o = &s->objects[i];
		S3Call		c;
		char	   *key;
		char	   *what;

		if (s->gzip && o->z.state != NULL)
		{
			deflate_into(o, NULL, 0, Z_FINISH);
			deflateEnd(&o->z);
		}
		key = object_key(s, o);
		what = psprintf("object \"%s\"", key);
		memset(&c, 0, sizeof(c));
		c.s = s;
		c.what = what;
		c.method = "PUT";
		c.key = key;
		c.object = o;
		http_response_init(&c.resp);
		result = retry_call(what, s->retry_timeout_s, s3_attempt, &c, stop);
		if (result == SHIP_OK)
		{
			s->objects_put++;
			s->bytes_put += o->body.len;
			log_info("wrote s3://%s/%s (%llu rows, %zu bytes)", s->bucket, key,
						(unsigned long long) o->rows, o->body.len);
		}
		http_response_free(&c.resp);
		free(what);
		free(key);
	}


	if (result != SHIP_OK)
	{
		/*
		 * Objects already written stay; the rest are dropped with the whole
		 * flush unconfirmed: the rows come again after a restart.
		 */
		return result;
	}
	for (int i = 0; i < s->nobjects; i++)
	{
		free(s->objects[i].route);
		termPQExpBuffer(&s->objects[i].body);
	}
	s->nobjects = 0;
	s->buffered = 0;
	s->flushes++;
	return SHIP_OK;
}
