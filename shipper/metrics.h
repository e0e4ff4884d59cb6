/*-------------------------------------------------------------------------
 *
 * metrics.h
 *	  Prometheus metrics (/metrics) and a health check (/healthz) over HTTP,
 *	  served by libmicrohttpd on a thread of its own from a snapshot that
 *	  the shipper publishes (at most every 100 ms, under a mutex): the
 *	  server never touches the shipper's own state.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRICS_H
#define METRICS_H

#include <stdbool.h>
#include <stdint.h>

/* What one target (--target kinesis,s3: each of them) has delivered. */
typedef struct TargetMetrics
{
	char		name[16];		/* as --target spells it */
	uint64_t	rows;			/* rows it acknowledged */
	uint64_t	bytes;
	uint64_t	held_rows;		/* rows it holds until acknowledged */
	uint64_t	held_bytes;
	double		oldest_pending_commit;	/* epoch seconds; 0: nothing pending */
	double		last_delivery;	/* epoch seconds; 0: never */
	double		held_since;		/* when its oldest held row arrived (0:
								 * unknown) */
	double		hold_allowance; /* how long it holds rows on purpose
								 * (--flush-seconds) */
} TargetMetrics;

#define METRICS_MAX_TARGETS 4

/* What the shipper publishes. */
typedef struct MetricsState
{
	TargetMetrics targets[METRICS_MAX_TARGETS];
	int			ntargets;

	/* counters */
	uint64_t	rows;			/* rows acknowledged by every target */
	uint64_t	bytes;
	uint64_t	kinesis_records;
	uint64_t	kinesis_calls;
	uint64_t	kinesis_retried_calls;
	uint64_t	kinesis_retried_records;
	uint64_t	kinesis_throttled_records;
	uint64_t	s3_objects;
	uint64_t	s3_bytes;
	uint64_t	s3_objects_torn;	/* cut short by a crash, deleted */
	uint64_t	s3_rows_skipped;	/* already in the bucket */
	uint64_t	load_rows;		/* initial load: rows read */
	uint64_t	backfill_rows;	/* backfills: rows handed to the targets */
	uint64_t	backfill_rows_read;
	uint64_t	backfill_rows_dropped;	/* the stream had a newer version */
	uint64_t	backfill_chunks;	/* acknowledged */
	uint64_t	backfill_chunks_redone;
	int64_t		backfill_remaining; /* estimated rows left; -1: none running */
	double		backfill_rate;	/* rows read a second, the current one */
	int			backfill_running;	/* running or queued */
	/* gauges */
	uint64_t	load_estimate;	/* initial load: planner's estimate */
	uint64_t	confirmed_lsn;
	uint64_t	wal_end;		/* server's WAL end, from keepalives */
	double		oldest_pending_commit;	/* epoch seconds; 0: nothing pending */
	double		last_delivery;	/* epoch seconds of the last acknowledged
								 * delivery */
	uint64_t	held_rows;
	uint64_t	held_bytes;
	int			deliveries_in_flight;
	bool		connected;		/* streaming from the slot */
	bool		has_slot_state;
	int64_t		retained_wal;
	char		wal_status[16];
	bool		has_safe_wal_size;
	int64_t		safe_wal_size;
	uint64_t	retained_wal_warnings;
	uint64_t	heartbeats;		/* --heartbeat messages written */
	bool		has_credentials;	/* AWS credentials are used */
	double		credentials_expiry; /* epoch seconds; 0: they do not expire */
	int			credentials_failures;	/* failed refreshes in a row */
} MetricsState;

/*
 * Starts serving on HOST:PORT (port 0: any free one; *bound_port is set).
 * health_max_lag: /healthz fails when rows are pending and nothing was
 * delivered for this many seconds.  Returns an error message or NULL.
 */
extern char *metrics_start(const char *address, int health_max_lag, const char *targets,
						   const char *version, int *bound_port);

/* /healthz also fails while the slot retains more WAL than this (0: never). */
extern void metrics_set_max_retained(int64_t bytes);

/* Is the server running? */
extern bool metrics_enabled(void);

/*
 * A target's entry in the state, added empty at its first use; the
 * aggregate fields (rows, held_rows, lag...) are derived from the entries
 * by metrics_sum_targets().
 */
extern TargetMetrics *metrics_target(MetricsState *state, const char *name);
extern void metrics_sum_targets(MetricsState *state);

/* Publishes a new state (copied). */
extern void metrics_publish(const MetricsState *state);

/* The PostgreSQL server's version, for fundrecs_shipper_build_info. */
extern void metrics_set_server_version(const char *version);

#endif							/* METRICS_H */
