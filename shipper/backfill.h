/*-------------------------------------------------------------------------
 *
 * backfill.h
 *	  Backfills: a table's rows shipped again, chunk by chunk, while the
 *	  stream flows (fundrecs.backfill(), extension 1.8).
 *
 * For each chunk the shipper writes a low watermark, reads the chunk with
 * fundrecs.backfill_rows() and writes a high watermark (each a
 * transactional message of its own).  When the low watermark arrives in
 * the stream, the keys of the table's changes are noted; when the high
 * one arrives, the chunk's rows whose key changed in between are dropped
 * (the stream carries a newer version of them) and the others are handed
 * to the target as rows of the high watermark's transaction.  A chunk's
 * progress is recorded once every target has acknowledged its rows.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BACKFILL_H
#define BACKFILL_H

#include <stdbool.h>
#include <stdint.h>

#include "retry.h"
#include "rowscan.h"
#include "stream.h"
#include "target.h"

typedef struct Backfiller Backfiller;

/* Hands a chunk's row to the target in the stream's order. */
typedef bool (*BackfillAddFn) (void *arg, const char *row, size_t len,
							   const RowFields *fields, uint64_t commit_lsn);

/* Delivers everything held; false on failure. */
typedef bool (*BackfillFlushFn) (void *arg);

extern Backfiller *backfill_create(const ReplConnParams *params, Target *target,
								   StopFlag *stop, BackfillAddFn add,
								   BackfillFlushFn flush, void *arg);

/* Logs each chunk (-v). */
extern void backfill_set_verbose(Backfiller *b, bool verbose);

/*
 * The most bytes of rows a chunk part may be asked to hold: the extension's
 * limit (a quarter of a value's 1 GB).
 */
#define BACKFILL_MAX_CHUNK_BYTES 268435455L

/* --backfill-chunk-bytes' default: 64 MiB. */
#define BACKFILL_DEFAULT_CHUNK_BYTES (64L * 1024 * 1024)

/* A chunk part ends early once its rows hold this many bytes. */
extern void backfill_set_chunk_bytes(Backfiller *b, long bytes);

/* Reads each chunk in this many parts side by side (--backfill-workers). */
extern void backfill_set_workers(Backfiller *b, int workers);

/*
 * Before streaming from the slot's confirmed position: chunks handed to the
 * targets before a crash are settled (acknowledged: recorded; not: what a
 * lake kept of them is deleted, to be read again), and the slot's queued
 * backfills are read.  False on a fatal error, reported.
 */
extern bool backfill_prepare(Backfiller *b);

/*
 * The stream starts again (a reconnection): chunks not shipped yet are read
 * again.
 */
extern void backfill_restart(Backfiller *b);

/* A backfill control message (prefix fundrecs.): never shipped. */
extern bool backfill_is_control(const RowFields *f);

/*
 * A control message of commit commit_lsn: a request (queued), or one of
 * this shipper's watermarks.  False on a fatal error, reported.
 */
extern bool backfill_control(Backfiller *b, const char *row, size_t len,
							 const RowFields *f, uint64_t commit_lsn);

/* True while changes are watched for the chunk in flight. */
extern bool backfill_watching(const Backfiller *b);

/* A change row while watching. */
extern void backfill_observe(Backfiller *b, const char *row, size_t len, const RowFields *f);

/*
 * Between messages: records the chunk whose rows were all delivered, and
 * reads the next one.  False on a fatal error, reported.
 */
extern bool backfill_tick(Backfiller *b);

/* Readable when a chunk has been read (-1: none can be yet). */
extern int	backfill_wake_fd(const Backfiller *b);

/* For /metrics and the exit summary. */
typedef struct BackfillStats
{
	uint64_t	rows_shipped;	/* rows of backfills handed to the target */
	uint64_t	rows_read;
	uint64_t	chunks;			/* chunks acknowledged */
	uint64_t	chunks_redone;	/* read again after a truncate */
	uint64_t	rows_dropped;	/* the stream had a newer version */
	int64_t		remaining;		/* estimated rows left in the current one, -1 */
	double		rate;			/* its rows read a second */
	int			running;		/* backfills in progress or queued */
} BackfillStats;

extern void backfill_stats(const Backfiller *b, BackfillStats *s);

#endif							/* BACKFILL_H */
