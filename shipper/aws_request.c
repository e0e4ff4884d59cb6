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
#include "retry.h"

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

static bool
code_in(const char *code, const char *const *list)
{
	if (code == NULL || list == NULL)
		return false;
	for (int i = 0; list[i]; i++)
		if (strcmp(code, list[i]) == 0)
			return true;
	return false;
}

char *
aws_call_failure(const AwsErrorTable *errors, const AwsFailedCall *call)
{
	const char *code = call->code;
	const char *message = call->message;
	long		status = call->resp->status;
	long		skew;
	char		about[1024];
	char		detail[1024];

	if (!call->reached)
		return http_transport_failure(call->client, call->endpoint, call->resp);

	/* "HTTP 403 from <endpoint> for <what>", then ": code: message" */
	snprintf(about, sizeof(about), "HTTP %ld from %s%s%s", status, call->endpoint,
			 call->what ? " for " : "", call->what ? call->what : "");
	snprintf(detail, sizeof(detail), "%s%s%s%s", code ? ": " : "", code ? code : "",
			 message ? ": " : "", message ? message : "");

	if (aws_error_is_expired_token(code))
	{
		/* Refreshed before the next attempt: a retry, not a failure. */
		aws_credentials_invalidate(call->provider);
		return psprintf("%s: %s: the credentials (from %s) expired; refreshing them",
						about, code, aws_credentials_describe(call->provider));
	}
	if (aws_error_is_clock_skew(code, message) && aws_clock_correct(call->client, &skew))
		return psprintf("%s: %s: this machine's clock is %ld s off %s's; signing with %s's time from now on (check NTP)",
						about, code, -skew, errors->service, errors->service);
	if (aws_error_is_bad_key(code, message) && aws_credentials_refreshable(call->provider))
	{
		aws_credentials_invalidate(call->provider);
		return psprintf("%s: %s: the credentials (from %s) were refused; fetching them again",
						about, code, aws_credentials_describe(call->provider));
	}
	if (status >= 500 || status == 429 || code_in(code, errors->retryable))
		return psprintf("%s%s", about, detail);

	if (code_in(code, errors->missing) ||
		(errors->missing_on_404 && status == 404))
		log_error("%s %s \"%s\" does not exist at %s", errors->service, errors->resource,
				  call->resource_name, call->endpoint);
	else
	{
		bool		denied = code_in(code, errors->denied) || aws_error_is_bad_key(code, message);

		if (call->what)
			log_error("%s refused %s at %s: HTTP %ld%s", errors->service, call->what,
					  call->endpoint, status, detail);
		else
			log_error("%s refused the request to %s: HTTP %ld%s", errors->service,
					  call->endpoint, status, detail);
		if (aws_error_is_clock_skew(code, message))
			log_error_hint("The request's time is too far from AWS's: check this machine's clock (NTP); the signature embeds it.");
		else if (denied)
			log_error_hint("Check the AWS credentials (from %s) and the IAM policy.",
						   aws_credentials_describe(call->provider));

		/*
		 * The IAM policy will not change by starting again, nor will static
		 * keys; other refusals (a malformed request, a limit) may.
		 */
		if (!denied)
			return NULL;
	}
	retry_note_permanent();
	return NULL;
}
