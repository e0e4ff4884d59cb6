/*-------------------------------------------------------------------------
 *
 * sigv4.c
 *	  AWS Signature Version 4: canonical request, string to sign, signing
 *	  key and signature, with OpenSSL's HMAC-SHA256 and SHA-256.
 *
 * Checked against every case of the AWS SigV4 test suite (t/sigv4 and
 * testdata/aws-sig-v4-test-suite) and, in the integration tests, against
 * botocore re-computing the signature of each request the shipper sends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "sigv4.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "pqexpbuffer.h"

static const char hexdigits[] = "0123456789abcdef";

static void
to_hex(const unsigned char *in, size_t len, char *out)
{
	for (size_t i = 0; i < len; i++)
	{
		out[2 * i] = hexdigits[in[i] >> 4];
		out[2 * i + 1] = hexdigits[in[i] & 0x0F];
	}
	out[2 * len] = '\0';
}

void
sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *) data, len, md);
	to_hex(md, SHA256_DIGEST_LENGTH, out);
}

static void
hmac_sha256(const void *key, size_t keylen, const char *msg, size_t msglen,
			unsigned char out[32])
{
	unsigned int outlen = 32;

	HMAC(EVP_sha256(), key, (int) keylen, (const unsigned char *) msg, msglen,
		 out, &outlen);
}

void
sigv4_amz_date(long long epoch, char out[17])
{
	time_t		t = (time_t) epoch;
	struct tm	tm;

	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static bool
is_unreserved(unsigned char c)
{
	return isascii(c) && (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~');
}

char *
sigv4_uri_encode(const char *s, size_t len, bool keep_slash)
{
	PQExpBufferData buf;

	initPQExpBuffer(&buf);
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (is_unreserved(c) || (keep_slash && c == '/'))
			appendPQExpBufferChar(&buf, (char) c);
		else
			appendPQExpBuffer(&buf, "%%%c%c",
							  toupper(hexdigits[c >> 4]), toupper(hexdigits[c & 0x0F]));
	}
	return buf.data;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes %XX escapes of a query component (a '+' stays a '+'). */
static char *
uri_decode(const char *s, size_t len, size_t *outlen)
{
	char	   *out = malloc(len + 1);
	size_t		n = 0;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++)
	{
		if (s[i] == '%' && i + 2 < len &&
			hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0)
		{
			out[n++] = (char) (hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		}
		else
			out[n++] = s[i];
	}
	out[n] = '\0';
	*outlen = n;
	return out;
}

/*
 * Removes "." and ".." segments and empty segments (RFC 3986 section 5.2.4
 * as AWS applies it); keeps a trailing slash.
 */
static char *
normalize_path(const char *path)
{
	size_t		len = strlen(path);
	char	  **segs = malloc(sizeof(char *) * (len + 1));
	int			nsegs = 0;
	char	   *copy = strdup(path);
	char	   *save = NULL;
	bool		trailing = len > 0 && path[len - 1] == '/';
	PQExpBufferData buf;

	for (char *seg = strtok_r(copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save))
	{
		if (strcmp(seg, ".") == 0)
			continue;
		if (strcmp(seg, "..") == 0)
		{
			if (nsegs > 0)
				nsegs--;
			continue;
		}
		segs[nsegs++] = seg;
	}

	initPQExpBuffer(&buf);
	for (int i = 0; i < nsegs; i++)
	{
		appendPQExpBufferChar(&buf, '/');
		appendPQExpBufferStr(&buf, segs[i]);
	}
	if (nsegs == 0 || trailing)
		appendPQExpBufferChar(&buf, '/');

	free(segs);
	free(copy);
	return buf.data;
}

typedef struct QueryParam
{
	char	   *name;			/* encoded */
	char	   *value;			/* encoded */
} QueryParam;

static int
cmp_param(const void *a, const void *b)
{
	const QueryParam *pa = a;
	const QueryParam *pb = b;
	int			c = strcmp(pa->name, pb->name);

	return c != 0 ? c : strcmp(pa->value, pb->value);
}

static char *
canonical_query(const char *query)
{
	PQExpBufferData buf;
	QueryParam *params;
	int			nparams = 0;
	size_t		qlen;
	const char *p;

	initPQExpBuffer(&buf);
	if (query == NULL || *query == '\0')
		return buf.data;

	qlen = strlen(query);
	params = calloc(qlen + 1, sizeof(QueryParam));
	p = query;
	while (*p)
	{
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);
		const char *eq = memchr(p, '=', end - p);
		size_t		nlen = eq ? (size_t) (eq - p) : (size_t) (end - p);
		size_t		dlen;
		char	   *dec;

		if (end > p)
		{
			dec = uri_decode(p, nlen, &dlen);
			params[nparams].name = sigv4_uri_encode(dec, dlen, false);
			free(dec);
			if (eq)
				dec = uri_decode(eq + 1, end - eq - 1, &dlen);
			else
			{
				dec = strdup("");
				dlen = 0;
			}
			params[nparams].value = sigv4_uri_encode(dec, dlen, false);
			free(dec);
			nparams++;
		}
		p = amp ? amp + 1 : end;
	}

	qsort(params, nparams, sizeof(QueryParam), cmp_param);
	for (int i = 0; i < nparams; i++)
	{
		if (i > 0)
			appendPQExpBufferChar(&buf, '&');
		appendPQExpBuffer(&buf, "%s=%s", params[i].name, params[i].value);
		free(params[i].name);
		free(params[i].value);
	}
	free(params);
	return buf.data;
}

typedef struct CanonHeader
{
	char	   *name;			/* lowercase */
	char	   *value;			/* trimmed, inner whitespace runs collapsed */
	int			order;			/* original position, for stable joins */
} CanonHeader;

static int
cmp_header(const void *a, const void *b)
{
	const CanonHeader *ha = a;
	const CanonHeader *hb = b;
	int			c = strcmp(ha->name, hb->name);

	return c != 0 ? c : ha->order - hb->order;
}

static char *
canon_value(const char *v)
{
	char	   *out = malloc(strlen(v) + 1);
	char	   *o = out;
	bool		space = false;

	while (*v && isspace((unsigned char) *v))
		v++;
	for (; *v; v++)
	{
		if (isspace((unsigned char) *v))
			space = true;
		else
		{
			if (space && o > out)
				*o++ = ' ';
			space = false;
			*o++ = *v;
		}
	}
	*o = '\0';
	return out;
}

bool
sigv4_sign(const SigV4Request *req, SigV4Result *result)
{
	PQExpBufferData creq;
	PQExpBufferData sts;
	PQExpBufferData signed_headers;
	PQExpBufferData auth;
	PQExpBufferData secret;
	CanonHeader *hdrs;
	char	   *path;
	char	   *encoded_path;
	char	   *query;
	char		date[9];
	char		creq_hash[65];
	unsigned char k[32];
	unsigned char sig[32];

	memset(result, 0, sizeof(*result));

	/* Canonical URI */
	path = req->normalize_path ? normalize_path(req->path) : strdup(req->path);
	encoded_path = sigv4_uri_encode(path, strlen(path), true);
	free(path);

	query = canonical_query(req->query);

	/* Canonical headers: sorted by name, duplicates joined with commas. */
	hdrs = calloc(req->nheaders + 1, sizeof(CanonHeader));
	for (int i = 0; i < req->nheaders; i++)
	{
		hdrs[i].name = strdup(req->headers[i].name);
		for (char *c = hdrs[i].name; *c; c++)
			*c = (char) tolower((unsigned char) *c);
		hdrs[i].value = canon_value(req->headers[i].value);
		hdrs[i].order = i;
	}
	qsort(hdrs, req->nheaders, sizeof(CanonHeader), cmp_header);

	initPQExpBuffer(&creq);
	initPQExpBuffer(&signed_headers);
	appendPQExpBuffer(&creq, "%s\n%s\n%s\n", req->method, encoded_path, query);
	for (int i = 0; i < req->nheaders; i++)
	{
		if (i > 0 && strcmp(hdrs[i].name, hdrs[i - 1].name) == 0)
		{
			appendPQExpBuffer(&creq, ",%s", hdrs[i].value);
			continue;
		}
		if (i > 0)
		{
			appendPQExpBufferChar(&creq, '\n');
			appendPQExpBufferChar(&signed_headers, ';');
		}
		appendPQExpBuffer(&creq, "%s:%s", hdrs[i].name, hdrs[i].value);
		appendPQExpBufferStr(&signed_headers, hdrs[i].name);
	}
	appendPQExpBuffer(&creq, "\n\n%s\n%s", signed_headers.data, req->payload_hash);

	for (int i = 0; i < req->nheaders; i++)
	{
		free(hdrs[i].name);
		free(hdrs[i].value);
	}
	free(hdrs);
	free(encoded_path);
	free(query);

	/* String to sign */
	memcpy(date, req->amz_date, 8);
	date[8] = '\0';
	sigv4_sha256_hex(creq.data, creq.len, creq_hash);
	initPQExpBuffer(&sts);
	appendPQExpBuffer(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
					  req->amz_date, date, req->region, req->service, creq_hash);

	/* Signing key and signature */
	initPQExpBuffer(&secret);
	appendPQExpBuffer(&secret, "AWS4%s", req->secret_key);
	hmac_sha256(secret.data, secret.len, date, strlen(date), k);
	/* Wipe the secret from memory as soon as it is used. */
	OPENSSL_cleanse(secret.data, secret.len);
	termPQExpBuffer(&secret);
	hmac_sha256(k, 32, req->region, strlen(req->region), k);
	hmac_sha256(k, 32, req->service, strlen(req->service), k);
	hmac_sha256(k, 32, "aws4_request", 12, k);
	hmac_sha256(k, 32, sts.data, sts.len, sig);
	OPENSSL_cleanse(k, sizeof(k));
	to_hex(sig, 32, result->signature);

	initPQExpBuffer(&auth);
	appendPQExpBuffer(&auth,
					  "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, "
					  "SignedHeaders=%s, Signature=%s",
					  req->access_key, date, req->region, req->service,
					  signed_headers.data, result->signature);

	if (PQExpBufferBroken(&creq) || PQExpBufferBroken(&sts) ||
		PQExpBufferBroken(&auth) || PQExpBufferBroken(&signed_headers))
		return false;

	result->canonical_request = creq.data;
	result->string_to_sign = sts.data;
	result->signed_headers = signed_headers.data;
	result->authorization = auth.data;
	return true;
}

void
sigv4_result_free(SigV4Result *result)
{
	free(result->canonical_request);
	free(result->string_to_sign);
	free(result->signed_headers);
	free(result->authorization);
	memset(result, 0, sizeof(*result));
}
