/*-------------------------------------------------------------------------
 *
 * s3.h
 *	  S3 target: JSON Lines objects, gzip by default, one per route and
 *	  day per flush, named PREFIX/<route>/dt=YYYY-MM-DD/<first>-<last>.json.gz.
 *
 *-------------------------------------------------------------------------
 */
#ifndef S3_H
#define S3_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <zlib.h>

#include "credentials.h"
#include "http.h"
#include "retry.h"

typedef struct S3Object
{
	char	   *route;			/* partition value */
	char		dt[11];			/* YYYY-MM-DD */
	uint64_t	first_lsn;		/* commit LSNs of its first and last rows */
	uint64_t	last_lsn;
	uint64_t	rows;
	z_stream	z;				/* gzip stream, when compressing */
	PQExpBufferData body;		/* the object's bytes so far */
} S3Object;

typedef struct S3Target
{
	char	   *endpoint;		/* scheme://host[:port] */
	char	   *bucket;
	char	   *prefix;			/* without leading or trailing '/' */
	char	   *region;
	bool		path_style;
	bool		gzip;
	AwsCredentialProvider *provider;	/* shared by the targets */
	AwsCredentials creds;		/* a snapshot, taken for each request */
	HttpClient	http;
	int			retry_timeout_s;

	S3Object   *objects;
	int			nobjects;
	int			maxobjects;
	size_t		buffered;		/* uncompressed bytes held */
	double		first_at;		/* when the oldest held row arrived */
	uint64_t	safe_lsn;		/* confirmable while rows are held */

	uint32_t	run_id;			/* start time: object names of runs differ */
	uint32_t	flushes;
	uint64_t	objects_put;
	uint64_t	bytes_put;
} S3Target;

extern char *s3_init(S3Target *s, AwsCredentialProvider *provider, const char *url,
					 const char *endpoint,
					 const char *region, const char *addressing, bool gzip,
					 const char *ca_file, long timeout_ms, int retry_timeout_s);

/* Checks the bucket exists and is reachable (HEAD bucket). */
extern ShipResult s3_check_bucket(S3Target *s, volatile sig_atomic_t *stop);

/* Holds a row for the object of its route and day. */
extern void s3_add(S3Target *s, const char *route, const char *dt, const char *row,
				   size_t len, uint64_t commit_lsn, uint64_t safe_lsn);

/* Uploads every held object; on success nothing is held any more. */
extern ShipResult s3_flush(S3Target *s, volatile sig_atomic_t *stop);

extern bool s3_has_rows(const S3Target *s);

/* <Code>...</Code> of an S3 error document, or NULL (fuzzed in fuzz/). */
extern char *s3_error_code(const char *body);

#endif							/* S3_H */
