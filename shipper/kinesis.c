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

#include "log.h"
#include "kinesis.h"
#include "retry.h"
#include "sigv4.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000

/* One kept-alive connection, request body and response per call in flight. */
static void
init_pool(KinesisTarget *k, int max_in_flight)
{
	k->max_in_flight = max_in_flight;
	k->pool = pg_malloc0(sizeof(HttpClient) * max_in_flight);
	k->bodies = pg_malloc0(sizeof(PQExpBufferData) * max_in_flight);
	k->resps = pg_malloc0(sizeof(HttpResponse) * max_in_flight);
	for (int i = 0; i < max_in_flight; i++)
	{
		http_client_init(&k->pool[i], k->http.ca_file, k->http.timeout_ms);
		initPQExpBuffer(&k->bodies[i]);
		http_response_init(&k->resps[i]);
	}
}

char *
kinesis_init(KinesisTarget *k, AwsCredentialProvider *provider, const char *endpoint,
			 const char *region, const char *stream_name, const char *stream_arn,
			 const char *ca_file, long timeout_ms, int retry_timeout_s, int max_in_flight)
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
	k->provider = provider;
	http_client_init(&k->http, ca_file, timeout_ms);
	if (max_in_flight < 1 || max_in_flight > KINESIS_MAX_IN_FLIGHT)
		return psprintf("--max-in-flight must be from 1 to %d", KINESIS_MAX_IN_FLIGHT);
	k->call_records = KINESIS_MAX_RECORDS;
	k->call_bytes = KINESIS_MAX_REQUEST_BYTES;
	init_pool(k, max_in_flight);
	return NULL;
}

void
kinesis_clone(KinesisTarget *dst, const KinesisTarget *src, int max_in_flight)
{
	memset(dst, 0, sizeof(*dst));
	/* The strings and the provider are shared and live as long as the process. */
	dst->endpoint = src->endpoint;
	dst->host = src->host;
	dst->region = src->region;
	dst->stream_name = src->stream_name;
	dst->stream_arn = src->stream_arn;
	dst->provider = src->provider;
	dst->retry_timeout_s = src->retry_timeout_s;
	dst->call_records = src->call_records;
	dst->call_bytes = src->call_bytes;
	http_client_init(&dst->http, src->http.ca_file, src->http.timeout_ms);
	init_pool(dst, max_in_flight);
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
 *
 * A row without a key (a table without a primary key or replica identity
 * index) has no versions to keep in order: schema.table@POSITION/N, its
 * change's position and its ordinal among the rows at that position (the
 * rows of a load share one), spreads such rows over the shards, and none
 * waits for another.
 */
void
kinesis_partition_key(const char *schema, size_t schema_len,
					  const char *table, size_t table_len,
					  const char *key, size_t key_len,
					  uint64_t position, uint32_t ordinal, PQExpBuffer out)
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
	else
		appendPQExpBuffer(out, "@%X/%X/%u", (uint32_t) (position >> 32), (uint32_t) position,
						  ordinal);
	/* Kinesis counts Unicode characters; bytes are a safe upper bound. */
	if (out->len > KINESIS_MAX_KEY_CHARS)
	{
		char		hex[65];

		sigv4_sha256_hex(out->data, out->len, hex);
		resetPQExpBuffer(out);
		appendPQExpBufferStr(out, hex);
	}
}

/*
 * A message row's partition key: "message:" and its prefix (the JSON
 * string's contents as written), hashed like a row's when too long.
 */
void
kinesis_message_partition_key(const char *prefix, size_t prefix_len, PQExpBuffer out)
{
	resetPQExpBuffer(out);
	appendPQExpBufferStr(out, "message:");
	appendBinaryPQExpBuffer(out, prefix + 1, prefix_len - 2);
	if (out->len > KINESIS_MAX_KEY_CHARS)
	{
		char		hex[65];

		sigv4_sha256_hex(out->data, out->len, hex);
		resetPQExpBuffer(out);
		appendPQExpBufferStr(out, hex);
	}
}

/*
 * The region of a stream ARN, arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME,
 * or NULL when it is not one.
 */
char *
kinesis_arn_region(const char *arn)
{
	const char *p = arn;
	const char *field[6];
	int			n = 0;

	field[n++] = p;
	while (*p && n < 6)
	{
		if (*p == ':')
			field[n++] = p + 1;
		p++;
	}
	if (n < 6 || strncmp(arn, "arn:", 4) != 0 || strncmp(field[2], "kinesis:", 8) != 0 ||
		field[4] - field[3] < 2 || strncmp(field[5], "stream/", 7) != 0 || field[5][7] == '\0')
		return NULL;
	return pnstrdup(field[3], field[4] - field[3] - 1);
}

/* "StreamARN":"..." or "StreamName":"...", as the stream was given. */
static void
append_stream_field(KinesisTarget *k, PQExpBuffer body)
{
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
}

static void
build_body(KinesisTarget *k, ShipRecord **recs, int n, PQExpBuffer body)
{
	resetPQExpBuffer(body);
	appendPQExpBufferStr(body, "{");
	append_stream_field(k, body);
	appendPQExpBufferStr(body, ",\"Records\":[");
	for (int i = 0; i < n; i++)
	{
		size_t		b64len = 4 * ((recs[i]->len + 2) / 3);

		if (i > 0)
			appendPQExpBufferChar(body, ',');
		appendPQExpBufferStr(body, "{\"Data\":\"");
		if (!enlargePQExpBuffer(body, b64len + 1))
		{
			log_error("out of memory");
			exit(1);
		}
		EVP_EncodeBlock((unsigned char *) body->data + body->len,
						(const unsigned char *) recs[i]->data, (int) recs[i]->len);
		body->len += b64len;
		body->data[body->len] = '\0';
		appendPQExpBufferStr(body, "\",\"PartitionKey\":");
		append_json_string(body, recs[i]->pkey, strlen(recs[i]->pkey));
		if (recs[i]->ehk != NULL)
			appendPQExpBuffer(body, ",\"ExplicitHashKey\":\"%s\"", recs[i]->ehk);
		appendPQExpBufferChar(body, '}');
	}
	appendPQExpBufferStr(body, "]}");
}

/* The signed headers of one call of the Kinesis JSON protocol. */
static struct curl_slist *
kinesis_signed_headers(KinesisTarget *k, const char *operation, const char *body, size_t len)
{
	char	   *target = psprintf("Kinesis_20131202.%s", operation);
	SigV4Header extra[2] = {
		{"Content-Type", "application/x-amz-json-1.1"},
		{"X-Amz-Target", target}
	};
	AwsRequestSpec spec;
	struct curl_slist *headers;

	/* Fresh credentials when they are due (a refresh, an invalidation). */
	aws_credentials_get(k->provider, &k->creds);
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.host = k->host;
	spec.path = "/";
	spec.extra = extra;
	spec.nextra = 2;
	spec.body = body;
	spec.len = len;
	spec.region = k->region;
	spec.service = "kinesis";
	headers = aws_signed_headers(&spec, &k->creds);
	free(target);
	return headers;
}

/* Signs and sends one call of the Kinesis JSON protocol. */
static bool
kinesis_call(KinesisTarget *k, const char *operation, const char *body, size_t len,
			 HttpResponse *resp)
{
	struct curl_slist *headers = kinesis_signed_headers(k, operation, body, len);
	bool		ok = http_request(&k->http, "POST", k->endpoint, headers, body, len, resp);

	curl_slist_free_all(headers);
	return ok;
}

/* The error code of a failed call: "__type" without its namespace. */
char *
kinesis_error_code(const char *body, size_t len, char **message)
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
int
kinesis_parse_put_response(const char *body, size_t len, int n, int *failed,
				   char **first_code, char **first_message, bool *fatal,
				   ShipRecord **recs, uint64_t *throttled)
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
			const char *shard = json_string_value(json_object_get(r, "ShardId"));

			if (json_string_value(json_object_get(r, "SequenceNumber")) == NULL)
			{
				json_decref(doc);
				return -1;
			}
			if (recs[i]->want_shard != NULL)
			{
				free(recs[i]->got_shard);
				recs[i]->got_shard = shard ? pg_strdup(shard) : NULL;
			}
			continue;
		}
		if (strcmp(code, "ProvisionedThroughputExceededException") == 0)
			(*throttled)++;
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
call_failure(KinesisTarget *k, HttpClient *client, bool reached, HttpResponse *resp)
{
	char	   *code;
	char	   *message;
	char	   *problem = NULL;

	if (!reached)
		return http_transport_failure(client, k->endpoint, resp);

	code = kinesis_error_code(resp->body.data, resp->body.len, &message);
	if (aws_error_is_expired_token(code))
	{
		/* Refreshed before the next attempt: a retry, not a failure. */
		aws_credentials_invalidate(k->provider);
		problem = psprintf("HTTP %ld from %s: %s: the credentials (from %s) expired; refreshing them",
						   resp->status, k->endpoint, code, aws_credentials_describe(k->provider));
	}
	else if (resp->status >= 500 || resp->status == 429 ||
		(code != NULL && is_retryable_code(code)))
		problem = psprintf("HTTP %ld from %s%s%s%s%s", resp->status, k->endpoint,
						   code ? ": " : "", code ? code : "",
						   message ? ": " : "", message ? message : "");
	else if (code != NULL && strcmp(code, "ResourceNotFoundException") == 0)
	{
		log_error("Kinesis stream \"%s\" does not exist at %s",
					 stream_label(k), k->endpoint);
		retry_note_permanent();
	}
	else
	{
		log_error("Kinesis refused the request to %s: HTTP %ld%s%s%s%s",
					 k->endpoint, resp->status, code ? ": " : "",
					 code ? code : "", message ? ": " : "", message ? message : "");
		if (aws_error_is_clock_skew(code, message))
			log_error_hint("The request's time is too far from AWS's: check this machine's clock (NTP); the signature embeds it.");
		else if (code != NULL && (strcmp(code, "UnrecognizedClientException") == 0 ||
								  strcmp(code, "InvalidSignatureException") == 0 ||
								  strcmp(code, "AccessDeniedException") == 0))
			log_error_hint("Check the AWS credentials (from %s) and the IAM policy.",
							  aws_credentials_describe(k->provider));
		/* The IAM policy will not change by starting again. */
		if (code != NULL && strcmp(code, "AccessDeniedException") == 0)
			retry_note_permanent();
	}
	free(code);
	free(message);
	return problem;
}


/*
 * One round: the pending records in up to k->max_in_flight calls at once
 * (each at most 500 records and 5 MiB), sent together.  Keys are distinct
 * across the records, so calls may complete in any order.  Leaves in
 * pending, in their order, what is still unacknowledged (failed, or not
 * sent because the calls were full); returns a problem to retry on, NULL,
 * or sets *fatal.
 */
static char *
put_round(KinesisTarget *k, ShipRecord **pending, int *npending, int *failed,
		  bool retry, bool *fatal)
{
	int			ncalls = 0;
	int			first[KINESIS_MAX_IN_FLIGHT + 1];
	int			sent;
	struct curl_slist *headers[KINESIS_MAX_IN_FLIGHT];
	bool		reached[KINESIS_MAX_IN_FLIGHT];
	char	   *problem = NULL;
	int			nleft = 0;
	ShipRecord **left = pg_malloc(sizeof(ShipRecord *) * Max(*npending, 1));

	*fatal = false;
	/* Split into calls. */
	first[0] = 0;
	while (ncalls < k->max_in_flight && first[ncalls] < *npending)
	{
		int			last = first[ncalls];
		size_t		bytes = 0;

		while (last < *npending && last - first[ncalls] < k->call_records &&
			   (last == first[ncalls] ||
				bytes + pending[last]->len + strlen(pending[last]->pkey) <= k->call_bytes))
		{
			bytes += pending[last]->len + strlen(pending[last]->pkey);
			last++;
		}
		first[++ncalls] = last;
	}
	sent = first[ncalls];

	for (int c = 0; c < ncalls; c++)
	{
		build_body(k, pending + first[c], first[c + 1] - first[c], &k->bodies[c]);
		headers[c] = kinesis_signed_headers(k, "PutRecords", k->bodies[c].data, k->bodies[c].len);
		k->calls++;
		if (retry)
		{
			k->retried_calls++;
			k->retried_records += first[c + 1] - first[c];
		}
	}
	http_request_many(k->pool, ncalls, "POST", k->endpoint, headers, k->bodies, k->resps, reached);

	for (int c = 0; c < ncalls && !*fatal; c++)
	{
		HttpResponse *resp = &k->resps[c];
		int			n = first[c + 1] - first[c];
		ShipRecord **recs = pending + first[c];
		char	   *call_problem = NULL;

		if (reached[c] && resp->status == 200)
		{
			char	   *code = NULL;
			char	   *message = NULL;
			int			nfailed = kinesis_parse_put_response(resp->body.data, resp->body.len, n, failed,
													 &code, &message, fatal, recs,
													 &k->throttled_records);

			if (nfailed < 0)
			{
				call_problem = psprintf("malformed PutRecords response from %s (HTTP 200, %zu bytes)",
										k->endpoint, resp->body.len);
				nfailed = n;
				for (int i = 0; i < n; i++)
					failed[i] = i;
			}
			else if (*fatal)
				log_error("Kinesis refused records for stream \"%s\": %s: %s",
							 stream_label(k), code, message ? message : "");
			else if (nfailed > 0)
				call_problem = psprintf("%d of %d records failed (%s: %s)", nfailed, n,
										code, message ? message : "");
			if (!*fatal)
			{
				k->records_sent += n - nfailed;
				for (int i = 0; i < nfailed; i++)
					left[nleft++] = recs[failed[i]];
			}
			free(code);
			free(message);
		}
		else if ((call_problem = call_failure(k, &k->pool[c], reached[c], resp)) == NULL)
			*fatal = true;
		else
		{
			for (int i = 0; i < n; i++)
				left[nleft++] = recs[i];
		}
		if (call_problem != NULL && problem == NULL)
			problem = call_problem;
		else
			free(call_problem);
	}
	for (int c = 0; c < ncalls; c++)
	{
		curl_slist_free_all(headers[c]);
		/* A large body is not kept for the next round: memory follows load. */
		if (k->bodies[c].maxlen > 1024 * 1024)
		{
			termPQExpBuffer(&k->bodies[c]);
			initPQExpBuffer(&k->bodies[c]);
		}
	}

	/* Unacknowledged records first (they are older), then the unsent. */
	for (int i = sent; i < *npending; i++)
		left[nleft++] = pending[i];
	memcpy(pending, left, sizeof(ShipRecord *) * nleft);
	*npending = nleft;
	free(left);
	if (*fatal)
	{
		free(problem);
		return NULL;
	}
	/* Only unsent records left: no failure to wait on. */
	if (problem == NULL && nleft > 0)
		problem = pg_strdup("");
	return problem;
}

/* kinesis_put_records' state between attempts. */
typedef struct PutState
{
	KinesisTarget *k;
	ShipRecord **pending;
	int			npending;
	int		   *failed;
	bool		failed_before;	/* a round failed: later calls are retries */
} PutState;

static CallOutcome
put_attempt(void *arg, int attempt, char **problem)
{
	PutState   *ps = arg;
	bool		fatal;

	if (ps->npending == 0)
		return CALL_DONE;
	*problem = put_round(ps->k, ps->pending, &ps->npending, ps->failed, ps->failed_before, &fatal);
	if (fatal)
		return CALL_FATAL;
	if (ps->npending == 0)
		return CALL_DONE;
	/* Only records that did not fit the calls in flight: no failure. */
	if (*problem != NULL && (*problem)[0] == '\0')
		return CALL_AGAIN;
	ps->failed_before = true;
	return CALL_RETRY;
}

ShipResult
kinesis_put_records(KinesisTarget *k, ShipRecord *recs, int n,
					volatile sig_atomic_t *stop)
{
	PutState	ps;
	char	   *what = psprintf("stream \"%s\"", stream_label(k));
	ShipResult	result;

	ps.k = k;
	ps.pending = pg_malloc(sizeof(ShipRecord *) * Max(n, 1));
	ps.failed = pg_malloc(sizeof(int) * Max(n, 1));
	ps.npending = n;
	ps.failed_before = false;
	for (int i = 0; i < n; i++)
		ps.pending[i] = &recs[i];
	result = retry_call(what, k->retry_timeout_s, put_attempt, &ps, stop);
	free(ps.pending);
	free(ps.failed);
	free(what);
	return result;
}

/* A call with a fixed body and its response, for retry_call(). */
typedef struct SimpleCall
{
	KinesisTarget *k;
	const char *operation;
	PQExpBufferData body;
	HttpResponse resp;
} SimpleCall;

static CallOutcome
describe_attempt(void *arg, int attempt, char **problem)
{
	SimpleCall *sc = arg;
	bool		reached = kinesis_call(sc->k, sc->operation, sc->body.data, sc->body.len,
									   &sc->resp);

	if (reached && sc->resp.status == 200)
		return CALL_DONE;
	/* At start-up, an endpoint that cannot be right is not retried long. */
	if (!reached && attempt >= 3 && http_error_is_wrong_endpoint(&sc->resp))
	{
		http_report_wrong_endpoint(sc->k->endpoint, &sc->resp);
		return CALL_FATAL;
	}
	*problem = call_failure(sc->k, &sc->k->http, reached, &sc->resp);
	return *problem == NULL ? CALL_FATAL : CALL_RETRY;
}

ShipResult
kinesis_check_stream(KinesisTarget *k, volatile sig_atomic_t *stop)
{
	SimpleCall	sc;
	char	   *what = psprintf("stream \"%s\"", stream_label(k));
	ShipResult	result;

	sc.k = k;
	sc.operation = "DescribeStreamSummary";
	initPQExpBuffer(&sc.body);
	http_response_init(&sc.resp);
	appendPQExpBufferChar(&sc.body, '{');
	append_stream_field(k, &sc.body);
	appendPQExpBufferChar(&sc.body, '}');
	result = retry_call(what, k->retry_timeout_s, describe_attempt, &sc, stop);
	termPQExpBuffer(&sc.body);
	http_response_free(&sc.resp);
	free(what);
	return result;
}

/* ----------------------------------------------------------------
 * --aggregate: the shard map and KPL aggregated records
 * ----------------------------------------------------------------
 */

/*
 * One page of ListShards into map (open shards only: a closed shard, one
 * with an ending sequence number, takes no more writes).  Returns the next
 * token (malloc'd) or NULL; *malformed on a response that is not one.
 */
char *
kinesis_parse_list_shards(const char *body, size_t len, KplShardMap *map, bool *malformed)
{
	json_error_t jerr;
	json_t	   *doc = json_loadb(body, len, 0, &jerr);
	json_t	   *shards;
	const char *next;
	char	   *result = NULL;

	*malformed = true;
	if (doc == NULL)
		return NULL;
	shards = json_object_get(doc, "Shards");
	if (!json_is_array(shards))
	{
		json_decref(doc);
		return NULL;
	}
	for (size_t i = 0; i < json_array_size(shards); i++)
	{
		json_t	   *sh = json_array_get(shards, i);
		json_t	   *range = json_object_get(sh, "HashKeyRange");
		json_t	   *seq = json_object_get(sh, "SequenceNumberRange");
		const char *id = json_string_value(json_object_get(sh, "ShardId"));
		const char *start = json_string_value(json_object_get(range, "StartingHashKey"));
		const char *end = json_string_value(json_object_get(range, "EndingHashKey"));
		KplShard	shard;

		if (id == NULL || start == NULL || end == NULL ||
			!kpl_parse_hash_key(start, &shard.start) || !kpl_parse_hash_key(end, &shard.end) ||
			shard.end < shard.start)
		{
			json_decref(doc);
			return NULL;
		}
		if (json_string_value(json_object_get(seq, "EndingSequenceNumber")) != NULL)
			continue;
		shard.id = pg_strdup(id);
		map->shards = pg_realloc(map->shards, sizeof(KplShard) * (map->nshards + 1));
		map->shards[map->nshards++] = shard;
	}
	next = json_string_value(json_object_get(doc, "NextToken"));
	if (next != NULL)
		result = pg_strdup(next);
	*malformed = false;
	json_decref(doc);
	return result;
}

/* kinesis_load_shard_map's state: pages read so far, the next token. */
typedef struct ListState
{
	KinesisTarget *k;
	KplShardMap map;
	char	   *token;
	PQExpBufferData body;
	HttpResponse resp;
} ListState;

static CallOutcome
list_attempt(void *arg, int attempt, char **problem)
{
	ListState  *ls = arg;

	for (;;)
	{
		bool		reached;
		bool		malformed;
		char	   *next;

		resetPQExpBuffer(&ls->body);
		appendPQExpBufferChar(&ls->body, '{');
		if (ls->token != NULL)
		{
			/* With a token, the stream must not be named again. */
			appendPQExpBufferStr(&ls->body, "\"NextToken\":");
			append_json_string(&ls->body, ls->token, strlen(ls->token));
		}
		else
			append_stream_field(ls->k, &ls->body);
		appendPQExpBufferChar(&ls->body, '}');

		reached = kinesis_call(ls->k, "ListShards", ls->body.data, ls->body.len, &ls->resp);
		if (!reached || ls->resp.status != 200)
		{
			*problem = call_failure(ls->k, &ls->k->http, reached, &ls->resp);
			if (*problem != NULL)
				return CALL_RETRY;
			if (reached && ls->resp.status == 400)
				log_error_hint("--aggregate needs kinesis:ListShards on the stream.");
			return CALL_FATAL;
		}
		next = kinesis_parse_list_shards(ls->resp.body.data, ls->resp.body.len, &ls->map, &malformed);
		if (malformed)
		{
			*problem = psprintf("malformed ListShards response from %s (HTTP 200, %zu bytes)",
								ls->k->endpoint, ls->resp.body.len);
			return CALL_RETRY;
		}
		free(ls->token);
		ls->token = next;
		if (ls->token == NULL)
		{
			char	   *gap;

			/*
			 * The last page: the map must cover every hash key once.  If not
			 * (a reshard under way, a page lost), read it all again rather
			 * than place a row by a guess.
			 */
			kpl_map_sort(&ls->map);
			if (kpl_map_check(&ls->map, &gap))
				return CALL_DONE;
			*problem = psprintf("ListShards of stream \"%s\" gave an unusable shard map (%s)",
								stream_label(ls->k), gap);
			free(gap);
			kpl_map_free(&ls->map);
			return CALL_RETRY;
		}
	}
}

ShipResult
kinesis_load_shard_map(KinesisTarget *k, volatile sig_atomic_t *stop)
{
	ListState	ls;
	char	   *what = psprintf("stream \"%s\"", stream_label(k));
	ShipResult	result;

	memset(&ls, 0, sizeof(ls));
	ls.k = k;
	initPQExpBuffer(&ls.body);
	http_response_init(&ls.resp);
	result = retry_call(what, k->retry_timeout_s, list_attempt, &ls, stop);
	free(ls.token);
	free(what);
	termPQExpBuffer(&ls.body);
	http_response_free(&ls.resp);
	if (result != SHIP_OK)
	{
		kpl_map_free(&ls.map);
		return result;
	}
	kpl_map_free(&k->map);
	k->map = ls.map;
	k->map_loaded_at = now_seconds();
	return SHIP_OK;
}

static int
int_cmp(const void *a, const void *b)
{
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* An aggregate being filled for one shard. */
typedef struct AggBuild
{
	int			shard;
	KplAggregate agg;
	int		   *rows;			/* indexes into the rows */
	int			nrows;
} AggBuild;

/*
 * Sends the aggregates (recs[i] encodes aggs[i]) in waves of at most one
 * record per shard, each shard retrying with a backoff of its own.  Stops
 * after a wave in which a record landed in another shard than predicted:
 * the map is stale, and later aggregates of that shard could put later
 * versions of rows where a consumer reads them before the earlier ones,
 * sent again.  unsent[i] tells what was held back.
 */
static ShipResult
send_waves(KinesisTarget *k, ShipRecord *recs, AggBuild *aggs, int naggs, bool *unsent,
		   volatile sig_atomic_t *stop)
{
	int			nshards = k->map.nshards;
	int		   *head = pg_malloc(sizeof(int) * nshards);	/* next aggregate, or -1 */
	int		   *attempts = pg_malloc0(sizeof(int) * nshards);
	double	   *not_before = pg_malloc0(sizeof(double) * nshards);
	double	   *failing_since = pg_malloc0(sizeof(double) * nshards);
	ShipRecord **wave = pg_malloc(sizeof(ShipRecord *) * Max(nshards, 1));
	int		   *wave_agg = pg_malloc(sizeof(int) * Max(nshards, 1));
	int		   *failed = pg_malloc(sizeof(int) * Max(nshards, 1));
	bool	   *acked = pg_malloc0(sizeof(bool) * Max(naggs, 1));
	ShipResult	result = SHIP_OK;
	bool		stale = false;
	int			retries = 0;

	/* Each shard's first aggregate; later ones follow in creation order. */
	for (int s = 0; s < nshards; s++)
		head[s] = -1;
	for (int i = naggs - 1; i >= 0; i--)
		head[aggs[i].shard] = i;

	while (result == SHIP_OK && !stale)
	{
		int			nwave = 0;
		int			nleft;
		double		now = now_seconds();
		double		wake = 0;
		bool		fatal;
		char	   *problem;

		for (int s = 0; s < nshards; s++)
		{
			if (head[s] < 0)
				continue;
			if (not_before[s] > now)
			{
				wake = wake == 0 ? not_before[s] : Min(wake, not_before[s]);
				continue;
			}
			wave_agg[nwave] = head[s];
			wave[nwave++] = &recs[head[s]];
		}
		if (nwave == 0 && wake == 0)
			break;				/* every aggregate acknowledged */
		if (nwave == 0)
		{
			/* Only shards backing off: wait for the first, awake to a stop. */
			while (now_seconds() < wake)
			{
				if ((stop && *stop) || wait_tick())
				{
					result = SHIP_STOPPED;
					break;
				}
				usleep(Min(100000, (useconds_t) ((wake - now_seconds()) * 1e6) + 1000));
			}
			continue;
		}

		nleft = nwave;
		problem = put_round(k, wave, &nleft, failed, retries > 0, &fatal);
		if (fatal)
		{
			free(problem);
			result = SHIP_FATAL;
			break;
		}

		/* What is left in wave[] failed (or was not sent: calls were full). */
		for (int j = 0; j < nwave; j++)
		{
			int			i = wave_agg[j];
			bool		left = false;

			for (int l = 0; l < nleft; l++)
				if (wave[l] == &recs[i])
					left = true;
			if (left)
				continue;
			acked[i] = true;
			attempts[aggs[i].shard] = 0;
			failing_since[aggs[i].shard] = 0;
			if (recs[i].got_shard != NULL && strcmp(recs[i].got_shard, recs[i].want_shard) != 0)
				stale = true;
		}
		for (int s = 0; s < nshards; s++)
		{
			if (head[s] < 0 || !acked[head[s]])
				continue;
			/* The shard's next aggregate. */
			{
				int			next = -1;

				for (int i = head[s] + 1; i < naggs; i++)
					if (aggs[i].shard == s)
					{
						next = i;
						break;
					}
				head[s] = next;
			}
		}
		if (nleft > 0 && problem != NULL && problem[0] != '\0')
		{
			/* The failed shards back off, each on its own. */
			retries++;
			for (int l = 0; l < nleft; l++)
			{
				int			s = -1;

				for (int j = 0; j < nwave; j++)
					if (wave[l] == &recs[wave_agg[j]])
						s = aggs[wave_agg[j]].shard;
				if (s < 0)
					continue;
				if (failing_since[s] == 0)
					failing_since[s] = now;
				attempts[s]++;
				not_before[s] = now_seconds() + retry_backoff_ms(attempts[s]) / 1000.0;
				if (k->retry_timeout_s > 0 && now - failing_since[s] > k->retry_timeout_s)
				{
					log_error("giving up on shard %s of stream \"%s\" after %d attempts in %d s: %s",
								 k->map.shards[s].id, stream_label(k), attempts[s],
								 k->retry_timeout_s, problem);
					result = SHIP_FATAL;
				}
			}
			if (retries == 1 || retries % 10 == 0)
				log_warning("%s; retrying those shards", problem);
			else
				log_info("%s; retrying those shards", problem);
		}
		free(problem);
		if (result == SHIP_OK && ((stop && *stop) || wait_tick()))
			result = SHIP_STOPPED;
	}

	for (int i = 0; i < naggs; i++)
		unsent[i] = !acked[i];
	free(head);
	free(attempts);
	free(not_before);
	free(failing_since);
	free(wave);
	free(wave_agg);
	free(failed);
	free(acked);
	return result;
}

ShipResult
kinesis_put_aggregated(KinesisTarget *k, ShipRecord *rows, int n, size_t agg_bytes,
					   volatile sig_atomic_t *stop)
{
	int		   *todo = pg_malloc(sizeof(int) * Max(n, 1));
	int			ntodo = n;
	ShipResult	result = SHIP_OK;
	int			rounds = 0;

	for (int i = 0; i < n; i++)
		todo[i] = i;

	while (ntodo > 0 && result == SHIP_OK)
	{
		AggBuild   *aggs = NULL;
		int			naggs = 0;
		int		   *open_agg;	/* per shard: its aggregate being filled, or -1 */
		ShipRecord *recs;
		int			nmismatched = 0;
		int		   *again;
		int			nagain = 0;
		bool	   *unsent;

		if (k->map.nshards == 0 || now_seconds() - k->map_loaded_at >= KINESIS_MAP_REFRESH_S)
		{
			result = kinesis_load_shard_map(k, stop);
			if (result != SHIP_OK)
				break;
		}

		/* Group the rows by shard, in order; a full aggregate starts a new one. */
		open_agg = pg_malloc(sizeof(int) * k->map.nshards);
		for (int s = 0; s < k->map.nshards; s++)
			open_agg[s] = -1;
		for (int t = 0; t < ntodo; t++)
		{
			ShipRecord *r = &rows[todo[t]];
			size_t		keylen = strlen(r->pkey);
			int			shard = kpl_shard_of(&k->map, kpl_hash_key(r->pkey, keylen));
			AggBuild   *a;

			/*
			 * kinesis_load_shard_map accepts only a map that covers every
			 * hash key: a row without a shard is a bug, and sending it in
			 * another shard's record would confirm a row stored where KCL
			 * drops it.
			 */
			if (shard < 0)
			{
				log_error("internal error: no shard of stream \"%s\" covers the hash key of partition key %s",
						  stream_label(k), r->pkey);
				exit(1);
			}
			if (open_agg[shard] >= 0)
			{
				a = &aggs[open_agg[shard]];
				if (kpl_size(&a->agg) + kpl_added_size(&a->agg, r->pkey, keylen, r->len) > agg_bytes)
					open_agg[shard] = -1;
			}
			if (open_agg[shard] < 0)
			{
				aggs = pg_realloc(aggs, sizeof(AggBuild) * (naggs + 1));
				a = &aggs[naggs];
				a->shard = shard;
				kpl_init(&a->agg);
				a->rows = pg_malloc(sizeof(int) * ntodo);
				a->nrows = 0;
				open_agg[shard] = naggs++;
			}
			a = &aggs[open_agg[shard]];
			kpl_add(&a->agg, r->pkey, keylen, r->data, r->len);
			a->rows[a->nrows++] = todo[t];
		}
		free(open_agg);

		/* One Kinesis record per aggregate, hash key inside its shard. */
		recs = pg_malloc0(sizeof(ShipRecord) * naggs);
		for (int i = 0; i < naggs; i++)
		{
			PQExpBufferData data;
			char		ehk[40];

			initPQExpBuffer(&data);
			kpl_encode(&aggs[i].agg, &data);
			recs[i].data = data.data;
			recs[i].len = data.len;
			recs[i].pkey = pg_strdup(aggs[i].agg.first_key);
			kpl_format_hash_key(kpl_hash_key(recs[i].pkey, strlen(recs[i].pkey)), ehk);
			recs[i].ehk = pg_strdup(ehk);
			recs[i].want_shard = k->map.shards[aggs[i].shard].id;
			/* Encoded: the aggregate's own copy of the rows is not needed. */
			kpl_free(&aggs[i].agg);
		}

		/*
		 * Waves, one aggregate per shard each: a shard's next aggregate is
		 * sent only once the one before is acknowledged, so two records of
		 * one shard are never in flight at once and a retried record never
		 * lands after a later one of its shard (keys may repeat in the
		 * rows; their versions stay in order).  A shard whose record failed
		 * (throttled: ProvisionedThroughputExceededException) backs off on
		 * its own; the other shards keep flowing.
		 */
		unsent = pg_malloc0(sizeof(bool) * Max(naggs, 1));
		result = send_waves(k, recs, aggs, naggs, unsent, stop);

		/* Rows of records that landed in another shard go again. */
		again = pg_malloc(sizeof(int) * Max(ntodo, 1));
		for (int i = 0; i < naggs; i++)
		{
			bool		mismatched = result == SHIP_OK && recs[i].got_shard != NULL &&
				strcmp(recs[i].got_shard, recs[i].want_shard) != 0;

			if (mismatched)
				nmismatched++;
			if (result == SHIP_OK && (mismatched || unsent[i]))
			{
				memcpy(again + nagain, aggs[i].rows, sizeof(int) * aggs[i].nrows);
				nagain += aggs[i].nrows;
			}
			if (result == SHIP_OK && !unsent[i])
				k->rows_aggregated += aggs[i].nrows;
			free(recs[i].data);
			free(recs[i].pkey);
			free(recs[i].ehk);
			free(recs[i].got_shard);
			kpl_free(&aggs[i].agg);
			free(aggs[i].rows);
		}
		free(recs);
		free(aggs);
		free(unsent);
		free(todo);
		/* Back in the rows' order (commit order), whatever shard they were in. */
		qsort(again, nagain, sizeof(int), int_cmp);
		todo = again;
		ntodo = nagain;
		if (nmismatched > 0)
		{
			log_warning("stream \"%s\" was resharded: %d aggregated records landed in another shard than predicted; reading the shards again and sending their %d rows again",
						   stream_label(k), nmismatched, nagain);
			k->aggregates_resent += nmismatched;
			k->map_loaded_at = 0;
			if (++rounds > 10)
			{
				log_error("the shard map of stream \"%s\" keeps changing", stream_label(k));
				result = SHIP_FATAL;
			}
		}
	}
	free(todo);
	return result;
}
