/*
 * fuzz/kinesis_cbor_reference.c
 *	  A CBOR PutRecords answer read through libcbor's tree (cbor_load), the
 *	  reading kinesis_cbor.c's in-place scanner must match: fuzz_kinesis_cbor.c
 *	  checks that kinesis_parse_put_response(..., cbor = true, ...) gives the
 *	  same failed records, first error, fatal flag, throttled count and
 *	  shards for every input.  Members are read as the JSON answers are: the
 *	  last of duplicate names wins, and a member that is not text counts as
 *	  absent.
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

static int
put_response_cbor_reference(const char *body, size_t len, int n, int *failed,
							char **first_code, char **first_message, bool *fatal,
							ShipRecord **recs, uint64_t *throttled)
{
	struct cbor_load_result res;
	cbor_item_t *doc = cbor_load((cbor_data) body, len, &res);
	cbor_item_t *records;
	int			nfailed = 0;

	*fatal = false;
	if (doc == NULL)
		return -1;
	if (res.read != len || !cbor_isa_map(doc) ||
		(records = ref_member(doc, "Records")) == NULL || !cbor_isa_array(records) ||
		cbor_array_size(records) != (size_t) n)
	{
		cbor_decref(&doc);
		return -1;
	}
	for (int i = 0; i < n; i++)
	{
		cbor_item_t *r = cbor_array_handle(records)[i];
		char	   *code;

		if (!cbor_isa_map(r))
		{
			cbor_decref(&doc);
			return -1;
		}
		code = ref_text_member(r, "ErrorCode");
		if (code == NULL)
		{
			char	   *seq = ref_text_member(r, "SequenceNumber");

			if (seq == NULL)
			{
				cbor_decref(&doc);
				return -1;
			}
			free(seq);
			if (recs[i]->want_shard != NULL)
			{
				free(recs[i]->got_shard);
				recs[i]->got_shard = ref_text_member(r, "ShardId");
			}
			continue;
		}
		if (strcmp(code, "ProvisionedThroughputExceededException") == 0)
			(*throttled)++;
		failed[nfailed++] = i;
		if (*first_code == NULL)
		{
			*first_code = pg_strdup(code);
			*first_message = ref_text_member(r, "ErrorMessage");
		}
		if (strncmp(code, "KMS", 3) == 0 && strcmp(code, "KMSThrottlingException") != 0)
			*fatal = true;
		free(code);
	}
	cbor_decref(&doc);
	return nfailed;
}
