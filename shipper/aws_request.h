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

#endif							/* AWS_REQUEST_H */
