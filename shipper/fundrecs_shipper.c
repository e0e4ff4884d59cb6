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

#include <signal.h>
#include <time.h>
#include <sys/select.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/logging.h"
#include "common/string.h"
#include "getopt_long.h"
#include "kinesis.h"
#include "libpq-fe.h"
#include "load.h"
#include "retry.h"
#include "rowscan.h"
#include "s3.h"
#include "stream.h"

#define FUNDRECS_SHIPPER_VERSION "1.0"

/* The same stream error at the same position this often: exit 1. */
#define MAX_SAME_STREAM_FAILURES 3

static const char *progname;

/* Set by signal handlers, checked by the loops. */
static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t stop_now = 0;	/* a second signal */

/*
 * Set by the tick when what is in flight must be abandoned: at once during
 * start-up and the initial load, after --shutdown-timeout while streaming.
 * Deliveries watch this flag, not stop_requested.
 */
static volatile sig_atomic_t delivery_abort = 0;
static bool streaming_grace = false;
static double shutdown_deadline = 0;

/* The streaming connection, kept alive by the tick during deliveries. */
static ReplConn *tick_rc = NULL;
static double last_status = 0;


/* Command line */
static char *opt_dbname = NULL;
static char *opt_host = NULL;
static char *opt_port = NULL;
static char *opt_user = NULL;
static int	opt_prompt_password = 0;	/* -1 never, 1 force */
static char *opt_slot = NULL;
static bool opt_create_slot = false;
static bool opt_if_not_exists = false;
static bool opt_no_load = false;
static bool opt_allow_no_tables = false;
static char **opt_plugin_options = NULL;	/* name, value, name, value, ... */
static int	opt_noptions = 0;
static uint64_t opt_startpos = 0;
static uint64_t opt_endpos = 0;
static bool opt_no_loop = false;
static int	opt_status_interval = 10;
static bool ship_kinesis = true;	/* --target: kinesis, s3, both, or stdout */
static bool ship_s3 = false;
static bool ship_stdout = false;
static char *opt_s3_url = NULL;
static char *opt_s3_endpoint = NULL;
static char *opt_s3_addressing = NULL;
static bool opt_gzip = true;
static long opt_flush_bytes = 64L * 1024 * 1024;
static int	opt_flush_seconds = 60;
static char *opt_stream = NULL;
static char *opt_stream_arn = NULL;
static char *opt_region = NULL;
static char *opt_endpoint = NULL;
static char *opt_ca_file = NULL;
static int	opt_batch_records = KINESIS_MAX_RECORDS;
static bool opt_aggregate = false;
static int	opt_max_in_flight = 8;
static long opt_aggregate_bytes = 262144;	/* measured: bench/aggregate */
static int	batch_capacity;		/* rows per batch: records, or rows to aggregate */
static long opt_batch_bytes = KINESIS_MAX_REQUEST_BYTES;
static int	opt_linger_ms = 20;
static long opt_max_buffer_bytes = 8 * 1024 * 1024;
static int	opt_request_timeout_ms = 30000;
static int	opt_retry_timeout = 600;
static int	opt_shutdown_timeout = 30;
static int	verbosity = 0;		/* -1 quiet, 1 verbose, 2 debug */

/* The batch being filled: at most one batch is held at any time. */
typedef struct Batch
{
	ShipRecord *recs;
	int			n;
	size_t		bytes;			/* data + partition keys, as Kinesis counts */
	double		first_at;		/* when its first record arrived */
	/* partition keys in this batch: open addressing, indexes into recs */
	int		   *slots;
	int			nslots;
} Batch;

/* Delivery positions (LSNs). */
typedef struct Positions
{
	uint64_t	confirmed;		/* last flush position reported */
	uint64_t	last_txn;		/* commit LSN of the newest row received */
	uint64_t	prev_txn;		/* commit LSN of the transaction before it */
	uint64_t	processed;		/* server's walEnd from keepalives */
} Positions;

static Batch batch;
static Positions pos;
static KinesisTarget kinesis;
static S3Target s3;
static uint64_t rows_shipped = 0;
static PQExpBufferData pkey_buf;

static void
sigexit_handler(SIGNAL_ARGS)
{
	if (stop_requested)
		stop_now = 1;
	stop_requested = 1;
}


static void
usage(void)
{
	printf("%s reads a fundrecs_decoder replication slot and ships its rows to Kinesis.\n\n", progname);
	printf("Usage:\n  %s -d CONNSTR -S SLOT --stream NAME [OPTION]...\n", progname);
	printf("\nConnection options:\n");
	printf("  -d, --dbname=CONNSTR     database name or connection string\n");
	printf("  -h, --host=HOSTNAME      database server host or socket directory\n");
	printf("  -p, --port=PORT          database server port number\n");
	printf("  -U, --username=NAME      connect as specified database user\n");
	printf("  -w, --no-password        never prompt for password\n");
	printf("  -W, --password           force password prompt (should happen automatically)\n");
	printf("\nSlot options:\n");
	printf("  -S, --slot=SLOTNAME      name of the logical replication slot\n");
	printf("      --create-slot        create the slot (plugin fundrecs_decoder) before shipping\n");
	printf("      --if-not-exists      do not error if the slot already exists with --create-slot\n");
	printf("      --no-load            do not ship the rows that exist when the slot is created\n");
	printf("      --allow-no-tables    start even if the plugin option \"tables\" matches no table\n"
		   "                           or the orders table does not exist\n");
	printf("  -o, --option=NAME=VALUE  pass option NAME with value VALUE to the plugin\n");
	printf("  -I, --startpos=LSN       where in an existing slot to start\n");
	printf("  -E, --endpos=LSN         ship up to LSN, confirm it and exit\n");
	printf("  -n, --no-loop            exit on connection loss instead of reconnecting\n");
	printf("  -s, --status-interval=SECS\n"
		   "                           time between status updates to the server (default: %d)\n",
		   opt_status_interval);
	printf("\nTarget options:\n");
	printf("      --target=TARGET      kinesis (default), s3, kinesis,s3, or stdout (one JSON row per line)\n");
	printf("      --stream=NAME        Kinesis data stream name\n");
	printf("      --stream-arn=ARN     Kinesis data stream ARN (instead of --stream)\n");
	printf("      --region=REGION      AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, profile)\n");
	printf("      --endpoint-url=URL   Kinesis endpoint (emulators, VPC endpoints)\n");
	printf("      --ca-file=FILE       CA certificates to verify the endpoint with\n");
	printf("      --batch-records=N    records per PutRecords call, at most 500 (default: %d)\n",
		   opt_batch_records);
	printf("      --batch-bytes=N      bytes per PutRecords call, at most 5 MiB (default: %ld)\n",
		   opt_batch_bytes);
	printf("      --linger-ms=N        how long a partial batch waits for more rows (default: %d)\n",
		   opt_linger_ms);
	printf("      --max-in-flight=N    PutRecords calls sent at once, at most %d (default: %d)\n",
		   KINESIS_MAX_IN_FLIGHT, opt_max_in_flight);
	printf("      --aggregate          KPL-aggregate rows into Kinesis records, per shard\n"
		   "                           (consumers must de-aggregate: KCL, Firehose, aws-kinesis-agg)\n");
	printf("      --aggregate-bytes=N  largest aggregated record (default: %ld, at most 1 MiB)\n",
		   opt_aggregate_bytes);
	printf("      --max-buffer-bytes=N unacknowledged bytes held before reading stops (default: %ld)\n",
		   opt_max_buffer_bytes);
	printf("      --request-timeout=MS timeout of one HTTP request (default: %d)\n",
		   opt_request_timeout_ms);
	printf("      --retry-timeout=SECS give up retrying a batch after this long, 0 never (default: %d)\n",
		   opt_retry_timeout);
	printf("      --shutdown-timeout=SECS\n"
		   "                           on SIGTERM/SIGINT, time to deliver what is in flight (default: %d)\n",
		   opt_shutdown_timeout);
	printf("\nS3 options (--target s3 or kinesis,s3):\n");
	printf("      --s3-url=s3://BUCKET/PREFIX  where objects go: PREFIX/<route>/dt=YYYY-MM-DD/<lsns>.json.gz\n");
	printf("      --s3-endpoint-url=URL  S3 endpoint (default: --endpoint-url with --target s3)\n");
	printf("      --s3-addressing=STYLE  path or virtual (default: path with an endpoint URL)\n");
	printf("      --compression=METHOD   gzip (default) or none\n");
	printf("      --flush-bytes=N        write objects when this many bytes are held (default: %ld)\n",
		   opt_flush_bytes);
	printf("      --flush-seconds=SECS   write objects at least this often (default: %d)\n",
		   opt_flush_seconds);
	printf("\nOther options:\n");
	printf("  -v, --verbose            output verbose messages (twice: debug)\n");
	printf("  -q, --quiet              output errors only\n");
	printf("  -V, --version            output version information, then exit\n");
	printf("  -?, --help               show this help, then exit\n");
	printf("\nCredentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and\n"
		   "AWS_SESSION_TOKEN, or from AWS_PROFILE in ~/.aws/credentials and ~/.aws/config.\n");
	printf("\nOn SIGTERM or SIGINT the shipper stops reading, delivers and confirms what it\n"
		   "holds within --shutdown-timeout, then exits; rows still unacknowledged then (or\n"
		   "at a second signal) are not confirmed and are shipped again on restart.\n");
	printf("\nExit status: 0 on success, --endpos reached or SIGINT/SIGTERM; 1 on a runtime\n"
		   "failure; 2 on a usage or configuration error.\n");
}

static void
usage_error(const char *fmt, const char *arg)
{
	pg_log_error(fmt, arg);
	pg_log_error_hint("Try \"%s --help\" for more information.", progname);
	exit(2);
}

static long
parse_long(const char *name, const char *value, long min, long max)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno != 0 || *value == '\0' || *end != '\0' || v < min || v > max)
	{
		pg_log_error("invalid value \"%s\" for option %s", value, name);
		pg_log_error_detail("It must be an integer from %ld to %ld.", min, max);
		pg_log_error_hint("Try \"%s --help\" for more information.", progname);
		exit(2);
	}
	return v;
}

static uint64_t
parse_lsn_option(const char *name, const char *value)
{
	uint64_t	lsn;

	if (!rowscan_parse_lsn(value, strlen(value), &lsn))
	{
		pg_log_error("could not parse %s location \"%s\"", name, value);
		pg_log_error_hint("Try \"%s --help\" for more information.", progname);
		exit(2);
	}
	return lsn;
}

static bool
parse_bool_value(const char *value, bool *result)
{
	if (pg_strcasecmp(value, "true") == 0 || pg_strcasecmp(value, "on") == 0 ||
		pg_strcasecmp(value, "yes") == 0 || strcmp(value, "1") == 0)
		*result = true;
	else if (pg_strcasecmp(value, "false") == 0 || pg_strcasecmp(value, "off") == 0 ||
			 pg_strcasecmp(value, "no") == 0 || strcmp(value, "0") == 0)
		*result = false;
	else
		return false;
	return true;
}

static void
add_plugin_option(const char *arg)
{
	const char *eq = strchr(arg, '=');

	if (eq == NULL || eq == arg)
		usage_error("invalid plugin option \"%s\": use NAME=VALUE", arg);
	opt_plugin_options = pg_realloc(opt_plugin_options,
									sizeof(char *) * (opt_noptions + 1) * 2);
	opt_plugin_options[opt_noptions * 2] = pnstrdup(arg, eq - arg);
	opt_plugin_options[opt_noptions * 2 + 1] = pg_strdup(eq + 1);
	opt_noptions++;
}

/* ----------------------------------------------------------------
 * The batch
 * ----------------------------------------------------------------
 */

static uint32_t
hash_string(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 16777619u;
	return h;
}

/* Rows per batch when aggregating: bounded by bytes long before this. */
#define AGGREGATE_BATCH_ROWS 20000

static void
batch_init(void)
{
	/* A batch fills every call that may be in flight. */
	batch_capacity = opt_aggregate ? AGGREGATE_BATCH_ROWS :
		opt_batch_records * (ship_kinesis ? opt_max_in_flight : 1);
	batch.recs = pg_malloc0(sizeof(ShipRecord) * batch_capacity);
	batch.nslots = 1;
	while (batch.nslots < batch_capacity * 2)
		batch.nslots <<= 1;
	batch.slots = pg_malloc(sizeof(int) * batch.nslots);
	memset(batch.slots, -1, sizeof(int) * batch.nslots);
	batch.n = 0;
	batch.bytes = 0;
}

/* Is a record with this partition key already in the batch? */
static bool
batch_has_key(const char *pkey)
{
	uint32_t	i = hash_string(pkey) & (batch.nslots - 1);

	while (batch.slots[i] >= 0)
	{
		if (strcmp(batch.recs[batch.slots[i]].pkey, pkey) == 0)
			return true;
		i = (i + 1) & (batch.nslots - 1);
	}
	return false;
}

static void
batch_add(const char *row, size_t len, const char *pkey, uint64_t commit_lsn)
{
	ShipRecord *r = &batch.recs[batch.n];
	uint32_t	i;

	r->data = pg_malloc(len + 1);
	memcpy(r->data, row, len);
	r->data[len] = '\n';
	r->len = len + 1;
	r->pkey = pg_strdup(pkey);
	r->commit_lsn = commit_lsn;
	r->safe_lsn = pos.prev_txn;
	if (ship_kinesis)
	{
		i = hash_string(pkey) & (batch.nslots - 1);
		while (batch.slots[i] >= 0)
			i = (i + 1) & (batch.nslots - 1);
		batch.slots[i] = batch.n;
	}
	if (batch.n == 0)
		batch.first_at = now_seconds();
	batch.n++;
	batch.bytes += r->len + strlen(pkey);
}

static void
batch_clear(void)
{
	for (int i = 0; i < batch.n; i++)
	{
		free(batch.recs[i].data);
		free(batch.recs[i].pkey);
	}
	batch.n = 0;
	batch.bytes = 0;
	memset(batch.slots, -1, sizeof(int) * batch.nslots);
}

/*
 * The position that may be confirmed now: everything before the first
 * unacknowledged row's transaction, or, with nothing pending, the newest
 * transaction once the server has shown it complete.
 */
static uint64_t
confirmable_lsn(void)
{
	uint64_t	lsn;

	if (batch.n > 0)
		lsn = batch.recs[0].safe_lsn;
	else if (pos.processed >= pos.last_txn)
		lsn = Max(pos.processed, pos.last_txn);
	else
		lsn = pos.prev_txn;
	/* Rows held for S3 are not acknowledged until their objects are written. */
	if (ship_s3 && s3_has_rows(&s3))
		lsn = Min(lsn, s3.safe_lsn);
	/* Never past --endpos: what follows it is for the next run. */
	if (opt_endpos != 0)
		lsn = Min(lsn, opt_endpos);
	return Max(lsn, pos.confirmed);
}

/*
 * Ships the batch.  Returns false on a fatal error or a stop while
 * retrying; the batch is then left as it was (nothing confirmed past it).
 */
static bool
batch_flush(void)
{
	if (batch.n == 0)
		return true;

	if (ship_stdout)
	{
		for (int i = 0; i < batch.n; i++)
		{
			if (fwrite(batch.recs[i].data, 1, batch.recs[i].len, stdout) != batch.recs[i].len)
			{
				pg_log_error("could not write to standard output: %m");
				return false;
			}
		}
		if (fflush(stdout) != 0)
		{
			pg_log_error("could not write to standard output: %m");
			return false;
		}
	}
	else
	{
		ShipResult r = opt_aggregate ?
			kinesis_put_aggregated(&kinesis, batch.recs, batch.n, (size_t) opt_aggregate_bytes,
								   &delivery_abort) :
			kinesis_put_records(&kinesis, batch.recs, batch.n, &delivery_abort);

		if (r != SHIP_OK)
		{
			if (r == SHIP_STOPPED)
				pg_log_warning("stopping with %d rows unacknowledged; they will be shipped again on restart",
							   batch.n);
			return false;
		}
	}
	if (verbosity > 0)
		pg_log_info("shipped %d rows (%zu bytes) up to commit %X/%X", batch.n, batch.bytes,
					(uint32_t) (batch.recs[batch.n - 1].commit_lsn >> 32),
					(uint32_t) batch.recs[batch.n - 1].commit_lsn);
	rows_shipped += batch.n;
	batch_clear();
	return true;
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

	if (tick_rc != NULL)
	{
		int			timeout_ms = stream_sender_timeout_ms(tick_rc);
		double		every = opt_status_interval > 0 ? opt_status_interval : 10;

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
			delivery_abort = 1;
		else
		{
			if (shutdown_deadline == 0)
				shutdown_deadline = now + opt_shutdown_timeout;
			if (now >= shutdown_deadline)
			{
				pg_log_warning("--shutdown-timeout (%d s) reached with deliveries in flight",
							   opt_shutdown_timeout);
				delivery_abort = 1;
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
		pg_log_warning("stopping with S3 objects unwritten; their rows will be shipped again on restart");
	return r == SHIP_OK;
}

/* Delivers everything held for every target. */
static bool
flush_all(void)
{
	if (!batch_flush())
		return false;
	if (ship_s3 && !s3_flush_now())
		return false;
	return true;
}

typedef enum RowResult
{
	ROW_OK,
	ROW_PAST_ENDPOS,
	ROW_FATAL
} RowResult;

static RowResult
handle_row(const char *row, size_t len, uint64_t change_lsn, bool is_load)
{
	RowFields f;
	uint64_t	commit_lsn;
	size_t		record_bytes;

	if (!rowscan(row, len, &f) || f.schema.start == NULL || f.table.start == NULL ||
		f.schema.start[0] != '"' || f.table.start[0] != '"')
	{
		pg_log_error("row at %X/%X is not a fundrecs_decoder row: %.*s",
					 (uint32_t) (change_lsn >> 32), (uint32_t) change_lsn,
					 (int) Min(len, 200), row);
		pg_log_error_hint("Was the slot created with the plugin fundrecs_decoder?");
		return ROW_FATAL;
	}
	if (f.commit_lsn.start == NULL ||
		!rowscan_parse_lsn(f.commit_lsn.start, f.commit_lsn.len, &commit_lsn))
	{
		pg_log_error("row at %X/%X has no commit_lsn",
					 (uint32_t) (change_lsn >> 32), (uint32_t) change_lsn);
		pg_log_error_hint("Do not pass -o include_lsn=false to the shipper.");
		return ROW_FATAL;
	}

	if (opt_endpos != 0 && commit_lsn > opt_endpos && !is_load)
		return ROW_PAST_ENDPOS;

	/* A new transaction: the previous one is complete. */
	if (commit_lsn != pos.last_txn)
	{
		if (commit_lsn < pos.last_txn)
		{
			pg_log_error("rows arrived out of commit order (%X/%X after %X/%X)",
						 (uint32_t) (commit_lsn >> 32), (uint32_t) commit_lsn,
						 (uint32_t) (pos.last_txn >> 32), (uint32_t) pos.last_txn);
			return ROW_FATAL;
		}
		pos.prev_txn = pos.last_txn;
		pos.last_txn = commit_lsn;
	}

	/* Only Kinesis needs a partition key. */
	if (ship_kinesis)
		kinesis_partition_key(f.schema.start, f.schema.len, f.table.start, f.table.len,
							  f.key.start, f.key.len, &pkey_buf);
	else
		resetPQExpBuffer(&pkey_buf);

	record_bytes = len + 1 + pkey_buf.len;
	/* Aggregated, a row also carries the record's framing (about 64 bytes). */
	if (ship_kinesis && record_bytes + (opt_aggregate ? 64 : 0) > KINESIS_MAX_RECORD_BYTES)
	{
		pg_log_error("row at %X/%X of table %.*s.%.*s is %zu bytes, over Kinesis's limit of %d bytes per record",
					 (uint32_t) (change_lsn >> 32), (uint32_t) change_lsn,
					 (int) f.schema.len - 2, f.schema.start + 1,
					 (int) f.table.len - 2, f.table.start + 1,
					 record_bytes, KINESIS_MAX_RECORD_BYTES);
		pg_log_error_detail("Nothing at or after this row's transaction (commit %X/%X) is confirmed.",
							(uint32_t) (commit_lsn >> 32), (uint32_t) commit_lsn);
		pg_log_error_hint("Leave the large column out with the plugin option exclude_columns=%.*s.%.*s.COLUMN, ship to S3 alone (--target s3 has no per-row limit), or shrink the row.",
						  (int) f.schema.len - 2, f.schema.start + 1,
						  (int) f.table.len - 2, f.table.start + 1);
		return ROW_FATAL;
	}

	if (ship_s3)
	{
		char		route[128];
		char		dt[11];

		row_route(&f, route, sizeof(route));
		row_date(&f, dt);
		s3_add(&s3, route, dt, row, len, commit_lsn, pos.prev_txn);
		if (s3.buffered >= (size_t) Min(opt_flush_bytes, opt_max_buffer_bytes) &&
			!s3_flush_now())
			return ROW_FATAL;
		if (!ship_kinesis)
			return ROW_OK;
	}

	/* Room in the batch, and one version per key per batch. */
	if (batch.n >= batch_capacity ||
		batch.bytes + record_bytes > (size_t) Min(opt_batch_bytes * (ship_kinesis ? opt_max_in_flight : 1),
												   opt_max_buffer_bytes) ||
		(ship_kinesis && !opt_aggregate && batch_has_key(pkey_buf.data)))
	{
		if (!batch_flush())
			return ROW_FATAL;
	}
	batch_add(row, len, pkey_buf.data, commit_lsn);
	return ROW_OK;
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
	tick_rc = rc;

	for (;;)
	{
		double		now = now_seconds();
		double		wait;
		StreamMessage msg;
		int			r;

		if (stop_requested)
			break;

		/* A partial batch waits no longer than the linger time. */
		if (batch.n > 0 && now - batch.first_at >= opt_linger_ms / 1000.0)
		{
			if (!batch_flush())
			{
				result = stop_requested ? LOOP_DONE : LOOP_FATAL;
				break;
			}
		}

		if (ship_s3 && s3_has_rows(&s3) && now - s3.first_at >= opt_flush_seconds)
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

			if (lsn > pos.confirmed ||
				(opt_status_interval > 0 && now - last_status >= opt_status_interval))
			{
				pos.confirmed = lsn;
				if (!stream_send_feedback(rc, pos.confirmed, false))
				{
					result = LOOP_RECONNECT;
					break;
				}
				last_status = now;
			}
		}

		/* --endpos: everything up to it has been received. */
		if (opt_endpos != 0 && pos.processed >= opt_endpos)
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
			wait = opt_status_interval > 0 ? last_status + opt_status_interval - now : 60;
			if (batch.n > 0)
				wait = Min(wait, batch.first_at + opt_linger_ms / 1000.0 - now);
			if (ship_s3 && s3_has_rows(&s3))
				wait = Min(wait, s3.first_at + opt_flush_seconds - now);
			if (wait < 0)
				wait = 0;
			if (stream_wait(rc, wait) < 0)
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
			RowResult rr = handle_row(msg.data, msg.len, msg.data_start, false);

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
		if (!stop_requested || batch.n == 0)
			stream_end(rc);
	}
	tick_rc = NULL;
	return result;
}

/* ----------------------------------------------------------------
 * Initial load
 * ----------------------------------------------------------------
 */

static bool
load_row(const char *row, size_t len, uint64_t lsn)
{
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
		exit(1);
	options = options_array(opt_plugin_options, opt_noptions);
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
			if (verbosity > 0)
				pg_log_info("fundrecs extension 1.2 not in the database: plugin options not checked before starting");
		}
		else if (state && strncmp(state, "22", 2) == 0)
		{
			pg_log_error("invalid plugin options: %s", PQresultErrorMessage(res));
			PQclear(res);
			PQfinish(conn);
			exit(2);
		}
		else if (state && strcmp(state, "42703") == 0)
		{
			pg_log_error("%s", PQresultErrorMessage(res));
			PQclear(res);
			PQfinish(conn);
			exit(2);
		}
		else
			pg_log_warning("could not check the plugin options: %s", PQerrorMessage(conn));
	}
	else if (PQntuples(res) > 0)
	{
		for (int i = 0; i < PQntuples(res); i++)
		{
			if (opt_allow_no_tables)
				pg_log_warning("%s", PQgetvalue(res, i, 0));
			else
				pg_log_error("%s", PQgetvalue(res, i, 0));
		}
		if (!opt_allow_no_tables)
		{
			pg_log_error_detail("Changes of such tables would be confirmed without being shipped.");
			pg_log_error_hint("Check the plugin options \"tables\" and \"orders_table\" (-o), or pass --allow-no-tables to start anyway.");
			PQclear(res);
			PQfinish(conn);
			exit(2);
		}
	}
	PQclear(res);
	PQfinish(conn);
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
	bool		create = opt_create_slot;
	bool		created = false;
	uint64_t	consistent = 0;
	char	   *snapshot = NULL;
	LoadStatus	status = LOAD_NONE;
	bool		ok = true;

	*lockconn = NULL;
	if (!opt_no_load)
	{
		LoadLockResult lr;

		if ((sql = db_connect(params, false)) == NULL)
			return false;
		lr = load_lock(sql, opt_slot, &stop_requested);
		if (lr != LOAD_LOCK_TAKEN)
		{
			PQfinish(sql);
			return false;
		}
		*lockconn = sql;
		status = load_status(sql, opt_slot);
		if (status == LOAD_ERROR)
			return false;
		if (status == LOAD_UNFINISHED)
		{
			/* We hold the lock: the loader of that slot is gone. */
			pg_log_warning("the initial load of slot \"%s\" did not finish; loading again with a new slot",
						   opt_slot);
			if (!drop_slot(sql, opt_slot))
				return false;
			create = true;
		}
		else if (status == LOAD_UNSUPPORTED && create)
		{
			pg_log_error("the initial load needs the fundrecs extension, version 1.1 or later, in this database");
			pg_log_error_hint("Run ALTER EXTENSION fundrecs UPDATE (or CREATE EXTENSION fundrecs), or pass --no-load.");
			return false;
		}
		/* Written before the slot exists: a kill from here on is seen. */
		if (create && status != LOAD_UNSUPPORTED && !load_state_creating(sql, opt_slot))
			return false;
	}
	else if (opt_create_slot)
	{
		/* --no-load: still warn about a gap an earlier load left. */
		PGconn	   *c = db_connect(params, false);

		if (c != NULL && load_status(c, opt_slot) == LOAD_UNFINISHED)
			pg_log_warning("the initial load of slot \"%s\" did not finish and --no-load leaves it unfinished",
						   opt_slot);
		if (c != NULL)
			PQfinish(c);
	}

	if (create)
	{
		if (!stream_create_slot(rc, opt_if_not_exists || status == LOAD_UNFINISHED, !opt_no_load,
								&created, &consistent, &snapshot, &stop_requested))
			ok = false;
		else if (created && verbosity >= 0)
			pg_log_info("created replication slot \"%s\" at %X/%X", opt_slot,
						(uint32_t) (consistent >> 32), (uint32_t) consistent);
		/*
		 * Not created (it existed, or an error): it is not ours to load,
		 * and the row written before must not make a later run drop it.
		 */
		if (!created && sql != NULL && status != LOAD_UNSUPPORTED &&
			!load_state_forget(sql, opt_slot))
			ok = false;
	}

	if (ok && created && !opt_no_load)
	{
		LoadParams	lp;

		memset(&lp, 0, sizeof(lp));
		lp.slot = opt_slot;
		lp.snapshot_name = snapshot;
		lp.consistent_lsn = consistent;
		lp.plugin_options = opt_plugin_options;
		lp.noptions = opt_noptions;
		lp.progress = verbosity > 0 || (verbosity == 0 && isatty(fileno(stderr)));
		lp.summary = verbosity >= 0;
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

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"host", required_argument, NULL, 'h'},
		{"port", required_argument, NULL, 'p'},
		{"username", required_argument, NULL, 'U'},
		{"no-password", no_argument, NULL, 'w'},
		{"password", no_argument, NULL, 'W'},
		{"slot", required_argument, NULL, 'S'},
		{"option", required_argument, NULL, 'o'},
		{"startpos", required_argument, NULL, 'I'},
		{"endpos", required_argument, NULL, 'E'},
		{"no-loop", no_argument, NULL, 'n'},
		{"status-interval", required_argument, NULL, 's'},
		{"verbose", no_argument, NULL, 'v'},
		{"quiet", no_argument, NULL, 'q'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, '?'},
		{"create-slot", no_argument, NULL, 1},
		{"if-not-exists", no_argument, NULL, 2},
		{"target", required_argument, NULL, 3},
		{"stream", required_argument, NULL, 4},
		{"stream-arn", required_argument, NULL, 5},
		{"region", required_argument, NULL, 6},
		{"endpoint-url", required_argument, NULL, 7},
		{"ca-file", required_argument, NULL, 8},
		{"batch-records", required_argument, NULL, 9},
		{"batch-bytes", required_argument, NULL, 10},
		{"linger-ms", required_argument, NULL, 11},
		{"max-buffer-bytes", required_argument, NULL, 12},
		{"request-timeout", required_argument, NULL, 13},
		{"retry-timeout", required_argument, NULL, 14},
		{"no-load", no_argument, NULL, 15},
		{"s3-url", required_argument, NULL, 16},
		{"s3-endpoint-url", required_argument, NULL, 17},
		{"s3-addressing", required_argument, NULL, 18},
		{"compression", required_argument, NULL, 19},
		{"flush-bytes", required_argument, NULL, 20},
		{"flush-seconds", required_argument, NULL, 21},
		{"shutdown-timeout", required_argument, NULL, 22},
		{"allow-no-tables", no_argument, NULL, 23},
		{"aggregate", no_argument, NULL, 24},
		{"max-in-flight", required_argument, NULL, 26},
		{"aggregate-bytes", required_argument, NULL, 25},
		{NULL, 0, NULL, 0}
	};
	int			c;
	int			option_index;
	ReplConnParams params;
	bool		first_connection = true;
	int			exit_code = 0;
	char	   *last_failure = NULL;	/* the stream's last error... */
	uint64_t	last_failure_pos = 0;	/* ...at this confirmed position */
	int			same_failures = 0;

	pg_logging_init(argv[0]);
	progname = get_progname(argv[0]);

	if (argc > 1)
	{
		if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-?") == 0)
		{
			usage();
			exit(0);
		}
		if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
		{
			printf("fundrecs_shipper (fundrecs) " FUNDRECS_SHIPPER_VERSION "\n");
			exit(0);
		}
	}

	while ((c = getopt_long(argc, argv, "d:h:p:U:wWS:o:I:E:ns:vqV?",
							long_options, &option_index)) != -1)
	{
		switch (c)
		{
			case 'd':
				opt_dbname = pg_strdup(optarg);
				break;
			case 'h':
				opt_host = pg_strdup(optarg);
				break;
			case 'p':
				parse_long("-p/--port", optarg, 1, 65535);
				opt_port = pg_strdup(optarg);
				break;
			case 'U':
				opt_user = pg_strdup(optarg);
				break;
			case 'w':
				opt_prompt_password = -1;
				break;
			case 'W':
				opt_prompt_password = 1;
				break;
			case 'S':
				opt_slot = pg_strdup(optarg);
				break;
			case 'o':
				add_plugin_option(optarg);
				break;
			case 'I':
				opt_startpos = parse_lsn_option("start", optarg);
				break;
			case 'E':
				opt_endpos = parse_lsn_option("end", optarg);
				break;
			case 'n':
				opt_no_loop = true;
				break;
			case 's':
				opt_status_interval = (int) parse_long("-s/--status-interval", optarg, 0, INT_MAX / 1000);
				break;
			case 'v':
				verbosity++;
				break;
			case 'q':
				verbosity = -1;
				break;
			case 'V':
				printf("fundrecs_shipper (fundrecs) " FUNDRECS_SHIPPER_VERSION "\n");
				exit(0);
			case 1:
				opt_create_slot = true;
				break;
			case 2:
				opt_if_not_exists = true;
				break;
			case 3:
				if (strcmp(optarg, "kinesis") == 0)
					ship_kinesis = true, ship_s3 = false, ship_stdout = false;
				else if (strcmp(optarg, "s3") == 0)
					ship_kinesis = false, ship_s3 = true, ship_stdout = false;
				else if (strcmp(optarg, "kinesis,s3") == 0 || strcmp(optarg, "s3,kinesis") == 0)
					ship_kinesis = true, ship_s3 = true, ship_stdout = false;
				else if (strcmp(optarg, "stdout") == 0)
					ship_kinesis = false, ship_s3 = false, ship_stdout = true;
				else
					usage_error("invalid target \"%s\": use kinesis, s3, kinesis,s3 or stdout", optarg);
				break;
			case 4:
				opt_stream = pg_strdup(optarg);
				break;
			case 5:
				opt_stream_arn = pg_strdup(optarg);
				break;
			case 6:
				opt_region = pg_strdup(optarg);
				break;
			case 7:
				opt_endpoint = pg_strdup(optarg);
				break;
			case 8:
				opt_ca_file = pg_strdup(optarg);
				break;
			case 9:
				opt_batch_records = (int) parse_long("--batch-records", optarg, 1, KINESIS_MAX_RECORDS);
				break;
			case 10:
				opt_batch_bytes = parse_long("--batch-bytes", optarg, 1, KINESIS_MAX_REQUEST_BYTES);
				break;
			case 11:
				opt_linger_ms = (int) parse_long("--linger-ms", optarg, 0, 3600 * 1000);
				break;
			case 12:
				opt_max_buffer_bytes = parse_long("--max-buffer-bytes", optarg, 1024, LONG_MAX);
				break;
			case 13:
				opt_request_timeout_ms = (int) parse_long("--request-timeout", optarg, 100, 3600 * 1000);
				break;
			case 14:
				opt_retry_timeout = (int) parse_long("--retry-timeout", optarg, 0, INT_MAX);
				break;
			case 15:
				opt_no_load = true;
				break;
			case 16:
				opt_s3_url = pg_strdup(optarg);
				break;
			case 17:
				opt_s3_endpoint = pg_strdup(optarg);
				break;
			case 18:
				if (strcmp(optarg, "path") != 0 && strcmp(optarg, "virtual") != 0)
					usage_error("invalid --s3-addressing \"%s\": use path or virtual", optarg);
				opt_s3_addressing = pg_strdup(optarg);
				break;
			case 19:
				if (strcmp(optarg, "gzip") == 0)
					opt_gzip = true;
				else if (strcmp(optarg, "none") == 0)
					opt_gzip = false;
				else
					usage_error("invalid --compression \"%s\": use gzip or none", optarg);
				break;
			case 20:
				opt_flush_bytes = parse_long("--flush-bytes", optarg, 1024, 1024L * 1024 * 1024);
				break;
			case 21:
				opt_flush_seconds = (int) parse_long("--flush-seconds", optarg, 1, 24 * 3600);
				break;
			case 22:
				opt_shutdown_timeout = (int) parse_long("--shutdown-timeout", optarg, 0, 24 * 3600);
				break;
			case 23:
				opt_allow_no_tables = true;
				break;
			case 24:
				opt_aggregate = true;
				break;
			case 26:
				opt_max_in_flight = (int) parse_long("--max-in-flight", optarg, 1, KINESIS_MAX_IN_FLIGHT);
				break;
			case 25:
				opt_aggregate_bytes = parse_long("--aggregate-bytes", optarg, 1024,
												 KINESIS_MAX_RECORD_BYTES - KINESIS_MAX_KEY_CHARS);
				break;
			default:
				pg_log_error_hint("Try \"%s --help\" for more information.", progname);
				exit(2);
		}
	}

	if (optind < argc)
		usage_error("too many command-line arguments (first is \"%s\")", argv[optind]);
	if (opt_slot == NULL)
		usage_error("%s", "no slot specified");
	if (opt_dbname == NULL && getenv("PGDATABASE") == NULL)
		usage_error("%s", "no database specified");
	if (opt_if_not_exists && !opt_create_slot)
		usage_error("%s", "--if-not-exists requires --create-slot");
	if (opt_startpos != 0 && opt_endpos != 0 && opt_endpos < opt_startpos)
		usage_error("%s", "--endpos must not be before --startpos");
	for (int i = 0; i < opt_noptions; i++)
	{
		bool		b;

		if (strcmp(opt_plugin_options[2 * i], "include_lsn") == 0 &&
			parse_bool_value(opt_plugin_options[2 * i + 1], &b) && !b)
			usage_error("%s", "the shipper needs the plugin option include_lsn (do not set it to false)");
	}

	if (ship_kinesis || ship_s3)
	{
		char	   *region;
		char	   *err;

		if (ship_kinesis && opt_stream == NULL && opt_stream_arn == NULL)
			usage_error("%s", "no stream specified: use --stream or --stream-arn");
		if (opt_stream != NULL && opt_stream_arn != NULL)
			usage_error("%s", "--stream and --stream-arn cannot be used together");
		if (!ship_kinesis && (opt_stream || opt_stream_arn))
			usage_error("%s", "--stream and --stream-arn are for --target kinesis");
		if (opt_aggregate && !ship_kinesis)
			usage_error("%s", "--aggregate is for --target kinesis");
		if (ship_s3 && opt_s3_url == NULL)
			usage_error("%s", "no S3 location specified: use --s3-url s3://BUCKET/PREFIX");
		if (!ship_s3 && (opt_s3_url || opt_s3_endpoint || opt_s3_addressing))
			usage_error("%s", "--s3-url, --s3-endpoint-url and --s3-addressing are for --target s3");
		region = aws_resolve_region(opt_region);
		if (region == NULL && opt_stream_arn != NULL)
		{
			/* arn:aws:kinesis:REGION:ACCOUNT:stream/NAME */
			char	   *copy = pg_strdup(opt_stream_arn);
			char	   *parts[6] = {0};
			int			n = 0;

			for (char *t = strtok(copy, ":"); t && n < 6; t = strtok(NULL, ":"))
				parts[n++] = t;
			if (n == 6 && strcmp(parts[2], "kinesis") == 0)
				region = pg_strdup(parts[3]);
		}
		if (region == NULL)
		{
			pg_log_error("no AWS region specified");
			pg_log_error_hint("Use --region, set AWS_REGION, or set a region in the AWS profile.");
			exit(2);
		}
		if (ship_kinesis)
		{
			err = kinesis_init(&kinesis, opt_endpoint, region, opt_stream, opt_stream_arn,
							   opt_ca_file, opt_request_timeout_ms, opt_retry_timeout,
							   opt_max_in_flight);
			if (err != NULL)
			{
				pg_log_error("%s", err);
				exit(2);
			}
			kinesis.call_records = opt_batch_records;
			kinesis.call_bytes = (size_t) opt_batch_bytes;
			if (verbosity > 0)
				pg_log_info("AWS credentials from %s, region %s, endpoint %s",
							kinesis.creds.source, region, kinesis.endpoint);
		}
		if (ship_s3)
		{
			/* --endpoint-url serves S3 too when S3 is the only target. */
			err = s3_init(&s3, opt_s3_url, opt_s3_endpoint ? opt_s3_endpoint :
						  (!ship_kinesis ? opt_endpoint : NULL), region, opt_s3_addressing,
						  opt_gzip, opt_ca_file, opt_request_timeout_ms, opt_retry_timeout);
			if (err != NULL)
			{
				pg_log_error("%s", err);
				exit(2);
			}
			if (verbosity > 0)
				pg_log_info("S3: bucket %s, prefix \"%s\", endpoint %s (%s-style), credentials from %s",
							s3.bucket, s3.prefix, s3.endpoint,
							s3.path_style ? "path" : "virtual-host", s3.creds.source);
		}
	}
	else if (opt_stream || opt_stream_arn || opt_endpoint || opt_s3_url)
		usage_error("%s", "--stream, --stream-arn, --endpoint-url and --s3-url are not for --target stdout");

	if (verbosity < 0)
		pg_logging_set_level(PG_LOG_ERROR);
	else if (verbosity > 1)
		pg_logging_increase_verbosity();

	pqsignal(SIGINT, sigexit_handler);
	pqsignal(SIGTERM, sigexit_handler);
	pqsignal(SIGPIPE, SIG_IGN);

	http_global_init();
	initPQExpBuffer(&pkey_buf);
	batch_init();

	set_wait_tick(shipper_tick);

	/* Fail early on an unknown stream or bad credentials. */
	if (ship_kinesis && kinesis_check_stream(&kinesis, &stop_requested) != SHIP_OK)
		exit(stop_requested ? 0 : 1);
	if (ship_kinesis && opt_aggregate)
	{
		if (kinesis_load_shard_map(&kinesis, &stop_requested) != SHIP_OK)
			exit(stop_requested ? 0 : 1);
		if (verbosity > 0)
			pg_log_info("aggregating into %d open shards, records of at most %ld bytes",
						kinesis.map.nshards, opt_aggregate_bytes);
	}
	if (ship_s3 && s3_check_bucket(&s3, &stop_requested) != SHIP_OK)
		exit(stop_requested ? 0 : 1);

	memset(&params, 0, sizeof(params));
	params.dbname = opt_dbname;
	params.host = opt_host;
	params.port = opt_port;
	params.user = opt_user;
	params.prompt_password = opt_prompt_password;
	params.slot = opt_slot;
	params.plugin_options = opt_plugin_options;
	params.noptions = opt_noptions;

	pos.confirmed = opt_startpos;

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
			exit(1);
		}
		if (rc != NULL && first_connection)
			check_plugin_options(&params);
		if (rc != NULL && first_connection && !prepare_slot(rc, &params, &lockconn))
		{
			stream_close(rc);
			if (lockconn)
				PQfinish(lockconn);
			exit(stop_requested ? 0 : 1);
		}
		if (rc != NULL && !stream_start(rc, pos.confirmed))
		{
			/* A slot that does not exist or a bad option will not heal. */
			if (stream_start_error_is_permanent(rc))
			{
				stream_close(rc);
				if (lockconn)
					PQfinish(lockconn);
				exit(1);
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
			if (verbosity > 0)
				pg_log_info("streaming from slot \"%s\" at %X/%X", opt_slot,
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
				exit_code = 1;
				break;
			}
			/* Connection lost: deliver what we hold, then resume after it. */
			if (flush_all())
				pos.confirmed = confirmable_lsn();
			else
				exit(1);

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
				pg_log_error("the stream failed %d times in a row at %X/%X with the same error",
							 same_failures, (uint32_t) (pos.confirmed >> 32), (uint32_t) pos.confirmed);
				pg_log_error_detail("%s", last_failure);
				pg_log_error_hint("The server cannot decode the change after this position; fix its cause (see the error), then start the shipper again.");
				exit(1);
			}
		}

		if (opt_no_loop || stop_requested)
		{
			if (!stop_requested)
			{
				pg_log_error("connection to the server was lost and --no-loop is set");
				exit_code = 1;
			}
			break;
		}
		pg_log_info("reconnecting in %d s", RECONNECT_SLEEP_SECS);
		for (int i = 0; i < RECONNECT_SLEEP_SECS * 10 && !stop_requested; i++)
			usleep(100000);
		if (stop_requested)
			break;
	}

	if (verbosity > 0 || (verbosity == 0 && exit_code == 0 && opt_endpos != 0))
		pg_log_info("shipped %llu rows, confirmed up to %X/%X",
					(unsigned long long) rows_shipped,
					(uint32_t) (pos.confirmed >> 32), (uint32_t) pos.confirmed);
	if (ship_kinesis && verbosity > 0)
		pg_log_info("%llu PutRecords calls, %llu Kinesis records, %llu retried calls, %llu retried records, %llu throttled records",
					(unsigned long long) kinesis.calls,
					(unsigned long long) kinesis.records_sent,
					(unsigned long long) kinesis.retried_calls,
					(unsigned long long) kinesis.retried_records,
					(unsigned long long) kinesis.throttled_records);
	if (ship_kinesis && opt_aggregate && verbosity > 0)
		pg_log_info("%llu rows in aggregated records (%.1f rows per record), %llu records sent again after resharding",
					(unsigned long long) kinesis.rows_aggregated,
					kinesis.records_sent ? (double) kinesis.rows_aggregated / kinesis.records_sent : 0.0,
					(unsigned long long) kinesis.aggregates_resent);
	return exit_code;
}
