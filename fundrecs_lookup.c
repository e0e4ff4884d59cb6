/*-------------------------------------------------------------------------
 *
 * fundrecs_lookup.c
 *	  The rules' lookups: a rule's lookup row read as of the change (through
 *	  the key index at its current file, or a row map), and its cache
 *	  (integer keys by index in a dense array, sampled admission, bounded by
 *	  lookup_cache_bytes), with the figures logged at a session's end.
 *	  fundrecs_enrich.c applies the rules with them.
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


/* The key's bytes, for the cache: equal bytes mean equal keys. */
static void
key_bytes(const FrRule *rule, Datum *key, StringInfo buf)
{
	for (int k = 0; k < rule->nkeys; k++)
	{
		if (rule->key_typbyval[k])
			appendBinaryStringInfo(buf, (char *) &key[k], sizeof(Datum));
		else if (rule->key_typlen[k] > 0)
			appendBinaryStringInfo(buf, DatumGetPointer(key[k]), rule->key_typlen[k]);
		else if (rule->key_typlen[k] == -1)
		{
			struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(key[k]));
			int32		len = VARSIZE_ANY_EXHDR(v);

			appendBinaryStringInfo(buf, (char *) &len, sizeof(len));
			appendBinaryStringInfo(buf, VARDATA_ANY(v), len);
		}
		else
			appendBinaryStringInfo(buf, DatumGetCString(key[k]),
								   strlen(DatumGetCString(key[k])) + 1);
	}
}

uint32
fr_lookup_key_hash(const void *key, Size keysize)
{
	const LookupKey *k = key;

	return hash_bytes((const unsigned char *) k->bytes, k->len);
}

int
fr_lookup_key_match(const void *a, const void *b, Size keysize)
{
	const LookupKey *x = a;
	const LookupKey *y = b;

	return x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0 ? 0 : 1;
}

/*
 * The lookup caches' budget (the plugin option lookup_cache_bytes, shared by
 * the rules of a table) and what they did this session, logged at its end.
 */
static int64 cache_budget = FR_LOOKUP_CACHE_DEFAULT;
static uint64 lookups_cached_hits = 0;
static uint64 lookups_read = 0;
static uint64 caches_restarted = 0;
static uint64 lookups_by_rowmap = 0;
static uint64 rowmaps_read = 0;
static uint64 rowmaps_copied = 0;

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

static void admit_judge(FrRuleState *st);

/* Has the rule read its index often enough, for its lookup's size, to map the heap? */
static bool
rowmap_wanted(FrRuleSet *rs, FrRuleState *st, Relation rel)
{
	const FrRule *rule = st->rule;

	if (!rule->int_key || st->rowmap_refused || cache_budget <= 0 ||
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
	Size		share = (Size) (cache_budget / Max(rs->nrules, 1));
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
	rowmaps_read++;
	if (copy)
		rowmaps_copied++;
	return true;
}

/*
 * Maps the heap, with the rows when copy (the change may use the caches)
 * and the lookup's file fits in half the share.
 */
static void
rowmap_build(FrRuleSet *rs, FrRuleState *st, Relation rel, Snapshot snapshot, bool copy)
{
	Size		share = (Size) (cache_budget / Max(rs->nrules, 1));

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
	admit_judge(st);
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
static bool
rowmap_fetch(FrRuleState *st, Relation rel, Datum key, Snapshot snapshot,
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
	lookups_by_rowmap++;
	return true;
}

/*
 * The row of key from the map's copies (rowmap_copied, and the change may
 * use the caches): in *tuple, or false when the lookup has none.
 */
static bool
rowmap_copied_row(FrRuleState *st, Datum key, HeapTuple tuple)
{
	MinimalTuple copy = rowmap_copy_of(st, int_key_value(st->rule, key));

	lookups_by_rowmap++;
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

/*
 * A lookup row's arrays (values, units, nulls, scales) are one block, its
 * JSON (and, once known, its route: entry_keep_route) after them: a row
 * answered from the cache reads the entry and that block alone.
 */
#define ENTRY_ARRAYS_SIZE(nout) \
	MAXALIGN((sizeof(Datum) + sizeof(int64) + sizeof(bool) + sizeof(int8)) * Max((nout), 1))

static void
entry_layout(LookupEntry *e, void *block, int nout)
{
	char	   *space = block;
	int			n = Max(nout, 1);

	e->values = (Datum *) space;
	e->units = (int64 *) (space + sizeof(Datum) * n);
	e->nulls = (bool *) (space + (sizeof(Datum) + sizeof(int64)) * n);
	e->scales = (int8 *) (space + (sizeof(Datum) + sizeof(int64) + sizeof(bool)) * n);
}

/* The route of a cached lookup row, kept in the row's block (see above). */
void
fr_lookup_keep_route(FrRuleState *st, LookupEntry *e, const char *route, int route_len)
{
	Size		arrays = ENTRY_ARRAYS_SIZE(st->rule->nout);
	char	   *block = MemoryContextAlloc(st->cache_cxt,
										   arrays + route_len + 1 + e->json_len + 1);
	char	   *r = block + arrays;

	memcpy(block, e->values, arrays);
	entry_layout(e, block, st->rule->nout);
	memcpy(r, route, route_len + 1);
	memcpy(r + route_len + 1, e->json, e->json_len + 1);
	e->route_json = r;
	e->route_len = route_len;
	e->json = r + route_len + 1;
}

/* Where lookup rows are formatted (TopMemoryContext): see lookup_direct. */
static StringInfoData json_scratch;
static char *scratch_arrays;
static Size scratch_arrays_size;
static Datum *scratch_values;
static bool *scratch_nulls;
static int	scratch_natts;

static void
scratch_grow(Size arrays, int natts)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

	/* Kept at its length (not initStringInfo's 1 kB). */
	if (json_scratch.data == NULL)
		initStringInfo(&json_scratch);
	if (arrays > scratch_arrays_size)
	{
		if (scratch_arrays != NULL)
			pfree(scratch_arrays);
		scratch_arrays = palloc(arrays);
		scratch_arrays_size = arrays;
	}
	if (natts > scratch_natts)
	{
		if (scratch_values != NULL)
		{
			pfree(scratch_values);
			pfree(scratch_nulls);
		}
		scratch_values = palloc(sizeof(Datum) * natts);
		scratch_nulls = palloc(sizeof(bool) * natts);
		scratch_natts = natts;
	}
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Reads the lookup row of key into e (in the current memory context);
 * cacheable: the change may use the caches (and so the map's copies).
 */
static void
lookup_direct(FrRuleSet *rs, FrRuleState *st, Datum *key, Snapshot snapshot, bool cacheable,
			  LookupEntry *e)
{
	const FrRule *rule = st->rule;
	Relation	rel = NULL;
	TupleDesc	desc;
	Relation	index = NULL;
	ScanKeyData skeys[INDEX_MAX_KEYS];
	SysScanDesc scan = NULL;
	HeapTuple	tuple;
	HeapTupleData mapped;
	Buffer		buf = InvalidBuffer;
	StringInfo	json = &json_scratch;

	if (!(cacheable && st->rowmap_copied))
	{
		/*
		 * Dropped since the change (fundrecs' event triggers refuse it; a
		 * superuser may force it): this rule's error, not the slot's.
		 */
		if (!fr_relation_exists_now(rule->lookup))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("lookup table (OID %u) of enrichment rule \"%s\" was dropped after this change was written",
							rule->lookup, rule->name)));
		rel = table_open(rule->lookup, AccessShareLock);

		/*
		 * Not while a streamed transaction is decoded: a tuple read outside
		 * the systable functions would miss their check for its concurrent
		 * abort.
		 */
		if (rule->int_key && !TransactionIdIsValid(CheckXidAlive) &&
			rowmap_wanted(rs, st, rel))
			rowmap_build(rs, st, rel, snapshot, cacheable);
	}

	if (cacheable && st->rowmap_copied)
	{
		/* The whole lookup as of this change, in memory. */
		tuple = rowmap_copied_row(st, key[0], &mapped) ? &mapped : NULL;
		desc = st->rowmap_desc;
	}

	/*
	 * NULL: the catalog snapshot, as systable_beginscan reads it (historic
	 * while decoding)
	 */
	else if ((st->rowmap != NULL || st->rowdirect != NULL) &&
			 !TransactionIdIsValid(CheckXidAlive) &&
			 rowmap_fetch(st, rel, key[0], snapshot ? snapshot : GetCatalogSnapshot(rule->lookup),
						  &mapped, &buf))
	{
		tuple = &mapped;
		desc = RelationGetDescr(rel);
	}
	else
	{
		desc = RelationGetDescr(rel);
		/* The key index at its current file (REINDEX, VACUUM FULL, CLUSTER). */
		index = fr_index_open_current(rule->lookup_index);
		if (index == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the primary key of lookup table \"%s\" of enrichment rule \"%s\" was dropped after this change was written",
							RelationGetRelationName(rel), rule->name)));

		for (int k = 0; k < rule->nkeys; k++)
			ScanKeyEntryInitializeWithInfo(&skeys[k], 0, rule->key_attnums[k],
										   BTEqualStrategyNumber, InvalidOid, rule->key_coll[k],
										   &rule->key_eq[k], key[k]);
		scan = systable_beginscan(rel, rule->lookup_index, true, snapshot, rule->nkeys, skeys);
		tuple = systable_getnext(scan);
		/* A row the map lacks, if there is one (added or moved since) */
		if (HeapTupleIsValid(tuple))
			st->index_reads++;
	}
	e->found = HeapTupleIsValid(tuple);
	e->kept = false;

	/*
	 * A row found is formatted in scratch space (TopMemoryContext, grown as
	 * needed): its arrays, the deformed row and the JSON, then copied into
	 * one block.
	 */
	if (e->found && (scratch_arrays_size < ENTRY_ARRAYS_SIZE(rule->nout) ||
					 scratch_natts < desc->natts))
		scratch_grow(ENTRY_ARRAYS_SIZE(rule->nout), desc->natts);
	entry_layout(e, e->found ? scratch_arrays : palloc(ENTRY_ARRAYS_SIZE(rule->nout)),
				 rule->nout);
	memset(e->units, 0, sizeof(int64) * Max(rule->nout, 1));
	memset(e->scales, -1, sizeof(int8) * Max(rule->nout, 1));
	if (e->found)
	{
		Datum	   *v = scratch_values;
		bool	   *n = scratch_nulls;
		char	   *block;

		heap_deform_tuple(tuple, desc, v, n);
		resetStringInfo(json);
		for (int i = 0; i < rule->nout; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, rule->out_attnums[i] - 1);
			FrColumn   *col = &rs->cols[rule->first_col + i];

			e->nulls[i] = n[rule->out_attnums[i] - 1];
			if (e->nulls[i])
				e->values[i] = (Datum) 0;
			else if (att->attlen == -1)
			{
				/*
				 * Kept with a 4-byte header, as functions want it: a short
				 * one would be copied on every use.
				 */
				e->values[i] = PointerGetDatum(PG_DETOAST_DATUM_COPY(v[rule->out_attnums[i] - 1]));
				if (att->atttypid == NUMERICOID)
				{
					/* One output for both: the exact units and the JSON. */
					int			scale;
					char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, e->values[i]));

					if (fr_parse_exact_decimal(text, &e->units[i], &scale) && scale <= 18)
						e->scales[i] = (int8) scale;
					fr_append_bytes(json, col->json_name - 1, col->json_name_len + 1);
					fr_json_append_number_text(json, text);
					pfree(text);
					continue;
				}
			}
			else
				e->values[i] = datumCopy(v[rule->out_attnums[i] - 1], att->attbyval, att->attlen);
			fr_append_bytes(json, col->json_name - 1, col->json_name_len + 1);
			if (e->nulls[i])
				fr_append_lit(json, "null");
			else
				fr_json_append_value(json, col, e->values[i]);
		}
		/* The JSON after the arrays, in their block. */
		block = palloc(ENTRY_ARRAYS_SIZE(rule->nout) + json->len + 1);
		memcpy(block, scratch_arrays, ENTRY_ARRAYS_SIZE(rule->nout));
		entry_layout(e, block, rule->nout);
		e->json = block + ENTRY_ARRAYS_SIZE(rule->nout);
		memcpy(e->json, json->data, json->len + 1);
		e->json_len = json->len;
	}
	else
	{
		for (int i = 0; i < rule->nout; i++)
			e->nulls[i] = true;
		e->json = rule->miss_json;
		e->json_len = rule->miss_json_len;
	}
	e->route_json = NULL;
	if (scan != NULL)
	{
		systable_endscan(scan);
		index_close(index, AccessShareLock);
	}
	if (BufferIsValid(buf))
		ReleaseBuffer(buf);
	if (rel != NULL)
		table_close(rel, AccessShareLock);
}

/* Fills a new cache entry, in the cache's memory. */
static void
lookup_into(FrRuleSet *rs, FrRuleState *st, Datum *key, Snapshot snapshot, LookupEntry *e,
			StringInfo keybytes)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(st->cache_cxt);
	char	   *copy = palloc(keybytes->len);

	memcpy(copy, keybytes->data, keybytes->len);
	lookup_direct(rs, st, key, snapshot, true, e);
	e->key.bytes = copy;
	e->kept = true;
	MemoryContextSwitchTo(oldcxt);
}

/*
 * A hash table keyed by LookupKey (bytes), in *cxt: made under parent on
 * first use, else reset (which frees the table before).
 */
HTAB *
fr_bytes_hash_start(const char *name, Size entrysize, long nelem, MemoryContext parent,
					MemoryContext *cxt)
{
	HASHCTL		ctl;

	if (*cxt == NULL)
		*cxt = AllocSetContextCreate(parent, "fundrecs rule cache", ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(*cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(LookupKey);
	ctl.entrysize = entrysize;
	ctl.hash = fr_lookup_key_hash;
	ctl.match = fr_lookup_key_match;
	ctl.hcxt = *cxt;
	return hash_create(name, nelem, &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}


/* A cache is measured every this many entries (MemoryContextMemAllocated walks it). */
#define CACHE_CHECK_EVERY 1024

void
fr_rules_log_cache_stats(void)
{
	uint64		total = lookups_cached_hits + lookups_read;

	if (total > 0)
		ereport(LOG,
				(errmsg("fundrecs_decoder: enrichment lookups: %llu, %llu answered by the caches (%.1f%%), %llu read from lookup tables (%llu through row maps, read %llu times, %llu of them with the rows); caches full and started again %llu times (lookup_cache_bytes %lld)",
						(unsigned long long) total, (unsigned long long) lookups_cached_hits,
						100.0 * lookups_cached_hits / total, (unsigned long long) lookups_read,
						(unsigned long long) lookups_by_rowmap, (unsigned long long) rowmaps_read,
						(unsigned long long) rowmaps_copied,
						(unsigned long long) caches_restarted, (long long) cache_budget)));
	lookups_cached_hits = lookups_read = caches_restarted = 0;
	lookups_by_rowmap = rowmaps_read = rowmaps_copied = 0;
}

#define ADMIT_WINDOW 65536

/*
 * A cache that answers few of its lookups (random keys over a large lookup)
 * costs more than it saves: then only a sample of the misses is kept (those
 * whose key hashes to a multiple of 16, then 256), so keys that come again
 * still end up cached and the rest pay no insertion; one that answers most
 * keeps every miss again.  Judged over each window of lookups.
 */
static void
admit_judge(FrRuleState *st)
{
	if (st->window_lookups > 0 && st->window_hits * 10 < st->window_lookups)
		st->admit_shift = Min(st->admit_shift + 4, 8);
	else if (st->window_hits * 2 > st->window_lookups)
		st->admit_shift = Max(st->admit_shift - 4, 0);
	st->window_lookups = st->window_hits = 0;
}

/* A rule's lookup cache, new or started again when over its share of the budget. */
static void
rule_cache_start(FrRuleSet *rs, FrRuleState *st)
{
	MemoryContext oldcxt;

	if (st->cache != NULL)
	{
		caches_restarted++;
		admit_judge(st);
	}
	st->next_check = CACHE_CHECK_EVERY;
	st->cache_full = false;

	st->cache = fr_bytes_hash_start("fundrecs rule lookups", sizeof(LookupEntry), 1024,
									rs->cxt, &st->cache_cxt);
	st->cache_entries = 0;
	st->last = NULL;
	st->dense = NULL;
	st->dense_bits = NULL;
	st->dense_size = 0;
	oldcxt = MemoryContextSwitchTo(st->cache_cxt);
	initStringInfo(&st->keybuf);
	MemoryContextSwitchTo(oldcxt);
}

static LookupEntry *lookup_hashed(FrRuleSet *rs, FrRuleState *st, Datum *key, Snapshot snapshot,
								  bool absent);
static void remember_dense(FrRuleState *st, int64 id, LookupEntry *e);

LookupEntry *
fr_lookup(FrRuleSet *rs, FrRuleState *st, Datum *key, Snapshot snapshot, bool cacheable)
{
	const FrRule *rule = st->rule;
	LookupEntry *e;

	if (!cacheable)
	{
		e = palloc0(sizeof(LookupEntry));
		lookup_direct(rs, st, key, snapshot, false, e);
		return e;
	}
	if (st->cache == NULL || st->cache_full)
		rule_cache_start(rs, st);

	/*
	 * Judged every 65,536 lookups too, not only when full (see
	 * rule_cache_start).
	 */
	if (++st->window_lookups >= ADMIT_WINDOW)
		admit_judge(st);

	/*
	 * Integer keys, usually small and dense: found by index, without hashing,
	 * as the products are.
	 */
	if (rule->int_key)
	{
		int64		id;

		if (rule->key_typlen[0] == 8)
			id = DatumGetInt64(key[0]);
		else if (rule->key_typlen[0] == 4)
			id = DatumGetInt32(key[0]);
		else
			id = DatumGetInt16(key[0]);

		if ((e = fr_dense_get(st, id)) != NULL)
		{
			st->window_hits++;
			lookups_cached_hits++;
			return e;
		}

		/*
		 * Every kept entry of a key below FR_DENSE_KEYS is in dense (it is
		 * put there below, the first time it is looked up): a key that is not
		 * is not in the hash table either.
		 */
		e = lookup_hashed(rs, st, key, snapshot, id >= 0 && id < FR_DENSE_KEYS);
		/* Not a row kept only for this change (sampled admission). */
		if (id >= 0 && id < FR_DENSE_KEYS && e == st->last)
			remember_dense(st, id, e);
		return e;
	}
	return lookup_hashed(rs, st, key, snapshot, false);
}

/* Sets dense[id], growing the array to hold it. */
static void
remember_dense(FrRuleState *st, int64 id, LookupEntry *e)
{
	if (id >= st->dense_size)
	{
		int64		size = Max(st->dense_size, 1024);

		while (size <= id)
			size *= 2;
		size = Min(size, FR_DENSE_KEYS);
		if (st->dense == NULL)
		{
			st->dense = MemoryContextAlloc(st->cache_cxt, sizeof(LookupEntry *) * size);
			st->dense_bits = MemoryContextAllocZero(st->cache_cxt, size / 8);
		}
		else
		{
			/* Slots are read only where their bit is set. */
			st->dense = repalloc(st->dense, sizeof(LookupEntry *) * size);
			st->dense_bits = repalloc(st->dense_bits, size / 8);
			memset((char *) st->dense_bits + st->dense_size / 8, 0,
				   (size - st->dense_size) / 8);
		}
		st->dense_size = size;
	}
	st->dense[id] = e;
	st->dense_bits[id >> 6] |= UINT64CONST(1) << (id & 63);
}

/*
 * A lookup through the cache's hash table; absent: the caller knows the key
 * is not there (see lookup), only to be read and perhaps entered.
 */
static LookupEntry *
lookup_hashed(FrRuleSet *rs, FrRuleState *st, Datum *key, Snapshot snapshot, bool absent)
{
	const FrRule *rule = st->rule;
	StringInfoData buf;
	LookupKey	k;
	LookupEntry *e;
	bool		found;
	uint32		hash;

	/* The key's bytes, in a scratch buffer; copied when entered. */
	buf = st->keybuf;
	resetStringInfo(&buf);
	key_bytes(rule, key, &buf);
	st->keybuf = buf;
	if (!absent && st->last != NULL && st->last->key.len == buf.len &&
		memcmp(st->last->key.bytes, buf.data, buf.len) == 0)
	{
		st->window_hits++;
		lookups_cached_hits++;
		return st->last;
	}
	k.bytes = buf.data;
	k.len = buf.len;
	hash = fr_lookup_key_hash(&k, sizeof(LookupKey));
	e = absent ? NULL : hash_search_with_hash_value(st->cache, &k, hash, HASH_FIND, &found);
	if (e != NULL)
	{
		st->window_hits++;
		lookups_cached_hits++;
		st->last = e;
		return e;
	}
	lookups_read++;
	/* Not admitted: read for this change alone (freed with it). */
	if (st->admit_shift > 0 && (hash & ((1U << st->admit_shift) - 1)) != 0)
	{
		e = palloc0(sizeof(LookupEntry));
		lookup_direct(rs, st, key, snapshot, true, e);
		return e;
	}
	e = hash_search_with_hash_value(st->cache, &k, hash, HASH_ENTER, &found);

	PG_TRY();
	{
		lookup_into(rs, st, key, snapshot, e, &buf);
	}
	PG_CATCH();
	{
		hash_search(st->cache, &k, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (++st->cache_entries >= st->next_check)
	{
		st->next_check += CACHE_CHECK_EVERY;
		/* The row map's memory comes out of the same share. */
		st->cache_full = (int64) (MemoryContextMemAllocated(st->cache_cxt, true) +
								  st->rowmap_bytes) > cache_budget / Max(rs->nrules, 1);
	}
	st->last = e;
	return e;
}


/* A lookup the caller answered from dense itself (apply_cached): counted. */
void
fr_lookup_count_hit(FrRuleState *st)
{
	if (++st->window_lookups >= ADMIT_WINDOW)
		admit_judge(st);
	st->window_hits++;
	lookups_cached_hits++;
}

/* lookup_cache_bytes of the change being enriched. */
void
fr_lookup_set_budget(int64 bytes)
{
	cache_budget = bytes;
}
