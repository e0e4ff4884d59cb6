/*
 * fuzz/kinesis_reference.c
 *	  The PutRecords answer parser as it was before it read answers in place
 *	  (jansson, commit 3203987).  fuzz_kinesis.c includes it and checks that
 *	  kinesis_parse_put_response() gives the same answer for every input:
 *	  the failed records, the first error, fatal, the throttled count and
 *	  the shards.
 */
#include <jansson.h>

static int
put_response_reference(const char *body, size_t len, int n, int *failed,
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
