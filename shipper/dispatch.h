/*-------------------------------------------------------------------------
 *
 * dispatch.h
 *	  The batcher and dispatcher: what may be in flight, what may be
 *	  confirmed.
 *
 * Rows are added to the batch being filled.  A flush hands that batch to
 * a delivery lane (for Kinesis, a thread of its own with its share of the
 * --max-in-flight calls), and the next batch fills while it is in flight:
 * reading the slot and delivering overlap.  Up to DISPATCH_MAX_LANES
 * batches are in flight at once.  A row whose key has an earlier version
 * in flight (or, one record per row, in the batch being filled) waits in a
 * queue of its own, with the later rows of its key, while other keys'
 * rows go on: a later version of a key is never sent before an earlier
 * one is acknowledged, retries included, and one busy key never holds
 * back the others.  Within a batch, keys are distinct (or, aggregated, a
 * key's rows share its shard's record, in order).  The oldest row not yet
 * acknowledged, in any batch or waiting, bounds what may be confirmed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DISPATCH_H
#define DISPATCH_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "kinesis.h"
#include "target_ops.h"

#define DISPATCH_MAX_LANES 8

/*
 * Delivers n records (each row followed by '\n', with its partition key
 * when the target is keyed): on a lane's thread, or with no lanes on the
 * caller's.  ctx is the lane's (lane_ctx[i]; without lanes, lane_ctx[0]).
 * Retries are the function's own; stop abandons them.
 */
typedef ShipResult (*DispatchDeliverFn) (void *ctx, ShipRecord *recs, int n, StopFlag *stop);

typedef struct DispatchConfig
{
	DispatchDeliverFn deliver;
	int			lanes;			/* delivery threads, 0 to DISPATCH_MAX_LANES */
	void	   *lane_ctx[DISPATCH_MAX_LANES];
	bool		keyed;			/* rows carry partition keys, kept in order
								 * per key */
	bool		distinct_keys;	/* and a key appears once per batch at most */
	int			capacity;		/* rows per batch */
	size_t		max_bytes;		/* bytes per batch (lanes + 1 batches are held
								 * at most) */
	StopFlag   *stop;			/* abandons the deliveries */
	WaitTickFn	tick;			/* run at least once a second while the caller
								 * waits */
	void	   *tick_arg;
	bool		verbose;		/* log each delivered batch */
	int			linger_ms;		/* a partial batch waits at most this long */
} DispatchConfig;

/*
 * One target's batcher and dispatcher: its batches, waiting rows, lanes
 * and their threads.  Each batching target owns one (Target.dispatcher).
 */
typedef struct Dispatcher Dispatcher;

/* Sets up the batches and starts the lanes' threads. */
extern Dispatcher *dispatch_create(const DispatchConfig *config);

/*
 * Ends its threads and frees it with the rows it holds; false (nothing
 * freed) when a lane is still delivering.
 */
extern bool dispatch_destroy(Dispatcher *d);

/* A partition key's hash, computed once per row for the two calls below. */
extern uint32_t dispatch_key_hash(const char *pkey, size_t keylen);

/* Does a record of this many bytes still fit in the batch being filled? */
extern bool dispatch_fits(Dispatcher *d, size_t record_bytes);

/*
 * Makes room for a row of this many bytes: sends the batch being filled
 * when it is full, and waits for deliveries while it is full or as many
 * rows wait as the queue of waiting rows holds (4 batches' worth).  False
 * when a delivery failed or was stopped.
 */
extern bool dispatch_make_room(Dispatcher *d, size_t record_bytes);

/*
 * Adds a row; pkey (keylen bytes, hash from dispatch_key_hash) may be ""
 * with hash 0 when the target needs none.
 */
extern void dispatch_add(Dispatcher *d, const char *row, size_t len, const char *pkey, size_t keylen,
						 uint32_t hash, uint64_t commit_lsn, uint64_t safe_lsn,
						 double commit_time);

/* Rows in the batch being filled, and when its first row arrived. */
extern int	dispatch_filling(Dispatcher *d, double *first_at);

/*
 * Hands the batch being filled to a delivery lane, after waiting for a
 * free lane.  With wait, also waits until every row held, the waiting
 * ones included, is delivered.  Returns false when a delivery failed or
 * was stopped (what it held is not confirmed).
 */
extern bool dispatch_flush(Dispatcher *d, bool wait);

/*
 * Collects a finished delivery without waiting.  Returns false when it
 * failed or was stopped.
 */
extern bool dispatch_poll(Dispatcher *d);

/* Readable when a delivery has finished (-1 without a delivery thread). */
extern int	dispatch_wake_fd(Dispatcher *d);

/* Is a delivery in flight?  How many? */
extern bool dispatch_busy(Dispatcher *d);
extern int	dispatch_in_flight(Dispatcher *d);

/* Could the batch being filled go now, without waiting (a lane free)? */
extern bool dispatch_can_send(Dispatcher *d);

/*
 * The confirmable position the held rows allow: the safe LSN of the
 * oldest unacknowledged row; false when nothing is held.
 */
extern bool dispatch_oldest_safe_lsn(Dispatcher *d, uint64_t *lsn);

/* Rows held: in flight, being filled and waiting; their bytes. */
extern int	dispatch_held_rows(Dispatcher *d);

/* Rows waiting for an earlier version of their key. */
extern int	dispatch_waiting_rows(Dispatcher *d);
extern uint64_t dispatch_held_bytes(Dispatcher *d);

/* Commit time of the oldest row held (epoch seconds), 0 when none. */
extern double dispatch_oldest_commit_time(Dispatcher *d);

/* Bytes acknowledged so far; when the last delivery was acknowledged. */
extern uint64_t dispatch_bytes_shipped(Dispatcher *d);
extern double dispatch_last_delivery(Dispatcher *d);

/*
 * Rows that waited for an earlier version of their key to be acknowledged
 * (the key changes faster than a call takes).
 */
extern uint64_t dispatch_key_waits(Dispatcher *d);

/* Rows acknowledged so far. */
extern uint64_t dispatch_rows_shipped(Dispatcher *d);

/*
 * TargetOps of a batching target (stdout, Kinesis), through its
 * Target.dispatcher.
 */
extern bool dispatch_target_poll(Target *t, double now);
extern double dispatch_target_next_due(Target *t);
extern int	dispatch_target_wake_fd(Target *t);
extern bool dispatch_target_flush(Target *t);
extern bool dispatch_target_held_lsn(Target *t, uint64_t *lsn);
extern int	dispatch_target_held_rows(Target *t);
extern void dispatch_target_stats(Target *t, MetricsState *m);
extern void dispatch_target_destroy(Target *t);

#endif							/* DISPATCH_H */
