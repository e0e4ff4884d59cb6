/*-------------------------------------------------------------------------
 *
 * backfill_int.h
 *	  Inside backfills: chunks and the thread that reads them
 *	  (backfill_read.c), for backfill.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BACKFILL_INT_H
#define BACKFILL_INT_H

#include <pthread.h>
#include <stdio.h>

#include "access/xlogdefs.h"	/* LSN_FORMAT_ARGS */
#include "libpq-fe.h"
#include "rowscan.h"
#include "stream.h"

/* A row of a chunk: its text, in one of the chunk's blocks, and fields. */
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
	char	  **texts;			/* the rows' text, a block per part read */
	size_t	   *textcaps;
	int			ntexts;
	int			maxtexts;
	ChunkRow   *rows;			/* rows the publications let through */
	int			nrows;
	int			maxrows;
	char	   *last_key;		/* text[] literal of its last key, or NULL */
	int			nread;			/* rows read, those filtered out too */
	bool		final;			/* fewer rows than asked: the table's end */
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

/* The row of that key object, or -1. */
extern int	chunk_find(const Chunk *c, const char *key, size_t len);

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

/* Readable when a result is there (-1: the reader has not started). */
extern int	reader_wake_fd(const Reader *rd);

#endif							/* BACKFILL_INT_H */
