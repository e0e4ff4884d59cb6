/*-------------------------------------------------------------------------
 *
 * fundrecs_lookup.c
 *	  The rules' lookups: a rule's lookup row read as of the change (through
 *	  the key index at its current file, or a row map: fundrecs_rowmap.c),
 *	  and its cache
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
int64		fr_cache_budget = FR_LOOKUP_CACHE_DEFAULT;
static uint64 lookups_cached_hits = 0;
static uint64 lookups_read = 0;
static uint64 caches_restarted = 0;
uint64		fr_lookups_by_rowmap = 0;
uint64		fr_rowmaps_read = 0;
uint64		fr_rowmaps_copied = 0;

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
 * A load's read of key through its lookup's key index (see open_rel): the
 * index and a scan of it opened at the first, the scan started again with
 * each key.  The row stays in st->open_slot until the next read.
 */
static HeapTuple
lookup_open_scan(FrRuleSet *rs, FrRuleState *st, Relation rel, Datum *key, Snapshot snapshot)
{
	const FrRule *rule = st->rule;
	ScanKeyData skeys[INDEX_MAX_KEYS];
	bool		should_free;
	MemoryContext oldcxt = MemoryContextSwitchTo(rs->cxt);

	if (st->open_scan != NULL && st->open_snapshot != snapshot)
	{
		index_endscan(st->open_scan);
		st->open_scan = NULL;
	}
	if (st->open_index == NULL)
	{
		/* The key index at its current file (REINDEX, VACUUM FULL, CLUSTER). */
		st->open_index = fr_index_open_current(rule->lookup_index);
		if (st->open_index == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the primary key of lookup table \"%s\" of enrichment rule \"%s\" was dropped",
							RelationGetRelationName(rel), rule->name)));
		st->open_slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), table_slot_callbacks(rel));
	}
	if (st->open_scan == NULL)
	{
		st->open_scan = fr_index_beginscan(rel, st->open_index, snapshot, rule->nkeys);
		st->open_snapshot = snapshot;
	}
	MemoryContextSwitchTo(oldcxt);

	/* By the index's columns: the rule's keys are its first ones, in order. */
	for (int k = 0; k < rule->nkeys; k++)
		ScanKeyEntryInitializeWithInfo(&skeys[k], 0, k + 1, BTEqualStrategyNumber, InvalidOid,
									   rule->key_coll[k], &rule->key_eq[k], key[k]);
	index_rescan(st->open_scan, skeys, rule->nkeys, NULL, 0);
	if (!index_getnext_slot(st->open_scan, ForwardScanDirection, st->open_slot))
		return NULL;
	return ExecFetchSlotHeapTuple(st->open_slot, false, &should_free);
}

/*
 * Closes what a load's lookups of rs kept open (see open_rel); their locks
 * are held until the transaction ends.
 */
void
fr_lookup_release(FrRuleSet *rs)
{
	if (rs == NULL || rs->state.rules == NULL)
		return;
	for (int r = 0; r < rs->nrules; r++)
	{
		FrRuleState *st = &rs->state.rules[r];

		if (st->open_scan != NULL)
			index_endscan(st->open_scan);
		if (st->open_slot != NULL)
			ExecDropSingleTupleTableSlot(st->open_slot);
		if (st->open_index != NULL)
			index_close(st->open_index, NoLock);
		if (st->open_rel != NULL)
			table_close(st->open_rel, NoLock);
		st->open_scan = NULL;
		st->open_slot = NULL;
		st->open_index = NULL;
		st->open_rel = NULL;
	}
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
	bool		keep = snapshot != NULL && rs->keep_open;	/* see open_rel */

	if (keep && st->open_rel != NULL && !(cacheable && st->rowmap_copied))
		rel = st->open_rel;
	else if (!(cacheable && st->rowmap_copied))
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
		if (keep)
			st->open_rel = rel;

		/*
		 * Not while a streamed transaction is decoded: a tuple read outside
		 * the systable functions would miss their check for its concurrent
		 * abort.
		 */
		if (rule->int_key && !TransactionIdIsValid(CheckXidAlive) &&
			fr_rowmap_wanted(rs, st, rel))
			fr_rowmap_build(rs, st, rel, snapshot, cacheable);
	}

	if (cacheable && st->rowmap_copied)
	{
		/* The whole lookup as of this change, in memory. */
		tuple = fr_rowmap_copied_row(st, key[0], &mapped) ? &mapped : NULL;
		desc = st->rowmap_desc;
	}

	/*
	 * NULL: the catalog snapshot, as systable_beginscan reads it (historic
	 * while decoding)
	 */
	else if ((st->rowmap != NULL || st->rowdirect != NULL) &&
			 !TransactionIdIsValid(CheckXidAlive) &&
			 fr_rowmap_fetch(st, rel, key[0], snapshot ? snapshot : GetCatalogSnapshot(rule->lookup),
							 &mapped, &buf))
	{
		tuple = &mapped;
		desc = RelationGetDescr(rel);
	}
	else if (keep)
	{
		desc = RelationGetDescr(rel);
		tuple = lookup_open_scan(rs, st, rel, key, snapshot);
		if (HeapTupleIsValid(tuple))
			st->index_reads++;
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
	if (rel != NULL && !keep)
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
						(unsigned long long) fr_lookups_by_rowmap, (unsigned long long) fr_rowmaps_read,
						(unsigned long long) fr_rowmaps_copied,
						(unsigned long long) caches_restarted, (long long) fr_cache_budget)));
	lookups_cached_hits = lookups_read = caches_restarted = 0;
	fr_lookups_by_rowmap = fr_rowmaps_read = fr_rowmaps_copied = 0;
}

#define ADMIT_WINDOW 65536

/*
 * A cache that answers few of its lookups (random keys over a large lookup)
 * costs more than it saves: then only a sample of the misses is kept (those
 * whose key hashes to a multiple of 16, then 256), so keys that come again
 * still end up cached and the rest pay no insertion; one that answers most
 * keeps every miss again.  Judged over each window of lookups.
 */
void
fr_admit_judge(FrRuleState *st)
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
		fr_admit_judge(st);
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
		fr_admit_judge(st);

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
								  st->rowmap_bytes) > fr_cache_budget / Max(rs->nrules, 1);
	}
	st->last = e;
	return e;
}


/* A lookup the caller answered from dense itself (apply_cached): counted. */
void
fr_lookup_count_hit(FrRuleState *st)
{
	if (++st->window_lookups >= ADMIT_WINDOW)
		fr_admit_judge(st);
	st->window_hits++;
	lookups_cached_hits++;
}

/* lookup_cache_bytes of the change being enriched. */
void
fr_lookup_set_budget(int64 bytes)
{
	fr_cache_budget = bytes;
}
