/*-------------------------------------------------------------------------
 *
 * fundrecs_asof.c
 *	  When a catalog-backed cache may answer for a change: the "as of the
 *	  change" rule every such cache follows (enrichment rules, the
 *	  built-in one included, and their lookups), driven by the decoder's
 *	  callbacks.
 *
 * Lookups read user_catalog_tables through the historic snapshot that
 * logical decoding installs, so a change sees them as they were when it
 * was made.  A cache of what was read must be exactly as correct as the
 * historic snapshot.  The rule: "valid_after" is an LSN such that no
 * transaction that changed the catalogs (lookup tables are among them)
 * committed between valid_after and any change decoded later with an LSN
 * above it.  It is set to the commit LSN of the first transaction of the
 * session (anything that committed earlier was skipped by decoding,
 * unseen), then to the end LSN of each decoded transaction that changed
 * the catalogs, and every registered cache is emptied each time.  A change
 * may use or fill a cache only when its LSN is above valid_after and its
 * own transaction changed no catalogs; every other change looks its rows
 * up directly.
 *
 * The caches register their reset here (fr_asof_register), so that this
 * module knows none of them.  Their life cycle, a context per decoding
 * session under the decoding context, is here too (fr_session_cache_*).
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "utils/memutils.h"

#define FR_ASOF_MAX_CACHES 8

static FrAsofResetFn resets[FR_ASOF_MAX_CACHES];
static int	nresets = 0;

static XLogRecPtr valid_after = InvalidXLogRecPtr;
static bool session_started = false;
static bool txn_may_use_cache = false;

static void
session_cache_gone(void *arg)
{
	FrSessionCache *c = (FrSessionCache *) arg;

	c->cxt = NULL;
	c->forget();
}

/* A session's cache context, the one before (if any) deleted first. */
MemoryContext
fr_session_cache_start(FrSessionCache *c, MemoryContext parent)
{
	fr_session_cache_end(c);

	/*
	 * The name is a string literal (FR_SESSION_CACHE), so it need not be
	 * copied.
	 */
	c->cxt = AllocSetContextCreateInternal(parent, c->name, ALLOCSET_DEFAULT_SIZES);
	c->callback.func = session_cache_gone;
	c->callback.arg = c;
	MemoryContextRegisterResetCallback(c->cxt, &c->callback);
	return c->cxt;
}

/* The session's end: the context deleted, the owner's pointers cleared. */
void
fr_session_cache_end(FrSessionCache *c)
{
	if (c->cxt != NULL)
		MemoryContextDelete(c->cxt);
	Assert(c->cxt == NULL);
}

/* A cache to empty whenever the rule says (once per backend). */
void
fr_asof_register(FrAsofResetFn reset)
{
	for (int i = 0; i < nresets; i++)
		if (resets[i] == reset)
			return;
	if (nresets >= FR_ASOF_MAX_CACHES)
		elog(ERROR, "too many fundrecs caches");
	resets[nresets++] = reset;
}

static void
reset_all(void)
{
	for (int i = 0; i < nresets; i++)
		resets[i] ();
}

/* A decoding session starts (or ends): nothing is known to be valid. */
void
fr_asof_start(void)
{
	valid_after = InvalidXLogRecPtr;
	session_started = false;
	txn_may_use_cache = false;
}

void
fr_asof_begin_txn(XLogRecPtr commit_lsn, bool txn_changes_catalog)
{
	if (!session_started)
	{
		valid_after = commit_lsn;
		session_started = true;
	}
	txn_may_use_cache = !txn_changes_catalog;
}

/* The transaction being decoded writes a catalog (a lookup table). */
void
fr_asof_txn_touched_catalog(void)
{
	txn_may_use_cache = false;
}

void
fr_asof_commit_txn(XLogRecPtr end_lsn, bool txn_changes_catalog)
{
	if (txn_changes_catalog || !txn_may_use_cache)
	{
		if (end_lsn > valid_after)
			valid_after = end_lsn;
		reset_all();
	}
}

/* May a change at change_lsn use what the caches hold? */
bool
fr_asof_cache_usable(XLogRecPtr change_lsn)
{
	return txn_may_use_cache && change_lsn > valid_after;
}
