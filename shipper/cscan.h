/*-------------------------------------------------------------------------
 *
 * cscan.h
 *	  A CBOR (RFC 8949) scanner reading in place, on libcbor's streaming
 *	  decoder: the members a caller wants come back as spans of the
 *	  document, everything else is decoded and skipped, and no tree is
 *	  built.  For the PutRecords calls of Kinesis's CBOR protocol
 *	  (application/x-amz-cbor-1.1), where a tree of 500 records would cost
 *	  what jansson's did for the JSON answers.
 *
 *	  It accepts what libcbor's cbor_load() accepts (text in UTF-8), nesting up to
 *	  CSCAN_MAX_DEPTH.  A string written in chunks (indefinite length) is
 *	  joined into memory the scanner owns until cscan_free().
 *
 *-------------------------------------------------------------------------
 */
#ifndef CSCAN_H
#define CSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CSCAN_MAX_DEPTH 2048

typedef struct CScan
{
	const unsigned char *p;
	const unsigned char *end;
	char	  **owned;			/* joined chunked strings */
	int			nowned;
	int			maxowned;
} CScan;

/* The head of one item. */
typedef enum CKind
{
	CK_UINT,
	CK_NEGINT,
	CK_BYTES,					/* definite: s, len */
	CK_TEXT,					/* definite: s, len */
	CK_BYTES_CHUNKED,			/* chunks, then a break */
	CK_TEXT_CHUNKED,
	CK_ARRAY,					/* n items */
	CK_MAP,						/* n pairs */
	CK_ARRAY_INDEF,				/* items, then a break */
	CK_MAP_INDEF,
	CK_TAG,						/* one item follows */
	CK_SIMPLE,					/* false, true, null, undefined, a float */
	CK_BREAK
} CKind;

typedef struct CItem
{
	CKind		kind;
	uint64_t	n;				/* an integer's value, a collection's size */
	const char *s;
	size_t		len;
} CItem;

/* A string's bytes (in the document, or joined in memory the scan owns). */
typedef struct CSpan
{
	const char *s;
	size_t		len;
	bool		set;
} CSpan;

extern void cscan_init(CScan *sc, const void *doc, size_t len);

/* Memory of joined chunked strings (their spans end with it). */
extern void cscan_free(CScan *sc);

/* The next item's head (a definite string with its bytes); false if malformed. */
extern bool cscan_next(CScan *sc, CItem *it);

/* The rest of a value whose head is it, decoded and skipped. */
extern bool cscan_skip_rest(CScan *sc, const CItem *it, int depth);

/* One value, decoded and skipped (at the top: depth 1). */
extern bool cscan_skip_value(CScan *sc, int depth);

/*
 * The rest of a value whose head is it, as a string of that kind (text
 * when text, else bytes) into *out; a value of another kind is skipped and
 * leaves out->set false.
 */
extern bool cscan_string_rest(CScan *sc, const CItem *it, bool text, CSpan *out, int depth);

/* Nothing is left. */
extern bool cscan_at_end(const CScan *sc);

/* The next value as a string of that kind (cscan_next, then cscan_string_rest). */
extern bool cscan_string(CScan *sc, bool text, CSpan *out, int depth);

/* A string span equal to name (a map key, say). */
extern bool cscan_span_is(const CSpan *span, const char *name);

/* The span's bytes, NUL-terminated, in memory of its own (pg_malloc). */
extern char *cscan_strdup(const CSpan *span);

#endif							/* CSCAN_H */
