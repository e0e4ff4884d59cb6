/*-------------------------------------------------------------------------
 *
 * waitq.h
 *	  Rows held back behind an earlier version of their key (dispatch.c):
 *	  in arrival order, with the keys they have.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WAITQ_H
#define WAITQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"

/*
 * Waiting rows, in arrival order, and the keys they have: a chained hash
 * table with a count of rows per key.
 */
typedef struct WaitKey
{
	struct WaitKey *next;
	uint32_t	hash;
	int			count;			/* rows of the key waiting */
	uint64_t	blocked_in;		/* the promotion pass that found it blocked */
	char		pkey[FLEXIBLE_ARRAY_MEMBER];
} WaitKey;

typedef struct WaitRow
{
	char	   *data;			/* the row (no newline), malloc'd */
	size_t		len;
	WaitKey    *key;
	uint64_t	commit_lsn;
	uint64_t	safe_lsn;
	double		commit_time;
	double		arrived;
} WaitRow;

#define WAIT_BUCKETS 4096

typedef struct WaitQueue
{
	WaitKey    *keys[WAIT_BUCKETS];
	WaitRow    *rows;			/* in arrival order */
	int			n;
	int			alloc;
	size_t		bytes;			/* rows and their keys */
	uint64_t	pass;			/* promotion passes so far */
	uint64_t	pushed;			/* rows ever held back */
} WaitQueue;

/* May a row with this key join a batch now? false: it waits. */
typedef bool (*WaitBlockedFn) (void *arg, const char *pkey, uint32_t hash);

/* Has the key rows waiting? */
extern bool waitq_has_key(WaitQueue *q, const char *pkey, size_t keylen, uint32_t hash);

/* Holds a row back (copied) behind an earlier version of its key. */
extern void waitq_push(WaitQueue *q, const char *row, size_t len, const char *pkey,
					   size_t keylen, uint32_t hash, uint64_t commit_lsn, uint64_t safe_lsn,
					   double commit_time);

/*
 * Moves waiting rows whose keys blocked() lets go into the batch, in
 * arrival order, while it has room (max_bytes).
 */
extern void waitq_promote(WaitQueue *q, Batch *into, size_t max_bytes, WaitBlockedFn blocked,
						  void *arg);

/* Frees the rows still waiting and their keys: the queue is empty again. */
extern void waitq_free(WaitQueue *q);

#endif							/* WAITQ_H */
