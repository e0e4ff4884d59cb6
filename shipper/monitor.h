/*-------------------------------------------------------------------------
 *
 * monitor.h
 *	  The slot as the server sees it (pg_replication_slots), read on a
 *	  normal connection of its own: how much WAL it holds back and whether
 *	  max_slot_wal_keep_size has cost it WAL.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MONITOR_H
#define MONITOR_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "stream.h"

typedef struct SlotHealth
{
	bool		found;			/* the slot exists in this database */
	char		wal_status[16]; /* reserved, extended, unreserved, lost */
	bool		has_safe_size;	/* safe_wal_size is not NULL */
	int64_t		safe_wal_size;	/* bytes that may still be written before WAL is lost */
	uint64_t	restart_lsn;
	uint64_t	confirmed_lsn;
	int64_t		retained;		/* current WAL position - restart_lsn, bytes */
} SlotHealth;

/*
 * Reads the slot's row.  Returns false (after a warning) when the server
 * cannot be asked: the caller carries on, the next call connects again.
 */
extern bool slot_health_read(const ReplConnParams *params, const char *slot, SlotHealth *h);

/* Writes a heartbeat message (--heartbeat); false after a warning. */
extern bool slot_heartbeat(const ReplConnParams *params);

/*
 * The flag a stop request sets: once it is set, no query is sent, and one
 * in flight is cancelled (and abandoned if the server does not answer the
 * cancel within a second), so the monitor never holds up a shutdown.
 */
extern void slot_monitor_set_stop(volatile sig_atomic_t *stop);

/* Closes the connection, if any. */
extern void slot_health_close(void);

#endif							/* MONITOR_H */
