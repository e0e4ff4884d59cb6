/*
 * Kinesis's CBOR protocol: the first byte picks the case, the rest is the
 * input.
 *   0: an error document (kinesis_error_code): refused or read, never a crash;
 *   1: a PutRecords answer for 1 to 8 records, read in place
 *      (kinesis_cbor.c, cscan.c) as libcbor's tree reads it
 *      (kinesis_cbor_reference.c);
 *   2: a PutRecords request written from records the input describes, read
 *      back by cbor_load(): every record's Data, PartitionKey and
 *      ExplicitHashKey as given, and nothing else.
 */
#include "fuzz_common.h"
#include "cscan.h"
#include "kinesis_int.h"
#include "kinesis_cbor_reference.c"

static bool
same_string(const char *a, const char *b)
{
	return (a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0);
}

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

static void
check_answer(const char *body, size_t len, int n)
{
	ShipRecord	recs[8];
	ShipRecord	ref_recs[8];
	ShipRecord *ptrs[8];
	ShipRecord *ref_ptrs[8];
	int			failed[8];
	int			ref_failed[8];
	char	   *code = NULL;
	char	   *message = NULL;
	char	   *ref_code = NULL;
	char	   *ref_message = NULL;
	bool		fatal;
	bool		ref_fatal;
	uint64_t	throttled = 0;
	uint64_t	ref_throttled = 0;
	int			nf;
	int			ref_nf;

	memset(recs, 0, sizeof(recs));
	for (int i = 0; i < n; i++)
	{
		recs[i].want_shard = (i % 2) ? "shardId-000000000001" : NULL;
		ptrs[i] = &recs[i];
	}
	memcpy(ref_recs, recs, sizeof(recs));
	for (int i = 0; i < n; i++)
		ref_ptrs[i] = &ref_recs[i];
	nf = kinesis_parse_put_response(body, len, true, n, failed, &code, &message, &fatal, ptrs,
									&throttled);
	if (sizes_plausible(body, len))
		ref_nf = put_response_cbor_reference(body, len, n, ref_failed, &ref_code, &ref_message,
											 &ref_fatal, ref_ptrs, &ref_throttled);
	else
		ref_nf = -1;
	if (nf > n)
		abort();
	for (int i = 0; i < nf; i++)
		if (failed[i] < 0 || failed[i] >= n)
			abort();

	/*
	 * libcbor's tree has no depth limit; the scanner stops at
	 * CSCAN_MAX_DEPTH.
	 */
	if (nf != ref_nf && !(nf < 0 && len > CSCAN_MAX_DEPTH))
		abort();
	if (nf >= 0)
	{
		if (memcmp(failed, ref_failed, sizeof(int) * nf) != 0 ||
			!same_string(code, ref_code) || !same_string(message, ref_message) ||
			fatal != ref_fatal || throttled != ref_throttled)
			abort();
		for (int i = 0; i < n; i++)
			if (!same_string(recs[i].got_shard, ref_recs[i].got_shard))
				abort();
	}
	for (int i = 0; i < n; i++)
	{
		free(recs[i].got_shard);
		free(ref_recs[i].got_shard);
	}
	free(code);
	free(message);
	free(ref_code);
	free(ref_message);
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
	const char *body;
	size_t		len;

	if (size < 1)
		return 0;
	body = (const char *) data + 1;
	len = size - 1;
	switch (data[0] % 3)
	{
		case 0:
			{
				char	   *message = NULL;
				char	   *code = kinesis_error_code(body, len, &message);

				free(code);
				free(message);
				break;
			}
		case 1:
			check_answer(body, len, 1 + (data[0] / 3) % 8);
			break;
		case 2:
			check_request(data + 1, len);
			break;
	}
	return 0;
}
