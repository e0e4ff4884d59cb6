/*-------------------------------------------------------------------------
 *
 * fundrecs_ruleset.c
 *	  A table's enrichment rules (fundrecs.enrichment_rules, written by
 *	  fundrecs_rules.c) read as of a change, or the orders' built-in rule
 *	  made in memory, compiled (fundrecs_compile.c) into FrRuleSets and
 *	  cached.  fundrecs_enrich.c applies them.
 *
 * The rules table and the lookup tables are user catalog tables, read
 * through the historic snapshot that decoding installs: a change sees the
 * rules and the lookup rows as they were when it was made.  Rule sets and
 * lookups are cached by the "as of the change" rule (fundrecs_asof.c):
 * the cache is used by a change only when no transaction that changed the
 * catalogs committed between the cache's start and the change and the
 * change's own transaction changed none, and it is emptied at the commit
 * of every such transaction.  Other changes read the rules and look up
 * directly (compiled sets are reused by rule version, see uncached_rules).
 *
 * The initial load has a cache of its own, read through its snapshot.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs_rules_int.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "parser/parse_node.h"
#include "parser/parse_oper.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

#include "fundrecs_compat.h"


typedef struct SetEntry
{
	Oid			source;
	FrRuleSet  *set;
} SetEntry;

/* The rules table, resolved after each reset. */
typedef struct RulesTable
{
	bool		resolved;
	Oid			relid;
	AttrNumber	att[24];
} RulesTable;

enum
{
	RT_RULE_ID, RT_SOURCE, RT_NAME, RT_LOOKUP, RT_LOOKUP_KEY, RT_JOIN_REFS, RT_OUT_NAMES,
	RT_OUT_ATTNUMS, RT_COMPUTED_NAMES, RT_COMPUTED_TREES, RT_ROUTE_TREE, RT_ADDED_BY,
	/* from 1.6 on; absent before ALTER EXTENSION UPDATE */
	RT_LOOKUP_NAMES, RT_SOURCE_ATTNUMS, RT_SOURCE_NAMES, RT_LOOKUP_OID, RT_SOURCE_OID, RT_NATTS
};
#define RT_REQUIRED RT_LOOKUP_NAMES

static const char *const rt_names[RT_NATTS] = {
	"rule_id", "source", "name", "lookup", "lookup_key", "join_refs", "out_names",
	"out_attnums", "computed_names", "computed_trees", "route_tree", "added_by",
	"lookup_names", "source_attnums", "source_names", "lookup_oid", "source_oid"
};

static bool builtin_warned_missing = false; /* once per session */

static void decode_forget(void);
static FrSessionCache decode_session = FR_SESSION_CACHE("fundrecs rules owner", decode_forget);
static FrRulesCache *decode_cache = NULL;
static RulesTable rules_table;

/* Rule sets compiled for changes the cache may not serve (uncached_rules). */
static MemoryContext versioned_cxt = NULL;
static HTAB *versioned_sets = NULL;
static bool versioned_stale = false;
static bool versioned_callback_registered = false;
static HTAB *snapshot_rules = NULL; /* SnapshotRules, see uncached_rules */

/* ----------------------------------------------------------------
 * Caches
 * ----------------------------------------------------------------
 */
static void
cache_start(FrRulesCache *rc)
{
	HASHCTL		ctl;

	MemoryContextReset(rc->cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(SetEntry);
	ctl.hcxt = rc->cxt;
	rc->sets = hash_create("fundrecs rule sets", 32, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	rc->last_source = InvalidOid;
	rc->last_set = NULL;
	rc->builtins = hash_create("fundrecs built-in rule sets", 4, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	rc->last_builtin_source = InvalidOid;
	rc->last_builtin_set = NULL;
}

/* The lookups of one initial load or backfill: see FrLoadLookups. */
FrLoadLookups *
fr_load_lookups_create(MemoryContext cxt, bool keep_open)
{
	FrLoadLookups *lookups = MemoryContextAllocZero(cxt, sizeof(FrLoadLookups));

	lookups->rules = fr_rules_cache_create(cxt);
	lookups->rules->keep_open = keep_open;
	return lookups;
}

/*
 * The end of a load's or backfill chunk's lookups: what they kept open is
 * closed (see FrRuleState.open_rel).  Not at an error: the resource owner
 * then closes it.
 */
void
fr_load_lookups_release(FrLoadLookups *lookups)
{
	HTAB	   *tables[2] = {lookups->rules->sets, lookups->rules->builtins};

	for (int t = 0; t < 2; t++)
	{
		HASH_SEQ_STATUS seq;
		SetEntry   *entry;

		hash_seq_init(&seq, tables[t]);
		while ((entry = hash_seq_search(&seq)) != NULL)
			fr_lookup_release(entry->set);
	}
}

FrRulesCache *
fr_rules_cache_create(MemoryContext parent)
{
	FrRulesCache *rc = MemoryContextAllocZero(parent, sizeof(FrRulesCache));

	rc->cxt = AllocSetContextCreate(parent, "fundrecs enrichment rules",
									ALLOCSET_DEFAULT_SIZES);
	cache_start(rc);
	rules_table.resolved = false;
	return rc;
}

static void
decode_forget(void)
{
	decode_cache = NULL;
	versioned_cxt = NULL;
	versioned_sets = NULL;
	snapshot_rules = NULL;
}

static void rules_reset(void);

void
fr_rules_init(MemoryContext parent)
{
	fr_rules_shutdown();
	decode_cache = fr_rules_cache_create(fr_session_cache_start(&decode_session, parent));
	builtin_warned_missing = false;
	fr_asof_register(rules_reset);
	rules_reset();
}

void
fr_rules_shutdown(void)
{
	fr_rules_log_cache_stats();
	fr_session_cache_end(&decode_session);
	Assert(decode_cache == NULL);
}

/* The decoder's cache starts again (fundrecs_asof.c's rule says when). */
static void
rules_reset(void)
{
	if (decode_cache != NULL)
		cache_start(decode_cache);
	rules_table.resolved = false;
}

static void
resolve_rules_table(void)
{
	Oid			nspid = get_namespace_oid(FR_EXT_SCHEMA, true);

	rules_table.relid = OidIsValid(nspid) ? get_relname_relid(FR_RULES_TABLE, nspid) : InvalidOid;
	for (int i = 0; i < RT_NATTS && OidIsValid(rules_table.relid); i++)
	{
		rules_table.att[i] = get_attnum(rules_table.relid, rt_names[i]);
		if (rules_table.att[i] == InvalidAttrNumber && i < RT_REQUIRED)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s.%s does not have the expected definition",
							FR_EXT_SCHEMA, FR_RULES_TABLE),
					 errdetail("Column \"%s\" is missing.", rt_names[i]),
					 errhint("Update the extension: ALTER EXTENSION fundrecs UPDATE.")));
	}
	rules_table.resolved = true;
}

/* ----------------------------------------------------------------
 * Compiling a table's rules
 * ----------------------------------------------------------------
 */

static int
rule_row_cmp(const void *a, const void *b)
{
	int64		x = ((const RuleRow *) a)->rule_id;
	int64		y = ((const RuleRow *) b)->rule_id;

	return x < y ? -1 : x > y ? 1 : 0;
}

static void
array_elems(Datum d, Oid elemtype, Datum **elems, int *n)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(DatumGetArrayTypeP(d), elemtype, typlen, typbyval, typalign,
					  elems, NULL, n);
}

/* The rules of source as of snapshot, in the order they were added. */
static RuleRow *
read_rules(Oid source, Snapshot snapshot, int *nrules)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData skey;
	HeapTuple	tuple;
	RuleRow    *rows = NULL;
	int			n = 0,
				size = 0;

	*nrules = 0;
	if (!rules_table.resolved)
		resolve_rules_table();
	if (!OidIsValid(rules_table.relid))
		return NULL;

	rel = table_open(rules_table.relid, AccessShareLock);
	ScanKeyInit(&skey, rules_table.att[RT_SOURCE], BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(source));
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 1, &skey);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		Datum	   *v = palloc(sizeof(Datum) * desc->natts);
		bool	   *nulls = palloc(sizeof(bool) * desc->natts);
		RuleRow    *r;

		heap_deform_tuple(tuple, desc, v, nulls);
		if (n == size)
		{
			size = Max(4, size * 2);
			rows = rows ? repalloc(rows, sizeof(RuleRow) * size) : palloc(sizeof(RuleRow) * size);
		}
		r = &rows[n++];
#define RT(i) v[rules_table.att[i] - 1]
		r->rule_id = DatumGetInt64(RT(RT_RULE_ID));
		r->xmin = HeapTupleHeaderGetXmin(tuple->t_data);
		r->name = pstrdup(NameStr(*DatumGetName(RT(RT_NAME))));
		r->lookup = DatumGetObjectId(RT(RT_LOOKUP));
		array_elems(RT(RT_LOOKUP_KEY), INT2OID, &r->lookup_key, &r->nkeys);
		array_elems(RT(RT_JOIN_REFS), INT2OID, &r->join_refs, &r->nkeys);
		array_elems(RT(RT_OUT_NAMES), TEXTOID, &r->out_names, &r->nout);
		array_elems(RT(RT_OUT_ATTNUMS), INT2OID, &r->out_attnums, &r->nout);
		array_elems(RT(RT_COMPUTED_NAMES), TEXTOID, &r->computed_names, &r->ncomputed);
		array_elems(RT(RT_COMPUTED_TREES), TEXTOID, &r->computed_trees, &r->ncomputed);
		r->route_tree = nulls[rules_table.att[RT_ROUTE_TREE] - 1] ? NULL :
			TextDatumGetCString(RT(RT_ROUTE_TREE));
		r->added_by = pstrdup(NameStr(*DatumGetName(RT(RT_ADDED_BY))));
		r->builtin = false;
		r->out_types = NULL;
		r->lookup_names = r->source_attnums = r->source_names = NULL;
		r->nlookup_names = r->nsource = 0;
		r->lookup_oid = r->source_oid = InvalidOid;
		if (rules_table.att[RT_LOOKUP_OID] != InvalidAttrNumber &&
			!nulls[rules_table.att[RT_LOOKUP_OID] - 1] &&
			!nulls[rules_table.att[RT_SOURCE_OID] - 1])
		{
			r->lookup_oid = DatumGetObjectId(RT(RT_LOOKUP_OID));
			r->source_oid = DatumGetObjectId(RT(RT_SOURCE_OID));
		}
		if (rules_table.att[RT_LOOKUP_NAMES] != InvalidAttrNumber &&
			!nulls[rules_table.att[RT_LOOKUP_NAMES] - 1] &&
			!nulls[rules_table.att[RT_SOURCE_ATTNUMS] - 1] &&
			!nulls[rules_table.att[RT_SOURCE_NAMES] - 1])
		{
			int			nnames;

			array_elems(RT(RT_LOOKUP_NAMES), TEXTOID, &r->lookup_names, &r->nlookup_names);
			array_elems(RT(RT_SOURCE_ATTNUMS), INT2OID, &r->source_attnums, &r->nsource);
			array_elems(RT(RT_SOURCE_NAMES), TEXTOID, &r->source_names, &nnames);
			if (nnames != r->nsource)
				r->nsource = 0;
		}
#undef RT
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (n > 1)
		qsort(rows, n, sizeof(RuleRow), rule_row_cmp);
	*nrules = n;
	return rows;
}

/*
 * Where the rules of a set come from: the rules table (read_rules, as of
 * snapshot), or the built-in rule made in memory (builtin_rows).
 */
typedef RuleRow *(*RuleRowsFn) (Oid source, Snapshot snapshot, int *n, const void *arg);

static RuleRow *
table_rows(Oid source, Snapshot snapshot, int *n, const void *arg)
{
	return read_rules(source, snapshot, n);
}

/* A set of sets (rc's rule sets, or its built-in ones), compiled on first use. */
static FrRuleSet *
cache_get(FrRulesCache *rc, HTAB *sets, Oid source, Snapshot snapshot, RuleRowsFn rows_fn,
		  const void *arg)
{
	SetEntry   *entry;
	bool		found;

	entry = hash_search(sets, &source, HASH_ENTER, &found);
	if (!found)
	{
		entry->set = NULL;
		PG_TRY();
		{
			int			n;
			RuleRow    *rows = rows_fn(source, snapshot, &n, arg);

			entry->set = fr_rules_compile(source, rows, n, rc->cxt);
			if (entry->set != NULL)
				entry->set->keep_open = rc->keep_open;
		}
		PG_CATCH();
		{
			hash_search(sets, &source, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	return entry->set;
}

/* A table's rules from the cache, compiled on first use. */
static FrRuleSet *
cached_rules(FrRulesCache *rc, Snapshot snapshot, Oid source)
{
	if (source != rc->last_source)
	{
		rc->last_set = cache_get(rc, rc->sets, source, snapshot, table_rows, NULL);
		rc->last_source = source;
	}
	return rc->last_set;
}

/*
 * The rules of a change the cache may not serve (see the top of the file):
 * read as of the change, every time.  Compiling them again each time
 * would cost more than the rest of the row (a transaction that started
 * before the session, or changed the catalogs, is often a big one), so
 * compiled sets are kept by which rule versions they hold (rule_id and
 * xmin): what they compile to depends only on those and on the catalogs'
 * definitions of the tables, and any relcache invalidation drops them all.
 * Their lookups are never cached.
 */
typedef struct VersionedSet
{
	char		key[64];		/* source and a hash of the versions */
	char	   *versions;		/* rule_id:xmin of each rule */
	FrRuleSet  *set;
} VersionedSet;


#define FR_VERSIONED_MAX 64
#define FR_SNAPSHOTS_MAX 1024

static void versioned_start(void);
static FrRuleSet *versioned_rules(Oid source);

static void
versioned_invalidate(Datum arg, Oid relid)
{
	versioned_stale = true;
}

/*
 * What decides which rules a change sees: its historic snapshot.  Changes
 * come in long runs under one snapshot (a transaction's, until the next
 * catalog commit or command), so the rules read under one are remembered
 * by its contents; without that, a big first transaction of the session
 * read the rules table once per change (half of its decoding time, for a
 * table without rules).
 */
typedef struct SnapshotKey
{
	Oid			source;
	TransactionId xmin;
	TransactionId xmax;
	CommandId	curcid;
	uint32		xcnt;
	int32		subxcnt;
	uint32		xids_hash;		/* of xip and subxip */
} SnapshotKey;

typedef struct SnapshotRules
{
	SnapshotKey key;			/* must be first */
	TransactionId *xids;		/* xip then subxip: compared on a hit */
	FrRuleSet  *set;			/* NULL: no rules */
} SnapshotRules;

static SnapshotRules *
snapshot_entry(Oid source, Snapshot snap, bool *found)
{
	SnapshotKey key;
	Size		xip_size = sizeof(TransactionId) * snap->xcnt;
	Size		sub_size = sizeof(TransactionId) * Max(snap->subxcnt, 0);
	SnapshotRules *e;

	memset(&key, 0, sizeof(key));
	key.source = source;
	key.xmin = snap->xmin;
	key.xmax = snap->xmax;
	key.curcid = snap->curcid;
	key.xcnt = snap->xcnt;
	key.subxcnt = snap->subxcnt;
	/* Either array may be NULL when empty: never handed to mem*() then. */
	key.xids_hash = hash_combine(xip_size ? hash_bytes((unsigned char *) snap->xip, xip_size) : 0,
								 sub_size ? hash_bytes((unsigned char *) snap->subxip, sub_size) : 0);
	e = hash_search(snapshot_rules, &key, HASH_ENTER, found);
	/* The xids themselves decide: a hash is not a proof. */
	if (*found && ((xip_size && memcmp(e->xids, snap->xip, xip_size) != 0) ||
				   (sub_size && memcmp(e->xids + snap->xcnt, snap->subxip, sub_size) != 0)))
		*found = false;
	if (!*found)
	{
		e->xids = MemoryContextAlloc(versioned_cxt, Max(xip_size + sub_size, 1));
		if (xip_size)
			memcpy(e->xids, snap->xip, xip_size);
		if (sub_size)
			memcpy(e->xids + snap->xcnt, snap->subxip, sub_size);
		e->set = NULL;
	}
	return e;
}

static FrRuleSet *
uncached_rules(Oid source)
{
	Snapshot	snap = GetCatalogSnapshot(InvalidOid);
	SnapshotRules *memo;
	bool		memo_found;
	FrRuleSet  *set;

	if (decode_session.cxt == NULL)
	{
		int			n;
		RuleRow    *rows = read_rules(source, NULL, &n);

		return fr_rules_compile(source, rows, n, CurrentMemoryContext);
	}
	versioned_start();
	memo = snapshot_entry(source, snap, &memo_found);
	if (memo_found)
		return memo->set;
	PG_TRY();
	{
		set = versioned_rules(source);
	}
	PG_CATCH();
	{
		hash_search(snapshot_rules, &memo->key, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	memo->set = set;
	return set;
}

/* The versioned sets and the snapshots' memo, made or started again. */
static void
versioned_start(void)
{
	HASHCTL		ctl;

	if (!versioned_callback_registered)
	{
		CacheRegisterRelcacheCallback(versioned_invalidate, (Datum) 0);
		versioned_callback_registered = true;
	}
	if (versioned_cxt != NULL && !versioned_stale &&
		hash_get_num_entries(versioned_sets) < FR_VERSIONED_MAX &&
		hash_get_num_entries(snapshot_rules) < FR_SNAPSHOTS_MAX)
		return;
	if (versioned_cxt == NULL)
		versioned_cxt = AllocSetContextCreate(decode_session.cxt, "fundrecs versioned rules",
											  ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(versioned_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(((VersionedSet *) NULL)->key);
	ctl.entrysize = sizeof(VersionedSet);
	ctl.hcxt = versioned_cxt;
	versioned_sets = hash_create("fundrecs versioned rules", 16, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(SnapshotKey);
	ctl.entrysize = sizeof(SnapshotRules);
	ctl.hcxt = versioned_cxt;
	snapshot_rules = hash_create("fundrecs rules by snapshot", 16, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	versioned_stale = false;
}

/* Rules read already (versioned_rules). */
typedef struct GivenRows
{
	RuleRow    *rows;
	int			n;
} GivenRows;

static RuleRow *
given_rows(Oid source, Snapshot snapshot, int *n, const void *arg)
{
	const GivenRows *given = arg;

	*n = given->n;
	return given->rows;
}

/*
 * The versioned set named key, holding the rule versions versions:
 * compiled from rows_fn's rules when there is none, or it holds others.
 */
static FrRuleSet *
versioned_get(const char *key, const char *versions, Oid source, RuleRowsFn rows_fn,
			  const void *arg)
{
	VersionedSet *entry;
	bool		found;

	entry = hash_search(versioned_sets, key, HASH_ENTER, &found);
	/* The versions themselves decide: a hash is not a proof. */
	if (!found || strcmp(entry->versions, versions) != 0)
	{
		entry->set = NULL;
		entry->versions = MemoryContextStrdup(versioned_cxt, versions);
		PG_TRY();
		{
			MemoryContext cxt = AllocSetContextCreate(versioned_cxt, "fundrecs rule set",
													  ALLOCSET_SMALL_SIZES);
			int			n;
			RuleRow    *rows = rows_fn(source, NULL, &n, arg);

			entry->set = fr_rules_compile(source, rows, n, cxt);
		}
		PG_CATCH();
		{
			hash_search(versioned_sets, key, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	return entry->set;
}

/* The rules of source read as of the change, compiled once per version. */
static FrRuleSet *
versioned_rules(Oid source)
{
	int			n;
	RuleRow    *rows = read_rules(source, NULL, &n);
	GivenRows	given = {rows, n};
	StringInfoData versions;
	char		key[64];

	if (n == 0)
		return NULL;

	initStringInfo(&versions);
	for (int i = 0; i < n; i++)
		appendStringInfo(&versions, "%lld:%u,", (long long) rows[i].rule_id, rows[i].xmin);
	memset(key, 0, sizeof(key));
	snprintf(key, sizeof(key), "%u/%d/%08x", source, n,
			 hash_bytes((unsigned char *) versions.data, versions.len));
	return versioned_get(key, versions.data, source, given_rows, &given);
}

/* ----------------------------------------------------------------
 * The built-in enrichment of the orders table
 *
 * The seed's join of the orders with fundrecs.product_details is a rule
 * like the others, made in memory from the plugin options (orders_table,
 * product_column, quantity_column) instead of read from the rules table;
 * the same as
 *
 *	 add_enrichment(orders, 'fundrecs.product_details', ARRAY['product_id'],
 *		 columns => ARRAY['product_name', 'category', 'price'],
 *		 computed => ARRAY['total_price = price * quantity'],
 *		 route => 'category', name => 'products')
 *
 * except that the product column may be any integer type (a value out of
 * the key's range is a miss), a database without the products table gets
 * every row a miss (with a warning), and no owner's rights apply (it reads
 * what the plugin reads).  The orders table gets it when it has no rules
 * of its own.
 * ----------------------------------------------------------------
 */
static RuleRow *
builtin_rule(Oid source, AttrNumber product_attnum, AttrNumber quantity_attnum)
{
	static const char *const out_names[] = {"product_name", "category", "price"};
	RuleRow    *r = palloc0(sizeof(RuleRow));
	Oid			nspid = get_namespace_oid(FR_EXT_SCHEMA, true);
	Oid			products = InvalidOid;
	AttrNumber	key_attnum = InvalidAttrNumber;
	int32		typmods[3] = {-1, -1, -1};
	Oid			collations[3] = {DEFAULT_COLLATION_OID, DEFAULT_COLLATION_OID, InvalidOid};
	Oid			qtype;
	int32		qtypmod;
	Oid			qcoll;
	ParseState *pstate;
	Node	   *total;

	if (OidIsValid(nspid))
		products = get_relname_relid(FR_PRODUCTS_TABLE, nspid);
	r->name = "products";
	r->builtin = true;
	r->lookup = products;
	r->nkeys = 1;
	r->nout = 3;
	r->ncomputed = 1;
	r->lookup_key = palloc(sizeof(Datum));
	r->join_refs = palloc(sizeof(Datum));
	r->out_names = palloc(sizeof(Datum) * 3);
	r->out_attnums = palloc0(sizeof(Datum) * 3);
	r->out_types = palloc(sizeof(Oid) * 3);
	r->out_types[0] = r->out_types[1] = TEXTOID;
	r->out_types[2] = NUMERICOID;
	r->computed_names = palloc(sizeof(Datum));
	r->computed_trees = palloc(sizeof(Datum));

	if (OidIsValid(products))
	{
		Relation	rel = table_open(products, AccessShareLock);
		TupleDesc	desc = RelationGetDescr(rel);
		bool		ok = OidIsValid(fr_primary_key_index(rel));

		key_attnum = get_attnum(products, "product_id");
		ok = ok && key_attnum != InvalidAttrNumber &&
			fr_is_int_type(TupleDescAttr(desc, key_attnum - 1)->atttypid);
		for (int i = 0; i < 3 && ok; i++)
		{
			AttrNumber	a = get_attnum(products, out_names[i]);
			Form_pg_attribute att;

			if (a == InvalidAttrNumber)
			{
				ok = false;
				break;
			}
			att = TupleDescAttr(desc, a - 1);
			ok = att->atttypid == r->out_types[i];
			r->out_attnums[i] = Int16GetDatum(a);
			typmods[i] = att->atttypmod;
			collations[i] = att->attcollation;
		}
		table_close(rel, AccessShareLock);
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s.%s does not have the expected definition",
							FR_EXT_SCHEMA, FR_PRODUCTS_TABLE),
					 errdetail("It needs a primary key on product_id and the columns product_name, category and price."),
					 errhint("Recreate it with DROP EXTENSION fundrecs and CREATE EXTENSION fundrecs.")));
	}
	else if (!builtin_warned_missing)
	{
		ereport(WARNING,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s.%s does not exist, orders are not enriched",
						FR_EXT_SCHEMA, FR_PRODUCTS_TABLE),
				 errhint("Run CREATE EXTENSION fundrecs in this database and load the products.")));
		builtin_warned_missing = true;
	}
	r->lookup_key[0] = Int16GetDatum(key_attnum);
	r->join_refs[0] = Int16GetDatum(product_attnum);
	for (int i = 0; i < 3; i++)
		r->out_names[i] = CStringGetTextDatum(out_names[i]);

	/*
	 * total_price = price * quantity, as the parser makes it (the quantity
	 * cast to numeric unless it is one), so that it is computed in integers
	 * when exact, as any rule's is; route = category.
	 */
	get_atttypetypmodcoll(source, quantity_attnum, &qtype, &qtypmod, &qcoll);
	pstate = make_parsestate(NULL);
	total = (Node *) make_op(pstate, list_make2(makeString("pg_catalog"), makeString("*")),
							 (Node *) makeVar(INNER_VAR, 3, NUMERICOID, typmods[2],
											  collations[2], 0),
							 (Node *) makeVar(1, quantity_attnum, qtype, qtypmod, qcoll, 0),
							 NULL, -1);
	free_parsestate(pstate);
	r->computed_names[0] = CStringGetTextDatum("total_price");
	r->computed_trees[0] = CStringGetTextDatum(nodeToString(total));
	r->route_tree = nodeToString(makeVar(INNER_VAR, 2, TEXTOID, typmods[1], collations[1], 0));
	return r;
}

/*
 * The built-in rule's columns, null: what an orders row carries when the
 * rule cannot be applied to it (see fr_write_row).
 */
const char *
fr_rules_builtin_nulls(void)
{
	return ",\"product_name\":null,\"category\":null,\"price\":null,\"total_price\":null";
}

/* The built-in rule's columns: product and quantity (attribute numbers). */
typedef struct BuiltinColumns
{
	AttrNumber	product;
	AttrNumber	quantity;
} BuiltinColumns;

static RuleRow *
builtin_rows(Oid source, Snapshot snapshot, int *n, const void *arg)
{
	const BuiltinColumns *cols = arg;

	*n = 1;
	return builtin_rule(source, cols->product, cols->quantity);
}

/*
 * The built-in rule set of the orders table source (whose product and
 * quantity columns are given) as of the change.  load: the initial load's
 * cache, else the decoder's, when the change may use it (cache_usable).
 */
FrRuleSet *
fr_rules_builtin(FrRulesCache *load, Oid source, AttrNumber product_attnum,
				 AttrNumber quantity_attnum, bool cache_usable)
{
	FrRulesCache *rc = load != NULL ? load : decode_cache;
	BuiltinColumns cols = {product_attnum, quantity_attnum};

	if (rc == NULL || (load == NULL && !cache_usable))
	{
		char		key[64];

		/* Not decoding: compiled for this row alone. */
		if (decode_session.cxt == NULL)
			return fr_rules_compile(source, builtin_rule(source, product_attnum, quantity_attnum),
									1, CurrentMemoryContext);
		versioned_start();
		memset(key, 0, sizeof(key));
		snprintf(key, sizeof(key), "builtin/%u/%d/%d", source, product_attnum, quantity_attnum);
		return versioned_get(key, "", source, builtin_rows, &cols);
	}
	if (source != rc->last_builtin_source)
	{
		rc->last_builtin_set = cache_get(rc, rc->builtins, source, NULL, builtin_rows, &cols);
		rc->last_builtin_source = source;
	}
	return rc->last_builtin_set;
}

/*
 * The rules of relation source as of the change, NULL when it has none.
 * load: the initial load's cache, else the decoder's, when the change may
 * use it (cache_usable, fr_asof_cache_usable's answer).
 */
FrRuleSet *
fr_rules_get(FrRulesCache *load, Snapshot snapshot, Oid source, bool cache_usable)
{
	FrRulesCache *rc = load != NULL ? load : decode_cache;

	if (rc == NULL)
		return NULL;			/* not decoding, not loading */
	if (load == NULL && !cache_usable)
		return uncached_rules(source);
	return cached_rules(rc, snapshot, source);
}

/* The lookup tables of source's rules as of now, for privilege checks. */
List *
fr_rules_problems(const FrOptions *opts)
{
	List	   *problems = NIL;
	List	   *sources = NIL;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	ListCell   *lc;
	FrRulesCache *rc;

	rules_table.resolved = false;
	resolve_rules_table();
	if (!OidIsValid(rules_table.relid))
		return NIL;
	rel = table_open(rules_table.relid, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, GetActiveSnapshot(), 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		Datum	   *values = palloc(sizeof(Datum) * desc->natts);
		bool	   *nulls = palloc(sizeof(bool) * desc->natts);

		/*
		 * heap_deform_tuple, not heap_getattr: from 17.12 on, its inline body
		 * calls a function older 17.x servers lack.
		 */
		heap_deform_tuple(tuple, desc, values, nulls);
		if (!nulls[rules_table.att[RT_SOURCE] - 1])
			sources = list_append_unique_oid(sources,
											 DatumGetObjectId(values[rules_table.att[RT_SOURCE] - 1]));
		pfree(values);
		pfree(nulls);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	rc = fr_rules_cache_create(CurrentMemoryContext);
	foreach(lc, sources)
	{
		Oid			source = lfirst_oid(lc);
		char	   *relname = get_rel_name(source);
		char	   *nspname;
		FrRuleSet  *rs;

		if (relname == NULL)
			continue;
		nspname = get_namespace_name(get_rel_namespace(source));
		if (!fr_options_table_included(opts, nspname, relname))
			continue;
		rs = fr_rules_get(rc, GetActiveSnapshot(), source, true);
		if (rs != NULL && rs->error != NULL)
			problems = lappend(problems,
							   psprintf("the enrichment rules of table \"%s.%s\" cannot be applied: %s",
										nspname, relname, rs->error));
	}
	return problems;
}

List *
fr_rules_lookups(Oid source)
{
	List	   *lookups = NIL;
	RuleRow    *rows;
	int			n;

	rules_table.resolved = false;
	rows = read_rules(source, GetActiveSnapshot(), &n);
	for (int i = 0; i < n; i++)
		lookups = list_append_unique_oid(lookups, rows[i].lookup);
	return lookups;
}
