/*-------------------------------------------------------------------------
 *
 * jscan.h
 *	  A strict JSON scanner that reads a document in place: the members a
 *	  caller wants come back as spans of the text (unescaped on demand),
 *	  everything else is checked and skipped, and no tree is built.  For the
 *	  large, regular documents of the hot path (PutRecords requests and
 *	  answers); jansson reads everything else.
 *
 *	  It accepts what RFC 8259 accepts, as jansson does with flags 0: one
 *	  value, UTF-8 strings without raw control characters or \u0000,
 *	  strict numbers and literals (an integer within 64 bits, a real within
 *	  a double), nesting up to JSCAN_MAX_DEPTH.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JSCAN_H
#define JSCAN_H

#include <stdbool.h>
#include <stddef.h>

#define JSCAN_MAX_DEPTH 2048	/* jansson's */

typedef struct JScan
{
	const char *p;
	const char *end;
} JScan;

/* A string's text between its quotes, as written. */
typedef struct JSpan
{
	const char *s;
	size_t		len;
	bool		escaped;		/* has a backslash: jscan_unescape it */
	bool		set;
} JSpan;

extern void jscan_init(JScan *sc, const char *text, size_t len);

/* After whitespace, the next character is c: consumed, true. */
extern bool jscan_expect(JScan *sc, char c);

/* After whitespace, the next character is c (not consumed). */
extern bool jscan_peek(JScan *sc, char c);

/* A string; its span in out. */
extern bool jscan_string(JScan *sc, JSpan *out);

/* Any value, checked and skipped (at the top: depth 1). */
extern bool jscan_skip_value(JScan *sc);

/* The same for a value nested depth - 1 levels down, for the depth limit. */
extern bool jscan_skip_value_at(JScan *sc, int depth);

/* Only whitespace is left. */
extern bool jscan_at_end(JScan *sc);

/* A member name whose value (escapes read) is name. */
extern bool jscan_key_is(const JSpan *key, const char *name);

/*
 * The string's value, NUL-terminated, in out (at least span->len + 1
 * bytes); its length, or -1 when an escape is malformed.
 */
extern long jscan_unescape(const JSpan *span, char *out);

/* The same, in memory of its own (pg_malloc); NULL when malformed. */
extern char *jscan_strdup(const JSpan *span);

#endif							/* JSCAN_H */
