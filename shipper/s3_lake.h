/*-------------------------------------------------------------------------
 *
 * s3_lake.h
 *	  The S3 lake: JSON Lines objects, gzip by default, one per route and
 *	  day per flush, named PREFIX/<route>/dt=YYYY-MM-DD/<first>-<last>.json.gz
 *	  after the stream positions of their first and last rows, each row
 *	  written once whatever crashes (s3_lake.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef S3_LAKE_H
#define S3_LAKE_H

#include <zlib.h>

#include "s3.h"

/*
 * A row's place in the stream: its transaction's commit LSN and its ordinal
 * among that transaction's rows (the rows of an initial load share the
 * consistent point, and are numbered through the load).  Only the stream
 * decides it, so a row shipped again has the same position.
 */
typedef struct S3Position
{
	uint64_t	lsn;
	uint32_t	seq;
} S3Position;

/*
 * What a route already has in the bucket for one day, read at the first row
 * of that route and day in a run (ListObjectsV2 of PREFIX/<route>/dt=<day>/).
 * A route's objects of one day are written in stream order, so their last
 * position is where that route and day stand; across days nothing is
 * assumed, since commit days need not follow commit order when a server's
 * clock steps back.
 */
typedef struct S3RouteMark
{
	char	   *route;
	char		dt[11];			/* YYYY-MM-DD */
	bool		found;			/* an object of the route and day was found */
	S3Position	last;			/* the last row written, when found */
} S3RouteMark;

typedef struct S3Object
{
	char	   *route;			/* partition value */
	char		dt[11];			/* YYYY-MM-DD */
	S3Position	first;			/* positions of its first and last rows */
	S3Position	last;
	uint64_t	rows;
	size_t		raw_bytes;		/* the rows' bytes, uncompressed */
	z_stream	z;				/* gzip stream, when compressing */
	PQExpBufferData body;		/* the object's bytes so far */
} S3Object;

typedef struct S3Lake
{
	S3Client	client;
	bool		gzip;

	S3Object   *objects;
	int			nobjects;
	int			maxobjects;
	size_t		buffered;		/* uncompressed bytes held */
	double		first_at;		/* when the oldest held row arrived */
	double		oldest_commit;	/* commit time of the oldest held row (0:
								 * unknown) */
	uint64_t	safe_lsn;		/* confirmable while rows are held */

	S3RouteMark *marks;			/* per route and day, looked up at its first
								 * row */
	int			nmarks;
	int			maxmarks;
	int			last_mark;		/* the mark the previous row used */

	char	   *owner_key;		/* PREFIX/_fundrecs/owner.json, once claimed */
	char	   *owner_doc;		/* what it must say */
	char	   *owner_system;	/* and what it was made of */
	char	   *owner_database;
	char	   *owner_slot;

	uint32_t	flushes;
	uint64_t	objects_put;
	uint64_t	bytes_put;
	uint64_t	rows_put;		/* rows of the objects written */
	uint64_t	row_bytes_put;	/* their bytes, uncompressed */
	double		last_put_at;	/* when a flush last finished (0: never) */
	uint64_t	objects_torn;	/* cut short by a crash, found and deleted */
	uint64_t	rows_skipped;	/* already in the bucket, from an earlier run */
	uint64_t	objects_deleted;	/* of a load done again */
} S3Lake;

typedef enum S3AddResult
{
	S3_ADDED,
	S3_SKIPPED,					/* the bucket has it already */
	S3_FAILED					/* the route's objects could not be listed */
} S3AddResult;

extern char *s3_lake_init(S3Lake *s, AwsCredentialProvider *provider, const char *url,
						  const char *endpoint,
						  const char *region, const char *addressing, bool gzip,
						  const char *ca_file, long timeout_ms, int retry_timeout_s);

/* Checks the bucket exists and is reachable (a listing of PREFIX/_fundrecs/). */
extern ShipResult s3_lake_check_bucket(S3Lake *s, StopFlag *stop);

/*
 * Claims the prefix for this slot (PREFIX/_fundrecs/owner.json): a prefix
 * another slot, database or cluster writes is refused (a permanent error).
 */
extern ShipResult s3_lake_claim_prefix(S3Lake *s, const char *system_id, const char *database,
									   const char *slot, StopFlag *stop);

/*
 * Holds a row for the object of its route and day, unless the route's
 * objects already hold its position (a row shipped again after a crash):
 * the first row of each route in a run lists what the route has.
 */
extern S3AddResult s3_lake_add(S3Lake *s, const char *route, const char *dt, const char *row,
							   size_t len, S3Position pos, uint64_t safe_lsn,
							   double commit_time, StopFlag *stop);

/*
 * Deletes the objects of an initial load (or backfill chunk) that did not
 * finish (their rows all at its position lsn): a load done again must not
 * leave a first, partial copy.  The position is first marked void
 * (PREFIX/_fundrecs/void/), and every void position's objects go: a PUT of
 * a killed shipper may land after this listing.  Lists the whole prefix.
 */
extern ShipResult s3_lake_forget_load(S3Lake *s, uint64_t lsn, StopFlag *stop);

/*
 * Before a load records its end: the objects of every void position are
 * deleted again (late writes of killed shippers have landed by now), then
 * the void markers.
 */
extern ShipResult s3_lake_sweep_loads(S3Lake *s, StopFlag *stop);

/*
 * Checks the prefix is still this slot's (PREFIX/_fundrecs/owner.json, as
 * claimed): written again when it was deleted, a permanent failure when
 * another shipper holds it now.  Every flush calls it first.
 */
extern ShipResult s3_lake_check_owner(S3Lake *s, StopFlag *stop);

/*
 * Uploads every held object (the prefix's owner checked first); on success
 * nothing is held any more.
 */
extern ShipResult s3_lake_flush(S3Lake *s, StopFlag *stop);

extern bool s3_lake_has_rows(const S3Lake *s);

/* Frees it, with the rows it holds (unconfirmed, so shipped again). */
extern void s3_lake_free(S3Lake *s);

#endif							/* S3_LAKE_H */
