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

#endif							/* KINESIS_INT_H */
