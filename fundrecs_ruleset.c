/*-------------------------------------------------------------------------
 *
 * fundrecs_ruleset.c
 *	  A table's enrichment rules (fundrecs.enrichment_rules, written by
 *	  fundrecs_rules.c) read as of a change and compiled into an FrRuleSet:
 *	  the lookups' key scans, the expressions ready for the executor, the
 *	  emitted columns' JSON names.  fundrecs_enrich.c applies them.
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
#include "fundrecs_enrich.h"

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
fr_load_lookups_create(MemoryContext cxt)
{
	FrLoadLookups *lookups = MemoryContextAllocZero(cxt, sizeof(FrLoadLookups));

	lookups->rules = fr_rules_cache_create(cxt);
	return lookups;
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
typedef struct RuleRow
{
	int64		rule_id;
	TransactionId xmin;			/* which version of the rule */
	char	   *name;
	Oid			lookup;
	Datum	   *lookup_key,
			   *join_refs,
			   *out_names,
			   *out_attnums,
			   *computed_names,
			   *computed_trees;
	int			nkeys,
				nout,
				ncomputed;
	char	   *route_tree;
	char	   *added_by;		/* the rule's owner: whose rights read the
								 * lookup */
	Oid			lookup_oid;		/* the tables' OIDs when the rule was added */
	Oid			source_oid;		/* (a restore changes them: InvalidOid before
								 * 1.6) */
	Datum	   *lookup_names;	/* key then out columns' names (NULL: none) */
	Datum	   *source_attnums; /* the source columns read, and their names */
	Datum	   *source_names;
	int			nlookup_names,
				nsource;
	bool		builtin;		/* the orders' built-in rule (builtin_rule) */
	Oid		   *out_types;		/* builtin without its lookup: the out types */
} RuleRow;

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

/* The rule set cannot be applied now: why, for on_enrich_error. */
pg_attribute_printf(2, 3)
static void
set_broken(FrRuleSet *rs, const char *fmt,...)
{
	va_list		ap;
	StringInfoData buf;

	if (rs->error != NULL)
		return;
	initStringInfo(&buf);
	for (;;)
	{
		int			needed;

		va_start(ap, fmt);
		needed = appendStringInfoVA(&buf, fmt, ap);
		va_end(ap);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	rs->error = buf.data;
}

typedef struct VarCheck
{
	FrRuleSet  *rs;
	const char *what;
	int			ninner;			/* emitted columns visible to it */
} VarCheck;

/* Each Var of a compiled expression must still mean what it meant. */
static bool
check_vars(Node *node, VarCheck *vc)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;
		TupleDesc	desc = var->varno == INNER_VAR ? vc->rs->emitted_desc : vc->rs->source_desc;
		int			limit = var->varno == INNER_VAR ? vc->ninner : desc->natts;
		Form_pg_attribute att;

		if (var->varattno < 1 || var->varattno > limit ||
			(att = TupleDescAttr(desc, var->varattno - 1))->attisdropped)
			set_broken(vc->rs, "%s reads a column that was dropped", vc->what);
		else if (att->atttypid != var->vartype)
			set_broken(vc->rs, "%s reads column \"%s\", whose type changed from %s to %s",
					   vc->what, NameStr(att->attname), format_type_be(var->vartype),
					   format_type_be(att->atttypid));
		return false;
	}
	return expression_tree_walker(node, check_vars, vc);
}

/* A JSON column of the output: its name, type and output function. */
static void
init_column(FrColumn *col, const char *name, Oid typid, MemoryContext cxt)
{
	Oid			outfunc;

	memset(col, 0, sizeof(FrColumn));
	col->json_name = psprintf(",%s:", fr_json_quote(name)) + 1;
	col->json_name_len = strlen(col->json_name);
	col->typid = typid;
	col->basetypid = getBaseType(typid);
	col->kind = fr_value_kind(col->basetypid);
	getTypeOutputInfo(typid, &outfunc, &col->typisvarlena);
	fmgr_info_cxt(outfunc, &col->outfunc, cxt);
}

/*
 * The lookup is read with its rule's owner's rights, as of the change, as a
 * view is read with its owner's: SELECT on the table (or on each column the
 * rule reads), and no row-level security that applies to the owner (a
 * policy would hide rows from the owner, not from the plugin).  Otherwise
 * the rule set is broken, with why.
 */
static bool
owner_may_read(FrRuleSet *rs, FrRule *rule, RuleRow *row, Relation lookup)
{
	Oid			owner = get_role_oid(row->added_by, true);
	Oid			relid = RelationGetRelid(lookup);

	if (!OidIsValid(owner))
	{
		set_broken(rs, "the owner of rule \"%s\", role \"%s\", no longer exists", rule->name,
				   row->added_by);
		return false;
	}
	if (pg_class_aclcheck(relid, owner, ACL_SELECT) != ACLCHECK_OK)
	{
		for (int i = 0; i < row->nkeys + row->nout; i++)
		{
			AttrNumber	a = DatumGetInt16(i < row->nkeys ? row->lookup_key[i] :
										  row->out_attnums[i - row->nkeys]);

			if (pg_attribute_aclcheck(relid, a, owner, ACL_SELECT) != ACLCHECK_OK)
			{
				set_broken(rs, "the owner of rule \"%s\", role \"%s\", may not read lookup table \"%s\" (SELECT was revoked)",
						   rule->name, row->added_by, RelationGetRelationName(lookup));
				return false;
			}
		}
	}
	if (check_enable_rls(relid, owner, true) == RLS_ENABLED)
	{
		set_broken(rs, "lookup table \"%s\" of rule \"%s\" has row-level security that applies to its owner, role \"%s\"",
				   RelationGetRelationName(lookup), rule->name, row->added_by);
		return false;
	}
	return true;
}

/*
 * Where the column a rule reads, named name, is in a table restored since
 * the rule was added (pg_dump recreates a table without its dropped
 * columns, so attribute numbers shift; the table's OID changes, which is
 * how the callers know): found by name.  0, with the rule broken, when it
 * is not there.  In the cluster the rule was added in (and after
 * pg_upgrade, which keeps OIDs and attribute numbers) the numbers are used
 * as they are, whatever renames.
 */
static AttrNumber
locate_column(FrRuleSet *rs, TupleDesc desc, const char *name, const char *table,
			  const char *rule)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	set_broken(rs, "column \"%s\" of \"%s\", which rule \"%s\" reads, is not in the table restored since the rule was added: drop the rule and add it again",
			   name, table, rule);
	return 0;
}

/* The lookup's key and out columns placed by name (see locate_column). */
static void
place_lookup_columns(FrRuleSet *rs, FrRule *rule, RuleRow *row, Relation lookup)
{
	TupleDesc	desc = RelationGetDescr(lookup);

	if (row->nlookup_names != row->nkeys + row->nout || !OidIsValid(row->lookup_oid) ||
		row->lookup_oid == RelationGetRelid(lookup))
		return;					/* the numbers are right (or all there is) */
	for (int i = 0; i < row->nlookup_names && rs->error == NULL; i++)
	{
		Datum	   *slot = i < row->nkeys ? &row->lookup_key[i] : &row->out_attnums[i - row->nkeys];
		AttrNumber	at = locate_column(rs, desc, TextDatumGetCString(row->lookup_names[i]),
									   RelationGetRelationName(lookup), rule->name);

		*slot = Int16GetDatum(at);
		if (i < row->nkeys)
			rule->key_attnums[i] = at;
	}
}

typedef struct SourceMap
{
	int			n;
	AttrNumber *from;
	AttrNumber *to;
} SourceMap;

/* A compiled tree with its source columns renumbered. */
static Node *
source_map_mutator(Node *node, SourceMap *map)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Var) && ((Var *) node)->varno != INNER_VAR)
	{
		Var		   *v = (Var *) copyObject(node);

		for (int i = 0; i < map->n; i++)
			if (v->varattno == map->from[i])
			{
				v->varattno = map->to[i];
				v->varattnosyn = map->to[i];
				break;
			}
		return (Node *) v;
	}
	return expression_tree_mutator(node, source_map_mutator, map);
}

/* The source columns a rule reads, placed by name: the renumbering, if any. */
static void
place_source_columns(FrRuleSet *rs, RuleRow *row, const char *source_name, SourceMap *map)
{
	map->n = 0;
	map->from = palloc(sizeof(AttrNumber) * Max(row->nsource, 1));
	map->to = palloc(sizeof(AttrNumber) * Max(row->nsource, 1));
	if (!OidIsValid(row->source_oid) || row->source_oid == rs->source)
		return;					/* the numbers are right (or all there is) */
	for (int i = 0; i < row->nsource && rs->error == NULL; i++)
	{
		AttrNumber	was = DatumGetInt16(row->source_attnums[i]);
		AttrNumber	now = locate_column(rs, rs->source_desc,
										TextDatumGetCString(row->source_names[i]),
										source_name, row->name);

		if (now != 0 && now != was)
		{
			map->from[map->n] = was;
			map->to[map->n++] = now;
		}
	}
	for (int k = 0; k < row->nkeys && map->n > 0; k++)
	{
		int16		ref = DatumGetInt16(row->join_refs[k]);

		for (int i = 0; i < map->n && ref > 0; i++)
			if (ref == map->from[i])
			{
				row->join_refs[k] = Int16GetDatum(map->to[i]);
				break;
			}
	}
}

static bool
is_int_type(Oid typid)
{
	return typid == INT2OID || typid == INT4OID || typid == INT8OID;
}

/* The lookup's key scan: operators, collations and sizes of its key. */
static void
compile_lookup(FrRuleSet *rs, FrRule *rule, RuleRow *row)
{
	Relation	lookup;
	Relation	index;
	TupleDesc	ldesc;

	rule->nkeys = row->nkeys;
	rule->key_attnums = palloc(sizeof(AttrNumber) * rule->nkeys);
	rule->join_refs = palloc(sizeof(int16) * rule->nkeys);
	rule->key_eq = palloc0(sizeof(FmgrInfo) * rule->nkeys);
	rule->key_coll = palloc(sizeof(Oid) * rule->nkeys);
	rule->key_typlen = palloc(sizeof(int16) * rule->nkeys);
	rule->key_typbyval = palloc(sizeof(bool) * rule->nkeys);
	for (int k = 0; k < rule->nkeys; k++)
	{
		rule->key_attnums[k] = DatumGetInt16(row->lookup_key[k]);
		rule->join_refs[k] = DatumGetInt16(row->join_refs[k]);
	}

	/*
	 * The built-in rule of a database without fundrecs.product_details: every
	 * row is a miss (its columns null, route "uncategorized").
	 */
	if (row->builtin && !OidIsValid(rule->lookup))
	{
		rule->nout = row->nout;
		rule->out_attnums = palloc0(sizeof(AttrNumber) * Max(rule->nout, 1));
		for (int i = 0; i < rule->nout; i++)
		{
			char	   *name = TextDatumGetCString(row->out_names[i]);

			TupleDescInitEntry(rs->emitted_desc, rs->ncols + 1, name, row->out_types[i], -1, 0);
			init_column(&rs->cols[rs->ncols], name, row->out_types[i], rs->cxt);
			rs->ncols++;
		}
		return;
	}

	/*
	 * Dropped, even after the change: opening it under the historic snapshot
	 * would fail for the whole slot (its current file is looked up).
	 */
	lookup = fr_relation_exists_now(rule->lookup) ?
		try_table_open(rule->lookup, AccessShareLock) : NULL;
	if (lookup == NULL)
	{
		set_broken(rs, "lookup table of rule \"%s\" was dropped", rule->name);
		return;
	}
	ldesc = RelationGetDescr(lookup);
	place_lookup_columns(rs, rule, row, lookup);
	/* The built-in rule has no owner: it reads what the plugin reads. */
	if (rs->error != NULL || (!row->builtin && !owner_may_read(rs, rule, row, lookup)))
	{
		table_close(lookup, AccessShareLock);
		return;
	}
	rule->lookup_index = fr_primary_key_index(lookup);
	if (!OidIsValid(rule->lookup_index))
	{
		set_broken(rs, "lookup table \"%s\" of rule \"%s\" has no primary key",
				   RelationGetRelationName(lookup), rule->name);
		table_close(lookup, AccessShareLock);
		return;
	}
	index = fr_index_open_current(rule->lookup_index);
	if (index == NULL)
	{
		set_broken(rs, "the primary key of lookup table \"%s\" of rule \"%s\" was dropped",
				   RelationGetRelationName(lookup), rule->name);
		table_close(lookup, AccessShareLock);
		return;
	}
	if (index->rd_index->indnkeyatts != rule->nkeys)
		set_broken(rs, "the primary key of lookup table \"%s\" of rule \"%s\" changed",
				   RelationGetRelationName(lookup), rule->name);
	for (int k = 0; k < rule->nkeys && rs->error == NULL; k++)
	{
		Oid			eqop;
		Oid			jtype;
		int16		ref = rule->join_refs[k];

		if (index->rd_index->indkey.values[k] != rule->key_attnums[k])
		{
			set_broken(rs, "the primary key of lookup table \"%s\" of rule \"%s\" changed",
					   RelationGetRelationName(lookup), rule->name);
			break;
		}
		eqop = get_opfamily_member(index->rd_opfamily[k], index->rd_opcintype[k],
								   index->rd_opcintype[k], BTEqualStrategyNumber);
		fmgr_info_cxt(get_opcode(eqop), &rule->key_eq[k], rs->cxt);
		rule->key_coll[k] = index->rd_indcollation[k];
		get_typlenbyval(TupleDescAttr(ldesc, rule->key_attnums[k] - 1)->atttypid,
						&rule->key_typlen[k], &rule->key_typbyval[k]);
		if (ref > 0)
		{
			Form_pg_attribute att;

			if (ref > rs->source_desc->natts ||
				(att = TupleDescAttr(rs->source_desc, ref - 1))->attisdropped)
			{
				set_broken(rs, "join column %d of rule \"%s\" was dropped", ref, rule->name);
				break;
			}
			jtype = att->atttypid;
			rs->source_refs = bms_add_member(rs->source_refs,
											 ref - FirstLowInvalidHeapAttributeNumber);
		}
		else
			jtype = TupleDescAttr(rs->emitted_desc, -ref - 1)->atttypid;
		if (row->builtin && is_int_type(getBaseType(jtype)) &&
			is_int_type(TupleDescAttr(ldesc, rule->key_attnums[k] - 1)->atttypid))
		{
			/* Any integer product column: converted, a miss out of range. */
			if (getBaseType(jtype) != TupleDescAttr(ldesc, rule->key_attnums[k] - 1)->atttypid)
			{
				if (rule->key_from == NULL)
					rule->key_from = palloc0(sizeof(Oid) * rule->nkeys);
				rule->key_from[k] = getBaseType(jtype);
			}
		}
		else if (jtype != TupleDescAttr(ldesc, rule->key_attnums[k] - 1)->atttypid)
			set_broken(rs, "a join column of rule \"%s\" is %s, but the key of \"%s\" is %s",
					   rule->name, format_type_be(jtype), RelationGetRelationName(lookup),
					   format_type_be(TupleDescAttr(ldesc, rule->key_attnums[k] - 1)->atttypid));
	}
	index_close(index, AccessShareLock);
	if (rule->nkeys == 1 && rs->error == NULL)
	{
		Oid			t = TupleDescAttr(ldesc, rule->key_attnums[0] - 1)->atttypid;

		rule->int_key = t == INT2OID || t == INT4OID || t == INT8OID;
	}

	/* The emitted lookup columns. */
	rule->nout = row->nout;
	rule->out_attnums = palloc(sizeof(AttrNumber) * Max(rule->nout, 1));
	for (int i = 0; i < rule->nout; i++)
	{
		AttrNumber	a = DatumGetInt16(row->out_attnums[i]);
		Form_pg_attribute att;
		char	   *name = TextDatumGetCString(row->out_names[i]);

		rule->out_attnums[i] = a;
		if (a < 1 || a > ldesc->natts || (att = TupleDescAttr(ldesc, a - 1))->attisdropped)
		{
			set_broken(rs, "column \"%s\" of lookup table \"%s\" (rule \"%s\") was dropped",
					   name, RelationGetRelationName(lookup), rule->name);
			TupleDescInitEntry(rs->emitted_desc, rs->ncols + 1, name, TEXTOID, -1, 0);
		}
		else
			TupleDescInitEntry(rs->emitted_desc, rs->ncols + 1, name, att->atttypid,
							   att->atttypmod, 0);
		init_column(&rs->cols[rs->ncols], name,
					TupleDescAttr(rs->emitted_desc, rs->ncols)->atttypid, rs->cxt);
		rs->ncols++;
	}
	table_close(lookup, AccessShareLock);
}

/*
 * An expression of a rule, checked: its Vars still mean what they meant,
 * one value per row.  Its source columns count as read.  False, with the
 * set broken, when it cannot be used.
 */
static bool
check_tree(FrRuleSet *rs, Node *node, const char *what, int ninner)
{
	VarCheck	vc = {rs, what, ninner};
	Bitmapset  *refs = NULL;

	(void) check_vars(node, &vc);
	if (rs->error != NULL)
		return false;

	/*
	 * One value per row: add_enrichment refuses the rest, but a rule stored
	 * by an older version must not stop the slot when compiled.
	 */
	if (expression_returns_set(node) || contain_agg_clause(node) || contain_window_function(node))
	{
		set_broken(rs, "%s is not a scalar expression (a set-returning, aggregate or window function)",
				   what);
		return false;
	}
	pull_varattnos(node, 1, &refs);
	rs->source_refs = bms_join(rs->source_refs, refs);
	return true;
}

/*
 * Does an expression read only the columns the rule's own lookup emits?
 * Then its value is the lookup row's, computed once per cached row.
 */
static bool
reads_only_lookup(FrRule *rule, Node *tree)
{
	ListCell   *lc;

	foreach(lc, pull_var_clause(tree, 0))
	{
		Var		   *v = lfirst_node(Var, lc);

		if (v->varno != INNER_VAR || v->varattno <= rule->first_col ||
			v->varattno > rule->first_col + rule->nout)
			return false;
	}
	return true;
}

static Var *
strip_var(Node *node)
{
	while (node != NULL && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	return node != NULL && IsA(node, Var) ? (Var *) node : NULL;
}

/* Is tree "decimal * integer" with a lookup's decimal (see ExactMul)? */
static ExactMul *
exact_mul(FrRuleSet *rs, Node *tree, int nrules_before)
{
	OpExpr	   *op;
	Var		   *dec = NULL;
	Var		   *intvar = NULL;
	ExactMul   *x;

	if (!IsA(tree, OpExpr) || (op = (OpExpr *) tree)->opfuncid != F_NUMERIC_MUL ||
		list_length(op->args) != 2)
		return NULL;
	for (int i = 0; i < 2; i++)
	{
		Node	   *arg = list_nth(op->args, i);
		Var		   *v = strip_var(arg);

		if (v != NULL && v->vartype == NUMERICOID && v->varno == INNER_VAR)
			dec = v;
		else if (IsA(arg, FuncExpr) &&
				 (((FuncExpr *) arg)->funcid == F_NUMERIC_INT4 ||
				  ((FuncExpr *) arg)->funcid == F_NUMERIC_INT8 ||
				  ((FuncExpr *) arg)->funcid == F_NUMERIC_INT2) &&
				 list_length(((FuncExpr *) arg)->args) == 1)
			intvar = strip_var(linitial(((FuncExpr *) arg)->args));
	}
	if (dec == NULL || intvar == NULL ||
		(intvar->vartype != INT2OID && intvar->vartype != INT4OID && intvar->vartype != INT8OID))
		return NULL;

	/* The decimal must be an out column of a rule so far (its lookup's). */
	x = palloc0(sizeof(ExactMul));
	x->dec_rule = -1;
	for (int r = 0; r <= nrules_before; r++)
	{
		FrRule	   *rule = &rs->rules[r];

		if (dec->varattno > rule->first_col && dec->varattno <= rule->first_col + rule->nout)
		{
			x->dec_rule = r;
			x->dec_out = dec->varattno - rule->first_col - 1;
		}
	}
	if (x->dec_rule < 0)
		return NULL;
	x->int_inner = intvar->varno == INNER_VAR;
	x->int_attno = intvar->varattno;
	x->int_type = intvar->vartype;
	return x;
}

/* Does the node read emitted column col (1-based)? */
static bool
reads_inner(Node *node, AttrNumber col)
{
	ListCell   *lc;

	if (node == NULL)
		return false;
	foreach(lc, pull_var_clause(node, 0))
	{
		Var		   *v = lfirst_node(Var, lc);

		if (v->varno == INNER_VAR && v->varattno == col)
			return true;
	}
	return false;
}

/* A column computed the exact way is written only: none may read it. */
static void
drop_exact_read_later(FrRuleSet *rs)
{
	for (int r = 0; r < rs->nrules; r++)
	{
		FrRule	   *rule = &rs->rules[r];

		for (int j = 0; j < rule->ncomputed; j++)
		{
			AttrNumber	col = rule->first_col + rule->nout + j + 1;

			if (rule->exact[j] == NULL)
				continue;
			for (int r2 = r; r2 < rs->nrules && rule->exact[j] != NULL; r2++)
			{
				FrRule	   *later = &rs->rules[r2];

				if (reads_inner(later->route_node, col))
					rule->exact[j] = NULL;
				for (int j2 = 0; j2 < later->ncomputed && rule->exact[j] != NULL; j2++)
					if (reads_inner(later->computed_nodes[j2], col))
						rule->exact[j] = NULL;
			}
		}
	}
}


/*
 * Whether the rows of a one-rule set may be answered by the lookup cache
 * alone (see CachedPath), and what they read then.
 */
static void
plan_cached_path(FrRuleSet *rs, FrRule *rule)
{
	CachedPath *cp = &rs->cached;

	if (!rule->int_key || rule->nkeys != 1 || rule->join_refs[0] <= 0 ||
		!OidIsValid(rule->lookup) ||
		(rule->key_from != NULL && OidIsValid(rule->key_from[0])) ||
		(rule->route_node != NULL && !rule->route_from_lookup) ||
		rule->ncomputed > FR_CACHED_PATH_MAX)
		return;
	for (int j = 0; j < rule->ncomputed; j++)
	{
		ExactMul   *x = rule->exact[j];
		FrColumn   *col = &rs->cols[rule->first_col + rule->nout + j];

		if (x == NULL || x->int_inner)
			return;
		cp->computed[j].dec_out = x->dec_out;
		cp->computed[j].int_attno = x->int_attno;
		cp->computed[j].int_type = x->int_type;
		cp->computed[j].json_name = col->json_name - 1;
		cp->computed[j].json_name_len = col->json_name_len + 1;
	}
	cp->has_route = rule->route_node != NULL;
	cp->key_attno = rule->join_refs[0];
	cp->key_typlen = rule->key_typlen[0];
	cp->ncomputed = rule->ncomputed;
	cp->usable = true;
}

/*
 * The state of a compiled set (FrRuleSetState), in the current context: the
 * executor's, the expressions ready to run (unless the set is broken: then
 * it is never applied), the lookup caches made on first use.
 */
static void
start_state(FrRuleSet *rs)
{
	FrRuleSetState *state = &rs->state;

	state->estate = CreateExecutorState();
	state->econtext = GetPerTupleExprContext(state->estate);
	state->scan_slot = MakeSingleTupleTableSlot(rs->source_desc, &TTSOpsVirtual);
	state->inner_slot = MakeSingleTupleTableSlot(rs->emitted_desc, &TTSOpsVirtual);
	/* apply_rules sets the columns read; the others are null for good. */
	for (int i = 0; i < rs->source_desc->natts; i++)
		state->scan_slot->tts_isnull[i] = true;
	state->econtext->ecxt_scantuple = state->scan_slot;
	state->econtext->ecxt_innertuple = state->inner_slot;
	state->cur = palloc0(sizeof(LookupEntry *) * rs->nrules);
	state->rules = palloc0(sizeof(FrRuleState) * rs->nrules);

	/*
	 * What each row must check or copy: the varlena source columns read (an
	 * unchanged out-of-line value cannot be), the highest one read.
	 */
	rs->varlena_refs = palloc(sizeof(AttrNumber) * Max(bms_num_members(rs->source_refs), 1));
	{
		int			i = -1;

		while ((i = bms_next_member(rs->source_refs, i)) >= 0)
		{
			AttrNumber	a = i + FirstLowInvalidHeapAttributeNumber;

			if (a < 1 || a > rs->source_desc->natts)
				continue;
			rs->max_ref = Max(rs->max_ref, a);
			if (TupleDescAttr(rs->source_desc, a - 1)->attlen == -1)
				rs->varlena_refs[rs->nvarlena_refs++] = a;
		}
	}
	for (int r = 0; r < rs->nrules; r++)
	{
		FrRule	   *rule = &rs->rules[r];
		FrRuleState *st = &state->rules[r];

		st->rule = rule;
		st->computed = palloc0(sizeof(ExprState *) * Max(rule->ncomputed, 1));
		if (rs->error != NULL)
			continue;
		for (int j = 0; j < rule->ncomputed; j++)
			st->computed[j] = ExecPrepareExpr((Expr *) rule->computed_nodes[j], state->estate);
		if (rule->route_node != NULL)
			st->route = ExecPrepareExpr((Expr *) rule->route_node, state->estate);
	}

	/* A row of such a set may be answered by its lookup cache alone. */
	if (rs->error == NULL && rs->nrules == 1)
		plan_cached_path(rs, &rs->rules[0]);
}

/*
 * Compiles rules (those of source, read by read_rules) into cxt; NULL when
 * there are none.
 */
static FrRuleSet *
compile_rules(Oid source, RuleRow *rows, int nrules, MemoryContext cxt)
{
	MemoryContext oldcxt;
	int			ncols = 0;
	FrRuleSet  *rs;
	Relation	rel;
	SourceMap	map;

	if (nrules == 0)
		return NULL;
	oldcxt = MemoryContextSwitchTo(cxt);

	rs = palloc0(sizeof(FrRuleSet));
	rs->source = source;
	rs->cxt = cxt;
	rs->nrules = nrules;
	rs->rules = palloc0(sizeof(FrRule) * nrules);
	for (int i = 0; i < nrules; i++)
		ncols += rows[i].nout + rows[i].ncomputed;
	rs->cols = palloc0(sizeof(FrColumn) * Max(ncols, 1));
	rs->emitted_desc = CreateTemplateTupleDesc(Max(ncols, 1));
	if (ncols == 0)
		TupleDescInitEntry(rs->emitted_desc, 1, "none", INT4OID, -1, 0);

	rel = RelationIdGetRelation(source);
	if (!RelationIsValid(rel))
		elog(ERROR, "could not open relation with OID %u", source);
	rs->source_desc = CreateTupleDescCopy(RelationGetDescr(rel));
	RelationClose(rel);

	for (int i = 0; i < nrules; i++)
	{
		FrRule	   *rule = &rs->rules[i];
		RuleRow    *row = &rows[i];

		rule->name = pstrdup(row->name);
		rule->lookup = row->lookup;
		rule->first_col = rs->ncols;
		place_source_columns(rs, row, get_rel_name(source), &map);
		compile_lookup(rs, rule, row);
		rule->ncomputed = row->ncomputed;
		rule->computed_what = palloc(sizeof(char *) * Max(row->ncomputed, 1));
		rule->computed_nodes = palloc0(sizeof(Node *) * Max(row->ncomputed, 1));
		rule->exact = palloc0(sizeof(ExactMul *) * Max(row->ncomputed, 1));
		for (int j = 0; j < row->ncomputed; j++)
		{
			char	   *name = TextDatumGetCString(row->computed_names[j]);
			Node	   *tree = stringToNode(TextDatumGetCString(row->computed_trees[j]));
			char	   *what = psprintf("computed column \"%s\" of rule \"%s\"", name, rule->name);

			if (map.n > 0)
				tree = source_map_mutator(tree, &map);

			rule->computed_what[j] = psprintf("computing column \"%s\" of enrichment rule \"%s\"",
											  name, rule->name);
			TupleDescInitEntry(rs->emitted_desc, rs->ncols + 1, name, exprType(tree),
							   exprTypmod(tree), 0);
			init_column(&rs->cols[rs->ncols], name, exprType(tree), cxt);
			(void) check_tree(rs, tree, what, rs->ncols);
			rule->computed_nodes[j] = tree;
			rule->exact[j] = exact_mul(rs, tree, i);
			rs->ncols++;
		}
		if (row->route_tree != NULL)
		{
			rule->route_what = psprintf("computing the route of enrichment rule \"%s\"",
										rule->name);
			rule->route_node = stringToNode(row->route_tree);
			if (map.n > 0)
				rule->route_node = source_map_mutator(rule->route_node, &map);
			(void) check_tree(rs, rule->route_node,
							  psprintf("the route of rule \"%s\"", rule->name), rs->ncols);
			rule->route_from_lookup = reads_only_lookup(rule, rule->route_node);
			rs->has_route = true;
		}

		/* What a miss emits: the out columns, null. */
		{
			StringInfoData buf;

			initStringInfo(&buf);
			for (int j = 0; j < rule->nout; j++)
			{
				FrColumn   *col = &rs->cols[rule->first_col + j];

				fr_append_bytes(&buf, col->json_name - 1, col->json_name_len + 1);
				fr_append_lit(&buf, "null");
			}
			rule->miss_json = buf.data;
			rule->miss_json_len = buf.len;
		}
	}
	drop_exact_read_later(rs);
	start_state(rs);
	MemoryContextSwitchTo(oldcxt);
	return rs;
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

			entry->set = compile_rules(source, rows, n, rc->cxt);
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

		return compile_rules(source, rows, n, CurrentMemoryContext);
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

			entry->set = compile_rules(source, rows, n, cxt);
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
			is_int_type(TupleDescAttr(desc, key_attnum - 1)->atttypid);
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
			return compile_rules(source, builtin_rule(source, product_attnum, quantity_attnum),
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
