/*-------------------------------------------------------------------------
 *
 * fundrecs_backfill.c
 *	  Backfills: a table's rows shipped again, in chunks read by key, while
 *	  the stream flows (extension 1.8).
 *
 * fundrecs.backfill() records a request and writes a transactional
 * message (prefix fundrecs.backfill) that every slot of the database
 * decodes in commit order; fundrecs_shipper runs it.  For each chunk the
 * shipper writes a low watermark (a message), reads the chunk with
 * fundrecs.backfill_rows(), writes a high watermark, and ships the chunk's
 * rows when the high watermark arrives in its stream, less those whose key
 * changed in between: the stream's version of those is newer (DBLog).
 *
 * This file checks requests (backfill_check: who may ask, a key to read
 * in, a condition that is one safe expression) and reads chunks
 * (backfill_rows), formatting and enriching each row with the code that
 * formats the initial load's rows (fr_write_row, op "load").
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/tupconvert.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/plancache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "fundrecs_compat.h"

/* Members of this role may backfill tables they do not own. */
#define FR_BACKFILL_ROLE "fundrecs_backfill"

/* The columns a table is read in: the key its rows carry. */
typedef struct BackfillKey
{
	int			nkeys;
	AttrNumber	attnums[INDEX_MAX_KEYS];
	Oid			types[INDEX_MAX_KEYS];
} BackfillKey;

/*
 * The key rows of rel carry (fundrecs_relinfo.c's set_key): the replica
 * identity index, or the primary key when the identity is FULL.  A table
 * without one, or whose deletes carry no key (REPLICA IDENTITY NOTHING),
 * cannot be backfilled: an ERROR.
 */
static void
backfill_key(Relation rel, BackfillKey *key)
{
	Oid			keyindex;
	Relation	idxrel;
	char		ident = rel->rd_rel->relreplident;

	if (ident == REPLICA_IDENTITY_NOTHING)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" cannot be backfilled: its replica identity is NOTHING",
						RelationGetRelationName(rel)),
				 errdetail("Its deletes carry no key, so a backfill could not tell which of the rows it read they remove."),
				 errhint("ALTER TABLE %s REPLICA IDENTITY DEFAULT (or USING INDEX, or FULL).",
						 quote_identifier(RelationGetRelationName(rel)))));
	keyindex = RelationGetReplicaIndex(rel);
	if (!OidIsValid(keyindex))
		keyindex = fr_primary_key_index(rel);
	if (!OidIsValid(keyindex))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" cannot be backfilled: it has no primary key",
						RelationGetRelationName(rel)),
				 errdetail("A backfill reads a table in chunks by key, and tells the rows it read from changes by their key."),
				 errhint("Add a primary key, or a unique index on NOT NULL columns made the replica identity (REPLICA IDENTITY USING INDEX).")));
	idxrel = index_open(keyindex, AccessShareLock);
	key->nkeys = 0;
	for (int i = 0; i < idxrel->rd_index->indnkeyatts; i++)
	{
		AttrNumber	attnum = idxrel->rd_index->indkey.values[i];

		if (attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("table \"%s\" cannot be backfilled: its key index \"%s\" has an expression",
							RelationGetRelationName(rel), RelationGetRelationName(idxrel))));
		key->attnums[key->nkeys] = attnum;
		key->types[key->nkeys] = TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid;
		key->nkeys++;
	}
	index_close(idxrel, AccessShareLock);
}

/* The relation as a query names it: ONLY for a plain table. */
static char *
relation_sql(Relation rel)
{
	return psprintf("%s%s.%s",
					rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ",
					quote_identifier(get_namespace_name(RelationGetNamespace(rel))),
					quote_identifier(RelationGetRelationName(rel)));
}

/* What a condition may call: built-in functions that do not write. */
static bool
condition_function(Oid funcid, void *context)
{
	if (funcid >= FirstNormalObjectId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a backfill condition may not use the user-defined function %s",
						format_procedure(funcid)),
				 errdetail("The shipper evaluates the condition with its own rights: only built-in functions and operators may be used, as in publication row filters.")));
	if (func_volatile(funcid) == PROVOLATILE_VOLATILE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a backfill condition may not use the volatile function %s",
						format_procedure(funcid)),
				 errdetail("The condition is evaluated once per chunk: its value must not change from one evaluation to the next within a chunk.")));
	return false;
}

static bool
condition_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink) || IsA(node, Aggref) || IsA(node, WindowFunc) ||
		IsA(node, Param) || IsA(node, GroupingFunc))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a backfill condition may not contain subqueries, aggregates, window functions or parameters")));
	(void) check_functions_in_node(node, condition_function, context);
	return expression_tree_walker(node, condition_walker, context);
}

/*
 * The condition is one boolean expression over the table's columns: parsed
 * as an expression first (nothing can follow it), then analysed as the
 * WHERE clause of a query over the table and checked.  The text is then
 * safe to put, alone on its lines, in such a clause.
 */
static void
check_condition(Relation rel, const char *cond)
{
	List	   *raw;
	SelectStmt *sel;
	SPIPlanPtr	plan;
	CachedPlanSource *ps;
	Query	   *q;
	char	   *sql;

	raw = raw_parser(cond, RAW_PARSE_PLPGSQL_EXPR);
	sel = list_length(raw) == 1 ? (SelectStmt *) linitial_node(RawStmt, raw)->stmt : NULL;
	if (sel == NULL || !IsA(sel, SelectStmt) || list_length(sel->targetList) != 1 ||
		sel->fromClause != NIL || sel->whereClause != NULL || sel->groupClause != NIL ||
		sel->havingClause != NULL || sel->windowClause != NIL || sel->sortClause != NIL ||
		sel->limitCount != NULL || sel->limitOffset != NULL || sel->distinctClause != NIL ||
		sel->intoClause != NULL || sel->withClause != NULL || sel->op != SETOP_NONE ||
		sel->lockingClause != NIL || ((ResTarget *) linitial(sel->targetList))->name != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("a backfill condition must be one expression: \"%s\"", cond)));

	sql = psprintf("SELECT 1 FROM %s WHERE (\n%s\n)", relation_sql(rel), cond);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare the backfill condition: %s",
			 SPI_result_code_string(SPI_result));
	ps = (CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan));
	q = linitial_node(Query, ps->query_list);
	if (list_length(q->rtable) != 1 || q->hasSubLinks || q->hasAggs || q->hasWindowFuncs ||
		q->hasTargetSRFs || q->cteList != NIL || q->setOperations != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a backfill condition may only test the table's columns: \"%s\"", cond)));
	(void) condition_walker(q->jointree->quals, NULL);
	SPI_freeplan(plan);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(fundrecs_backfill_check);

/*
 * fundrecs.backfill_check(tbl, condition): called by backfill() and
 * cancel_backfill(), which run with the extension owner's rights; the
 * caller is the session's role (SET ROLE counts).  It must own the table
 * or be a member of fundrecs_backfill.
 */
Datum
fundrecs_backfill_check(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Oid			caller = GetOuterUserId();
	Oid			backfill_role = get_role_oid(FR_BACKFILL_ROLE, true);
	Relation	rel;
	BackfillKey key;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	char	   *relname = get_rel_name(relid);

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table with OID %u does not exist", relid)));
	if (!fr_relation_owned(relid, caller) &&
		!(OidIsValid(backfill_role) && has_privs_of_role(caller, backfill_role)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to backfill table \"%s\"", relname),
				 errdetail("Only the table's owner and members of the role \"%s\" may request or cancel its backfills.",
						   FR_BACKFILL_ROLE),
				 errhint("GRANT %s TO %s (CREATE ROLE %s NOLOGIN first if there is none).",
						 FR_BACKFILL_ROLE, quote_identifier(GetUserNameFromId(caller, false)),
						 FR_BACKFILL_ROLE)));

	rel = table_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", relname)));
	backfill_key(rel, &key);
	if (!PG_ARGISNULL(1))
		check_condition(rel, text_to_cstring(PG_GETARG_TEXT_PP(1)));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = DirectFunctionCall1(namein,
									CStringGetDatum(get_namespace_name(RelationGetNamespace(rel))));
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(relname));
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(caller, false)));
	table_close(rel, AccessShareLock);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* A leaf read by a chunk: its relation and output info. */
typedef struct ChunkLeaf
{
	Oid			relid;
	Relation	rel;
	FrRelInfo  *ri;
	TupleTableSlot *slot;
} ChunkLeaf;

static ChunkLeaf *
chunk_leaf(List **leaves, Oid relid, const FrOptions *opts)
{
	ListCell   *lc;
	ChunkLeaf  *leaf;

	foreach(lc, *leaves)
	{
		leaf = (ChunkLeaf *) lfirst(lc);
		if (leaf->relid == relid)
			return leaf;
	}
	leaf = palloc0(sizeof(ChunkLeaf));
	leaf->relid = relid;
	leaf->rel = table_open(relid, AccessShareLock);
	leaf->ri = palloc0(sizeof(FrRelInfo));
	leaf->ri->relid = relid;
	fr_relinfo_build(leaf->ri, leaf->rel, opts);
	leaf->slot = table_slot_create(leaf->rel, NULL);
	*leaves = lappend(*leaves, leaf);
	return leaf;
}

/* The key's values as text, the form after_key takes them back in. */
static Datum
key_array(const BackfillKey *key, TupleDesc desc, HeapTuple tuple)
{
	Datum		elems[INDEX_MAX_KEYS];
	bool		enulls[INDEX_MAX_KEYS];
	int			dims[1];
	int			lbs[1] = {1};

	for (int i = 0; i < key->nkeys; i++)
	{
		bool		isnull;
		Datum		d = fr_heap_attr(tuple, key->attnums[i], desc, &isnull);

		enulls[i] = isnull;
		if (!isnull)
		{
			Oid			outfunc;
			bool		varlena;

			getTypeOutputInfo(key->types[i], &outfunc, &varlena);
			elems[i] = CStringGetTextDatum(OidOutputFunctionCall(outfunc, d));
		}
		else
			elems[i] = (Datum) 0;
	}
	dims[0] = key->nkeys;
	return PointerGetDatum(construct_md_array(elems, enulls, 1, dims, lbs, TEXTOID, -1,
											  false, TYPALIGN_INT));
}

/*
 * A key array (after_key, upto_key) as values of the key's types, checked:
 * one value per key column, none null.
 */
static void
key_values(ArrayType *arr, const char *what, const BackfillKey *key, Datum *values)
{
	Datum	   *elems;
	bool	   *enulls;
	int			n;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &n);
	if (ARR_NDIM(arr) > 1 || n != key->nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must hold %d values, the table's key columns", what, key->nkeys)));
	for (int i = 0; i < n; i++)
	{
		Oid			infunc;
		Oid			ioparam;

		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not hold nulls", what)));
		getTypeInputInfo(key->types[i], &infunc, &ioparam);
		values[i] = OidInputFunctionCall(infunc, TextDatumGetCString(elems[i]), ioparam, -1);
	}
}

/* The key's columns, as a row constructor's list: "a, b". */
static void
append_key_columns(StringInfo sql, const BackfillKey *key, TupleDesc desc)
{
	for (int i = 0; i < key->nkeys; i++)
		appendStringInfo(sql, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(NameStr(TupleDescAttr(desc, key->attnums[i] - 1)->attname)));
}

/* "(a, b) op ($first, $first+1)", its values appended to params. */
static void
append_key_bound(StringInfo sql, const BackfillKey *key, TupleDesc desc, const char *op,
				 const Datum *values, Datum *params, int *nparams, Oid *types)
{
	appendStringInfoString(sql, " AND (");
	append_key_columns(sql, key, desc);
	appendStringInfo(sql, ") %s (", op);
	for (int i = 0; i < key->nkeys; i++)
	{
		params[*nparams] = values[i];
		types[*nparams] = key->types[i];
		(*nparams)++;
		appendStringInfo(sql, "%s$%d", i > 0 ? ", " : "", *nparams);
	}
	appendStringInfoString(sql, ")");
}

/*
 * The query of a chunk: what (select list) of the rows after after_key, up
 * to upto_key (each NULL: no bound) and passing the condition, in key
 * order, at most max_rows of them.  Its parameters in params and types.
 */
static char *
chunk_query(Relation rel, const BackfillKey *key, const char *what, const char *cond,
			ArrayType *after, ArrayType *upto, int max_rows,
			Datum *params, Oid *types, int *nparams)
{
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData sql;
	Datum		values[INDEX_MAX_KEYS];

	*nparams = 0;
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT %s FROM %s WHERE ", what, relation_sql(rel));
	if (cond != NULL)
		appendStringInfo(&sql, "(\n%s\n)", cond);
	else
		appendStringInfoString(&sql, "true");
	if (after != NULL)
	{
		key_values(after, "after_key", key, values);
		append_key_bound(&sql, key, desc, ">", values, params, nparams, types);
	}
	if (upto != NULL)
	{
		key_values(upto, "upto_key", key, values);
		append_key_bound(&sql, key, desc, "<=", values, params, nparams, types);
	}
	appendStringInfoString(&sql, " ORDER BY ");
	append_key_columns(&sql, key, desc);
	appendStringInfo(&sql, " LIMIT %d", max_rows);
	return sql.data;
}

/*
 * A chunk's query (chunk_query) prepared and opened as a read-only cursor
 * in a new SPI connection; the caller closes the cursor, frees *plan and
 * finishes SPI.
 */
static Portal
chunk_cursor(Relation rel, const BackfillKey *key, const char *what, const char *cond,
			 ArrayType *after, ArrayType *upto, int max_rows, SPIPlanPtr *plan)
{
	Datum		keyvals[2 * INDEX_MAX_KEYS];
	Oid			keytypes[2 * INDEX_MAX_KEYS];
	char		keynulls[2 * INDEX_MAX_KEYS];
	int			nparams;
	char	   *sql;

	sql = chunk_query(rel, key, what, cond, after, upto, max_rows, keyvals, keytypes, &nparams);
	memset(keynulls, ' ', sizeof(keynulls));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	*plan = SPI_prepare(sql, nparams, keytypes);
	if (*plan == NULL)
		elog(ERROR, "could not prepare the chunk's query: %s", SPI_result_code_string(SPI_result));
	return SPI_cursor_open(NULL, *plan, keyvals, keynulls, true);
}

PG_FUNCTION_INFO_V1(fundrecs_backfill_rows);

/*
 * fundrecs.backfill_rows(tbl, after_key, max_rows, load_lsn, options,
 * condition, upto_key): the next chunk, as (key, row_json) in key order.  A row the
 * publications' row filters leave out comes with a NULL row_json, so that
 * the next chunk starts after it.
 */
Datum
fundrecs_backfill_rows(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int			max_rows = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2);
	XLogRecPtr	lsn = PG_ARGISNULL(3) ? InvalidXLogRecPtr : PG_GETARG_LSN(3);
	char	   *cond = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	FrOptions	opts;
	FrRowMeta	meta;
	BackfillKey key;
	Relation	rel;
	TupleDesc	rootdesc;
	SPIPlanPtr	plan;
	Portal		portal;
	List	   *leaves = NIL;
	ListCell   *lc;
	MemoryContext rowcxt;
	MemoryContext oldcxt;

	if (max_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be at least 1")));
	InitMaterializedSRF(fcinfo, 0);

	fr_options_init(&opts);
	if (!PG_ARGISNULL(4))
		fr_options_parse(&opts, fr_options_from_array(PG_GETARG_ARRAYTYPE_P(4)));
	fr_options_resolve(&opts, false);

	/* The same checks as the initial load's: rights, captured by the options. */
	(void) fr_load_leaves(&opts, relid);
	rel = table_open(relid, AccessShareLock);
	rootdesc = RelationGetDescr(rel);
	backfill_key(rel, &key);
	if (cond != NULL)
		check_condition(rel, cond);

	/* Read by key, one chunk: tableoid and ctid, then each tuple in full. */

	memset(&meta, 0, sizeof(meta));
	meta.op = "load";
	meta.lsn = lsn;
	meta.cache_usable = true;	/* its own cache (meta.load) */
	meta.commit_lsn = lsn;
	meta.xid = InvalidTransactionId;
	meta.commit_time = GetCurrentTransactionStartTimestamp();
	meta.load = fr_load_lookups_create(CurrentMemoryContext);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "fundrecs backfill row",
								   ALLOCSET_DEFAULT_SIZES);

	portal = chunk_cursor(rel, &key, "tableoid, ctid", cond,
						  PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1),
						  PG_ARGISNULL(6) ? NULL : PG_GETARG_ARRAYTYPE_P(6),
						  max_rows, &plan);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	ref = SPI_tuptable->vals[i];
			bool		isnull;
			Oid			leafid = DatumGetObjectId(SPI_getbinval(ref, SPI_tuptable->tupdesc, 1, &isnull));
			ItemPointer tid = (ItemPointer) DatumGetPointer(SPI_getbinval(ref, SPI_tuptable->tupdesc, 2, &isnull));
			ChunkLeaf  *leaf;
			HeapTuple	tuple;
			bool		should_free;
			TupleDesc	desc;
			Datum		outvals[2];
			bool		outnulls[2] = {false, false};
			ItemPointerData tidcopy = *tid;

			oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
			leaf = chunk_leaf(&leaves, leafid, &opts);
			MemoryContextSwitchTo(rowcxt);

			if (!table_tuple_fetch_row_version(leaf->rel, &tidcopy, GetActiveSnapshot(), leaf->slot))
				elog(ERROR, "could not read the row at (%u,%u) of \"%s\" that the chunk found",
					 ItemPointerGetBlockNumber(&tidcopy), ItemPointerGetOffsetNumber(&tidcopy),
					 RelationGetRelationName(leaf->rel));
			tuple = ExecFetchSlotHeapTuple(leaf->slot, false, &should_free);
			desc = RelationGetDescr(leaf->rel);
			if (leaf->ri->as_root)
			{
				desc = leaf->ri->desc;
				if (leaf->ri->map != NULL)
					tuple = execute_attr_map_tuple(tuple, leaf->ri->map);
			}
			else if (leaf->relid != relid)
			{
				/*
				 * Emitted as the leaf: its key is read through the root's
				 * columns.
				 */
				TupleConversionMap *map = convert_tuples_by_name(desc, rootdesc);

				outvals[0] = key_array(&key, rootdesc,
									   map ? execute_attr_map_tuple(tuple, map) : tuple);
			}
			if (leaf->ri->as_root || leaf->relid == relid)
				outvals[0] = key_array(&key, rootdesc, tuple);

			if (!leaf->ri->included ||
				(opts.publication_names != NIL &&
				 !fr_publication_row_matches(leaf->ri, FR_PUBACTION_LOAD, desc, tuple)))
				outnulls[1] = true;
			else
			{
				StringInfoData out;

				initStringInfo(&out);
				meta.load->snapshot = GetActiveSnapshot();
				fr_write_row(&out, &opts, &meta, leaf->ri, desc, tuple, NULL);
				meta.load->snapshot = NULL;
				outvals[1] = PointerGetDatum(cstring_to_text_with_len(out.data, out.len));
			}
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, outvals, outnulls);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(rowcxt);
		}
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	SPI_finish();

	foreach(lc, leaves)
	{
		ChunkLeaf  *leaf = (ChunkLeaf *) lfirst(lc);

		ExecDropSingleTupleTableSlot(leaf->slot);
		if (leaf->ri->cxt != NULL)
			MemoryContextDelete(leaf->ri->cxt);
		table_close(leaf->rel, AccessShareLock);
	}
	table_close(rel, AccessShareLock);
	MemoryContextDelete(rowcxt);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(fundrecs_backfill_bounds);

/*
 * fundrecs.backfill_bounds(tbl, after_key, max_rows, parts, condition): the
 * next chunk split into parts of about max_rows / parts rows, to be read
 * side by side with backfill_rows(..., upto_key): each part's last key and
 * its rows, in key order.  Fewer rows in all than max_rows: the chunk ends
 * the table.  Only the key is read, through its index.
 */
Datum
fundrecs_backfill_bounds(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int			max_rows = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2);
	int			parts = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);
	char	   *cond = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	BackfillKey key;
	BackfillKey spikey;
	Relation	rel;
	StringInfoData cols;
	SPIPlanPtr	plan;
	Portal		portal;
	int			per_part;
	int			in_part = 0;
	Datum		outvals[2];
	bool		outnulls[2] = {false, false};
	HeapTuple	last = NULL;
	TupleDesc	lastdesc = NULL;
	MemoryContext oldcxt;

	if (max_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be at least 1")));
	if (parts < 1 || parts > max_rows)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parts must be between 1 and max_rows (%d)", max_rows)));
	InitMaterializedSRF(fcinfo, 0);
	per_part = (max_rows + parts - 1) / parts;

	rel = table_open(relid, AccessShareLock);
	backfill_key(rel, &key);
	if (cond != NULL)
		check_condition(rel, cond);
	initStringInfo(&cols);
	append_key_columns(&cols, &key, RelationGetDescr(rel));

	/* The key as the query returns it: its columns, in order. */
	spikey = key;
	for (int i = 0; i < key.nkeys; i++)
		spikey.attnums[i] = i + 1;

	portal = chunk_cursor(rel, &key, cols.data, cond,
						  PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1), NULL,
						  max_rows, &plan);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			in_part++;
			if (in_part < per_part && i + 1 < SPI_processed)
				continue;
			oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
			if (in_part == per_part)
			{
				outvals[0] = key_array(&spikey, SPI_tuptable->tupdesc, SPI_tuptable->vals[i]);
				outvals[1] = Int32GetDatum(in_part);
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, outvals, outnulls);
				in_part = 0;
				if (last != NULL)
					heap_freetuple(last);
				last = NULL;
			}
			else
			{
				/* The fetch's last row: kept in case the table ends there. */
				if (last != NULL)
					heap_freetuple(last);
				if (lastdesc == NULL)
					lastdesc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
				last = heap_copytuple(SPI_tuptable->vals[i]);
			}
			MemoryContextSwitchTo(oldcxt);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	if (in_part > 0 && last != NULL)
	{
		oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
		outvals[0] = key_array(&spikey, lastdesc, last);
		outvals[1] = Int32GetDatum(in_part);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, outvals, outnulls);
		MemoryContextSwitchTo(oldcxt);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	SPI_finish();
	table_close(rel, AccessShareLock);
	return (Datum) 0;
}
