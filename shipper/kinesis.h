/*-------------------------------------------------------------------------
 *
 * kinesis.h
 *	  Kinesis Data Streams PutRecords with retries, per-key order kept.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KINESIS_H
#define KINESIS_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "credentials.h"
#include "http.h"
#include "kpl.h"
#include "retry.h"

#define KINESIS_MAX_RECORDS 500
#define KINESIS_MAX_REQUEST_BYTES (5 * 1024 * 1024)
#define KINESIS_MAX_RECORD_BYTES (1024 * 1024)
#define KINESIS_MAX_KEY_CHARS 256
#define KINESIS_MAX_IN_FLIGHT 64

typedef struct ShipRecord
{
	char	   *data;			/* the row followed by '\n' */
	size_t		len;
	char	   *pkey;			/* partition key */
	size_t		pkey_len;		/* its strlen */
	uint32_t	hash;			/* its dispatch_key_hash (batched rows) */
	uint64_t	commit_lsn;		/* the row's transaction end */
	uint64_t	safe_lsn;		/* confirmable once this row is acked */
	double		commit_time;	/* the transaction's commit time (epoch s), 0
								 * unknown */
	/* aggregated records only */
	char	   *ehk;			/* ExplicitHashKey, decimal */
	const char *want_shard;		/* the shard the map predicts */
	char	   *got_shard;		/* the shard Kinesis put it in */
} ShipRecord;

typedef struct KinesisTarget
{
	char	   *endpoint;		/* https://kinesis.REGION.amazonaws.com */
	char	   *host;			/* Host header */
	char	   *region;
	char	   *stream_name;	/* one of these two */
	char	   *stream_arn;
	AwsCredentialProvider *provider;	/* shared by the targets */
	AwsCredentials creds;		/* a snapshot, taken for each request */
	HttpClient	http;
	/* --max-in-flight calls at once: a connection, body, response each */
	int			max_in_flight;
	int			call_records;	/* records per call (--batch-records) */
	size_t		call_bytes;		/* bytes per call (--batch-bytes) */
	bool		cbor;			/* PutRecords in CBOR (--kinesis-protocol) */
	int			pool_size;		/* connections made (max_in_flight may be
								 * lowered later) */
	HttpClient *pool;
	PQExpBufferData *bodies;
	HttpResponse *resps;
	int			retry_timeout_s;	/* 0: retry for ever */
	/* --aggregate: the open shards, refreshed every KINESIS_MAP_REFRESH_S */
	KplShardMap map;
	double		map_loaded_at;
	KplHasher  *hasher;			/* the rows' hash keys (made at first use) */
	/* statistics */
	uint64_t	rows_aggregated;
	uint64_t	aggregates_resent;
	uint64_t	throttled_records;
	uint64_t	records_sent;
	uint64_t	calls;
	uint64_t	retried_calls;
	uint64_t	retried_records;
} KinesisTarget;


extern char *kinesis_init(KinesisTarget *k, AwsCredentialProvider *provider,
						  const char *endpoint, const char *region,
						  const char *stream_name, const char *stream_arn,
						  const char *ca_file, long timeout_ms, int retry_timeout_s,
						  int max_in_flight);

/*
 * A second target on the same stream, for a delivery thread of its own:
 * its own connections (max_in_flight of them), shard map and counters; the
 * configuration and the credential provider are shared.
 */
extern void kinesis_clone(KinesisTarget *dst, const KinesisTarget *src, int max_in_flight);

/*
 * Frees what kinesis_init made, or kinesis_clone (clone: the strings it
 * shares stay with the original).
 */
extern void kinesis_free(KinesisTarget *k, bool clone);

/*
 * Sends the records, retrying failed calls and failed records until every
 * one is acknowledged, in up to max_in_flight calls at once.  The records'
 * partition keys must be distinct, so calls may complete in any order and
 * a retried record can never land after a later version of its key.
 */
extern ShipResult kinesis_put_records(KinesisTarget *k, ShipRecord *recs, int n,
									  StopFlag *stop);

/*
 * --aggregate: the rows (distinct partition keys) as KPL aggregated
 * records, one shard's rows per record, at most agg_bytes each, sent with
 * an ExplicitHashKey inside the shard.  A record that lands in another
 * shard than the map predicts (the stream was resharded) makes the map be
 * read again and its rows be sent again into the right shards.
 */
extern ShipResult kinesis_put_aggregated(KinesisTarget *k, ShipRecord *rows, int n,
										 size_t agg_bytes, StopFlag *stop);

/* Reads the open shards' hash key ranges (ListShards). */
extern ShipResult kinesis_load_shard_map(KinesisTarget *k, StopFlag *stop);

#define KINESIS_MAP_REFRESH_S 60

/* Checks that the stream exists and is writable (DescribeStreamSummary). */
extern ShipResult kinesis_check_stream(KinesisTarget *k, StopFlag *stop);

/*
 * A row's partition key: "schema.table:{key}", or for a row without a key
 * "schema.table@POSITION/N" (its change's position, its ordinal there).
 */
extern void kinesis_partition_key(const char *schema, size_t schema_len,
								  const char *table, size_t table_len,
								  const char *key, size_t key_len,
								  uint64_t position, uint32_t ordinal,
								  PQExpBuffer out);

/* A message row's partition key: "message:PREFIX". */
extern void kinesis_message_partition_key(const char *prefix, size_t prefix_len,
										  PQExpBuffer out);

/*
 * The parsers of Kinesis's answers (also run by the fuzz targets, fuzz/):
 * the error code ("__type" without its namespace) and message of a failed
 * call; a PutRecords answer (failed records' indexes, or -1 when
 * malformed); a ListShards page (the open shards into map, the next
 * token, *malformed).
 */
/* The region of a stream ARN, or NULL (malloc'd). */
extern char *kinesis_arn_region(const char *arn);
extern char *kinesis_error_code(const char *body, size_t len, char **message);
extern int	kinesis_parse_put_response(const char *body, size_t len, bool cbor, int n, int *failed,
									   char **first_code, char **first_message, bool *fatal,
									   ShipRecord **recs, uint64_t *throttled);
extern char *kinesis_parse_list_shards(const char *body, size_t len, KplShardMap *map,
									   bool *malformed);

#endif							/* KINESIS_H */
