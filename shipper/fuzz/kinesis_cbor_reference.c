/*
 * fuzz/kinesis_cbor_reference.c
 *	  A CBOR PutRecords answer read through libcbor's tree (cbor_load), the
 *	  reading kinesis_cbor.c's in-place scanner must match:
 *	  fuzz_kinesis_cbor.c checks that kinesis_cbor_scan_put_response() finds
 *	  the same elements, with the same members, byte for byte, for every
 *	  input.  Members are read as the JSON answers are: the last of duplicate
 *	  names wins, and a member that is not text counts as absent.
 */
#include <cbor.h>

/* A loaded text item (chunks joined), NUL-terminated; NULL when not text. */
static char *
ref_text(cbor_item_t * item, size_t *len)
{
	PQExpBufferData buf;

	if (!cbor_isa_string(item))
		return NULL;
	initPQExpBuffer(&buf);
	if (cbor_string_is_definite(item))
		appendBinaryPQExpBuffer(&buf, (const char *) cbor_string_handle(item),
								cbor_string_length(item));
	else
		for (size_t i = 0; i < cbor_string_chunk_count(item); i++)
			appendBinaryPQExpBuffer(&buf,
									(const char *) cbor_string_handle(cbor_string_chunks_handle(item)[i]),
									cbor_string_length(cbor_string_chunks_handle(item)[i]));
	*len = buf.len;
	return buf.data;
}

/* The map's last member of that name, or NULL. */
static cbor_item_t *
ref_member(cbor_item_t * map, const char *name)
{
	cbor_item_t *found = NULL;

	for (size_t i = 0; i < cbor_map_size(map); i++)
	{
		size_t		len;
		char	   *k = ref_text(cbor_map_handle(map)[i].key, &len);

		if (k != NULL && len == strlen(name) && memcmp(k, name, len) == 0)
			found = cbor_map_handle(map)[i].value;
		free(k);
	}
	return found;
}

/* A text member's value, or NULL when absent or not text. */
static char *
ref_text_member(cbor_item_t * map, const char *name)
{
	cbor_item_t *v = ref_member(map, name);
	size_t		len;

	return v != NULL ? ref_text(v, &len) : NULL;
}

/* What the tree says of one element of Records. */
typedef struct RefResult
{
	bool		object;
	char	   *code;			/* NULL: absent, or not text */
	char	   *message;
	char	   *sequence;
	char	   *shard;
	size_t		code_len;
	size_t		message_len;
	size_t		sequence_len;
	size_t		shard_len;
}			RefResult;

/* A text member's value and length, or NULL when absent or not text. */
static char *
ref_text_member_len(cbor_item_t * map, const char *name, size_t *len)
{
	cbor_item_t *v = ref_member(map, name);

	*len = 0;
	return v != NULL ? ref_text(v, len) : NULL;
}

/*
 * The answer as kinesis_cbor_scan_put_response() must read it: false when
 * the body is not one CBOR value; *count elements of the last Records
 * member (-1 when there is none or it is not an array), results for the
 * first max of them.
 */
static bool
put_response_cbor_reference(const char *body, size_t len, RefResult * results, int max,
							int *count)
{
	struct cbor_load_result res;
	cbor_item_t *doc = cbor_load((cbor_data) body, len, &res);
	cbor_item_t *records;

	*count = -1;
	if (doc == NULL)
		return false;
	if (res.read != len)
	{
		cbor_decref(&doc);
		return false;
	}
	if (cbor_isa_map(doc) && (records = ref_member(doc, "Records")) != NULL &&
		cbor_isa_array(records))
	{
		*count = (int) cbor_array_size(records);
		for (int i = 0; i < *count && i < max; i++)
		{
			cbor_item_t *r = cbor_array_handle(records)[i];
			RefResult  *out = &results[i];

			memset(out, 0, sizeof(*out));
			if (!cbor_isa_map(r))
				continue;
			out->object = true;
			out->code = ref_text_member_len(r, "ErrorCode", &out->code_len);
			out->message = ref_text_member_len(r, "ErrorMessage", &out->message_len);
			out->sequence = ref_text_member_len(r, "SequenceNumber", &out->sequence_len);
			out->shard = ref_text_member_len(r, "ShardId", &out->shard_len);
		}
	}
	cbor_decref(&doc);
	return true;
}
