/*-------------------------------------------------------------------------
 *
 * main.c
 *	  fundrecs_shipper: reads a fundrecs_decoder replication slot over the
 *	  streaming replication protocol and ships every row to Kinesis, S3,
 *	  both, or standard output.  The flush position confirmed to PostgreSQL
 *	  moves only past whole transactions whose rows have all been
 *	  delivered.
 *
 * The parts, as pg_recvlogical's: options.c (parse and check), target*.c
 * (where rows go), slot.c (the slot, before and while streaming),
 * replicate.c (the stream loop), and here: set up, then connect, prepare
 * and stream until told to stop, reconnecting after a lost connection.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "options.h"
#include "replicate.h"
#include "slot.h"

/* The same stream error at the same position this often: exit 1. */
#define MAX_SAME_STREAM_FAILURES 3

/* Set by the signal handlers. */
static StopFlag stop_requested = 0;
static StopFlag stop_now = 0;	/* a second SIGINT or SIGTERM */
static StopFlag reload_requested = 0;	/* SIGHUP */

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

/* /metrics and /healthz, with --metrics-address. */
static void
start_metrics(const char *target)
{
	int			port = 0;
	char	   *err;

	if (!opts.metrics_address)
		return;
	err = metrics_start(opts.metrics_address, opts.health_max_lag, target,
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

/* Everything before the first connection. */
static void
set_up(Replicator *r)
{
	/* Every JSON log line says which slot and target it is about. */
	log_set_context("slot", opts.slot);
	log_set_context("target", target_chosen_names());
	if (opts.stream != NULL || opts.stream_arn != NULL)
		log_set_context("stream", opts.stream != NULL ? opts.stream : opts.stream_arn);
	if (opts.s3_url != NULL)
		log_set_context("s3_url", opts.s3_url);

	replicate_init(r, &stop_requested, &stop_now, &reload_requested);
	start_metrics(target_name(r->target));
	if (opts.verbosity < 0)
		pg_logging_set_level(PG_LOG_ERROR);
	else if (opts.verbosity > 1)
		pg_logging_increase_verbosity();

	notify_init();
	pqsignal(SIGINT, sigexit_handler);
	pqsignal(SIGTERM, sigexit_handler);
	pqsignal(SIGPIPE, SIG_IGN);
	pqsignal(SIGHUP, sighup_handler);

	/* Fail early on an unknown stream or bucket, or bad credentials. */
	if (target_check(r->target, &stop_requested) != SHIP_OK)
		exit(stop_requested ? 0 : failure_exit_code());

	r->params.dbname = opts.dbname;
	r->params.host = opts.host;
	r->params.port = opts.port;
	r->params.user = opts.user;
	r->params.prompt_password = opts.prompt_password;
	r->params.slot = opts.slot;
	r->params.plugin_options = opts.plugin_options;
	r->params.noptions = opts.noptions;
	slot_monitor_init(&r->monitor, &r->params, &stop_requested);
}

/* Exits after closing what the first connection opened. */
static void
exit_before_streaming(ReplConn *rc, PGconn *lockconn, int code)
{
	stream_close(rc);
	if (lockconn)
		PQfinish(lockconn);
	exit(code);
}

/*
 * Connects and starts streaming.  The first connection also checks the
 * plugin options, claims the target and prepares the slot: failing there
 * is fatal, like pg_recvlogical's first connection.  NULL when the
 * connection is to be tried again.
 */
static ReplConn *
connect_and_start(Replicator *r, bool first)
{
	ReplConn   *rc = stream_connect(&r->params);
	PGconn	   *lockconn = NULL;

	if (rc == NULL)
	{
		/* A certificate that cannot be verified will not heal either. */
		if (first || failure_exit_code() == EXIT_PERMANENT)
			exit(failure_exit_code());
		return NULL;
	}
	if (first)
	{
		const char *system_id;
		const char *dbname;
		SlotLoad	load;

		slot_check_plugin_options(&r->params);
		/* Connected, targets checked: systemd may count it started. */
		notify_ready("connected; preparing the slot");
		/* The target's place (S3: the prefix) is this slot's alone. */
		stream_identity(rc, &system_id, &dbname);
		if (target_claim(r->target, system_id, dbname, opts.slot, &stop_requested) != SHIP_OK ||
			!slot_prepare(rc, &r->params, r->target, r->stop, &lockconn, &load))
			exit_before_streaming(rc, lockconn, stop_requested ? 0 : failure_exit_code());
		/* A new slot: its rows first, then the stream. */
		if (load.run && !replicate_load(r, load.sql, &load.params))
			exit_before_streaming(rc, lockconn, stop_requested ? 0 : failure_exit_code());
		free(load.snapshot);
		/* Backfills: chunks shipped before a stop settled, the queue read. */
		if (!backfill_prepare(r->backfill))
			exit_before_streaming(rc, lockconn, stop_requested ? 0 : failure_exit_code());
	}
	else
		backfill_restart(r->backfill);
	/* A slot invalidated while the shipper was away: say so. */
	replicate_check_slot(r);
	if (!stream_start(rc, r->pos.confirmed))
	{
		/* A slot that does not exist or a bad option will not heal. */
		if (stream_start_error_is_permanent(rc))
		{
			retry_note_permanent();
			exit_before_streaming(rc, lockconn, failure_exit_code());
		}
		stream_close(rc);
		rc = NULL;
	}
	/* Streaming (the slot is active) or not: the lock has done its job. */
	if (lockconn)
		PQfinish(lockconn);
	if (rc != NULL && opts.verbosity > 0)
		log_info("streaming from slot \"%s\" at %X/%X", opts.slot, LSN_FORMAT_ARGS(r->pos.confirmed));
	return rc;
}

/* The same stream error at the same position, again and again. */
typedef struct FailureStreak
{
	char	   *error;			/* the stream's last error... */
	uint64_t	pos;			/* ...at this confirmed position */
	int			count;
} FailureStreak;

/*
 * The same error again and again at the same position is the plugin
 * failing on one change: retrying cannot help, and an exit lets systemd's
 * restart limits and alerts see it.
 */
static void
count_failure(FailureStreak *s, const char *error, uint64_t pos)
{
	if (error != NULL && s->error != NULL && strcmp(error, s->error) == 0 && pos == s->pos)
		s->count++;
	else
	{
		free(s->error);
		s->error = error ? pg_strdup(error) : NULL;
		s->pos = pos;
		s->count = error ? 1 : 0;
	}
	if (s->count >= MAX_SAME_STREAM_FAILURES)
	{
		log_error("the stream failed %d times in a row at %X/%X with the same error",
				  s->count, LSN_FORMAT_ARGS(pos));
		log_error_detail("%s", s->error);
		log_error_hint("The server cannot decode the change after this position; fix its cause (see the error), then start the shipper again.");
		exit(failure_exit_code());
	}
}

/* Streams once; returns the exit code, or -1 to reconnect. */
static int
stream_once(Replicator *r, ReplConn *rc, FailureStreak *streak)
{
	LoopResult	lr = replicate_stream(r, rc);
	char	   *error = stream_last_error(rc) ? pg_strdup(stream_last_error(rc)) : NULL;

	stream_close(rc);
	if (lr != LOOP_RECONNECT)
	{
		free(error);
		if (lr == LOOP_DONE)
			return 0;

		/*
		 * Stopped (SIGTERM, SIGINT) with deliveries that did not finish in
		 * --shutdown-timeout: nothing is lost (their rows are not confirmed
		 * and come again), so a stop is a clean exit for systemd; a permanent
		 * failure stays one.
		 */
		if (stop_requested && failure_exit_code() != EXIT_PERMANENT)
		{
			log_warning("stopped before every held row was delivered: they were not confirmed and are shipped again on restart");
			return 0;
		}
		return failure_exit_code();
	}
	/* Connection lost: deliver what we hold, then resume after it. */
	if (!replicate_flush(r))
		exit(failure_exit_code());
	r->pos.confirmed = replicate_confirmable(r);
	count_failure(streak, error, r->pos.confirmed);
	free(error);
	return -1;
}

int
main(int argc, char **argv)
{
	Replicator	r;
	FailureStreak streak = {NULL, 0, 0};
	int			exit_code = 0;

	/*
	 * Freed memory stays with the process: batches, request bodies and query
	 * results are built again and again at the same sizes, and memory given
	 * back to the kernel comes back as page faults (with glibc's defaults
	 * they cost more than a backfill's reads: bench/backfill). What is kept
	 * is bounded by the largest working set, not by time.  (Request bodies
	 * and aggregated records once came from mmap, each one page-faulted in
	 * afresh: a quarter of the shipper's CPU with --aggregate.)
	 */
	mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);

	parse_options(argc, argv);
	check_options();
	/* Only the AWS settings matter to --check-credentials. */
	if (!opts.check_credentials)
		target_check_options();
	http_global_init("fundrecs_shipper/" FUNDRECS_SHIPPER_VERSION);
	set_up(&r);
	for (bool first = true;; first = false)
	{
		ReplConn   *rc = connect_and_start(&r, first);

		if (rc != NULL && (exit_code = stream_once(&r, rc, &streak)) >= 0)
			break;
		exit_code = 0;
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
	replicate_finish(&r, exit_code);
	return exit_code;
}
