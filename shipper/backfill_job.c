/*-------------------------------------------------------------------------
 *
 * backfill_job.c
 *	  Backfills on the server: requests queued for this slot, the job
 *	  loaded from fundrecs.backfill_request, its progress recorded per
 *	  acknowledged chunk in fundrecs.backfill_progress and its end, and at
 *	  start-up the chunks a crash left pending: counted as done when the
 *	  slot confirmed them, read again when it did not (see backfill.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <unistd.h>

#include "backfill_int.h"
#include "libpq-fe.h"
#include "load.h"
#include "log.h"

/* ----------------------------------------------------------------
 * The database
 * ----------------------------------------------------------------
 */

static void
disconnect(Backfiller *b)
{
	if (b->conn != NULL)
		PQfinish(b->conn);
	b->conn = NULL;
}

static bool
connected(Backfiller *b)
{
	PGresult   *res;

	if (b->conn != NULL && PQstatus(b->conn) == CONNECTION_OK)
		return true;
	disconnect(b);
	b->conn = db_connect(b->params, false);
	if (b->conn == NULL)
		return false;

	/*
	 * A watermark must not wait for a synchronous standby that is away: it is
	 * decoded from the primary's WAL whatever the standbys have.
	 */
	res = PQexec(b->conn, "SET application_name = 'fundrecs_shipper backfill'; "
				 "SET synchronous_commit = local");
	PQclear(res);
	return true;
}

/*
 * Runs a statement; NULL after logging when it failed.  A lost connection
 * is closed, to be opened again at the next try.
 */
PGresult *
bf_run(Backfiller *b, const char *what, const char *sql, int n, const char *const *values,
	   ExecStatusType want)
{
	PGresult   *res;

	if (!connected(b))
		return NULL;
	res = PQexecParams(b->conn, sql, n, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) == want)
		return res;
	log_warning("backfill: could not %s: %s", what, PQerrorMessage(b->conn));
	PQclear(res);
	if (PQstatus(b->conn) != CONNECTION_OK)
		disconnect(b);
	return NULL;
}

bool
bf_run_command(Backfiller *b, const char *what, const char *sql, int n, const char *const *values)
{
	PGresult   *res = bf_run(b, what, sql, n, values, PGRES_COMMAND_OK);

	PQclear(res);
	return res != NULL;
}



/* Records the job's end in the given state, with a message (or NULL). */
void
bf_job_record_end(Backfiller *b, const char *state, const char *message)
{
	char		id[24];
	const char *values[4];

	values[0] = fmt_i64(id, b->job.id);
	values[1] = b->params->slot;
	values[2] = state;
	values[3] = message;
	(void) bf_run_command(b, "record the end of a backfill",
						  "UPDATE fundrecs.backfill_progress SET state = $3, message = $4,"
						  " finished_at = now(), updated_at = now(),"
						  " pending_chunk_lsn = NULL, pending_last_key = NULL,"
						  " pending_rows_shipped = NULL, pending_rows_read = NULL"
						  " WHERE request_id = $1 AND slot_name = $2",
						  4, values);
	if (strcmp(state, "finished") == 0)
		log_info("backfill %lld of %s.%s finished: %lld chunks, %lld rows read",
				 (long long) b->job.id, b->job.schema, b->job.table,
				 (long long) b->job.chunks_done, (long long) b->job.rows_read);
	else if (strcmp(state, "failed") == 0)
		log_warning("backfill %lld of %s.%s failed: %s", (long long) b->job.id,
					b->job.schema, b->job.table, message);
	else
		log_info("backfill %lld of %s.%s %s%s%s", (long long) b->job.id,
				 b->job.schema, b->job.table, state, message ? ": " : "", message ? message : "");
	free(b->job.schema);
	free(b->job.table);
	free(b->job.condition);
	free(b->job.after_key);
	memset(&b->job, 0, sizeof(b->job));

	/* What was shipped of it needs no recording any more. */
	b->pending.active = false;
	b->stats.remaining = -1;
}

static void
queue_push(Backfiller *b, int64_t id)
{
	for (int i = 0; i < b->nqueue; i++)
		if (b->queue[i] == id)
			return;
	if (b->job.active && b->job.id == id)
		return;
	if (b->nqueue == b->maxqueue)
	{
		b->maxqueue = Max(8, b->maxqueue * 2);
		b->queue = pg_realloc(b->queue, sizeof(int64_t) * b->maxqueue);
	}
	b->queue[b->nqueue++] = id;
}

/* ----------------------------------------------------------------
 * Start-up
 * ----------------------------------------------------------------
 */

/* The chunk acknowledged: its progress recorded.  False when it could not be. */
bool
bf_record_done(Backfiller *b, int64_t id, uint64_t lsn)
{
	char		idbuf[24];
	char		lsnbuf[24];
	const char *values[3];

	values[0] = fmt_i64(idbuf, id);
	values[1] = b->params->slot;
	values[2] = fmt_lsn(lsnbuf, lsn);
	return bf_run_command(b, "record a backfilled chunk",
						  "UPDATE fundrecs.backfill_progress SET chunks_done = chunks_done + 1,"
						  " rows_shipped = rows_shipped + pending_rows_shipped,"
						  " rows_read = rows_read + pending_rows_read,"
						  " last_key = pending_last_key, pending_chunk_lsn = NULL,"
						  " pending_last_key = NULL, pending_rows_shipped = NULL,"
						  " pending_rows_read = NULL, updated_at = now()"
						  " WHERE request_id = $1 AND slot_name = $2 AND pending_chunk_lsn = $3::pg_lsn",
						  3, values);
}

bool
backfill_prepare(Backfiller *b)
{
	PGresult   *res;
	const char *values[1];

	values[0] = b->params->slot;
	if (b->options == NULL)
		b->options = options_array(b->params->plugin_options, b->params->noptions);
	if (!connected(b))
	{
		log_error("backfill: could not connect to read the slot's backfills");
		return false;
	}
	res = PQexec(b->conn, "SELECT string_to_array(extversion, '.')::int[] >= '{1,9}'"
				 "  FROM pg_catalog.pg_extension WHERE extname = 'fundrecs'"
				 "   AND string_to_array(extversion, '.')::int[] >= '{1,8}'");
	b->enabled = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
	b->reader.chunk_fn = b->enabled && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!b->enabled)
	{
		disconnect(b);
		return true;
	}
	if (!b->reader.chunk_fn)
	{
		log_warning("backfills of slot \"%s\" read their chunks through fundrecs 1.8's backfill_rows(), at about half the speed of 1.9's backfill_chunk()",
					b->params->slot);
		log_warning_hint("Run ALTER EXTENSION fundrecs UPDATE in this database, then restart the shipper.");
	}

	/*
	 * A role set up before 1.8 lacks the grants of the progress tables:
	 * streaming goes on, and backfills wait for the grants.
	 */
	res = PQexec(b->conn,
				 "SELECT has_table_privilege('fundrecs.backfill_request', 'SELECT')"
				 "   AND has_table_privilege('fundrecs.backfill_progress', 'SELECT, INSERT, UPDATE')");
	b->enabled = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
		strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!b->enabled)
	{
		log_warning("backfills are off for slot \"%s\": the user may not read and write fundrecs.backfill_progress",
					b->params->slot);
		log_warning_hint("GRANT SELECT ON fundrecs.backfill_request and SELECT, INSERT, UPDATE ON fundrecs.backfill_progress to the shipper's user, then restart the shipper.");
		b->lacks_grants = true;
		disconnect(b);
		return true;
	}

	/* Chunks handed over before a crash or stop: delivered, or not. */
	res = bf_run(b, "read the pending backfill chunks",
				 "SELECT p.request_id, p.pending_chunk_lsn,"
				 "       p.pending_chunk_lsn <= s.confirmed_flush_lsn"
				 "  FROM fundrecs.backfill_progress p"
				 "  JOIN pg_catalog.pg_replication_slots s ON s.slot_name = p.slot_name"
				 " WHERE p.slot_name = $1 AND p.pending_chunk_lsn IS NOT NULL"
				 "   AND p.state IN ('queued', 'running')",
				 1, values, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	for (int i = 0; i < PQntuples(res); i++)
	{
		int64_t		id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		uint64_t	lsn = 0;
		const char *lsntext = PQgetvalue(res, i, 1);

		(void) rowscan_parse_lsn(lsntext, strlen(lsntext), &lsn);
		if (strcmp(PQgetvalue(res, i, 2), "t") == 0)
		{
			if (!bf_record_done(b, id, lsn))
			{
				PQclear(res);
				return false;
			}
			continue;
		}

		/*
		 * Not acknowledged: read again.  A lake may hold part of it: those
		 * objects, named by the chunk's position alone, go first.
		 */
		log_info("backfill %lld: the chunk at %s was not acknowledged before the shipper stopped; it is read again",
				 (long long) id, lsntext);
		if (target_keeps_loads(b->target) &&
			target_forget_load(b->target, lsn, b->stop) != SHIP_OK)
		{
			PQclear(res);
			return false;
		}
		{
			const char *v2[3];
			char		idbuf[24];

			v2[0] = fmt_i64(idbuf, id);
			v2[1] = b->params->slot;
			v2[2] = lsntext;
			if (!bf_run_command(b, "forget a chunk that was not acknowledged",
								"UPDATE fundrecs.backfill_progress SET pending_chunk_lsn = NULL,"
								" pending_last_key = NULL, pending_rows_shipped = NULL,"
								" pending_rows_read = NULL, updated_at = now()"
								" WHERE request_id = $1 AND slot_name = $2 AND pending_chunk_lsn = $3::pg_lsn",
								3, v2))
			{
				PQclear(res);
				return false;
			}
		}
	}
	PQclear(res);

	res = bf_run(b, "read the slot's backfills",
				 "SELECT request_id FROM fundrecs.backfill_progress"
				 " WHERE slot_name = $1 AND state IN ('queued', 'running') ORDER BY request_id",
				 1, values, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	for (int i = 0; i < PQntuples(res); i++)
		queue_push(b, strtoll(PQgetvalue(res, i, 0), NULL, 10));
	if (PQntuples(res) > 0)
		log_info("%d backfill%s to run for slot \"%s\"", PQntuples(res),
				 PQntuples(res) == 1 ? "" : "s", b->params->slot);
	PQclear(res);
	return true;
}

/*
 * A request seen in the stream: queued for this slot, unless it names
 * another.  Its commit can be decoded a moment before it is visible to other
 * sessions (the walsender sends a commit once it is flushed, before the
 * committing backend leaves the proc array), so a request not there yet is
 * looked for again for a while.
 */
bool
bf_queue_request(Backfiller *b, const char *id)
{
	const char *values[2];
	double		give_up = now_seconds() + REQUEST_VISIBLE_SECS;

	values[0] = id;
	values[1] = b->params->slot;
	for (;;)
	{
		PGresult   *res;
		bool		seen;
		bool		queued;

		res = bf_run(b, "queue a backfill request",
					 "WITH r AS (SELECT request_id, slot_name FROM fundrecs.backfill_request"
					 "            WHERE request_id = $1::bigint),"
					 "     ins AS (INSERT INTO fundrecs.backfill_progress (request_id, slot_name)"
					 "             SELECT request_id, $2 FROM r WHERE slot_name IS NULL OR slot_name = $2"
					 "             ON CONFLICT DO NOTHING RETURNING request_id)"
					 " SELECT (SELECT count(*) FROM r) > 0, (SELECT count(*) FROM ins) > 0",
					 2, values, PGRES_TUPLES_OK);
		if (res == NULL)
		{
			log_error("backfill: could not queue request %s", id);
			return false;
		}
		seen = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		queued = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
		PQclear(res);
		if (queued)
		{
			log_info("backfill %s requested", id);
			queue_push(b, strtoll(id, NULL, 10));
		}
		if (seen)
			return true;
		if (now_seconds() >= give_up)
		{
			log_warning("backfill request %s is not in fundrecs.backfill_request (deleted since?); it is not run", id);
			return true;
		}
		usleep(10000);
	}
}

/* Loads the next queued request; false when there is none to run now. */
bool
bf_start_job(Backfiller *b)
{
	char		idbuf[24];
	const char *values[3];
	PGresult   *res;
	Job		   *j = &b->job;
	char		estbuf[64];

	while (b->nqueue > 0)
	{
		int64_t		id = b->queue[0];

		values[0] = fmt_i64(idbuf, id);
		values[1] = b->params->slot;
		values[2] = b->options;
		res = bf_run(b, "read a backfill request",
					 "SELECT r.relid, r.schema_name, r.table_name, r.chunk_rows, r.condition,"
					 "       p.state, p.last_key, p.chunks_done, p.rows_read,"
					 "       fundrecs.table_included($3::text[], r.schema_name, r.table_name),"
					 "       greatest(c.reltuples, 0)::bigint"
					 "  FROM fundrecs.backfill_request r"
					 "  JOIN fundrecs.backfill_progress p USING (request_id)"
					 "  LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid"
					 " WHERE r.request_id = $1 AND p.slot_name = $2",
					 3, values, PGRES_TUPLES_OK);
		if (res == NULL)
			return false;
		memmove(b->queue, b->queue + 1, sizeof(int64_t) * --b->nqueue);
		if (PQntuples(res) != 1 ||
			(strcmp(PQgetvalue(res, 0, 5), "queued") != 0 &&
			 strcmp(PQgetvalue(res, 0, 5), "running") != 0))
		{
			PQclear(res);
			continue;
		}
		memset(j, 0, sizeof(*j));
		j->active = true;
		j->id = id;
		strlcpy(j->relid, PQgetvalue(res, 0, 0), sizeof(j->relid));
		j->schema = pg_strdup(PQgetvalue(res, 0, 1));
		j->table = pg_strdup(PQgetvalue(res, 0, 2));
		strlcpy(j->chunk_rows, PQgetvalue(res, 0, 3), sizeof(j->chunk_rows));
		j->condition = PQgetisnull(res, 0, 4) ? NULL : pg_strdup(PQgetvalue(res, 0, 4));
		j->after_key = PQgetisnull(res, 0, 6) ? NULL : pg_strdup(PQgetvalue(res, 0, 6));
		j->chunks_done = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
		j->rows_read = strtoll(PQgetvalue(res, 0, 8), NULL, 10);
		j->estimate = PQgetisnull(res, 0, 10) ? 0 : strtoll(PQgetvalue(res, 0, 10), NULL, 10);
		if (strcmp(PQgetvalue(res, 0, 9), "t") != 0)
		{
			PQclear(res);
			bf_job_record_end(b, "skipped", "the slot's plugin options do not capture this table");
			continue;
		}
		PQclear(res);
		{
			const char *v2[3];

			v2[0] = idbuf;
			v2[1] = b->params->slot;
			v2[2] = j->estimate > 0 ? fmt_i64(estbuf, j->estimate) : NULL;
			if (!bf_run_command(b, "record the start of a backfill",
								"UPDATE fundrecs.backfill_progress SET state = 'running',"
								" started_at = coalesce(started_at, now()), updated_at = now(),"
								" rows_estimate = $3::bigint"
								" WHERE request_id = $1 AND slot_name = $2",
								3, v2))
				return false;
		}
		j->next_chunk = j->chunks_done + 1;
		b->job_started = now_seconds();
		b->job_read_here = 0;
		if (j->estimate > 0)
			snprintf(estbuf, sizeof(estbuf), "about %lld rows", (long long) j->estimate);
		else
			strlcpy(estbuf, "rows not estimated yet", sizeof(estbuf));
		log_info("backfill %lld of %s.%s %s: %s, %s rows a chunk%s%s",
				 (long long) id, j->schema, j->table,
				 j->chunks_done > 0 ? "resumes" : "starts", estbuf,
				 j->chunk_rows, j->condition ? ", where " : "", j->condition ? j->condition : "");
		return true;
	}
	return false;
}
