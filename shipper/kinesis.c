/*-------------------------------------------------------------------------
 *
 * kinesis.c
 *	  PutRecords calls to Kinesis Data Streams, signed with SigV4.
 *
 * Whole-call failures (throttling, 5xx, timeouts, resets, malformed
 * responses) and per-record failures are retried with exponential backoff
 * and jitter.  Only the failed records are sent again, in their original
 * order; since a batch never holds two records of one partition key, no
 * later version of a key can overtake an earlier one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/logging.h"
#include "kinesis.h"
#include "retry.h"
#include "sigv4.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000

char *
kinesis_init(KinesisTarget *k, const char *endpoint, const char *region,
			 const char *stream_name, const char *stream_arn,
			 const char *ca_file, long timeout_ms, int retry_timeout_s)
{
	char	   *err;

	memset(k, 0, sizeof(*k));
	k->region = pg_strdup(region);
	k->endpoint = endpoint ? pg_strdup(endpoint) :
		psprintf("https://kinesis.%s.amazonaws.com", region);
	k->host = http_host_header(k->endpoint, NULL, &err);
	if (k->host == NULL)
		return psprintf("--endpoint-url: %s", err);
	k->stream_name = stream_name ? pg_strdup(stream_name) : NULL;
	k->stream_arn = stream_arn ? pg_strdup(stream_arn) : NULL;
	k->retry_timeout_s = retry_timeout_s;
	if ((err = aws_load_credentials(&k->creds)) != NULL)
		return err;
	http_client_init(&k->http, ca_file, timeout_ms);
	return NULL;
}

/* Appends a JSON string literal. */
static void
append_json_string(PQExpBuffer buf, const char *s, size_t len)
{
	appendPQExpBufferChar(buf, '"');
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
		{
			appendPQExpBufferChar(buf, '\\');
			appendPQExpBufferChar(buf, (char) c);
		}
		else if (c < 0x20)
			appendPQExpBuffer(buf, "\\u%04x", c);
		else
			appendPQExpBufferChar(buf, (char) c);
	}
	appendPQExpBufferChar(buf, '"');
}

/*
 * schema.table:{key json}, or its SHA-256 in hex when longer than Kinesis
 * allows.  Deterministic, so every version of a row maps to one shard.
 */
void
kinesis_partition_key(const char *schema, size_t schema_len,
					  const char *table, size_t table_len,
					  const char *key, size_t key_len, PQExpBuffer out)
{
	resetPQExpBuffer(out);
	/* Drop the quotes around schema and table. */
	appendBinaryPQExpBuffer(out, schema + 1, schema_len - 2);
	appendPQExpBufferChar(out, '.');
	appendBinaryPQExpBuffer(out, table + 1, table_len - 2);
	if (key != NULL)
	{
		appendPQExpBufferChar(out, ':');
		appendBinaryPQExpBuffer(out, key, key_len);
	}
	/* Kinesis counts Unicode characters; bytes are a safe upper bound. */
	if (out->len > KINESIS_MAX_KEY_CHARS)
	{
		char		hex[65];

		sigv4_sha256_hex(out->data, out->len, hex);
		resetPQExpBuffer(out);
		appendPQExpBufferStr(out, hex);
	}
}

static void
build_body(KinesisTarget *k, ShipRecord **recs, int n, PQExpBuffer body)
{
	resetPQExpBuffer(body);
	appendPQExpBufferStr(body, "{");
	if (k->stream_arn)
	{
		appendPQExpBufferStr(body, "\"StreamARN\":");
		append_json_string(body, k->stream_arn, strlen(k->stream_arn));
	}
	else
	{
		appendPQExpBufferStr(body, "\"StreamName\":");
		append_json_string(body, k->stream_name, strlen(k->stream_name));
	}
	appendPQExpBufferStr(body, ",\"Records\":[");
	for (int i = 0; i < n; i++)
	{
		size_t		b64len = 4 * ((recs[i]->len + 2) / 3);

		if (i > 0)
			appendPQExpBufferChar(body, ',');
		appendPQExpBufferStr(body, "{\"Data\":\"");
		if (!enlargePQExpBuffer(body, b64len + 1))
		{
			pg_log_error("out of memory");
			exit(1);
		}
		EVP_EncodeBlock((unsigned char *) body->data + body->len,
						(const unsigned char *) recs[i]->data, (int) recs[i]->len);
		body->len += b64len;
		body->data[body->len] = '\0';
		appendPQExpBufferStr(body, "\",\"PartitionKey\":");
		append_json_string(body, recs[i]->pkey, strlen(recs[i]->pkey));
		appendPQExpBufferChar(body, '}');
	}
	appendPQExpBufferStr(body, "]}");
}

/* Signs and sends one call of the Kinesis JSON protocol. */
static bool
kinesis_call(KinesisTarget *k, const char *operation, const char *body, size_t len,
			 HttpResponse *resp)
{
	char		amz_date[17];
	char		payload_hash[65];
	char	   *target = psprintf("Kinesis_20131202.%s", operation);
	SigV4Header h[5];
	int			nh = 0;
	SigV4Request req;
	SigV4Result sig;
	struct curl_slist *headers = NULL;
	bool		ok;

	sigv4_amz_date((long long) time(NULL), amz_date);
	sigv4_sha256_hex(body, len, payload_hash);

	h[nh++] = (SigV4Header) {"Content-Type", "application/x-amz-json-1.1"};
	h[nh++] = (SigV4Header) {"Host", k->host};
	h[nh++] = (SigV4Header) {"X-Amz-Date", amz_date};
	h[nh++] = (SigV4Header) {"X-Amz-Target", target};
	if (k->creds.session_token)
		h[nh++] = (SigV4Header) {"X-Amz-Security-Token", k->creds.session_token};

	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.path = "/";
	req.query = NULL;
	req.headers = h;
	req.nheaders = nh;
	req.payload_hash = payload_hash;
	req.normalize_path = true;
	req.region = k->region;
	req.service = "kinesis";
	req.access_key = k->creds.access_key;
	req.secret_key = k->creds.secret_key;
	req.amz_date = amz_date;
	if (!sigv4_sign(&req, &sig))
	{
		pg_log_error("out of memory");
		exit(1);
	}

	headers = http_signed_headers(h, nh, sig.authorization);

	ok = http_request(&k->http, "POST", k->endpoint, headers, body, len, resp);

	curl_slist_free_all(headers);
	sigv4_result_free(&sig);
	free(target);
	return ok;
}

/* The error code of a failed call: "__type" without its namespace. */
static char *
error_code(const char *body, size_t len, char **message)
{
	json_error_t jerr;
	json_t	   *doc = json_loadb(body, len, 0, &jerr);
	const char *type = NULL;
	const char *msg = NULL;
	char	   *result = NULL;

	*message = NULL;
	if (doc != NULL && json_is_object(doc))
	{
		type = json_string_value(json_object_get(doc, "__type"));
		msg = json_string_value(json_object_get(doc, "message"));
		if (msg == NULL)
			msg = json_string_value(json_object_get(doc, "Message"));
	}
	if (type != NULL)
	{
		const char *hash = strrchr(type, '#');

		result = pg_strdup(hash ? hash + 1 : type);
	}
	if (msg != NULL)
		*message = pg_strdup(msg);
	if (doc)
		json_decref(doc);
	return result;
}

static bool
is_retryable_code(const char *code)
{
	static const char *const retryable[] = {
		"ProvisionedThroughputExceededException",
		"LimitExceededException",
		"ThrottlingException",
		"Throttling",
		"ThrottledException",
		"RequestLimitExceeded",
		"InternalFailure",
		"InternalFailureException",
		"ServiceUnavailable",
		"ServiceUnavailableException",
		"KMSThrottlingException",
		"RequestTimeout",
		"RequestTimeoutException",
		"PriorRequestNotComplete",
		NULL
	};

	for (int i = 0; retryable[i]; i++)
		if (strcmp(code, retryable[i]) == 0)
			return true;
	return false;
}

/*
 * Parses a 200 response.  Returns the number of failed records (their
 * indexes in failed[]), or -1 when the response is malformed.
 */
static int
parse_put_response(const char *body, size_t len, int n, int *failed,
				   char **first_code, char **first_message, bool *fatal)
{
	json_error_t jerr;
	json_t	   *doc = json_loadb(body, len, 0, &jerr);
	json_t	   *records;
	int			nfailed = 0;

	*fatal = false;
	if (doc == NULL)
		return -1;
	records = json_object_get(doc, "Records");
	if (!json_is_array(records) || (int) json_array_size(records) != n)
	{
		json_decref(doc);
		return -1;
	}
	for (int i = 0; i < n; i++)
	{
		json_t	   *r = json_array_get(records, i);
		const char *code;

		if (!json_is_object(r))
		{
			json_decref(doc);
			return -1;
		}
		code = json_string_value(json_object_get(r, "ErrorCode"));
		if (code == NULL)
		{
			if (json_string_value(json_object_get(r, "SequenceNumber")) == NULL)
			{
				json_decref(doc);
				return -1;
			}
			continue;
		}
		failed[nfailed++] = i;
		if (*first_code == NULL)
		{
			const char *m = json_string_value(json_object_get(r, "ErrorMessage"));

			*first_code = pg_strdup(code);
			*first_message = m ? pg_strdup(m) : NULL;
		}
		/* KMS key problems do not go away by retrying. */
		if (strncmp(code, "KMS", 3) == 0 && strcmp(code, "KMSThrottlingException") != 0)
			*fatal = true;
	}
	json_decref(doc);
	return nfailed;
}

static const char *
stream_label(KinesisTarget *k)
{
	return k->stream_arn ? k->stream_arn : k->stream_name;
}

/*
 * Looks at a call that did not succeed.  A retryable failure returns a
 * description to log; a permanent one is reported here and returns NULL.
 */
static char *
call_failure(KinesisTarget *k, bool reached, HttpResponse *resp)
{
	char	   *code;
	char	   *message;
	char	   *problem = NULL;

	if (!reached)
		return http_transport_failure(&k->http, k->endpoint, resp);

	code = error_code(resp->body.data, resp->body.len, &message);
	if (resp->status >= 500 || resp->status == 429 ||
		(code != NULL && is_retryable_code(code)))
		problem = psprintf("HTTP %ld from %s%s%s%s%s", resp->status, k->endpoint,
						   code ? ": " : "", code ? code : "",
						   message ? ": " : "", message ? message : "");
	else if (code != NULL && strcmp(code, "ResourceNotFoundException") == 0)
		pg_log_error("Kinesis stream \"%s\" does not exist at %s",
					 stream_label(k), k->endpoint);
	else
	{
		pg_log_error("Kinesis refused the request to %s: HTTP %ld%s%s%s%s",
					 k->endpoint, resp->status, code ? ": " : "",
					 code ? code : "", message ? ": " : "", message ? message : "");
		if (aws_error_is_clock_skew(code, message))
			pg_log_error_hint("The request's time is too far from AWS's: check this machine's clock (NTP); the signature embeds it.");
		else if (code != NULL && (strcmp(code, "UnrecognizedClientException") == 0 ||
								  strcmp(code, "InvalidSignatureException") == 0 ||
								  strcmp(code, "AccessDeniedException") == 0))
			pg_log_error_hint("Check the AWS credentials (from %s) and the IAM policy.",
							  k->creds.source);
	}
	free(code);
	free(message);
	return problem;
}

static ShipResult
before_retry(KinesisTarget *k, int attempt, double deadline, const char *problem,
			 volatile sig_atomic_t *stop)
{
	char	   *what = psprintf("stream \"%s\"", stream_label(k));
	ShipResult r = (ShipResult) retry_wait(what, attempt, deadline, k->retry_timeout_s,
												 problem, stop);

	free(what);
	return r;
}

ShipResult
kinesis_put_records(KinesisTarget *k, ShipRecord *recs, int n,
					volatile sig_atomic_t *stop)
{
	ShipRecord **pending = pg_malloc(sizeof(ShipRecord *) * n);
	int		   *failed = pg_malloc(sizeof(int) * n);
	int			npending = n;
	int			attempt = 0;
	double		deadline = retry_deadline(k->retry_timeout_s);
	PQExpBufferData body;
	HttpResponse resp;
	ShipResult result = SHIP_OK;

	for (int i = 0; i < n; i++)
		pending[i] = &recs[i];
	initPQExpBuffer(&body);
	http_response_init(&resp);

	while (npending > 0)
	{
		char	   *problem = NULL;
		bool		reached;

		build_body(k, pending, npending, &body);
		k->calls++;
		if (attempt > 0)
		{
			k->retried_calls++;
			k->retried_records += npending;
		}

		reached = kinesis_call(k, "PutRecords", body.data, body.len, &resp);
		if (reached && resp.status == 200)
		{
			char	   *code = NULL;
			char	   *message = NULL;
			bool		fatal;
			int			nfailed = parse_put_response(resp.body.data, resp.body.len,
													 npending, failed, &code, &message,
													 &fatal);

			if (nfailed < 0)
				problem = psprintf("malformed PutRecords response from %s (HTTP 200, %zu bytes)",
								   k->endpoint, resp.body.len);
			else if (fatal)
				pg_log_error("Kinesis refused records for stream \"%s\": %s: %s",
							 stream_label(k), code, message ? message : "");
			else
			{
				k->records_sent += npending - nfailed;
				for (int i = 0; i < nfailed; i++)
					pending[i] = pending[failed[i]];
				if (nfailed > 0)
					problem = psprintf("%d of %d records failed (%s: %s)", nfailed, npending,
									   code, message ? message : "");
				npending = nfailed;
			}
			free(code);
			free(message);
			if (fatal)
			{
				result = SHIP_FATAL;
				break;
			}
		}
		else if ((problem = call_failure(k, reached, &resp)) == NULL)
		{
			result = SHIP_FATAL;
			break;
		}

		if (npending == 0)
		{
			free(problem);
			break;
		}
		result = before_retry(k, ++attempt, deadline, problem, stop);
		free(problem);
		if (result != SHIP_OK)
			break;
	}

	termPQExpBuffer(&body);
	http_response_free(&resp);
	free(pending);
	free(failed);
	return result;
}

ShipResult
kinesis_check_stream(KinesisTarget *k, volatile sig_atomic_t *stop)
{
	PQExpBufferData body;
	HttpResponse resp;
	ShipResult result = SHIP_OK;
	int			attempt = 0;
	double		deadline = retry_deadline(k->retry_timeout_s);

	initPQExpBuffer(&body);
	http_response_init(&resp);
	if (k->stream_arn)
	{
		appendPQExpBufferStr(&body, "{\"StreamARN\":");
		append_json_string(&body, k->stream_arn, strlen(k->stream_arn));
	}
	else
	{
		appendPQExpBufferStr(&body, "{\"StreamName\":");
		append_json_string(&body, k->stream_name, strlen(k->stream_name));
	}
	appendPQExpBufferChar(&body, '}');

	for (;;)
	{
		bool		reached = kinesis_call(k, "DescribeStreamSummary", body.data,
										   body.len, &resp);
		char	   *problem;

		if (reached && resp.status == 200)
			break;
		if (!reached && attempt >= 2 && http_error_is_wrong_endpoint(&resp))
		{
			http_report_wrong_endpoint(k->endpoint, &resp);
			result = SHIP_FATAL;
			break;
		}
		if ((problem = call_failure(k, reached, &resp)) == NULL)
		{
			result = SHIP_FATAL;
			break;
		}
		result = before_retry(k, ++attempt, deadline, problem, stop);
		free(problem);
		if (result != SHIP_OK)
			break;
	}
	termPQExpBuffer(&body);
	http_response_free(&resp);
	return result;
}
