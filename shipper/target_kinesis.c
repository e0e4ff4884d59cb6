/*-------------------------------------------------------------------------
 *
 * target_kinesis.c
 *	  The Kinesis target: rows batched by dispatch.c, delivered by
 *	  PutRecords on delivery threads ("lanes"), one record per row or KPL
 *	  aggregated records (--aggregate).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <pthread.h>

#include "aws_config.h"
#include "dispatch.h"
#include "kinesis.h"
#include "log.h"
#include "target_ops.h"

/* Rows per batch when aggregating: bounded by bytes long before this. */
#define AGGREGATE_BATCH_ROWS 20000

/*
 * Batches in flight at once (at most --max-in-flight): while one waits for
 * its answer, the next, sharing no partition key with it, need not wait
 * (bench/aggregate compares one lane, --max-in-flight 1, with two).
 */
#define DELIVERY_LANES 2

/* Aggregated, a row also carries the record's framing (about this much). */
#define AGGREGATE_ROW_OVERHEAD 64

typedef struct KinesisShip KinesisShip;

typedef struct KinesisLane
{
	KinesisShip *owner;
	KinesisTarget *k;			/* its own connections, share of calls, shard
								 * map */
	KinesisTarget stats;		/* counters copied after each delivery, under
								 * lock */
} KinesisLane;

struct KinesisShip
{
	const TargetConfig *cfg;
	KinesisTarget kinesis;		/* the first lane's; the others are clones */
	KinesisLane lanes[DISPATCH_MAX_LANES];
	int			nlanes;
	pthread_mutex_t lock;		/* the lanes' stats */
	PQExpBufferData pkey;		/* the current row's partition key */
	uint64_t	keyless_position;	/* the last row without a key... */
	uint32_t	keyless_ordinal;	/* ...and its ordinal there */
};

/* On a lane's thread: one batch, with the retries of kinesis.c. */
static ShipResult
kinesis_deliver(void *ctx, ShipRecord *recs, int n, StopFlag *stop)
{
	KinesisLane *l = ctx;
	ShipResult	r;

	if (l->owner->cfg->aggregate)
		r = kinesis_put_aggregated(l->k, recs, n, (size_t) l->owner->cfg->aggregate_bytes, stop);
	else
		r = kinesis_put_records(l->k, recs, n, stop);
	pthread_mutex_lock(&l->owner->lock);
	l->stats = *l->k;
	pthread_mutex_unlock(&l->owner->lock);
	return r;
}

/* Every lane's counters together, as of their last deliveries. */
static void
lane_totals(KinesisShip *ks, KinesisTarget *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&ks->lock);
	for (int i = 0; i < ks->nlanes; i++)
	{
		const KinesisTarget *s = &ks->lanes[i].stats;

		out->rows_aggregated += s->rows_aggregated;
		out->aggregates_resent += s->aggregates_resent;
		out->throttled_records += s->throttled_records;
		out->records_sent += s->records_sent;
		out->calls += s->calls;
		out->retried_calls += s->retried_calls;
		out->retried_records += s->retried_records;
	}
	pthread_mutex_unlock(&ks->lock);
}

/* The row's partition key into ks->pkey. */
static void
row_partition_key(KinesisShip *ks, const TargetRow *row)
{
	const RowFields *f = row->fields;

	if (row->is_message)
	{
		kinesis_message_partition_key(f->prefix.start, f->prefix.len, &ks->pkey);
		return;
	}
	/* Rows without a key are told apart by position and ordinal there. */
	if (f->key.start == NULL)
	{
		ks->keyless_ordinal = row->change_lsn == ks->keyless_position ? ks->keyless_ordinal + 1 : 0;
		ks->keyless_position = row->change_lsn;
	}
	kinesis_partition_key(f->schema.start, f->schema.len, f->table.start, f->table.len,
						  f->key.start, f->key.len, row->change_lsn, ks->keyless_ordinal,
						  &ks->pkey);
}

/* A row over Kinesis's record size limit: what to do about it. */
static void
report_too_large(const TargetRow *row, size_t record_bytes)
{
	const RowFields *f = row->fields;

	if (row->is_message)
	{
		log_error("message at %X/%X with prefix %.*s is %zu bytes, over Kinesis's limit of %d bytes per record",
				  LSN_FORMAT_ARGS(row->change_lsn), (int) f->prefix.len, f->prefix.start,
				  record_bytes, KINESIS_MAX_RECORD_BYTES);
		log_error_detail("Nothing at or after this message's transaction (commit %X/%X) is confirmed.",
						 LSN_FORMAT_ARGS(row->commit_lsn));
		log_error_hint("Leave its prefix out of the plugin option message_prefixes, ship to S3 alone, or write smaller messages.");
		return;
	}
	log_error("row at %X/%X of table %.*s.%.*s is %zu bytes, over Kinesis's limit of %d bytes per record",
			  LSN_FORMAT_ARGS(row->change_lsn),
			  (int) f->schema.len - 2, f->schema.start + 1,
			  (int) f->table.len - 2, f->table.start + 1,
			  record_bytes, KINESIS_MAX_RECORD_BYTES);
	log_error_detail("Nothing at or after this row's transaction (commit %X/%X) is confirmed.",
					 LSN_FORMAT_ARGS(row->commit_lsn));
	log_error_hint("Leave the large column out with the plugin option exclude_columns=%.*s.%.*s.COLUMN, ship to S3 alone (--target s3 has no per-row limit), or shrink the row.",
				   (int) f->schema.len - 2, f->schema.start + 1,
				   (int) f->table.len - 2, f->table.start + 1);
}

static bool
kinesis_add(Target *t, const TargetRow *row)
{
	KinesisShip *ks = t->priv;
	size_t		record_bytes;

	row_partition_key(ks, row);
	record_bytes = row->len + 1 + ks->pkey.len;
	if (record_bytes + (ks->cfg->aggregate ? AGGREGATE_ROW_OVERHEAD : 0) > KINESIS_MAX_RECORD_BYTES)
	{
		report_too_large(row, record_bytes);
		return false;
	}
	/* Room for it: in the batch, or among the rows waiting for their keys. */
	if (!dispatch_make_room(t->dispatcher, record_bytes))
		return false;
	dispatch_add(t->dispatcher, row->data, row->len, ks->pkey.data, ks->pkey.len,
				 dispatch_key_hash(ks->pkey.data, ks->pkey.len),
				 row->commit_lsn, row->safe_lsn, row->commit_time);
	return true;
}

/* Fails early on an unknown stream or bad credentials; loads the shard map. */
static ShipResult
kinesis_check(Target *t, StopFlag *stop)
{
	KinesisShip *ks = t->priv;
	ShipResult	r = kinesis_check_stream(&ks->kinesis, stop);

	if (r != SHIP_OK || !ks->cfg->aggregate)
		return r;
	if ((r = kinesis_load_shard_map(&ks->kinesis, stop)) != SHIP_OK)
		return r;
	if (ks->cfg->verbose)
		log_info("aggregating into %d open shards, records of at most %ld bytes",
				 ks->kinesis.map.nshards, ks->cfg->aggregate_bytes);
	return SHIP_OK;
}

static void
kinesis_stats(Target *t, MetricsState *m)
{
	KinesisTarget tot;

	lane_totals(t->priv, &tot);
	dispatch_target_stats(t, m);
	m->kinesis_records = tot.records_sent;
	m->kinesis_calls = tot.calls;
	m->kinesis_retried_calls = tot.retried_calls;
	m->kinesis_retried_records = tot.retried_records;
	m->kinesis_throttled_records = tot.throttled_records;
}

static void
kinesis_summary(Target *t)
{
	KinesisShip *ship = t->priv;
	KinesisTarget ks;

	lane_totals(ship, &ks);
	log_info("%llu PutRecords calls, %llu Kinesis records, %llu retried calls, %llu retried records, %llu throttled records",
			 (unsigned long long) ks.calls,
			 (unsigned long long) ks.records_sent,
			 (unsigned long long) ks.retried_calls,
			 (unsigned long long) ks.retried_records,
			 (unsigned long long) ks.throttled_records);
	log_info("%llu rows waited for an earlier version of their key to be acknowledged",
			 (unsigned long long) dispatch_key_waits(t->dispatcher));
	if (ship->cfg->aggregate)
		log_info("%llu rows in aggregated records (%.1f rows per record), %llu records sent again after resharding",
				 (unsigned long long) ks.rows_aggregated,
				 ks.records_sent ? (double) ks.rows_aggregated / ks.records_sent : 0.0,
				 (unsigned long long) ks.aggregates_resent);
}

/*
 * Up to DELIVERY_LANES batches in flight, each filling its lane's share of
 * the --max-in-flight calls.  The batches in flight and the one filling
 * are held at most: together, no more than --max-buffer-bytes.
 */
static Dispatcher *
start_lanes(KinesisShip *ks, const TargetSettings *ts)
{
	DispatchConfig dc;
	int			nlanes = Min(DELIVERY_LANES, ks->cfg->max_in_flight);
	int			lane_calls = (ks->cfg->max_in_flight + nlanes - 1) / nlanes;
	long		batch_cap = ks->cfg->max_buffer_bytes / (nlanes + 1);

	/*
	 * An aggregated batch in flight is held about three times over: its rows,
	 * their KPL records, and the request's base64 body.  Half the share keeps
	 * the whole within --max-buffer-bytes' intent (peak RSS catching up: 38.5
	 * MiB before, bench/aggregate).
	 */
	if (ks->cfg->aggregate)
		batch_cap /= 2;
	memset(&dc, 0, sizeof(dc));
	ks->nlanes = nlanes;
	for (int i = 0; i < nlanes; i++)
	{
		KinesisLane *l = &ks->lanes[i];

		/* --max-in-flight calls in all, shared out between the lanes */
		int			share = ks->cfg->max_in_flight / nlanes + (i < ks->cfg->max_in_flight % nlanes ? 1 : 0);

		l->owner = ks;
		if (i == 0)
		{
			/*
			 * The first lane uses the target itself, with its share of the
			 * pool.
			 */
			l->k = &ks->kinesis;
		}
		else
		{
			l->k = pg_malloc(sizeof(KinesisTarget));
			kinesis_clone(l->k, &ks->kinesis, share);
		}
		l->k->max_in_flight = share;
		dc.lane_ctx[i] = l;
	}
	dc.deliver = kinesis_deliver;
	dc.lanes = nlanes;
	dc.keyed = true;
	/* Aggregated, a key's rows share its shard's record, in order. */
	dc.distinct_keys = !ks->cfg->aggregate;
	dc.capacity = ks->cfg->aggregate ? AGGREGATE_BATCH_ROWS : ks->cfg->batch_records * lane_calls;
	dc.max_bytes = (size_t) Min(ks->cfg->batch_bytes * lane_calls, batch_cap);
	dc.stop = ts->abort;
	dc.tick = ts->tick;
	dc.tick_arg = ts->tick_arg;
	dc.verbose = ks->cfg->verbose;
	dc.linger_ms = ks->cfg->linger_ms;
	return dispatch_create(&dc);
}

static void
kinesis_destroy(Target *t)
{
	KinesisShip *ks = t->priv;

	/* A lane still delivering uses its connections: left to the exit. */
	if (!dispatch_destroy(t->dispatcher))
		return;
	for (int i = 1; i < ks->nlanes; i++)
	{
		kinesis_free(ks->lanes[i].k, true);
		free(ks->lanes[i].k);
	}
	kinesis_free(&ks->kinesis, false);
	pthread_mutex_destroy(&ks->lock);
	termPQExpBuffer(&ks->pkey);
	free(ks);
	free(t);
}

static Target *
kinesis_create(const TargetSettings *ts)
{
	static const TargetOps ops = {
		.name = "kinesis",
		.check = kinesis_check,
		.add = kinesis_add,
		.poll = dispatch_target_poll,
		.next_due = dispatch_target_next_due,
		.wake_fd = dispatch_target_wake_fd,
		.flush = dispatch_target_flush,
		.held_lsn = dispatch_target_held_lsn,
		.held_rows = dispatch_target_held_rows,
		.stats = kinesis_stats,
		.summary = kinesis_summary,
		.destroy = kinesis_destroy,
	};
	Target	   *t = pg_malloc0(sizeof(Target));
	KinesisShip *ks = pg_malloc0(sizeof(KinesisShip));
	const char *endpoint = ts->endpoint ? ts->endpoint : aws_endpoint_from_env("KINESIS");
	char	   *err;

	ks->cfg = ts->config;
	err = kinesis_init(&ks->kinesis, ts->provider, endpoint, ts->region, ks->cfg->stream,
					   ks->cfg->stream_arn, ks->cfg->ca_file, ks->cfg->request_timeout_ms,
					   ks->cfg->retry_timeout_s, ks->cfg->max_in_flight);
	if (err != NULL)
	{
		log_error("%s", err);
		exit(2);
	}
	ks->kinesis.call_records = ks->cfg->batch_records;
	ks->kinesis.call_bytes = (size_t) ks->cfg->batch_bytes;
	ks->kinesis.cbor = ks->cfg->kinesis_cbor;
	if (ks->cfg->verbose)
		log_info("Kinesis: region %s, endpoint %s", ts->region, ks->kinesis.endpoint);
	pthread_mutex_init(&ks->lock, NULL);
	initPQExpBuffer(&ks->pkey);
	t->dispatcher = start_lanes(ks, ts);
	t->ops = &ops;
	t->priv = ks;
	return t;
}

static const char *
kinesis_check_options(const TargetConfig *cfg, bool chosen)
{
	if (cfg->aggregate && !chosen)
		return "--aggregate is for --target kinesis";
	if (cfg->kinesis_cbor && !chosen)
		return "--kinesis-protocol is for --target kinesis";
	if (chosen && cfg->stream == NULL && cfg->stream_arn == NULL)
		return "no stream specified: use --stream or --stream-arn";
	if (cfg->stream != NULL && cfg->stream_arn != NULL)
		return "--stream and --stream-arn cannot be used together";
	if (!chosen && (cfg->stream || cfg->stream_arn))
		return "--stream and --stream-arn are for --target kinesis";
	return NULL;
}

/* A stream's ARN names its region. */
static char *
kinesis_region_hint(const TargetConfig *cfg)
{
	return cfg->stream_arn != NULL ? kinesis_arn_region(cfg->stream_arn) : NULL;
}

const TargetKind target_kind_kinesis = {
	.name = "kinesis",
	.aws = true,
	.check_options = kinesis_check_options,
	.region_hint = kinesis_region_hint,
	.create = kinesis_create,
};
