/*-------------------------------------------------------------------------
 *
 * s3.c
 *	  An S3 client: the bucket and prefix of an s3:// URL, path- or
 *	  virtual-host-style addressing, and the calls the lake needs
 *	  (ListObjectsV2, GetObject, PutObject, DeleteObject), each signed with
 *	  SigV4 (service s3, with x-amz-content-sha256), retried by
 *	  retry_call() and classified by aws_call_failure().  A PUT carries
 *	  Content-MD5, so S3 refuses a body cut short or changed on the way.
 *
 *	  What the lake writes, and how it stays exactly once, is s3_lake.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <openssl/evp.h>

#include "aws_request.h"
#include "log.h"
#include "pqexpbuffer.h"
#include "s3.h"
#include "sigv4.h"

char *
s3_client_init(S3Client *s, AwsCredentialProvider *provider, const char *url,
			   const char *endpoint, const char *region,
			   const char *addressing, const char *ca_file, long timeout_ms,
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
	s->retry_timeout_s = retry_timeout_s;
	if (endpoint != NULL)
	{
		s->endpoint = pg_strdup(endpoint);
		while (strlen(s->endpoint) > 0 && s->endpoint[strlen(s->endpoint) - 1] == '/')
			s->endpoint[strlen(s->endpoint) - 1] = '\0';

		/*
		 * An endpoint means an emulator or a VPC endpoint: path style by
		 * default.
		 */
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

void
s3_client_free(S3Client *s)
{
	free(s->endpoint);
	free(s->bucket);
	free(s->prefix);
	free(s->region);
	aws_credentials_clear(&s->creds);
	http_client_free(&s->http);
	memset(s, 0, sizeof(*s));
}

/* URL and Host of an object (key NULL: the bucket itself). */
static void
object_url(S3Client *s, const char *key, char **url, char **host, char **path)
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

/*
 * One signed S3 request; query (encoded, without '?') may be NULL.  A body
 * goes with its Content-MD5; rows > 0 adds x-amz-meta-fundrecs-rows.
 */
static bool
s3_request(S3Client *s, const char *method, const char *key, const char *query,
		   const char *content_type, const char *body, size_t len, uint64_t rows,
		   HttpResponse *resp)
{
	char	   *url;
	char	   *host;
	char	   *path;
	SigV4Header extra[3];
	int			nextra = 0;
	unsigned char md5[EVP_MAX_MD_SIZE];
	unsigned int md5_len = 0;
	char		md5_b64[64];
	char		nrows[24];
	AwsRequestSpec spec;
	struct curl_slist *headers = NULL;
	bool		ok;

	object_url(s, key, &url, &host, &path);
	if (query != NULL)
	{
		char	   *with_query = psprintf("%s?%s", url, query);

		free(url);
		url = with_query;
	}
	aws_credentials_get(s->provider, &s->creds);
	memset(&spec, 0, sizeof(spec));
	if (content_type)
	{
		extra[nextra++] = (SigV4Header)
		{
			"Content-Type", content_type
		};
		/* A body cut short or changed on the way is refused, not kept. */
		if (!EVP_Digest(body ? body : "", len, md5, &md5_len, EVP_md5(), NULL))
		{
			log_error("could not compute the MD5 of an S3 object");
			exit(1);
		}
		EVP_EncodeBlock((unsigned char *) md5_b64, md5, (int) md5_len);
		extra[nextra++] = (SigV4Header)
		{
			"Content-MD5", md5_b64
		};
	}
	if (rows > 0)
	{
		snprintf(nrows, sizeof(nrows), "%llu", (unsigned long long) rows);
		extra[nextra++] = (SigV4Header)
		{
			"X-Amz-Meta-Fundrecs-Rows", nrows
		};
	}
	spec.extra = extra;
	spec.nextra = nextra;
	spec.method = method;
	spec.host = host;
	spec.path = path;
	spec.query = query;
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

/* What S3's error codes mean (aws_call_failure). */
static const char *const s3_retryable[] = {
	"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", NULL
};
static const char *const s3_missing[] = {"NoSuchBucket", NULL};
static const char *const s3_denied[] = {"AccessDenied", NULL};
static const AwsErrorTable s3_errors = {
	"S3", "bucket", s3_retryable, s3_missing, s3_denied, true
};

/* Retryable failure: a description; permanent: reported, NULL. */
static char *
s3_failure(S3Client *s, const char *what, bool reached, HttpResponse *resp)
{
	char	   *code = reached ? s3_error_code(resp->body.data) : NULL;
	char	   *problem;
	AwsFailedCall call = {&s->http, s->provider, s->endpoint, what, s->bucket,
	reached, resp, code, NULL};

	problem = aws_call_failure(&s3_errors, &call);
	free(code);
	return problem;
}

/* One S3 request and what it is about, for retry_call(). */
typedef struct S3Call
{
	S3Client   *s;
	const char *what;			/* "bucket ..." or "object ..." */
	const char *method;
	const char *key;			/* NULL: the bucket */
	const char *query;			/* ListObjectsV2's, or NULL */
	const char *content_type;	/* PUT: its body's */
	const char *body;
	size_t		len;
	uint64_t	rows;			/* > 0: x-amz-meta-fundrecs-rows */
	HttpResponse resp;
	bool		startup;		/* a wrong endpoint is fatal */
	bool		missing_ok;		/* GET, DELETE: 404 NoSuchKey is an answer */
} S3Call;

/* A call about what, to method key (NULL: the bucket), its response empty. */
static void
s3_call_start(S3Call *c, S3Client *s, const char *what, const char *method, const char *key)
{
	memset(c, 0, sizeof(*c));
	c->s = s;
	c->what = what;
	c->method = method;
	c->key = key;
	http_response_init(&c->resp);
}

static CallOutcome
s3_attempt(void *arg, int attempt, char **problem)
{
	S3Call	   *c = arg;
	bool		reached;

	reached = s3_request(c->s, c->method, c->key, c->query, c->content_type, c->body,
						 c->len, c->rows, &c->resp);
	if (reached && c->resp.status >= 200 && c->resp.status < 300)
		return CALL_DONE;
	if (reached && c->missing_ok && c->resp.status == 404)
	{
		char	   *code = s3_error_code(c->resp.body.data);
		bool		no_key = code == NULL || strcmp(code, "NoSuchKey") == 0;

		free(code);
		if (no_key)
			return CALL_DONE;
	}
	if (c->startup && !reached && attempt >= 3 && http_error_is_wrong_endpoint(&c->resp))
	{
		http_report_wrong_endpoint(c->s->endpoint, &c->resp);
		return CALL_FATAL;
	}
	*problem = s3_failure(c->s, c->what, reached, &c->resp);
	return *problem == NULL ? CALL_FATAL : CALL_RETRY;
}

ShipResult
s3_check_bucket(S3Client *s, const char *list_prefix, StopFlag *stop)
{
	S3Call		c;
	char	   *what = psprintf("bucket \"%s\"", s->bucket);
	ShipResult	result;
	char	   *enc = sigv4_uri_encode(list_prefix, strlen(list_prefix), false);
	char	   *query = psprintf("list-type=2&prefix=%s", enc);

	/*
	 * A listing rather than HeadBucket: it needs no more than the ListBucket
	 * right the restarts use, which the IAM policy limits to the prefix
	 * (HeadBucket has no prefix, and such a condition refuses it).
	 */
	s3_call_start(&c, s, what, "GET", NULL);
	c.query = query;
	c.startup = true;
	result = retry_call(what, s->retry_timeout_s, s3_attempt, &c, stop);
	http_response_free(&c.resp);
	free(what);
	free(query);
	free(enc);
	return result;
}

/*
 * Runs a call about one object ("object KEY" in messages); its response
 * goes to keep (freed there first) or is freed.
 */
static ShipResult
object_call(S3Call *c, HttpResponse *keep, StopFlag *stop)
{
	char	   *what = psprintf("object \"%s\"", c->key);
	ShipResult	result;

	c->what = what;
	result = retry_call(what, c->s->retry_timeout_s, s3_attempt, c, stop);
	if (keep != NULL)
	{
		http_response_free(keep);
		*keep = c->resp;
	}
	else
		http_response_free(&c->resp);
	free(what);
	return result;
}

ShipResult
s3_get(S3Client *s, const char *key, bool startup, HttpResponse *resp, StopFlag *stop)
{
	S3Call		c;

	s3_call_start(&c, s, NULL, "GET", key);
	c.missing_ok = true;
	c.startup = startup;
	return object_call(&c, resp, stop);
}

ShipResult
s3_put(S3Client *s, const char *key, const char *content_type, const char *body, size_t len,
	   uint64_t rows, StopFlag *stop)
{
	S3Call		c;

	s3_call_start(&c, s, NULL, "PUT", key);
	c.content_type = content_type;
	c.body = body;
	c.len = len;
	c.rows = rows;
	return object_call(&c, NULL, stop);
}

ShipResult
s3_delete(S3Client *s, const char *key, StopFlag *stop)
{
	S3Call		c;

	s3_call_start(&c, s, NULL, "DELETE", key);
	c.missing_ok = true;
	return object_call(&c, NULL, stop);
}

/*
 * The text between <tag> and </tag> from *from on, XML entities decoded
 * (decode) or as it is; NULL when none.
 */
static char *
xml_extract(const char **from, const char *tag, bool decode)
{
	char		open[64];
	char		close[64];
	const char *a;
	const char *b;
	PQExpBufferData out;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	if (*from == NULL || (a = strstr(*from, open)) == NULL ||
		(b = strstr(a + strlen(open), close)) == NULL)
		return NULL;
	initPQExpBuffer(&out);
	for (const char *p = a + strlen(open); p < b; p++)
	{
		static const struct
		{
			const char *entity;
			char		c;
		}			entities[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'},
		{"&quot;", '"'}, {"&apos;", '\''}};
		bool		done = false;

		for (int e = 0; decode && e < lengthof(entities) && *p == '&'; e++)
		{
			size_t		n = strlen(entities[e].entity);

			if (strncmp(p, entities[e].entity, n) == 0)
			{
				appendPQExpBufferChar(&out, entities[e].c);
				p += n - 1;
				done = true;
				break;
			}
		}
		if (!done)
			appendPQExpBufferChar(&out, *p);
	}
	*from = b + strlen(close);
	return out.data;
}

static char *
xml_next(const char **from, const char *tag)
{
	return xml_extract(from, tag, true);
}

/* A ListObjectsV2 query parameter, URI-encoded. */
static void
append_query_param(PQExpBuffer q, const char *name, const char *value)
{
	char	   *enc = sigv4_uri_encode(value, strlen(value), false);

	appendPQExpBuffer(q, "%s%s=%s", q->len > 0 ? "&" : "", name, enc);
	free(enc);
}

/*
 * Lists the keys under prefix, calling fn for each with its size; pages
 * through the whole listing (ListObjectsV2, continuation tokens).
 */
ShipResult
s3_list(S3Client *s, const char *prefix, S3ListFn fn, void *arg, StopFlag *stop)
{
	char	   *token = NULL;
	ShipResult	result = SHIP_OK;

	do
	{
		PQExpBufferData q;
		S3Call		c;
		char	   *what = psprintf("the objects under \"%s\"", prefix);
		char	   *truncated;
		const char *p;
		char	   *item;

		/* Parameters in the order SigV4 sorts them. */
		initPQExpBuffer(&q);
		if (token)
			append_query_param(&q, "continuation-token", token);
		append_query_param(&q, "list-type", "2");
		append_query_param(&q, "prefix", prefix);
		s3_call_start(&c, s, what, "GET", NULL);
		c.query = q.data;
		result = retry_call(what, s->retry_timeout_s, s3_attempt, &c, stop);
		free(token);
		token = NULL;
		if (result == SHIP_OK)
		{
			p = c.resp.body.data;
			while ((item = xml_extract(&p, "Contents", false)) != NULL)
			{
				const char *q = item;
				char	   *key = xml_next(&q, "Key");
				char	   *size;

				q = item;
				size = xml_next(&q, "Size");
				if (key != NULL)
					fn(key, size ? atoll(size) : -1, arg);
				free(key);
				free(size);
				free(item);
			}
			p = c.resp.body.data;
			truncated = xml_next(&p, "IsTruncated");
			if (truncated && strcmp(truncated, "true") == 0)
			{
				p = c.resp.body.data;
				token = xml_next(&p, "NextContinuationToken");
			}
			free(truncated);
		}
		http_response_free(&c.resp);
		termPQExpBuffer(&q);
		free(what);
	} while (result == SHIP_OK && token != NULL);
	free(token);
	return result;
}

/* PREFIX/ (with the slash), or "" for the bucket's root. */
char *
s3_prefix_slash(const S3Client *s)
{
	return psprintf("%s%s", s->prefix, s->prefix[0] ? "/" : "");
}
