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
#include "jscan.h"
#include "kinesis_int.h"
#include "retry.h"
#include "aws_request.h"
#include "sigv4.h"


/* One kept-alive connection, request body and response per call in flight. */
static void
init_pool(KinesisTarget *k, int max_in_flight)
{
	k->max_in_flight = max_in_flight;
	k->pool_size = max_in_flight;
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

	/*
	 * The strings and the provider are shared and live as long as the
	 * process.
	 */
	dst->endpoint = src->endpoint;
	dst->host = src->host;
	dst->region = src->region;
	dst->stream_name = src->stream_name;
	dst->stream_arn = src->stream_arn;
	dst->provider = src->provider;
	dst->retry_timeout_s = src->retry_timeout_s;
	dst->call_records = src->call_records;
	dst->call_bytes = src->call_bytes;
	dst->cbor = src->cbor;
	http_client_init(&dst->http, src->http.ca_file, src->http.timeout_ms);
	init_pool(dst, max_in_flight);
}

void
kinesis_free(KinesisTarget *k, bool clone)
{
	for (int i = 0; i < k->pool_size; i++)
	{
		http_client_free(&k->pool[i]);
		termPQExpBuffer(&k->bodies[i]);
		http_response_free(&k->resps[i]);
	}
	free(k->pool);
	free(k->bodies);
	free(k->resps);
	http_client_free(&k->http);
	kpl_map_free(&k->map);
	kpl_hasher_free(k->hasher);
	aws_credentials_clear(&k->creds);
	if (!clone)
	{
		free(k->endpoint);
		free(k->host);
		free(k->region);
		free(k->stream_name);
		free(k->stream_arn);
	}
	memset(k, 0, sizeof(*k));
}

/*
 * A JSON string literal written at dst, which has room for 2 + 6 * len
 * bytes; returns the end of what was written.
 */
static char *
json_string_at(char *dst, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";

	*dst++ = '"';
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
		{
			*dst++ = '\\';
			*dst++ = (char) c;
		}
		else if (c < 0x20)
		{
			memcpy(dst, "\\u00", 4);
			dst[4] = hex[c >> 4];
			dst[5] = hex[c & 15];
			dst += 6;
		}
		else
			*dst++ = (char) c;
	}
	*dst++ = '"';
	return dst;
}

void
kinesis_reserve(PQExpBuffer buf, size_t n)
{
	if (!enlargePQExpBuffer(buf, n + 1))
	{
		log_error("out of memory");
		exit(1);
	}
}

/* Appends a JSON string literal. */
void
kinesis_append_json_string(PQExpBuffer buf, const char *s, size_t len)
{
	kinesis_reserve(buf, 2 + 6 * len);
	buf->len = json_string_at(buf->data + buf->len, s, len) - buf->data;
	buf->data[buf->len] = '\0';
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
		appendPQExpBuffer(out, "@%X/%X/%u", LSN_FORMAT_ARGS(position),
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
void
kinesis_append_stream_field(KinesisTarget *k, PQExpBuffer body)
{
	if (k->stream_arn)
	{
		appendPQExpBufferStr(body, "\"StreamARN\":");
		kinesis_append_json_string(body, k->stream_arn, strlen(k->stream_arn));
	}
	else
	{
		appendPQExpBufferStr(body, "\"StreamName\":");
		kinesis_append_json_string(body, k->stream_name, strlen(k->stream_name));
	}
}

#define PUT_DATA "{\"Data\":\""
#define PUT_KEY "\",\"PartitionKey\":"
#define PUT_EHK ",\"ExplicitHashKey\":\""

/*
 * The PutRecords body: room for all of it is made first, then every
 * record is written in place (base64 straight into the body).
 */
static void
build_body(KinesisTarget *k, ShipRecord **recs, int n, PQExpBuffer body)
{
	size_t		room = 2;
	char	   *p;

	if (k->cbor)
	{
		kinesis_cbor_body(k->stream_arn ? "StreamARN" : "StreamName",
						  k->stream_arn ? k->stream_arn : k->stream_name, recs, n, body);
		return;
	}
	resetPQExpBuffer(body);
	appendPQExpBufferChar(body, '{');
	kinesis_append_stream_field(k, body);
	appendPQExpBufferStr(body, ",\"Records\":[");
	for (int i = 0; i < n; i++)
		room += 1 + strlen(PUT_DATA) + 4 * ((recs[i]->len + 2) / 3) + strlen(PUT_KEY) +
			2 + 6 * recs[i]->pkey_len + 1 +
			(recs[i]->ehk != NULL ? strlen(PUT_EHK) + strlen(recs[i]->ehk) + 1 : 0);
	kinesis_reserve(body, room);
	p = body->data + body->len;
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			*p++ = ',';
		memcpy(p, PUT_DATA, strlen(PUT_DATA));
		p += strlen(PUT_DATA);
		p += EVP_EncodeBlock((unsigned char *) p, (const unsigned char *) recs[i]->data,
							 (int) recs[i]->len);
		memcpy(p, PUT_KEY, strlen(PUT_KEY));
		p += strlen(PUT_KEY);
		p = json_string_at(p, recs[i]->pkey, recs[i]->pkey_len);
		if (recs[i]->ehk != NULL)
		{
			size_t		len = strlen(recs[i]->ehk);

			memcpy(p, PUT_EHK, strlen(PUT_EHK));
			p += strlen(PUT_EHK);
			memcpy(p, recs[i]->ehk, len);
			p += len;
			*p++ = '"';
		}
		*p++ = '}';
	}
	*p++ = ']';
	*p++ = '}';
	body->len = p - body->data;
	body->data[body->len] = '\0';
}

/* The signed headers of one call, in the JSON protocol or the CBOR one. */
static struct curl_slist *
kinesis_signed_headers(KinesisTarget *k, const char *operation, const char *body, size_t len,
					   bool cbor)
{
	char	   *target = psprintf("Kinesis_20131202.%s", operation);
	SigV4Header extra[2] = {
		{"Content-Type", cbor ? "application/x-amz-cbor-1.1" : "application/x-amz-json-1.1"},
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
bool
kinesis_call(KinesisTarget *k, const char *operation, const char *body, size_t len,
			 HttpResponse *resp)
{
	struct curl_slist *headers = kinesis_signed_headers(k, operation, body, len, false);
	bool		ok = http_request(&k->http, "POST", k->endpoint, headers, body, len, resp);

	curl_slist_free_all(headers);
	return ok;
}

/*
 * The error code of a failed call: "__type" without its namespace.  A
 * call in the CBOR protocol is answered in CBOR: a body that starts with a
 * CBOR map's head (never JSON text) is read as CBOR.
 */
char *
kinesis_error_code(const char *body, size_t len, char **message)
{
	json_error_t jerr;
	json_t	   *doc;
	const char *type = NULL;
	const char *msg = NULL;
	char	   *result = NULL;
	char	   *cbor_type = NULL;

	*message = NULL;
	if (len > 0 && ((unsigned char) body[0] & 0xE0) == 0xA0)
	{
		kinesis_cbor_error(body, len, &cbor_type, message);
		type = cbor_type;
		doc = NULL;
	}
	else
		doc = json_loadb(body, len, 0, &jerr);
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
	free(cbor_type);
	return result;
}

/* What Kinesis's error codes mean (aws_call_failure). */
static const char *const kinesis_retryable[] = {
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
static const char *const kinesis_missing[] = {"ResourceNotFoundException", NULL};
static const char *const kinesis_denied[] = {"AccessDeniedException", NULL};
static const AwsErrorTable kinesis_errors = {
	"Kinesis", "stream", kinesis_retryable, kinesis_missing, kinesis_denied, false
};

/* One member: a string into *dest when wanted, else checked and skipped. */
static bool
scan_member(JScan *sc, JSpan *dest)
{
	if (dest == NULL)
		return jscan_skip_value_at(sc, 4);
	if (jscan_peek(sc, '"'))
		return jscan_string(sc, dest);
	/* Not a string: as if absent (a later duplicate wins, as in jansson). */
	dest->set = false;
	return jscan_skip_value_at(sc, 4);
}

/* One element of Records. */
static bool
scan_result(JScan *sc, PutResult *r)
{
	JSpan		key;

	memset(r, 0, sizeof(*r));
	if (!jscan_peek(sc, '{'))
		return jscan_skip_value_at(sc, 3);
	r->object = true;
	jscan_expect(sc, '{');
	if (jscan_expect(sc, '}'))
		return true;
	do
	{
		JSpan	   *dest = NULL;

		if (!jscan_string(sc, &key) || !jscan_expect(sc, ':'))
			return false;
		if (jscan_key_is(&key, "ErrorCode"))
			dest = &r->code;
		else if (jscan_key_is(&key, "ErrorMessage"))
			dest = &r->message;
		else if (jscan_key_is(&key, "SequenceNumber"))
			dest = &r->sequence;
		else if (jscan_key_is(&key, "ShardId"))
			dest = &r->shard;
		if (!scan_member(sc, dest))
			return false;
	} while (jscan_expect(sc, ','));
	return jscan_expect(sc, '}');
}

/*
 * The Records of an answer, read in place (a tree of 500 records was a
 * quarter of the shipper's time): the number of elements of the last
 * Records member (-1 when there is none, or it is not an array), results
 * for the first max of them; false when the answer is not JSON.
 */
static bool
scan_put_response(const char *body, size_t len, PutResult *results, int max, int *count)
{
	JScan		sc;
	JSpan		key;

	*count = -1;
	jscan_init(&sc, body, len);
	if (!jscan_peek(&sc, '{'))
		return jscan_skip_value(&sc) && jscan_at_end(&sc);
	jscan_expect(&sc, '{');
	if (jscan_expect(&sc, '}'))
		return jscan_at_end(&sc);
	do
	{
		if (!jscan_string(&sc, &key) || !jscan_expect(&sc, ':'))
			return false;
		if (!jscan_key_is(&key, "Records"))
		{
			if (!jscan_skip_value_at(&sc, 2))
				return false;
			continue;
		}
		/* A later Records replaces an earlier one, as in jansson. */
		if (!jscan_peek(&sc, '['))
		{
			*count = -1;
			if (!jscan_skip_value_at(&sc, 2))
				return false;
			continue;
		}
		jscan_expect(&sc, '[');
		*count = 0;
		if (jscan_expect(&sc, ']'))
			continue;
		do
		{
			PutResult	spare;

			if (!scan_result(&sc, *count < max ? &results[*count] : &spare))
				return false;
			(*count)++;
		} while (jscan_expect(&sc, ','));
		if (!jscan_expect(&sc, ']'))
			return false;
	} while (jscan_expect(&sc, ','));
	return jscan_expect(&sc, '}') && jscan_at_end(&sc);
}

/* A result's string: JSON escapes read (a CBOR string has none). */
static char *
span_dup(const JSpan *span)
{
	char	   *out;

	if (span->escaped)
		return jscan_strdup(span);
	out = pg_malloc(span->len + 1);
	memcpy(out, span->s, span->len);
	out[span->len] = '\0';
	return out;
}

/* What the results of an answer say (kinesis_parse_put_response). */
static int
put_results(PutResult *results, int n, int *failed, char **first_code, char **first_message,
			bool *fatal, ShipRecord **recs, uint64_t *throttled)
{
	int			nfailed = 0;

	for (int i = 0; i < n; i++)
	{
		PutResult  *r = &results[i];
		char	   *code;

		if (!r->object)
			return -1;
		if (!r->code.set)
		{
			if (!r->sequence.set)
				return -1;
			if (recs[i]->want_shard != NULL)
			{
				free(recs[i]->got_shard);
				recs[i]->got_shard = r->shard.set ? span_dup(&r->shard) : NULL;
			}
			continue;
		}
		code = span_dup(&r->code);
		if (strcmp(code, "ProvisionedThroughputExceededException") == 0)
			(*throttled)++;
		failed[nfailed++] = i;
		if (*first_code == NULL)
		{
			*first_code = pg_strdup(code);
			*first_message = r->message.set ? span_dup(&r->message) : NULL;
		}
		/* KMS key problems do not go away by retrying. */
		if (strncmp(code, "KMS", 3) == 0 && strcmp(code, "KMSThrottlingException") != 0)
			*fatal = true;
		free(code);
	}
	return nfailed;
}

/*
 * Parses a 200 response, in the CBOR protocol or the JSON one.  Returns
 * the number of failed records (their indexes in failed[]), or -1 when the
 * response is malformed.
 */
int
kinesis_parse_put_response(const char *body, size_t len, bool cbor, int n, int *failed,
						   char **first_code, char **first_message, bool *fatal,
						   ShipRecord **recs, uint64_t *throttled)
{
	PutResult  *results = pg_malloc(sizeof(PutResult) * Max(n, 1));
	int			count;
	int			nfailed;
	CScan		sc;
	bool		scanned;

	*fatal = false;
	if (cbor)
		scanned = kinesis_cbor_scan_put_response(&sc, body, len, results, n, &count);
	else
		scanned = scan_put_response(body, len, results, n, &count);
	if (!scanned || count != n)
		nfailed = -1;
	else
		nfailed = put_results(results, n, failed, first_code, first_message, fatal, recs,
							  throttled);
	if (cbor)
		cscan_free(&sc);
	free(results);
	return nfailed;
}

const char *
kinesis_stream_label(KinesisTarget *k)
{
	return k->stream_arn ? k->stream_arn : k->stream_name;
}

/*
 * Looks at a call that did not succeed.  A retryable failure returns a
 * description to log; a permanent one is reported here and returns NULL.
 */
char *
kinesis_call_failure(KinesisTarget *k, HttpClient *client, bool reached, HttpResponse *resp)
{
	char	   *code = NULL;
	char	   *message = NULL;
	char	   *problem;
	AwsFailedCall call = {client, k->provider, k->endpoint, NULL, kinesis_stream_label(k),
	reached, resp, NULL, NULL};

	if (reached)
		code = kinesis_error_code(resp->body.data, resp->body.len, &message);
	call.code = code;
	call.message = message;
	problem = aws_call_failure(&kinesis_errors, &call);
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
char *
kinesis_put_round(KinesisTarget *k, ShipRecord **pending, int *npending, int *failed,
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
				bytes + pending[last]->len + pending[last]->pkey_len <= k->call_bytes))
		{
			bytes += pending[last]->len + pending[last]->pkey_len;
			last++;
		}
		first[++ncalls] = last;
	}
	sent = first[ncalls];

	for (int c = 0; c < ncalls; c++)
	{
		build_body(k, pending + first[c], first[c + 1] - first[c], &k->bodies[c]);
		headers[c] = kinesis_signed_headers(k, "PutRecords", k->bodies[c].data, k->bodies[c].len,
											k->cbor);
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
			int			nfailed = kinesis_parse_put_response(resp->body.data, resp->body.len, k->cbor,
															 n, failed,
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
						  kinesis_stream_label(k), code, message ? message : "");
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
		else if ((call_problem = kinesis_call_failure(k, &k->pool[c], reached[c], resp)) == NULL)
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
	*problem = kinesis_put_round(ps->k, ps->pending, &ps->npending, ps->failed, ps->failed_before, &fatal);
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
					StopFlag *stop)
{
	PutState	ps;
	char	   *what = psprintf("stream \"%s\"", kinesis_stream_label(k));
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
	*problem = kinesis_call_failure(sc->k, &sc->k->http, reached, &sc->resp);
	return *problem == NULL ? CALL_FATAL : CALL_RETRY;
}

ShipResult
kinesis_check_stream(KinesisTarget *k, StopFlag *stop)
{
	SimpleCall	sc;
	char	   *what = psprintf("stream \"%s\"", kinesis_stream_label(k));
	ShipResult	result;

	sc.k = k;
	sc.operation = "DescribeStreamSummary";
	initPQExpBuffer(&sc.body);
	http_response_init(&sc.resp);
	appendPQExpBufferChar(&sc.body, '{');
	kinesis_append_stream_field(k, &sc.body);
	appendPQExpBufferChar(&sc.body, '}');
	result = retry_call(what, k->retry_timeout_s, describe_attempt, &sc, stop);
	termPQExpBuffer(&sc.body);
	http_response_free(&sc.resp);
	free(what);
	return result;
}
