/*-------------------------------------------------------------------------
 *
 * http.h
 *	  A kept-alive HTTPS client on libcurl for AWS calls.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HTTP_H
#define HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

#include "credentials.h"
#include "pqexpbuffer.h"
#include "sigv4.h"

typedef struct HttpClient
{
	CURL	   *curl;
	const char *ca_file;		/* NULL: the system's CA store */
	long		timeout_ms;
	long		connect_timeout_ms;
} HttpClient;

typedef struct HttpResponse
{
	long		status;			/* 0 when no response arrived */
	int			curl_code;		/* CURLE_OK or the transport error */
	PQExpBufferData body;
	char		error[CURL_ERROR_SIZE]; /* transport error, when status is 0 */
} HttpResponse;

extern void http_global_init(void);
extern void http_client_init(HttpClient *client, const char *ca_file, long timeout_ms);
extern void http_client_reset_connection(HttpClient *client);

/* Closes the client's connection and frees its handle. */
extern void http_client_free(HttpClient *client);
extern void http_response_init(HttpResponse *resp);
extern void http_response_free(HttpResponse *resp);

/* Sends one request; false on a transport failure (resp->error says why). */
extern bool http_request(HttpClient *client, const char *method, const char *url,
						 struct curl_slist *headers, const char *body, size_t len,
						 HttpResponse *resp);

/*
 * n requests to one URL at once, one per client (libcurl's multi
 * interface, each client's kept-alive connection); reached[i] as
 * http_request() returns it.  The tick runs while they wait.
 */
extern void http_request_many(HttpClient *clients, int n, const char *method,
							  const char *url, struct curl_slist **headers,
							  PQExpBuffer bodies, HttpResponse *resps, bool *reached);

/*
 * A header of the client's last response (case-insensitive name), copied
 * (free() it); NULL when the response had none.
 */
extern char *http_response_header(HttpClient *client, const char *name);

/* A transport failure that retrying cannot mend (TLS verification...). */
extern bool http_error_is_permanent(const HttpResponse *resp);

/* At start-up: an endpoint that cannot be right (see http.c). */
extern bool http_error_is_wrong_endpoint(const HttpResponse *resp);

extern void http_report_wrong_endpoint(const char *endpoint, const HttpResponse *resp);
extern bool aws_error_is_clock_skew(const char *code, const char *message);

/*
 * After a refusal for clock skew: the offset of this machine's clock from
 * the service's, read from the response's Date header, is added to the
 * time every later request is signed with (as the AWS SDKs correct it).
 * False when the response had no usable Date.  *offset_s: the offset.
 */
extern bool aws_clock_correct(HttpClient *client, long *offset_s);

extern struct curl_slist *http_signed_headers(const SigV4Header *h, int nh,
											  const char *authorization);

extern char *http_transport_failure(HttpClient *client, const char *endpoint,
									HttpResponse *resp);

/* "host" or "host:port" exactly as curl will send it in Host:. */
extern char *http_host_header(const char *url, char **path_out, char **errmsg);

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

#endif							/* HTTP_H */
