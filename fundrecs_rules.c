/*-------------------------------------------------------------------------
 *
 * fundrecs_rules.c
 *	  Declarative enrichment rules: fundrecs.add_enrichment and
 *	  fundrecs.drop_enrichment.  fundrecs_enrich.c applies them.
 *
 * A rule joins a source table's rows with a lookup table (a
 * user_catalog_table with a primary key, read as of the change) on
 * join_columns, emits some of the lookup's columns, computes more from the
 * row and what was emitted so far, and may give the route.  Everything is
 * checked here, once: the lookup, the join's types, the names (no two
 * emitted columns, or an emitted and a source column, share one), and the
 * expressions (built-in immutable functions, operators and types only, no
 * subqueries: the restriction PostgreSQL puts on publication row filters).
 *
 * Expressions are compiled against the row they see: the source table as
 * scan tuple (varno 1, followed by attribute number) and the columns
 * emitted so far as inner tuple (INNER_VAR, by position), so the decoder
 * can evaluate them with ExecPrepareExpr over two slots.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/genam.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/regproc.h"
#include "utils/rls.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "catalog/namespace.h"

#include "fundrecs_compat.h"

/* A column the rules of a source emit, so far. */
typedef struct EmittedColumn
{
	char	   *name;
	Oid			typid;
	int32		typmod;
} EmittedColumn;

typedef struct RuleBuild
{
	Relation	source;
	List	   *emitted;		/* EmittedColumn *, earlier rules first */
} RuleBuild;

/*
 * The rules table belongs to the extension's owner: a table's owner adds
 * and drops its rules through these functions, which check everything,
 * without rights on the table itself.  Its statements run as its owner,
 * in a restricted security context (as a maintenance command runs a
 * table's index expressions as the table's owner).
 */
typedef struct AsOwner
{
	Oid			save_userid;
	int			save_sec_context;
} AsOwner;

static void
as_rules_owner(AsOwner *saved)
{
	Oid			nspid = get_namespace_oid(FR_EXT_SCHEMA, false);
	Oid			relid = get_relname_relid("enrichment_rules", nspid);
	HeapTuple	tp;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s.enrichment_rules does not exist", FR_EXT_SCHEMA),
				 errhint("Update the extension: ALTER EXTENSION fundrecs UPDATE.")));
	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);
	GetUserIdAndSecContext(&saved->save_userid, &saved->save_sec_context);
	SetUserIdAndSecContext(owner, saved->save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

static void
as_caller(AsOwner *saved)
{
	SetUserIdAndSecContext(saved->save_userid, saved->save_sec_context);
}

/* What a rule's expression may not contain, named in the error. */
static bool
check_function(Oid funcid, void *context)
{
	const char *what = (const char *) context;

	if (funcid >= FirstNormalObjectId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s uses the user-defined function %s", what,
						format_procedure(funcid)),
				 errdetail("Only built-in functions and operators may be used, as in publication row filters.")));
	if (func_volatile(funcid) != PROVOLATILE_IMMUTABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s uses %s, which is not immutable", what, format_procedure(funcid)),
				 errdetail("An expression is evaluated as of the change: its value may depend on nothing else.")));
	return false;
}

static bool
check_walker(Node *node, void *context)
{
	const char *what = (const char *) context;

	if (node == NULL)
		return false;
	if (IsA(node, SubLink) || IsA(node, Aggref) || IsA(node, WindowFunc) ||
		IsA(node, Param) || IsA(node, GroupingFunc))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s may not contain subqueries, aggregates, window functions or parameters", what)));
	if (IsA(node, OpExpr) && ((OpExpr *) node)->opno >= FirstNormalObjectId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s uses the user-defined operator %s", what,
						format_operator(((OpExpr *) node)->opno))));
	if (!IsA(node, List) && exprType(node) >= FirstNormalObjectId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s uses the user-defined type %s", what, format_type_be(exprType(node)))));
	(void) check_functions_in_node(node, check_function, context);
	return expression_tree_walker(node, check_walker, context);
}

/* The emitted columns' Vars (varno 2 in the query below) become INNER_VAR. */
static Node *
to_inner_mutator(Node *node, void *context)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Var) && ((Var *) node)->varno == 2)
	{
		Var		   *v = (Var *) copyObject(node);

		v->varno = INNER_VAR;
		return (Node *) v;
	}
	return expression_tree_mutator(node, to_inner_mutator, context);
}

static void guard_lookup(Oid lookup, bool on);

/* The source columns (Vars not of the emitted columns) a compiled tree reads. */
static bool
source_vars_walker(Node *node, Bitmapset **cols)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var) && ((Var *) node)->varno != INNER_VAR && ((Var *) node)->varattno > 0)
	{
		*cols = bms_add_member(*cols, ((Var *) node)->varattno);
		return false;
	}
	return expression_tree_walker(node, source_vars_walker, cols);
}

static Bitmapset *
source_vars(Node *tree)
{
	Bitmapset  *cols = NULL;

	(void) source_vars_walker(tree, &cols);
	return cols;
}

/* A syntax error's position, in the expression rather than the statement. */
static void
expression_error_position(void *arg)
{
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery((const char *) arg);
	}
}

/*
 * Compiles expr against the source row and the columns emitted so far:
 * analysed as the only target of a query over the source table and a
 * LATERAL row of typed NULLs named like the emitted columns, checked, and
 * returned with its type.
 */
static Node *
compile_expression(RuleBuild *rb, const char *expr, bool as_text, const char *what,
				   Oid *typid, int32 *typmod)
{
	StringInfoData sql;
	SPIPlanPtr	plan;
	CachedPlanSource *ps;
	Query	   *q;
	TargetEntry *te;
	Node	   *node;
	ListCell   *lc;
	bool		first = true;
	List	   *raw;
	SelectStmt *sel;
	ErrorContextCallback errcb;

	/*
	 * Parsed as an expression first (PL/pgSQL's expression mode): one target,
	 * nothing else, so the text below can only be that expression.
	 */
	errcb.callback = expression_error_position;
	errcb.arg = (void *) expr;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	raw = raw_parser(expr, RAW_PARSE_PLPGSQL_EXPR);
	error_context_stack = errcb.previous;
	sel = list_length(raw) == 1 ? (SelectStmt *) linitial_node(RawStmt, raw)->stmt : NULL;
	if (sel == NULL || !IsA(sel, SelectStmt) || list_length(sel->targetList) != 1 ||
		sel->fromClause != NIL || sel->whereClause != NULL || sel->groupClause != NIL ||
		sel->havingClause != NULL || sel->windowClause != NIL || sel->sortClause != NIL ||
		sel->limitCount != NULL || sel->limitOffset != NULL || sel->distinctClause != NIL ||
		sel->intoClause != NULL || sel->withClause != NULL || sel->op != SETOP_NONE ||
		sel->lockingClause != NIL || ((ResTarget *) linitial(sel->targetList))->name != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("%s must be one expression: \"%s\"", what, expr)));

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT (%s)%s FROM ONLY %s.%s AS s, LATERAL (SELECT", expr,
					 as_text ? "::text" : "",
					 quote_identifier(get_namespace_name(RelationGetNamespace(rb->source))),
					 quote_identifier(RelationGetRelationName(rb->source)));
	foreach(lc, rb->emitted)
	{
		EmittedColumn *c = (EmittedColumn *) lfirst(lc);

		appendStringInfo(&sql, "%s NULL::%s AS %s", first ? "" : ",",
						 format_type_with_typemod(c->typid, c->typmod), quote_identifier(c->name));
		first = false;
	}
	appendStringInfoString(&sql, ") AS e");

	plan = SPI_prepare(sql.data, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare %s: %s", what, SPI_result_code_string(SPI_result));
	ps = (CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan));
	q = linitial_node(Query, ps->query_list);
	if (list_length(q->targetList) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("%s must be one expression", what)));
	te = linitial_node(TargetEntry, q->targetList);
	node = (Node *) copyObject(te->expr);
	/* One value per row, whatever it calls. */
	if (expression_returns_set(node))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s may not return a set", what),
				 errdetail("A rule's expression gives one value for each row: set-returning functions such as generate_series() are not allowed.")));
	(void) check_walker(node, (void *) what);
	*typid = exprType(node);
	*typmod = exprTypmod(node);
	SPI_freeplan(plan);
	return to_inner_mutator(node, NULL);
}

/* A column of the source or one emitted before: its ref and type. */
static int16
resolve_join_column(RuleBuild *rb, const char *name, Oid *typid)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rb->source), name);
	int			i = 0;
	ListCell   *lc;

	if (attnum > 0)
	{
		*typid = get_atttype(RelationGetRelid(rb->source), attnum);
		return attnum;
	}
	foreach(lc, rb->emitted)
	{
		EmittedColumn *c = (EmittedColumn *) lfirst(lc);

		i++;
		if (strcmp(c->name, name) == 0)
		{
			*typid = c->typid;
			return -i;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("join column \"%s\" is neither a column of %s nor one an earlier rule of it emits",
					name, RelationGetRelationName(rb->source))));
	return 0;					/* keep the compiler quiet */
}

/* A new output column's name: no clash with the source or what is emitted. */
static void
check_new_name(RuleBuild *rb, const char *name)
{
	ListCell   *lc;

	if (get_attnum(RelationGetRelid(rb->source), name) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_COLUMN),
				 errmsg("column \"%s\" is already a column of %s", name,
						RelationGetRelationName(rb->source)),
				 errhint("Name the emitted column with AS, e.g. '%s AS lookup_%s'.", name, name)));
	foreach(lc, rb->emitted)
	{
		if (strcmp(((EmittedColumn *) lfirst(lc))->name, name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("column \"%s\" is already emitted by a rule of %s", name,
							RelationGetRelationName(rb->source))));
	}
}

static void
emit(RuleBuild *rb, const char *name, Oid typid, int32 typmod)
{
	EmittedColumn *c = palloc(sizeof(EmittedColumn));

	check_new_name(rb, name);
	c->name = pstrdup(name);
	c->typid = typid;
	c->typmod = typmod;
	rb->emitted = lappend(rb->emitted, c);
}

/* The columns the source's existing rules emit, in order. */
static void
load_emitted(RuleBuild *rb)
{
	const char *sql = "SELECT r.lookup, r.out_names, r.out_attnums, r.computed_names,"
	" r.computed_trees FROM fundrecs.enrichment_rules r WHERE r.source = $1"
	" ORDER BY r.rule_id";
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(RelationGetRelid(rb->source))};
	AsOwner		saved;

	as_rules_owner(&saved);
	if (SPI_execute_with_args(sql, 1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the enrichment rules");
	as_caller(&saved);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			lookup = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		Datum	   *names,
				   *attnums,
				   *cnames,
				   *trees;
		int			n,
					nc;

		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 2, &isnull)),
						  TEXTOID, -1, false, TYPALIGN_INT, &names, NULL, &n);
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull)),
						  INT2OID, 2, true, TYPALIGN_SHORT, &attnums, NULL, &n);
		for (int j = 0; j < n; j++)
		{
			AttrNumber	a = DatumGetInt16(attnums[j]);
			Oid			typid;
			int32		typmod;
			Oid			coll;

			get_atttypetypmodcoll(lookup, a, &typid, &typmod, &coll);
			emit(rb, TextDatumGetCString(names[j]), typid, typmod);
		}
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 4, &isnull)),
						  TEXTOID, -1, false, TYPALIGN_INT, &cnames, NULL, &nc);
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 5, &isnull)),
						  TEXTOID, -1, false, TYPALIGN_INT, &trees, NULL, &nc);
		for (int j = 0; j < nc; j++)
		{
			Node	   *expr = stringToNode(TextDatumGetCString(trees[j]));

			emit(rb, TextDatumGetCString(cnames[j]), exprType(expr), exprTypmod(expr));
		}
	}
}

static char *
trim(char *s)
{
	int			len;

	while (isspace((unsigned char) *s))
		s++;
	len = strlen(s);
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		s[--len] = '\0';
	return s;
}

/* "col" or "col AS alias" (AS in any case, between spaces) */
static void
split_alias(const char *entry, char **column, char **alias)
{
	char	   *s = pstrdup(entry);
	char	   *as = NULL;

	for (char *p = s + 1; *p; p++)
		if (isspace((unsigned char) p[-1]) && pg_strncasecmp(p, "as", 2) == 0 &&
			isspace((unsigned char) p[2]))
			as = p;
	if (as != NULL)
		*as = '\0';
	*column = trim(s);
	*alias = as != NULL ? trim(as + 3) : *column;
}

/* A lookup must be a user_catalog_table with a primary key: its key, in order. */
static List *
lookup_key(Relation lookup)
{
	Oid			pk = fr_primary_key_index(lookup);
	const char *name = RelationGetRelationName(lookup);
	char	   *qualified = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(lookup)),
													   name);
	Relation	idx;
	List	   *key = NIL;

	if (!RelationIsUsedAsCatalogTable(lookup))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("lookup table %s is not a user catalog table", qualified),
				 errdetail("Decoding reads a lookup table as of each change, which PostgreSQL allows only for catalog tables."),
				 errhint("ALTER TABLE %s SET (user_catalog_table = true);", qualified)));
	if (!OidIsValid(pk))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("lookup table %s has no primary key", qualified),
				 errhint("ALTER TABLE %s ADD PRIMARY KEY (...);", qualified)));
	idx = index_open(pk, AccessShareLock);
	for (int i = 0; i < idx->rd_index->indnkeyatts; i++)
		key = lappend_int(key, idx->rd_index->indkey.values[i]);
	index_close(idx, AccessShareLock);
	return key;
}

/* A list (of ints for int2, of C strings for text) as an array. */
static ArrayType *
list_array(List *values, Oid elemtype)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(list_length(values), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, values)
		d[n++] = elemtype == INT2OID ? Int16GetDatum((int16) lfirst_int(lc)) :
		CStringGetTextDatum((char *) lfirst(lc));
	if (elemtype == INT2OID)
		return construct_array(d, n, INT2OID, 2, true, TYPALIGN_SHORT);
	return construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT);
}

static List *
text_list(ArrayType *arr)
{
	Datum	   *d;
	bool	   *nulls;
	int			n;
	List	   *out = NIL;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &d, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("array elements may not be null")));
		out = lappend(out, TextDatumGetCString(d[i]));
	}
	return out;
}

/* A rule being added: what is recorded of it. */
typedef struct NewRule
{
	Oid			source;
	Oid			lookup;
	char	   *name;
	List	   *key;			/* the lookup's key columns */
	List	   *join_refs;
	List	   *out_names;
	List	   *out_attnums;
	List	   *cnames;
	List	   *cexprs;
	List	   *ctrees;
	char	   *route;
	char	   *route_tree;
} NewRule;

/* Rules are added to tables and partitioned tables, not to partitions. */
static void
check_source(Relation source)
{
	if (source->rd_rel->relkind != RELKIND_RELATION &&
		source->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(source))));
	if (source->rd_rel->relispartition)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is a partition", RelationGetRelationName(source)),
				 errdetail("The rules of a partitioned table apply to all its partitions."),
				 errhint("Add the rule to the partitioned table.")));
}

/* The join: the key's columns in order, types alike. */
static void
resolve_joins(RuleBuild *rb, Relation lookup, List *joins, NewRule *nr)
{
	ListCell   *lk,
			   *lj;

	if (list_length(joins) != list_length(nr->key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("join_columns names %d columns, but the primary key of %s has %d",
						list_length(joins), RelationGetRelationName(lookup),
						list_length(nr->key))));
	forboth(lj, joins, lk, nr->key)
	{
		Oid			jtype;
		int16		ref = resolve_join_column(rb, (char *) lfirst(lj), &jtype);
		Oid			ktype = get_atttype(nr->lookup, lfirst_int(lk));

		if (jtype != ktype)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("join column \"%s\" is %s, but key column \"%s\" of %s is %s",
							(char *) lfirst(lj), format_type_be(jtype),
							get_attname(nr->lookup, lfirst_int(lk), false),
							RelationGetRelationName(lookup), format_type_be(ktype))));
		nr->join_refs = lappend_int(nr->join_refs, ref);
	}
}

/* The emitted columns: those named (columns), or every column but the key's. */
static void
emit_lookup_columns(RuleBuild *rb, Relation lookup, List *columns, bool all, NewRule *nr)
{
	ListCell   *lc;

	if (all)
	{
		TupleDesc	desc = RelationGetDescr(lookup);

		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (att->attisdropped || list_member_int(nr->key, att->attnum))
				continue;
			emit(rb, NameStr(att->attname), att->atttypid, att->atttypmod);
			nr->out_names = lappend(nr->out_names, pstrdup(NameStr(att->attname)));
			nr->out_attnums = lappend_int(nr->out_attnums, att->attnum);
		}
		return;
	}
	foreach(lc, columns)
	{
		char	   *column,
				   *alias;
		AttrNumber	attnum;
		Oid			typid;
		int32		typmod;
		Oid			coll;

		split_alias((char *) lfirst(lc), &column, &alias);
		attnum = get_attnum(nr->lookup, column);
		if (attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of lookup table %s does not exist", column,
							RelationGetRelationName(lookup))));
		get_atttypetypmodcoll(nr->lookup, attnum, &typid, &typmod, &coll);
		emit(rb, alias, typid, typmod);
		nr->out_names = lappend(nr->out_names, alias);
		nr->out_attnums = lappend_int(nr->out_attnums, attnum);
	}
}

/* Computed columns, "name = expression", each seeing those before it. */
static void
compile_computed(RuleBuild *rb, List *computed, NewRule *nr)
{
	ListCell   *lc;

	foreach(lc, computed)
	{
		char	   *entry = pstrdup((char *) lfirst(lc));
		char	   *eq = strchr(entry, '=');
		char	   *what;
		Oid			typid;
		int32		typmod;
		Node	   *tree;

		if (eq == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("computed column \"%s\" is not of the form \"name = expression\"", entry)));
		*eq = '\0';
		what = psprintf("computed column \"%s\"", trim(entry));
		tree = compile_expression(rb, trim(eq + 1), false, what, &typid, &typmod);
		emit(rb, trim(entry), typid, typmod);
		nr->cnames = lappend(nr->cnames, trim(entry));
		nr->cexprs = lappend(nr->cexprs, trim(eq + 1));
		nr->ctrees = lappend(nr->ctrees, nodeToString(tree));
	}
	if (nr->route != NULL)
	{
		Oid			typid;
		int32		typmod;

		nr->route_tree = nodeToString(compile_expression(rb, nr->route, true,
														 "the route expression",
														 &typid, &typmod));
	}
}

/* Writes the rule, its name unique per source, as the rules table's owner. */
static void
record_rule(Relation source, NewRule *nr)
{
	Oid			types[16] = {OIDOID, NAMEOID, OIDOID, INT2ARRAYOID, INT2ARRAYOID, TEXTARRAYOID,
		INT2ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID, NAMEOID,
	TEXTARRAYOID, INT2ARRAYOID, TEXTARRAYOID};
	Datum		values[16];
	char		nulls[16];
	List	   *lookup_names = NIL;
	List	   *source_attnums = NIL;
	List	   *source_names = NIL;
	Bitmapset  *source_cols = NULL;
	ListCell   *lc;
	int			a = -1;

	/* The caller, whose rights read the lookup (not the rules' owner below). */
	char	   *caller = GetUserNameFromId(GetUserId(), false);
	Oid			t[2] = {OIDOID, NAMEOID};
	AsOwner		saved;

	values[0] = ObjectIdGetDatum(nr->source);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(nr->name));
	as_rules_owner(&saved);
	if (SPI_execute_with_args("SELECT 1 FROM fundrecs.enrichment_rules WHERE source = $1 AND name = $2",
							  2, t, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the enrichment rules");
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("%s already has an enrichment rule named \"%s\"",
						RelationGetRelationName(source), nr->name),
				 errhint("Pass another name, or drop that rule first.")));

	values[2] = ObjectIdGetDatum(nr->lookup);
	values[3] = PointerGetDatum(list_array(nr->key, INT2OID));
	values[4] = PointerGetDatum(list_array(nr->join_refs, INT2OID));
	values[5] = PointerGetDatum(list_array(nr->out_names, TEXTOID));
	values[6] = PointerGetDatum(list_array(nr->out_attnums, INT2OID));
	values[7] = PointerGetDatum(list_array(nr->cnames, TEXTOID));
	values[8] = PointerGetDatum(list_array(nr->cexprs, TEXTOID));
	values[9] = PointerGetDatum(list_array(nr->ctrees, TEXTOID));
	values[10] = nr->route ? CStringGetTextDatum(nr->route) : (Datum) 0;
	values[11] = nr->route_tree ? CStringGetTextDatum(nr->route_tree) : (Datum) 0;
	values[12] = DirectFunctionCall1(namein, CStringGetDatum(caller));

	/*
	 * Names beside numbers (1.6): what a dump restored without the tables'
	 * dropped columns renumbers, the decoder finds again by name.
	 */
	foreach(lc, nr->key)
		lookup_names = lappend(lookup_names, get_attname(nr->lookup, lfirst_int(lc), false));
	foreach(lc, nr->out_attnums)
		lookup_names = lappend(lookup_names, get_attname(nr->lookup, lfirst_int(lc), false));
	foreach(lc, nr->join_refs)
		if (lfirst_int(lc) > 0)
		source_cols = bms_add_member(source_cols, lfirst_int(lc));
	foreach(lc, nr->ctrees)
		source_cols = bms_join(source_cols, source_vars(stringToNode((char *) lfirst(lc))));
	if (nr->route_tree != NULL)
		source_cols = bms_join(source_cols, source_vars(stringToNode(nr->route_tree)));
	while ((a = bms_next_member(source_cols, a)) >= 0)
	{
		source_attnums = lappend_int(source_attnums, a);
		source_names = lappend(source_names, get_attname(nr->source, a, false));
	}
	values[13] = PointerGetDatum(list_array(lookup_names, TEXTOID));
	values[14] = PointerGetDatum(list_array(source_attnums, INT2OID));
	values[15] = PointerGetDatum(list_array(source_names, TEXTOID));
	memset(nulls, ' ', sizeof(nulls));
	if (nr->route == NULL)
		nulls[10] = nulls[11] = 'n';
	if (SPI_execute_with_args("INSERT INTO fundrecs.enrichment_rules (source, name, lookup, lookup_key,"
							  " join_refs, out_names, out_attnums, computed_names, computed_exprs,"
							  " computed_trees, route_expr, route_tree, added_by, lookup_names,"
							  " source_attnums, source_names, lookup_oid, source_oid)"
							  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
							  " $14, $15, $16, $3::oid, $1::oid)",
							  16, types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the enrichment rule");
	as_caller(&saved);
}

PG_FUNCTION_INFO_V1(fundrecs_add_enrichment);

Datum
fundrecs_add_enrichment(PG_FUNCTION_ARGS)
{
	NewRule		nr;
	Relation	lookup;
	RuleBuild	rb;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("source, lookup and join_columns are required")));
	memset(&nr, 0, sizeof(nr));
	nr.source = PG_GETARG_OID(0);
	nr.lookup = PG_GETARG_OID(1);
	nr.route = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	nr.name = PG_ARGISNULL(6) ? get_rel_name(nr.lookup) : pstrdup(NameStr(*PG_GETARG_NAME(6)));

	/* Adding a rule changes what the source's changes say: its owner's call. */
	if (!fr_relation_owned(nr.source, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(nr.source)),
					   get_rel_name(nr.source));
	if (pg_class_aclcheck(nr.lookup, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, get_relkind_objtype(get_rel_relkind(nr.lookup)),
					   get_rel_name(nr.lookup));

	/*
	 * The rule reads every row: policies that hide some from the caller
	 * refuse it.
	 */
	if (check_enable_rls(nr.lookup, InvalidOid, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("lookup table \"%s\" has row-level security that applies to you",
						get_rel_name(nr.lookup)),
				 errdetail("Decoding reads the lookup's rows as of each change, whatever the policies: a rule would show rows they hide from you."),
				 errhint("Have the lookup's owner, or a role with BYPASSRLS, add the rule.")));

	SPI_connect();
	rb.source = table_open(nr.source, AccessShareLock);
	rb.emitted = NIL;
	check_source(rb.source);
	lookup = table_open(nr.lookup, AccessShareLock);
	nr.key = lookup_key(lookup);
	load_emitted(&rb);

	resolve_joins(&rb, lookup, text_list(PG_GETARG_ARRAYTYPE_P(2)), &nr);
	emit_lookup_columns(&rb, lookup, PG_ARGISNULL(3) ? NIL : text_list(PG_GETARG_ARRAYTYPE_P(3)),
						PG_ARGISNULL(3), &nr);
	compile_computed(&rb, PG_ARGISNULL(4) ? NIL : text_list(PG_GETARG_ARRAYTYPE_P(4)), &nr);
	record_rule(rb.source, &nr);

	table_close(lookup, NoLock);
	table_close(rb.source, NoLock);
	/* Closed first: ALTER TABLE refuses a table this session has open. */
	guard_lookup(nr.lookup, true);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(namein, CStringGetDatum(nr.name)));
}

PG_FUNCTION_INFO_V1(fundrecs_drop_enrichment);

/* Does the tree read an emitted column after the first "after" ones? */
static bool
reads_emitted_after(Node *node, int *after)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var) && ((Var *) node)->varno == INNER_VAR)
		return ((Var *) node)->varattno > *after;
	return expression_tree_walker(node, reads_emitted_after, after);
}

/*
 * A rule's emitted columns are numbered across the source's rules, in
 * order, and later rules read them by number (a join column, an
 * expression): dropping a rule that a later one reads from, at or after
 * its own columns, would shift what the later one reads.  Refused, naming
 * the later rule.  SPI is connected, as the rules' owner.
 */
static void
check_no_dependent_rule(Oid source, const char *name)
{
	Oid			t[1] = {OIDOID};
	Datum		v[1] = {ObjectIdGetDatum(source)};
	int			before = -1;	/* emitted columns before the rule dropped */
	int			ncols = 0;
	char	   *src = quote_qualified_identifier(get_namespace_name(get_rel_namespace(source)),
												 get_rel_name(source));

	if (SPI_execute_with_args("SELECT name, cardinality(out_names) + cardinality(computed_names),"
							  " join_refs, computed_trees, route_tree"
							  " FROM fundrecs.enrichment_rules WHERE source = $1 ORDER BY rule_id",
							  1, t, v, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the enrichment rules");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *rule = SPI_getvalue(tup, desc, 1);
		bool		isnull;
		int			n = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		bool		reads = false;

		if (before >= 0)
		{
			Datum	   *elems;
			bool	   *nulls;
			int			nelems;
			Datum		d;

			deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull)),
							  INT2OID, 2, true, TYPALIGN_SHORT, &elems, &nulls, &nelems);
			for (int k = 0; k < nelems && !reads; k++)
				reads = DatumGetInt16(elems[k]) < 0 && -DatumGetInt16(elems[k]) > before;
			d = SPI_getbinval(tup, desc, 4, &isnull);
			deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &nulls, &nelems);
			for (int k = 0; k < nelems && !reads; k++)
				reads = reads_emitted_after(stringToNode(TextDatumGetCString(elems[k])), &before);
			d = SPI_getbinval(tup, desc, 5, &isnull);
			if (!isnull && !reads)
				reads = reads_emitted_after(stringToNode(TextDatumGetCString(d)), &before);
			if (reads)
				ereport(ERROR,
						(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
						 errmsg("cannot drop enrichment rule \"%s\" of %s because rule \"%s\" depends on it",
								name, src, rule),
						 errdetail("Rule \"%s\" reads columns that \"%s\" emits, or that rules after it emit.",
								   rule, name),
						 errhint("Drop rule \"%s\" first: SELECT fundrecs.drop_enrichment('%s', '%s'); then add it again if it still applies.",
								 rule, rule, src)));
		}
		if (strcmp(rule, name) == 0)
			before = ncols;
		ncols += n;
	}
}

/*
 * The lookup's TRUNCATE guard (fundrecs--1.5--1.6.sql): put there, enabled
 * ALWAYS, when a rule reads the table (on); taken away with the last such
 * rule (off).  Run as the rules' owner, who owns the extension.
 */
static void
guard_lookup(Oid lookup, bool on)
{
	char	   *rel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(lookup)),
												 get_rel_name(lookup));
	Oid			t[1] = {OIDOID};
	Datum		v[1] = {ObjectIdGetDatum(lookup)};
	AsOwner		saved;
	bool		exists;
	bool		used;

	as_rules_owner(&saved);
	if (SPI_execute_with_args("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1"
							  " AND tgname = 'fundrecs_protect_lookup'),"
							  " EXISTS (SELECT 1 FROM fundrecs.enrichment_rules WHERE lookup = $1)",
							  1, t, v, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the lookup's triggers");
	exists = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
	used = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), "t") == 0;
	if (on && !exists)
		SPI_exec(psprintf("CREATE TRIGGER fundrecs_protect_lookup BEFORE TRUNCATE ON %s"
						  " FOR EACH STATEMENT EXECUTE FUNCTION fundrecs.refuse_lookup_truncate()",
						  rel), 0);
	if (on)
		SPI_exec(psprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER fundrecs_protect_lookup", rel), 0);
	else if (exists && !used)
		SPI_exec(psprintf("DROP TRIGGER fundrecs_protect_lookup ON %s", rel), 0);
	as_caller(&saved);
}

Datum
fundrecs_drop_enrichment(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			t[2] = {NAMEOID, OIDOID};
	Datum		v[2];
	char		n[2] = {' ', ' '};
	Oid			source;
	AsOwner		saved;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the rule's name is required")));
	name = NameStr(*PG_GETARG_NAME(0));
	v[0] = PG_GETARG_DATUM(0);
	v[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	if (PG_ARGISNULL(1))
		n[1] = 'n';
	SPI_connect();
	as_rules_owner(&saved);
	if (SPI_execute_with_args("SELECT source FROM fundrecs.enrichment_rules"
							  " WHERE name = $1 AND ($2 IS NULL OR source = $2)",
							  2, t, v, n, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the enrichment rules");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("enrichment rule \"%s\" does not exist", name)));
	if (SPI_processed > 1)
		ereport(ERROR,
				(errcode(ERRCODE_AMBIGUOUS_PARAMETER),
				 errmsg("several tables have an enrichment rule named \"%s\"", name),
				 errhint("Name the source too: fundrecs.drop_enrichment('%s', 'schema.table').", name)));
	{
		bool		isnull;

		source = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	as_caller(&saved);
	if (!fr_relation_owned(source, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(source)),
					   get_rel_name(source));
	v[1] = ObjectIdGetDatum(source);
	n[1] = ' ';
	as_rules_owner(&saved);
	check_no_dependent_rule(source, name);
	if (SPI_execute_with_args("DELETE FROM fundrecs.enrichment_rules WHERE name = $1 AND source = $2"
							  " RETURNING lookup",
							  2, t, v, n, false, 0) != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "could not drop the enrichment rule");
	{
		bool		isnull;
		Oid			lookup = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
															SPI_tuptable->tupdesc, 1, &isnull));

		as_caller(&saved);
		if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(lookup)))
			guard_lookup(lookup, false);
	}
	SPI_finish();
	PG_RETURN_VOID();
}
