/*-------------------------------------------------------------------------
 *
 * sigv4.h
 *	  AWS Signature Version 4 (header-based), with OpenSSL.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SIGV4_H
#define SIGV4_H

#include <stdbool.h>
#include <stddef.h>

typedef struct SigV4Header
{
	const char *name;
	const char *value;
} SigV4Header;

typedef struct SigV4Request
{
	const char *method;
	const char *path;			/* raw path, not yet URI-encoded */
	const char *query;			/* raw query without '?', or NULL */
	const SigV4Header *headers; /* every header to sign, host included */
	int			nheaders;
	const char *payload_hash;	/* lowercase hex SHA-256 of the body */
	bool		normalize_path; /* remove dot segments and empty segments */
	const char *region;
	const char *service;
	const char *access_key;
	const char *secret_key;
	const char *amz_date;		/* YYYYMMDDTHHMMSSZ */
} SigV4Request;

typedef struct SigV4Result
{
	char	   *canonical_request;
	char	   *string_to_sign;
	char	   *signed_headers;
	char		signature[65];
	char	   *authorization;	/* the Authorization header's value */
} SigV4Result;

/* Returns false on out-of-memory only. */
extern bool sigv4_sign(const SigV4Request *req, SigV4Result *result);
extern void sigv4_result_free(SigV4Result *result);

/* Lowercase hex SHA-256 of data into out[65]. */
extern void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/* "YYYYMMDDTHHMMSSZ" for a time_t, UTC. */
extern void sigv4_amz_date(long long epoch, char out[17]);

/* URI-encodes bytes per SigV4 (unreserved kept; '/' kept if keep_slash). */
extern char *sigv4_uri_encode(const char *s, size_t len, bool keep_slash);

#endif							/* SIGV4_H */
