/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  A batch of rows to deliver: their bytes in an arena the batch owns,
 *	  and, for a keyed target, a hash of their partition keys.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCH_H
#define BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kinesis.h"

/*
 * A batch's bytes: rows and their partition keys are copied into chunks
 * the batch owns, freed (all but one, kept for the next rows) when it is
 * cleared.  A malloc and a free per row were a tenth of the shipper's
 * time catching up (perf, W1 to stdout).
 */
typedef struct ArenaChunk
{
	struct ArenaChunk *next;
	size_t		size;
	size_t		used;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} ArenaChunk;

#define ARENA_CHUNK_BYTES (256 * 1024)

typedef struct Batch
{
	ShipRecord *recs;
	ArenaChunk *chunks;			/* newest first */
	int			n;
	size_t		bytes;			/* data + partition keys, as Kinesis counts */
	double		first_at;		/* when its first row arrived */
	uint64_t	min_safe_lsn;	/* of its rows (not in arrival order: see */
	double		min_commit_time;	/* waitq_promote) */

	/*
	 * partition keys in the batch: open addressing, indexes into recs and the
	 * keys' hashes beside them (a key is compared only on an equal hash)
	 */
	int		   *slots;
	uint32_t   *slot_hash;
	int			nslots;
	int			capacity;		/* rows at most */
} Batch;


/* Sets up an empty batch of capacity rows (with a key hash if keyed). */
extern void batch_alloc(Batch *b, int capacity, bool keyed);

/* Frees what it holds; batch_alloc sets it up again. */
extern void batch_free(Batch *b);

/* Empties it, keeping one chunk of bytes for the next rows. */
extern void batch_clear(Batch *b);

/* Does the batch hold a row with this key (whose hash is h)? */
extern bool batch_has_key(const Batch *b, const char *pkey, uint32_t h);

/* Adds delta to counts[hash & mask] for each row of the batch, by its key's hash. */
extern void batch_count_keys(const Batch *b, uint32_t *counts, uint32_t mask, int delta);

/* Does a record of this many bytes still fit, within max_bytes? */
static inline bool
batch_fits(const Batch *b, size_t record_bytes, size_t max_bytes)
{
	return b->n < b->capacity && b->bytes + record_bytes <= max_bytes;
}

/*
 * Appends a row (which fits): copied with a newline, and its partition
 * key when the batch is keyed.
 */
extern void batch_push(Batch *b, const char *row, size_t len, const char *pkey, size_t keylen,
					   uint32_t hash, uint64_t commit_lsn, uint64_t safe_lsn,
					   double commit_time, double arrived);

#endif							/* BATCH_H */
