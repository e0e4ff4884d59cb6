/*-------------------------------------------------------------------------
 *
 * fundrecs_compile.c
 *	  A table's enrichment rules (RuleRow, read by fundrecs_ruleset.c from
 *	  the rules table, or the orders' built-in rule made in memory)
 *	  compiled into an FrRuleSet: the lookups' key scans, the columns
 *	  placed by name after a restore, the expressions checked (their Vars,
 *	  one value per row) and ready for the executor, the exact products,
 *	  the owner's rights on each lookup; then the set's state (start_state).
 *	  What cannot be compiled breaks the set with a reason, applied per
 *	  on_enrich_error; it never stops the slot.
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

/*
 * The lookup columns a rule emits, as columns of the output; lookup NULL:
 * the built-in rule without its table (the types it would have).
 */
static void
compile_out_columns(FrRuleSet *rs, FrRule *rule, RuleRow *row, Relation lookup)
{
	TupleDesc	ldesc = lookup ? RelationGetDescr(lookup) : NULL;

	rule->nout = row->nout;
	rule->out_attnums = palloc0(sizeof(AttrNumber) * Max(rule->nout, 1));
	for (int i = 0; i < rule->nout; i++)
	{
		AttrNumber	a = DatumGetInt16(row->out_attnums[i]);
		Form_pg_attribute att;
		char	   *name = TextDatumGetCString(row->out_names[i]);

		if (lookup == NULL)
			TupleDescInitEntry(rs->emitted_desc, rs->ncols + 1, name, row->out_types[i], -1, 0);
		else if (a < 1 || a > ldesc->natts || (att = TupleDescAttr(ldesc, a - 1))->attisdropped)
		{
			set_broken(rs, "column \"%s\" of lookup table \"%s\" (rule \"%s\") was dropped",
					   name, RelationGetRelationName(lookup), rule->name);
			TupleDescInitEntry(rs->emitted_desc, rs->ncols + 1, name, TEXTOID, -1, 0);
		}
		else
		{
			rule->out_attnums[i] = a;
			TupleDescInitEntry(rs->emitted_desc, rs->ncols + 1, name, att->atttypid,
							   att->atttypmod, 0);
		}
		init_column(&rs->cols[rs->ncols], name,
					TupleDescAttr(rs->emitted_desc, rs->ncols)->atttypid, rs->cxt);
		rs->ncols++;
	}
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
		compile_out_columns(rs, rule, row, NULL);
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
		if (row->builtin && fr_is_int_type(getBaseType(jtype)) &&
			fr_is_int_type(TupleDescAttr(ldesc, rule->key_attnums[k] - 1)->atttypid))
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

	compile_out_columns(rs, rule, row, lookup);
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
FrRuleSet *
fr_rules_compile(Oid source, RuleRow *rows, int nrules, MemoryContext cxt)
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
