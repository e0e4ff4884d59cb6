/*-------------------------------------------------------------------------
 *
 * backfill.c
 *	  Backfills while the stream flows: chunks read by key between two
 *	  watermarks, their rows shipped as of the high one (see backfill.h).
 *
 * Why the rows shipped are never older than the stream's: a chunk is read
 * after its low watermark commits and before its high one does.  A row
 * whose key no change touched between the two watermarks is, at the high
 * watermark, the row as the chunk read it; a row whose key did change is
 * dropped, since the stream carries that change, newer, before the high
 * watermark.  A truncate of the table between them makes the chunk be read
 * again.  This is DBLog's algorithm (Netflix, 2020), with the watermarks
 * as transactional messages rather than writes to a table.
 *
 * What survives a crash: a chunk's rows are handed to the target as rows
 * of the high watermark's transaction, after its commit position is
 * recorded as the request's pending chunk.  Once every row of it has been
 * acknowledged, the chunk counts as done (chunks_done, last_key).  On
 * restart a pending chunk at or before the slot's confirmed position was
 * delivered, and counts as done; one after it was not, and is read again,
 * with the objects an S3 lake kept of it deleted first (their names hold
 * the watermark's position alone: the target is flushed before and after
 * a chunk's rows).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <unistd.h>

#include "backfill.h"
#include "backfill_int.h"
#include "libpq-fe.h"
#include "load.h"
#include "log.h"
#include "pqexpbuffer.h"

#define CONTROL_PREFIX "\"fundrecs."
#define REQUEST_PREFIX "\"fundrecs.backfill\""
#define WATERMARK_PREFIX "\"fundrecs.watermark\""

/* After a lost connection or a failed query, try again this much later. */
#define RETRY_SECS 5.0
/* How long a request seen in the stream may take to become visible. */
#define REQUEST_VISIBLE_SECS 10.0

/*
 * A chunk asked of the reader, from its dispatch until its high watermark
 * arrives in the stream.  The changes the stream carries between its
 * watermarks are logged: when the high one arrives, the chunk's rows whose
 * key they touched are dropped.  (Logged, not looked up at once, because
 * the low watermark can arrive before the reader has the rows.)
 */
typedef struct Flight
{
	bool		active;
	int64_t		chunk_no;
	uint64_t	nonce;
	char	   *start_key;		/* the key it starts after (NULL: the start) */
	bool		watching;		/* its low watermark has arrived */
	PQExpBufferData log;		/* changes seen: table, key, old row */
	Chunk	   *chunk;			/* NULL until the reader hands it over */
} Flight;

/* How many chunks can be in flight: one waiting for its watermarks while
 * the next is read. */
#define MAX_FLIGHTS 2

/* A chunk's pending shipment: rows with the target, not all acknowledged. */
typedef struct Pending
{
	bool		active;
	uint64_t	lsn;			/* the high watermark's commit */
	int64_t		shipped;
	int64_t		read;
	bool		final;
} Pending;

/* The backfill being run. */
typedef struct Job
{
	bool		active;
	int64_t		id;
	char		relid[16];
	char	   *schema;
	char	   *table;
	char	   *condition;
	char		chunk_rows[16];
	char	   *after_key;		/* where the next chunk starts (NULL: start) */
	int64_t		next_chunk;		/* the number of the next chunk to read */
	int64_t		chunks_done;
	int64_t		rows_read;
	int64_t		estimate;
	bool		reading_done;	/* its last chunk was read */
} Job;



struct Backfiller
{
	const ReplConnParams *params;
	Target	   *target;
	StopFlag   *stop;
	BackfillAddFn add;
	BackfillFlushFn flush;
	void	   *arg;

	PGconn	   *conn;
	bool		enabled;		/* the extension has backfills (1.8) */
	bool		lacks_grants;	/* ... but the user may not run them */
	char	   *options;		/* the plugin options as a text[] literal */
	double		retry_at;

	int64_t    *queue;			/* request ids, in order */
	int			nqueue;
	int			maxqueue;

	Job			job;
	Flight		flights[MAX_FLIGHTS];
	Reader		reader;
	Pending		pending;
	uint64_t	next_nonce;
	bool		verbose;
	double		job_started;	/* when the job started or resumed here */
	int64_t		job_read_here;	/* rows it read since */

	BackfillStats stats;
};


void
backfill_set_verbose(Backfiller *b, bool verbose)
{
	b->verbose = verbose;
}

void
backfill_set_workers(Backfiller *b, int workers)
{
	b->reader.workers = Max(workers, 1);
}

Backfiller *
backfill_create(const ReplConnParams *params, Target *target, StopFlag *stop,
				BackfillAddFn add, BackfillFlushFn flush, void *arg)
{
	Backfiller *b = pg_malloc0(sizeof(Backfiller));

	b->params = params;
	b->target = target;
	b->stop = stop;
	b->add = add;
	b->flush = flush;
	b->arg = arg;
	b->next_nonce = ((uint64_t) getpid() << 32) ^ (uint64_t) (now_seconds() * 1000);
	b->stats.remaining = -1;
	b->reader.workers = 1;
	return b;
}

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
static PGresult *
run(Backfiller *b, const char *what, const char *sql, int n, const char *const *values,
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

static bool
run_command(Backfiller *b, const char *what, const char *sql, int n, const char *const *values)
{
	PGresult   *res = run(b, what, sql, n, values, PGRES_COMMAND_OK);

	PQclear(res);
	return res != NULL;
}



static void reader_take(Backfiller *b, bool wait);
static void flights_drop_all(Backfiller *b);

/* Ends the job in the given state, with a message (or NULL). */
static void
job_end(Backfiller *b, const char *state, const char *message)
{
	char		id[24];
	const char *values[4];

	values[0] = fmt_i64(id, b->job.id);
	values[1] = b->params->slot;
	values[2] = state;
	values[3] = message;
	(void) run_command(b, "record the end of a backfill",
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

	/*
	 * What was shipped of it needs no recording any more; what is read of it
	 * is not shipped.
	 */
	b->pending.active = false;
	reader_take(b, true);
	flights_drop_all(b);
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
static bool
record_done(Backfiller *b, int64_t id, uint64_t lsn)
{
	char		idbuf[24];
	char		lsnbuf[24];
	const char *values[3];

	values[0] = fmt_i64(idbuf, id);
	values[1] = b->params->slot;
	values[2] = fmt_lsn(lsnbuf, lsn);
	return run_command(b, "record a backfilled chunk",
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
	res = PQexec(b->conn, "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'fundrecs'"
				 " AND string_to_array(extversion, '.')::int[] >= '{1,8}'");
	b->enabled = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
	PQclear(res);
	if (!b->enabled)
	{
		disconnect(b);
		return true;
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
	res = run(b, "read the pending backfill chunks",
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
			if (!record_done(b, id, lsn))
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
			if (!run_command(b, "forget a chunk that was not acknowledged",
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

	res = run(b, "read the slot's backfills",
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

/* ----------------------------------------------------------------
 * Chunks
 * ----------------------------------------------------------------
 */

/* Gives the reader the job's next chunk, as the flight fl. */
static bool
reader_give_next(Backfiller *b, const Flight *fl)
{
	ReadTask	t;

	t.job_id = b->job.id;
	strlcpy(t.relid, b->job.relid, sizeof(t.relid));
	t.schema = b->job.schema;
	t.table = b->job.table;
	t.condition = b->job.condition;
	strlcpy(t.chunk_rows, b->job.chunk_rows, sizeof(t.chunk_rows));
	t.after_key = b->job.after_key;
	t.chunk_no = fl->chunk_no;
	t.nonce = fl->nonce;
	return reader_give(&b->reader, b->params, b->options, &t);
}

/* ----------------------------------------------------------------
 * Flights
 * ----------------------------------------------------------------
 */

static Flight *
flight_find(Backfiller *b, int64_t chunk_no, uint64_t nonce)
{
	for (int i = 0; i < MAX_FLIGHTS; i++)
		if (b->flights[i].active && b->flights[i].chunk_no == chunk_no &&
			b->flights[i].nonce == nonce)
			return &b->flights[i];
	return NULL;
}

static int
flights_active(const Backfiller *b)
{
	int			n = 0;

	for (int i = 0; i < MAX_FLIGHTS; i++)
		n += b->flights[i].active ? 1 : 0;
	return n;
}

static void
flight_drop(Backfiller *b, Flight *fl)
{
	if (!fl->active)
		return;
	chunk_release(&b->reader, fl->chunk);
	free(fl->start_key);
	termPQExpBuffer(&fl->log);
	memset(fl, 0, sizeof(*fl));
}

/* Every flight, and the chunk being read (its result is thrown away). */
static void
flights_drop_all(Backfiller *b)
{
	for (int i = 0; i < MAX_FLIGHTS; i++)
		flight_drop(b, &b->flights[i]);
}

/* The flights after fl: dropped, and the job reads from fl's start again. */
static void
flights_rewind(Backfiller *b, Flight *fl)
{
	b->job.next_chunk = fl->chunk_no;
	free(b->job.after_key);
	b->job.after_key = fl->start_key ? pg_strdup(fl->start_key) : NULL;
	b->job.reading_done = false;
	for (int i = 0; i < MAX_FLIGHTS; i++)
		if (b->flights[i].active && b->flights[i].chunk_no > fl->chunk_no)
			flight_drop(b, &b->flights[i]);
	flight_drop(b, fl);
}

/*
 * Takes the reader's result, when there is one (or, with wait, once there
 * is): the chunk goes to its flight, or the job ends, or is tried again.
 */
static void
reader_take(Backfiller *b, bool wait)
{
	Reader	   *rd = &b->reader;
	Flight	   *fl;
	Chunk	   *c;

	if (!reader_collect(rd, wait))
		return;
	c = rd->chunk;
	rd->chunk = NULL;
	fl = flight_find(b, rd->task.chunk_no, rd->task.nonce);
	if (fl == NULL || !b->job.active || b->job.id != rd->task.job_id)
	{
		/* Dropped meanwhile (a restart, a truncate, the job's end). */
		chunk_release(rd, c);
		free(rd->message);
		rd->message = NULL;
		return;
	}
	if (rd->status == READ_RETRY)
	{
		flights_rewind(b, fl);
		b->retry_at = now_seconds() + RETRY_SECS;
		return;
	}
	if (rd->status == READ_ENDED)
	{
		job_end(b, rd->end_state, rd->message);
		free(rd->message);
		rd->message = NULL;
		return;
	}
	fl->chunk = c;
	b->stats.rows_read += c->nread;
	b->job.rows_read += c->nread;
	b->job_read_here += c->nread;
	if (c->last_key != NULL)
	{
		free(b->job.after_key);
		b->job.after_key = pg_strdup(c->last_key);
	}
	b->job.reading_done = c->final;
	if (b->job.estimate > 0)
		b->stats.remaining = Max(0, b->job.estimate - b->job.rows_read);
	if (b->verbose)
		log_info("backfill %lld: chunk %lld read: %d rows, between watermarks %X/%X and %X/%X",
				 (long long) b->job.id, (long long) fl->chunk_no, c->nread,
				 LSN_FORMAT_ARGS(c->low), LSN_FORMAT_ARGS(c->high));
}

/* The job's next chunk, to the reader. */
static void
dispatch(Backfiller *b)
{
	Flight	   *fl = NULL;

	for (int i = 0; i < MAX_FLIGHTS; i++)
		if (!b->flights[i].active)
			fl = &b->flights[i];
	if (fl == NULL)
		return;
	memset(fl, 0, sizeof(*fl));
	fl->active = true;
	fl->chunk_no = b->job.next_chunk++;
	fl->nonce = b->next_nonce++;
	fl->start_key = b->job.after_key ? pg_strdup(b->job.after_key) : NULL;
	initPQExpBuffer(&fl->log);
	if (!reader_give_next(b, fl))
	{
		flight_drop(b, fl);
		b->job.next_chunk--;
		b->retry_at = now_seconds() + RETRY_SECS;
	}
}

void
backfill_restart(Backfiller *b)
{
	Flight	   *first = NULL;

	/*
	 * The stream starts again from the confirmed position: chunks not shipped
	 * are read again (their watermarks, if they come again, match nothing).
	 */
	reader_take(b, true);
	for (int i = 0; i < MAX_FLIGHTS; i++)
		if (b->flights[i].active && (first == NULL || b->flights[i].chunk_no < first->chunk_no))
			first = &b->flights[i];
	if (first != NULL)
		flights_rewind(b, first);
}

/* ----------------------------------------------------------------
 * The stream
 * ----------------------------------------------------------------
 */

bool
backfill_is_control(const RowFields *f)
{
	return f->prefix.start != NULL && f->prefix.len > strlen(CONTROL_PREFIX) &&
		memcmp(f->prefix.start, CONTROL_PREFIX, strlen(CONTROL_PREFIX)) == 0;
}

static Flight *
flight_watching(Backfiller *b)
{
	for (int i = 0; i < MAX_FLIGHTS; i++)
		if (b->flights[i].active && b->flights[i].watching)
			return &b->flights[i];
	return NULL;
}

bool
backfill_watching(const Backfiller *b)
{
	return flight_watching((Backfiller *) b) != NULL;
}

static void
log_span(PQExpBuffer log, const char *s, size_t len)
{
	uint32_t	n = (uint32_t) len;

	appendBinaryPQExpBuffer(log, (const char *) &n, sizeof(n));
	appendBinaryPQExpBuffer(log, s, len);
}

static const char *
read_span(const char *p, const char **s, size_t *len)
{
	uint32_t	n;

	memcpy(&n, p, sizeof(n));
	*s = p + sizeof(n);
	*len = n;
	return *s + n;
}

/*
 * A change between a chunk's watermarks: its table ("schema"."table"), key
 * (empty: a truncate, or a change without a key) and old row, if any.
 */
void
backfill_observe(Backfiller *b, const char *row, size_t len, const RowFields *f)
{
	Flight	   *fl = flight_watching(b);
	RowSpan		old = {NULL, 0};
	uint32_t	tlen;

	if (fl == NULL || f->schema.start == NULL || f->table.start == NULL)
		return;
	if (f->key.start != NULL &&
		(memmem(row, len, "\"old\":", 6) != NULL || memmem(row, len, "\"before-image\":", 15) != NULL))
	{
		if ((!rowscan_field(row, len, "old", &old) &&
			 !rowscan_field(row, len, "before-image", &old)) ||
			old.len < 2 || old.start[0] != '{')
			old.start = NULL;
	}
	tlen = (uint32_t) (f->schema.len + 1 + f->table.len);
	appendBinaryPQExpBuffer(&fl->log, (const char *) &tlen, sizeof(tlen));
	appendBinaryPQExpBuffer(&fl->log, f->schema.start, f->schema.len);
	appendPQExpBufferChar(&fl->log, '.');
	appendBinaryPQExpBuffer(&fl->log, f->table.start, f->table.len);
	log_span(&fl->log, f->key.start ? f->key.start : "", f->key.start ? f->key.len : 0);
	log_span(&fl->log, old.start ? old.start : "", old.start ? old.len : 0);
}

/*
 * The changes logged between the watermarks, against the chunk's rows:
 * those whose key changed are dropped.  False when the chunk must be read
 * again (a truncate, or an old row without its key).
 */
static bool
flight_resolve(Flight *fl)
{
	Chunk	   *c = fl->chunk;
	const char *p = fl->log.data;
	const char *end = p + fl->log.len;

	while (p < end)
	{
		const char *table;
		const char *key;
		const char *old;
		size_t		tlen;
		size_t		klen;
		size_t		olen;
		int			idx;

		p = read_span(p, &table, &tlen);
		p = read_span(p, &key, &klen);
		p = read_span(p, &old, &olen);
		if (!chunk_has_table(c, table, tlen))
			continue;
		if (klen == 0)
			return false;
		idx = chunk_find(c, key, klen);
		if (idx >= 0)
			c->rows[idx].dropped = true;
		if (olen > 0 && !chunk_drop_old_key(c, old, olen))
			return false;
	}
	return true;
}

/* Parses a watermark's content; NULL when it is not one of this shipper's. */
static Flight *
watermark_flight(Backfiller *b, const char *row, size_t len, bool *low)
{
	RowSpan		content;
	char	   *text;
	char		slot[NAMEDATALEN + 1];
	long long	request;
	long long	chunk;
	char		mark[8];
	unsigned long long nonce;
	Flight	   *fl = NULL;

	if (!b->job.active || !rowscan_field(row, len, "content", &content) || content.len < 2)
		return NULL;
	text = pnstrdup(content.start + 1, content.len - 2);

	if (sscanf(text, "slot=%64s request=%lld chunk=%lld mark=%7s nonce=%llx",
			   slot, &request, &chunk, mark, &nonce) == 5 &&
		strcmp(slot, b->params->slot) == 0 && request == b->job.id)
		fl = flight_find(b, chunk, nonce);
	*low = strcmp(mark, "low") == 0;
	free(text);
	return fl;
}

/* An earlier chunk still held: delivered first, and recorded. */
static bool
settle_pending(Backfiller *b)
{
	if (!b->pending.active)
		return true;
	if (!b->flush(b->arg))
		return false;
	if (!record_done(b, b->job.id, b->pending.lsn))
		return false;
	b->job.chunks_done++;
	b->stats.chunks++;
	b->pending.active = false;
	return true;
}

/* The high watermark: the chunk's rows that the stream did not change go. */
static bool
ship_chunk(Backfiller *b, Flight *fl, uint64_t commit_lsn)
{
	Chunk	   *c;
	char		idbuf[24];
	char		lsnbuf[24];
	char		shippedbuf[24];
	char		readbuf[24];
	const char *values[6];
	int64_t		shipped = 0;
	int64_t		chunk_no = fl->chunk_no;
	bool		lake = target_keeps_loads(b->target);

	/* The reader wrote this watermark: its result is there, or nearly. */
	if (fl->chunk == NULL)
		reader_take(b, true);
	if (!fl->active || fl->chunk == NULL)
		return true;			/* it failed after all: read again */
	c = fl->chunk;
	if (!flight_resolve(fl))
	{
		/* A truncate came between the watermarks: this chunk again. */
		log_info("backfill %lld: chunk %lld is read again (the table was truncated while it was read)",
				 (long long) b->job.id, (long long) chunk_no);
		b->stats.chunks_redone++;
		flights_rewind(b, fl);
		return true;
	}
	for (int i = 0; i < c->nrows; i++)
	{
		if (c->rows[i].dropped)
			b->stats.rows_dropped++;
		else
			shipped++;
	}
	if (!settle_pending(b))
		return false;

	/* Recorded before the target has any of it: a crash now reads it again. */
	values[0] = fmt_i64(idbuf, b->job.id);
	values[1] = b->params->slot;
	values[2] = fmt_lsn(lsnbuf, commit_lsn);
	values[3] = c->last_key;
	values[4] = fmt_i64(shippedbuf, shipped);
	values[5] = fmt_i64(readbuf, c->nread);
	if (c->last_key != NULL &&
		!run_command(b, "record a backfill chunk",
					 "UPDATE fundrecs.backfill_progress SET pending_chunk_lsn = $3::pg_lsn,"
					 " pending_last_key = $4::text[], pending_rows_shipped = $5::bigint,"
					 " pending_rows_read = $6::bigint, updated_at = now()"
					 " WHERE request_id = $1 AND slot_name = $2",
					 6, values))
	{
		log_error("backfill %lld: could not record chunk %lld before shipping it",
				  (long long) b->job.id, (long long) chunk_no);
		return false;
	}

	/* In a lake, the chunk's rows make objects of their own. */
	if (lake && shipped > 0 && !b->flush(b->arg))
		return false;
	for (int i = 0; i < c->nrows; i++)
	{
		if (c->rows[i].dropped)
			continue;
		if (!b->add(b->arg, c->rows[i].row, c->rows[i].len, &c->rows[i].f, commit_lsn))
			return false;
		b->stats.rows_shipped++;
	}
	if (lake && shipped > 0 && !b->flush(b->arg))
		return false;
	if (c->last_key != NULL)
	{
		b->pending.active = true;
		b->pending.lsn = commit_lsn;
		b->pending.shipped = shipped;
		b->pending.read = c->nread;
		b->pending.final = c->final;
	}
	if (b->verbose)
		log_info("backfill %lld: chunk %lld shipped at %X/%X: %lld rows, %d left out for newer changes",
				 (long long) b->job.id, (long long) chunk_no, LSN_FORMAT_ARGS(commit_lsn),
				 (long long) shipped, (int) (c->nrows - shipped));
	flight_drop(b, fl);
	return true;
}

/*
 * A request seen in the stream: queued for this slot, unless it names
 * another.  Its commit can be decoded a moment before it is visible to other
 * sessions (the walsender sends a commit once it is flushed, before the
 * committing backend leaves the proc array), so a request not there yet is
 * looked for again for a while.
 */
static bool
queue_request(Backfiller *b, const char *id)
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

		res = run(b, "queue a backfill request",
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

bool
backfill_control(Backfiller *b, const char *row, size_t len, const RowFields *f,
				 uint64_t commit_lsn)
{
	if (!b->enabled)
	{
		if (b->lacks_grants && f->prefix.len == strlen(REQUEST_PREFIX) &&
			memcmp(f->prefix.start, REQUEST_PREFIX, f->prefix.len) == 0)
			log_warning("a backfill request was committed at %X/%X, and is not run: backfills are off for slot \"%s\" (see the grants above); request it again once granted",
						LSN_FORMAT_ARGS(commit_lsn), b->params->slot);
		return true;
	}
	if (f->prefix.len == strlen(REQUEST_PREFIX) &&
		memcmp(f->prefix.start, REQUEST_PREFIX, f->prefix.len) == 0)
	{
		RowSpan		content;
		char	   *id;
		bool		ok;

		if (!rowscan_field(row, len, "content", &content) || content.len < 3)
			return true;
		id = pnstrdup(content.start + 1, content.len - 2);
		ok = queue_request(b, id);
		free(id);
		return ok;
	}
	if (f->prefix.len == strlen(WATERMARK_PREFIX) &&
		memcmp(f->prefix.start, WATERMARK_PREFIX, f->prefix.len) == 0)
	{
		bool		low;
		Flight	   *fl = watermark_flight(b, row, len, &low);

		if (fl == NULL)
			return true;
		if (low)
		{
			fl->watching = true;
			return true;
		}
		if (!fl->watching)
		{
			/* Its low watermark was not seen: read it again. */
			flights_rewind(b, fl);
			return true;
		}
		return ship_chunk(b, fl, commit_lsn);
	}
	return true;
}

/* ----------------------------------------------------------------
 * Between messages
 * ----------------------------------------------------------------
 */

/* Loads the next queued request; false when there is none to run now. */
static bool
start_job(Backfiller *b)
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
		res = run(b, "read a backfill request",
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
			job_end(b, "skipped", "the slot's plugin options do not capture this table");
			continue;
		}
		PQclear(res);
		{
			const char *v2[3];

			v2[0] = idbuf;
			v2[1] = b->params->slot;
			v2[2] = j->estimate > 0 ? fmt_i64(estbuf, j->estimate) : NULL;
			if (!run_command(b, "record the start of a backfill",
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

/* Every row of the pending chunk acknowledged? */
static bool
pending_delivered(Backfiller *b)
{
	uint64_t	held;

	return !target_held_lsn(b->target, &held) || held >= b->pending.lsn;
}

bool
backfill_tick(Backfiller *b)
{
	double		now;

	if (!b->enabled || (b->stop != NULL && *b->stop))
		return true;
	reader_take(b, false);
	now = now_seconds();
	if (now < b->retry_at)
		return true;

	if (b->pending.active && pending_delivered(b))
	{
		if (!record_done(b, b->job.id, b->pending.lsn))
		{
			b->retry_at = now + RETRY_SECS;
			return true;
		}
		b->pending.active = false;
		b->job.chunks_done++;
		b->stats.chunks++;
	}
	if (!b->job.active && !start_job(b))
		return true;
	if (b->job.reading_done)
	{
		/* The last chunk shipped: done once it is acknowledged. */
		if (!b->pending.active && flights_active(b) == 0)
			job_end(b, "finished", NULL);
		return true;
	}
	/* One chunk read while the one before waits for its watermarks. */
	if (!b->reader.busy && flights_active(b) < MAX_FLIGHTS)
		dispatch(b);
	return true;
}

int
backfill_wake_fd(const Backfiller *b)
{
	return reader_wake_fd(&b->reader);
}

void
backfill_stats(const Backfiller *b, BackfillStats *s)
{
	double		elapsed = now_seconds() - b->job_started;

	*s = b->stats;
	s->running = b->nqueue + (b->job.active ? 1 : 0);
	s->rate = b->job.active && elapsed > 0 ? b->job_read_here / elapsed : 0;
}
