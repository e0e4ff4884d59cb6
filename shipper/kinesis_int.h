/*-------------------------------------------------------------------------
 *
 * kinesis_int.h
 *	  Inside the Kinesis target: the calls kinesis.c makes, for the
 *	  aggregation of kinesis_agg.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KINESIS_INT_H
#define KINESIS_INT_H

#include "cscan.h"
#include "jscan.h"
#include "kinesis.h"

/* A call with a fixed body and its response, for retry_call(). */
typedef struct SimpleCall
{
	KinesisTarget *k;
	const char *operation;
	PQExpBufferData body;
	HttpResponse resp;
} SimpleCall;

/* The stream's name or ARN, for messages. */
extern const char *kinesis_stream_label(KinesisTarget *k);

/* One signed call; false when no answer arrived. */
extern bool kinesis_call(KinesisTarget *k, const char *operation, const char *body, size_t len,
						 HttpResponse *resp);

/* What a failed call means: a problem to retry, or NULL when fatal (reported). */
extern char *kinesis_call_failure(KinesisTarget *k, HttpClient *client, bool reached,
								  HttpResponse *resp);

/*
 * One round of PutRecords calls for the pending records; those left in
 * pending[0..*npending) failed.  Returns the problem to retry (or NULL);
 * *fatal on a failure that retrying cannot cure.
 */
extern char *kinesis_put_round(KinesisTarget *k, ShipRecord **pending, int *npending,
							   int *failed, bool retry, bool *fatal);

/* JSON string and "StreamName"/"StreamARN" member writers. */
extern void kinesis_append_json_string(PQExpBuffer buf, const char *s, size_t len);
extern void kinesis_append_stream_field(KinesisTarget *k, PQExpBuffer body);

/* Room for n more bytes (and a terminator) in buf. */
extern void kinesis_reserve(PQExpBuffer buf, size_t n);

/* What a PutRecords answer says of one record (spans into the answer). */
typedef struct PutResult
{
	JSpan		code;			/* ErrorCode */
	JSpan		message;		/* ErrorMessage */
	JSpan		sequence;		/* SequenceNumber */
	JSpan		shard;			/* ShardId */
	bool		object;			/* the element was an object (a map) */
} PutResult;

/* The CBOR protocol (kinesis_cbor.c). */
extern void kinesis_cbor_body(const char *stream_member, const char *stream,
							  ShipRecord **recs, int n, PQExpBuffer body);
extern bool kinesis_cbor_scan_put_response(CScan *sc, const char *body, size_t len,
										   PutResult *results, int max, int *count);
extern bool kinesis_cbor_error(const char *body, size_t len, char **type, char **message);

#endif							/* KINESIS_INT_H */
