/*-------------------------------------------------------------------------
 *
 * backfill_int.h
 *	  Inside backfills: chunks and the thread that reads them
 *	  (backfill_read.c), the job and its progress on the server
 *	  (backfill_job.c), for backfill.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BACKFILL_INT_H
#define BACKFILL_INT_H

#include <pthread.h>
#include <stdio.h>

#include "access/xlogdefs.h"	/* LSN_FORMAT_ARGS */
#include "libpq-fe.h"
#include "pqexpbuffer.h"
#include "rowscan.h"
#include "stream.h"
#include "target.h"
#include "backfill.h"

/* A row of a chunk: its text, in one of the chunk's results, and fields. */
typedef struct ChunkRow
{
	const char *row;
	size_t		len;
	RowFields	f;				/* f.key: the row's "key" object */
	bool		dropped;		/* the stream changed its key */
} ChunkRow;

/* A chunk read: its rows, in key order. */
typedef struct Chunk
{
	struct Chunk *next;			/* in the reader's pool of chunks to reuse */
	ChunkRow   *rows;			/* rows the publications let through */
	int			nrows;
	int			maxrows;
	PGresult  **results;		/* the parts as read: the rows' text */
	int			nresults;
	int			maxresults;
	char	   *last_key;		/* text[] literal of its last key, or NULL */
	int			nread;			/* rows read, those filtered out too */
	bool		final;			/* fewer rows than asked: the table's end */
	bool		bytes_full;		/* a part stopped at its bytes: the chunk ends
								 * at its last key */
	bool		indexed;		/* slots made (chunk_find, on first use) */
	int		   *slots;			/* open addressing: row index + 1, 0 free */
	int			nslots;
	int			slotcap;
	char	  **tables;			/* "schema"."table" of its rows, as written */
	int			ntables;
	char	  **keynames;		/* the key's names, quoted, in order */
	int			nkeynames;
	uint64_t	low;			/* its watermarks' positions */
	uint64_t	high;
} Chunk;

typedef enum ReadStatus
{
	READ_OK,
	READ_RETRY,					/* the connection: try again later */
	READ_ENDED					/* the job cannot go on: end_state, message */
} ReadStatus;

/* A chunk to read: its job, where it starts, and its watermarks' names. */
typedef struct ReadTask
{
	int64_t		job_id;
	char		relid[16];
	char	   *schema;
	char	   *table;
	char	   *condition;
	char		chunk_rows[16];
	char	   *after_key;		/* NULL: the table's start */
	int64_t		chunk_no;
	uint64_t	nonce;
} ReadTask;

/*
 * The reader: a thread of its own, with its own connections, so that the
 * stream keeps flowing while a chunk is read.  It writes a chunk's low
 * watermark, reads the chunk (in parts side by side, one per connection,
 * with --backfill-workers), and writes its high watermark.  The main
 * thread gives it a task and takes the result, under lock.
 */
typedef struct Reader
{
	bool		started;
	pthread_t	thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int			wake[2];		/* a pipe: a byte when a result is there */
	bool		busy;			/* a task given, its result not taken */
	bool		done;			/* the result is there */
	Chunk	   *pool;			/* chunks to reuse: their memory is mapped
								 * already, which saves page faults */

	/* Set up once. */
	const ReplConnParams *params;
	const char *options;
	int			workers;
	bool		chunk_fn;		/* extension 1.9: fundrecs.backfill_chunk();
								 * 1.8 has backfill_rows() only */
	long		max_bytes;		/* a part ends once its rows hold this many
								 * (1.9) */
	PGconn	  **conns;

	ReadTask	task;			/* copies, the reader's own */

	/* The result. */
	ReadStatus	status;
	const char *end_state;
	char	   *message;
	Chunk	   *chunk;
} Reader;

static inline const char *
fmt_i64(char *buf, int64_t v)
{
	snprintf(buf, 24, "%lld", (long long) v);
	return buf;
}

static inline const char *
fmt_lsn(char *buf, uint64_t lsn)
{
	snprintf(buf, 24, "%X/%X", LSN_FORMAT_ARGS(lsn));
	return buf;
}

/* Chunks, from the reader's pool (either thread). */
extern Chunk *chunk_get(Reader *rd);
extern void chunk_release(Reader *rd, Chunk *c);

/*
 * The rows of the parts the reader read, copied, scanned and indexed (the
 * main thread's work: the reader is reading the next chunk meanwhile).
 */
extern void chunk_fill(Chunk *c, const char *schema, const char *table);

/* The row of that key object, or -1. */
extern int	chunk_find(Chunk *c, const char *key, size_t len);

/* Has the chunk rows of that table ("schema"."table", as rows write it)? */
extern bool chunk_has_table(const Chunk *c, const char *name, size_t len);

/*
 * The row whose key an old row holds is dropped; false when the old row
 * lacks a key column.
 */
extern bool chunk_drop_old_key(Chunk *c, const char *old, size_t oldlen);

extern bool reader_give(Reader *rd, const ReplConnParams *params, const char *options,
						const ReadTask *task);
extern bool reader_collect(Reader *rd, bool wait);
extern bool reader_has_chunk(Reader *rd);

/* Readable when a result is there (-1: the reader has not started). */
extern int	reader_wake_fd(const Reader *rd);

/* ----------------------------------------------------------------
 * The backfiller: the stream's side (backfill.c) and the server's
 * (backfill_job.c).
 * ----------------------------------------------------------------
 */

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

/*
 * How many chunks can be in flight: one read while those before wait for
 * their watermarks or are being scanned.
 */
#define MAX_FLIGHTS 3

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

/* The server's side (backfill_job.c). */

/*
 * Runs a statement on the backfiller's connection; NULL after logging when
 * it failed (a lost connection is opened again at the next try).
 */
extern PGresult *bf_run(Backfiller *b, const char *what, const char *sql, int n,
						const char *const *values, ExecStatusType want);
extern bool bf_run_command(Backfiller *b, const char *what, const char *sql, int n,
						   const char *const *values);

/*
 * Records the job's end in the given state, with a message (or NULL), and
 * forgets it; what the stream's side holds of it is backfill.c's to drop.
 */
extern void bf_job_record_end(Backfiller *b, const char *state, const char *message);

/* The pending chunk acknowledged: its progress recorded. */
extern bool bf_record_done(Backfiller *b, int64_t id, uint64_t lsn);

/* A request seen in the stream (its id): queued for this slot. */
extern bool bf_queue_request(Backfiller *b, const char *id);

/* Loads the next queued request; false when there is none to run now. */
extern bool bf_start_job(Backfiller *b);

#endif							/* BACKFILL_INT_H */
