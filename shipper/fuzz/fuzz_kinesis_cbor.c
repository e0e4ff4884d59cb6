/*
 * Kinesis's CBOR protocol: the first byte picks the case (even, odd), the
 * rest is the input.
 *   even: a PutRecords answer, read in place (kinesis_cbor.c, cscan.c) as
 *         libcbor's tree reads it (kinesis_cbor_reference.c), then by the
 *         shipper for as many records as it has, up to 8;
 *   odd:  a PutRecords request written from records the input describes,
 *         read back by cbor_load(): every record's Data, PartitionKey and
 *         ExplicitHashKey as given, and nothing else.
 * CBOR error documents are fuzz_kinesis's (kinesis_error_code() reads a
 * body that starts with a CBOR map's head as CBOR).
 */
#include "fuzz_common.h"
#include "cscan.h"
#include "kinesis_int.h"
#include "kinesis_cbor_reference.c"

/*
 * The heads of the input, walked flat with libcbor's decoder: a definite
 * array or map that declares more items than the input has bytes makes
 * cbor_load() allocate for all of them before it fails, past libFuzzer's
 * memory limit.  Such an input cannot be valid: only the scanner reads it.
 */
static size_t declared_max;

static void
on_collection(void *ctx, size_t n)
{
	declared_max = Max(declared_max, n);
}

static bool
sizes_plausible(const char *body, size_t len)
{
	struct cbor_callbacks cb = cbor_empty_callbacks;
	size_t		pos = 0;

	cb.array_start = on_collection;
	cb.map_start = on_collection;
	declared_max = 0;
	while (pos < len)
	{
		struct cbor_decoder_result r = cbor_stream_decode((cbor_data) body + pos, len - pos, &cb, NULL);

		if (r.status != CBOR_DECODER_FINISHED || r.read == 0)
			break;
		pos += r.read;
	}
	return declared_max <= len;
}

/* A span says what the tree's member says. */
static bool
same_member(const JSpan *span, const char *ref, size_t ref_len)
{
	if (!span->set)
		return ref == NULL;
	return ref != NULL && !span->escaped && span->len == ref_len &&
		memcmp(span->s, ref, ref_len) == 0;
}

static void
check_answer(const char *body, size_t len)
{
	PutResult	results[8];
	RefResult	refs[8];
	int			count;
	int			ref_count;
	bool		ok;
	bool		ref_ok;
	CScan		sc;
	ShipRecord	recs[8];
	ShipRecord *ptrs[8];
	int			failed[8];
	char	   *code = NULL;
	char	   *message = NULL;
	bool		fatal;
	uint64_t	throttled = 0;
	int			nf;

	ok = kinesis_cbor_scan_put_response(&sc, body, len, results, 8, &count);
	if (sizes_plausible(body, len))
		ref_ok = put_response_cbor_reference(body, len, refs, 8, &ref_count);
	else
	{
		ref_ok = false;
		ref_count = -1;
	}

	/*
	 * libcbor's tree has no depth limit; the scanner stops at
	 * CSCAN_MAX_DEPTH.
	 */
	if (ok != ref_ok && !(ref_ok && len > CSCAN_MAX_DEPTH))
		abort();
	if (ok && ref_ok)
	{
		if (count != ref_count)
			abort();
		for (int i = 0; i < Min(count, 8); i++)
		{
			PutResult  *r = &results[i];
			RefResult  *f = &refs[i];

			if (r->object != f->object ||
				!same_member(&r->code, f->code, f->code_len) ||
				!same_member(&r->message, f->message, f->message_len) ||
				!same_member(&r->sequence, f->sequence, f->sequence_len) ||
				!same_member(&r->shard, f->shard, f->shard_len))
				abort();
			free(f->code);
			free(f->message);
			free(f->sequence);
			free(f->shard);
		}
	}
	cscan_free(&sc);

	/* What the shipper makes of it: indexes in range, never a crash. */
	memset(recs, 0, sizeof(recs));
	for (int i = 0; i < 8; i++)
	{
		recs[i].want_shard = (i % 2) ? "shardId-000000000001" : NULL;
		ptrs[i] = &recs[i];
	}
	nf = kinesis_parse_put_response(body, len, true, Max(count, 1) <= 8 ? Max(count, 1) : 8,
									failed, &code, &message, &fatal, ptrs, &throttled);
	for (int i = 0; i < nf; i++)
		if (failed[i] < 0 || failed[i] >= 8)
			abort();
	for (int i = 0; i < 8; i++)
		free(recs[i].got_shard);
	free(code);
	free(message);
}

/* A loaded text or byte string equals (s, len). */
static bool
loaded_equals(cbor_item_t * item, bool text, const char *s, size_t len)
{
	if (text ? !cbor_isa_string(item) : !cbor_isa_bytestring(item))
		return false;
	if (text ? !cbor_string_is_definite(item) : !cbor_bytestring_is_definite(item))
		return false;
	if ((text ? cbor_string_length(item) : cbor_bytestring_length(item)) !=len)
		return false;
	return memcmp(text ? cbor_string_handle(item) : cbor_bytestring_handle(item), s, len) == 0;
}

static void
check_request(const uint8_t *in, size_t size)
{
	ShipRecord	recs[8];
	ShipRecord *ptrs[8];
	char		keys[8][17];
	char		ehks[8][40];
	int			n = 0;
	size_t		pos = 0;
	PQExpBufferData body;
	struct cbor_load_result res;
	cbor_item_t *doc;
	cbor_item_t *records;
	bool		arn = size > 0 && (in[0] & 1);
	const char *stream = arn ? "arn:aws:kinesis:us-east-1:123456789012:stream/s" : "s";
	CScan		sc;

	memset(recs, 0, sizeof(recs));
	/* Each record: a length byte pair, a key length, then bytes. */
	while (n < 8 && pos + 3 <= size)
	{
		size_t		dlen = (size_t) in[pos] * in[pos + 1] % 70000;
		size_t		klen = 1 + in[pos + 2] % 16;
		ShipRecord *r = &recs[n];

		pos += 3;
		r->data = pg_malloc(dlen + 1);
		for (size_t i = 0; i < dlen; i++)
			r->data[i] = (char) (size > pos ? in[pos + i % (size - pos)] : i);
		r->len = dlen;
		for (size_t i = 0; i < klen; i++)
			keys[n][i] = (char) (1 + (pos + i < size ? in[pos + i] : i) % 127);
		keys[n][klen] = '\0';
		r->pkey = keys[n];
		r->pkey_len = klen;
		if (klen % 3 == 0)
		{
			snprintf(ehks[n], sizeof(ehks[n]), "%zu%zu", dlen, klen);
			r->ehk = ehks[n];
		}
		ptrs[n] = r;
		n++;
		pos += klen;
	}
	if (n == 0)
		return;
	initPQExpBuffer(&body);
	kinesis_cbor_body(arn ? "StreamARN" : "StreamName", stream, ptrs, n, &body);
	doc = cbor_load((cbor_data) body.data, body.len, &res);
	if (doc == NULL || res.read != body.len || !cbor_isa_map(doc) || cbor_map_size(doc) != 2 ||
		!loaded_equals(cbor_map_handle(doc)[0].key, true, arn ? "StreamARN" : "StreamName",
					   arn ? 9 : 10) ||
		!loaded_equals(cbor_map_handle(doc)[0].value, true, stream, strlen(stream)) ||
		!loaded_equals(cbor_map_handle(doc)[1].key, true, "Records", 7))
		abort();
	records = cbor_map_handle(doc)[1].value;
	if (!cbor_isa_array(records) || cbor_array_size(records) != (size_t) n)
		abort();
	for (int i = 0; i < n; i++)
	{
		cbor_item_t *r = cbor_array_handle(records)[i];
		struct cbor_pair *m;

		if (!cbor_isa_map(r) || cbor_map_size(r) != (recs[i].ehk ? 3 : 2))
			abort();
		m = cbor_map_handle(r);
		if (!loaded_equals(m[0].key, true, "Data", 4) ||
			!loaded_equals(m[0].value, false, recs[i].data, recs[i].len) ||
			!loaded_equals(m[1].key, true, "PartitionKey", 12) ||
			!loaded_equals(m[1].value, true, recs[i].pkey, recs[i].pkey_len))
			abort();
		if (recs[i].ehk &&
			(!loaded_equals(m[2].key, true, "ExplicitHashKey", 15) ||
			 !loaded_equals(m[2].value, true, recs[i].ehk, strlen(recs[i].ehk))))
			abort();
	}
	cbor_decref(&doc);
	/* The scanner reads the same document as one value. */
	cscan_init(&sc, body.data, body.len);
	if (!cscan_skip_value(&sc, 1) || !cscan_at_end(&sc))
		abort();
	cscan_free(&sc);
	termPQExpBuffer(&body);
	for (int i = 0; i < n; i++)
		free(recs[i].data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= 1 && data[0] % 2 == 0)
		check_answer((const char *) data + 1, size - 1);
	else if (size >= 1)
		check_request(data + 1, size - 1);
	return 0;
}
