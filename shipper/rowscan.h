/*-------------------------------------------------------------------------
 *
 * rowscan.h
 *	  Finds the top-level fields of a fundrecs_decoder row that the
 *	  shipper needs (schema, table, commit_lsn, key; a message's prefix) in one pass, without
 *	  building a document.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ROWSCAN_H
#define ROWSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct RowSpan
{
	const char *start;			/* raw JSON text of the value, or NULL */
	size_t		len;
} RowSpan;

typedef struct RowFields
{
	RowSpan		schema;			/* with quotes */
	RowSpan		table;			/* with quotes */
	RowSpan		commit_lsn;		/* with quotes */
	RowSpan		key;			/* the object */
	RowSpan		route;			/* with quotes, or the literal null */
	RowSpan		commit_time;	/* with quotes */
	RowSpan		prefix;			/* with quotes: a message row
								 * (include_messages) */
} RowFields;

/*
 * Returns false when the text is not a JSON object this scanner can read.
 * It stops once every field above but prefix is found: what follows
 * (the row's data) is not looked at.
 */
extern bool rowscan(const char *json, size_t len, RowFields *out);

/*
 * Rows of one chunk of a backfill share their header up to "key": the
 * offset of that first top-level field's name in a table row (0: none, or
 * no schema, table and commit_lsn before it), and in *head the fields as a
 * scan finds them there.
 */
extern size_t rowscan_key_prefix(const char *json, size_t len, RowFields *head);

/*
 * rowscan of a row whose first prefix bytes are those of prev, whose
 * rowscan_key_prefix gave prefix and head (the caller compared them): the
 * fields there are head's, moved; the rest is scanned.  The same answer as
 * rowscan's, for a fraction of the work (the header was most of a
 * backfill row's scan).
 */
extern bool rowscan_after_prefix(const char *json, size_t len, const char *prev,
								 const RowFields *head, size_t prefix, RowFields *out);

/*
 * The next field of an object, for reading one field by field: *p starts
 * just after the opening brace, and is moved past the value.  False at the
 * object's end or on malformed text.  Name and value are raw spans (the
 * name with its quotes).
 */
extern bool rowscan_next_field(const char **p, const char *end, RowSpan *name, RowSpan *value);

/* A top-level field of an object, found by scanning the whole text. */
extern bool rowscan_field(const char *json, size_t len, const char *name, RowSpan *out);

/* Parses "X/Y" (quotes allowed) into an LSN; false if malformed. */
extern bool rowscan_parse_lsn(const char *s, size_t len, uint64_t *lsn);

#endif							/* ROWSCAN_H */
