/*-------------------------------------------------------------------------
 *
 * fundrecs_enrich.c
 *	  Applying the enrichment rules (fundrecs.enrichment_rules, written by
 *	  fundrecs_rules.c) to a change: the rules of its table as of the
 *	  change, their lookups, computed columns and route.
 *
 * The rules table and the lookup tables are user catalog tables, read
 * through the historic snapshot that decoding installs: a change sees the
 * rules and the lookup rows as they were when it was made.  A table's
 * rules are compiled once into an FrRuleSet (the lookups' key scan, the
 * expressions ready for the executor, the emitted columns' JSON names) and
 * its lookups' results are cached, both with the products' rule (see
 * fundrecs_products.c): the cache is used by a change only when no
 * transaction that changed the catalogs committed between the cache's
 * start and the change and the change's own transaction changed none, and
 * it is emptied at the commit of every such transaction.  Other changes
 * compile and look up directly, in the per-change memory context.
 *
 * The initial load has a cache of its own, read through its snapshot.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/genam.h"
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

#define FR_RULES_TABLE "enrichment_rules"

/* Lookup results kept per rule before the cache starts again. */
#define FR_RULE_CACHE_MAX 1000000
/* Integer keys below this are also found by index (see lookup). */
#define FR_DENSE_KEYS (1 << 20)
/* Route values kept per rule set before starting again. */
#define FR_ROUTE_CACHE_MAX 10000

/* A lookup's result, cached by the key's bytes. */
typedef struct LookupKey
{
	const char *bytes;
	int			len;
} LookupKey;

typedef struct LookupEntry
{
	LookupKey	key;			/* must be first */
	bool		found;
	Datum	   *values;			/* the rule's out columns */
	bool	   *nulls;
	char	   *json;			/* ,"name":value... of the out columns */
	int			json_len;
	const char *route_json;		/* route_from_lookup: its route, once known */
	int			route_len;
	int64	   *units;			/* numeric out columns as 10^-scale units */
	int8	   *scales;			/* -1: not a numeric, or not exact */
} LookupEntry;

/*
 * A computed column "decimal * integer" whose decimal is a lookup column:
 * computed in int64 when exact, as numeric_mul would give it (the built-in
 * enrichment's price x quantity does the same).  Only where no later
 * expression reads the column: it is written, not kept.
 */
typedef struct ExactMul
{
	int			dec_rule;		/* the rule whose lookup emits the decimal */
	int			dec_out;		/* its out column */
	bool		int_inner;		/* the integer: emitted column or row's */
	AttrNumber	int_attno;
	Oid			int_type;
} ExactMul;

typedef struct RouteEntry
{
	LookupKey	key;			/* the route's value; must be first */
	char	   *json;			/* its slug, quoted */
	int			json_len;
} RouteEntry;

typedef struct FrRule
{
	char	   *name;
	Oid			lookup;
	Oid			lookup_index;
	int			nkeys;
	AttrNumber *key_attnums;	/* the lookup's key columns (heap attnums) */
	int16	   *join_refs;		/* > 0 source attnum; -n the n-th emitted */
	FmgrInfo   *key_eq;
	Oid		   *key_coll;
	int16	   *key_typlen;
	bool	   *key_typbyval;
	int			nout;
	AttrNumber *out_attnums;
	int			first_col;		/* its first emitted column's index */
	int			ncomputed;
	char	  **computed_what;	/* for the error context */
	ExprState **computed;
	Node	  **computed_nodes;
	ExactMul  **exact;			/* per computed column, NULL: none */
	char	   *route_what;
	Node	   *route_node;
	ExprState  *route;			/* NULL: none */
	bool		route_from_lookup;	/* it reads only this rule's lookup */
	char	   *miss_json;		/* the out columns, all null */
	int			miss_json_len;
	HTAB	   *cache;			/* LookupEntry; made on first use */
	MemoryContext cache_cxt;	/* holds it, reset when it is full */
	long		cache_entries;
	LookupEntry *last;			/* the entry found last: runs of one key */
	bool		int_key;		/* one int2, int4 or int8 key column */
	LookupEntry **dense;		/* int_key: entries of keys 0..dense_size-1 */
	int64		dense_size;
	StringInfoData keybuf;		/* scratch: a key's bytes */
} FrRule;

struct FrRuleSet
{
	Oid			source;
	MemoryContext cxt;
	int			nrules;
	FrRule	   *rules;
	int			ncols;			/* emitted columns, all rules */
	FrColumn   *cols;
	TupleDesc	source_desc;
	TupleDesc	emitted_desc;
	bool		has_route;
	Bitmapset  *source_refs;	/* source attnums read (offset as
								 * pull_varattnos) */
	char	   *error;			/* why the rules cannot be applied now */
	EState	   *estate;
	ExprContext *econtext;
	TupleTableSlot *scan_slot;
	TupleTableSlot *inner_slot;
	LookupEntry **cur;			/* per rule, the row's lookup (NULL: none) */
	HTAB	   *routes;			/* route text -> quoted slug */
	long		route_entries;
	MemoryContext route_cxt;	/* holds them */
};


/* A cache of rule sets: the decoder's, or one initial load's. */
struct FrRulesCache
{
	MemoryContext cxt;			/* reset with the cache */
	HTAB	   *sets;			/* Oid -> FrRuleSet * (NULL: no rules) */
	Oid			last_source;	/* the table asked for last, and its rules */
	FrRuleSet  *last_set;
	uint64		epoch;
};

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
	AttrNumber	att[16];
} RulesTable;

enum
{
	RT_RULE_ID, RT_SOURCE, RT_NAME, RT_LOOKUP, RT_LOOKUP_KEY, RT_JOIN_REFS, RT_OUT_NAMES,
	RT_OUT_ATTNUMS, RT_COMPUTED_NAMES, RT_COMPUTED_TREES, RT_ROUTE_TREE, RT_NATTS
};

static const char *const rt_names[RT_NATTS] = {
	"rule_id", "source", "name", "lookup", "lookup_key", "join_refs", "out_names",
	"out_attnums", "computed_names", "computed_trees", "route_tree"
};

static FrRulesCache *decode_cache = NULL;
static MemoryContext decode_owner_cxt = NULL;
static RulesTable rules_table;
static uint64 rules_epoch = 1;

/* Rule sets compiled for changes the cache may not serve (uncached_rules). */
static MemoryContext versioned_cxt = NULL;
static HTAB *versioned_sets = NULL;
static bool versioned_stale = false;
static bool versioned_callback_registered = false;

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
	rc->epoch = ++rules_epoch;
	rc->last_source = InvalidOid;
	rc->last_set = NULL;
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
decode_forget(void *arg)
{
	decode_owner_cxt = NULL;
	decode_cache = NULL;
	versioned_cxt = NULL;
	versioned_sets = NULL;
}

void
fr_rules_init(MemoryContext parent)
{
	static MemoryContextCallback forget = {decode_forget, NULL, NULL};

	fr_rules_shutdown();
	decode_owner_cxt = AllocSetContextCreate(parent, "fundrecs rules owner",
											 ALLOCSET_SMALL_SIZES);
	MemoryContextRegisterResetCallback(decode_owner_cxt, &forget);
	decode_cache = fr_rules_cache_create(decode_owner_cxt);
}

void
fr_rules_shutdown(void)
{
	if (decode_owner_cxt != NULL)
		MemoryContextDelete(decode_owner_cxt);
	Assert(decode_cache == NULL);
}

/* The decoder's cache starts again (the products' rule says when). */
void
fr_rules_reset(void)
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
		if (rules_table.att[i] == InvalidAttrNumber)
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

	lookup = try_table_open(rule->lookup, AccessShareLock);
	if (lookup == NULL)
	{
		set_broken(rs, "lookup table of rule \"%s\" (OID %u) was dropped", rule->name,
				   rule->lookup);
		return;
	}
	ldesc = RelationGetDescr(lookup);
	rule->lookup_index = fr_primary_key_index(lookup);
	if (!OidIsValid(rule->lookup_index))
	{
		set_broken(rs, "lookup table \"%s\" of rule \"%s\" has no primary key",
				   RelationGetRelationName(lookup), rule->name);
		table_close(lookup, AccessShareLock);
		return;
	}
	index = index_open(rule->lookup_index, AccessShareLock);
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
		if (jtype != TupleDescAttr(ldesc, rule->key_attnums[k] - 1)->atttypid)
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

static ExprState *
compile_tree(FrRuleSet *rs, const char *tree, const char *what, int ninner)
{
	Node	   *node = stringToNode(tree);
	VarCheck	vc = {rs, what, ninner};
	Bitmapset  *refs = NULL;

	(void) check_vars(node, &vc);
	if (rs->error != NULL)
		return NULL;
	pull_varattnos(node, 1, &refs);
	rs->source_refs = bms_join(rs->source_refs, refs);
	return ExecPrepareExpr((Expr *) node, rs->estate);
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
 * Appends an ExactMul's value when it can: false to evaluate it instead.
 * *null tells whether it is NULL.
 */
static bool
append_exact(FrRuleSet *rs, ExactMul *x, StringInfo json, bool *null)
{
	LookupEntry *e = rs->cur[x->dec_rule];
	TupleTableSlot *slot = x->int_inner ? rs->inner_slot : rs->scan_slot;
	int64		q;

	if (e == NULL)
		return false;
	*null = e->nulls[x->dec_out] || slot->tts_isnull[x->int_attno - 1];
	if (*null)
	{
		fr_append_lit(json, "null");
		return true;
	}
	if (e->scales[x->dec_out] < 0)
		return false;
	switch (x->int_type)
	{
		case INT2OID:
			q = DatumGetInt16(slot->tts_values[x->int_attno - 1]);
			break;
		case INT4OID:
			q = DatumGetInt32(slot->tts_values[x->int_attno - 1]);
			break;
		default:
			q = DatumGetInt64(slot->tts_values[x->int_attno - 1]);
			break;
	}
	return fr_json_append_scaled_product(json, e->units[x->dec_out], e->scales[x->dec_out], q);
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

	rs->estate = CreateExecutorState();
	rs->econtext = GetPerTupleExprContext(rs->estate);
	rs->scan_slot = MakeSingleTupleTableSlot(rs->source_desc, &TTSOpsVirtual);
	rs->inner_slot = MakeSingleTupleTableSlot(rs->emitted_desc, &TTSOpsVirtual);
	rs->econtext->ecxt_scantuple = rs->scan_slot;
	rs->econtext->ecxt_innertuple = rs->inner_slot;

	for (int i = 0; i < nrules; i++)
	{
		FrRule	   *rule = &rs->rules[i];
		RuleRow    *row = &rows[i];

		rule->name = pstrdup(row->name);
		rule->lookup = row->lookup;
		rule->first_col = rs->ncols;
		compile_lookup(rs, rule, row);
		rule->ncomputed = row->ncomputed;
		rule->computed = palloc0(sizeof(ExprState *) * Max(row->ncomputed, 1));
		rule->computed_what = palloc(sizeof(char *) * Max(row->ncomputed, 1));
		rule->computed_nodes = palloc0(sizeof(Node *) * Max(row->ncomputed, 1));
		rule->exact = palloc0(sizeof(ExactMul *) * Max(row->ncomputed, 1));
		for (int j = 0; j < row->ncomputed; j++)
		{
			char	   *name = TextDatumGetCString(row->computed_names[j]);
			Node	   *tree = stringToNode(TextDatumGetCString(row->computed_trees[j]));
			char	   *what = psprintf("computed column \"%s\" of rule \"%s\"", name, rule->name);

			rule->computed_what[j] = psprintf("computing column \"%s\" of enrichment rule \"%s\"",
											  name, rule->name);
			TupleDescInitEntry(rs->emitted_desc, rs->ncols + 1, name, exprType(tree),
							   exprTypmod(tree), 0);
			init_column(&rs->cols[rs->ncols], name, exprType(tree), cxt);
			rule->computed[j] = compile_tree(rs, TextDatumGetCString(row->computed_trees[j]),
											 what, rs->ncols);
			rule->computed_nodes[j] = tree;
			rule->exact[j] = exact_mul(rs, tree, i);
			rs->ncols++;
		}
		if (row->route_tree != NULL)
		{
			rule->route_what = psprintf("computing the route of enrichment rule \"%s\"",
										rule->name);
			rule->route = compile_tree(rs, row->route_tree,
									   psprintf("the route of rule \"%s\"", rule->name),
									   rs->ncols);
			rule->route_node = stringToNode(row->route_tree);
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
	rs->cur = palloc0(sizeof(LookupEntry *) * nrules);
	MemoryContextSwitchTo(oldcxt);
	return rs;
}

/* A table's rules from the cache, compiled on first use. */
static FrRuleSet *
cached_rules(FrRulesCache *rc, Snapshot snapshot, Oid source)
{
	SetEntry   *entry;
	bool		found;

	if (source == rc->last_source)
		return rc->last_set;
	entry = hash_search(rc->sets, &source, HASH_ENTER, &found);
	if (!found)
	{
		entry->set = NULL;
		PG_TRY();
		{
			int			n;
			RuleRow    *rows = read_rules(source, snapshot, &n);

			entry->set = compile_rules(source, rows, n, rc->cxt);
		}
		PG_CATCH();
		{
			hash_search(rc->sets, &source, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	rc->last_source = source;
	rc->last_set = entry->set;
	return entry->set;
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

static void
versioned_invalidate(Datum arg, Oid relid)
{
	versioned_stale = true;
}

static FrRuleSet *
uncached_rules(Oid source)
{
	int			n;
	RuleRow    *rows = read_rules(source, NULL, &n);
	StringInfoData versions;
	char		key[64];
	VersionedSet *entry;
	bool		found;

	if (n == 0)
		return NULL;
	if (decode_owner_cxt == NULL)
		return compile_rules(source, rows, n, CurrentMemoryContext);
	if (!versioned_callback_registered)
	{
		CacheRegisterRelcacheCallback(versioned_invalidate, (Datum) 0);
		versioned_callback_registered = true;
	}
	if (versioned_cxt == NULL || versioned_stale ||
		hash_get_num_entries(versioned_sets) >= FR_VERSIONED_MAX)
	{
		HASHCTL		ctl;

		if (versioned_cxt == NULL)
			versioned_cxt = AllocSetContextCreate(decode_owner_cxt, "fundrecs versioned rules",
												  ALLOCSET_DEFAULT_SIZES);
		else
			MemoryContextReset(versioned_cxt);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(key);
		ctl.entrysize = sizeof(VersionedSet);
		ctl.hcxt = versioned_cxt;
		versioned_sets = hash_create("fundrecs versioned rules", 16, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		versioned_stale = false;
	}

	initStringInfo(&versions);
	for (int i = 0; i < n; i++)
		appendStringInfo(&versions, "%lld:%u,", (long long) rows[i].rule_id, rows[i].xmin);
	memset(key, 0, sizeof(key));
	snprintf(key, sizeof(key), "%u/%d/%08x", source, n,
			 hash_bytes((unsigned char *) versions.data, versions.len));
	entry = hash_search(versioned_sets, key, HASH_ENTER, &found);
	/* The versions themselves decide: a hash is not a proof. */
	if (!found || strcmp(entry->versions, versions.data) != 0)
	{
		entry->set = NULL;
		entry->versions = MemoryContextStrdup(versioned_cxt, versions.data);
		PG_TRY();
		{
			MemoryContext cxt = AllocSetContextCreate(versioned_cxt, "fundrecs rule set",
													  ALLOCSET_SMALL_SIZES);

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

/*
 * The rules of relation source as of the change (lsn), NULL when it has
 * none.  load: the initial load's cache, else the decoder's.
 */
FrRuleSet *
fr_rules_get(FrRulesCache *load, Snapshot snapshot, Oid source, XLogRecPtr lsn)
{
	FrRulesCache *rc = load != NULL ? load : decode_cache;

	if (rc == NULL)
		return NULL;			/* not decoding, not loading */
	if (load == NULL && !fr_products_cache_usable(lsn))
		return uncached_rules(source);
	return cached_rules(rc, snapshot, source);
}

/* ----------------------------------------------------------------
 * Applying them to a row
 * ----------------------------------------------------------------
 */

/* The key's bytes, for the cache: equal bytes mean equal keys. */
static void
key_bytes(FrRule *rule, Datum *key, StringInfo buf)
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

static uint32
lookup_key_hash(const void *key, Size keysize)
{
	const LookupKey *k = key;

	return hash_bytes((const unsigned char *) k->bytes, k->len);
}

static int
lookup_key_match(const void *a, const void *b, Size keysize)
{
	const LookupKey *x = a;
	const LookupKey *y = b;

	return x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0 ? 0 : 1;
}

/* Reads the lookup row of key into e (in the current memory context). */
static void
lookup_direct(FrRuleSet *rs, FrRule *rule, Datum *key, Snapshot snapshot, LookupEntry *e)
{
	Relation	rel = table_open(rule->lookup, AccessShareLock);
	ScanKeyData skeys[INDEX_MAX_KEYS];
	SysScanDesc scan;
	HeapTuple	tuple;
	StringInfoData json;

	for (int k = 0; k < rule->nkeys; k++)
		ScanKeyEntryInitializeWithInfo(&skeys[k], 0, rule->key_attnums[k],
									   BTEqualStrategyNumber, InvalidOid, rule->key_coll[k],
									   &rule->key_eq[k], key[k]);
	scan = systable_beginscan(rel, rule->lookup_index, true, snapshot, rule->nkeys, skeys);
	tuple = systable_getnext(scan);
	e->found = HeapTupleIsValid(tuple);
	e->values = palloc(sizeof(Datum) * Max(rule->nout, 1));
	e->nulls = palloc(sizeof(bool) * Max(rule->nout, 1));
	e->units = palloc0(sizeof(int64) * Max(rule->nout, 1));
	e->scales = palloc(sizeof(int8) * Max(rule->nout, 1));
	memset(e->scales, -1, sizeof(int8) * Max(rule->nout, 1));
	if (e->found)
	{
		TupleDesc	desc = RelationGetDescr(rel);
		Datum	   *v = palloc(sizeof(Datum) * desc->natts);
		bool	   *n = palloc(sizeof(bool) * desc->natts);

		heap_deform_tuple(tuple, desc, v, n);
		initStringInfo(&json);
		for (int i = 0; i < rule->nout; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, rule->out_attnums[i] - 1);
			FrColumn   *col = &rs->cols[rule->first_col + i];

			e->nulls[i] = n[rule->out_attnums[i] - 1];
			if (e->nulls[i])
				e->values[i] = (Datum) 0;
			else if (att->attlen == -1)
			{
				if (att->atttypid == NUMERICOID)
				{
					int			scale;
					char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out,
																		   v[rule->out_attnums[i] - 1]));

					if (fr_parse_exact_decimal(text, &e->units[i], &scale) && scale <= 18)
						e->scales[i] = (int8) scale;
				}

				/*
				 * Kept with a 4-byte header, as functions want it: a short
				 * one would be copied on every use.
				 */
				e->values[i] = PointerGetDatum(PG_DETOAST_DATUM_COPY(v[rule->out_attnums[i] - 1]));
			}
			else
				e->values[i] = datumCopy(v[rule->out_attnums[i] - 1], att->attbyval, att->attlen);
			fr_append_bytes(&json, col->json_name - 1, col->json_name_len + 1);
			if (e->nulls[i])
				fr_append_lit(&json, "null");
			else
				fr_json_append_value(&json, col, e->values[i]);
		}
		e->json = json.data;
		e->json_len = json.len;
		pfree(v);
		pfree(n);
	}
	else
	{
		for (int i = 0; i < rule->nout; i++)
			e->nulls[i] = true;
		e->json = rule->miss_json;
		e->json_len = rule->miss_json_len;
	}
	e->route_json = NULL;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/* Fills a new cache entry, in the cache's memory. */
static void
lookup_into(FrRuleSet *rs, FrRule *rule, Datum *key, Snapshot snapshot, LookupEntry *e,
			StringInfo keybytes)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(rule->cache_cxt);
	char	   *copy = palloc(keybytes->len);

	memcpy(copy, keybytes->data, keybytes->len);
	lookup_direct(rs, rule, key, snapshot, e);
	e->key.bytes = copy;
	MemoryContextSwitchTo(oldcxt);
}

/* A rule's lookup cache, new or started again when full. */
static void
rule_cache_start(FrRuleSet *rs, FrRule *rule)
{
	HASHCTL		ctl;
	MemoryContext oldcxt;

	if (rule->cache_cxt == NULL)
		rule->cache_cxt = AllocSetContextCreate(rs->cxt, "fundrecs rule lookups",
												ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(rule->cache_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(LookupKey);
	ctl.entrysize = sizeof(LookupEntry);
	ctl.hash = lookup_key_hash;
	ctl.match = lookup_key_match;
	ctl.hcxt = rule->cache_cxt;
	rule->cache = hash_create("fundrecs rule lookups", 1024, &ctl,
							  HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	rule->cache_entries = 0;
	rule->last = NULL;
	rule->dense = NULL;
	rule->dense_size = 0;
	oldcxt = MemoryContextSwitchTo(rule->cache_cxt);
	initStringInfo(&rule->keybuf);
	MemoryContextSwitchTo(oldcxt);
}

static LookupEntry *lookup_hashed(FrRuleSet *rs, FrRule *rule, Datum *key, Snapshot snapshot);
static void remember_dense(FrRule *rule, int64 id, LookupEntry *e);

static LookupEntry *
lookup(FrRuleSet *rs, FrRule *rule, Datum *key, Snapshot snapshot, bool cacheable)
{
	LookupEntry *e;

	if (!cacheable)
	{
		e = palloc0(sizeof(LookupEntry));
		lookup_direct(rs, rule, key, snapshot, e);
		return e;
	}
	if (rule->cache == NULL || rule->cache_entries >= FR_RULE_CACHE_MAX)
		rule_cache_start(rs, rule);

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

		if (id >= 0 && id < rule->dense_size && rule->dense[id] != NULL)
			return rule->dense[id];
		e = lookup_hashed(rs, rule, key, snapshot);
		if (id >= 0 && id < FR_DENSE_KEYS)
			remember_dense(rule, id, e);
		return e;
	}
	return lookup_hashed(rs, rule, key, snapshot);
}

/* Sets dense[id], growing the array to hold it. */
static void
remember_dense(FrRule *rule, int64 id, LookupEntry *e)
{
	if (id >= rule->dense_size)
	{
		int64		size = Max(rule->dense_size, 1024);

		while (size <= id)
			size *= 2;
		size = Min(size, FR_DENSE_KEYS);
		if (rule->dense == NULL)
			rule->dense = MemoryContextAllocZero(rule->cache_cxt, sizeof(LookupEntry *) * size);
		else
		{
			rule->dense = repalloc(rule->dense, sizeof(LookupEntry *) * size);
			memset(rule->dense + rule->dense_size, 0,
				   sizeof(LookupEntry *) * (size - rule->dense_size));
		}
		rule->dense_size = size;
	}
	rule->dense[id] = e;
}

/* A lookup through the cache's hash table. */
static LookupEntry *
lookup_hashed(FrRuleSet *rs, FrRule *rule, Datum *key, Snapshot snapshot)
{
	StringInfoData buf;
	LookupKey	k;
	LookupEntry *e;
	bool		found;

	/* The key's bytes, in a scratch buffer; copied when entered. */
	buf = rule->keybuf;
	resetStringInfo(&buf);
	key_bytes(rule, key, &buf);
	rule->keybuf = buf;
	if (rule->last != NULL && rule->last->key.len == buf.len &&
		memcmp(rule->last->key.bytes, buf.data, buf.len) == 0)
		return rule->last;
	k.bytes = buf.data;
	k.len = buf.len;
	e = hash_search(rule->cache, &k, HASH_ENTER, &found);
	if (found)
	{
		rule->last = e;
		return e;
	}

	PG_TRY();
	{
		lookup_into(rs, rule, key, snapshot, e, &buf);
	}
	PG_CATCH();
	{
		hash_search(rule->cache, &k, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	rule->cache_entries++;
	rule->last = e;
	return e;
}

/* The quoted slug of a route's value (len bytes), remembered per rule set. */
static void
route_json(FrRuleSet *rs, const char *value, int len, FrEnriched *out)
{
	RouteEntry *e;
	bool		found;
	LookupKey	k;

	if (rs->routes == NULL || rs->route_entries >= FR_ROUTE_CACHE_MAX)
	{
		HASHCTL		ctl;

		if (rs->route_cxt == NULL)
			rs->route_cxt = AllocSetContextCreate(rs->cxt, "fundrecs routes",
												  ALLOCSET_SMALL_SIZES);
		else
			MemoryContextReset(rs->route_cxt);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(LookupKey);
		ctl.entrysize = sizeof(RouteEntry);
		ctl.hash = lookup_key_hash;
		ctl.match = lookup_key_match;
		ctl.hcxt = rs->route_cxt;
		rs->routes = hash_create("fundrecs routes", 64, &ctl,
								 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
		rs->route_entries = 0;
	}
	k.bytes = value;
	k.len = len;
	e = hash_search(rs->routes, &k, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(rs->route_cxt);
		char	   *copy = palloc(len + 1);

		memcpy(copy, value, len);
		copy[len] = '\0';
		e->key.bytes = copy;
		e->json = fr_json_quote(fr_category_slug(copy));
		e->json_len = strlen(e->json);
		MemoryContextSwitchTo(oldcxt);
		rs->route_entries++;
	}
	out->route_json = e->json;
	out->route_len = e->json_len;
}

/* For the CONTEXT line of an error while evaluating. */
typedef struct ApplyContext
{
	FrRuleSet  *rs;
	const char *what;
	const char *relname;
	XLogRecPtr	lsn;
} ApplyContext;

static void
apply_error_context(void *arg)
{
	ApplyContext *ac = arg;

	if (ac->what != NULL)
		errcontext("%s, for the change at %X/%X of table \"%s\"", ac->what,
				   LSN_FORMAT_ARGS(ac->lsn), ac->relname);
}

static void
apply_rules(FrRuleSet *rs, Datum *values, bool *isnull, int natts, Snapshot snapshot,
			bool cacheable, FrEnriched *out, ApplyContext *ac)
{
	TupleTableSlot *scan = rs->scan_slot;
	TupleTableSlot *inner = rs->inner_slot;
	ExprContext *econtext = rs->econtext;
	StringInfo	json = &out->json;

	ExecClearTuple(scan);
	for (int i = 0; i < rs->source_desc->natts; i++)
	{
		scan->tts_values[i] = i < natts ? values[i] : (Datum) 0;
		scan->tts_isnull[i] = i < natts ? isnull[i] : true;
	}
	ExecStoreVirtualTuple(scan);
	ExecClearTuple(inner);
	for (int i = 0; i < inner->tts_tupleDescriptor->natts; i++)
		inner->tts_isnull[i] = true;
	ExecStoreVirtualTuple(inner);

	for (int r = 0; r < rs->nrules; r++)
	{
		FrRule	   *rule = &rs->rules[r];
		Datum		key[INDEX_MAX_KEYS];
		bool		miss = false;
		LookupEntry *e = NULL;

		for (int k = 0; k < rule->nkeys; k++)
		{
			int16		ref = rule->join_refs[k];
			bool		null = ref > 0 ? scan->tts_isnull[ref - 1] : inner->tts_isnull[-ref - 1];

			key[k] = ref > 0 ? scan->tts_values[ref - 1] : inner->tts_values[-ref - 1];
			if (null)
				miss = true;
		}
		rs->cur[r] = NULL;
		if (miss)
		{
			fr_append_bytes(json, rule->miss_json, rule->miss_json_len);
			/* inner columns stay null */
		}
		else
		{
			e = lookup(rs, rule, key, snapshot, cacheable);
			rs->cur[r] = e;
			fr_append_bytes(json, e->json, e->json_len);
			for (int i = 0; i < rule->nout; i++)
			{
				inner->tts_values[rule->first_col + i] = e->values[i];
				inner->tts_isnull[rule->first_col + i] = e->nulls[i];
			}
		}

		for (int j = 0; j < rule->ncomputed; j++)
		{
			int			c = rule->first_col + rule->nout + j;
			FrColumn   *col = &rs->cols[c];
			bool		null;
			Datum		d;

			ac->what = rule->computed_what[j];
			fr_append_bytes(json, col->json_name - 1, col->json_name_len + 1);
			if (rule->exact[j] != NULL && append_exact(rs, rule->exact[j], json, &null))
			{
				/* written; no expression reads it */
				inner->tts_values[c] = (Datum) 0;
				inner->tts_isnull[c] = true;
				continue;
			}
			d = ExecEvalExprSwitchContext(rule->computed[j], econtext, &null);
			inner->tts_values[c] = d;
			inner->tts_isnull[c] = null;
			if (null)
				fr_append_lit(json, "null");
			else
				fr_json_append_value(json, col, d);
		}
		if (rule->route != NULL && e != NULL && e->route_json != NULL)
		{
			out->route_json = e->route_json;
			out->route_len = e->route_len;
		}
		else if (rule->route != NULL)
		{
			bool		null;
			Datum		d;

			ac->what = rule->route_what;
			d = ExecEvalExprSwitchContext(rule->route, econtext, &null);
			if (null)
			{
				out->route_json = "\"" FR_ROUTE_UNCATEGORIZED "\"";
				out->route_len = strlen(out->route_json);
			}
			else
			{
				struct varlena *t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));

				route_json(rs, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), out);
			}
			/* The route and the cached row live as long as the rule set. */
			if (rule->route_from_lookup && e != NULL && cacheable)
			{
				e->route_json = MemoryContextStrdup(rule->cache_cxt, out->route_json);
				e->route_len = out->route_len;
			}
		}
		ac->what = NULL;
	}
}

/*
 * Enriches one row (values/isnull in the rule source's columns) into out:
 * the emitted columns' JSON, each after a comma, and the route when a rule
 * has one.  Evaluation errors follow on_enrich_error: an ERROR naming the
 * rule, the change and the table, or out->error with the row unenriched.
 */
void
fr_rules_apply(FrRuleSet *rs, const FrOptions *opts, Datum *values, bool *isnull, int natts,
			   const FrRowMeta *meta, const char *relname, FrEnriched *out)
{
	ApplyContext ac = {rs, NULL, relname, meta->lsn};
	ErrorContextCallback errcb;
	Snapshot	snapshot = meta->load != NULL ? meta->load->snapshot : NULL;
	bool		cacheable = meta->load != NULL || fr_products_cache_usable(meta->lsn);

	initStringInfo(&out->json);
	out->route_json = NULL;
	out->route_len = 0;
	out->error = NULL;

	/* A column the change does not carry cannot be read. */
	if (meta->toast_pointers_unchanged)
	{
		int			i = -1;

		while ((i = bms_next_member(rs->source_refs, i)) >= 0)
		{
			int			a = i + FirstLowInvalidHeapAttributeNumber;
			Form_pg_attribute att;

			if (a < 1 || a > natts || isnull[a - 1])
				continue;
			att = TupleDescAttr(rs->source_desc, a - 1);
			if (att->attlen == -1 &&
				VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(values[a - 1])))
			{
				out->error = psprintf("column \"%s\", which an enrichment rule reads, is an unchanged out-of-line value the change does not carry (set REPLICA IDENTITY FULL on the table)",
									  NameStr(att->attname));
				break;
			}
		}
	}
	if (out->error == NULL && rs->error != NULL)
		out->error = rs->error;
	if (out->error != NULL)
	{
		if (opts->on_enrich_error == FR_ENRICH_ERROR_FAIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("could not enrich the change at %X/%X of table \"%s\"",
							LSN_FORMAT_ARGS(meta->lsn), relname),
					 errdetail("The %s.", out->error),
					 errhint("Fix or drop the rule with fundrecs.drop_enrichment(), or set on_enrich_error to emit to ship such rows unenriched with route \"%s\".",
							 FR_ROUTE_ERROR)));
		return;
	}

	errcb.callback = apply_error_context;
	errcb.arg = &ac;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	if (opts->on_enrich_error == FR_ENRICH_ERROR_FAIL)
		apply_rules(rs, values, isnull, natts, snapshot, cacheable, out, &ac);
	else
	{
		/*
		 * An evaluation error (a division by zero, an overflow) is caught in
		 * a subtransaction, as PL/pgSQL catches one: the row is emitted
		 * unenriched, with the error's message.
		 */
		MemoryContext oldcxt = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		PG_TRY();
		{
			apply_rules(rs, values, isnull, natts, snapshot, cacheable, out, &ac);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(oldcxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			out->error = ac.what != NULL ? psprintf("%s: %s", ac.what, edata->message) :
				pstrdup(edata->message);
			resetStringInfo(&out->json);
			out->route_json = NULL;
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
	error_context_stack = errcb.previous;
	ResetExprContext(rs->econtext);
}

/* Does the rule set give a route? */
bool
fr_rules_have_route(FrRuleSet *rs)
{
	return rs->has_route;
}

/* The lookup tables of source's rules as of now, for privilege checks. */
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
