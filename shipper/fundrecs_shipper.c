/*-------------------------------------------------------------------------
 *
 * fundrecs_shipper.c
 *	  Reads a fundrecs_decoder replication slot over the streaming
 *	  replication protocol and ships every row to a Kinesis data stream
 *	  (or to stdout).  The flush position confirmed to PostgreSQL moves only
 *	  past whole transactions whose rows have all been acknowledged.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/select.h>
#include <sys/time.h>
#include <unistd.h>

#include "aws_config.h"
#include "log.h"
#include "common/string.h"
#include "dispatch.h"
#include "getopt_long.h"
#include "kinesis.h"
#include "libpq-fe.h"
#include "load.h"
#include "metrics.h"
#include "monitor.h"
#include "notify.h"
#include "options.h"
#include "retry.h"
#include "rowscan.h"
#include "s3.h"
#include "stream.h"

/* The same stream error at the same position this often: exit 1. */
#define MAX_SAME_STREAM_FAILURES 3


/* Set by signal handlers, checked by the loops. */
static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t stop_now = 0;	/* a second signal */
static volatile sig_atomic_t reload_requested = 0;	/* SIGHUP */
static AwsCredentialProvider *aws_provider = NULL;

/*
 * Set by the tick when what is in flight must be abandoned: at once during
 * start-up and the initial load, after --shutdown-timeout while streaming.
 * Deliveries watch this flag, not stop_requested.
 */
static volatile sig_atomic_t delivery_abort = 0;
static bool streaming_grace = false;
static double shutdown_deadline = 0;

/* The thread that reads the slot (the tick's work is done there). */
static pthread_t main_thread;

/* The streaming connection, kept alive by the tick during deliveries. */
static ReplConn *tick_rc = NULL;
static double last_status = 0;


/* Delivery positions (LSNs). */
typedef struct Positions
{
	uint64_t	confirmed;		/* last flush position reported */
	uint64_t	last_txn;		/* commit LSN of the newest row received */
	uint64_t	prev_txn;		/* commit LSN of the transaction before it */
	uint64_t	processed;		/* server's walEnd from keepalives */
} Positions;

static Positions pos;
static ReplConnParams params;	/* how to connect */
static double last_health = 0;	/* when the slot's state was last read */
static bool in_health_check = false;	/* (the tick runs during one's waits) */
static double last_row_at = 0;	/* when a row last arrived from the slot */
static double last_heartbeat = 0;	/* when --heartbeat last wrote one */
static MetricsState mstate;		/* what /metrics shows, published by publish_metrics */
static double last_publish = 0;

static double parse_commit_time(const char *s, size_t len);
static void publish_metrics(bool force);
static void check_slot_health(void);
static KinesisTarget kinesis;
static S3Target s3;
static PQExpBufferData pkey_buf;

static void
sigexit_handler(SIGNAL_ARGS)
{
	if (stop_requested)
		stop_now = 1;
	stop_requested = 1;
}

/* SIGHUP: the AWS credentials are read again (files, token files, roles). */
static void
sighup_handler(SIGNAL_ARGS)
{
	reload_requested = 1;
}


/* ----------------------------------------------------------------
 * The batch (dispatch.c holds it)
 * ----------------------------------------------------------------
 */

/* Rows per batch when aggregating: bounded by bytes long before this. */
#define AGGREGATE_BATCH_ROWS 20000

/*
 * Batches in flight at once (at most --max-in-flight): while one waits for
 * its answer, the next, sharing no partition key with it, need not wait
 * (bench/aggregate compares one lane, --max-in-flight 1, with two).
 */
#define DELIVERY_LANES 2

/*
 * The position that may be confirmed now: everything before the first
 * unacknowledged row's transaction, or, with nothing pending, the newest
 * transaction once the server has shown it complete.
 */
static uint64_t
confirmable_lsn(void)
{
	uint64_t	lsn;

	if (dispatch_oldest_safe_lsn(&lsn))
		 /* lsn set */ ;
	else if (pos.processed >= pos.last_txn)
		lsn = Max(pos.processed, pos.last_txn);
	else
		lsn = pos.prev_txn;
	/* Rows held for S3 are not acknowledged until their objects are written. */
	if (opts.ship_s3 && s3_has_rows(&s3))
		lsn = Min(lsn, s3.safe_lsn);
	/* Never past --endpos: what follows it is for the next run. */
	if (opts.endpos != 0)
		lsn = Min(lsn, opts.endpos);
	return Max(lsn, pos.confirmed);
}

/*
 * The tick, run at least once a second while a delivery waits (see
 * retry.h).  It keeps the replication connection alive: without status
 * updates the server ends the connection after wal_sender_timeout, and
 * everything since the last confirmation would be shipped again.  The
 * position sent is the one already confirmed.  It also decides when a stop
 * abandons the delivery in flight.
 */
static bool
shipper_tick(void)
{
	double		now = now_seconds();

	/*
	 * The delivery thread only learns whether to give up; the connection
	 * and the stop decisions are the main thread's.
	 */
	if (!pthread_equal(pthread_self(), main_thread))
		return delivery_abort != 0;
	notify_watchdog();

	/*
	 * The metrics and the slot's state keep their cadence while deliveries
	 * wait: an outage is when an on-call engineer reads them (they showed
	 * 0 bytes retained while the slot held 65 MB).
	 */
	if (tick_rc != NULL && !in_health_check &&
		now - last_health >= (opts.status_interval > 0 ? opts.status_interval : 10))
	{
		in_health_check = true;
		check_slot_health();
		in_health_check = false;
	}
	publish_metrics(false);

	if (tick_rc != NULL)
	{
		int			timeout_ms = stream_sender_timeout_ms(tick_rc);
		double		every = opts.status_interval > 0 ? opts.status_interval : 10;

		if (timeout_ms > 0)
			every = Min(every, timeout_ms / 3000.0);
		if (now - last_status >= every)
		{
			if (stream_send_feedback(tick_rc, pos.confirmed, false))
				last_status = now;
			else
				tick_rc = NULL; /* the loop will see the connection is gone */
		}
	}
	if (stop_requested && !delivery_abort)
	{
		if (!streaming_grace || stop_now)
		{
			delivery_abort = 1;
			aws_credentials_shutdown();
		}
		else
		{
			if (shutdown_deadline == 0)
				shutdown_deadline = now + opts.shutdown_timeout;
			if (now >= shutdown_deadline)
			{
				log_warning("--shutdown-timeout (%d s) reached with deliveries in flight",
							   opts.shutdown_timeout);
				delivery_abort = 1;
				/* A delivery waiting for AWS credentials waits no more. */
				aws_credentials_shutdown();
			}
		}
	}
	return delivery_abort != 0;
}

/* ----------------------------------------------------------------
 * Rows
 * ----------------------------------------------------------------
 */

/*
 * The S3 partition of a row: its route, with anything but letters, digits,
 * '_', '-' and '.' replaced, or "_unrouted" when it has none.
 */
static void
row_route(const RowFields *f, char *out, size_t outlen)
{
	size_t		n = 0;

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
s3_flush_now(void)
{
	ShipResult	r = s3_flush(&s3, &delivery_abort);

	if (r == SHIP_STOPPED)
		log_warning("stopping with S3 objects unwritten; their rows will be shipped again on restart");
	return r == SHIP_OK;
}

/* Delivers everything held for every target. */
static bool
flush_all(void)
{
	if (!dispatch_flush(true))
		return false;
	if (opts.ship_s3 && !s3_flush_now())
		return false;
	return true;
}

typedef enum RowResult
{
	ROW_OK,
	ROW_PAST_ENDPOS,
	ROW_FATAL
} RowResult;

/* The commit LSN of the last row, and the row's ordinal among its rows. */
static uint64_t row_seq_lsn = 0;
static uint32_t row_seq = 0;

/* The position of the last row without a key, and its ordinal there. */
static uint64_t keyless_position = 0;
static uint32_t keyless_ordinal = 0;

static RowResult
handle_row(const char *row, size_t len, uint64_t change_lsn, bool is_load)
{
	RowFields f;
	uint64_t	commit_lsn;
	size_t		record_bytes;
	bool		is_message;
	uint32_t	key_hash;

	if (!rowscan(row, len, &f))
		f.schema.start = f.table.start = f.prefix.start = NULL;
	/* A message row (plugin option include_messages): no table, a prefix. */
	is_message = f.schema.start == NULL && f.prefix.start != NULL && f.prefix.start[0] == '"';
	if (!is_message &&
		(f.schema.start == NULL || f.table.start == NULL ||
		 f.schema.start[0] != '"' || f.table.start[0] != '"'))
	{
		log_error("row at %X/%X is not a fundrecs_decoder row: %.*s",
					 (uint32_t) (change_lsn >> 32), (uint32_t) change_lsn,
					 (int) Min(len, 200), row);
		log_error_hint("Was the slot created with the plugin fundrecs_decoder?");
		return ROW_FATAL;
	}
	if (f.commit_lsn.start == NULL ||
		!rowscan_parse_lsn(f.commit_lsn.start, f.commit_lsn.len, &commit_lsn))
	{
		log_error("row at %X/%X has no commit_lsn",
					 (uint32_t) (change_lsn >> 32), (uint32_t) change_lsn);
		log_error_hint("Do not pass -o include_lsn=false to the shipper.");
		return ROW_FATAL;
	}

	if (opts.endpos != 0 && commit_lsn > opts.endpos && !is_load)
		return ROW_PAST_ENDPOS;

	/* A new transaction: the previous one is complete. */
	if (commit_lsn != pos.last_txn)
	{
		if (commit_lsn < pos.last_txn)
		{
			log_error("rows arrived out of commit order (%X/%X after %X/%X)",
						 (uint32_t) (commit_lsn >> 32), (uint32_t) commit_lsn,
						 (uint32_t) (pos.last_txn >> 32), (uint32_t) pos.last_txn);
			return ROW_FATAL;
		}
		pos.prev_txn = pos.last_txn;
		pos.last_txn = commit_lsn;
	}

	/* Only Kinesis needs a partition key. */
	if (opts.ship_kinesis && is_message)
		kinesis_message_partition_key(f.prefix.start, f.prefix.len, &pkey_buf);
	else if (opts.ship_kinesis)
	{
		/* Rows without a key are told apart by position and ordinal there. */
		if (f.key.start == NULL)
		{
			keyless_ordinal = change_lsn == keyless_position ? keyless_ordinal + 1 : 0;
			keyless_position = change_lsn;
		}
		kinesis_partition_key(f.schema.start, f.schema.len, f.table.start, f.table.len,
							  f.key.start, f.key.len, change_lsn, keyless_ordinal, &pkey_buf);
	}
	else
		resetPQExpBuffer(&pkey_buf);

	record_bytes = len + 1 + pkey_buf.len;
	/* Aggregated, a row also carries the record's framing (about 64 bytes). */
	if (opts.ship_kinesis && record_bytes + (opts.aggregate ? 64 : 0) > KINESIS_MAX_RECORD_BYTES)
	{
		if (is_message)
		{
			log_error("message at %X/%X with prefix %.*s is %zu bytes, over Kinesis's limit of %d bytes per record",
						 (uint32_t) (change_lsn >> 32), (uint32_t) change_lsn,
						 (int) f.prefix.len, f.prefix.start,
						 record_bytes, KINESIS_MAX_RECORD_BYTES);
			log_error_detail("Nothing at or after this message's transaction (commit %X/%X) is confirmed.",
								(uint32_t) (commit_lsn >> 32), (uint32_t) commit_lsn);
			log_error_hint("Leave its prefix out of the plugin option message_prefixes, ship to S3 alone, or write smaller messages.");
			return ROW_FATAL;
		}
		log_error("row at %X/%X of table %.*s.%.*s is %zu bytes, over Kinesis's limit of %d bytes per record",
					 (uint32_t) (change_lsn >> 32), (uint32_t) change_lsn,
					 (int) f.schema.len - 2, f.schema.start + 1,
					 (int) f.table.len - 2, f.table.start + 1,
					 record_bytes, KINESIS_MAX_RECORD_BYTES);
		log_error_detail("Nothing at or after this row's transaction (commit %X/%X) is confirmed.",
							(uint32_t) (commit_lsn >> 32), (uint32_t) commit_lsn);
		log_error_hint("Leave the large column out with the plugin option exclude_columns=%.*s.%.*s.COLUMN, ship to S3 alone (--target s3 has no per-row limit), or shrink the row.",
						  (int) f.schema.len - 2, f.schema.start + 1,
						  (int) f.table.len - 2, f.table.start + 1);
		return ROW_FATAL;
	}

	/* The row's ordinal in its transaction (or load): its place in the stream. */
	row_seq = commit_lsn == row_seq_lsn ? row_seq + 1 : 0;
	row_seq_lsn = commit_lsn;

	if (opts.ship_s3)
	{
		char		route[128];
		char		dt[11];
		S3Position	spos = {commit_lsn, row_seq};

		if (is_message)
			strlcpy(route, "_messages", sizeof(route));
		else
			row_route(&f, route, sizeof(route));
		row_date(&f, dt);
		/* Skipped when the bucket has it already (shipped before a crash). */
		if (s3_add(&s3, route, dt, row, len, spos, pos.prev_txn, &delivery_abort) == S3_FAILED)
			return ROW_FATAL;
		if (s3.buffered >= (size_t) Min(opts.flush_bytes, opts.max_buffer_bytes) &&
			!s3_flush_now())
			return ROW_FATAL;
		if (!opts.ship_kinesis)
			return ROW_OK;
	}

	/* Room for it: in the batch, or among the rows waiting for their keys. */
	key_hash = opts.ship_kinesis ? dispatch_key_hash(pkey_buf.data, pkey_buf.len) : 0;
	if (!dispatch_make_room(record_bytes))
		return ROW_FATAL;
	/* The commit time serves only the lag metric: parsed only when it is served. */
	dispatch_add(row, len, pkey_buf.data, pkey_buf.len, key_hash, commit_lsn, pos.prev_txn,
				 metrics_enabled() ? parse_commit_time(f.commit_time.start, f.commit_time.len) : 0);
	return ROW_OK;
}

/* ----------------------------------------------------------------
 * Metrics
 * ----------------------------------------------------------------
 */

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
	int			y,
				m;
	int64_t		days;

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
	{
		int64_t		era = (y >= 0 ? y : y - 399) / 400;
		int64_t		yoe = y - era * 400;
		int64_t		doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + f[2] - 1;
		int64_t		doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

		days = era * 146097 + doe - 719468;
	}
	return (double) days * 86400 + f[3] * 3600 + f[4] * 60 + f[5] + frac;
}

/* Publishes the shipper's state to /metrics: at most every 100 ms unless forced. */
static void
publish_metrics(bool force)
{
	double		now;
	KinesisTarget ks;

	if (!metrics_enabled())
		return;
	now = now_seconds();
	if (!force && now - last_publish < 0.1)
		return;
	last_publish = now;
	dispatch_kinesis_stats(&ks);
	mstate.rows = dispatch_rows_shipped();
	mstate.bytes = dispatch_bytes_shipped();
	mstate.kinesis_records = ks.records_sent;
	mstate.kinesis_calls = ks.calls;
	mstate.kinesis_retried_calls = ks.retried_calls;
	mstate.kinesis_retried_records = ks.retried_records;
	mstate.kinesis_throttled_records = ks.throttled_records;
	if (opts.ship_s3)
	{
		mstate.s3_objects = s3.objects_put;
		mstate.s3_bytes = s3.bytes_put;
	}
	mstate.load_rows = load_rows_done;
	mstate.load_estimate = load_rows_estimate;
	mstate.confirmed_lsn = pos.confirmed;
	mstate.wal_end = Max(pos.processed, pos.last_txn);
	mstate.oldest_pending_commit = dispatch_oldest_commit_time();
	mstate.last_delivery = dispatch_last_delivery();
	mstate.held_rows = dispatch_held_rows();
	mstate.held_bytes = dispatch_held_bytes();
	mstate.deliveries_in_flight = dispatch_in_flight();
	metrics_publish(&mstate);
}

/* ----------------------------------------------------------------
 * The slot's health
 * ----------------------------------------------------------------
 */

static const char *
pretty_bytes(int64_t bytes, char *buf, size_t len)
{
	if (bytes >= 10LL * 1024 * 1024 * 1024)
		snprintf(buf, len, "%lld GB", (long long) (bytes >> 30));
	else if (bytes >= 10LL * 1024 * 1024)
		snprintf(buf, len, "%lld MB", (long long) (bytes >> 20));
	else if (bytes >= 10LL * 1024)
		snprintf(buf, len, "%lld kB", (long long) (bytes >> 10));
	else
		snprintf(buf, len, "%lld bytes", (long long) bytes);
	return buf;
}

/*
 * Reads the slot's state on a normal connection and acts on it: a slot
 * that max_slot_wal_keep_size has invalidated (wal_status "lost") is a
 * fatal error, never a silent gap; one about to be ("unreserved") and one
 * holding back more than --max-retained-wal are warned about.  Exits 1 on
 * a lost slot.
 */
static void
check_slot_health(void)
{
	static char last_status[16] = "";
	static double warned_retained_at = 0;
	SlotHealth	h;
	char		b1[32],
				b2[32],
				b3[32];
	double		now = now_seconds();

	last_health = now;
	if (!slot_health_read(&params, opts.slot, &h) || !h.found)
		return;
	mstate.has_slot_state = true;
	mstate.retained_wal = h.retained;
	strlcpy(mstate.wal_status, h.wal_status, sizeof(mstate.wal_status));
	mstate.has_safe_wal_size = h.has_safe_size;
	mstate.safe_wal_size = h.safe_wal_size;
	publish_metrics(true);

	if (strcmp(h.wal_status, "lost") == 0)
	{
		log_error("replication slot \"%s\" has been invalidated: the server removed WAL it still needed",
					 opts.slot);
		log_error_detail("Its WAL went past max_slot_wal_keep_size while the slot was behind (confirmed up to %X/%X). The changes after that position are gone from the server, so shipping cannot go on without a gap.",
							(uint32_t) (h.confirmed_lsn >> 32), (uint32_t) h.confirmed_lsn);
		log_error_hint("Run the shipper once with --resync: it drops the slot, creates it again and ships a reset marker row, then every row as a new initial load (consumers drop what they hold from before the marker). To keep it from happening again, raise max_slot_wal_keep_size and watch --max-retained-wal.");
		exit(EXIT_PERMANENT);
	}
	if (strcmp(h.wal_status, "unreserved") == 0 && strcmp(last_status, "unreserved") != 0)
		log_warning("replication slot \"%s\" holds more WAL than max_slot_wal_keep_size allows (%s retained): the next checkpoint may invalidate it unless the shipper catches up",
					   opts.slot, pretty_bytes(h.retained, b1, sizeof(b1)));
	strlcpy(last_status, h.wal_status, sizeof(last_status));

	if (opts.max_retained_wal > 0)
	{
		if (h.retained > opts.max_retained_wal)
		{
			/* Once a minute while it lasts. */
			if (warned_retained_at == 0 || now - warned_retained_at >= 60)
			{
				if (h.has_safe_size)
					log_warning("replication slot \"%s\" retains %s of WAL, over --max-retained-wal (%s); %s more before max_slot_wal_keep_size invalidates it",
								   opts.slot, pretty_bytes(h.retained, b1, sizeof(b1)),
								   pretty_bytes(opts.max_retained_wal, b2, sizeof(b2)),
								   pretty_bytes(h.safe_wal_size, b3, sizeof(b3)));
				else
					log_warning("replication slot \"%s\" retains %s of WAL, over --max-retained-wal (%s)",
								   opts.slot, pretty_bytes(h.retained, b1, sizeof(b1)),
								   pretty_bytes(opts.max_retained_wal, b2, sizeof(b2)));
				warned_retained_at = now;
			}
			mstate.retained_wal_warnings++;
		}
		else if (warned_retained_at != 0)
		{
			log_info("replication slot \"%s\" retains %s of WAL, under --max-retained-wal again",
						opts.slot, pretty_bytes(h.retained, b1, sizeof(b1)));
			warned_retained_at = 0;
		}
	}
}

/* ----------------------------------------------------------------
 * Main loop
 * ----------------------------------------------------------------
 */

typedef enum LoopResult
{
	LOOP_DONE,					/* endpos or stop: exit 0 */
	LOOP_RECONNECT,				/* connection lost */
	LOOP_FATAL					/* exit 1 */
} LoopResult;

static LoopResult
stream_loop(ReplConn *rc)
{
	LoopResult	result = LOOP_DONE;

	last_status = 0;
	last_row_at = now_seconds();
	tick_rc = rc;
	mstate.connected = true;

	for (;;)
	{
		double		now = now_seconds();
		double		wait;
		double		first_at;
		int			nfill;
		StreamMessage msg;
		int			r;

		if (stop_requested)
		{
			notify_stopping();
			break;
		}
		notify_watchdog();
		log_set_lsn(pos.confirmed);
		if (reload_requested)
		{
			reload_requested = 0;
			if (aws_provider != NULL)
			{
				aws_credentials_reload(aws_provider);
				log_info("SIGHUP: the AWS credentials will be read again from %s",
						 aws_credentials_describe(aws_provider));
			}
		}

		/* A delivery that finished: its rows may now be confirmed. */
		if (!dispatch_poll())
		{
			result = stop_requested ? LOOP_DONE : LOOP_FATAL;
			break;
		}

		/*
		 * A partial batch waits no longer than the linger time, unless it
		 * cannot go at once (every lane busy, or one holds an earlier
		 * version of one of its keys): then it keeps filling and goes when
		 * it can, so the slower the calls, the more rows each carries.
		 */
		nfill = dispatch_filling(&first_at);
		if (nfill > 0 && dispatch_can_send() && now - first_at >= opts.linger_ms / 1000.0)
		{
			if (!dispatch_flush(false))
			{
				result = stop_requested ? LOOP_DONE : LOOP_FATAL;
				break;
			}
			nfill = 0;
		}

		if (opts.ship_s3 && s3_has_rows(&s3) && now - s3.first_at >= opts.flush_seconds)
		{
			if (!s3_flush_now())
			{
				result = stop_requested ? LOOP_DONE : LOOP_FATAL;
				break;
			}
		}

		/* Confirm what is acknowledged; report at the interval anyway. */
		{
			uint64_t	lsn = confirmable_lsn();

			bool		periodic = opts.status_interval > 0 && now - last_status >= opts.status_interval;

			if (lsn > pos.confirmed || periodic)
			{
				pos.confirmed = lsn;

				/*
				 * With nothing held, ask for a keepalive: its WAL end lets the
				 * confirmed position (and so the slot's restart_lsn) move on
				 * while the captured tables are idle and others are written.
				 */
				if (!stream_send_feedback(rc, pos.confirmed, periodic && dispatch_held_rows() == 0))
				{
					result = LOOP_RECONNECT;
					break;
				}
				last_status = now;
			}
		}

		publish_metrics(false);

		/* The slot's state, at the status interval. */
		if (now - last_health >= (opts.status_interval > 0 ? opts.status_interval : 10))
		{
			uint64_t	end = Max(pos.processed, pos.last_txn);

			check_slot_health();
			notify_status(false, "streaming slot %s: confirmed %X/%X, %llu bytes behind, %d rows held",
						  opts.slot, (uint32_t) (pos.confirmed >> 32), (uint32_t) pos.confirmed,
						  (unsigned long long) (end > pos.confirmed ? end - pos.confirmed : 0),
						  dispatch_held_rows());
		}

		/*
		 * --heartbeat: nothing arrived for that long, so write a change the
		 * slot decodes; confirming past it moves restart_lsn on.
		 */
		if (opts.heartbeat > 0 && now - last_row_at >= opts.heartbeat &&
			now - last_heartbeat >= opts.heartbeat)
		{
			if (slot_heartbeat(&params))
				mstate.heartbeats++;
			last_heartbeat = now;
		}

		/* --endpos: everything up to it has been received. */
		if (opts.endpos != 0 && pos.processed >= opts.endpos)
			break;

		r = stream_next_message(rc, &msg);
		if (r < 0)
		{
			result = LOOP_RECONNECT;
			break;
		}
		if (r == 0)
		{
			/* Nothing ready: wait for the socket or the nearest deadline. */
			wait = opts.status_interval > 0 ? last_status + opts.status_interval - now : 60;
			if (nfill > 0 && dispatch_can_send())
				wait = Min(wait, first_at + opts.linger_ms / 1000.0 - now);
			if (opts.ship_s3 && s3_has_rows(&s3))
				wait = Min(wait, s3.first_at + opts.flush_seconds - now);
			if (opts.heartbeat > 0)
				wait = Min(wait, Max(last_row_at, last_heartbeat) + opts.heartbeat - now);
			if (wait < 0)
				wait = 0;
			if (stream_wait(rc, wait, dispatch_busy() ? dispatch_wake_fd() : -1) < 0)
			{
				result = LOOP_RECONNECT;
				break;
			}
			continue;
		}

		if (msg.type == 'k')
		{
			if (msg.wal_end > pos.processed)
				pos.processed = msg.wal_end;
			if (msg.reply_requested)
			{
				pos.confirmed = confirmable_lsn();
				if (!stream_send_feedback(rc, pos.confirmed, false))
				{
					result = LOOP_RECONNECT;
					break;
				}
				last_status = now_seconds();
			}
		}
		else if (msg.type == 'w')
		{
			RowResult rr;
			const char *row = msg.data;
			const char *end = msg.data + msg.len;

			last_row_at = now_seconds();

			/*
			 * With --pack-bytes, one message carries rows of one transaction,
			 * one per line (a row never holds a newline).
			 */
			for (;;)
			{
				const char *nl = memchr(row, '\n', end - row);

				rr = handle_row(row, (nl ? nl : end) - row, msg.data_start, false);
				if (rr != ROW_OK || nl == NULL)
					break;
				row = nl + 1;
			}

			if (rr == ROW_FATAL)
			{
				/* Deliver and confirm what came before, then stop. */
				if (flush_all())
				{
					pos.confirmed = confirmable_lsn();
					stream_send_feedback(rc, pos.confirmed, false);
				}
				result = LOOP_FATAL;
				break;
			}
			if (rr == ROW_PAST_ENDPOS)
			{
				/*
				 * Every transaction before this one is complete.  Confirm up
				 * to the last one shipped, not to --endpos: this row's commit
				 * record may begin before --endpos, and confirming past its
				 * start would skip it for good on the next run.
				 */
				pos.processed = Max(pos.processed, pos.last_txn);
				break;
			}
		}
	}

	/* On a clean end, deliver what is left and confirm it. */
	if (result == LOOP_DONE)
	{
		if (!flush_all())
			result = stop_requested ? LOOP_DONE : LOOP_FATAL;
		else
		{
			pos.confirmed = confirmable_lsn();
			stream_send_feedback(rc, pos.confirmed, false);
		}
		if (!stop_requested || dispatch_held_rows() == 0)
			stream_end(rc);
	}
	tick_rc = NULL;
	mstate.connected = false;
	publish_metrics(true);
	return result;
}

/* ----------------------------------------------------------------
 * Initial load
 * ----------------------------------------------------------------
 */

static bool
load_row(const char *row, size_t len, uint64_t lsn)
{
	publish_metrics(false);
	notify_watchdog();
	notify_status(false, "initial load: %llu of ~%llu rows", (unsigned long long) load_rows_done,
				  (unsigned long long) load_rows_estimate);
	return handle_row(row, len, lsn, true) == ROW_OK;
}

/*
 * Before anything is shipped: plugin options that would make the slot
 * silently emit nothing (a "tables" entry matching no table, a missing
 * orders table) are a configuration error, exit 2, unless
 * --allow-no-tables.  Asks the extension (1.2), which runs the plugin's own
 * checks; skipped without it.  Bad options fail here too, with the
 * plugin's message.
 */
static void
check_plugin_options(const ReplConnParams *params)
{
	PGconn	   *conn = db_connect(params, false);
	char	   *options;
	const char *values[1];
	PGresult   *res;

	if (conn == NULL)
		exit(failure_exit_code());
	options = options_array(opts.plugin_options, opts.noptions);
	values[0] = options;
	res = PQexecParams(conn, "SELECT unnest(fundrecs.option_problems($1::text[]))",
					   1, NULL, values, NULL, NULL, 0);
	free(options);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		/* No extension, or one older than 1.2: the plugin warns instead. */
		if (state && (strcmp(state, "42883") == 0 || strcmp(state, "3F000") == 0))
		{
			if (opts.verbosity > 0)
				log_info("fundrecs extension 1.2 not in the database: plugin options not checked before starting");
		}
		else if (state && strncmp(state, "22", 2) == 0)
		{
			log_error("invalid plugin options: %s", PQresultErrorMessage(res));
			PQclear(res);
			PQfinish(conn);
			exit(2);
		}
		else if (state && strcmp(state, "42703") == 0)
		{
			log_error("%s", PQresultErrorMessage(res));
			PQclear(res);
			PQfinish(conn);
			exit(2);
		}
		else
			log_warning("could not check the plugin options: %s", PQerrorMessage(conn));
	}
	else if (PQntuples(res) > 0)
	{
		for (int i = 0; i < PQntuples(res); i++)
		{
			if (opts.allow_no_tables)
				log_warning("%s", PQgetvalue(res, i, 0));
			else
				log_error("%s", PQgetvalue(res, i, 0));
		}
		if (!opts.allow_no_tables)
		{
			log_error_detail("Changes of such tables would be confirmed without being shipped.");
			log_error_hint("Check the plugin options \"tables\" and \"orders_table\" (-o), or pass --allow-no-tables to start anyway.");
			PQclear(res);
			PQfinish(conn);
			exit(2);
		}
	}
	PQclear(res);
	PQfinish(conn);
}

/* The plugin option format=dms is set (the plugin refuses a repeated option). */
static bool
plugin_format_is_dms(void)
{
	bool		dms = false;

	for (int i = 0; i < opts.noptions; i++)
		if (strcmp(opts.plugin_options[2 * i], "format") == 0)
			dms = pg_strcasecmp(opts.plugin_options[2 * i + 1], "dms") == 0;
	return dms;
}

/*
 * Before streaming: create the slot when asked, and ship the rows that
 * exist at its consistent point.  A load found unfinished from an earlier
 * run is done again with a fresh slot.  Returns false on a fatal error.
 *
 * Unless --no-load, this runs holding the slot's load lock on *lockconn,
 * which the caller keeps open until streaming has started (see load.c).
 */
static bool
prepare_slot(ReplConn *rc, const ReplConnParams *params, PGconn **lockconn)
{
	PGconn	   *sql = NULL;
	bool		create = opts.create_slot;
	bool		created = false;
	bool		replaces_load = false;
	uint64_t	consistent = 0;
	char	   *snapshot = NULL;
	LoadStatus	status = LOAD_NONE;
	bool		ok = true;
	const char *server_version = NULL;

	*lockconn = NULL;
	if (opts.enable_failover && stream_server_version(rc, &server_version) < 170000)
	{
		log_error("--enable-failover needs PostgreSQL 17 or later; the server is %s",
				  server_version ? server_version : "older");
		log_error_hint("Leave out --enable-failover: on this version a standby has no copy of the slot, and a failover needs --resync.");
		retry_note_permanent();
		return false;
	}
	if (!opts.no_load)
	{
		LoadLockResult lr;

		if ((sql = db_connect(params, false)) == NULL)
			return false;
		lr = load_lock(sql, opts.slot, &stop_requested);
		if (lr != LOAD_LOCK_TAKEN)
		{
			PQfinish(sql);
			return false;
		}
		*lockconn = sql;
		status = load_status(sql, opts.slot);
		if (status == LOAD_ERROR)
			return false;
		if (status == LOAD_UNFINISHED)
		{
			uint64_t	old_lsn;
			int			old;

			/* We hold the lock: the loader of that slot is gone. */
			log_warning("the initial load of slot \"%s\" did not finish; loading again with a new slot",
						opts.slot);
			/* Its objects go first: the lake must not keep a partial copy. */
			old = opts.ship_s3 ? load_state_unfinished(sql, opts.slot, &old_lsn) : 0;
			if (old < 0 ||
				(old > 0 && s3_forget_load(&s3, old_lsn, &stop_requested) != SHIP_OK))
				return false;
			if (!drop_slot(sql, opts.slot))
				return false;
			create = true;
			replaces_load = true;
		}
		else if (status == LOAD_UNSUPPORTED && create)
		{
			log_error("the initial load needs the fundrecs extension, version 1.1 or later, in this database");
			log_error_hint("Run ALTER EXTENSION fundrecs UPDATE (or CREATE EXTENSION fundrecs), or pass --no-load.");
			return false;
		}
		else if (status == LOAD_FINISHED || opts.resync)
		{
			int			exists = slot_exists(sql, opts.slot);

			if (exists < 0)
				return false;
			if (opts.resync)
			{
				/* Whatever the slot had confirmed is replaced by the new load. */
				if (exists)
				{
					log_info("dropping replication slot \"%s\" for --resync", opts.slot);
					if (!drop_slot(sql, opts.slot))
						return false;
				}
				replaces_load = exists || status != LOAD_NONE;
			}
			else if (!exists)
			{
				report_lost_slot(sql, opts.slot);
				retry_note_permanent();
				return false;
			}
			else if (create && !opts.if_not_exists)
			{
				log_error("replication slot \"%s\" already exists", opts.slot);
				log_error_hint("Add --if-not-exists to ship from it, or use --resync to create it again with a new initial load.");
				return false;
			}
			else
			{
				/*
				 * Loaded and there: nothing to create, and its load state
				 * stays (it is what tells a lost slot from a new one).
				 */
				create = false;
				if (opts.verbosity >= 0)
					log_info("replication slot \"%s\" exists, using it", opts.slot);
				if (opts.enable_failover && !stream_set_failover(rc))
					return false;
			}
		}
		/* Written before the slot exists: a kill from here on is seen. */
		if (create && status != LOAD_UNSUPPORTED && !load_state_creating(sql, opts.slot))
			return false;
	}
	else
	{
		/* --no-load: a lost slot is not re-created either; an old gap is warned about. */
		PGconn	   *c = db_connect(params, false);

		status = c != NULL ? load_status(c, opts.slot) : LOAD_ERROR;
		if (status == LOAD_UNFINISHED && opts.create_slot)
			log_warning("the initial load of slot \"%s\" did not finish and --no-load leaves it unfinished",
						opts.slot);
		if (status == LOAD_FINISHED && slot_exists(c, opts.slot) == 0)
		{
			report_lost_slot(c, opts.slot);
			retry_note_permanent();
			PQfinish(c);
			return false;
		}
		if (c != NULL)
			PQfinish(c);
	}

	if (create)
	{
		if (!stream_create_slot(rc, opts.if_not_exists || status == LOAD_UNFINISHED,
								!opts.no_load, opts.enable_failover,
								&created, &consistent, &snapshot, &stop_requested))
			ok = false;
		else if (created && opts.verbosity >= 0)
			log_info("created %sreplication slot \"%s\" at %X/%X",
					 opts.enable_failover ? "failover " : "", opts.slot,
					 (uint32_t) (consistent >> 32), (uint32_t) consistent);
		/*
		 * Not created (it existed, or an error): it is not ours to load,
		 * and the row written before must not make a later run drop it.
		 */
		if (!created && sql != NULL && status != LOAD_UNSUPPORTED &&
			!load_state_forget(sql, opts.slot))
			ok = false;
	}

	if (ok && created && !opts.no_load)
	{
		LoadParams	lp;

		memset(&lp, 0, sizeof(lp));
		lp.slot = opts.slot;
		lp.snapshot_name = snapshot;
		lp.consistent_lsn = consistent;
		lp.plugin_options = opts.plugin_options;
		lp.noptions = opts.noptions;
		lp.reset_marker = replaces_load;
		lp.dms_format = plugin_format_is_dms();
		lp.progress = opts.verbosity > 0 || (opts.verbosity == 0 && isatty(fileno(stderr)));
		lp.summary = opts.verbosity >= 0;
		pos.last_txn = pos.prev_txn = pos.processed = 0;
		ok = initial_load(sql, &lp, load_row, flush_all, &stop_requested);
		if (ok)
		{
			/* Every load row is acknowledged: stream from the consistent point. */
			pos.processed = consistent;
			pos.confirmed = consistent;
		}
	}
	free(snapshot);
	return ok;
}

/*
 * A service's endpoint from the environment, as the SDKs read it:
 * AWS_ENDPOINT_URL_<SERVICE>, then AWS_ENDPOINT_URL, unless
 * AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true.  The flags win over both.
 */
static const char *
env_endpoint(const char *service)
{
	char		name[64];
	const char *v;

	v = getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
	if (v != NULL && pg_strcasecmp(v, "true") == 0)
		return NULL;
	snprintf(name, sizeof(name), "AWS_ENDPOINT_URL_%s", service);
	if ((v = getenv(name)) != NULL && *v != '\0')
		return v;
	if ((v = getenv("AWS_ENDPOINT_URL")) != NULL && *v != '\0')
		return v;
	return NULL;
}

/*
 * The credential chain, resolved once for every target.  Nothing found or
 * a malformed configuration: exit 2; a source that does not answer: exit 1
 * (a service manager may start the shipper again).
 */
static AwsCredentialProvider *
resolve_credentials(const char *region)
{
	AwsCredentialProvider *p;
	bool		config_error;
	char	   *err = aws_credentials_resolve(region, opts.verbosity > 0, &p, &config_error);

	if (err != NULL)
	{
		log_error("%s", err);
		if (config_error)
			log_error_hint("See \"AWS credentials\" in the README for the order in which sources are tried.");
		free(err);
		exit(config_error ? 2 : 1);
	}
	if (opts.verbosity > 0 || opts.check_credentials)
	{
		AwsCredentials c;
		char		masked[32];

		memset(&c, 0, sizeof(c));
		aws_credentials_get(p, &c);
		aws_mask_key(c.access_key, masked, sizeof(masked));
		if (c.expiration > 0)
		{
			time_t		t = (time_t) c.expiration;
			struct tm	tm;
			char		until[32];

			gmtime_r(&t, &tm);
			strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
			log_info("AWS credentials from %s: access key %s, expire at %s",
					 aws_credentials_describe(p), masked, until);
		}
		else
			log_info("AWS credentials from %s: access key %s",
					 aws_credentials_describe(p), masked);
		if (opts.check_credentials)
		{
			/* For scripts, like aws configure list: no secret. */
			printf("method: %s\naccess_key: %s\n", aws_credentials_method(p), masked);
			if (c.expiration > 0)
				printf("expiration: %.0f\n", c.expiration);
		}
		aws_credentials_clear(&c);
	}
	return p;
}

/*
 * The Kinesis and S3 targets: region, endpoint, credentials.  A setting
 * that cannot work is exit 2.
 */
static void
setup_targets(void)
{
	char	   *region;
	char	   *err;
	AwsCredentialProvider *provider;

	if (opts.check_credentials)
	{
		region = aws_resolve_region(opts.region);
		(void) resolve_credentials(region);
		if (region)
			printf("region: %s\n", region);
		free(region);
		exit(0);
	}
	if (!opts.ship_kinesis && !opts.ship_s3)
		return;
	region = aws_resolve_region(opts.region);
	if (region == NULL && opts.stream_arn != NULL)
		region = kinesis_arn_region(opts.stream_arn);
	if (region == NULL)
	{
		log_error("no AWS region specified");
		log_error_hint("Use --region, set AWS_REGION, or set a region in the AWS profile.");
		exit(2);
	}
	provider = resolve_credentials(region);
	aws_provider = provider;
	if (opts.ship_kinesis)
	{
		const char *endpoint = opts.endpoint ? opts.endpoint : env_endpoint("KINESIS");

		err = kinesis_init(&kinesis, provider, endpoint, region, opts.stream, opts.stream_arn,
						   opts.ca_file, opts.request_timeout_ms, opts.retry_timeout,
						   opts.max_in_flight);
		if (err != NULL)
		{
			log_error("%s", err);
			exit(2);
		}
		kinesis.call_records = opts.batch_records;
		kinesis.call_bytes = (size_t) opts.batch_bytes;
		if (opts.verbosity > 0)
			log_info("Kinesis: region %s, endpoint %s", region, kinesis.endpoint);
	}
	if (opts.ship_s3)
	{
		/* --endpoint-url serves S3 too when S3 is the only target. */
		const char *endpoint = opts.s3_endpoint ? opts.s3_endpoint :
			(!opts.ship_kinesis && opts.endpoint) ? opts.endpoint : env_endpoint("S3");

		err = s3_init(&s3, provider, opts.s3_url, endpoint, region, opts.s3_addressing,
					  opts.gzip, opts.ca_file, opts.request_timeout_ms, opts.retry_timeout);
		if (err != NULL)
		{
			log_error("%s", err);
			exit(2);
		}
		if (opts.verbosity > 0)
			log_info("S3: bucket %s, prefix \"%s\", endpoint %s (%s-style)",
						s3.bucket, s3.prefix, s3.endpoint,
						s3.path_style ? "path" : "virtual-host");
	}
	/* The targets keep copies. */
	free(region);
}

int
main(int argc, char **argv)
{
	bool		first_connection = true;
	int			exit_code = 0;
	char	   *last_failure = NULL;	/* the stream's last error... */
	uint64_t	last_failure_pos = 0;	/* ...at this confirmed position */
	int			same_failures = 0;

	parse_options(argc, argv);
	http_global_init();

	/* Every JSON log line says which slot and target it is about. */
	log_set_context("slot", opts.slot);
	log_set_context("target", opts.ship_stdout ? "stdout" :
					opts.ship_kinesis && opts.ship_s3 ? "kinesis,s3" :
					opts.ship_kinesis ? "kinesis" : "s3");
	if (opts.stream != NULL || opts.stream_arn != NULL)
		log_set_context("stream", opts.stream != NULL ? opts.stream : opts.stream_arn);
	if (opts.s3_url != NULL)
		log_set_context("s3_url", opts.s3_url);

	setup_targets();

	if (opts.metrics_address)
	{
		int			port = 0;
		char	   *err = metrics_start(opts.metrics_address, opts.health_max_lag,
										opts.ship_stdout ? "stdout" :
										opts.ship_kinesis && opts.ship_s3 ? "kinesis,s3" :
										opts.ship_kinesis ? "kinesis" : "s3",
										FUNDRECS_SHIPPER_VERSION, &port);

		if (err != NULL)
		{
			log_error("%s", err);
			exit(failure_exit_code());
		}
		metrics_set_max_retained(opts.max_retained_wal);
		log_info("serving metrics on http://%s/metrics (port %d) and /healthz",
					opts.metrics_address, port);
	}

	if (opts.verbosity < 0)
		pg_logging_set_level(PG_LOG_ERROR);
	else if (opts.verbosity > 1)
		pg_logging_increase_verbosity();

	/*
	 * Buffers of a quarter MiB and more (request bodies, aggregated
	 * records) come from mmap and go back to the system when freed, instead
	 * of glibc raising the threshold and keeping them in the heap: the
	 * resident size follows what is held, not the largest burst so far.
	 */
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	main_thread = pthread_self();
	notify_init();
	pqsignal(SIGINT, sigexit_handler);
	pqsignal(SIGTERM, sigexit_handler);
	pqsignal(SIGPIPE, SIG_IGN);
	pqsignal(SIGHUP, sighup_handler);
	initPQExpBuffer(&pkey_buf);

	/*
	 * Kinesis: up to DELIVERY_LANES batches in flight, each filling its
	 * lane's share of the --max-in-flight calls.  The batches in flight and
	 * the one filling are held at most: together, no more than
	 * --max-buffer-bytes.
	 */
	if (opts.ship_kinesis)
	{
		int			nlanes = Min(DELIVERY_LANES, opts.max_in_flight);
		int			lane_calls = (opts.max_in_flight + nlanes - 1) / nlanes;
		long		batch_cap = opts.max_buffer_bytes / (nlanes + 1);

		/*
		 * An aggregated batch in flight is held about three times over: its
		 * rows, their KPL records, and the request's base64 body.  Half the
		 * share keeps the whole within --max-buffer-bytes' intent (peak RSS
		 * catching up: 38.5 MiB before, bench/aggregate).
		 */
		if (opts.aggregate)
			batch_cap /= 2;
		dispatch_init(opts.aggregate ? DISPATCH_KINESIS_AGGREGATED : DISPATCH_KINESIS, &kinesis,
					  nlanes,
					  opts.aggregate ? AGGREGATE_BATCH_ROWS : opts.batch_records * lane_calls,
					  (size_t) Min(opts.batch_bytes * lane_calls, batch_cap),
					  (size_t) opts.aggregate_bytes, &delivery_abort, shipper_tick, opts.verbosity > 0);
	}
	else
		dispatch_init(DISPATCH_STDOUT, NULL, 0, opts.batch_records,
					  (size_t) Min(opts.batch_bytes, opts.max_buffer_bytes), 0,
					  &delivery_abort, shipper_tick, opts.verbosity > 0);

	set_wait_tick(shipper_tick);
	slot_monitor_set_stop(&stop_requested);

	/* Fail early on an unknown stream or bad credentials. */
	if (opts.ship_kinesis && kinesis_check_stream(&kinesis, &stop_requested) != SHIP_OK)
		exit(stop_requested ? 0 : failure_exit_code());
	if (opts.ship_kinesis && opts.aggregate)
	{
		if (kinesis_load_shard_map(&kinesis, &stop_requested) != SHIP_OK)
			exit(stop_requested ? 0 : failure_exit_code());
		if (opts.verbosity > 0)
			log_info("aggregating into %d open shards, records of at most %ld bytes",
						kinesis.map.nshards, opts.aggregate_bytes);
	}
	if (opts.ship_s3 && s3_check_bucket(&s3, &stop_requested) != SHIP_OK)
		exit(stop_requested ? 0 : failure_exit_code());

	memset(&params, 0, sizeof(params));
	params.dbname = opts.dbname;
	params.host = opts.host;
	params.port = opts.port;
	params.user = opts.user;
	params.prompt_password = opts.prompt_password;
	params.slot = opts.slot;
	params.plugin_options = opts.plugin_options;
	params.noptions = opts.noptions;

	pos.confirmed = opts.startpos;

	for (;;)
	{
		ReplConn   *rc;
		LoopResult	lr;
		char	   *stream_error;

		PGconn	   *lockconn = NULL;

		rc = stream_connect(&params);
		if (rc == NULL && first_connection)
		{
			/* Like pg_recvlogical: a first connection that fails is fatal. */
			exit(failure_exit_code());
		}
		if (rc != NULL && first_connection)
		{
			check_plugin_options(&params);
			/* Connected, targets checked: systemd may count it started. */
			notify_ready("connected; preparing the slot");
		}
		/* The S3 prefix is this slot's alone. */
		if (rc != NULL && first_connection && opts.ship_s3)
		{
			const char *system_id;
			const char *dbname;

			stream_identity(rc, &system_id, &dbname);
			if (s3_claim_prefix(&s3, system_id, dbname, opts.slot, &stop_requested) != SHIP_OK)
			{
				stream_close(rc);
				exit(stop_requested ? 0 : failure_exit_code());
			}
		}
		if (rc != NULL && first_connection && !prepare_slot(rc, &params, &lockconn))
		{
			stream_close(rc);
			if (lockconn)
				PQfinish(lockconn);
			exit(stop_requested ? 0 : failure_exit_code());
		}
		/* A slot invalidated while the shipper was away: say so. */
		if (rc != NULL)
			check_slot_health();
		if (rc != NULL && !stream_start(rc, pos.confirmed))
		{
			/* A slot that does not exist or a bad option will not heal. */
			if (stream_start_error_is_permanent(rc))
			{
				stream_close(rc);
				if (lockconn)
					PQfinish(lockconn);
				exit(failure_exit_code());
			}
			stream_close(rc);
			rc = NULL;
		}
		/* Streaming (the slot is active) or not: the lock has done its job. */
		if (lockconn)
			PQfinish(lockconn);
		first_connection = false;

		if (rc != NULL)
		{
			if (opts.verbosity > 0)
				log_info("streaming from slot \"%s\" at %X/%X", opts.slot,
							(uint32_t) (pos.confirmed >> 32), (uint32_t) pos.confirmed);
			pos.processed = pos.last_txn = pos.prev_txn = pos.confirmed;
			streaming_grace = true;
			lr = stream_loop(rc);
			stream_error = stream_last_error(rc) ? pg_strdup(stream_last_error(rc)) : NULL;
			stream_close(rc);
			if (lr == LOOP_DONE)
				break;
			if (lr == LOOP_FATAL)
			{
				exit_code = failure_exit_code();
				break;
			}
			/* Connection lost: deliver what we hold, then resume after it. */
			if (flush_all())
				pos.confirmed = confirmable_lsn();
			else
				exit(failure_exit_code());

			/*
			 * The same error again and again at the same position is the
			 * plugin failing on one change: retrying cannot help, and an
			 * exit lets systemd's restart limits and alerts see it.
			 */
			if (stream_error != NULL && last_failure != NULL &&
				strcmp(stream_error, last_failure) == 0 && pos.confirmed == last_failure_pos)
				same_failures++;
			else
			{
				free(last_failure);
				last_failure = stream_error ? pg_strdup(stream_error) : NULL;
				last_failure_pos = pos.confirmed;
				same_failures = stream_error ? 1 : 0;
			}
			free(stream_error);
			if (same_failures >= MAX_SAME_STREAM_FAILURES)
			{
				log_error("the stream failed %d times in a row at %X/%X with the same error",
							 same_failures, (uint32_t) (pos.confirmed >> 32), (uint32_t) pos.confirmed);
				log_error_detail("%s", last_failure);
				log_error_hint("The server cannot decode the change after this position; fix its cause (see the error), then start the shipper again.");
				exit(failure_exit_code());
			}
		}

		if (opts.no_loop || stop_requested)
		{
			if (!stop_requested)
			{
				log_error("connection to the server was lost and --no-loop is set");
				exit_code = failure_exit_code();
			}
			break;
		}
		log_info("reconnecting in %d s", RECONNECT_SLEEP_SECS);
		notify_status(true, "connection lost; reconnecting in %d s", RECONNECT_SLEEP_SECS);
		for (int i = 0; i < RECONNECT_SLEEP_SECS * 10 && !stop_requested; i++)
		{
			notify_watchdog();
			usleep(100000);
		}
		if (stop_requested)
			break;
	}

	if (opts.verbosity > 0 || (opts.verbosity == 0 && exit_code == 0 && opts.endpos != 0))
		log_info("shipped %llu rows, confirmed up to %X/%X",
					(unsigned long long) dispatch_rows_shipped(),
					(uint32_t) (pos.confirmed >> 32), (uint32_t) pos.confirmed);
	if (opts.ship_s3 && opts.verbosity > 0)
		log_info("S3: %llu objects written, %llu rows already in the bucket not written again, %llu objects of an unfinished load deleted",
				 (unsigned long long) s3.objects_put, (unsigned long long) s3.rows_skipped,
				 (unsigned long long) s3.objects_deleted);
	if (opts.ship_kinesis && opts.verbosity > 0)
	{
		KinesisTarget ks;

		/* Every lane's counters together. */
		dispatch_kinesis_stats(&ks);
		log_info("%llu PutRecords calls, %llu Kinesis records, %llu retried calls, %llu retried records, %llu throttled records",
					(unsigned long long) ks.calls,
					(unsigned long long) ks.records_sent,
					(unsigned long long) ks.retried_calls,
					(unsigned long long) ks.retried_records,
					(unsigned long long) ks.throttled_records);
		log_info("%llu rows waited for an earlier version of their key to be acknowledged",
				 (unsigned long long) dispatch_key_waits());
		if (opts.aggregate)
			log_info("%llu rows in aggregated records (%.1f rows per record), %llu records sent again after resharding",
						(unsigned long long) ks.rows_aggregated,
						ks.records_sent ? (double) ks.rows_aggregated / ks.records_sent : 0.0,
						(unsigned long long) ks.aggregates_resent);
	}
	return exit_code;
}
