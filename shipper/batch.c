/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  A batch of rows to deliver (see batch.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "batch.h"

/* n bytes of the batch's arena */
static char *
batch_bytes(Batch *b, size_t n)
{
	ArenaChunk *c = b->chunks;
	char	   *p;

	if (c == NULL || c->size - c->used < n)
	{
		size_t		size = Max(n, ARENA_CHUNK_BYTES);

		c = pg_malloc(offsetof(ArenaChunk, data) + size);
		c->size = size;
		c->used = 0;
		c->next = b->chunks;
		b->chunks = c;
	}
	p = c->data + c->used;
	c->used += n;
	return p;
}

void
batch_alloc(Batch *b, int capacity, bool keyed)
{
	b->capacity = capacity;
	b->recs = pg_malloc0(sizeof(ShipRecord) * capacity);
	b->chunks = NULL;
	b->n = 0;
	b->bytes = 0;
	b->slots = NULL;
	b->slot_hash = NULL;
	b->nslots = 0;
	if (keyed)
	{
		b->nslots = 1;
		while (b->nslots < capacity * 2)
			b->nslots <<= 1;
		b->slots = pg_malloc(sizeof(int) * b->nslots);
		b->slot_hash = pg_malloc(sizeof(uint32_t) * b->nslots);
		memset(b->slots, -1, sizeof(int) * b->nslots);
	}
}

void
batch_clear(Batch *b)
{
	ArenaChunk *keep = NULL;

	/* One chunk of the usual size stays for the next rows. */
	while (b->chunks != NULL)
	{
		ArenaChunk *c = b->chunks;

		b->chunks = c->next;
		if (keep == NULL && c->size == ARENA_CHUNK_BYTES)
			keep = c;
		else
			free(c);
	}
	if (keep != NULL)
	{
		keep->used = 0;
		keep->next = NULL;
		b->chunks = keep;
	}
	b->n = 0;
	b->bytes = 0;
	if (b->slots)
		memset(b->slots, -1, sizeof(int) * b->nslots);
}

bool
batch_has_key(const Batch *b, const char *pkey, uint32_t h)
{
	uint32_t	i;

	if (b->slots == NULL || b->n == 0)
		return false;
	i = h & (b->nslots - 1);
	while (b->slots[i] >= 0)
	{
		if (b->slot_hash[i] == h && strcmp(b->recs[b->slots[i]].pkey, pkey) == 0)
			return true;
		i = (i + 1) & (b->nslots - 1);
	}
	return false;
}

/* Adds delta to counts[hash & mask] for each key of the batch. */
void
batch_count_keys(const Batch *b, uint32_t *counts, uint32_t mask, int delta)
{
	if (b->slots == NULL)
		return;
	for (int i = 0; i < b->n; i++)
		counts[b->recs[i].hash & mask] += delta;
}

void
batch_push(Batch *b, const char *row, size_t len, const char *pkey, size_t keylen,
		   uint32_t hash, uint64_t commit_lsn, uint64_t safe_lsn, double commit_time,
		   double arrived)
{
	ShipRecord *r = &b->recs[b->n];

	Assert(b->n < b->capacity);
	/* Without keys (standard output), no room for one. */
	r->data = batch_bytes(b, len + 1 + (b->slots != NULL ? keylen + 1 : 0));
	memcpy(r->data, row, len);
	r->data[len] = '\n';
	r->len = len + 1;
	if (b->slots != NULL)
	{
		uint32_t	i = hash & (b->nslots - 1);

		r->pkey = r->data + len + 1;
		r->pkey_len = keylen;
		r->hash = hash;
		memcpy(r->pkey, pkey, keylen + 1);
		while (b->slots[i] >= 0)
			i = (i + 1) & (b->nslots - 1);
		b->slots[i] = b->n;
		b->slot_hash[i] = hash;
	}
	else
	{
		r->pkey = NULL;
		r->pkey_len = 0;
	}
	r->commit_lsn = commit_lsn;
	r->safe_lsn = safe_lsn;
	r->commit_time = commit_time;
	if (b->n == 0 || safe_lsn < b->min_safe_lsn)
		b->min_safe_lsn = safe_lsn;
	if (b->n == 0 || commit_time < b->min_commit_time)
		b->min_commit_time = commit_time;
	if (b->n == 0)
		b->first_at = arrived;
	b->n++;
	b->bytes += r->len + keylen;
}

void
batch_free(Batch *b)
{
	while (b->chunks != NULL)
	{
		ArenaChunk *c = b->chunks;

		b->chunks = c->next;
		free(c);
	}
	free(b->recs);
	free(b->slots);
	free(b->slot_hash);
	memset(b, 0, sizeof(*b));
}
