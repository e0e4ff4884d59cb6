/*-------------------------------------------------------------------------
 *
 * load.h
 *	  The initial load of fundrecs_shipper.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LOAD_H
#define LOAD_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "libpq-fe.h"
#include "retry.h"

typedef enum LoadStatus
{
	LOAD_NONE,					/* no load recorded for the slot */
	LOAD_UNFINISHED,			/* started, not every row acknowledged */
	LOAD_FINISHED,
	LOAD_UNSUPPORTED,			/* the extension (1.1) is not in the database */
	LOAD_ERROR
} LoadStatus;

typedef struct LoadParams
{
	const char *slot;
	const char *snapshot_name;	/* exported by CREATE_REPLICATION_SLOT */
	uint64_t	consistent_lsn;
	char	  **plugin_options; /* name, value pairs */
	int			noptions;
	bool		reset_marker;	/* ship a reset marker row before the load */
	bool		chunked;		/* request backfills instead of reading
								 * through the snapshot */
	bool		dms_format;		/* the plugin option format=dms is set */
	bool		progress;		/* report at most once a second */
	bool		summary;		/* report the total */
} LoadParams;

/* Ships one load row; false stops the load. */
typedef bool (*LoadRowFn) (void *arg, const char *row, size_t len, uint64_t lsn);

/*
 * At a load's end, before it is recorded: delivers everything handed over
 * so far and settles the target (target_sweep_loads); false on failure.
 */
typedef bool (*LoadFlushFn) (void *arg);

typedef enum LoadLockResult
{
	LOAD_LOCK_TAKEN,
	LOAD_LOCK_STOPPED,			/* a signal came while waiting */
	LOAD_LOCK_ERROR
} LoadLockResult;

/*
 * The slot's load lock (a session advisory lock): held from reading the
 * load state until streaming has started.  Waits while another process
 * holds it.
 */
extern LoadLockResult load_lock(PGconn *conn, const char *slot, StopFlag *stop);
extern bool load_unlock(PGconn *conn, const char *slot);

/* Before creating the slot: an unfinished state row with no consistent point. */
extern bool load_state_creating(PGconn *conn, const char *slot);

/* The slot existed after all: take that row back. */
extern bool load_state_forget(PGconn *conn, const char *slot);

/* The plugin options as a text[] literal (malloc'd). */
extern char *options_array(char **options, int noptions);
extern LoadStatus load_status(PGconn *conn, const char *slot);
extern bool drop_slot(PGconn *conn, const char *slot);

/*
 * The consistent point of an unfinished load that got as far as loading
 * rows: 1; 0 when there is none (or it never reached its first row); -1
 * on error.
 */
extern int	load_state_unfinished(PGconn *conn, const char *slot, uint64_t *lsn);

/* 1 when the slot exists in the connection's database, 0 when not, -1 on error. */
/* 0: no such slot in this database, 1: there, 2: there but invalidated, -1: error */
extern int	slot_exists(PGconn *conn, const char *slot);

/* The error for a slot missing where fundrecs.load_state shows it existed. */
extern void report_lost_slot(PGconn *conn, const char *slot);

/* The reset marker row that precedes a load replacing an earlier one (malloc'd). */
extern char *reset_marker_row(const char *slot, uint64_t lsn, bool dms);
extern bool initial_load(PGconn *conn, const LoadParams *lp, LoadRowFn row_fn,
						 LoadFlushFn flush_fn, void *arg, StopFlag *stop);

/* Progress of the initial load in this process (for the metrics). */
extern uint64_t load_rows_done;
extern uint64_t load_rows_estimate;

#endif							/* LOAD_H */
