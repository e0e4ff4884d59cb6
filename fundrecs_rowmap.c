/*-------------------------------------------------------------------------
 *
 * fundrecs_rowmap.c
 *	  Row maps of the rules' lookups: one scan of a lookup's heap records
 *	  where each integer key's row lies, and, for changes that may use the
 *	  caches, copies every row (fundrecs_lookup.c reads them).
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs_rules_int.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/heaptoast.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "utils/array.h"
#include "storage/bufmgr.h"
#include "storage/sinval.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

#include "fundrecs_compat.h"

#include <sys/mman.h>

/*
 * Row maps.  A lookup read at random keys over many more rows than its cache
 * keeps pays a descent of its key index for most changes.  Once a rule's
 * index reads reach a sixty-fourth of the lookup's rows, one scan of its heap
 * (through the same snapshot) records where each key's row lies; a lookup
 * then reads that one tuple.  The map only says where to look: a tuple is
 * used when it is visible to the change's snapshot and holds the key
 * (a key has at most one visible row), so rows changed, added or moved since
 * the scan are found through the index as before.  When the index keeps
 * finding rows the map lacks, the heap is read again; a rewrite of the heap
 * (VACUUM FULL, CLUSTER) drops the map.
 *
 * When the change whose lookup builds the map may use the caches, the scan
 * also copies each row: the map is then the whole lookup as of that change,
 * and so as of every change that may use the caches until they start again
 * (the rule of fundrecs_asof.c: between two such changes no transaction
 * that changed a catalog, the lookup among them, committed; and the caches,
 * this map with them, start again when one does).  Those changes find their
 * row in the map (by key in an array when the keys are dense enough, else in
 * the hash table), or know there is none, without opening the lookup.  The
 * other changes are given rule sets of their own (fundrecs_ruleset.c), whose
 * maps hold places alone.
 *
 * The map counts against the rule's share of lookup_cache_bytes: a quarter
 * of it for the places alone, half of it with the copies (the lookup's size
 * on disk tells beforehand whether they fit); over that, the places alone,
 * or no map.
 */
typedef struct RowMapEntry
{
	int64		key;
	MinimalTuple copy;			/* when rowmap_copied (tid: invalid) */
	ItemPointerData tid;
	char		status;
} RowMapEntry;

static inline uint32
rowmap_hash_key(int64 key)
{
	return murmurhash32((uint32) key ^ murmurhash32((uint32) ((uint64) key >> 32)));
}

#define SH_PREFIX rowmap
#define SH_ELEMENT_TYPE RowMapEntry
#define SH_KEY_TYPE int64
#define SH_KEY key
#define SH_HASH_KEY(tb, k) rowmap_hash_key(k)
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

#define ROWMAP_MIN_READS 1024

/* The copies are packed in blocks of this size (a larger row has its own). */
#define ROWCOPY_BLOCK ((Size) 1024 * 1024)

/* An integer key's value. */
static inline int64
int_key_value(const FrRule *rule, Datum d)
{
	if (rule->key_typlen[0] == 8)
		return DatumGetInt64(d);
	if (rule->key_typlen[0] == 4)
		return DatumGetInt32(d);
	return DatumGetInt16(d);
}

static void
rowmap_drop(FrRuleState *st)
{
	if (st->rowmap_cxt != NULL)
		MemoryContextReset(st->rowmap_cxt);
	st->rowmap = NULL;
	st->index_reads = 0;
	st->rowmap_threshold = 0;
	st->rowmap_copied = false;
	st->rowdirect = NULL;
	st->rowdirect_min = st->rowdirect_len = 0;
	st->rowmap_desc = NULL;
	st->copy_next = NULL;
	st->copy_free = 0;
	st->copy_huge = false;
	st->regions = NULL;
	st->rowmap_bytes = 0;
}

/* Has the rule read its index often enough, for its lookup's size, to map the heap? */
bool
fr_rowmap_wanted(FrRuleSet *rs, FrRuleState *st, Relation rel)
{
	const FrRule *rule = st->rule;

	if (!rule->int_key || st->rowmap_refused || fr_cache_budget <= 0 ||
		st->index_reads < ROWMAP_MIN_READS)
		return false;

	/*
	 * The lookup's size, read once per map: a table never analyzed is sized
	 * from its file, which costs a system call.
	 */
	if (st->rowmap_threshold == 0)
	{
		double		rows = rel->rd_rel->reltuples;

		if (rows <= 0)
			rows = (double) RelationGetNumberOfBlocks(rel) * 32;
		st->rowmap_threshold = (long) Max(rows / 64, ROWMAP_MIN_READS);
	}
	return st->index_reads >= st->rowmap_threshold;
}

/*
 * Large maps are read at random, one row per change: their copies and key
 * array are mapped apart in regions of whole 2 MB pages, which the kernel
 * is asked to back with huge pages (MADV_HUGEPAGE), so that a lookup does
 * not also miss the TLB.  The regions are unmapped when the map's context
 * is reset or deleted.
 */
#define HUGE_PAGE ((Size) 2 * 1024 * 1024)
#define ROWCOPY_REGION (2 * HUGE_PAGE)
#define HUGE_MAP_BYTES ((Size) 8 * 1024 * 1024)

typedef struct RowRegion
{
	struct RowRegion *next;
	char	   *base;
	Size		len;
} RowRegion;

typedef struct RowRegions
{
	MemoryContextCallback callback;
	RowRegion  *head;
} RowRegions;

static void
row_regions_unmap(void *arg)
{
	RowRegions *rr = (RowRegions *) arg;

	for (RowRegion *r = rr->head; r != NULL; r = r->next)
		(void) munmap(r->base, r->len);
	rr->head = NULL;
}

/* len bytes (zeroed) in a region of the map (see above). */
static void *
rowmap_region(FrRuleState *st, Size len)
{
	Size		size = TYPEALIGN(HUGE_PAGE, len);
	char	   *p;
	char	   *base;
	RowRegion  *r;

	if (st->regions == NULL)
	{
		st->regions = MemoryContextAllocZero(st->rowmap_cxt, sizeof(RowRegions));
		st->regions->callback.func = row_regions_unmap;
		st->regions->callback.arg = st->regions;
		MemoryContextRegisterResetCallback(st->rowmap_cxt, &st->regions->callback);
	}
	r = MemoryContextAlloc(st->rowmap_cxt, sizeof(RowRegion));
	p = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed on a request of size %zu for the row map of enrichment rule \"%s\".",
						   size, st->rule->name)));
	/* Whole huge pages: the slack before and after is given back. */
	base = (char *) TYPEALIGN(HUGE_PAGE, p);
	if (base > p)
		(void) munmap(p, base - p);
	if (base + size < p + size + HUGE_PAGE)
		(void) munmap(base + size, p + HUGE_PAGE - base);
#ifdef MADV_HUGEPAGE
	(void) madvise(base, size, MADV_HUGEPAGE);
#endif
	r->base = base;
	r->len = size;
	r->next = st->regions->head;
	st->regions->head = r;
	st->rowmap_bytes += size;
	return base;
}

/* A copy of tuple (its external values read in), in the map's blocks. */
static MinimalTuple
rowmap_copy(FrRuleState *st, HeapTuple tuple, TupleDesc desc)
{
	HeapTuple	flat = HeapTupleHasExternal(tuple) ? toast_flatten_tuple(tuple, desc) : tuple;
	Size		len = flat->t_len - MINIMAL_TUPLE_OFFSET;
	Size		space = MAXALIGN(len);
	MinimalTuple copy;

	if (space > ROWCOPY_BLOCK / 8)
	{
		copy = MemoryContextAlloc(st->rowmap_cxt, space);
		st->rowmap_bytes += space;
	}
	else
	{
		if (space > st->copy_free && st->copy_huge)
		{
			st->copy_next = rowmap_region(st, ROWCOPY_REGION);
			st->copy_free = ROWCOPY_REGION;
		}
		else if (space > st->copy_free)
		{
			st->copy_next = MemoryContextAlloc(st->rowmap_cxt, ROWCOPY_BLOCK);
			st->copy_free = ROWCOPY_BLOCK;
			st->rowmap_bytes += ROWCOPY_BLOCK;
		}
		copy = (MinimalTuple) st->copy_next;
		st->copy_next += space;
		st->copy_free -= space;
	}
	memcpy(copy, (char *) flat->t_data + MINIMAL_TUPLE_OFFSET, len);
	copy->t_len = len;
	if (flat != tuple)
		heap_freetuple(flat);
	return copy;
}

/* A copied row and its key, as the scan finds them (rowmap_scan). */
typedef struct RowCopyRef
{
	int64		key;
	MinimalTuple copy;
} RowCopyRef;

/*
 * The copies found by the scan (n of them, keys lo..hi) into the map: an
 * array indexed by key when the keys are dense enough (serial keys: one
 * slot per row, no hashing), else the hash table.
 */
static void
rowmap_index_copies(FrRuleState *st, RowCopyRef *refs, int64 n, int64 lo, int64 hi)
{
	if (n > 0 && (uint64) (hi - lo) < (uint64) n * 2 + 1024)
	{
		st->rowdirect_min = lo;
		st->rowdirect_len = hi - lo + 1;
		if (sizeof(MinimalTuple) * st->rowdirect_len >= HUGE_MAP_BYTES / 2)
			st->rowdirect = rowmap_region(st, sizeof(MinimalTuple) * st->rowdirect_len);
		else
		{
			st->rowdirect = MemoryContextAllocZero(st->rowmap_cxt,
												   sizeof(MinimalTuple) * st->rowdirect_len);
			st->rowmap_bytes += sizeof(MinimalTuple) * st->rowdirect_len;
		}
		for (int64 i = 0; i < n; i++)
			st->rowdirect[refs[i].key - lo] = refs[i].copy;
		return;
	}
	for (int64 i = 0; i < n; i++)
	{
		bool		found;
		RowMapEntry *m = rowmap_insert(st->rowmap, refs[i].key, &found);

		m->copy = refs[i].copy;
		ItemPointerSetInvalid(&m->tid);
	}
	st->rowmap_bytes += (Size) st->rowmap->size * sizeof(RowMapEntry);
}

/*
 * Reads where each key's row lies, with one scan of the heap; with copy,
 * the rows too (see above).  False when it did not fit.
 */
static bool
rowmap_scan(FrRuleSet *rs, FrRuleState *st, Relation rel, Snapshot snapshot, bool copy)
{
	const FrRule *rule = st->rule;
	TupleDesc	desc = RelationGetDescr(rel);
	SysScanDesc scan;
	HeapTuple	tuple;
	double		rows = Max(rel->rd_rel->reltuples, 1024);
	Size		share = (Size) (fr_cache_budget / Max(rs->nrules, 1));
	Size		limit = copy ? share / 2 : share / 4;
	RowCopyRef *refs = NULL;
	int64		nrefs = 0;
	int64		maxrefs = 0;
	int64		lo = PG_INT64_MAX;
	int64		hi = PG_INT64_MIN;

	rowmap_drop(st);
	rows = Min(rows * 1.1, (double) limit / sizeof(RowMapEntry) / 2);
	st->rowmap_file = FR_REL_FILE_NUMBER(rel);
	st->rowmap_nblocks = RelationGetNumberOfBlocks(rel);
	st->rowmap_inval_count = SharedInvalidMessageCounter;
	if (copy)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(st->rowmap_cxt);

		st->rowmap_desc = CreateTupleDescCopy(desc);
		MemoryContextSwitchTo(oldcxt);
		st->copy_huge = (double) st->rowmap_nblocks * BLCKSZ >= HUGE_MAP_BYTES;
		maxrefs = (int64) Max(rows, 1024);
		refs = MemoryContextAllocExtended(st->rowmap_cxt, sizeof(RowCopyRef) * maxrefs,
										  MCXT_ALLOC_HUGE);
	}
	else
		st->rowmap = rowmap_create(st->rowmap_cxt, (uint32) Max(rows, 1024), NULL);
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = fr_heap_attr(tuple, rule->key_attnums[0], desc, &isnull);
		int64		id;
		Size		used;

		if (isnull)
			continue;
		id = int_key_value(rule, d);
		if (copy)
		{
			if (nrefs == maxrefs)
			{
				maxrefs *= 2;
				refs = repalloc_huge(refs, sizeof(RowCopyRef) * maxrefs);
			}
			refs[nrefs].key = id;
			refs[nrefs++].copy = rowmap_copy(st, tuple, desc);
			lo = Min(lo, id);
			hi = Max(hi, id);
			used = st->rowmap_bytes + sizeof(RowCopyRef) * maxrefs;
		}
		else
		{
			bool		found;
			RowMapEntry *m = rowmap_insert(st->rowmap, id, &found);

			m->tid = tuple->t_self;
			m->copy = NULL;
			used = (Size) st->rowmap->size * sizeof(RowMapEntry);
		}
		if (used > limit)
		{
			systable_endscan(scan);
			rowmap_drop(st);
			return false;
		}
	}
	systable_endscan(scan);
	if (copy)
	{
		if ((uint64) (hi - lo) >= (uint64) nrefs * 2 + 1024)
			st->rowmap = rowmap_create(st->rowmap_cxt, (uint32) Max(nrefs * 1.1, 1024), NULL);
		rowmap_index_copies(st, refs, nrefs, lo, hi);
		pfree(refs);
		if (st->rowmap_bytes > limit)
		{
			rowmap_drop(st);
			return false;
		}
	}
	else
		st->rowmap_bytes = (Size) st->rowmap->size * sizeof(RowMapEntry);
	st->rowmap_copied = copy;
	fr_rowmaps_read++;
	if (copy)
		fr_rowmaps_copied++;
	return true;
}

/*
 * Maps the heap, with the rows when copy (the change may use the caches)
 * and the lookup's file fits in half the share.
 */
void
fr_rowmap_build(FrRuleSet *rs, FrRuleState *st, Relation rel, Snapshot snapshot, bool copy)
{
	Size		share = (Size) (fr_cache_budget / Max(rs->nrules, 1));

	if (st->rowmap_cxt == NULL)
		st->rowmap_cxt = AllocSetContextCreate(rs->cxt, "fundrecs rule row map",
											   ALLOCSET_DEFAULT_SIZES);
	if (copy &&
		(double) RelationGetNumberOfBlocks(rel) * BLCKSZ +
		Max(rel->rd_rel->reltuples, 1024) * 2.2 * sizeof(RowMapEntry) > share / 2)
		copy = false;
	if (!(copy && rowmap_scan(rs, st, rel, snapshot, true)) &&
		!rowmap_scan(rs, st, rel, snapshot, false))
	{
		st->rowmap_refused = true;
		return;
	}

	/*
	 * Misses cost less from now on: the cache's admission is judged on the
	 * lookups so far (at least a thousand) rather than at the window's end.
	 */
	fr_admit_judge(st);
}

/* The copy of key's row, NULL if the lookup has none (rowmap_copied). */
static inline MinimalTuple
rowmap_copy_of(FrRuleState *st, int64 id)
{
	RowMapEntry *m;

	if (st->rowdirect != NULL)
		return (uint64) (id - st->rowdirect_min) < (uint64) st->rowdirect_len ?
			st->rowdirect[id - st->rowdirect_min] : NULL;
	m = rowmap_lookup(st->rowmap, id);
	return m != NULL ? m->copy : NULL;
}

/*
 * The row of key through the map: its tuple in *tuple, pinned in *buf, or
 * false to ask the index.
 */
bool
fr_rowmap_fetch(FrRuleState *st, Relation rel, Datum key, Snapshot snapshot,
				HeapTuple tuple, Buffer *buf)
{
	const FrRule *rule = st->rule;
	int64		id = int_key_value(rule, key);
	RowMapEntry *m;
	bool		isnull;
	Datum		d;

	/* Not a map of copies (another change's: see rowmap_build's callers) */
	if (st->rowmap_copied)
		return false;
	if (FR_REL_FILE_NUMBER(rel) != st->rowmap_file)
	{
		rowmap_drop(st);
		return false;
	}
	m = rowmap_lookup(st->rowmap, id);
	if (m == NULL)
		return false;
	tuple->t_self = m->tid;

	/*
	 * VACUUM may have cut pages off the heap's end (our lock keeps it from
	 * doing so now).  It tells every backend before it does (an smgr
	 * invalidation, taken when we locked the table): the size is read again
	 * only when invalidations came since it was last read.
	 */
	if (SharedInvalidMessageCounter != st->rowmap_inval_count)
	{
		st->rowmap_nblocks = RelationGetNumberOfBlocks(rel);
		st->rowmap_inval_count = SharedInvalidMessageCounter;
	}
	if (ItemPointerGetBlockNumber(&tuple->t_self) >= st->rowmap_nblocks)
		return false;
	if (!heap_fetch(rel, snapshot, tuple, buf, true))
	{
		if (BufferIsValid(*buf))
			ReleaseBuffer(*buf);
		*buf = InvalidBuffer;
		return false;
	}
	d = fr_heap_attr(tuple, rule->key_attnums[0], RelationGetDescr(rel), &isnull);
	if (isnull || int_key_value(rule, d) != id)
	{
		ReleaseBuffer(*buf);
		*buf = InvalidBuffer;
		return false;
	}
	fr_lookups_by_rowmap++;
	return true;
}

/*
 * The row of key from the map's copies (rowmap_copied, and the change may
 * use the caches): in *tuple, or false when the lookup has none.
 */
bool
fr_rowmap_copied_row(FrRuleState *st, Datum key, HeapTuple tuple)
{
	MinimalTuple copy = rowmap_copy_of(st, int_key_value(st->rule, key));

	fr_lookups_by_rowmap++;
	if (copy == NULL)
		return false;
	/* A row of a few dozen bytes often spans two cache lines: ask for both. */
	__builtin_prefetch((char *) copy + 64);
	tuple->t_len = copy->t_len + MINIMAL_TUPLE_OFFSET;
	tuple->t_data = (HeapTupleHeader) ((char *) copy - MINIMAL_TUPLE_OFFSET);
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_tableOid = st->rule->lookup;
	return true;
}
