/*-------------------------------------------------------------------------
 *
 * kinesis_agg.c
 *	  --aggregate: the stream's shard map (ListShards) and PutRecords of
 *	  KPL aggregated records (kpl.c), sent in waves of one record per shard.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <unistd.h>

#include <jansson.h>

#include "kinesis_int.h"
#include "log.h"
#include "retry.h"

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
			kinesis_append_json_string(&ls->body, ls->token, strlen(ls->token));
		}
		else
			kinesis_append_stream_field(ls->k, &ls->body);
		appendPQExpBufferChar(&ls->body, '}');

		reached = kinesis_call(ls->k, "ListShards", ls->body.data, ls->body.len, &ls->resp);
		if (!reached || ls->resp.status != 200)
		{
			*problem = kinesis_call_failure(ls->k, &ls->k->http, reached, &ls->resp);
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
								kinesis_stream_label(ls->k), gap);
			free(gap);
			kpl_map_free(&ls->map);
			return CALL_RETRY;
		}
	}
}

ShipResult
kinesis_load_shard_map(KinesisTarget *k, StopFlag *stop)
{
	ListState	ls;
	char	   *what = psprintf("stream \"%s\"", kinesis_stream_label(k));
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
	uint128_t	first_hash;		/* its first row's hash key: the record's */
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
		   StopFlag *stop)
{
	int			nshards = k->map.nshards;
	int		   *head = pg_malloc(sizeof(int) * nshards);	/* next aggregate, or -1 */
	RetryClock *clocks = pg_malloc0(sizeof(RetryClock) * Max(nshards, 1));
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
			if (clocks[s].not_before > now)
			{
				wake = wake == 0 ? clocks[s].not_before : Min(wake, clocks[s].not_before);
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
			if (!retry_sleep_until(wake, stop))
				result = SHIP_STOPPED;
			continue;
		}

		nleft = nwave;
		problem = kinesis_put_round(k, wave, &nleft, failed, retries > 0, &fatal);
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
			retry_clock_reset(&clocks[aggs[i].shard]);
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
				if (!retry_clock_failed(&clocks[s], now, k->retry_timeout_s))
				{
					log_error("giving up on shard %s of stream \"%s\" after %d attempts in %d s: %s",
							  k->map.shards[s].id, kinesis_stream_label(k), clocks[s].attempts,
							  k->retry_timeout_s, problem);
					result = SHIP_FATAL;
				}
			}
			retry_log(retries, problem, "retrying those shards");
		}
		free(problem);
		if (result == SHIP_OK && ((stop && *stop) || wait_tick()))
			result = SHIP_STOPPED;
	}

	for (int i = 0; i < naggs; i++)
		unsent[i] = !acked[i];
	free(head);
	free(clocks);
	free(wave);
	free(wave_agg);
	free(failed);
	free(acked);
	return result;
}

/*
 * The rows todo[0..ntodo) grouped into aggregates by shard, in order; a
 * full aggregate starts a new one for its shard.
 */
static AggBuild *
group_by_shard(KinesisTarget *k, ShipRecord *rows, const int *todo, int ntodo,
			   size_t agg_bytes, int *naggs_out)
{
	AggBuild   *aggs = NULL;
	int			naggs = 0;
	int		   *open_agg = pg_malloc(sizeof(int) * k->map.nshards); /* per shard, or -1 */

	if (k->hasher == NULL)
		k->hasher = kpl_hasher_create();
	for (int s = 0; s < k->map.nshards; s++)
		open_agg[s] = -1;
	for (int t = 0; t < ntodo; t++)
	{
		ShipRecord *r = &rows[todo[t]];
		uint128_t	hash = kpl_hash_key(k->hasher, r->pkey, r->pkey_len);
		int			shard = kpl_shard_of(&k->map, hash);
		AggBuild   *a;

		/*
		 * kinesis_load_shard_map accepts only a map that covers every hash
		 * key: a row without a shard is a bug, and sending it in another
		 * shard's record would confirm a row stored where KCL drops it.
		 */
		if (shard < 0)
		{
			log_error("internal error: no shard of stream \"%s\" covers the hash key of partition key %s",
					  kinesis_stream_label(k), r->pkey);
			exit(1);
		}
		if (open_agg[shard] >= 0)
		{
			a = &aggs[open_agg[shard]];
			if (kpl_size(&a->agg) + kpl_added_size(&a->agg, r->pkey_len, r->len) > agg_bytes)
				open_agg[shard] = -1;
		}
		if (open_agg[shard] < 0)
		{
			aggs = pg_realloc(aggs, sizeof(AggBuild) * (naggs + 1));
			a = &aggs[naggs];
			a->shard = shard;
			a->first_hash = hash;
			kpl_init(&a->agg);
			a->rows = pg_malloc(sizeof(int) * ntodo);
			a->nrows = 0;
			open_agg[shard] = naggs++;
		}
		a = &aggs[open_agg[shard]];
		kpl_add(&a->agg, r->pkey_len, r->len);
		a->rows[a->nrows++] = todo[t];
	}
	free(open_agg);
	*naggs_out = naggs;
	return aggs;
}

ShipResult
kinesis_put_aggregated(KinesisTarget *k, ShipRecord *rows, int n, size_t agg_bytes,
					   StopFlag *stop)
{
	int		   *todo = pg_malloc(sizeof(int) * Max(n, 1));
	int			ntodo = n;
	KplEntry   *entries = NULL; /* an aggregate's rows, as it is encoded */
	ShipResult	result = SHIP_OK;
	int			rounds = 0;

	for (int i = 0; i < n; i++)
		todo[i] = i;

	while (ntodo > 0 && result == SHIP_OK)
	{
		AggBuild   *aggs = NULL;
		int			naggs = 0;
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

		aggs = group_by_shard(k, rows, todo, ntodo, agg_bytes, &naggs);

		/* One Kinesis record per aggregate, hash key inside its shard. */
		recs = pg_malloc0(sizeof(ShipRecord) * naggs);
		entries = pg_realloc(entries, sizeof(KplEntry) * Max(ntodo, 1));
		for (int i = 0; i < naggs; i++)
		{
			const ShipRecord *first = &rows[aggs[i].rows[0]];
			char		ehk[40];

			for (int j = 0; j < aggs[i].nrows; j++)
			{
				const ShipRecord *r = &rows[aggs[i].rows[j]];

				entries[j].key = r->pkey;
				entries[j].keylen = r->pkey_len;
				entries[j].data = r->data;
				entries[j].datalen = r->len;
			}
			recs[i].len = kpl_size(&aggs[i].agg);
			recs[i].data = pg_malloc(recs[i].len);
			kpl_encode(&aggs[i].agg, entries, recs[i].data);
			recs[i].pkey = pnstrdup(first->pkey, first->pkey_len);
			recs[i].pkey_len = first->pkey_len;
			kpl_format_hash_key(aggs[i].first_hash, ehk);
			recs[i].ehk = pg_strdup(ehk);
			recs[i].want_shard = k->map.shards[aggs[i].shard].id;
		}

		/*
		 * Waves, one aggregate per shard each: a shard's next aggregate is
		 * sent only once the one before is acknowledged, so two records of
		 * one shard are never in flight at once and a retried record never
		 * lands after a later one of its shard (keys may repeat in the rows;
		 * their versions stay in order).  A shard whose record failed
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
			free(aggs[i].rows);
		}
		free(recs);
		free(aggs);
		free(unsent);
		free(todo);

		/*
		 * Back in the rows' order (commit order), whatever shard they were
		 * in.
		 */
		qsort(again, nagain, sizeof(int), int_cmp);
		todo = again;
		ntodo = nagain;
		if (nmismatched > 0)
		{
			log_warning("stream \"%s\" was resharded: %d aggregated records landed in another shard than predicted; reading the shards again and sending their %d rows again",
						kinesis_stream_label(k), nmismatched, nagain);
			k->aggregates_resent += nmismatched;
			k->map_loaded_at = 0;
			if (++rounds > 10)
			{
				log_error("the shard map of stream \"%s\" keeps changing", kinesis_stream_label(k));
				result = SHIP_FATAL;
			}
		}
	}
	free(todo);
	free(entries);
	return result;
}
