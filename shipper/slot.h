/*-------------------------------------------------------------------------
 *
 * slot.h
 *	  The replication slot: made ready before streaming (created, loaded,
 *	  or refused when lost), and watched while streaming, as the server
 *	  sees it (pg_replication_slots) on a normal connection of its own: how
 *	  much WAL it holds back and whether max_slot_wal_keep_size has cost
 *	  it WAL.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SLOT_H
#define SLOT_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "load.h"
#include "stream.h"
#include "target.h"

typedef struct SlotHealth
{
	bool		found;			/* the slot exists in this database */
	char		wal_status[16]; /* reserved, extended, unreserved, lost */
	bool		has_safe_size;	/* safe_wal_size is not NULL */
	int64_t		safe_wal_size;	/* bytes that may still be written before WAL
								 * is lost */
	uint64_t	restart_lsn;
	uint64_t	confirmed_lsn;
	int64_t		retained;		/* current WAL position - restart_lsn, bytes */
} SlotHealth;

/*
 * What watches the slot while streaming: a normal connection of its own,
 * and what it has warned about, so as not to repeat it.
 */
typedef struct SlotMonitor
{
	const ReplConnParams *params;
	StopFlag   *stop;			/* see slot_monitor_init */
	PGconn	   *conn;			/* NULL until needed, and after a failure */
	bool		heartbeat_warned;	/* a heartbeat failed, and it was said */
	char		last_status[16];	/* wal_status at the last check */
	double		warned_retained_at; /* when --max-retained-wal was last warned
									 * of */
} SlotMonitor;

/*
 * stop: the flag a stop request sets: once it is set, no query is sent,
 * and one in flight is cancelled (and abandoned if the server does not
 * answer the cancel within a second), so the monitor never holds up a
 * shutdown.
 */
extern void slot_monitor_init(SlotMonitor *m, const ReplConnParams *params, StopFlag *stop);

/*
 * Reads the slot's row.  Returns false (after a warning) when the server
 * cannot be asked: the caller carries on, the next call connects again.
 */
extern bool slot_health_read(SlotMonitor *m, const char *slot, SlotHealth *h);

/* Writes a heartbeat message (--heartbeat); false after a warning. */
extern bool slot_heartbeat(SlotMonitor *m);

/* Closes the connection, if any. */
extern void slot_monitor_close(SlotMonitor *m);

/*
 * Reads the slot's state (slot_health_read) and acts on it: a slot that
 * max_slot_wal_keep_size has invalidated is a fatal error (exit 3), never a
 * silent gap; one about to be, and one holding back more than
 * --max-retained-wal, are warned about (once a minute while it lasts).
 * False when the state could not be read or the slot is not there.
 */
extern bool slot_check_health(SlotMonitor *m, SlotHealth *h);

/*
 * Before anything is shipped: plugin options that would make the slot
 * silently emit nothing are a configuration error (exit 2) unless
 * --allow-no-tables.
 */
extern void slot_check_plugin_options(const ReplConnParams *params);

/* The initial load slot_prepare leaves to its caller (replicate_load). */
typedef struct SlotLoad
{
	bool		run;			/* a new slot's rows are to be loaded */
	PGconn	   *sql;			/* through this connection (*lockconn) */
	LoadParams	params;
	char	   *snapshot;		/* the slot's exported snapshot: free it after */
} SlotLoad;

/*
 * Before streaming: creates the slot when asked, and says in *load whether
 * the rows that exist at its consistent point are to be loaded (the caller
 * runs the load, then streams, as pg_recvlogical creates a slot then
 * starts); a load found unfinished is done again with a fresh slot, after
 * target forgets what it kept of it; a slot lost after its load is refused
 * (exit 3) unless --resync.  Unless --no-load, this holds the slot's load
 * lock on *lockconn, which the caller keeps open until streaming has
 * started.  False on a fatal error, reported.
 */
extern bool slot_prepare(ReplConn *rc, const ReplConnParams *params, Target *target,
						 StopFlag *stop, PGconn **lockconn, SlotLoad *load);

#endif							/* SLOT_H */
