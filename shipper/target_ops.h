/*-------------------------------------------------------------------------
 *
 * target_ops.h
 *	  Where rows are delivered: one interface for every delivery target,
 *	  which each target implements (target.h: the registry and the
 *	  operations' wrappers, for the stream loop).
 *
 * A target takes rows in stream order, holds them until they are
 * delivered, and says which of them it still holds, so that the position
 * confirmed to PostgreSQL never passes a row that has not been delivered.
 * The stream loop (replicate.c) knows nothing else about a target: the
 * targets are standard output (target_stdout.c), Kinesis
 * (target_kinesis.c), S3 (target_s3.c), and several of them at once
 * (target.c), each row going to each in turn.  A new target is one new
 * file implementing TargetOps and a TargetKind, and one line in target.c's
 * registry.
 *
 * Every operation runs on the main thread.  Operations a target has no use
 * for are NULL; the wrappers below treat them as "nothing to do".
 *
 *-------------------------------------------------------------------------
 */
#ifndef TARGET_OPS_H
#define TARGET_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "credentials.h"
#include "metrics.h"
#include "retry.h"
#include "rowscan.h"

/* A row as the stream loop hands it to a target. */
typedef struct TargetRow
{
	const char *data;			/* the row's JSON, without newline */
	size_t		len;
	const RowFields *fields;	/* its fields, found by rowscan() */
	bool		is_message;		/* a logical decoding message: a prefix, no
								 * table */
	uint64_t	change_lsn;		/* the change's own position */
	uint64_t	commit_lsn;		/* its transaction's commit (a load's
								 * consistent point) */
	uint32_t	seq;			/* its ordinal among the rows of that
								 * commit_lsn */
	uint64_t	safe_lsn;		/* confirmable while the row is held */
	double		commit_time;	/* epoch seconds; 0 when metrics are not
								 * served */
} TargetRow;

typedef struct Target Target;

typedef struct TargetOps
{
	const char *name;			/* as --target spells it */

	/* Before anything is read: the stream or bucket exists and answers. */
	ShipResult	(*check) (Target *t, StopFlag *stop);

	/*
	 * Once connected: takes this slot's place in the target (S3: the prefix's
	 * owner marker), refusing one another slot holds.
	 */
	ShipResult	(*claim) (Target *t, const char *system_id, const char *dbname,
						  const char *slot, StopFlag *stop);

	/*
	 * An initial load left unfinished at lsn is done again: whatever the
	 * target kept of it goes first.
	 */
	ShipResult	(*forget_load) (Target *t, uint64_t lsn, StopFlag *stop);

	/*
	 * A load's rows are delivered, its end not yet recorded: what late writes
	 * of a killed shipper left of forgotten loads goes (NULL: nothing kept).
	 */
	ShipResult	(*sweep_loads) (Target *t, StopFlag *stop);

	/*
	 * Takes a row, delivering what must go to make room.  False: fatal,
	 * reported.
	 */
	bool		(*add) (Target *t, const TargetRow *row);

	/*
	 * Collects finished deliveries and starts those that are due (a batch
	 * past its linger time, objects past --flush-seconds).  False when a
	 * delivery failed or was stopped.
	 */
	bool		(*poll) (Target *t, double now);

	/* When poll next has a delivery to start; 0 when none is pending. */
	double		(*next_due) (Target *t);

	/* Readable when a delivery in flight finishes; -1 when none is. */
	int			(*wake_fd) (Target *t);

	/* Delivers everything held and waits for it; false on failure or stop. */
	bool		(*flush) (Target *t);

	/* The safe LSN of the oldest row held; false when none is. */
	bool		(*held_lsn) (Target *t, uint64_t *lsn);

	/* Rows held (being filled, waiting, in flight). */
	int			(*held_rows) (Target *t);

	/* Adds its counters to what /metrics shows. */
	void		(*stats) (Target *t, MetricsState *m);

	/* Logs its counters at exit (-v). */
	void		(*summary) (Target *t);

	/*
	 * Frees the target and what it holds (rows held were not confirmed: they
	 * come again after a restart).  A delivery still running, which only a
	 * stop that gave up waiting leaves, keeps what it uses until the process
	 * exits.
	 */
	void		(*destroy) (Target *t);
} TargetOps;

struct Target
{
	const TargetOps *ops;
	void	   *priv;
	struct Dispatcher *dispatcher;	/* a batching target's (dispatch.h) */
};

/*
 * What the command line says that targets use, read once by target.c from
 * the options: targets are given it (TargetSettings.config) and never read
 * the global options, so that two targets of a kind could run with
 * settings of their own.
 */
typedef struct TargetConfig
{
	/* delivery, for every target */
	int			batch_records;
	long		batch_bytes;
	long		max_buffer_bytes;
	int			max_in_flight;
	int			linger_ms;
	const char *ca_file;
	int			request_timeout_ms;
	int			retry_timeout_s;
	bool		verbose;
	const char *endpoint;		/* --endpoint-url */
	/* kinesis */
	const char *stream;
	const char *stream_arn;
	bool		aggregate;
	long		aggregate_bytes;
	bool		kinesis_cbor;	/* PutRecords in CBOR */
	/* s3 */
	const char *s3_url;
	const char *s3_endpoint;
	const char *s3_addressing;
	bool		gzip;
	long		flush_bytes;
	int			flush_seconds;
} TargetConfig;

/* What a target is made with. */
typedef struct TargetSettings
{
	const TargetConfig *config; /* lives as long as the process */
	AwsCredentialProvider *provider;
	const char *region;
	const char *endpoint;		/* --endpoint-url, for the first AWS target
								 * chosen (NULL for the others) */
	StopFlag   *abort;			/* abandons deliveries in flight */
	WaitTickFn	tick;			/* run while the main thread waits for a
								 * delivery */
	void	   *tick_arg;
} TargetSettings;

/*
 * A kind of target, as --target names it: one file per kind, and one line
 * in target.c's registry.
 */
typedef struct TargetKind
{
	const char *name;			/* as --target spells it */
	bool		aws;			/* needs a region and credentials */
	bool		alone;			/* cannot be combined with others */

	/*
	 * A usage error (a message, not freed) for a command line that lacks what
	 * the target needs when chosen, or gives its options when it is not; NULL
	 * when it is right.
	 */
	const char *(*check_options) (const TargetConfig *cfg, bool chosen);

	/* A region the target's own settings imply (a stream ARN's), or NULL. */
	char	   *(*region_hint) (const TargetConfig *cfg);

	Target	   *(*create) (const TargetSettings *ts);
} TargetKind;

/* The kinds, one file each. */
extern const TargetKind target_kind_stdout;
extern const TargetKind target_kind_kinesis;
extern const TargetKind target_kind_s3;

#endif							/* TARGET_OPS_H */
