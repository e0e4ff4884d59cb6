/*
 * Kinesis's answers: the first byte picks the parser (an error document,
 * a PutRecords answer for 1 to 8 records, a ListShards page), the rest is
 * the body.  A malformed body must be refused, never crash, and a
 * PutRecords answer must be read as the jansson parser it replaced read it
 * (kinesis_reference.c).
 */
#include "fuzz_common.h"
#include "kinesis.h"
#include "kinesis_reference.c"

static bool
same_string(const char *a, const char *b)
{
	return (a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0);
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
			{
				int			n = 1 + (data[0] / 3) % 8;
				ShipRecord	recs[8];
				ShipRecord *ptrs[8];
				int			failed[8];
				char	   *first_code = NULL;
				char	   *first_message = NULL;
				bool		fatal;
				uint64_t	throttled = 0;
				int			nf;

				memset(recs, 0, sizeof(recs));
				for (int i = 0; i < n; i++)
				{
					recs[i].want_shard = (i % 2) ? "shardId-000000000001" : NULL;
					ptrs[i] = &recs[i];
				}
				ShipRecord	ref_recs[8];
				ShipRecord *ref_ptrs[8];
				int			ref_failed[8];
				char	   *ref_code = NULL;
				char	   *ref_message = NULL;
				bool		ref_fatal;
				uint64_t	ref_throttled = 0;
				int			ref_nf;

				memcpy(ref_recs, recs, sizeof(recs));
				for (int i = 0; i < n; i++)
					ref_ptrs[i] = &ref_recs[i];
				nf = kinesis_parse_put_response(body, len, false, n, failed, &first_code,
												&first_message, &fatal, ptrs, &throttled);
				ref_nf = put_response_reference(body, len, n, ref_failed, &ref_code, &ref_message,
												&ref_fatal, ref_ptrs, &ref_throttled);
				if (nf > n)
					abort();
				for (int i = 0; i < nf; i++)
					if (failed[i] < 0 || failed[i] >= n)
						abort();

				/*
				 * A NUL byte is never JSON (not whitespace, not allowed raw
				 * in a string): refused.  jansson is no reference there: its
				 * lexer drops a NUL that follows a token it read one byte
				 * past ({"a":0<NUL>,...} loads; fuzz/regress/kinesis/).
				 */
				if (memchr(body, '\0', len) != NULL)
				{
					if (nf != -1)
						abort();
					ref_nf = nf;
				}
				/* The answer the jansson parser gave. */
				if (nf != ref_nf)
					abort();
				if (nf >= 0)
				{
					if (memcmp(failed, ref_failed, sizeof(int) * nf) != 0 ||
						!same_string(first_code, ref_code) ||
						!same_string(first_message, ref_message) ||
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
				free(first_code);
				free(first_message);
				free(ref_code);
				free(ref_message);
				break;
			}
		case 2:
			{
				KplShardMap map = {NULL, 0};
				bool		malformed = true;
				char	   *next = kinesis_parse_list_shards(body, len, &map, &malformed);

				for (int i = 0; i < map.nshards; i++)
					if (map.shards[i].end < map.shards[i].start)
						abort();
				free(next);
				kpl_map_free(&map);
				break;
			}
	}
	return 0;
}
