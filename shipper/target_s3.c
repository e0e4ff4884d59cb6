/*-------------------------------------------------------------------------
 *
 * target_s3.c
 *	  S3 as a target (--target s3): rows grouped into objects by route and
 *	  commit day (s3_lake.c), each object written once whole, on the main thread,
 *	  at --flush-bytes or --flush-seconds.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <time.h>

#include "aws_config.h"
#include "log.h"
#include "s3_lake.h"
#include "target_ops.h"

typedef struct S3Ship
{
	S3Lake		s3;
	const TargetConfig *cfg;
	StopFlag   *abort;			/* abandons a write in flight */
} S3Ship;

/*
 * The S3 partition of a row: its route, with anything but letters, digits,
 * '_', '-' and '.' replaced, "_messages" for a message, or "_unrouted"
 * when it has none.
 */
static void
row_route(const TargetRow *row, char *out, size_t outlen)
{
	const RowFields *f = row->fields;
	size_t		n = 0;

	if (row->is_message)
	{
		strlcpy(out, "_messages", outlen);
		return;
	}
	if (f->route.start == NULL || f->route.len < 3 || f->route.start[0] != '"')
	{
		strlcpy(out, "_unrouted", outlen);
		return;
	}
	for (size_t i = 1; i + 1 < f->route.len && n + 1 < outlen; i++)
	{
		char		c = f->route.start[i];

		out[n++] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
					(c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.') ? c : '_';
	}
	out[n] = '\0';
}

/* The UTC day of the row's commit time, or today when the row has none. */
static void
row_date(const RowFields *f, char out[11])
{
	const char *t = f->commit_time.start;

	if (t != NULL && f->commit_time.len >= 12 && t[0] == '"' &&
		t[5] == '-' && t[8] == '-')
	{
		memcpy(out, t + 1, 10);
		out[10] = '\0';
	}
	else
	{
		time_t		now = time(NULL);
		struct tm	tm;

		gmtime_r(&now, &tm);
		strftime(out, 11, "%Y-%m-%d", &tm);
	}
}

static bool
s3_ship_flush(Target *t)
{
	S3Ship	   *ss = t->priv;
	ShipResult	r = s3_lake_flush(&ss->s3, ss->abort);

	if (r == SHIP_STOPPED)
		log_warning("stopping with S3 objects unwritten; their rows will be shipped again on restart");
	return r == SHIP_OK;
}

static bool
s3_ship_add(Target *t, const TargetRow *row)
{
	S3Ship	   *ss = t->priv;
	char		route[128];
	char		dt[11];
	S3Position	spos = {row->commit_lsn, row->seq};

	row_route(row, route, sizeof(route));
	row_date(row->fields, dt);
	/* Skipped when the bucket has it already (shipped before a crash). */
	if (s3_lake_add(&ss->s3, route, dt, row->data, row->len, spos, row->safe_lsn,
					row->commit_time, ss->abort) == S3_FAILED)
		return false;
	if (ss->s3.buffered >= (size_t) Min(ss->cfg->flush_bytes, ss->cfg->max_buffer_bytes))
		return s3_ship_flush(t);
	return true;
}

static bool
s3_ship_poll(Target *t, double now)
{
	S3Ship	   *ss = t->priv;

	if (s3_lake_has_rows(&ss->s3) && now - ss->s3.first_at >= ss->cfg->flush_seconds)
		return s3_ship_flush(t);
	return true;
}

static double
s3_ship_next_due(Target *t)
{
	S3Ship	   *ss = t->priv;

	return s3_lake_has_rows(&ss->s3) ? ss->s3.first_at + ss->cfg->flush_seconds : 0;
}

/* Rows held for S3 are not acknowledged until their objects are written. */
static bool
s3_ship_held_lsn(Target *t, uint64_t *lsn)
{
	S3Ship	   *ss = t->priv;

	if (!s3_lake_has_rows(&ss->s3))
		return false;
	*lsn = ss->s3.safe_lsn;
	return true;
}

static int
s3_ship_held_rows(Target *t)
{
	S3Ship	   *ss = t->priv;
	uint64_t	n = 0;

	for (int i = 0; i < ss->s3.nobjects; i++)
		n += ss->s3.objects[i].rows;
	return (int) n;
}

static void
s3_ship_stats(Target *t, MetricsState *m)
{
	S3Ship	   *ss = t->priv;

	TargetMetrics *tm = metrics_target(m, "s3");

	m->s3_objects = ss->s3.objects_put;
	m->s3_bytes = ss->s3.bytes_put;
	m->s3_objects_torn = ss->s3.objects_torn;
	m->s3_rows_skipped = ss->s3.rows_skipped;
	tm->rows = ss->s3.rows_put;
	tm->bytes = ss->s3.row_bytes_put;
	tm->held_rows = (uint64_t) s3_ship_held_rows(t);
	tm->held_bytes = ss->s3.buffered;
	tm->oldest_pending_commit = s3_lake_has_rows(&ss->s3) ? ss->s3.oldest_commit : 0;
	tm->last_delivery = ss->s3.last_put_at;
	tm->held_since = s3_lake_has_rows(&ss->s3) ? ss->s3.first_at : 0;
	tm->hold_allowance = ss->cfg->flush_seconds;
}

static void
s3_ship_summary(Target *t)
{
	S3Ship	   *ss = t->priv;

	log_info("S3: %llu objects written, %llu rows already in the bucket not written again, %llu objects of an unfinished load deleted",
			 (unsigned long long) ss->s3.objects_put, (unsigned long long) ss->s3.rows_skipped,
			 (unsigned long long) ss->s3.objects_deleted);
}

static ShipResult
s3_ship_check(Target *t, StopFlag *stop)
{
	S3Ship	   *ss = t->priv;

	return s3_lake_check_bucket(&ss->s3, stop);
}

static ShipResult
s3_ship_claim(Target *t, const char *system_id, const char *dbname, const char *slot,
			  StopFlag *stop)
{
	S3Ship	   *ss = t->priv;

	return s3_lake_claim_prefix(&ss->s3, system_id, dbname, slot, stop);
}

static ShipResult
s3_ship_forget_load(Target *t, uint64_t lsn, StopFlag *stop)
{
	S3Ship	   *ss = t->priv;

	return s3_lake_forget_load(&ss->s3, lsn, stop);
}

static ShipResult
s3_ship_sweep_loads(Target *t, StopFlag *stop)
{
	S3Ship	   *ss = t->priv;

	return s3_lake_sweep_loads(&ss->s3, stop);
}

static void
s3_ship_destroy(Target *t)
{
	S3Ship	   *ss = t->priv;

	s3_lake_free(&ss->s3);
	free(ss);
	free(t);
}

static Target *
s3_create(const TargetSettings *ts)
{
	static const TargetOps ops = {
		.name = "s3",
		.check = s3_ship_check,
		.claim = s3_ship_claim,
		.forget_load = s3_ship_forget_load,
		.sweep_loads = s3_ship_sweep_loads,
		.add = s3_ship_add,
		.poll = s3_ship_poll,
		.next_due = s3_ship_next_due,
		.flush = s3_ship_flush,
		.held_lsn = s3_ship_held_lsn,
		.held_rows = s3_ship_held_rows,
		.stats = s3_ship_stats,
		.summary = s3_ship_summary,
		.destroy = s3_ship_destroy,
	};
	Target	   *t = pg_malloc0(sizeof(Target));
	S3Ship	   *ss = pg_malloc0(sizeof(S3Ship));

	/* --endpoint-url serves S3 too when S3 is the first AWS target. */
	const TargetConfig *cfg = ts->config;
	const char *endpoint = cfg->s3_endpoint ? cfg->s3_endpoint :
	ts->endpoint ? ts->endpoint : aws_endpoint_from_env("S3");
	char	   *err;

	err = s3_lake_init(&ss->s3, ts->provider, cfg->s3_url, endpoint, ts->region,
					   cfg->s3_addressing, cfg->gzip, cfg->ca_file, cfg->request_timeout_ms,
					   cfg->retry_timeout_s);
	if (err != NULL)
	{
		log_error("%s", err);
		exit(2);
	}
	if (cfg->verbose)
		log_info("S3: bucket %s, prefix \"%s\", endpoint %s (%s-style)",
				 ss->s3.client.bucket, ss->s3.client.prefix, ss->s3.client.endpoint,
				 ss->s3.client.path_style ? "path" : "virtual-host");
	ss->cfg = cfg;
	ss->abort = ts->abort;
	t->ops = &ops;
	t->priv = ss;
	return t;
}

static const char *
s3_check_options(const TargetConfig *cfg, bool chosen)
{
	if (chosen && cfg->s3_url == NULL)
		return "no S3 location specified: use --s3-url s3://BUCKET/PREFIX";
	if (!chosen && (cfg->s3_url || cfg->s3_endpoint || cfg->s3_addressing))
		return "--s3-url, --s3-endpoint-url and --s3-addressing are for --target s3";
	return NULL;
}

const TargetKind target_kind_s3 = {
	.name = "s3",
	.aws = true,
	.check_options = s3_check_options,
	.create = s3_create,
};
