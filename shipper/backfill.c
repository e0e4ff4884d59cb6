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

typedef struct ChunkRow
{
	char	   *key;			/* the row's "key" object, as written */
	size_t		keylen;
	char	   *row;			/* NULL: the publications filter it out */
	size_t		len;
	bool		dropped;		/* the stream changed its key */
} ChunkRow;

/* A chunk read, waiting for its watermarks in the stream. */
typedef struct Chunk
{
	bool		active;
	int64_t		chunk_no;
	uint64_t	nonce;
	ChunkRow   *rows;
	int			nrows;
	char	   *start_key;		/* the key it starts after (NULL: the start) */
	char	   *last_key;		/* text[] literal of its last key, or NULL */
	int			nread;			/* rows read, those filtered out too */
	bool		final;			/* fewer rows than asked: the table's end */
	bool		watching;		/* the low watermark has arrived */
	bool		redo;			/* a truncate: read it again */
	int		   *slots;			/* open addressing: row index + 1, 0 free */
	int			nslots;
	char	  **tables;			/* "schema" "table" spans of its rows */
	int			ntables;
	char	  **keynames;		/* the key's names, quoted, in order */
	int			nkeynames;
} Chunk;

/* A chunk whose rows are with the target, not all acknowledged yet. */
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
	Chunk		chunk;
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

static const char *
fmt_i64(char *buf, int64_t v)
{
	snprintf(buf, 24, "%lld", (long long) v);
	return buf;
}

static const char *
fmt_lsn(char *buf, uint64_t lsn)
{
	snprintf(buf, 24, "%X/%X", LSN_FORMAT_ARGS(lsn));
	return buf;
}

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

static void
chunk_free(Chunk *c)
{
	for (int i = 0; i < c->nrows; i++)
	{
		free(c->rows[i].key);
		free(c->rows[i].row);
	}
	free(c->rows);
	free(c->slots);
	free(c->start_key);
	free(c->last_key);
	for (int i = 0; i < c->ntables; i++)
		free(c->tables[i]);
	free(c->tables);
	for (int i = 0; i < c->nkeynames; i++)
		free(c->keynames[i]);
	free(c->keynames);
	memset(c, 0, sizeof(*c));
}

void
backfill_restart(Backfiller *b)
{
	/* Its watermarks, if they come again, will match nothing. */
	if (b->chunk.active)
		chunk_free(&b->chunk);
}

static uint32_t
hash_bytes(const char *s, size_t len)
{
	uint32_t	h = 2166136261u;

	for (size_t i = 0; i < len; i++)
	{
		h ^= (unsigned char) s[i];
		h *= 16777619u;
	}
	return h;
}

static int
chunk_find(const Chunk *c, const char *key, size_t len)
{
	uint32_t	mask = c->nslots - 1;

	if (c->nslots == 0)
		return -1;
	for (uint32_t i = hash_bytes(key, len) & mask;; i = (i + 1) & mask)
	{
		int			slot = c->slots[i];

		if (slot == 0)
			return -1;
		if (c->rows[slot - 1].keylen == len && memcmp(c->rows[slot - 1].key, key, len) == 0)
			return slot - 1;
	}
}

static void
chunk_index(Chunk *c)
{
	uint32_t	mask;

	c->nslots = 16;
	while (c->nslots < c->nrows * 2)
		c->nslots *= 2;
	c->slots = pg_malloc0(sizeof(int) * c->nslots);
	mask = c->nslots - 1;
	for (int r = 0; r < c->nrows; r++)
	{
		uint32_t	i = hash_bytes(c->rows[r].key, c->rows[r].keylen) & mask;

		while (c->slots[i] != 0)
			i = (i + 1) & mask;
		c->slots[i] = r + 1;
	}
}

/* Notes the table (schema and table spans) a row of the chunk belongs to. */
static void
chunk_note_table(Chunk *c, const RowFields *f)
{
	char	   *t = psprintf("%.*s.%.*s", (int) f->schema.len, f->schema.start,
							 (int) f->table.len, f->table.start);

	for (int i = 0; i < c->ntables; i++)
		if (strcmp(c->tables[i], t) == 0)
		{
			free(t);
			return;
		}
	c->tables = pg_realloc(c->tables, sizeof(char *) * (c->ntables + 1));
	c->tables[c->ntables++] = t;
}

static bool
chunk_has_table(const Chunk *c, const RowFields *f)
{
	for (int i = 0; i < c->ntables; i++)
	{
		const char *t = c->tables[i];

		if (strlen(t) == f->schema.len + 1 + f->table.len &&
			memcmp(t, f->schema.start, f->schema.len) == 0 &&
			t[f->schema.len] == '.' &&
			memcmp(t + f->schema.len + 1, f->table.start, f->table.len) == 0)
			return true;
	}
	return false;
}

/* The key's names, from a row's key object: to build keys from old rows. */
static void
chunk_note_keynames(Chunk *c, const RowSpan *key)
{
	const char *p = key->start + 1;
	const char *end = key->start + key->len;
	RowSpan		name;
	RowSpan		value;

	while (rowscan_next_field(&p, end, &name, &value))
	{
		c->keynames = pg_realloc(c->keynames, sizeof(char *) * (c->nkeynames + 1));
		c->keynames[c->nkeynames++] = pnstrdup(name.start, name.len);
	}
}

/* Emits a watermark; its position in *lsn.  False after a warning. */
static bool
write_watermark(Backfiller *b, const char *mark, uint64_t *lsn)
{
	char	   *content = psprintf("slot=%s request=%lld chunk=%lld mark=%s nonce=%llx",
								   b->params->slot, (long long) b->job.id,
								   (long long) b->chunk.chunk_no, mark,
								   (unsigned long long) b->chunk.nonce);
	const char *values[1] = {content};
	PGresult   *res = run(b, "write a backfill watermark",
						  "SELECT pg_catalog.pg_logical_emit_message(true, 'fundrecs.watermark', $1)",
						  1, values, PGRES_TUPLES_OK);
	const char *text;

	free(content);
	if (res == NULL)
		return false;
	text = PQgetvalue(res, 0, 0);

	(void) rowscan_parse_lsn(text, strlen(text), lsn);
	PQclear(res);
	return true;
}

/*
 * Reads the job's next chunk between its watermarks.  False when it could
 * not be read: the job failed (recorded), or the connection is to be tried
 * again later (*retry).
 */
static bool job_still_stands(Backfiller *b, bool *retry);

static bool
read_chunk(Backfiller *b, bool *retry)
{
	Chunk	   *c = &b->chunk;
	uint64_t	lw;
	uint64_t	hw;
	char		lsnbuf[24];
	const char *values[6];
	PGresult   *res;
	int			n;

	*retry = false;
	memset(c, 0, sizeof(*c));
	c->chunk_no = b->job.chunks_done + (b->pending.active ? 1 : 0) + 1;
	c->nonce = b->next_nonce++;
	c->start_key = b->job.after_key ? pg_strdup(b->job.after_key) : NULL;
	if (!write_watermark(b, "low", &lw))
	{
		*retry = true;
		return false;
	}
	values[0] = b->job.relid;
	values[1] = b->job.after_key;
	values[2] = b->job.chunk_rows;
	values[3] = fmt_lsn(lsnbuf, lw);
	values[4] = b->options;
	values[5] = b->job.condition;
	if (!connected(b))
	{
		*retry = true;
		return false;
	}
	res = PQexecParams(b->conn,
					   "SELECT key::text, row_json FROM fundrecs.backfill_rows($1::oid::regclass,"
					   " $2::text[], $3::integer, $4::pg_lsn, $5::text[], $6)",
					   6, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		char	   *err = pg_strdup(PQerrorMessage(b->conn));

		PQclear(res);
		if (PQstatus(b->conn) != CONNECTION_OK)
		{
			log_warning("backfill: could not read a chunk: %s", err);
			disconnect(b);
			*retry = true;
		}
		else if (job_still_stands(b, retry))
		{
			/*
			 * The table, its options or the rights: the job cannot go on.  (A
			 * table dropped or renamed since the check before the chunk ends
			 * the job in job_still_stands, with its own message.)
			 */
			err[strcspn(err, "\n")] = '\0';
			if (strncmp(err, "ERROR:  ", 8) == 0)
				memmove(err, err + 8, strlen(err + 8) + 1);
			job_end(b, "failed", err);
		}
		free(err);
		chunk_free(c);
		return false;
	}
	n = PQntuples(res);
	c->nread = n;
	c->rows = pg_malloc0(sizeof(ChunkRow) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		ChunkRow   *row = &c->rows[c->nrows];
		RowFields	f;

		b->stats.rows_read++;
		b->job.rows_read++;
		b->job_read_here++;
		if (i == n - 1)
			c->last_key = pg_strdup(PQgetvalue(res, i, 0));
		if (PQgetisnull(res, i, 1))
			continue;
		row->len = PQgetlength(res, i, 1);
		row->row = pnstrdup(PQgetvalue(res, i, 1), row->len);
		if (!rowscan(row->row, row->len, &f) || f.key.start == NULL ||
			f.schema.start == NULL || f.table.start == NULL)
		{
			log_error("backfill: a row of %s.%s has no key: %.*s", b->job.schema, b->job.table,
					  (int) Min(row->len, 200), row->row);
			free(row->row);
			continue;
		}
		row->key = pnstrdup(f.key.start, f.key.len);
		row->keylen = f.key.len;
		chunk_note_table(c, &f);
		if (c->nkeynames == 0)
			chunk_note_keynames(c, &f.key);
		c->nrows++;
	}
	c->final = n < atoi(b->job.chunk_rows);
	PQclear(res);
	chunk_index(c);

	if (!write_watermark(b, "high", &hw))
	{
		chunk_free(c);
		*retry = true;
		return false;
	}
	c->active = true;
	if (c->last_key != NULL)
	{
		free(b->job.after_key);
		b->job.after_key = pg_strdup(c->last_key);
	}
	b->job.reading_done = c->final;
	if (b->verbose)
		log_info("backfill %lld: chunk %lld read: %d rows, between watermarks %X/%X and %X/%X",
				 (long long) b->job.id, (long long) c->chunk_no, n,
				 LSN_FORMAT_ARGS(lw), LSN_FORMAT_ARGS(hw));
	return true;
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

bool
backfill_watching(const Backfiller *b)
{
	return b->chunk.active && b->chunk.watching;
}

/* The key of a change's old row (an update that changed the key). */
static void
observe_old_key(Backfiller *b, const char *row, size_t len)
{
	Chunk	   *c = &b->chunk;
	RowSpan		old;
	PQExpBufferData key;
	int			idx;

	if (!rowscan_field(row, len, "old", &old) &&
		!rowscan_field(row, len, "before-image", &old))
		return;
	if (old.len < 2 || old.start[0] != '{')
		return;
	initPQExpBuffer(&key);
	appendPQExpBufferChar(&key, '{');
	for (int k = 0; k < c->nkeynames; k++)
	{
		const char *p = old.start + 1;
		const char *end = old.start + old.len;
		RowSpan		name;
		RowSpan		value;
		bool		found = false;

		while (rowscan_next_field(&p, end, &name, &value))
		{
			if (name.len == strlen(c->keynames[k]) &&
				memcmp(name.start, c->keynames[k], name.len) == 0)
			{
				found = true;
				break;
			}
		}
		if (!found)
		{
			/* The old row lacks a key column: which row it was is unknown. */
			c->redo = true;
			termPQExpBuffer(&key);
			return;
		}
		if (k > 0)
			appendPQExpBufferChar(&key, ',');
		appendPQExpBuffer(&key, "%s:%.*s", c->keynames[k], (int) value.len, value.start);
	}
	appendPQExpBufferChar(&key, '}');
	idx = chunk_find(c, key.data, key.len);
	if (idx >= 0)
		c->rows[idx].dropped = true;
	termPQExpBuffer(&key);
}

void
backfill_observe(Backfiller *b, const char *row, size_t len, const RowFields *f)
{
	Chunk	   *c = &b->chunk;
	int			idx;

	if (f->schema.start == NULL || f->table.start == NULL || !chunk_has_table(c, f))
		return;
	if (f->key.start == NULL)
	{
		/* A truncate (or a change without a key): the chunk is read again. */
		c->redo = true;
		return;
	}
	idx = chunk_find(c, f->key.start, f->key.len);
	if (idx >= 0)
		c->rows[idx].dropped = true;
	if (memmem(row, len, "\"old\":", 6) != NULL || memmem(row, len, "\"before-image\":", 15) != NULL)
		observe_old_key(b, row, len);
}

/* Parses a watermark's content; false when it is not one of this shipper's. */
static bool
watermark_matches(Backfiller *b, const char *row, size_t len, bool *low)
{
	RowSpan		content;
	char	   *text;
	char		slot[NAMEDATALEN + 1];
	long long	request;
	long long	chunk;
	char		mark[8];
	unsigned long long nonce;
	bool		ok;

	if (!b->chunk.active || !rowscan_field(row, len, "content", &content) || content.len < 2)
		return false;
	text = pnstrdup(content.start + 1, content.len - 2);

	ok = sscanf(text, "slot=%64s request=%lld chunk=%lld mark=%7s nonce=%llx",
				slot, &request, &chunk, mark, &nonce) == 5 &&
		strcmp(slot, b->params->slot) == 0 && request == b->job.id &&
		chunk == b->chunk.chunk_no && nonce == b->chunk.nonce;
	*low = strcmp(mark, "low") == 0;
	free(text);
	return ok;
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
ship_chunk(Backfiller *b, uint64_t commit_lsn)
{
	Chunk	   *c = &b->chunk;
	char		idbuf[24];
	char		lsnbuf[24];
	char		shippedbuf[24];
	char		readbuf[24];
	const char *values[6];
	int64_t		shipped = 0;
	bool		lake = target_keeps_loads(b->target);

	if (c->redo)
	{
		/* A truncate came between the watermarks: this chunk again. */
		log_info("backfill %lld: chunk %lld is read again (the table was truncated while it was read)",
				 (long long) b->job.id, (long long) c->chunk_no);
		b->stats.chunks_redone++;
		b->job.reading_done = false;
		free(b->job.after_key);
		b->job.after_key = c->start_key ? pg_strdup(c->start_key) : NULL;
		chunk_free(c);
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
				  (long long) b->job.id, (long long) c->chunk_no);
		return false;
	}

	/* In a lake, the chunk's rows make objects of their own. */
	if (lake && shipped > 0 && !b->flush(b->arg))
		return false;
	for (int i = 0; i < c->nrows; i++)
	{
		if (c->rows[i].dropped)
			continue;
		if (!b->add(b->arg, c->rows[i].row, c->rows[i].len, commit_lsn))
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
				 (long long) b->job.id, (long long) c->chunk_no, LSN_FORMAT_ARGS(commit_lsn),
				 (long long) shipped, (int) (c->nrows - shipped));
	chunk_free(c);
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

		if (!watermark_matches(b, row, len, &low))
			return true;
		if (low)
		{
			b->chunk.watching = true;
			return true;
		}
		if (!b->chunk.watching)
			return true;
		return ship_chunk(b, commit_lsn);
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

/*
 * Before each chunk: the request still stands (not cancelled) and its table
 * is the one it named (not dropped, not renamed).  False when the job has
 * ended (recorded) or the check could not be made (*retry).
 */
static bool
job_still_stands(Backfiller *b, bool *retry)
{
	char		idbuf[24];
	const char *values[1];
	PGresult   *res;
	bool		cancelled;
	bool		gone;
	char	   *now_named = NULL;

	*retry = false;
	values[0] = fmt_i64(idbuf, b->job.id);
	res = run(b, "check a backfill request",
			  "SELECT r.cancelled_at IS NOT NULL, c.oid IS NULL,"
			  "       CASE WHEN c.oid IS NOT NULL THEN pg_catalog.format('%I.%I', n.nspname, c.relname) END,"
			  "       n.nspname = r.schema_name AND c.relname = r.table_name"
			  "  FROM fundrecs.backfill_request r"
			  "  LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid"
			  "  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
			  " WHERE r.request_id = $1",
			  1, values, PGRES_TUPLES_OK);
	if (res == NULL)
	{
		*retry = true;
		return false;
	}
	if (PQntuples(res) != 1)
	{
		PQclear(res);
		job_end(b, "cancelled", "the request was deleted");
		return false;
	}
	cancelled = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	gone = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	if (!gone && strcmp(PQgetvalue(res, 0, 3), "t") != 0)
		now_named = pg_strdup(PQgetvalue(res, 0, 2));
	PQclear(res);
	if (cancelled)
		job_end(b, "cancelled", "cancelled with fundrecs.cancel_backfill()");
	else if (gone)
	{
		char	   *msg = psprintf("table %s.%s was dropped during its backfill",
								   b->job.schema, b->job.table);

		job_end(b, "failed", msg);
		free(msg);
	}
	else if (now_named != NULL)
	{
		char	   *msg = psprintf("table %s.%s was renamed to %s during its backfill; request a backfill of %s",
								   b->job.schema, b->job.table, now_named, now_named);

		job_end(b, "failed", msg);
		free(msg);
	}
	free(now_named);
	return !cancelled && !gone && now_named == NULL;
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
	bool		retry;

	if (!b->enabled || (b->stop != NULL && *b->stop))
		return true;
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
		if (b->pending.final && !b->chunk.active)
		{
			job_end(b, "finished", NULL);
			return true;
		}
	}
	if (b->chunk.active)
		return true;			/* its watermarks are on their way */
	if (!b->job.active && !start_job(b))
		return true;
	if (b->job.reading_done)
	{
		/* The last chunk shipped: done once it is acknowledged. */
		if (!b->pending.active)
			job_end(b, "finished", NULL);
		return true;
	}
	if (!job_still_stands(b, &retry))
	{
		if (retry)
			b->retry_at = now + RETRY_SECS;
		return true;
	}
	if (!read_chunk(b, &retry) && retry)
		b->retry_at = now + RETRY_SECS;
	if (b->job.active && b->job.estimate > 0)
		b->stats.remaining = Max(0, b->job.estimate - b->job.rows_read);
	return true;
}

void
backfill_stats(const Backfiller *b, BackfillStats *s)
{
	double		elapsed = now_seconds() - b->job_started;

	*s = b->stats;
	s->running = b->nqueue + (b->job.active ? 1 : 0);
	s->rate = b->job.active && elapsed > 0 ? b->job_read_here / elapsed : 0;
}
