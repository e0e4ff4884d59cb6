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

#include "pqexpbuffer.h"

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

/* Once per process: libcurl, and the User-Agent every request sends. */
extern void http_global_init(const char *user_agent);
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

extern char *http_transport_failure(HttpClient *client, const char *endpoint,
									HttpResponse *resp);

/* "host" or "host:port" exactly as curl will send it in Host:. */
extern char *http_host_header(const char *url, char **path_out, char **errmsg);

#endif							/* HTTP_H */
