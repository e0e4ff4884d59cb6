/*-------------------------------------------------------------------------
 *
 * waitq.c
 *	  Rows held back behind an earlier version of their key (see waitq.h
 *	  and the order rule at the top of dispatch.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "retry.h"
#include "waitq.h"

static WaitKey *
key_find(WaitQueue *q, const char *pkey, size_t keylen, uint32_t hash, bool create)
{
	WaitKey   **head = &q->keys[hash & (WAIT_BUCKETS - 1)];
	WaitKey    *k;

	for (k = *head; k != NULL; k = k->next)
		if (k->hash == hash && strcmp(k->pkey, pkey) == 0)
			return k;
	if (!create)
		return NULL;
	k = pg_malloc(offsetof(WaitKey, pkey) + keylen + 1);
	k->hash = hash;
	k->count = 0;
	k->blocked_in = 0;
	memcpy(k->pkey, pkey, keylen + 1);
	k->next = *head;
	*head = k;
	return k;
}

static void
key_release(WaitQueue *q, WaitKey *k)
{
	WaitKey   **p = &q->keys[k->hash & (WAIT_BUCKETS - 1)];

	if (--k->count > 0)
		return;
	while (*p != k)
		p = &(*p)->next;
	*p = k->next;
	free(k);
}

void
waitq_push(WaitQueue *q, const char *row, size_t len, const char *pkey, size_t keylen, uint32_t hash,
		   uint64_t commit_lsn, uint64_t safe_lsn, double commit_time)
{
	WaitRow    *w;

	if (q->n == q->alloc)
	{
		q->alloc = q->alloc == 0 ? 256 : q->alloc * 2;
		q->rows = pg_realloc(q->rows, sizeof(WaitRow) * q->alloc);
	}
	w = &q->rows[q->n++];
	w->data = pg_malloc(len);
	memcpy(w->data, row, len);
	w->len = len;
	w->key = key_find(q, pkey, keylen, hash, true);
	w->key->count++;
	w->commit_lsn = commit_lsn;
	w->safe_lsn = safe_lsn;
	w->commit_time = commit_time;
	w->arrived = now_seconds();
	q->bytes += len + keylen;
	q->pushed++;
}

/*
 * Moves waiting rows whose keys are free into the batch being filled, in
 * arrival order, while it has room.  A key found blocked keeps all its
 * later rows waiting too (blocked_in marks it for this pass), and once the
 * batch is full every later row waits: each key's rows stay in order.
 */
void
waitq_promote(WaitQueue *q, Batch *into, size_t max_bytes, WaitBlockedFn blocked, void *arg)
{
	int			kept = 0;
	bool		full = false;

	if (q->n == 0)
		return;
	q->pass++;
	for (int i = 0; i < q->n; i++)
	{
		WaitRow    *w = &q->rows[i];
		WaitKey    *k = w->key;
		size_t		keylen = strlen(k->pkey);

		if (!full && k->blocked_in != q->pass)
		{
			if (blocked(arg, k->pkey, k->hash))
				k->blocked_in = q->pass;
			else if (batch_fits(into, w->len + 1 + keylen, max_bytes))
			{
				batch_push(into, w->data, w->len, k->pkey, keylen, k->hash, w->commit_lsn,
						   w->safe_lsn, w->commit_time, w->arrived);
				q->bytes -= w->len + keylen;
				free(w->data);
				key_release(q, k);
				continue;
			}
			else
				full = true;
		}
		q->rows[kept++] = *w;
	}
	q->n = kept;
}


bool
waitq_has_key(WaitQueue *q, const char *pkey, size_t keylen, uint32_t hash)
{
	return q->n > 0 && key_find(q, pkey, keylen, hash, false) != NULL;
}

void
waitq_free(WaitQueue *q)
{
	for (int i = 0; i < q->n; i++)
		free(q->rows[i].data);
	for (int b = 0; b < WAIT_BUCKETS; b++)
	{
		while (q->keys[b] != NULL)
		{
			WaitKey    *k = q->keys[b];

			q->keys[b] = k->next;
			free(k);
		}
	}
	free(q->rows);
	memset(q, 0, sizeof(*q));
}
