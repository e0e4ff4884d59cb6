/*-------------------------------------------------------------------------
 *
 * backfill.c
 *	  Backfills while the stream flows: chunks read by key between two
 *	  watermarks, their rows shipped as of the high one (see backfill.h).
 *
 * Why the rows shipped are never older than the stream's: a chunk is read
 * after its low watermark commits, through a snapshot that sees every
 * commit before it (the server waits for those not yet visible: see
 * chunk_snapshot in fundrecs_backfill.c), and before its high watermark
 * commits.  A row whose key no change touched between the two watermarks
 * is, at the high watermark, the row as the chunk read it; a row whose key
 * did change is dropped, since the stream carries that change, newer,
 * before the high watermark.  A truncate of the table between them makes
 * the chunk be read again.  This is DBLog's algorithm (Netflix, 2020),
 * with the watermarks as transactional messages rather than writes to a
 * table.
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

void
backfill_set_verbose(Backfiller *b, bool verbose)
{
	b->verbose = verbose;
}

void
backfill_set_chunk_bytes(Backfiller *b, long bytes)
{
	b->reader.max_bytes = bytes;
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
	b->reader.max_bytes = BACKFILL_DEFAULT_CHUNK_BYTES;
	return b;
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

static void reader_take(Backfiller *b, bool wait);

/*
 * Ends the job: recorded on the server, and what is read of it is not
 * shipped.
 */
static void
job_end(Backfiller *b, const char *state, const char *message)
{
	bf_job_record_end(b, state, message);
	reader_take(b, true);
	flights_drop_all(b);
}

static void dispatch(Backfiller *b);

/* The reader is idle and a flight free: the job's next chunk may go. */
static bool
can_dispatch(Backfiller *b)
{
	return b->job.active && !b->job.reading_done && !b->reader.busy &&
		flights_active(b) < MAX_FLIGHTS && now_seconds() >= b->retry_at;
}

/*
 * Takes the reader's result, when there is one (or, with wait, once there
 * is): the chunk goes to its flight, or the job ends, or is tried again.
 * The next chunk is asked for at once, so that the server reads it
 * meanwhile; the chunk's rows are scanned when it ships (chunk_fill).
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
	if (can_dispatch(b))
		dispatch(b);
}

/*
 * While a chunk ships: a chunk the reader has read is taken, and the next
 * one asked for, without waiting for the shipping to end (the server would
 * idle meanwhile).  Only a chunk read: an ended or failed read, which may
 * drop the flights, waits for the main loop.
 */
static void
reader_take_read(Backfiller *b)
{
	if (reader_has_chunk(&b->reader))
		reader_take(b, false);
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
	if (!bf_record_done(b, b->job.id, b->pending.lsn))
		return false;
	b->job.chunks_done++;
	b->stats.chunks++;
	b->pending.active = false;
	return true;
}

/* Rows shipped between looks at the reader (a power of 2). */
#define SHIP_POLL_ROWS 4096

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
	chunk_fill(c, b->job.schema, b->job.table);
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
		!bf_run_command(b, "record a backfill chunk",
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
		if ((i & (SHIP_POLL_ROWS - 1)) == SHIP_POLL_ROWS - 1)
			reader_take_read(b);
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
		ok = bf_queue_request(b, id);
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
		if (!bf_record_done(b, b->job.id, b->pending.lsn))
		{
			b->retry_at = now + RETRY_SECS;
			return true;
		}
		b->pending.active = false;
		b->job.chunks_done++;
		b->stats.chunks++;
	}
	if (!b->job.active && !bf_start_job(b))
		return true;
	if (b->job.reading_done)
	{
		/* The last chunk shipped: done once it is acknowledged. */
		if (!b->pending.active && flights_active(b) == 0)
			job_end(b, "finished", NULL);
		return true;
	}
	/* Chunks read while those before wait for their watermarks. */
	if (can_dispatch(b))
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
