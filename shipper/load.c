/*-------------------------------------------------------------------------
 *
 * load.c
 *	  The initial load: rows that existed before the slot, read through the
 *	  snapshot that the slot's creation exported and formatted by the
 *	  extension's fundrecs.load_rows() (the plugin's own code), shipped
 *	  before the stream of changes starts at the slot's consistent point.
 *	  No row is missed and none is shipped twice at that boundary.
 *
 *	  fundrecs.load_state remembers a load until every row of it has been
 *	  acknowledged; a load found unfinished at start-up is done again with a
 *	  fresh slot and snapshot.
 *
 *	  A load that replaces an earlier one (an unfinished load done again,
 *	  or --resync after a slot was lost) is preceded by a reset marker row
 *	  at the new consistent point: the changes between the old and the new
 *	  slot were never decoded, so consumers must drop what they hold from
 *	  before the marker, or they keep rows deleted in between.
 *
 *	  The protocol is safe against any interleaving of shippers, kills and
 *	  restarts:
 *	  - Everything from reading the load state until streaming has started
 *		is done holding a session advisory lock for the slot name, so only
 *		one process at a time decides about a slot; a second shipper waits,
 *		and a killed one releases the lock with its session.  Nobody drops
 *		a slot without holding it, and a loading slot is never streamed
 *		from (the loader still holds the lock).
 *	  - The state row is written (unfinished, consistent point 0/0) before
 *		the slot is created, so a kill between the two is seen as an
 *		unfinished load, never as a slot without a load.
 *	  - A load is marked finished only if the row still names the
 *		consistent point of the slot it loaded for: a load can never finish
 *		another slot's load.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <sys/select.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "access/xlogdefs.h"
#include "log.h"
#include "libpq-fe.h"
#include "load.h"
#include "notify.h"
#include "pqexpbuffer.h"
#include "retry.h"
#include "rowscan.h"
#include "stream.h"


/* The plugin options as a text[] literal: {"name","value",...}. */
char *
options_array(char **options, int noptions)
{
	PQExpBufferData buf;

	initPQExpBuffer(&buf);
	appendPQExpBufferChar(&buf, '{');
	for (int i = 0; i < noptions * 2; i++)
	{
		if (i > 0)
			appendPQExpBufferChar(&buf, ',');
		appendPQExpBufferChar(&buf, '"');
		for (const char *p = options[i]; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendPQExpBufferChar(&buf, '\\');
			appendPQExpBufferChar(&buf, *p);
		}
		appendPQExpBufferChar(&buf, '"');
	}
	appendPQExpBufferChar(&buf, '}');
	return buf.data;
}

static bool
exec_ok(PGconn *conn, const char *sql, int nparams, const char *const *values,
		ExecStatusType want, const char *what)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
	bool		ok = PQresultStatus(res) == want;

	if (!ok)
		log_error("%s failed: %s", what, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

LoadStatus
load_status(PGconn *conn, const char *slot)
{
	const char *values[1] = {slot};
	PGresult   *res;
	LoadStatus	status;

	res = PQexecParams(conn,
					   "SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = $1",
					   1, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (state != NULL && (strcmp(state, "42P01") == 0 || strcmp(state, "3F000") == 0))
			status = LOAD_UNSUPPORTED;
		else
		{
			log_error("could not read the initial load's state: %s", PQerrorMessage(conn));
			status = LOAD_ERROR;
		}
	}
	else if (PQntuples(res) == 0)
		status = LOAD_NONE;
	else
		status = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? LOAD_FINISHED : LOAD_UNFINISHED;
	PQclear(res);
	return status;
}

bool
drop_slot(PGconn *conn, const char *slot)
{
	const char *values[1] = {slot};

	/* A kill may have come before the slot was created: drop it if it exists. */
	return exec_ok(conn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
				   "WHERE slot_name = $1 AND database = current_database()",
				   1, values, PGRES_TUPLES_OK, "dropping the replication slot");
}


int
load_state_unfinished(PGconn *conn, const char *slot, uint64_t *lsn)
{
	const char *values[1] = {slot};
	PGresult   *res;
	int			found;

	res = PQexecParams(conn,
					   "SELECT consistent_lsn FROM fundrecs.load_state WHERE slot_name = $1 AND finished_at IS NULL "
					   "AND consistent_lsn <> '0/0'",
					   1, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_error("could not read the initial load's state: %s", PQerrorMessage(conn));
		found = -1;
	}
	else if (PQntuples(res) == 0)
		found = 0;
	else
	{
		const char *v = PQgetvalue(res, 0, 0);

		found = rowscan_parse_lsn(v, strlen(v), lsn) ? 1 : -1;
	}
	PQclear(res);
	return found;
}

int
slot_exists(PGconn *conn, const char *slot)
{
	const char *values[1] = {slot};
	PGresult   *res;
	int			found;

	/* Invalidated: wal_status lost, or (17 and later) an invalidation_reason. */
	res = PQexecParams(conn,
					   "SELECT count(*), coalesce(bool_or(s.wal_status = 'lost' OR "
					   "(pg_catalog.to_jsonb(s) ->> 'invalidation_reason') IS NOT NULL), false) "
					   "FROM pg_catalog.pg_replication_slots s "
					   "WHERE slot_name = $1 AND database = pg_catalog.current_database()",
					   1, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_error("could not look up replication slot \"%s\": %s", slot, PQerrorMessage(conn));
		found = -1;
	}
	else if (strcmp(PQgetvalue(res, 0, 0), "0") == 0)
		found = 0;
	else
		found = strcmp(PQgetvalue(res, 0, 1), "t") == 0 ? 2 : 1;
	PQclear(res);
	return found;
}

/*
 * A slot whose initial load finished is gone: after a failover to a
 * standby without a copy of it, or a drop.  A new slot would ship updated
 * rows again as load rows, but never the rows deleted in between: refuse,
 * and say what the choices are.
 */
void
report_lost_slot(PGconn *conn, const char *slot)
{
	const char *values[1] = {slot};
	PGresult   *res;

	res = PQexecParams(conn,
					   "SELECT consistent_lsn, to_char(finished_at AT TIME ZONE 'UTC', "
					   "'YYYY-MM-DD HH24:MI:SS \"UTC\"') FROM fundrecs.load_state WHERE slot_name = $1",
					   1, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		log_error("replication slot \"%s\" does not exist, but fundrecs.load_state shows that it was created at %s and its initial load finished at %s",
				  slot, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
	else
		log_error("replication slot \"%s\" does not exist, but fundrecs.load_state shows that it was created and loaded",
				  slot);
	PQclear(res);
	log_error_detail("The changes made between the last position the slot confirmed and its loss can no longer be decoded. A new slot and a new initial load would ship the rows that exist now, but never the rows deleted in between: consumers would keep them. This happens after a failover to a standby that had no copy of the slot, or after the slot was dropped.");
	log_error_hint("Run the shipper once with --resync: it creates the slot and ships a reset marker row (op \"reset\"), then every row as a new initial load; consumers drop what they hold from before the marker's lsn. On PostgreSQL 17 or later, create the slot with --enable-failover so that standbys keep a copy of it.");
}

char *
reset_marker_row(const char *slot, uint64_t lsn, bool dms)
{
	PQExpBufferData buf;
	char		lsnbuf[32];
	char		when[40];
	struct timeval tv;
	struct tm	tm;

	snprintf(lsnbuf, sizeof(lsnbuf), "%X/%X", LSN_FORMAT_ARGS(lsn));
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(when, 20, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + 19, sizeof(when) - 19, ".%06ldZ", (long) tv.tv_usec);

	/* Slot names are lower case letters, digits and underscores: no escapes. */
	initPQExpBuffer(&buf);
	if (dms)
		appendPQExpBuffer(&buf,
						  "{\"data\":{\"slot_name\":\"%s\",\"consistent_lsn\":\"%s\"},"
						  "\"metadata\":{\"timestamp\":\"%s\",\"record-type\":\"control\","
						  "\"operation\":\"reset\",\"partition-key-type\":\"schema-table\","
						  "\"schema-name\":\"fundrecs\",\"table-name\":\"resync\","
						  "\"lsn\":\"%s\",\"commit-lsn\":\"%s\",\"route\":\"_resync\","
						  "\"key\":{\"slot_name\":\"%s\"}}}",
						  slot, lsnbuf, when, lsnbuf, lsnbuf, slot);
	else
		appendPQExpBuffer(&buf,
						  "{\"op\":\"reset\",\"schema\":\"fundrecs\",\"table\":\"resync\","
						  "\"lsn\":\"%s\",\"commit_lsn\":\"%s\",\"commit_time\":\"%s\","
						  "\"key\":{\"slot_name\":\"%s\"},\"route\":\"_resync\","
						  "\"data\":{\"slot_name\":\"%s\",\"consistent_lsn\":\"%s\"}}",
						  lsnbuf, lsnbuf, when, slot, slot, lsnbuf);
	return buf.data;
}

/* The advisory lock of a slot's load: two int4 keys. */
#define LOAD_LOCK_ARGS "hashtext('fundrecs_shipper load'), hashtext($1)"

LoadLockResult
load_lock(PGconn *conn, const char *slot, StopFlag *stop)
{
	const char *values[1] = {slot};
	double		last_report = 0;

	for (;;)
	{
		PGresult   *res = PQexecParams(conn, "SELECT pg_try_advisory_lock(" LOAD_LOCK_ARGS ")",
									   1, NULL, values, NULL, NULL, 0);
		bool		got;

		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			log_error("could not take the load lock of slot \"%s\": %s", slot,
					  PQerrorMessage(conn));
			PQclear(res);
			return LOAD_LOCK_ERROR;
		}
		got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
		if (got)
			return LOAD_LOCK_TAKEN;

		if (now_seconds() - last_report >= 60)
		{
			char	   *holder = NULL;

			res = PQexecParams(conn,
							   "SELECT string_agg(l.pid::text || coalesce(' (' || a.application_name || "
							   "coalesce(' on ' || a.client_addr::text, '') || ')', ''), ', ') "
							   "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
							   "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
							   "AND l.classid::int4 = hashtext('fundrecs_shipper load') "
							   "AND l.objid::int4 = hashtext($1) AND l.database = "
							   "(SELECT oid FROM pg_database WHERE datname = current_database())",
							   1, NULL, values, NULL, NULL, 0);
			if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
				!PQgetisnull(res, 0, 0))
				holder = pg_strdup(PQgetvalue(res, 0, 0));
			PQclear(res);
			log_warning("another fundrecs_shipper is preparing or loading slot \"%s\"%s%s; waiting for it",
						slot, holder ? ": server process " : "", holder ? holder : "");
			log_warning_detail("Two shippers of one slot would race; this one goes on when the other one streams or exits.");
			free(holder);
			last_report = now_seconds();
		}
		/* Waiting is not hanging: systemd's watchdog is fed, and told why. */
		notify_status(false, "waiting for another fundrecs_shipper of slot %s to stream or exit", slot);
		for (int i = 0; i < 10; i++)
		{
			if (stop && *stop)
				return LOAD_LOCK_STOPPED;
			notify_watchdog();
			usleep(100000);
		}
	}
}

bool
load_unlock(PGconn *conn, const char *slot)
{
	const char *values[1] = {slot};

	return exec_ok(conn, "SELECT pg_advisory_unlock(" LOAD_LOCK_ARGS ")", 1, values,
				   PGRES_TUPLES_OK, "releasing the load lock");
}

bool
load_state_creating(PGconn *conn, const char *slot)
{
	const char *values[1] = {slot};

	return exec_ok(conn,
				   "INSERT INTO fundrecs.load_state (slot_name, consistent_lsn) VALUES ($1, '0/0') "
				   "ON CONFLICT (slot_name) DO UPDATE SET consistent_lsn = '0/0', "
				   "started_at = now(), finished_at = NULL, rows_loaded = NULL",
				   1, values, PGRES_COMMAND_OK, "recording the slot's creation");
}

bool
load_state_forget(PGconn *conn, const char *slot)
{
	const char *values[1] = {slot};

	return exec_ok(conn,
				   "DELETE FROM fundrecs.load_state WHERE slot_name = $1 AND consistent_lsn = '0/0' "
				   "AND finished_at IS NULL",
				   1, values, PGRES_COMMAND_OK, "recording that the slot existed");
}

/*
 * Runs an UPDATE of the slot's state row that must hit exactly one row;
 * anything else means another process changed the row.
 */
static bool
update_one_row(PGconn *conn, const char *sql, int nparams, const char *const *values,
			   const char *what, const char *slot)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, values, NULL, NULL, 0);
	bool		ok = true;

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		log_error("%s failed: %s", what, PQerrorMessage(conn));
		ok = false;
	}
	else if (strcmp(PQcmdTuples(res), "1") != 0)
	{
		log_error("the load state of slot \"%s\" was changed by another process", slot);
		log_error_detail("Another shipper or an operator recreated the slot or its state during this load; this process does not stream from a slot it did not load.");
		log_error_hint("Run one fundrecs_shipper per slot; restart this one to load again if needed.");
		ok = false;
	}
	PQclear(res);
	return ok;
}

uint64_t	load_rows_done = 0;
uint64_t	load_rows_estimate = 0;

static void
report_progress(const char *table, uint64_t done, uint64_t estimate, double started,
				bool final)
{
	double		secs = now_seconds() - started;
	double		rate = secs > 0 ? done / secs : 0;

	if (final)
		log_info("initial load: %llu rows in %.1f s (%.0f rows/s)",
				 (unsigned long long) done, secs, rate);
	else if (estimate > done && rate > 0)
		log_info("initial load: %llu of ~%llu rows (%s), %.0f rows/s, ETA %.0f s",
				 (unsigned long long) done, (unsigned long long) estimate, table, rate,
				 (estimate - done) / rate);
	else
		log_info("initial load: %llu rows (%s), %.0f rows/s",
				 (unsigned long long) done, table, rate);
}

/* A load in progress. */
typedef struct LoadRun
{
	PGconn	   *conn;
	const LoadParams *lp;
	LoadRowFn	row_fn;
	void	   *arg;
	StopFlag   *stop;
	char		lsn[32];		/* the consistent point, as text */
	char	   *options;		/* the plugin options, as a text[] literal */
	uint64_t	estimate;
	uint64_t	done;
	double		started;
	double		last_report;
} LoadRun;

/*
 * Binds the state row (written before the slot was created) to this
 * slot's consistent point, then opens the transaction that sees the
 * slot's snapshot.
 */
static bool
load_begin(LoadRun *run)
{
	const char *values[2] = {run->lp->slot, run->lsn};
	char	   *lit;
	char	   *sql;
	bool		ok;

	if (!update_one_row(run->conn,
						"UPDATE fundrecs.load_state SET consistent_lsn = $2, started_at = now() "
						"WHERE slot_name = $1 AND consistent_lsn = '0/0' AND finished_at IS NULL",
						2, values, "recording the initial load", run->lp->slot))
		return false;
	if (run->lp->chunked)
		return true;
	lit = PQescapeLiteral(run->conn, run->lp->snapshot_name, strlen(run->lp->snapshot_name));
	sql = psprintf("SET TRANSACTION SNAPSHOT %s", lit);
	PQfreemem(lit);
	ok = exec_ok(run->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL,
				 PGRES_COMMAND_OK, "starting the initial load") &&
		exec_ok(run->conn, sql, 0, NULL, PGRES_COMMAND_OK, "importing the slot's snapshot");
	free(sql);
	return ok;
}

/* Asks the server to stop sending a table's rows. */
static void
cancel_query(PGconn *conn)
{
	PGcancel   *cancel = PQgetCancel(conn);
	char		errbuf[256];

	if (cancel != NULL)
	{
		PQcancel(cancel, errbuf, sizeof(errbuf));
		PQfreeCancel(cancel);
	}
}

/* One table's rows, one at a time (single-row mode), to row_fn. */
static bool
load_table(LoadRun *run, const char *table)
{
	const char *values[3] = {table, run->lsn, run->options};
	PGresult   *res;
	bool		ok = true;
	bool		cancelled = false;

	if (!PQsendQueryParams(run->conn, "SELECT fundrecs.load_rows($1::regclass, $2::pg_lsn, $3::text[])",
						   3, NULL, values, NULL, NULL, 0) ||
		!PQsetSingleRowMode(run->conn))
	{
		log_error("could not load table %s: %s", table, PQerrorMessage(run->conn));
		return false;
	}
	while ((res = pq_next_result(run->conn, run->stop, &cancelled)) != NULL)
	{
		ExecStatusType st = PQresultStatus(res);

		if (st == PGRES_SINGLE_TUPLE && ok)
		{
			if (!run->row_fn(run->arg, PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0),
							 run->lp->consistent_lsn))
				ok = false;
			run->done++;
			load_rows_done++;
			if (run->lp->progress && now_seconds() - run->last_report >= 1.0)
			{
				report_progress(table, run->done, run->estimate, run->started, false);
				run->last_report = now_seconds();
			}
			if (run->stop && *run->stop)
				ok = false;
			if (!ok && !cancelled)
			{
				cancel_query(run->conn);
				cancelled = true;
			}
		}
		else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && ok && !cancelled)
		{
			log_error("could not load table %s: %s", table, PQerrorMessage(run->conn));
			ok = false;
		}
		PQclear(res);
	}
	return ok && !(run->stop && *run->stop);
}

/* Commits the load's transaction and records its end. */
static bool
load_end(LoadRun *run)
{
	char		count[32];
	const char *values[3];

	if (!exec_ok(run->conn, "COMMIT", 0, NULL, PGRES_COMMAND_OK, "ending the initial load"))
		return false;
	snprintf(count, sizeof(count), "%llu", (unsigned long long) run->done);
	values[0] = run->lp->slot;
	values[1] = count;
	values[2] = run->lsn;
	if (!update_one_row(run->conn, "UPDATE fundrecs.load_state SET finished_at = now(), rows_loaded = $2 "
						"WHERE slot_name = $1 AND consistent_lsn = $3 AND finished_at IS NULL",
						3, values, "recording the end of the initial load", run->lp->slot))
		return false;
	if (run->lp->progress || run->lp->summary)
		report_progress("", run->done, run->estimate, run->started, true);
	return true;
}

/*
 * --initial-load=chunked: the slot streams at once, and every table the
 * load would read is backfilled for this slot.  The requests and the load's
 * end are one transaction, so a load is either unfinished (the slot is made
 * again) or has its backfills queued in the slot's stream.
 */
static bool
request_backfills(LoadRun *run)
{
	const char *values[2] = {run->options, run->lp->slot};
	PGresult   *res;
	int			ntables;
	char		count[32];
	const char *v2[3];

	res = PQexec(run->conn, "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'fundrecs'"
				 " AND string_to_array(extversion, '.')::int[] >= '{1,8}'");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		PQclear(res);
		log_error("--initial-load=chunked needs the fundrecs extension, version 1.8 or later, in this database");
		log_error_hint("Run ALTER EXTENSION fundrecs UPDATE, or use --initial-load=snapshot.");
		return false;
	}
	PQclear(res);
	if (!exec_ok(run->conn, "BEGIN", 0, NULL, PGRES_COMMAND_OK, "starting the initial load"))
		return false;
	res = PQexecParams(run->conn,
					   "SELECT fundrecs.backfill(t.tbl, slot_name => $2)"
					   "  FROM fundrecs.load_tables($1::text[]) t ORDER BY t.tbl::text",
					   2, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_error("could not request the backfills of the initial load: %s", PQerrorMessage(run->conn));
		if (strstr(PQerrorMessage(run->conn), "permission denied to backfill") != NULL)
			log_error_hint("--initial-load=chunked requests backfills as the shipper's user: make it a member of the role fundrecs_backfill (CREATE ROLE fundrecs_backfill NOLOGIN; GRANT fundrecs_backfill TO ...), or use --initial-load=snapshot.");
		PQclear(res);
		PQclear(PQexec(run->conn, "ROLLBACK"));
		return false;
	}
	ntables = PQntuples(res);
	PQclear(res);
	snprintf(count, sizeof(count), "%d", 0);
	v2[0] = run->lp->slot;
	v2[1] = count;
	v2[2] = run->lsn;
	if (!update_one_row(run->conn, "UPDATE fundrecs.load_state SET finished_at = now(), rows_loaded = $2 "
						"WHERE slot_name = $1 AND consistent_lsn = $3 AND finished_at IS NULL",
						3, v2, "recording the end of the initial load", run->lp->slot) ||
		!exec_ok(run->conn, "COMMIT", 0, NULL, PGRES_COMMAND_OK, "requesting the backfills"))
	{
		PQclear(PQexec(run->conn, "ROLLBACK"));
		return false;
	}
	if (run->lp->progress || run->lp->summary)
		log_info("initial load: %d table%s to backfill in chunks while streaming from %s (see fundrecs.backfill_status)",
				 ntables, ntables == 1 ? "" : "s", run->lsn);
	return true;
}

bool
initial_load(PGconn *conn, const LoadParams *lp, LoadRowFn row_fn, LoadFlushFn flush_fn,
			 void *arg, StopFlag *stop)
{
	LoadRun		run;
	const char *values[1];
	PGresult   *tables;
	bool		ok = true;

	memset(&run, 0, sizeof(run));
	run.conn = conn;
	run.lp = lp;
	run.row_fn = row_fn;
	run.arg = arg;
	run.stop = stop;
	run.started = run.last_report = now_seconds();
	snprintf(run.lsn, sizeof(run.lsn), "%X/%X", LSN_FORMAT_ARGS(lp->consistent_lsn));
	if (!load_begin(&run))
		return false;

	run.options = options_array(lp->plugin_options, lp->noptions);
	if (lp->chunked)
	{
		/* Before every row of the stream, at the consistent point. */
		if (lp->reset_marker)
		{
			char	   *marker = reset_marker_row(lp->slot, lp->consistent_lsn, lp->dms_format);

			if (lp->progress || lp->summary)
				log_info("shipping a reset marker row at %s before the initial load", run.lsn);
			ok = row_fn(arg, marker, strlen(marker), lp->consistent_lsn) && flush_fn(arg);
			free(marker);
		}
		ok = ok && request_backfills(&run);
		free(run.options);
		return ok;
	}
	values[0] = run.options;
	tables = PQexecParams(conn, "SELECT tbl::text, estimated_rows FROM fundrecs.load_tables($1::text[])",
						  1, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(tables) != PGRES_TUPLES_OK)
	{
		log_error("could not list the tables to load: %s", PQerrorMessage(conn));
		PQclear(tables);
		free(run.options);
		return false;
	}
	for (int i = 0; i < PQntuples(tables); i++)
		run.estimate += strtoull(PQgetvalue(tables, i, 1), NULL, 10);
	load_rows_estimate = run.estimate;
	/* No estimate: tables never analyzed (or empty). */
	if (lp->progress && run.estimate > 0)
		log_info("initial load of %d tables (~%llu rows) at %s", PQntuples(tables),
				 (unsigned long long) run.estimate, run.lsn);
	else if (lp->progress)
		log_info("initial load of %d tables at %s (no row estimate: not analyzed yet)",
				 PQntuples(tables), run.lsn);

	/*
	 * Before every load row, at the same position: consumers drop older
	 * state.
	 */
	if (lp->reset_marker)
	{
		char	   *marker = reset_marker_row(lp->slot, lp->consistent_lsn, lp->dms_format);

		if (lp->progress || lp->summary)
			log_info("shipping a reset marker row at %s before the initial load", run.lsn);
		ok = row_fn(arg, marker, strlen(marker), lp->consistent_lsn);
		free(marker);
	}
	for (int i = 0; ok && i < PQntuples(tables); i++)
		ok = load_table(&run, PQgetvalue(tables, i, 0));
	if (stop && *stop)
		log_warning("stopping during the initial load; it is done again on restart");
	PQclear(tables);
	free(run.options);

	/* Every load row acknowledged before the load counts as finished. */
	if (ok && !flush_fn(arg))
		ok = false;
	if (!ok)
	{
		PQclear(PQexec(conn, "ROLLBACK"));
		return false;
	}
	return load_end(&run);
}
