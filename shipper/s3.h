/*-------------------------------------------------------------------------
 *
 * s3.h
 *	  An S3 client: ListObjectsV2, GetObject, PutObject and DeleteObject
 *	  on one bucket, SigV4-signed and retried.  The lake's policy is
 *	  s3_lake.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef S3_H
#define S3_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "credentials.h"
#include "http.h"
#include "retry.h"

typedef struct S3Client
{
	char	   *endpoint;		/* scheme://host[:port] */
	char	   *bucket;
	char	   *prefix;			/* without leading or trailing '/' */
	char	   *region;
	bool		path_style;
	AwsCredentialProvider *provider;	/* shared by the targets */
	AwsCredentials creds;		/* a snapshot, taken for each request */
	HttpClient	http;
	int			retry_timeout_s;
} S3Client;

/*
 * Reads bucket and prefix from url (s3://BUCKET/PREFIX); endpoint NULL:
 * AWS's for region.  An error message, or NULL.
 */
extern char *s3_client_init(S3Client *c, AwsCredentialProvider *provider, const char *url,
							const char *endpoint, const char *region,
							const char *addressing, const char *ca_file, long timeout_ms,
							int retry_timeout_s);

/* PREFIX/ (with the slash), or "" for the bucket's root; malloc'd. */
extern char *s3_prefix_slash(const S3Client *c);

/* Frees what s3_client_init made. */
extern void s3_client_free(S3Client *c);

/*
 * Checks the bucket exists and can be listed under list_prefix (a folder
 * that holds a few keys at most); a wrong endpoint is fatal.
 */
extern ShipResult s3_check_bucket(S3Client *c, const char *list_prefix, StopFlag *stop);

/* Calls fn for each key under prefix, with its size; pages through all. */
typedef void (*S3ListFn) (const char *key, long long size, void *arg);
extern ShipResult s3_list(S3Client *c, const char *prefix, S3ListFn fn, void *arg,
						  StopFlag *stop);

/*
 * GetObject into resp (initialized by the caller, freed by it); a missing
 * key is an answer (resp->status 404), not a failure.  startup: a wrong
 * endpoint is fatal.
 */
extern ShipResult s3_get(S3Client *c, const char *key, bool startup, HttpResponse *resp,
						 StopFlag *stop);

/* PutObject with Content-MD5; rows > 0 adds x-amz-meta-fundrecs-rows. */
extern ShipResult s3_put(S3Client *c, const char *key, const char *content_type,
						 const char *body, size_t len, uint64_t rows, StopFlag *stop);

/* DeleteObject; a key already gone is not a failure. */
extern ShipResult s3_delete(S3Client *c, const char *key, StopFlag *stop);

/* <Code>...</Code> of an S3 error document, or NULL (fuzzed in fuzz/). */
extern char *s3_error_code(const char *body);

#endif							/* S3_H */
