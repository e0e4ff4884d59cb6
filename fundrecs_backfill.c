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
#include "access/transam.h"
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
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/pquery.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/plancache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/resowner.h"
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

/*
 * A row the cursor found: its table, and the row itself or its address
 * there.
 */
typedef struct ChunkRow
{
	Oid			leafid;			/* InvalidOid: not known (see reader_fetch) */
	ItemPointerData tid;		/* when the cursor reads addresses */
	HeapTuple	tuple;			/* when the cursor reads whole rows */
} ChunkRow;

/* Rows fetched from the cursor at a time. */
#define READER_FETCH 100

typedef struct ChunkReader ChunkReader;

/* What the cursor's rows are fetched through. */
typedef struct ReaderDest
{
	DestReceiver pub;
	ChunkReader *reader;
} ReaderDest;

/*
 * A chunk being read: the cursor of its rows, and what formatting them
 * needs.  It lives across the calls of backfill_chunk, which returns the
 * chunk in batches; the cursor outlives each call's SPI connection (SPI
 * copies an unsaved plan into the portal).
 *
 * The cursor reads whole rows ("SELECT *") when every table of the tree
 * has the root's columns, in its order, and none dropped: its rows then
 * come in the layout of the table they were read from, and the scan tells
 * that table.  Otherwise (or when the plan does not tell the table of a
 * partitioned table's row, see reader_fetch) it reads each row's tableoid
 * and ctid, and the row is read again by its address.  Reading whole rows
 * spares that second read: a fifth of a chunk's cost on the server.
 */
struct ChunkReader
{
	Oid			relid;
	Relation	rel;
	TupleDesc	rootdesc;
	BackfillKey key;
	FrOptions	opts;
	FrRowMeta	meta;
	char	   *cond;			/* the chunk's query's arguments */
	ArrayType  *after;
	ArrayType  *upto;
	int			max_rows;
	bool		partitioned;
	bool		whole_rows;		/* the cursor reads rows, not addresses */
	char	   *portal;			/* the cursor's name */
	Snapshot	snapshot;		/* the chunk's (chunk_snapshot), registered */
	ReaderDest	dest;
	List	   *leaves;			/* ChunkLeaf */
	MemoryContext cxt;			/* where it was opened */
	MemoryContext rowcxt;		/* reset per row */
	MemoryContext fetchcxt[2];	/* the fetched rows, by turns: the last
								 * fetch's outlive the next one */
	int			nfetches;
	bool		exhausted;		/* the cursor returned its last row */
	ChunkRow	rows[READER_FETCH]; /* fetched, read up to nextrow */
	int			nrows;
	int			nextrow;
	ChunkRow	last;			/* the last row read */
};

/* Rows of the cursor into the reader's rows (a copy of each, or its address). */
static bool
reader_receive(TupleTableSlot *slot, DestReceiver *self)
{
	ChunkReader *r = ((ReaderDest *) self)->reader;
	ChunkRow   *row = &r->rows[r->nrows++];

	Assert(r->nrows <= READER_FETCH);
	if (r->whole_rows)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(r->fetchcxt[r->nfetches % 2]);

		/* A scan's row knows its table; a projected or sorted row does not. */
		row->tuple = ExecCopySlotHeapTuple(slot);
		row->leafid = OidIsValid(slot->tts_tableOid) ? slot->tts_tableOid :
			r->partitioned ? InvalidOid : r->relid;
		MemoryContextSwitchTo(oldcxt);
	}
	else
	{
		slot_getsomeattrs(slot, 2);
		row->leafid = DatumGetObjectId(slot->tts_values[0]);
		row->tid = *(ItemPointer) DatumGetPointer(slot->tts_values[1]);
		row->tuple = NULL;
	}
	return true;
}

static void
reader_dest_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
reader_dest_noop(DestReceiver *self)
{
}

/*
 * May the cursor read whole rows: has every table of the tree (leaves,
 * from fr_load_leaves) the root's columns in its order, none dropped?
 */
static bool
reader_whole_rows(Relation root, List *leaves)
{
	TupleDesc	rootdesc = RelationGetDescr(root);
	ListCell   *lc;

	for (int i = 0; i < rootdesc->natts; i++)
		if (TupleDescAttr(rootdesc, i)->attisdropped)
			return false;
	foreach(lc, leaves)
	{
		Relation	leaf = table_open(lfirst_oid(lc), AccessShareLock);

		/* No map needed: the root's columns, in its order (so none dropped). */
		TupleConversionMap *map = convert_tuples_by_name(RelationGetDescr(leaf), rootdesc);

		table_close(leaf, AccessShareLock);
		if (map != NULL)
		{
			free_conversion_map(map);
			return false;
		}
	}
	return true;
}

/* The chunk's cursor opened: of whole rows or of their addresses. */
static void
reader_open_cursor(ChunkReader *r)
{
	SPIPlanPtr	plan;
	Portal		portal;

	portal = chunk_cursor(r->rel, &r->key, r->whole_rows ? "*" : "tableoid, ctid",
						  r->cond, r->after, r->upto, r->max_rows, &plan);
	r->portal = MemoryContextStrdup(r->cxt, portal->name);
	SPI_freeplan(plan);
	SPI_finish();
}

/*
 * What a committing transaction sets in its PGPROC from just before its
 * commit record until pg_xact has it (RecordTransactionCommit).
 */
#ifdef DELAY_CHKPT_IN_COMMIT
#define COMMIT_DELAY_FLAGS (DELAY_CHKPT_START | DELAY_CHKPT_IN_COMMIT)
#else
#define COMMIT_DELAY_FLAGS DELAY_CHKPT_START
#endif

/*
 * The chunk's snapshot: taken once every transaction whose commit record
 * precedes the chunk's low watermark is visible.
 *
 * A transaction commits in the WAL, where the stream sees it, before other
 * sessions see it: after its commit record it flushes the WAL, sets
 * pg_xact, waits for a synchronous standby if there is one, and only then
 * leaves the ProcArray.  A snapshot taken right after the low watermark
 * committed could miss a transaction still in that window, though the
 * stream carries its changes before the watermark, where the shipper does
 * not look for them: the chunk would ship a row older than the stream's.
 *
 * So first those between their commit record and pg_xact are waited for
 * (they delay checkpoints from before their commit record is written),
 * then those pg_xact has as committed that a snapshot still counts as
 * running.  Both are committing already, so the waits are short but for a
 * synchronous standby's.  A transaction that has not written its commit
 * record is not waited for: it commits after the watermark, and the
 * shipper sees its changes between the watermarks.
 *
 * The caller's snapshots do not serve: a statement's is taken before this.
 */
static Snapshot
chunk_snapshot(void)
{
	VirtualTransactionId *vxids;
	int			nvxids;
	Snapshot	snap;
	TransactionId *committed;
	int			ncommitted = 0;

	vxids = GetVirtualXIDsDelayingChkpt(&nvxids, COMMIT_DELAY_FLAGS);
	for (long sleep_us = 100;
		 nvxids > 0 && HaveVirtualXIDsDelayingChkpt(vxids, nvxids, COMMIT_DELAY_FLAGS);
		 sleep_us = Min(sleep_us * 2, 10000L))
	{
		/* Most are gone within a WAL flush; a slow disk is not polled hard. */
		CHECK_FOR_INTERRUPTS();
		pg_usleep(sleep_us);
	}
	pfree(vxids);

	snap = GetLatestSnapshot();
	committed = palloc(sizeof(TransactionId) * Max(snap->xcnt, 1));
	for (uint32 i = 0; i < snap->xcnt; i++)
		if (TransactionIdDidCommit(snap->xip[i]))
			committed[ncommitted++] = snap->xip[i];
	if (ncommitted > 0)
	{
		/* Each leaves the ProcArray before it releases its lock. */
		for (int i = 0; i < ncommitted; i++)
			XactLockTableWait(committed[i], NULL, NULL, XLTW_None);
		snap = GetLatestSnapshot();
	}
	pfree(committed);
	return RegisterSnapshotOnOwner(snap, TopTransactionResourceOwner);
}

/*
 * Opens a chunk (fundrecs.backfill_rows' and fundrecs.backfill_chunk's
 * first seven arguments) in CurrentMemoryContext: the same checks as the
 * initial load's (rights, captured by the options), then the cursor of the
 * rows (or their addresses), by key, as of chunk_snapshot.
 */
static ChunkReader *
reader_open(FunctionCallInfo fcinfo)
{
	ChunkReader *r = palloc0(sizeof(ChunkReader));
	List	   *leaves;
	int			max_rows = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2);
	XLogRecPtr	lsn = PG_ARGISNULL(3) ? InvalidXLogRecPtr : PG_GETARG_LSN(3);

	if (max_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be at least 1")));
	r->relid = PG_GETARG_OID(0);
	r->max_rows = max_rows;
	r->cond = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	r->after = PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P_COPY(1);
	r->upto = PG_ARGISNULL(6) ? NULL : PG_GETARG_ARRAYTYPE_P_COPY(6);
	r->cxt = CurrentMemoryContext;
	fr_options_init(&r->opts);
	if (!PG_ARGISNULL(4))
		fr_options_parse(&r->opts, fr_options_from_array(PG_GETARG_ARRAYTYPE_P(4)));
	fr_options_resolve(&r->opts, false);
	leaves = fr_load_leaves(&r->opts, r->relid);
	r->rel = table_open(r->relid, AccessShareLock);
	r->rootdesc = RelationGetDescr(r->rel);
	r->partitioned = r->rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE;
	r->whole_rows = reader_whole_rows(r->rel, leaves);
	backfill_key(r->rel, &r->key);
	if (r->cond != NULL)
		check_condition(r->rel, r->cond);

	fr_load_meta_init(&r->meta, &r->opts, lsn, r->cxt, true);
	r->rowcxt = AllocSetContextCreate(r->cxt, "fundrecs backfill row", ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < 2; i++)
		r->fetchcxt[i] = AllocSetContextCreate(r->cxt, "fundrecs backfill rows fetched",
											   ALLOCSET_DEFAULT_SIZES);
	r->dest.pub.receiveSlot = reader_receive;
	r->dest.pub.rStartup = reader_dest_startup;
	r->dest.pub.rShutdown = reader_dest_noop;
	r->dest.pub.rDestroy = reader_dest_noop;
	r->dest.pub.mydest = DestNone;
	r->dest.reader = r;
	r->snapshot = chunk_snapshot();
	PushActiveSnapshot(r->snapshot);
	reader_open_cursor(r);
	PopActiveSnapshot();
	return r;
}

/* Closes the cursor and the relations (also at an early end of the query). */
static void
reader_close(ChunkReader *r)
{
	Portal		portal = GetPortalByName(r->portal);
	ListCell   *lc;

	if (PortalIsValid(portal))
		PortalDrop(portal, false);
	foreach(lc, r->leaves)
	{
		ChunkLeaf  *leaf = (ChunkLeaf *) lfirst(lc);

		ExecDropSingleTupleTableSlot(leaf->slot);
		if (leaf->ri->cxt != NULL)
			MemoryContextDelete(leaf->ri->cxt);
		table_close(leaf->rel, AccessShareLock);
	}
	r->leaves = NIL;
	fr_load_lookups_release(r->meta.load);
	if (r->rel != NULL)
		table_close(r->rel, AccessShareLock);
	r->rel = NULL;
	if (r->snapshot != NULL)
		UnregisterSnapshotFromOwner(r->snapshot, TopTransactionResourceOwner);
	r->snapshot = NULL;
}

static void
reader_shutdown(Datum arg)
{
	reader_close((ChunkReader *) DatumGetPointer(arg));
}

/*
 * Where read rows go: a tuplestore, a row each (backfill_rows), or a batch,
 * a row a line (backfill_chunk).
 */
typedef struct ChunkOut
{
	ReturnSetInfo *rsinfo;		/* backfill_rows: (key, row_json) rows */
	StringInfo	body;			/* backfill_chunk: the batch's rows */
	int			body_start;		/* its varlena header's length */
	int			batch_bytes;	/* the batch ends once it holds this many */
	int			rows_read;		/* rows read, those left out included */
	Datum		last_key;		/* the key of the last of them, or 0 */
	MemoryContext keycxt;		/* where last_key is made */
} ChunkOut;

/* The key of a row read: through the root's columns. */
static Datum
row_key(ChunkReader *r, ChunkLeaf *leaf, TupleDesc desc, HeapTuple tuple)
{
	if (!leaf->ri->as_root && leaf->relid != r->relid)
	{
		/* Emitted as the leaf: its key is read through the root's columns. */
		TupleConversionMap *map = convert_tuples_by_name(desc, r->rootdesc);

		return key_array(&r->key, r->rootdesc, map ? execute_attr_map_tuple(tuple, map) : tuple);
	}
	return key_array(&r->key, r->rootdesc, tuple);
}

/* May the chunk have rows left to read (fetched, or not yet)? */
static inline bool
reader_has_more(const ChunkReader *r)
{
	return r->nextrow < r->nrows || !r->exhausted;
}

/* The next rows of the cursor into r->rows. */
static void
reader_fetch_rows(ChunkReader *r)
{
	Portal		portal = GetPortalByName(r->portal);

	if (!PortalIsValid(portal))
		elog(ERROR, "the backfill chunk's cursor \"%s\" is gone", r->portal);
	r->nfetches++;
	MemoryContextReset(r->fetchcxt[r->nfetches % 2]);
	r->nrows = 0;
	r->nextrow = 0;
	(void) PortalRunFetch(portal, FETCH_FORWARD, READER_FETCH, &r->dest.pub);
	r->exhausted = r->nrows < READER_FETCH;
}

/* True when there is a fetched row left to read: fetched if need be. */
static bool
reader_fetch(ChunkReader *r)
{
	if (r->nextrow < r->nrows)
		return true;
	if (r->exhausted)
		return false;
	reader_fetch_rows(r);
	if (r->nrows > 0 && !OidIsValid(r->rows[0].leafid))
	{
		/*
		 * A partitioned table's rows that do not tell their partition: the
		 * plan sorts or projects them.  Its rows are the same throughout, so
		 * this is the chunk's first fetch: it is read again, by addresses.
		 */
		if (r->nfetches != 1)
			elog(ERROR, "a row of the backfill chunk of \"%s\" does not tell its partition",
				 RelationGetRelationName(r->rel));
		ereport(DEBUG1,
				(errmsg_internal("the backfill chunk of \"%s\" is read by address: its plan does not tell each row's partition",
								 RelationGetRelationName(r->rel))));
		PortalDrop(GetPortalByName(r->portal), false);
		r->whole_rows = false;
		reader_open_cursor(r);
		reader_fetch_rows(r);
	}
	return r->nrows > 0;
}

/*
 * A row the cursor found (as the table's, or the root's when it is
 * emitted as the root's), read again by its address into leaf->slot when
 * the cursor read addresses: its tuple, descriptor and leaf.
 */
static HeapTuple
reader_tuple(ChunkReader *r, const ChunkRow *row, ChunkLeaf **leafp, TupleDesc *descp)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(r->cxt);
	ChunkLeaf  *leaf = chunk_leaf(&r->leaves, row->leafid, &r->opts);
	HeapTuple	tuple = row->tuple;

	MemoryContextSwitchTo(oldcxt);
	if (tuple == NULL)
	{
		ItemPointerData tid = row->tid;
		bool		should_free;

		if (!table_tuple_fetch_row_version(leaf->rel, &tid, GetActiveSnapshot(), leaf->slot))
			elog(ERROR, "could not read the row at (%u,%u) of \"%s\" that the chunk found",
				 ItemPointerGetBlockNumber(&tid), ItemPointerGetOffsetNumber(&tid),
				 RelationGetRelationName(leaf->rel));
		tuple = ExecFetchSlotHeapTuple(leaf->slot, false, &should_free);
	}
	*descp = RelationGetDescr(leaf->rel);
	if (leaf->ri->as_root)
	{
		*descp = leaf->ri->desc;
		if (leaf->ri->map != NULL)
			tuple = execute_attr_map_tuple(tuple, leaf->ri->map);
	}
	*leafp = leaf;
	return tuple;
}

/*
 * Reads rows of the chunk into out until the cursor is exhausted or (a
 * batch) the body holds batch_bytes.  Each row is formatted and enriched
 * as a load row, as of the chunk's snapshot.
 */
static void
reader_read(ChunkReader *r, ChunkOut *out)
{
	MemoryContext oldcxt;

	PushActiveSnapshot(r->snapshot);
	while ((out->body == NULL || out->body->len - out->body_start < out->batch_bytes) &&
		   reader_fetch(r))
	{
		const ChunkRow *row = &r->rows[r->nextrow++];
		ChunkLeaf  *leaf;
		TupleDesc	desc;
		HeapTuple	tuple;
		bool		included;

		oldcxt = MemoryContextSwitchTo(r->rowcxt);
		tuple = reader_tuple(r, row, &leaf, &desc);
		included = leaf->ri->included &&
			(r->opts.publication_names == NIL ||
			 fr_publication_row_matches(leaf->ri, FR_PUBACTION_LOAD, desc, tuple));
		out->rows_read++;
		r->meta.load->snapshot = GetActiveSnapshot();
		if (out->rsinfo != NULL)
		{
			Datum		outvals[2];
			bool		outnulls[2] = {false, !included};

			outvals[0] = row_key(r, leaf, desc, tuple);
			outvals[1] = (Datum) 0;
			if (included)
			{
				StringInfoData line;

				initStringInfo(&line);
				fr_write_row(&line, &r->opts, &r->meta, leaf->ri, desc, tuple, NULL);
				outvals[1] = PointerGetDatum(cstring_to_text_with_len(line.data, line.len));
			}
			tuplestore_putvalues(out->rsinfo->setResult, out->rsinfo->setDesc,
								 outvals, outnulls);
		}
		else if (included)
		{
			/* Written in place; the batch's key is read at its end. */
			if (out->body->len > out->body_start)
				appendStringInfoChar(out->body, '\n');
			fr_write_row(out->body, &r->opts, &r->meta, leaf->ri, desc, tuple, NULL);
		}
		r->meta.load->snapshot = NULL;
		r->last = *row;
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(r->rowcxt);
	}

	/*
	 * A batch: the key of its last row, read once a batch (a row fetched is
	 * kept until the fetch after the next one).
	 */
	if (out->body != NULL && out->rows_read > 0)
	{
		ChunkLeaf  *leaf;
		TupleDesc	desc;
		HeapTuple	tuple;

		oldcxt = MemoryContextSwitchTo(out->keycxt);
		tuple = reader_tuple(r, &r->last, &leaf, &desc);
		out->last_key = row_key(r, leaf, desc, tuple);
		MemoryContextSwitchTo(oldcxt);
	}
	PopActiveSnapshot();
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
	ChunkReader *r;
	ChunkOut	out;

	InitMaterializedSRF(fcinfo, 0);
	memset(&out, 0, sizeof(out));
	out.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	r = reader_open(fcinfo);
	reader_read(r, &out);
	reader_close(r);
	MemoryContextDelete(r->rowcxt);
	return (Datum) 0;
}

/*
 * A batch of backfill_chunk: about this many bytes of rows.  Small enough
 * that its copies (into the row, the message, the socket) stay in the
 * CPU's cache; a chunk as one value of 20 MB was slower than a row each.
 */
#define CHUNK_BATCH_BYTES (256 * 1024)

/* The most a chunk may be asked to hold. */
#define CHUNK_MAX_BYTES ((int) (MaxAllocSize / 4))

typedef struct ChunkCalls
{
	ChunkReader *reader;
	int64		bytes;			/* in the batches returned so far */
	int			max_bytes;
	StringInfoData body;		/* the batch, after a varlena header */
	bool		done;
} ChunkCalls;

PG_FUNCTION_INFO_V1(fundrecs_backfill_chunk);

/*
 * fundrecs.backfill_chunk(tbl, after_key, max_rows, load_lsn, options,
 * condition, upto_key, max_bytes): the next chunk in batches of rows, what
 * fundrecs_shipper reads (extension 1.9).  Each batch holds rows a line, in
 * key order, as the plugin's pack_bytes messages hold them (a row never
 * holds a newline); rows_read counts the rows it covers, those the
 * publications' row filters leave out included, and last_key is the last
 * one's key.  Reading stops after max_rows rows, at upto_key, or once the
 * batches hold max_bytes bytes (the last batch says bytes_full: the chunk
 * then ends at its last_key).
 *
 * Value per call, so that batches stream to the client: a set function in
 * FROM goes through a tuplestore.  Batches, not a row each: a row each
 * cost a tuplestore row, a key array and a message of its own, more than
 * half of what reading a chunk cost the server.
 */
Datum
fundrecs_backfill_chunk(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	ChunkCalls *calls;
	ChunkOut	out;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcxt;
		TupleDesc	tupdesc;
		int			max_bytes = PG_ARGISNULL(7) ? 0 : PG_GETARG_INT32(7);

		if (max_bytes < 1 || max_bytes > CHUNK_MAX_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_bytes must be between 1 and %d", CHUNK_MAX_BYTES)));
		funcctx = SRF_FIRSTCALL_INIT();
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);
		calls = palloc0(sizeof(ChunkCalls));
		calls->max_bytes = max_bytes;
		initStringInfo(&calls->body);
		enlargeStringInfo(&calls->body, VARHDRSZ + CHUNK_BATCH_BYTES + CHUNK_BATCH_BYTES / 2);
		calls->reader = reader_open(fcinfo);
		RegisterExprContextCallback(rsinfo->econtext, reader_shutdown,
									PointerGetDatum(calls->reader));
		funcctx->user_fctx = calls;
		MemoryContextSwitchTo(oldcxt);
	}
	funcctx = SRF_PERCALL_SETUP();
	calls = funcctx->user_fctx;
	memset(&out, 0, sizeof(out));
	if (!calls->done)
	{
		resetStringInfo(&calls->body);
		appendStringInfoSpaces(&calls->body, VARHDRSZ);
		out.body = &calls->body;
		out.body_start = VARHDRSZ;
		out.keycxt = CurrentMemoryContext;
		out.batch_bytes = Min(CHUNK_BATCH_BYTES, calls->max_bytes - calls->bytes);
		reader_read(calls->reader, &out);
	}
	if (out.rows_read == 0)
	{
		/* max_bytes reached, or the chunk read to its end */
		UnregisterExprContextCallback(rsinfo->econtext, reader_shutdown,
									  PointerGetDatum(calls->reader));
		reader_close(calls->reader);
		SRF_RETURN_DONE(funcctx);
	}
	calls->bytes += calls->body.len - VARHDRSZ;
	calls->done = calls->bytes >= calls->max_bytes;
	SET_VARSIZE(calls->body.data, calls->body.len);

	values[0] = Int32GetDatum(out.rows_read);
	values[1] = out.last_key;
	values[2] = BoolGetDatum(calls->done && reader_has_more(calls->reader));
	values[3] = PointerGetDatum(calls->body.data);
	SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(heap_form_tuple(funcctx->tuple_desc,
															   values, nulls)));
}

PG_FUNCTION_INFO_V1(fundrecs_backfill_bounds);

/*
 * fundrecs.backfill_bounds(tbl, after_key, max_rows, parts, condition): the
 * next chunk split into parts of about max_rows / parts rows, to be read
 * side by side with backfill_chunk(..., upto_key): each part's last key and
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
