/*-------------------------------------------------------------------------
 *
 * kinesis_cbor.c
 *	  PutRecords in Kinesis's CBOR protocol (application/x-amz-cbor-1.1,
 *	  --kinesis-protocol cbor): the same members as the JSON protocol, with
 *	  each record's Data as a byte string rather than base64 text.  The
 *	  request is written in place with libcbor's encoders; the answer is
 *	  read in place (cscan.c), and so is an error document.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <cbor.h>

#include "cscan.h"
#include "kinesis_int.h"

#define HEAD_MAX 9				/* an item's head: a byte and up to 8 */

/* A text item, head and bytes. */
static unsigned char *
put_text(unsigned char *p, const char *s, size_t len)
{
	p += cbor_encode_string_start(len, p, HEAD_MAX);
	memcpy(p, s, len);
	return p + len;
}

static inline unsigned char *
put_name(unsigned char *p, const char *name)
{
	return put_text(p, name, strlen(name));
}

/*
 * The PutRecords body: its size bounded first, then written in place.
 * {"StreamName" or "StreamARN": ..., "Records": [{"Data": bytes,
 * "PartitionKey": text, "ExplicitHashKey": text}, ...]}
 */
void
kinesis_cbor_body(const char *stream_member, const char *stream, ShipRecord **recs, int n,
				  PQExpBuffer body)
{
	size_t		room = HEAD_MAX + 2 * HEAD_MAX + strlen(stream_member) + strlen(stream) +
	2 * HEAD_MAX + strlen("Records");
	unsigned char *start;
	unsigned char *p;

	for (int i = 0; i < n; i++)
		room += HEAD_MAX + 2 * HEAD_MAX + strlen("Data") + recs[i]->len +
			2 * HEAD_MAX + strlen("PartitionKey") + recs[i]->pkey_len +
			(recs[i]->ehk != NULL ? 2 * HEAD_MAX + strlen("ExplicitHashKey") + strlen(recs[i]->ehk) : 0);
	resetPQExpBuffer(body);
	kinesis_reserve(body, room);
	start = p = (unsigned char *) body->data;
	p += cbor_encode_map_start(2, p, HEAD_MAX);
	p = put_name(p, stream_member);
	p = put_name(p, stream);
	p = put_name(p, "Records");
	p += cbor_encode_array_start(n, p, HEAD_MAX);
	for (int i = 0; i < n; i++)
	{
		ShipRecord *r = recs[i];

		p += cbor_encode_map_start(r->ehk != NULL ? 3 : 2, p, HEAD_MAX);
		p = put_name(p, "Data");
		p += cbor_encode_bytestring_start(r->len, p, HEAD_MAX);
		memcpy(p, r->data, r->len);
		p += r->len;
		p = put_name(p, "PartitionKey");
		p = put_text(p, r->pkey, r->pkey_len);
		if (r->ehk != NULL)
		{
			p = put_name(p, "ExplicitHashKey");
			p = put_name(p, r->ehk);
		}
	}
	Assert(p - start <= room);
	body->len = p - start;
	body->data[body->len] = '\0';
}

/*
 * Reads a map whose head is it, pair by pair: member() reads the value of
 * each pair (the scan is at the value).
 */
typedef bool (*MemberFn) (CScan *sc, const CSpan *key, void *arg, int depth);

static bool
scan_map(CScan *sc, const CItem *it, MemberFn member, void *arg, int depth)
{
	bool		indef = it->kind == CK_MAP_INDEF;

	if (depth > CSCAN_MAX_DEPTH)
		return false;
	if (!indef && it->n > (uint64_t) (sc->end - sc->p) / 2)
		return false;
	for (uint64_t i = 0; indef || i < it->n; i++)
	{
		CSpan		key = {NULL, 0, false};

		if (indef)
		{
			CItem		k;

			if (!cscan_next(sc, &k))
				return false;
			if (k.kind == CK_BREAK)
				return true;
			if (!cscan_string_rest(sc, &k, true, &key, depth + 1))
				return false;
		}
		else if (!cscan_string(sc, true, &key, depth + 1))
			return false;
		if (!member(sc, &key, arg, depth + 1))
			return false;
	}
	return true;
}

/* One member of a result: a text into its span when wanted, else skipped. */
static bool
result_member(CScan *sc, const CSpan *key, void *arg, int depth)
{
	PutResult  *r = arg;
	CSpan		value = {NULL, 0, false};
	JSpan	   *out;

	if (cscan_span_is(key, "ErrorCode"))
		out = &r->code;
	else if (cscan_span_is(key, "ErrorMessage"))
		out = &r->message;
	else if (cscan_span_is(key, "SequenceNumber"))
		out = &r->sequence;
	else if (cscan_span_is(key, "ShardId"))
		out = &r->shard;
	else
		return cscan_skip_value(sc, depth);
	if (!cscan_string(sc, true, &value, depth))
		return false;
	out->s = value.s;
	out->len = value.len;
	out->escaped = false;
	out->set = value.set;
	return true;
}

/* The state of reading an answer's top map. */
typedef struct AnswerScan
{
	PutResult  *results;
	int			max;
	int		   *count;
} AnswerScan;

static bool
answer_member(CScan *sc, const CSpan *key, void *arg, int depth)
{
	AnswerScan *as = arg;
	CItem		it;
	bool		indef;

	if (!cscan_span_is(key, "Records"))
		return cscan_skip_value(sc, depth);
	if (!cscan_next(sc, &it))
		return false;
	/* A later Records replaces an earlier one. */
	*as->count = -1;
	if (it.kind != CK_ARRAY && it.kind != CK_ARRAY_INDEF)
		return cscan_skip_rest(sc, &it, depth);
	indef = it.kind == CK_ARRAY_INDEF;
	if (!indef && it.n > (uint64_t) (sc->end - sc->p))
		return false;
	*as->count = 0;
	for (uint64_t i = 0; indef || i < it.n; i++)
	{
		CItem		elem;
		PutResult	spare;
		PutResult  *r = *as->count < as->max ? &as->results[*as->count] : &spare;

		if (!cscan_next(sc, &elem))
			return false;
		if (indef && elem.kind == CK_BREAK)
			break;
		memset(r, 0, sizeof(*r));
		if (elem.kind == CK_MAP || elem.kind == CK_MAP_INDEF)
		{
			r->object = true;
			if (!scan_map(sc, &elem, result_member, r, depth + 1))
				return false;
		}
		else if (!cscan_skip_rest(sc, &elem, depth + 1))
			return false;
		(*as->count)++;
	}
	return true;
}

/*
 * The Records of a CBOR answer, as scan_put_response reads a JSON one:
 * the number of elements of the last Records member (-1 when there is
 * none, or it is not an array), results for the first max of them; false
 * when the answer is not one CBOR value.  Spans point into the body or
 * into memory sc owns.
 */
bool
kinesis_cbor_scan_put_response(CScan *sc, const char *body, size_t len, PutResult *results,
							   int max, int *count)
{
	AnswerScan	as = {results, max, count};
	CItem		it;

	*count = -1;
	cscan_init(sc, body, len);
	if (!cscan_next(sc, &it))
		return false;
	if (it.kind != CK_MAP && it.kind != CK_MAP_INDEF)
		return cscan_skip_rest(sc, &it, 1) && cscan_at_end(sc);
	return scan_map(sc, &it, answer_member, &as, 1) && cscan_at_end(sc);
}

/* The members of an error document wanted (the last of duplicates wins). */
typedef struct ErrorScan
{
	CSpan		type;
	CSpan		message;
	CSpan		message_upper;
} ErrorScan;

static bool
error_member(CScan *sc, const CSpan *key, void *arg, int depth)
{
	ErrorScan  *es = arg;
	CSpan	   *dest;

	if (cscan_span_is(key, "__type"))
		dest = &es->type;
	else if (cscan_span_is(key, "message"))
		dest = &es->message;
	else if (cscan_span_is(key, "Message"))
		dest = &es->message_upper;
	else
		return cscan_skip_value(sc, depth);
	return cscan_string(sc, true, dest, depth);
}

/*
 * The "__type" and "message" (or "Message") of a CBOR error document,
 * read in place as the answers are (an error body is as untrusted as an
 * answer: nothing is allocated by the sizes it declares); false when the
 * body is not one CBOR map.
 */
bool
kinesis_cbor_error(const char *body, size_t len, char **type, char **message)
{
	ErrorScan	es;
	CScan		sc;
	CItem		it;
	bool		ok;

	*type = *message = NULL;
	memset(&es, 0, sizeof(es));
	cscan_init(&sc, body, len);
	ok = cscan_next(&sc, &it) && (it.kind == CK_MAP || it.kind == CK_MAP_INDEF) &&
		scan_map(&sc, &it, error_member, &es, 1) && cscan_at_end(&sc);
	if (ok)
	{
		CSpan	   *msg = es.message.set ? &es.message : &es.message_upper;

		*type = es.type.set ? cscan_strdup(&es.type) : NULL;
		*message = msg->set ? cscan_strdup(msg) : NULL;
	}
	cscan_free(&sc);
	return ok;
}
