/*-------------------------------------------------------------------------
 *
 * kinesis_sink.c
 *	  A Kinesis stand-in for benchmarks that costs (almost) nothing: it
 *	  answers PutRecords, ListShards and DescribeStreamSummary for one
 *	  stream of N shards, checks every request's SigV4 signature (or one in
 *	  --sigv4-sample, or none), decodes every record, de-aggregates KPL
 *	  records (magic, protobuf, MD5 trailer checked), counts user records
 *	  per shard, and can play the per-shard limits (1,000 records/s and
 *	  1 MiB/s, token buckets one second deep, refilled continuously) with a
 *	  latency added to each call.  Nothing is stored.
 *
 *	  A PutRecords call in Kinesis's CBOR protocol (application/x-amz-cbor-1.1)
 *	  is read with the shipper's CBOR scanner (cscan.c) and answered in
 *	  CBOR.
 *
 *	  GET /__stats gives the counters as JSON, the sink's own CPU seconds
 *	  among them; GET /__reset zeroes them.
 *
 *	  kinesis_sink --port N [--shards N] [--stream NAME] [--sigv4-sample N]
 *				   [--limits] [--latency-ms N] [--threads]
 *
 *	  Built with the shipper (make -C shipper kinesis_sink); see
 *	  bench/README in BENCHMARKS.md's "Shipper ceiling" section.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <getopt.h>
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cbor.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "cscan.h"
#include "jscan.h"
#include "pqexpbuffer.h"
#include "sigv4.h"

#define MAX_SHARDS 1024
#define LIMIT_RECORDS 1000.0
#define LIMIT_BYTES (1024.0 * 1024.0)

typedef unsigned __int128 u128;

typedef struct Shard
{
	u128		start;
	u128		end;
	double		recs;			/* token buckets (--limits) */
	double		bytes;
	double		last;
	uint64_t	records;		/* Kinesis records accepted */
	uint64_t	user_records;	/* rows, after de-aggregation */
	uint64_t	throttled;
} Shard;

static struct
{
	int			port;
	int			nshards;
	const char *stream;
	const char *access_key;
	const char *secret_key;
	int			sigv4_sample;	/* check every Nth request (1: all, 0: none) */
	bool		limits;
	int			latency_ms;
	bool		threads;
}			opt = {0, 4, "fundrecs", "AKIDFUNDRECSTEST", "fundrecs/test/secret", 1, false, 0, false};

static Shard shards[MAX_SHARDS];
static uint64_t sequence;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct
{
	uint64_t	requests;
	uint64_t	put_calls;
	uint64_t	records;
	uint64_t	user_records;
	uint64_t	aggregated;
	uint64_t	body_bytes;
	uint64_t	data_bytes;
	uint64_t	sig_checked;
	uint64_t	sig_failed;
	uint64_t	bad_requests;
	uint64_t	throttled;
	double		first_put;
	double		last_put;
} stats;

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
format_u128(u128 v, char out[41])
{
	char		tmp[41];
	int			n = 0;

	do
	{
		tmp[n++] = '0' + (int) (v % 10);
		v /= 10;
	} while (v > 0);
	for (int i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
}

static bool
parse_u128(const char *s, u128 *out)
{
	u128		v = 0;

	if (*s == '\0')
		return false;
	for (; *s; s++)
	{
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (*s - '0');
	}
	*out = v;
	return true;
}

static u128
md5_hash_key(const char *key, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	u128		v = 0;

	EVP_Digest(key, len, md, &mdlen, EVP_md5(), NULL);
	for (int i = 0; i < 16; i++)
		v = (v << 8) | md[i];
	return v;
}

static int
shard_of(u128 h)
{
	for (int i = 0; i < opt.nshards; i++)
		if (h >= shards[i].start && h <= shards[i].end)
			return i;
	return opt.nshards - 1;
}

/* Token buckets; called under the lock. */
static bool
admit(Shard *sh, size_t nbytes, double now)
{
	sh->recs = Min(LIMIT_RECORDS, sh->recs + (now - sh->last) * LIMIT_RECORDS);
	sh->bytes = Min(LIMIT_BYTES, sh->bytes + (now - sh->last) * LIMIT_BYTES);
	sh->last = now;
	if (sh->recs < 1 || sh->bytes < nbytes)
		return false;
	sh->recs -= 1;
	sh->bytes -= nbytes;
	return true;
}

/* A protobuf varint; false when cut short. */
static bool
varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
	int			shift = 0;

	*v = 0;
	while (*p < end && shift < 64)
	{
		unsigned char b = *(*p)++;

		*v |= (uint64_t) (b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
		shift += 7;
	}
	return false;
}

/*
 * Counts the user records of a KPL aggregated record (magic, protobuf
 * AggregatedRecord, MD5 of the protobuf); -1 when it is not one or is
 * malformed.  Each record must name a partition key of the table.
 */
static int64_t
kpl_count(const unsigned char *data, size_t len)
{
	static const unsigned char magic[4] = {0xF3, 0x89, 0x9A, 0xC2};
	const unsigned char *p;
	const unsigned char *end;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	uint64_t	nkeys = 0;
	int64_t		nrecords = 0;

	if (len < 4 + 16 || memcmp(data, magic, 4) != 0)
		return -1;
	p = data + 4;
	end = data + len - 16;
	EVP_Digest(p, end - p, md, &mdlen, EVP_md5(), NULL);
	if (memcmp(md, end, 16) != 0)
		return -1;
	while (p < end)
	{
		uint64_t	tag;
		uint64_t	n;

		if (!varint(&p, end, &tag) || (tag & 7) != 2 || !varint(&p, end, &n) ||
			n > (uint64_t) (end - p))
			return -1;
		if ((tag >> 3) == 1)
			nkeys++;
		else if ((tag >> 3) == 3)
		{
			/* Record: partition_key_index (1), data (3) at least. */
			const unsigned char *r = p;
			const unsigned char *rend = p + n;
			bool		has_key = false;

			while (r < rend)
			{
				uint64_t	rtag;
				uint64_t	v;

				if (!varint(&r, rend, &rtag))
					return -1;
				if ((rtag & 7) == 0)
				{
					if (!varint(&r, rend, &v))
						return -1;
					if ((rtag >> 3) == 1)
					{
						if (v >= nkeys)
							return -1;
						has_key = true;
					}
				}
				else if ((rtag & 7) == 2)
				{
					if (!varint(&r, rend, &v) || v > (uint64_t) (rend - r))
						return -1;
					r += v;
				}
				else
					return -1;
			}
			if (!has_key)
				return -1;
			nrecords++;
		}
		p += n;
	}
	return nrecords;
}

/* One request's state while its body arrives. */
typedef struct Request
{
	PQExpBufferData body;
	uint64_t	number;
} Request;

#define AMZ_CBOR "application/x-amz-cbor-1.1"

/* The call is in the CBOR protocol. */
static bool
is_cbor(struct MHD_Connection *c)
{
	const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");

	return ctype != NULL && strncmp(ctype, AMZ_CBOR, strlen(AMZ_CBOR)) == 0;
}

static enum MHD_Result
reply_as(struct MHD_Connection *c, unsigned int status, const char *body, size_t len,
		 const char *ctype)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *) body,
															 MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	MHD_add_response_header(r, "Content-Type", ctype);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
reply(struct MHD_Connection *c, unsigned int status, const char *body, size_t len)
{
	return reply_as(c, status, body, len, "application/x-amz-json-1.1");
}

/* A CBOR text item at p (room for its head and bytes); the end. */
static unsigned char *
cbor_text_at(unsigned char *p, const char *s)
{
	size_t		len = strlen(s);

	p += cbor_encode_string_start(len, p, 9);
	memcpy(p, s, len);
	return p + len;
}

static enum MHD_Result
aws_error(struct MHD_Connection *c, unsigned int status, const char *type, const char *message)
{
	enum MHD_Result ret;

	if (is_cbor(c))
	{
		unsigned char *doc = pg_malloc(64 + strlen(type) + strlen(message));
		unsigned char *p = doc;

		p += cbor_encode_map_start(2, p, 9);
		p = cbor_text_at(p, "__type");
		p = cbor_text_at(p, type);
		p = cbor_text_at(p, "message");
		p = cbor_text_at(p, message);
		ret = reply_as(c, status, (const char *) doc, p - doc, AMZ_CBOR);
		free(doc);
	}
	else
	{
		char	   *doc = psprintf("{\"__type\":\"%s\",\"message\":\"%s\"}", type, message);

		ret = reply(c, status, doc, strlen(doc));
		pfree(doc);
	}
	__atomic_add_fetch(&stats.bad_requests, 1, __ATOMIC_RELAXED);
	return ret;
}

typedef struct HeaderList
{
	SigV4Header h[32];
	int			n;
} HeaderList;

/*
 * Checks the Authorization header against the request, as AWS would: the
 * canonical request rebuilt from the signed headers and the body's hash.
 */
static const char *
check_signature(struct MHD_Connection *c, const char *url, const char *body, size_t len)
{
	const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	const char *date = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Amz-Date");
	char		cred[256];
	char		signed_headers[512];
	char		signature[65];
	char		payload[65];
	char	   *parts[5];
	char	   *save;
	int			nparts = 0;
	HeaderList	hl;
	SigV4Request req;
	SigV4Result res;
	bool		ok;

	if (auth == NULL || date == NULL ||
		sscanf(auth, "AWS4-HMAC-SHA256 Credential=%255[^,], SignedHeaders=%511[^,], Signature=%64s",
			   cred, signed_headers, signature) != 3)
		return "no AWS4-HMAC-SHA256 Authorization header";
	for (char *t = strtok_r(cred, "/", &save); t != NULL && nparts < 5; t = strtok_r(NULL, "/", &save))
		parts[nparts++] = t;
	if (nparts != 5 || strcmp(parts[0], opt.access_key) != 0)
		return "unknown access key";
	hl.n = 0;
	for (char *h = strtok_r(signed_headers, ";", &save); h != NULL && hl.n < 32;
		 h = strtok_r(NULL, ";", &save))
	{
		const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, h);

		if (v == NULL)
			return "a signed header is missing";
		hl.h[hl.n].name = h;
		hl.h[hl.n++].value = v;
	}
	sigv4_sha256_hex(body, len, payload);
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.path = url;
	req.headers = hl.h;
	req.nheaders = hl.n;
	req.payload_hash = payload;
	req.normalize_path = true;
	req.region = parts[2];
	req.service = parts[3];
	req.access_key = opt.access_key;
	req.secret_key = opt.secret_key;
	req.amz_date = date;
	if (!sigv4_sign(&req, &res))
		return "out of memory";
	ok = strcmp(res.signature, signature) == 0;
	sigv4_result_free(&res);
	return ok ? NULL : "signature mismatch";
}

static void
append_shard_id(PQExpBuffer out, int i)
{
	appendPQExpBuffer(out, "shardId-%012d", i);
}

/*
 * The PutRecords body, read in place with the shipper's scanner (jscan.c):
 * each record's Data, PartitionKey and ExplicitHashKey as spans, any other
 * member checked and skipped (a JSON library building a tree of the body
 * was 60 % of the sink's time).
 */
typedef struct RecordRef
{
	JSpan		data;
	JSpan		pkey;
	JSpan		ehk;
} RecordRef;

static bool
scan_record(JScan *sc, RecordRef *r)
{
	JSpan		k;

	memset(r, 0, sizeof(*r));
	if (!jscan_expect(sc, '{') || jscan_peek(sc, '}'))
		return false;
	do
	{
		JSpan	   *dest = NULL;

		if (!jscan_string(sc, &k) || !jscan_expect(sc, ':'))
			return false;
		if (jscan_key_is(&k, "Data"))
			dest = &r->data;
		else if (jscan_key_is(&k, "PartitionKey"))
			dest = &r->pkey;
		else if (jscan_key_is(&k, "ExplicitHashKey"))
			dest = &r->ehk;
		if (dest != NULL ? !jscan_string(sc, dest) : !jscan_skip_value_at(sc, 4))
			return false;
	} while (jscan_expect(sc, ','));
	return jscan_expect(sc, '}');
}

/* The records of a PutRecords body; -1 when it is not valid JSON of that shape. */
static int
scan_records(const char *body, size_t len, RecordRef *refs, int max)
{
	JScan		sc;
	JSpan		k;
	int			n = -1;

	jscan_init(&sc, body, len);
	if (!jscan_expect(&sc, '{') || jscan_peek(&sc, '}'))
		return -1;
	do
	{
		if (!jscan_string(&sc, &k) || !jscan_expect(&sc, ':'))
			return -1;
		if (!jscan_key_is(&k, "Records"))
		{
			if (!jscan_skip_value_at(&sc, 2))
				return -1;
			continue;
		}
		if (!jscan_expect(&sc, '['))
			return -1;
		n = 0;
		if (jscan_expect(&sc, ']'))
			continue;
		do
		{
			if (n == max || !scan_record(&sc, &refs[n++]))
				return -1;
		} while (jscan_expect(&sc, ','));
		if (!jscan_expect(&sc, ']'))
			return -1;
	} while (jscan_expect(&sc, ','));
	return jscan_expect(&sc, '}') && jscan_at_end(&sc) ? n : -1;
}

/* A text or byte string value into *out (as a span without escapes). */
static bool
cbor_member(CScan *sc, bool text, JSpan *out)
{
	CSpan		span = {NULL, 0, false};

	if (!cscan_string(sc, text, &span, 4))
		return false;
	out->s = span.s;
	out->len = span.len;
	out->escaped = false;
	out->set = span.set;
	return true;
}

/* One record of a CBOR request: a map of definite size. */
static bool
scan_record_cbor(CScan *sc, RecordRef *r)
{
	CItem		it;

	memset(r, 0, sizeof(*r));
	if (!cscan_next(sc, &it) || it.kind != CK_MAP || it.n == 0)
		return false;
	for (uint64_t i = 0; i < it.n; i++)
	{
		CSpan		key = {NULL, 0, false};
		bool		ok;

		if (!cscan_string(sc, true, &key, 3))
			return false;
		if (cscan_span_is(&key, "Data"))
			ok = cbor_member(sc, false, &r->data);
		else if (cscan_span_is(&key, "PartitionKey"))
			ok = cbor_member(sc, true, &r->pkey);
		else if (cscan_span_is(&key, "ExplicitHashKey"))
			ok = cbor_member(sc, true, &r->ehk);
		else
			ok = cscan_skip_value(sc, 4);
		if (!ok)
			return false;
	}
	return true;
}

/* The records of a CBOR PutRecords body (maps and arrays of definite size); -1 when malformed. */
static int
scan_records_cbor(CScan *sc, const char *body, size_t len, RecordRef *refs, int max)
{
	CItem		it;
	int			n = -1;

	cscan_init(sc, body, len);
	if (!cscan_next(sc, &it) || it.kind != CK_MAP)
		return -1;
	for (uint64_t i = 0; i < it.n; i++)
	{
		CSpan		key = {NULL, 0, false};
		CItem		arr;

		if (!cscan_string(sc, true, &key, 3))
			return -1;
		if (!cscan_span_is(&key, "Records"))
		{
			if (!cscan_skip_value(sc, 2))
				return -1;
			continue;
		}
		if (!cscan_next(sc, &arr) || arr.kind != CK_ARRAY || arr.n > max)
			return -1;
		for (n = 0; n < arr.n; n++)
			if (!scan_record_cbor(sc, &refs[n]))
				return -1;
	}
	return cscan_at_end(sc) ? n : -1;
}

/* The answer in CBOR: {"FailedRecordCount": N, "Records": [...]}. */
static void
cbor_answer(PQExpBuffer out, int n, int failed, const bool *admitted, const int *shard_ix)
{
	unsigned char *p;
	unsigned char *start;

	enlargePQExpBuffer(out, 64 + (size_t) n * 192);
	start = p = (unsigned char *) out->data;
	p += cbor_encode_map_start(2, p, 9);
	p = cbor_text_at(p, "FailedRecordCount");
	p += cbor_encode_uint(failed, p, 9);
	p = cbor_text_at(p, "Records");
	p += cbor_encode_array_start(n, p, 9);
	for (int i = 0; i < n; i++)
	{
		char text[	80];

		p += cbor_encode_map_start(2, p, 9);
		if (admitted[i])
		{
			/* 56 digits, as Kinesis's sequence numbers have. */
			p = cbor_text_at(p, "SequenceNumber");
			snprintf(text, sizeof(text), "49%054llu",
					 (unsigned long long) __atomic_add_fetch(&sequence, 1, __ATOMIC_RELAXED));
			p = cbor_text_at(p, text);
			p = cbor_text_at(p, "ShardId");
			snprintf(text, sizeof(text), "shardId-%012d", shard_ix[i]);
		}
		else
		{
			p = cbor_text_at(p, "ErrorCode");
			p = cbor_text_at(p, "ProvisionedThroughputExceededException");
			p = cbor_text_at(p, "ErrorMessage");
			snprintf(text, sizeof(text), "Rate exceeded for shard shardId-%012d", shard_ix[i]);
		}
		p = cbor_text_at(p, text);
	}
	out->len = p - start;
}

static enum MHD_Result
put_records(struct MHD_Connection *c, const char *body, size_t len)
{
	RecordRef  *refs = pg_malloc(sizeof(RecordRef) * 501);
	bool		cbor = is_cbor(c);
	CScan		sc;
	int			n = cbor ? scan_records_cbor(&sc, body, len, refs, 501) :
	scan_records(body, len, refs, 501);
	char	   *keybuf = NULL;
	size_t		keybufsize = 0;
	PQExpBufferData out;
	unsigned char *buf = NULL;
	size_t		bufsize = 0;
	int		   *shard_ix;
	int64_t    *rows;
	size_t	   *sizes;
	bool	   *admitted;
	int			failed = 0;
	const char *bad_type = NULL;
	const char *bad_message = NULL;
	enum MHD_Result ret;
	double		latency_until = opt.latency_ms > 0 ? now_seconds() + opt.latency_ms / 1000.0 : 0;

	if (n <= 0 || n > 500)
	{
		if (cbor)
			cscan_free(&sc);
		free(refs);
	}
	if (n < 0)
		return aws_error(c, 400, "SerializationException", "the body is not a PutRecords request");
	if (n == 0 || n > 500)
	{
		return aws_error(c, 400, "ValidationException", "Records: 1 to 500 records expected");
	}
	shard_ix = pg_malloc(sizeof(int) * n);
	rows = pg_malloc(sizeof(int64_t) * n);
	sizes = pg_malloc(sizeof(size_t) * n);
	admitted = pg_malloc(sizeof(bool) * n);
	for (size_t i = 0; i < n; i++)
	{
		RecordRef  *r = &refs[i];
		const char *data = r->data.s;
		size_t		dlen = r->data.len;
		const char *pkey = r->pkey.s;
		long		pkeylen = r->pkey.len;
		int			decoded;
		const unsigned char *record;
		u128		h;

		if (r->pkey.set && r->pkey.escaped)
		{
			if (keybufsize < r->pkey.len + 1)
			{
				keybufsize = Max(r->pkey.len + 1, 2 * keybufsize);
				keybuf = pg_realloc(keybuf, keybufsize);
			}
			pkeylen = jscan_unescape(&r->pkey, keybuf);
			pkey = keybuf;
		}
		if (!r->data.set || r->data.escaped || !r->pkey.set || pkeylen <= 0 ||
			(!cbor && dlen % 4 != 0))
		{
			bad_type = "ValidationException";
			bad_message = "a record without Data or PartitionKey";
			break;
		}
		if (cbor)
		{
			/* Data is a byte string: the record's bytes, as they are. */
			record = (const unsigned char *) data;
			decoded = (int) dlen;
		}
		else
		{
			if (bufsize < dlen)
			{
				bufsize = Max(dlen, 2 * bufsize);
				buf = pg_realloc(buf, bufsize);
			}
			decoded = EVP_DecodeBlock(buf, (const unsigned char *) data, (int) dlen);
			if (decoded < 0)
			{
				bad_type = "SerializationException";
				bad_message = "Data is not base64";
				break;
			}
			if (dlen >= 1 && data[dlen - 1] == '=')
				decoded--;
			if (dlen >= 2 && data[dlen - 2] == '=')
				decoded--;
			record = buf;
		}
		if (r->ehk.set)
		{
			char		ehk[48];

			memcpy(ehk, r->ehk.s, Min(r->ehk.len, sizeof(ehk) - 1));
			ehk[Min(r->ehk.len, sizeof(ehk) - 1)] = '\0';
			if (r->ehk.escaped || r->ehk.len >= sizeof(ehk) || !parse_u128(ehk, &h))
			{
				bad_type = "ValidationException";
				bad_message = "ExplicitHashKey is not a 128-bit number";
				break;
			}
		}
		else
			h = md5_hash_key(pkey, pkeylen);
		shard_ix[i] = shard_of(h);
		rows[i] = kpl_count(record, decoded);
		if (rows[i] < 0)
		{
			if (decoded >= 4 && record[0] == 0xF3 && record[1] == 0x89)
			{
				bad_type = "ValidationException";
				bad_message = "a malformed KPL aggregated record";
				break;
			}
			rows[i] = 1;
		}
		else
			__atomic_add_fetch(&stats.aggregated, 1, __ATOMIC_RELAXED);
		sizes[i] = decoded + pkeylen;
	}
	if (bad_type != NULL)
	{
		ret = aws_error(c, 400, bad_type, bad_message);
		goto done;
	}

	/* Admitted and counted under one lock, in the call's order. */
	pthread_mutex_lock(&lock);
	{
		double		now = now_seconds();

		for (size_t i = 0; i < n; i++)
		{
			Shard	   *sh = &shards[shard_ix[i]];

			admitted[i] = !opt.limits || admit(sh, sizes[i], now);
			if (admitted[i])
			{
				sh->records++;
				sh->user_records += rows[i];
				stats.		records++;
				stats.		user_records += rows[i];
				stats.		data_bytes += sizes[i];
			}
			else
			{
				sh->throttled++;
				stats.		throttled++;

				failed++;
			}
		}
		stats.		put_calls++;
		stats.		body_bytes += len;

		if (stats.first_put == 0)
			stats.		first_put = now;
		stats.		last_put = now;
	}
	pthread_mutex_unlock(&lock);

	initPQExpBuffer(&out);
	if (cbor)
	{
		cbor_answer(&out, n, failed, admitted, shard_ix);
		if (latency_until > 0)
		{
			double		wait = latency_until - now_seconds();

			if (wait > 0)
				usleep((useconds_t) (wait * 1e6));
		}
		ret = reply_as(c, 200, out.data, out.len, AMZ_CBOR);
		termPQExpBuffer(&out);
		goto done;
	}
	appendPQExpBuffer(&out, "{\"FailedRecordCount\":%d,\"Records\":[", failed);
	for (size_t i = 0; i < n; i++)
	{
		if (i > 0)
			appendPQExpBufferChar(&out, ',');
		if (admitted[i])
		{
			/* 56 digits, as Kinesis's sequence numbers have. */
			appendPQExpBuffer(&out, "{\"SequenceNumber\":\"49%054llu\",\"ShardId\":\"",
							  (unsigned long long) __atomic_add_fetch(&sequence, 1, __ATOMIC_RELAXED));
			append_shard_id(&out, shard_ix[i]);
			appendPQExpBufferStr(&out, "\"}");
		}
		else
		{
			appendPQExpBufferStr(&out, "{\"ErrorCode\":\"ProvisionedThroughputExceededException\","
								 "\"ErrorMessage\":\"Rate exceeded for shard ");
			append_shard_id(&out, shard_ix[i]);
			appendPQExpBufferStr(&out, "\"}");
		}
	}
	appendPQExpBufferStr(&out, "]}");
	if (latency_until > 0)
	{
		double		wait = latency_until - now_seconds();

		if (wait > 0)
			usleep((useconds_t) (wait * 1e6));
	}
	ret = reply(c, 200, out.data, out.len);
	termPQExpBuffer(&out);
done:
	if (cbor)
		cscan_free(&sc);
	free(refs);
	free(keybuf);
	free(buf);
	free(shard_ix);
	free(rows);
	free(sizes);
	free(admitted);
	return ret;
}

static enum MHD_Result
list_shards(struct MHD_Connection *c)
{
	PQExpBufferData out;
	enum MHD_Result ret;

	initPQExpBuffer(&out);
	appendPQExpBufferStr(&out, "{\"Shards\":[");
	for (int i = 0; i < opt.nshards; i++)
	{
		char		lo[41];
		char		hi[41];

		format_u128(shards[i].start, lo);
		format_u128(shards[i].end, hi);
		appendPQExpBuffer(&out, "%s{\"ShardId\":\"", i > 0 ? "," : "");
		append_shard_id(&out, i);
		appendPQExpBuffer(&out, "\",\"HashKeyRange\":{\"StartingHashKey\":\"%s\",\"EndingHashKey\":\"%s\"},"
						  "\"SequenceNumberRange\":{\"StartingSequenceNumber\":\"0\"}}", lo, hi);
	}
	appendPQExpBufferStr(&out, "]}");
	ret = reply(c, 200, out.data, out.len);
	termPQExpBuffer(&out);
	return ret;
}

static enum MHD_Result
describe(struct MHD_Connection *c)
{
	char	   *doc = psprintf("{\"StreamDescriptionSummary\":{\"StreamName\":\"%s\","
							   "\"StreamARN\":\"arn:aws:kinesis:us-east-1:000000000000:stream/%s\","
							   "\"StreamStatus\":\"ACTIVE\",\"OpenShardCount\":%d,"
							   "\"RetentionPeriodHours\":24,\"EncryptionType\":\"NONE\"}}",
							   opt.stream, opt.stream, opt.nshards);
	enum MHD_Result ret = reply(c, 200, doc, strlen(doc));

	pfree(doc);
	return ret;
}

static enum MHD_Result
stats_doc(struct MHD_Connection *c, bool reset)
{
	PQExpBufferData out;
	struct rusage ru;
	enum MHD_Result ret;

	getrusage(RUSAGE_SELF, &ru);
	initPQExpBuffer(&out);
	pthread_mutex_lock(&lock);
	appendPQExpBuffer(&out, "{\"requests\":%llu,\"put_calls\":%llu,\"records\":%llu,\"user_records\":%llu,"
					  "\"aggregated_records\":%llu,\"body_bytes\":%llu,\"data_bytes\":%llu,"
					  "\"sig_checked\":%llu,\"sig_failed\":%llu,\"bad_requests\":%llu,\"throttled\":%llu,"
					  "\"put_seconds\":%.6f,\"cpu_seconds\":%.6f,\"shards\":[",
					  (unsigned long long) stats.requests, (unsigned long long) stats.put_calls,
					  (unsigned long long) stats.records, (unsigned long long) stats.user_records,
					  (unsigned long long) stats.aggregated, (unsigned long long) stats.body_bytes,
					  (unsigned long long) stats.data_bytes, (unsigned long long) stats.sig_checked,
					  (unsigned long long) stats.sig_failed, (unsigned long long) stats.bad_requests,
					  (unsigned long long) stats.throttled, stats.last_put - stats.first_put,
					  ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
					  ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	for (int i = 0; i < opt.nshards; i++)
		appendPQExpBuffer(&out, "%s{\"records\":%llu,\"user_records\":%llu,\"throttled\":%llu}",
						  i > 0 ? "," : "", (unsigned long long) shards[i].records,
						  (unsigned long long) shards[i].user_records,
						  (unsigned long long) shards[i].throttled);
	appendPQExpBufferStr(&out, "]}");
	if (reset)
	{
		memset(&stats, 0, sizeof(stats));
		for (int i = 0; i < opt.nshards; i++)
			shards[i].records = shards[i].user_records = shards[i].throttled = 0;
	}
	pthread_mutex_unlock(&lock);
	ret = reply(c, 200, out.data, out.len);
	termPQExpBuffer(&out);
	return ret;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
	   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	Request    *r = *con_cls;
	const char *target;
	const char *problem = NULL;
	bool		check;

	if (r == NULL)
	{
		r = pg_malloc0(sizeof(Request));
		initPQExpBuffer(&r->body);
		r->number = __atomic_add_fetch(&stats.requests, 1, __ATOMIC_RELAXED);
		*con_cls = r;
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		appendBinaryPQExpBuffer(&r->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "GET") == 0 && strcmp(url, "/__stats") == 0)
		return stats_doc(c, false);
	if (strcmp(method, "GET") == 0 && strcmp(url, "/__reset") == 0)
		return stats_doc(c, true);
	target = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Amz-Target");
	if (strcmp(method, "POST") != 0 || target == NULL ||
		strncmp(target, "Kinesis_20131202.", 17) != 0)
		return aws_error(c, 400, "UnknownOperationException", "not a Kinesis call");
	check = opt.sigv4_sample > 0 && r->number % opt.sigv4_sample == 0;
	if (check)
	{
		problem = check_signature(c, url, r->body.data, r->body.len);
		__atomic_add_fetch(&stats.sig_checked, 1, __ATOMIC_RELAXED);
		if (problem != NULL)
		{
			__atomic_add_fetch(&stats.sig_failed, 1, __ATOMIC_RELAXED);
			return aws_error(c, 403, "InvalidSignatureException", problem);
		}
	}
	target += 17;
	if (strcmp(target, "PutRecords") == 0)
		return put_records(c, r->body.data, r->body.len);
	if (strcmp(target, "ListShards") == 0)
		return list_shards(c);
	if (strcmp(target, "DescribeStreamSummary") == 0)
		return describe(c);
	return aws_error(c, 400, "UnknownOperationException", target);
}

static void
completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	Request    *r = *con_cls;

	if (r != NULL)
	{
		termPQExpBuffer(&r->body);
		free(r);
		*con_cls = NULL;
	}
}

static void
usage(void)
{
	printf("kinesis_sink answers Kinesis calls for benchmarks, storing nothing.\n\n"
		   "Usage:\n  kinesis_sink --port PORT [OPTION]...\n\n"
		   "Options:\n"
		   "  -p, --port=PORT          listen on 127.0.0.1:PORT\n"
		   "  -n, --shards=N           shards of the stream, hash range split evenly (default 4)\n"
		   "      --stream=NAME        the stream's name (default fundrecs)\n"
		   "      --access-key=KEY     the access key requests are signed with\n"
		   "      --secret-key=KEY     its secret\n"
		   "      --sigv4-sample=N     check the signature of every Nth request (default 1:\n"
		   "                           all; 0: none)\n"
		   "      --limits             per-shard limits: 1,000 records/s, 1 MiB/s\n"
		   "      --latency-ms=N       add N ms to each PutRecords call\n"
		   "      --threads            a thread per connection (default: one thread,\n"
		   "                           or a thread per connection with --latency-ms)\n"
		   "  -?, --help               show this help, then exit\n\n"
		   "GET /__stats gives the counters as JSON; GET /__reset zeroes them too.\n");
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"port", required_argument, NULL, 'p'},
		{"shards", required_argument, NULL, 'n'},
		{"stream", required_argument, NULL, 1},
		{"access-key", required_argument, NULL, 2},
		{"secret-key", required_argument, NULL, 3},
		{"sigv4-sample", required_argument, NULL, 4},
		{"limits", no_argument, NULL, 5},
		{"latency-ms", required_argument, NULL, 6},
		{"threads", no_argument, NULL, 7},
		{"help", no_argument, NULL, '?'},
		{NULL, 0, NULL, 0}
	};
	int			c;
	struct MHD_Daemon *d;
	sigset_t	set;
	int			sig;
	u128		step;

	while ((c = getopt_long(argc, argv, "p:n:?", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'p':
				opt.port = atoi(optarg);
				break;
			case 'n':
				opt.nshards = atoi(optarg);
				break;
			case 1:
				opt.stream = pg_strdup(optarg);
				break;
			case 2:
				opt.access_key = pg_strdup(optarg);
				break;
			case 3:
				opt.secret_key = pg_strdup(optarg);
				break;
			case 4:
				opt.sigv4_sample = atoi(optarg);
				break;
			case 5:
				opt.limits = true;
				break;
			case 6:
				opt.latency_ms = atoi(optarg);
				break;
			case 7:
				opt.threads = true;
				break;
			case '?':
				if (optopt == 0 || optopt == '?')
				{
					usage();
					exit(0);
				}
				/* FALLTHROUGH */
			default:
				fprintf(stderr, "Try \"kinesis_sink --help\" for more information.\n");
				exit(2);
		}
	}
	if (opt.port <= 0 || opt.port > 65535 || opt.nshards < 1 || opt.nshards > MAX_SHARDS ||
		opt.sigv4_sample < 0 || opt.latency_ms < 0)
	{
		fprintf(stderr, "kinesis_sink: --port is required; --shards is 1 to %d\n", MAX_SHARDS);
		exit(2);
	}
	step = (~(u128) 0) / opt.nshards;
	for (int i = 0; i < opt.nshards; i++)
	{
		shards[i].start = i == 0 ? 0 : shards[i - 1].end + 1;
		shards[i].end = i == opt.nshards - 1 ? ~(u128) 0 : shards[i].start + step - 1;
		shards[i].recs = LIMIT_RECORDS;
		shards[i].bytes = LIMIT_BYTES;
		shards[i].last = now_seconds();
	}

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	{
		struct sockaddr_in sa;

		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_port = htons(opt.port);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		d = MHD_start_daemon(((opt.threads || opt.latency_ms > 0) ?
							  MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD :
							  MHD_USE_EPOLL_INTERNAL_THREAD) | MHD_USE_ERROR_LOG,
							 0, NULL, NULL, handle, NULL,
							 MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
							 MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
							 MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 1024,
							 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 120,
							 MHD_OPTION_END);
	}
	if (d == NULL)
	{
		fprintf(stderr, "kinesis_sink: could not listen on 127.0.0.1:%d\n", opt.port);
		exit(1);
	}
	printf("kinesis_sink: listening on 127.0.0.1:%d, stream %s of %d shards, signatures %s%s\n",
		   opt.port, opt.stream, opt.nshards,
		   opt.sigv4_sample == 0 ? "not checked" : opt.sigv4_sample == 1 ? "all checked" : "sampled",
		   opt.limits ? ", per-shard limits" : "");
	fflush(stdout);
	sigwait(&set, &sig);
	MHD_stop_daemon(d);
	return 0;
}
