/*-------------------------------------------------------------------------
 *
 * replicate.h
 *	  The stream loop: rows from the slot to the target, and the position
 *	  that may be confirmed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef REPLICATE_H
#define REPLICATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backfill.h"
#include "credentials.h"
#include "load.h"
#include "metrics.h"
#include "retry.h"
#include "slot.h"
#include "stream.h"
#include "target.h"

/* Delivery positions (LSNs). */
typedef struct Positions
{
	uint64_t	confirmed;		/* last flush position reported */
	uint64_t	last_txn;		/* commit LSN of the newest row received */
	uint64_t	prev_txn;		/* commit LSN of the transaction before it */
	uint64_t	processed;		/* server's walEnd from keepalives */
} Positions;

/* What the slot's health check has warned about, so as not to repeat it. */
typedef struct SlotWatch
{
	char		last_status[16];	/* wal_status at the last check */
	double		warned_retained_at; /* when --max-retained-wal was last warned
									 * of */
} SlotWatch;

/* A run's state: one, owned by main(). */
typedef struct Replicator
{
	Target	   *target;
	Backfiller *backfill;		/* backfills while streaming */
	AwsCredentialProvider *provider;	/* NULL for stdout */
	ReplConnParams params;		/* how to connect */
	Positions	pos;

	/* main.c's signal flags */
	StopFlag   *stop;			/* SIGINT/SIGTERM */
	StopFlag   *stop_now;		/* a second one */
	StopFlag   *reload;			/* SIGHUP */

	/*
	 * Set by the tick when what is in flight must be abandoned: at once
	 * during start-up and the initial load, after --shutdown-timeout while
	 * streaming.  Deliveries (on their threads too) watch this flag.
	 */
	StopFlag	delivery_abort;
	bool		streaming_grace;
	double		shutdown_deadline;

	pthread_t	main_thread;	/* reads the slot; the tick's work is done
								 * there */
	ReplConn   *tick_rc;		/* kept alive by the tick during deliveries */
	double		last_status;	/* when the last status update was sent */
	double		last_health;	/* when the slot's state was last read */
	bool		in_health_check;	/* (the tick runs during one's waits) */
	double		last_row_at;	/* when a row last arrived from the slot */
	double		last_heartbeat; /* when --heartbeat last wrote one */
	double		last_publish;	/* when /metrics was last updated */
	MetricsState mstate;		/* what /metrics shows */
	SlotMonitor monitor;		/* the slot, watched while streaming */

	uint64_t	row_seq_lsn;	/* the commit LSN of the last row... */
	uint32_t	row_seq;		/* ...and that row's ordinal among its rows */
} Replicator;

typedef enum LoopResult
{
	LOOP_DONE,					/* endpos or stop: exit 0 */
	LOOP_RECONNECT,				/* connection lost */
	LOOP_FATAL					/* exit 1 */
} LoopResult;

/* Sets up the run's state, its target and the tick (see retry.h). */
extern void replicate_init(Replicator *r, StopFlag *stop, StopFlag *stop_now, StopFlag *reload);

/* Streams from rc, already started, until a stop, --endpos or an error. */
extern LoopResult replicate_stream(Replicator *r, ReplConn *rc);

/* The initial load through the target, then streaming starts at lp->consistent_lsn. */
extern bool replicate_load(Replicator *r, PGconn *sql, const LoadParams *lp);

/* Delivers everything held; the position that may then be confirmed. */
extern bool replicate_flush(Replicator *r);
extern uint64_t replicate_confirmable(Replicator *r);

/* Reads the slot's state, warns, updates /metrics; exits on a lost slot. */
extern void replicate_check_slot(Replicator *r);

/* /metrics: at most every 100 ms unless forced. */
extern void replicate_publish_metrics(Replicator *r, bool force);

/* The closing log lines; the targets are freed. */
extern void replicate_finish(Replicator *r, int exit_code);

#endif							/* REPLICATE_H */
