/*-------------------------------------------------------------------------
 *
 * replicate.c
 *	  The stream loop: reads the slot's messages, hands each row to the
 *	  target, and confirms to PostgreSQL only positions before every row the
 *	  target still holds.  Also the tick, which keeps the replication
 *	  connection, the metrics and the slot's health going while the main
 *	  thread waits for a delivery.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <unistd.h>

#include "log.h"
#include "notify.h"
#include "options.h"
#include "replicate.h"
#include "rowscan.h"
#include "slot.h"

/* The status interval, or 10 s where none is set, for the slot's health. */
#define HEALTH_INTERVAL(o) ((o).status_interval > 0 ? (o).status_interval : 10)

/*
 * The position that may be confirmed now: everything before the first
 * undelivered row's transaction, or, with nothing held, the newest
 * transaction once the server has shown it complete; never past --endpos
 * (what follows it is for the next run).
 */
uint64_t
replicate_confirmable(Replicator *r)
{
	uint64_t	lsn;

	if (target_held_lsn(r->target, &lsn))
		 /* lsn set */ ;
	else if (r->pos.processed >= r->pos.last_txn)
		lsn = Max(r->pos.processed, r->pos.last_txn);
	else
		lsn = r->pos.prev_txn;
	if (opts.endpos != 0)
		lsn = Min(lsn, opts.endpos);
	return Max(lsn, r->pos.confirmed);
}

bool
replicate_flush(Replicator *r)
{
	return target_flush(r->target);
}

/* A stop: at once before streaming, after --shutdown-timeout while streaming. */
static void
tick_stop(Replicator *r, double now)
{
	if (!*r->stop || r->delivery_abort)
		return;
	if (r->streaming_grace && !*r->stop_now)
	{
		if (r->shutdown_deadline == 0)
			r->shutdown_deadline = now + opts.shutdown_timeout;
		if (now < r->shutdown_deadline)
			return;
		log_warning("--shutdown-timeout (%d s) reached with deliveries in flight",
					opts.shutdown_timeout);
	}
	r->delivery_abort = 1;
	/* A delivery waiting for AWS credentials waits no more. */
	aws_credentials_shutdown();
}

/*
 * The tick, run at least once a second while a delivery waits (see
 * retry.h).  It keeps the replication connection alive: without status
 * updates the server ends the connection after wal_sender_timeout, and
 * everything since the last confirmation would be shipped again.  The
 * position sent is the one already confirmed.  The metrics and the slot's
 * state keep their cadence (an outage is when an on-call engineer reads
 * them).  It also decides when a stop abandons the delivery in flight.
 */
static bool
replicate_tick(void *arg)
{
	Replicator *r = arg;
	double		now = now_seconds();

	/* A delivery thread only learns whether to give up. */
	if (!pthread_equal(pthread_self(), r->main_thread))
		return r->delivery_abort != 0;
	notify_watchdog();
	if (r->tick_rc != NULL && !r->in_health_check &&
		now - r->last_health >= HEALTH_INTERVAL(opts))
		replicate_check_slot(r);
	replicate_publish_metrics(r, false);
	if (r->tick_rc != NULL)
	{
		int			timeout_ms = stream_sender_timeout_ms(r->tick_rc);
		double		every = opts.status_interval > 0 ? opts.status_interval : 10;

		if (timeout_ms > 0)
			every = Min(every, timeout_ms / 3000.0);
		if (now - r->last_status >= every)
		{
			if (stream_send_feedback(r->tick_rc, r->pos.confirmed, false))
				r->last_status = now;
			else
				r->tick_rc = NULL;	/* the loop will see the connection is
									 * gone */
		}
	}
	tick_stop(r, now);
	return r->delivery_abort != 0;
}

static bool backfill_add_row(void *arg, const char *data, size_t len,
							 const RowFields *fields, uint64_t commit_lsn);
static bool backfill_flush(void *arg);

void
replicate_init(Replicator *r, StopFlag *stop, StopFlag *stop_now, StopFlag *reload)
{
	memset(r, 0, sizeof(*r));
	r->stop = stop;
	r->stop_now = stop_now;
	r->reload = reload;
	r->main_thread = pthread_self();
	r->target = target_create(&r->delivery_abort, replicate_tick, r, &r->provider);
	set_wait_tick(replicate_tick, r);
	r->pos.confirmed = opts.startpos;
	r->backfill = backfill_create(&r->params, r->target, r->stop, backfill_add_row,
								  backfill_flush, r);
	backfill_set_verbose(r->backfill, opts.verbosity > 0);
	backfill_set_workers(r->backfill, opts.backfill_workers);
	backfill_set_chunk_bytes(r->backfill, opts.backfill_chunk_bytes);
}

/* ----------------------------------------------------------------
 * Rows
 * ----------------------------------------------------------------
 */

typedef enum RowResult
{
	ROW_OK,
	ROW_PAST_ENDPOS,
	ROW_FATAL
} RowResult;

/*
 * A row's commit_time ("2026-11-25T23:29:57.123456Z", always UTC) as
 * seconds since the epoch; 0 when it is not in that form.
 */
static double
parse_commit_time(const char *s, size_t len)
{
	int			f[6];
	static const int widths[6] = {4, 2, 2, 2, 2, 2};
	static const char seps[6] = {'-', '-', 'T', ':', ':', 0};
	size_t		i = 0;
	double		frac = 0;
	int64_t		y,
				m,
				era,
				yoe,
				doy,
				doe;

	if (s == NULL || len < 22 || s[0] != '"')
		return 0;
	s++;
	len -= 2;
	for (int k = 0; k < 6; k++)
	{
		f[k] = 0;
		for (int d = 0; d < widths[k]; d++, i++)
		{
			if (i >= len || s[i] < '0' || s[i] > '9')
				return 0;
			f[k] = f[k] * 10 + (s[i] - '0');
		}
		if (seps[k] != 0 && (i >= len || s[i++] != seps[k]))
			return 0;
	}
	if (i < len && s[i] == '.')
	{
		double		scale = 0.1;

		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, scale /= 10)
			frac += (s[i] - '0') * scale;
	}
	if (i >= len || s[i] != 'Z')
		return 0;
	/* Days from the civil date (proleptic Gregorian), 1970-01-01 = 0. */
	y = f[0] - (f[1] <= 2);
	m = f[1];
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + f[2] - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return (double) (era * 146097 + doe - 719468) * 86400 +
		f[3] * 3600 + f[4] * 60 + f[5] + frac;
}

/* The row's fields, checked: a table row or a message, with a commit_lsn. */
static bool
scan_row(const char *row, size_t len, uint64_t change_lsn, RowFields *f, bool *is_message,
		 uint64_t *commit_lsn)
{
	if (!rowscan(row, len, f))
		f->schema.start = f->table.start = f->prefix.start = NULL;
	/* A message row (plugin option include_messages): no table, a prefix. */
	*is_message = f->schema.start == NULL && f->prefix.start != NULL && f->prefix.start[0] == '"';
	if (!*is_message &&
		(f->schema.start == NULL || f->table.start == NULL ||
		 f->schema.start[0] != '"' || f->table.start[0] != '"'))
	{
		log_error("row at %X/%X is not a fundrecs_decoder row: %.*s",
				  LSN_FORMAT_ARGS(change_lsn), (int) Min(len, 200), row);
		log_error_hint("Was the slot created with the plugin fundrecs_decoder?");
		return false;
	}
	if (f->commit_lsn.start == NULL ||
		!rowscan_parse_lsn(f->commit_lsn.start, f->commit_lsn.len, commit_lsn))
	{
		log_error("row at %X/%X has no commit_lsn", LSN_FORMAT_ARGS(change_lsn));
		log_error_hint("Do not pass -o include_lsn=false to the shipper.");
		return false;
	}
	return true;
}

static RowResult
handle_row(Replicator *r, const char *data, size_t len, uint64_t change_lsn, bool is_load)
{
	RowFields	f;
	TargetRow	row;

	memset(&row, 0, sizeof(row));
	if (!scan_row(data, len, change_lsn, &f, &row.is_message, &row.commit_lsn))
		return ROW_FATAL;
	if (opts.endpos != 0 && row.commit_lsn > opts.endpos && !is_load)
		return ROW_PAST_ENDPOS;

	/* A new transaction: the previous one is complete. */
	if (row.commit_lsn != r->pos.last_txn)
	{
		if (row.commit_lsn < r->pos.last_txn)
		{
			log_error("rows arrived out of commit order (%X/%X after %X/%X)",
					  LSN_FORMAT_ARGS(row.commit_lsn), LSN_FORMAT_ARGS(r->pos.last_txn));
			return ROW_FATAL;
		}
		r->pos.prev_txn = r->pos.last_txn;
		r->pos.last_txn = row.commit_lsn;
	}

	/*
	 * The row's ordinal in its transaction (or load): its place in the
	 * stream.
	 */
	r->row_seq = row.commit_lsn == r->row_seq_lsn ? r->row_seq + 1 : 0;
	r->row_seq_lsn = row.commit_lsn;

	if (!is_load)
	{
		/* A backfill's request or watermark: acted on, never shipped. */
		if (row.is_message && backfill_is_control(&f))
			return backfill_control(r->backfill, data, len, &f, row.commit_lsn) ? ROW_OK : ROW_FATAL;
		if (!row.is_message && backfill_watching(r->backfill))
			backfill_observe(r->backfill, data, len, &f);
	}

	row.data = data;
	row.len = len;
	row.fields = &f;
	row.change_lsn = change_lsn;
	row.seq = r->row_seq;
	row.safe_lsn = r->pos.prev_txn;

	/*
	 * The commit time serves only the lag metric: parsed only when it is
	 * served.
	 */
	row.commit_time = metrics_enabled() ? parse_commit_time(f.commit_time.start, f.commit_time.len) : 0;
	return target_add(r->target, &row) ? ROW_OK : ROW_FATAL;
}

/*
 * A backfilled row, handed over when its chunk's high watermark (commit_lsn)
 * arrives: one more row of that transaction, in the stream's order.
 */
static bool
backfill_add_row(void *arg, const char *data, size_t len, const RowFields *fields,
				 uint64_t commit_lsn)
{
	Replicator *r = arg;
	TargetRow	row;

	memset(&row, 0, sizeof(row));
	r->row_seq = commit_lsn == r->row_seq_lsn ? r->row_seq + 1 : 0;
	r->row_seq_lsn = commit_lsn;
	row.data = data;
	row.len = len;
	row.fields = fields;
	row.change_lsn = commit_lsn;
	row.commit_lsn = commit_lsn;
	row.seq = r->row_seq;
	row.safe_lsn = r->pos.prev_txn;
	row.commit_time = metrics_enabled() ?
		parse_commit_time(fields->commit_time.start, fields->commit_time.len) : 0;
	return target_add(r->target, &row);
}

static bool
backfill_flush(void *arg)
{
	return replicate_flush((Replicator *) arg);
}

/* ----------------------------------------------------------------
 * Metrics and the slot's health
 * ----------------------------------------------------------------
 */

void
replicate_publish_metrics(Replicator *r, bool force)
{
	MetricsState *m = &r->mstate;
	double		now;

	if (!metrics_enabled())
		return;
	now = now_seconds();
	if (!force && now - r->last_publish < 0.1)
		return;
	r->last_publish = now;
	/* What the targets count, afresh. */
	m->ntargets = 0;
	m->deliveries_in_flight = 0;
	target_stats(r->target, m);
	metrics_sum_targets(m);
	m->load_rows = load_rows_done;
	m->load_estimate = load_rows_estimate;
	{
		BackfillStats bs;

		backfill_stats(r->backfill, &bs);
		m->backfill_rows = bs.rows_shipped;
		m->backfill_rows_read = bs.rows_read;
		m->backfill_rows_dropped = bs.rows_dropped;
		m->backfill_chunks = bs.chunks;
		m->backfill_chunks_redone = bs.chunks_redone;
		m->backfill_remaining = bs.remaining;
		m->backfill_rate = bs.rate;
		m->backfill_running = bs.running;
	}
	m->confirmed_lsn = r->pos.confirmed;
	m->wal_end = Max(r->pos.processed, r->pos.last_txn);
	m->has_credentials = r->provider != NULL;
	if (r->provider != NULL)
		m->credentials_expiry = aws_credentials_expiration(r->provider, &m->credentials_failures);
	metrics_publish(m);
}

void
replicate_check_slot(Replicator *r)
{
	SlotHealth	h;
	MetricsState *m = &r->mstate;

	r->in_health_check = true;
	r->last_health = now_seconds();
	if (slot_check_health(&r->monitor, &h))
	{
		m->has_slot_state = true;
		m->retained_wal = h.retained;
		strlcpy(m->wal_status, h.wal_status, sizeof(m->wal_status));
		m->has_safe_wal_size = h.has_safe_size;
		m->safe_wal_size = h.safe_wal_size;
		if (opts.max_retained_wal > 0 && h.retained > opts.max_retained_wal)
			m->retained_wal_warnings++;
		replicate_publish_metrics(r, true);
	}
	r->in_health_check = false;
}

/* ----------------------------------------------------------------
 * The stream loop
 * ----------------------------------------------------------------
 */

/* SIGHUP: the AWS credentials are read again (files, token files, roles). */
static void
reload_credentials(Replicator *r)
{
	*r->reload = 0;
	if (r->provider == NULL)
		return;
	aws_credentials_reload(r->provider);
	log_info("SIGHUP: the AWS credentials will be read again from %s",
			 aws_credentials_describe(r->provider));
}

/* Confirms what is delivered; reports at the interval anyway.  False: connection lost. */
static bool
confirm(Replicator *r, ReplConn *rc, double now)
{
	uint64_t	lsn = replicate_confirmable(r);
	bool		periodic = opts.status_interval > 0 && now - r->last_status >= opts.status_interval;

	if (lsn <= r->pos.confirmed && !periodic)
		return true;
	r->pos.confirmed = lsn;

	/*
	 * With nothing held, ask for a keepalive: its WAL end lets the confirmed
	 * position (and so the slot's restart_lsn) move on while the captured
	 * tables are idle and others are written.
	 */
	if (!stream_send_feedback(rc, r->pos.confirmed, periodic && target_held_rows(r->target) == 0))
		return false;
	r->last_status = now;
	return true;
}

/*
 * What the loop does between messages: deliveries, confirmation, metrics,
 * the slot's health, heartbeats.  Returns LOOP_DONE to go on reading (or
 * to end, when *stop is set), else why the loop ends.
 */
static LoopResult
housekeeping(Replicator *r, ReplConn *rc, double now, bool *stop)
{
	*stop = false;
	notify_watchdog();
	log_set_lsn(r->pos.confirmed);
	if (*r->reload)
		reload_credentials(r);
	if (!target_poll(r->target, now))
	{
		*stop = true;
		return *r->stop ? LOOP_DONE : LOOP_FATAL;
	}
	if (!confirm(r, rc, now))
		return LOOP_RECONNECT;
	/* Backfills: the chunk acknowledged is recorded, the next one read. */
	if (!backfill_tick(r->backfill))
	{
		*stop = true;
		return LOOP_FATAL;
	}
	replicate_publish_metrics(r, false);
	if (now - r->last_health >= HEALTH_INTERVAL(opts))
	{
		uint64_t	end = Max(r->pos.processed, r->pos.last_txn);

		replicate_check_slot(r);
		notify_status(false, "streaming slot %s: confirmed %X/%X, %llu bytes behind, %d rows held",
					  opts.slot, LSN_FORMAT_ARGS(r->pos.confirmed),
					  (unsigned long long) (end > r->pos.confirmed ? end - r->pos.confirmed : 0),
					  target_held_rows(r->target));
	}

	/*
	 * --heartbeat: nothing arrived for that long, so write a change the slot
	 * decodes; confirming past it moves restart_lsn on.
	 */
	if (opts.heartbeat > 0 && now - r->last_row_at >= opts.heartbeat &&
		now - r->last_heartbeat >= opts.heartbeat)
	{
		if (slot_heartbeat(&r->monitor))
			r->mstate.heartbeats++;
		r->last_heartbeat = now;
	}
	/* --endpos: everything up to it has been received. */
	if (opts.endpos != 0 && r->pos.processed >= opts.endpos)
		*stop = true;
	return LOOP_DONE;
}

/* Nothing ready: waits for the socket, a delivery, a chunk read, or the nearest deadline. */
static bool
wait_for_work(Replicator *r, ReplConn *rc, double now)
{
	double		wait = opts.status_interval > 0 ? r->last_status + opts.status_interval - now : 60;
	double		due = target_next_due(r->target);
	int			wake[2];

	if (due > 0)
		wait = Min(wait, due - now);
	if (opts.heartbeat > 0)
		wait = Min(wait, Max(r->last_row_at, r->last_heartbeat) + opts.heartbeat - now);
	/* A delivery done, or a backfill chunk read, wakes the loop. */
	wake[0] = target_wake_fd(r->target);
	wake[1] = backfill_wake_fd(r->backfill);
	return stream_wait(rc, Max(wait, 0), wake, 2) >= 0;
}

/*
 * A data message: its rows (with --pack-bytes, one message carries rows of
 * one transaction, one per line; a row never holds a newline).
 */
static LoopResult
handle_data(Replicator *r, ReplConn *rc, const StreamMessage *msg, bool *stop)
{
	const char *row = msg->data;
	const char *end = msg->data + msg->len;
	RowResult	rr;

	*stop = false;
	r->last_row_at = now_seconds();
	for (;;)
	{
		const char *nl = memchr(row, '\n', end - row);

		rr = handle_row(r, row, (nl ? nl : end) - row, msg->data_start, false);
		if (rr != ROW_OK || nl == NULL)
			break;
		row = nl + 1;
	}
	if (rr == ROW_FATAL)
	{
		/* Deliver and confirm what came before, then stop. */
		if (replicate_flush(r))
		{
			r->pos.confirmed = replicate_confirmable(r);
			stream_send_feedback(rc, r->pos.confirmed, false);
		}
		*stop = true;
		return LOOP_FATAL;
	}
	if (rr == ROW_PAST_ENDPOS)
	{
		/*
		 * Every transaction before this one is complete.  Confirm up to the
		 * last one shipped, not to --endpos: this row's commit record may
		 * begin before --endpos, and confirming past its start would skip it
		 * for good on the next run.
		 */
		r->pos.processed = Max(r->pos.processed, r->pos.last_txn);
		*stop = true;
	}
	return LOOP_DONE;
}

/* A keepalive: the server's WAL end, and a reply when it asks for one. */
static bool
handle_keepalive(Replicator *r, ReplConn *rc, const StreamMessage *msg)
{
	if (msg->wal_end > r->pos.processed)
		r->pos.processed = msg->wal_end;
	if (!msg->reply_requested)
		return true;
	r->pos.confirmed = replicate_confirmable(r);
	if (!stream_send_feedback(rc, r->pos.confirmed, false))
		return false;
	r->last_status = now_seconds();
	return true;
}

/* On a clean end, delivers what is left and confirms it. */
static LoopResult
finish_stream(Replicator *r, ReplConn *rc, LoopResult result)
{
	if (result == LOOP_DONE)
	{
		if (!replicate_flush(r))
			result = *r->stop ? LOOP_DONE : LOOP_FATAL;
		else
		{
			r->pos.confirmed = replicate_confirmable(r);
			stream_send_feedback(rc, r->pos.confirmed, false);
		}
		if (!*r->stop || target_held_rows(r->target) == 0)
			stream_end(rc);
	}
	r->tick_rc = NULL;
	r->mstate.connected = false;
	replicate_publish_metrics(r, true);
	return result;
}

LoopResult
replicate_stream(Replicator *r, ReplConn *rc)
{
	LoopResult	result = LOOP_DONE;

	r->pos.processed = r->pos.last_txn = r->pos.prev_txn = r->pos.confirmed;
	r->streaming_grace = true;
	r->last_status = 0;
	r->last_row_at = now_seconds();
	r->tick_rc = rc;
	r->mstate.connected = true;
	for (;;)
	{
		StreamMessage msg;
		bool		stop;
		int			n;

		if (*r->stop)
		{
			notify_stopping();
			break;
		}
		result = housekeeping(r, rc, now_seconds(), &stop);
		if (result != LOOP_DONE || stop)
			break;
		n = stream_next_message(rc, &msg);
		if (n < 0)
			result = LOOP_RECONNECT;
		else if (n == 0)
			result = wait_for_work(r, rc, now_seconds()) ? LOOP_DONE : LOOP_RECONNECT;
		else if (msg.type == 'k')
			result = handle_keepalive(r, rc, &msg) ? LOOP_DONE : LOOP_RECONNECT;
		else if (msg.type == 'w')
		{
			result = handle_data(r, rc, &msg, &stop);
			if (stop)
				break;
		}
		if (result != LOOP_DONE)
			break;
	}
	return finish_stream(r, rc, result);
}

/* ----------------------------------------------------------------
 * The initial load
 * ----------------------------------------------------------------
 */

static bool
load_row(void *arg, const char *row, size_t len, uint64_t lsn)
{
	Replicator *r = arg;

	replicate_publish_metrics(r, false);
	notify_watchdog();
	notify_status(false, "initial load: %llu of ~%llu rows", (unsigned long long) load_rows_done,
				  (unsigned long long) load_rows_estimate);
	return handle_row(r, row, len, lsn, true) == ROW_OK;
}

static bool
load_flush(void *arg)
{
	Replicator *r = arg;

	/* Delivered; then what killed shippers left of earlier loads goes. */
	return replicate_flush(r) && target_sweep_loads(r->target, r->stop) == SHIP_OK;
}

bool
replicate_load(Replicator *r, PGconn *sql, const LoadParams *lp)
{
	r->pos.last_txn = r->pos.prev_txn = r->pos.processed = 0;
	if (!initial_load(sql, lp, load_row, load_flush, r, r->stop))
		return false;
	/* Every load row is delivered: stream from the consistent point. */
	r->pos.processed = lp->consistent_lsn;
	r->pos.confirmed = lp->consistent_lsn;
	return true;
}

void
replicate_finish(Replicator *r, int exit_code)
{
	if (opts.verbosity > 0 || (opts.verbosity == 0 && exit_code == 0 && opts.endpos != 0))
	{
		MetricsState m;

		memset(&m, 0, sizeof(m));
		target_stats(r->target, &m);
		metrics_sum_targets(&m);
		log_info("shipped %llu rows, confirmed up to %X/%X",
				 (unsigned long long) m.rows, LSN_FORMAT_ARGS(r->pos.confirmed));
	}
	if (opts.verbosity > 0)
		target_summary(r->target);
	target_destroy(r->target);
	r->target = NULL;
	slot_monitor_close(&r->monitor);
}
