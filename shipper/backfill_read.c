/*-------------------------------------------------------------------------
 *
 * backfill_read.c
 *	  Reading backfill chunks: the reader thread, its connections, and the
 *	  chunks it fills (see backfill.c for what is done with them).
 *
 * For each chunk the reader checks that its request still stands, commits
 * the low watermark, reads the chunk (in parts side by side, one per
 * connection, with --backfill-workers), and commits the high watermark.
 * A part comes in batches, its rows a line each (fundrecs.backfill_chunk,
 * extension 1.9); each row stays in the result libpq made and is scanned
 * once, its fields going to the target with it.  Chunks come back to a
 * pool, so that their arrays, mapped already, are used again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "backfill_int.h"
#include "dispatch.h"
#include "log.h"
#include "port/pg_bswap.h"
#include "pqexpbuffer.h"

/* ----------------------------------------------------------------
 * Chunks
 * ----------------------------------------------------------------
 */

/*
 * A chunk emptied for reuse: it keeps its blocks, rows and slots, whose
 * pages are mapped already.  (Fresh memory for every chunk cost more in
 * page faults than reading the rows did.)
 */
static void
chunk_reset(Chunk *c)
{
	for (int i = 0; i < c->nresults; i++)
		PQclear(c->results[i]);
	c->nresults = 0;
	c->nrows = 0;
	c->indexed = false;
	c->nslots = 0;
	free(c->last_key);
	c->last_key = NULL;
	c->nread = 0;
	c->final = false;
	c->bytes_full = false;
	for (int i = 0; i < c->ntables; i++)
		free(c->tables[i]);
	free(c->tables);
	c->tables = NULL;
	c->ntables = 0;
	for (int i = 0; i < c->nkeynames; i++)
		free(c->keynames[i]);
	free(c->keynames);
	c->keynames = NULL;
	c->nkeynames = 0;
	c->low = c->high = 0;
}

/* A chunk to fill, from the pool if it has one (either thread). */
Chunk *
chunk_get(Reader *rd)
{
	Chunk	   *c;

	pthread_mutex_lock(&rd->lock);
	c = rd->pool;
	if (c != NULL)
		rd->pool = c->next;
	pthread_mutex_unlock(&rd->lock);
	if (c == NULL)
		c = pg_malloc0(sizeof(Chunk));
	c->next = NULL;
	return c;
}

/* Back to the pool (either thread). */
void
chunk_release(Reader *rd, Chunk *c)
{
	if (c == NULL)
		return;
	chunk_reset(c);
	pthread_mutex_lock(&rd->lock);
	c->next = rd->pool;
	rd->pool = c;
	pthread_mutex_unlock(&rd->lock);
}

static void chunk_index(Chunk *c);

/*
 * The chunk's row of a key, -1 if none.  Its index is made at the first
 * call: most chunks see no change of their table between their watermarks,
 * and need none.
 */
int
chunk_find(Chunk *c, const char *key, size_t len)
{
	uint32_t	mask;

	if (!c->indexed)
		chunk_index(c);
	mask = c->nslots - 1;
	if (c->nslots == 0)
		return -1;
	for (uint32_t i = dispatch_key_hash(key, len) & mask;; i = (i + 1) & mask)
	{
		int			slot = c->slots[i];
		const RowSpan *k;

		if (slot == 0)
			return -1;
		k = &c->rows[slot - 1].f.key;
		if (k->len == len && memcmp(k->start, key, len) == 0)
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
	if (c->slotcap < c->nslots)
	{
		free(c->slots);
		c->slots = pg_malloc(sizeof(int) * c->nslots);
		c->slotcap = c->nslots;
	}
	memset(c->slots, 0, sizeof(int) * c->nslots);
	c->indexed = true;
	mask = c->nslots - 1;
	for (int r = 0; r < c->nrows; r++)
	{
		uint32_t	i = dispatch_key_hash(c->rows[r].f.key.start, c->rows[r].f.key.len) & mask;

		while (c->slots[i] != 0)
			i = (i + 1) & mask;
		c->slots[i] = r + 1;
	}
}

/* Is t ("schema"."table", as rows write them) the table of those spans? */
static bool
table_is(const char *t, size_t tlen, const char *name, size_t len)
{
	return tlen == len && memcmp(t, name, len) == 0;
}

bool
chunk_has_table(const Chunk *c, const char *name, size_t len)
{
	for (int i = 0; i < c->ntables; i++)
		if (table_is(c->tables[i], strlen(c->tables[i]), name, len))
			return true;
	return false;
}

/* Notes the table a row of the chunk belongs to. */
static void
chunk_note_table(Chunk *c, const RowFields *f)
{
	for (int i = c->ntables - 1; i >= 0; i--)
	{
		const char *t = c->tables[i];
		size_t		sl = f->schema.len;

		if (strlen(t) == sl + 1 + f->table.len && memcmp(t, f->schema.start, sl) == 0 &&
			t[sl] == '.' && memcmp(t + sl + 1, f->table.start, f->table.len) == 0)
			return;
	}
	c->tables = pg_realloc(c->tables, sizeof(char *) * (c->ntables + 1));
	c->tables[c->ntables++] = psprintf("%.*s.%.*s", (int) f->schema.len, f->schema.start,
									   (int) f->table.len, f->table.start);
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

/*
 * A key as the server sends a text[] in binary (ndim, has-null flag,
 * element type, each dimension's size and lower bound, then each element's
 * length and bytes), as a text[] literal for the next chunk's after_key:
 * every element quoted.  NULL when it is not a one-dimensional array
 * without nulls.  (Binary, because array_out, run for every row of a
 * chunk while only the last row's key is wanted, cost a fifth of reading
 * a chunk.)
 */
static uint32_t
get32(const char *p)
{
	uint32_t	v;

	memcpy(&v, p, 4);
	return pg_ntoh32(v);
}

static char *
key_literal(const char *p, int len)
{
	const char *end = p + len;
	PQExpBufferData lit;
	uint32_t	ndim;
	uint32_t	nitems;

	if (len < 12)
		return NULL;
	ndim = get32(p);
	if (ndim != 1 || len < 20 || get32(p + 4) != 0)
		return NULL;
	nitems = get32(p + 12);
	p += 20;
	initPQExpBuffer(&lit);
	appendPQExpBufferChar(&lit, '{');
	for (uint32_t i = 0; i < nitems; i++)
	{
		int32_t		elen;

		if (end - p < 4)
			break;
		elen = (int32_t) get32(p);
		p += 4;
		if (elen < 0 || end - p < elen)
			break;
		if (i > 0)
			appendPQExpBufferChar(&lit, ',');
		appendPQExpBufferChar(&lit, '"');
		for (int32_t j = 0; j < elen; j++)
		{
			if (p[j] == '"' || p[j] == '\\')
				appendPQExpBufferChar(&lit, '\\');
			appendPQExpBufferChar(&lit, p[j]);
		}
		appendPQExpBufferChar(&lit, '"');
		p += elen;
		if (i == nitems - 1 && p == end)
		{
			appendPQExpBufferChar(&lit, '}');
			return lit.data;
		}
	}
	termPQExpBuffer(&lit);
	return NULL;
}

/*
 * A part's rows, added to the chunk: each row is a line of a batch's body,
 * left where libpq put it and scanned once (the fields go to the target
 * with the row).
 */
static void
chunk_add_part(Chunk *c, PGresult *res, const char *schema, const char *table)
{
	size_t		prefix = 0;		/* a row's header (rowscan_key_prefix): its
								 * length, */
	const char *headrow = NULL; /* the row, */
	RowFields	head;			/* and its fields */

	for (int b = 0; b < PQntuples(res); b++)
	{
		const char *p = PQgetvalue(res, b, 3);
		const char *end = p + PQgetlength(res, b, 3);

		while (p < end)
		{
			const char *nl = memchr(p, '\n', end - p);
			ChunkRow   *row;
			bool		ok;

			if (nl == NULL)
				nl = end;
			if (c->nrows == c->maxrows)
			{
				c->maxrows = Max(1024, c->maxrows * 2);
				c->rows = pg_realloc(c->rows, sizeof(ChunkRow) * c->maxrows);
			}
			row = &c->rows[c->nrows];
			row->row = p;
			row->len = nl - p;
			row->dropped = false;
			p = nl + 1;
			if (prefix > 0 && row->len > prefix && memcmp(row->row, headrow, prefix) == 0)
				ok = rowscan_after_prefix(row->row, row->len, headrow, &head, prefix, &row->f);
			else
			{
				ok = rowscan(row->row, row->len, &row->f);
				prefix = ok ? rowscan_key_prefix(row->row, row->len, &head) : 0;
				headrow = row->row;
			}
			if (!ok || row->f.key.start == NULL ||
				row->f.schema.start == NULL || row->f.table.start == NULL)
			{
				prefix = 0;
				log_error("backfill: a row of %s.%s has no key: %.*s", schema, table,
						  (int) Min(row->len, 200), row->row);
				continue;
			}
			chunk_note_table(c, &row->f);
			if (c->nkeynames == 0)
				chunk_note_keynames(c, &row->f.key);
			c->nrows++;
		}
	}
}

/*
 * A part as the reader read it (fundrecs.backfill_chunk()'s batches:
 * rows_read, last_key, bytes_full, body), kept for chunk_fill: its rows
 * counted, and its last key taken (the next chunk starts after it).  False,
 * with the chunk unchanged, when the server's answer is not of that shape.
 */
static bool
chunk_keep_part(Chunk *c, PGresult *res, const char *schema, const char *table)
{
	int			n = PQntuples(res);
	char	   *key = NULL;
	int64_t		nread = 0;
	bool		ok = PQnfields(res) == 4;

	for (int i = 0; i < 4 && ok; i++)
		ok = PQfformat(res, i) == 1;
	for (int b = 0; b < n && ok; b++)
		ok = PQgetlength(res, b, 0) == 4 && PQgetlength(res, b, 2) == 1 &&
			!PQgetisnull(res, b, 3);
	if (!ok)
	{
		log_error("backfill: the server's answer for a chunk of %s.%s is not what fundrecs.backfill_chunk() returns",
				  schema, table);
		return false;
	}
	for (int b = 0; b < n; b++)
		nread += (int32_t) get32(PQgetvalue(res, b, 0));
	for (int b = n - 1; b >= 0 && key == NULL; b--)
	{
		if (PQgetisnull(res, b, 1))
			continue;
		key = key_literal(PQgetvalue(res, b, 1), PQgetlength(res, b, 1));
		if (key == NULL)
		{
			log_error("backfill: the server sent a key of %s.%s that is not a one-dimensional text[]",
					  schema, table);
			return false;
		}
	}
	if (c->nresults == c->maxresults)
	{
		c->maxresults = Max(4, c->maxresults * 2);
		c->results = pg_realloc(c->results, sizeof(PGresult *) * c->maxresults);
	}
	c->results[c->nresults++] = res;
	c->nread += (int) nread;
	c->bytes_full = n > 0 && PQgetvalue(res, n - 1, 2)[0] != 0;
	if (key != NULL)
	{
		free(c->last_key);
		c->last_key = key;
	}
	return true;
}

/*
 * The chunk's rows scanned, at its high watermark (reader_take only hands
 * the chunk over, so that the next one is asked for at once).
 */
void
chunk_fill(Chunk *c, const char *schema, const char *table)
{
	for (int i = 0; i < c->nresults; i++)
		chunk_add_part(c, c->results[i], schema, table);
}

/*
 * The key of an old row (an update that changed the key, as "old" or
 * "before-image"): the chunk's row of that key is dropped.  False when the
 * old row lacks a key column: which row it was is unknown.
 */
bool
chunk_drop_old_key(Chunk *c, const char *old, size_t oldlen)
{
	PQExpBufferData key;
	int			idx;

	initPQExpBuffer(&key);
	appendPQExpBufferChar(&key, '{');
	for (int k = 0; k < c->nkeynames; k++)
	{
		const char *p = old + 1;
		const char *end = old + oldlen;
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
			termPQExpBuffer(&key);
			return false;
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
	return true;
}

/* ----------------------------------------------------------------
 * The reader
 * ----------------------------------------------------------------
 */

/*
 * Before each chunk: the request still stands (not cancelled) and its table
 * is the one it named (not dropped, not renamed), and if so, the chunk's low
 * watermark ($2), in one statement (see request_stands).
 */
#define CHECK_LOW_SQL \
	"SELECT r.cancelled_at IS NOT NULL, c.oid IS NULL," \
	"       CASE WHEN c.oid IS NOT NULL THEN pg_catalog.format('%I.%I', n.nspname, c.relname) END," \
	"       n.nspname = r.schema_name AND c.relname = r.table_name," \
	"       CASE WHEN r.cancelled_at IS NULL AND n.nspname = r.schema_name" \
	"                 AND c.relname = r.table_name" \
	"            THEN pg_catalog.pg_logical_emit_message(true, 'fundrecs.watermark', $2) END" \
	"  FROM fundrecs.backfill_request r" \
	"  LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid" \
	"  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace" \
	" WHERE r.request_id = $1"

#define HIGH_SQL "SELECT pg_catalog.pg_logical_emit_message(true, 'fundrecs.watermark', $1)"

#define BOUNDS_SQL \
	"SELECT upto_key::text, rows FROM fundrecs.backfill_bounds($1::oid::regclass," \
	" $2::text[], $3::integer, $4::integer, $5)"

/*
 * A part of a chunk, its batches.  The function is called in the select
 * list, so that they stream (in FROM they would go through a tuplestore),
 * once (OFFSET 0 keeps the subquery).
 */
#define CHUNK_SQL \
	"SELECT (c).rows_read, (c).last_key, (c).bytes_full, (c).body" \
	"  FROM (SELECT fundrecs.backfill_chunk($1::oid::regclass, $2::text[], $3::integer," \
	"               $4::pg_lsn, $5::text[], $6, $7::text[], $8::integer) AS c OFFSET 0) AS s"

/*
 * The same answer from extension 1.8, which has backfill_rows() only: the
 * shipper may be upgraded before ALTER EXTENSION fundrecs UPDATE is run.
 */
#define CHUNK_SQL_1_8 \
	"WITH r AS (SELECT * FROM fundrecs.backfill_rows($1::oid::regclass, $2::text[]," \
	"                    $3::integer, $4::pg_lsn, $5::text[], $6, $7::text[])" \
	"                  WITH ORDINALITY AS r (key, row_json, n))" \
	"SELECT count(*)::integer, (SELECT key FROM r ORDER BY n DESC LIMIT 1), false," \
	"       coalesce(string_agg(row_json, E'\\n' ORDER BY n), '')" \
	"  FROM r"

/*
 * The statements of every chunk, prepared once on each of the reader's
 * connections: planned each time, the check alone cost the server half a
 * millisecond a chunk.
 */
typedef enum ReaderStmt
{
	STMT_CHECK_LOW,
	STMT_HIGH,
	STMT_BOUNDS,
	STMT_CHUNK,
	NUM_READER_STMTS
} ReaderStmt;

static const char *const reader_stmt_names[NUM_READER_STMTS] = {
	"fundrecs_check_low", "fundrecs_high", "fundrecs_bounds", "fundrecs_chunk"
};

static const char *
reader_stmt_sql(const Reader *rd, ReaderStmt s)
{
	switch (s)
	{
		case STMT_CHECK_LOW:
			return CHECK_LOW_SQL;
		case STMT_HIGH:
			return HIGH_SQL;
		case STMT_BOUNDS:
			return BOUNDS_SQL;
		default:
			return rd->chunk_fn ? CHUNK_SQL : CHUNK_SQL_1_8;
	}
}

/* A statement on one of the reader's connections; NULL after a warning. */
static PGresult *
reader_run(Reader *rd, int i, const char *what, ReaderStmt stmt, int n,
		   const char *const *values, ExecStatusType want)
{
	PGresult   *res;

	res = PQexecPrepared(rd->conns[i], reader_stmt_names[stmt], n, values, NULL, NULL, 0);
	if (PQresultStatus(res) == want)
		return res;
	log_warning("backfill: could not %s: %s", what, PQerrorMessage(rd->conns[i]));
	PQclear(res);
	return NULL;
}

/* The reader's connection i, opened if need be; false when it cannot be. */
static bool
reader_connected(Reader *rd, int i)
{
	PGresult   *res;

	if (rd->conns[i] != NULL && PQstatus(rd->conns[i]) == CONNECTION_OK)
		return true;
	if (rd->conns[i] != NULL)
		PQfinish(rd->conns[i]);
	rd->conns[i] = db_connect(rd->params, false);
	if (rd->conns[i] == NULL)
		return false;

	/*
	 * As the main connection's: watermarks never wait for a standby.
	 * Extension 1.8's backfill_rows() gathers a chunk's rows in a tuplestore
	 * before they are sent: with less than 64 MB of work_mem (4 MB by
	 * default), a chunk of 50,000 W1 rows (20 MB) went through a temporary
	 * file.  A larger setting of the role's or the database's is kept. (1.9's
	 * backfill_chunk() streams its batches.)
	 */
	res = PQexec(rd->conns[i], "SET application_name = 'fundrecs_shipper backfill'; "
				 "SET synchronous_commit = local; "
				 "SELECT set_config('work_mem', greatest(pg_size_bytes(current_setting('work_mem')),"
				 " 64 * 1024 * 1024) / 1024 || 'kB', false)");
	PQclear(res);
	for (int s = 0; s < NUM_READER_STMTS; s++)
	{
		res = PQprepare(rd->conns[i], reader_stmt_names[s], reader_stmt_sql(rd, s), 0, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			log_warning("backfill: could not prepare a statement: %s",
						PQerrorMessage(rd->conns[i]));
			PQclear(res);
			PQfinish(rd->conns[i]);
			rd->conns[i] = NULL;
			return false;
		}
		PQclear(res);
	}
	return true;
}

/* After a failure: connections that are not idle and sound are closed. */
static void
reader_reset_conns(Reader *rd)
{
	for (int i = 0; i < rd->workers; i++)
		if (rd->conns[i] != NULL &&
			(PQstatus(rd->conns[i]) != CONNECTION_OK ||
			 PQtransactionStatus(rd->conns[i]) != PQTRANS_IDLE))
		{
			PQfinish(rd->conns[i]);
			rd->conns[i] = NULL;
		}
}

static void
read_end(Reader *rd, const char *state, char *message)
{
	rd->status = READ_ENDED;
	rd->end_state = state;
	rd->message = message;
}

/* A watermark's text: which slot, request, chunk and mark, and the nonce. */
static char *
watermark_text(const Reader *rd, const char *mark)
{
	return psprintf("slot=%s request=%lld chunk=%lld mark=%s nonce=%llx",
					rd->params->slot, (long long) rd->task.job_id,
					(long long) rd->task.chunk_no, mark,
					(unsigned long long) rd->task.nonce);
}

/*
 * Before each chunk: the request still stands (not cancelled) and its table
 * is the one it named (not dropped, not renamed); if it does, the chunk's
 * low watermark is emitted by the same statement, its position in *lsn
 * (one round trip where there were two).  Without low, only the check.
 * False when the job ends (the result says how) or the check could not be
 * made (READ_RETRY).
 */
static bool
request_stands(Reader *rd, uint64_t *low)
{
	char		idbuf[24];
	char	   *mark = watermark_text(rd, "low");
	const char *values[2];
	PGresult   *res;
	bool		cancelled;
	bool		gone;

	values[0] = fmt_i64(idbuf, rd->task.job_id);
	values[1] = low != NULL ? mark : NULL;
	res = reader_run(rd, 0, "check a backfill request", STMT_CHECK_LOW, 2, values,
					 PGRES_TUPLES_OK);
	free(mark);
	if (res == NULL)
	{
		rd->status = READ_RETRY;
		return false;
	}
	if (PQntuples(res) != 1)
	{
		PQclear(res);
		read_end(rd, "cancelled", pg_strdup("the request was deleted"));
		return false;
	}
	cancelled = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	gone = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	if (cancelled)
		read_end(rd, "cancelled", pg_strdup("cancelled with fundrecs.cancel_backfill()"));
	else if (gone)
		read_end(rd, "failed", psprintf("table %s.%s was dropped during its backfill",
										rd->task.schema, rd->task.table));
	else if (strcmp(PQgetvalue(res, 0, 3), "t") != 0)
		read_end(rd, "failed",
				 psprintf("table %s.%s was renamed to %s during its backfill; request a backfill of %s",
						  rd->task.schema, rd->task.table, PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 2)));
	else if (low != NULL)
	{
		const char *text = PQgetvalue(res, 0, 4);

		(void) rowscan_parse_lsn(text, strlen(text), low);
	}
	PQclear(res);
	return !cancelled && !gone && rd->status != READ_ENDED;
}

/* Emits the chunk's high watermark on the first connection; its position in *lsn. */
static bool
reader_high_watermark(Reader *rd, uint64_t *lsn)
{
	char	   *content = watermark_text(rd, "high");
	const char *values[1] = {content};
	PGresult   *res = reader_run(rd, 0, "write a backfill watermark", STMT_HIGH,
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
 * The parts of the chunk: one, or with workers, the bounds the server finds
 * for about chunk_rows / workers rows each (uptos[i], NULL for one part).
 * Returns how many; -1 on failure.
 */
static int
read_parts(Reader *rd, char ***uptos, bool *final)
{
	int			max_rows = atoi(rd->task.chunk_rows);
	int			parts = Min(rd->workers, max_rows);
	char		partsbuf[24];
	const char *values[5];
	PGresult   *res;
	int			n;
	int64_t		rows = 0;

	*uptos = pg_malloc0(sizeof(char *) * Max(parts, 1));
	if (parts <= 1)
	{
		*final = false;			/* known once read */
		return 1;
	}
	values[0] = rd->task.relid;
	values[1] = rd->task.after_key;
	values[2] = rd->task.chunk_rows;
	values[3] = fmt_i64(partsbuf, parts);
	values[4] = rd->task.condition;
	res = reader_run(rd, 0, "split a backfill chunk", STMT_BOUNDS, 5, values, PGRES_TUPLES_OK);
	if (res == NULL)
		return -1;
	n = PQntuples(res);
	for (int i = 0; i < n; i++)
	{
		(*uptos)[i] = pg_strdup(PQgetvalue(res, i, 0));
		rows += strtoll(PQgetvalue(res, i, 1), NULL, 10);
	}
	PQclear(res);
	*final = rows < max_rows;
	return n;
}

/* One chunk: check, low watermark, the parts side by side, high watermark. */
static void
reader_task(Reader *rd)
{
	Chunk	   *c = chunk_get(rd);
	uint64_t	lw;
	uint64_t	hw;
	char		lsnbuf[24];
	char	  **uptos = NULL;
	int			nparts;
	bool		final = false;
	char	   *err = NULL;
	bool		lost = false;
	int			cut = -1;		/* the part that stopped at its bytes */

	rd->status = READ_OK;
	rd->chunk = NULL;
	if (!reader_connected(rd, 0))
	{
		rd->status = READ_RETRY;
		chunk_release(rd, c);
		return;
	}
	if (!request_stands(rd, &lw))
	{
		if (rd->status == READ_OK)
			rd->status = READ_RETRY;
		reader_reset_conns(rd);
		chunk_release(rd, c);
		return;
	}
	nparts = read_parts(rd, &uptos, &final);
	for (int i = 0; i < nparts && !lost; i++)
	{
		const char *values[8];
		char		bytesbuf[24];

		values[0] = rd->task.relid;
		values[1] = i == 0 ? rd->task.after_key : uptos[i - 1];
		values[2] = rd->task.chunk_rows;
		values[3] = fmt_lsn(lsnbuf, lw);
		values[4] = rd->options;
		values[5] = rd->task.condition;
		values[6] = uptos[i];
		values[7] = fmt_i64(bytesbuf, rd->max_bytes);
		if (!reader_connected(rd, i) ||
			!PQsendQueryPrepared(rd->conns[i], reader_stmt_names[STMT_CHUNK],
								 rd->chunk_fn ? 8 : 7, values, NULL, NULL, 1))
		{
			if (rd->conns[i] != NULL)
				log_warning("backfill: could not read a chunk: %s", PQerrorMessage(rd->conns[i]));
			lost = true;
			nparts = i;			/* those sent are drained below */
		}
	}
	for (int i = 0; i < nparts; i++)
	{
		PGresult   *res;
		PGresult   *more;

		res = PQgetResult(rd->conns[i]);
		while ((more = PQgetResult(rd->conns[i])) != NULL)
			PQclear(more);
		if (PQresultStatus(res) == PGRES_TUPLES_OK && err == NULL && !lost && cut < 0)
		{
			if (!chunk_keep_part(c, res, rd->task.schema, rd->task.table))
				exit(1);
			if (c->bytes_full)
				cut = i;		/* the parts after it are read again */
			continue;
		}
		if (PQresultStatus(res) != PGRES_TUPLES_OK && err == NULL)
		{
			err = pg_strdup(PQerrorMessage(rd->conns[i]));
			if (PQstatus(rd->conns[i]) != CONNECTION_OK)
			{
				log_warning("backfill: could not read a chunk: %s", err);
				lost = true;
			}
		}
		PQclear(res);
	}
	if (lost || err != NULL)
	{
		reader_reset_conns(rd);
		if (lost || !reader_connected(rd, 0))
			rd->status = READ_RETRY;
		else if (request_stands(rd, NULL))
		{
			/*
			 * The table, its options or the rights: the job cannot go on. (A
			 * table dropped or renamed ends it in request_stands, with its
			 * own message.)
			 */
			err[strcspn(err, "\n")] = '\0';
			if (strncmp(err, "ERROR:  ", 8) == 0)
				memmove(err, err + 8, strlen(err + 8) + 1);
			read_end(rd, "failed", err);
			err = NULL;
		}
		else if (rd->status == READ_OK)
			rd->status = READ_RETRY;
		free(err);
		chunk_release(rd, c);
	}
	else
	{
		if (cut >= 0)
			c->final = false;	/* it ends at the cut part's last key */
		else if (nparts > 1 || (nparts == 1 && uptos[0] != NULL))
		{
			/* Parts: the chunk ends at the last bound, whatever was read. */
			free(c->last_key);
			c->last_key = pg_strdup(uptos[nparts - 1]);
			c->final = final;
		}
		else if (nparts == 0)
			c->final = true;
		else
			c->final = c->nread < atoi(rd->task.chunk_rows);
		if (!reader_high_watermark(rd, &hw))
		{
			rd->status = READ_RETRY;
			reader_reset_conns(rd);
			chunk_release(rd, c);
		}
		else
		{
			c->low = lw;
			c->high = hw;
			rd->chunk = c;
		}
	}
	for (int i = 0; uptos != NULL && i < Max(nparts, 1); i++)
		free(uptos[i]);
	free(uptos);
}

static void *
reader_main(void *arg)
{
	Reader	   *rd = arg;

	pthread_mutex_lock(&rd->lock);
	for (;;)
	{
		while (!rd->busy || rd->done)
			pthread_cond_wait(&rd->cond, &rd->lock);
		pthread_mutex_unlock(&rd->lock);
		reader_task(rd);
		pthread_mutex_lock(&rd->lock);
		rd->done = true;
		pthread_cond_broadcast(&rd->cond);
		if (write(rd->wake[1], "", 1) < 0 && errno != EAGAIN)
			log_warning("backfill: could not wake the main loop: %m");
	}
	return NULL;
}


/* Gives the reader a chunk to read; false if its thread cannot start. */
bool
reader_give(Reader *rd, const ReplConnParams *params, const char *options,
			const ReadTask *task)
{
	if (!rd->started)
	{
		rd->params = params;
		rd->options = options;
		rd->conns = pg_malloc0(sizeof(PGconn *) * rd->workers);
		pthread_mutex_init(&rd->lock, NULL);
		pthread_cond_init(&rd->cond, NULL);
		if (pipe2(rd->wake, O_NONBLOCK | O_CLOEXEC) != 0)
		{
			log_error("backfill: could not create a pipe: %m");
			return false;
		}
		if (pthread_create(&rd->thread, NULL, reader_main, rd) != 0)
		{
			log_error("backfill: could not start the reader thread: %m");
			return false;
		}
		rd->started = true;
	}
	pthread_mutex_lock(&rd->lock);
	free(rd->task.schema);
	free(rd->task.table);
	free(rd->task.condition);
	free(rd->task.after_key);
	rd->task = *task;
	rd->task.schema = pg_strdup(task->schema);
	rd->task.table = pg_strdup(task->table);
	rd->task.condition = task->condition ? pg_strdup(task->condition) : NULL;
	rd->task.after_key = task->after_key ? pg_strdup(task->after_key) : NULL;
	rd->busy = true;
	rd->done = false;
	pthread_cond_broadcast(&rd->cond);
	pthread_mutex_unlock(&rd->lock);
	return true;
}

/*
 * True when the reader's result was taken (rd->status, rd->chunk): it was
 * there, or wait was set and the reader was busy.
 */
bool
reader_collect(Reader *rd, bool wait)
{
	char		drain[16];

	if (!rd->started)
		return false;
	pthread_mutex_lock(&rd->lock);
	if (!rd->busy || (!rd->done && !wait))
	{
		pthread_mutex_unlock(&rd->lock);
		return false;
	}
	while (!rd->done)
		pthread_cond_wait(&rd->cond, &rd->lock);
	rd->busy = false;
	pthread_mutex_unlock(&rd->lock);
	while (read(rd->wake[0], drain, sizeof(drain)) > 0)
		;
	return true;
}

/* Has the reader a chunk read, its result not taken yet? */
bool
reader_has_chunk(Reader *rd)
{
	bool		ready;

	if (!rd->started)
		return false;
	pthread_mutex_lock(&rd->lock);
	ready = rd->busy && rd->done && rd->status == READ_OK && rd->chunk != NULL;
	pthread_mutex_unlock(&rd->lock);
	return ready;
}

int
reader_wake_fd(const Reader *rd)
{
	return rd->started ? rd->wake[0] : -1;
}
