/*-------------------------------------------------------------------------
 *
 * aws_request.c
 *	  AWS requests above HTTP: signing and the signing clock (see
 *	  aws_request.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdatomic.h>
#include <time.h>

#include "aws_request.h"
#include "log.h"

/* The request's headers for curl: the signed ones, Authorization, no Expect. */
static struct curl_slist *
signed_headers(const SigV4Header *h, int nh, const char *authorization)
{
	struct curl_slist *headers = NULL;
	char	   *line;

	for (int i = 0; i < nh; i++)
	{
		line = psprintf("%s: %s", h[i].name, h[i].value);
		headers = curl_slist_append(headers, line);
		free(line);
	}
	line = psprintf("Authorization: %s", authorization);
	headers = curl_slist_append(headers, line);
	free(line);
	/* curl would wait for a 100-continue on large bodies */
	return curl_slist_append(headers, "Expect:");
}

/*
 * A refusal because the request's time is too far from the service's:
 * Kinesis says "Signature expired" (InvalidSignatureException), S3 says
 * RequestTimeTooSkewed.
 */
bool
aws_error_is_clock_skew(const char *code, const char *message)
{
	if (code == NULL)
		return false;
	if (strcmp(code, "RequestTimeTooSkewed") == 0 || strcmp(code, "RequestExpired") == 0)
		return true;
	return message != NULL && strstr(message, "Signature expired") != NULL;
}

/* Seconds to add to this machine's clock to sign (delivery threads read it). */
static atomic_long clock_offset = 0;

bool
aws_clock_correct(HttpClient *client, long *offset_s)
{
	char	   *date = http_response_header(client, "Date");
	time_t		server;

	if (date == NULL)
		return false;
	server = curl_getdate(date, NULL);
	free(date);
	if (server <= 0)
		return false;
	*offset_s = (long) (server - time(NULL));
	atomic_store(&clock_offset, *offset_s);
	return true;
}

struct curl_slist *
aws_signed_headers(const AwsRequestSpec *spec, const AwsCredentials *creds)
{
	char		amz_date[17];
	char		payload_hash[65];
	SigV4Header h[12];
	int			nh = 0;
	SigV4Request req;
	SigV4Result sig;
	struct curl_slist *headers;

	Assert(spec->nextra <= 8);
	sigv4_amz_date((long long) time(NULL) + atomic_load(&clock_offset), amz_date);
	sigv4_sha256_hex(spec->body ? spec->body : "", spec->body ? spec->len : 0, payload_hash);

	for (int i = 0; i < spec->nextra; i++)
		h[nh++] = spec->extra[i];
	h[nh++] = (SigV4Header)
	{
		"Host", spec->host
	};
	if (spec->s3)
		h[nh++] = (SigV4Header)
	{
		"X-Amz-Content-Sha256", payload_hash
	};
	h[nh++] = (SigV4Header)
	{
		"X-Amz-Date", amz_date
	};
	if (creds->session_token)
		h[nh++] = (SigV4Header)
	{
		"X-Amz-Security-Token", creds->session_token
	};

	memset(&req, 0, sizeof(req));
	req.method = spec->method;
	req.path = spec->path;
	req.query = spec->query;
	req.headers = h;
	req.nheaders = nh;
	req.payload_hash = payload_hash;
	req.normalize_path = !spec->s3; /* S3 signs the path as it is */
	req.region = spec->region;
	req.service = spec->service;
	req.access_key = creds->access_key;
	req.secret_key = creds->secret_key;
	req.amz_date = amz_date;
	if (!sigv4_sign(&req, &sig))
	{
		log_error("out of memory");
		exit(1);
	}
	headers = signed_headers(h, nh, sig.authorization);
	sigv4_result_free(&sig);
	return headers;
}
