/*-------------------------------------------------------------------------
 *
 * aws_request.h
 *	  AWS requests above HTTP: SigV4 signing of every call (Kinesis, S3,
 *	  STS), and the clock the signatures use, corrected after a refusal
 *	  for clock skew.
 *
 *-------------------------------------------------------------------------
 */
#ifndef AWS_REQUEST_H
#define AWS_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "credentials.h"
#include "http.h"
#include "sigv4.h"

/*
 * One SigV4-signed AWS request: every call to Kinesis, S3 and STS is
 * signed here.  Host, X-Amz-Date, X-Amz-Security-Token (with a session
 * token) and, for S3, X-Amz-Content-Sha256 are added to the extra headers
 * (Content-Type, X-Amz-Target); S3 signs the path as it is, the others
 * normalized.
 */
typedef struct AwsRequestSpec
{
	const char *method;
	const char *host;
	const char *path;
	const char *query;			/* or NULL */
	const SigV4Header *extra;
	int			nextra;
	const char *body;
	size_t		len;
	const char *region;
	const char *service;
	bool		s3;
} AwsRequestSpec;

extern struct curl_slist *aws_signed_headers(const AwsRequestSpec *spec,
											 const AwsCredentials *creds);

/* A refusal because the request's time is too far from the service's. */
extern bool aws_error_is_clock_skew(const char *code, const char *message);

/*
 * After a refusal for clock skew: the offset of this machine's clock from
 * the service's, read from the response's Date header, is added to the
 * time every later request is signed with (as the AWS SDKs correct it).
 * False when the response had no usable Date.  *offset_s: the offset.
 */
extern bool aws_clock_correct(HttpClient *client, long *offset_s);

/*
 * What one service's error codes mean: the codes worth retrying (besides
 * HTTP 5xx and 429), those saying the resource (stream, bucket) does not
 * exist, and those saying the IAM policy refuses the call.  Each list ends
 * with NULL.
 */
typedef struct AwsErrorTable
{
	const char *service;		/* "Kinesis", "S3": in messages */
	const char *resource;		/* "stream", "bucket" */
	const char *const *retryable;
	const char *const *missing;
	const char *const *denied;
	bool		missing_on_404; /* HTTP 404 alone says it is missing */
} AwsErrorTable;

/* A call that did not succeed, and what it was about. */
typedef struct AwsFailedCall
{
	HttpClient *client;			/* its response headers: Date */
	AwsCredentialProvider *provider;	/* to refresh */
	const char *endpoint;
	const char *what;			/* "object x", or NULL: the request */
	const char *resource_name;	/* the stream's or bucket's name */
	bool		reached;		/* an HTTP response came back */
	HttpResponse *resp;
	const char *code;			/* the service's error code, or NULL */
	const char *message;		/* its message, or NULL */
} AwsFailedCall;

/*
 * Classifies a failed call, for every service alike: credentials that
 * expired or were refused (refreshed, then retried), a clock too far off
 * (corrected, then retried), throttling and server errors (retried), a
 * missing resource or a refusal by policy (permanent).  A retryable failure
 * returns a description to log; a permanent one is logged here, with a
 * hint, and returns NULL (retry_note_permanent() when starting over would
 * not help).
 */
extern char *aws_call_failure(const AwsErrorTable *errors, const AwsFailedCall *call);

#endif							/* AWS_REQUEST_H */
