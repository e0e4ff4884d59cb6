/*-------------------------------------------------------------------------
 *
 * fundrecs_load.c
 *	  The initial load: fundrecs.load_rows(table, lsn, options) returns
 *	  every row of a table as the output plugin would emit it, with op
 *	  "load", formatted and enriched by the same code (fr_write_row).
 *
 * Run it in a transaction that imported the snapshot exported by the
 * slot's creation (SET TRANSACTION SNAPSHOT), in the SELECT list so that
 * rows stream out one at a time:
 *
 *	  SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/16B3748', '{}');
 *
 * Products are looked up through the same snapshot, so load rows are
 * enriched as of the slot's consistent point.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/tupconvert.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/*
 * A table is read leaf by leaf: a plain table is its own only leaf; a
 * partitioned table's rows are read from each of its partitions and,
 * with publish_via_partition_root (the default), converted to the root's
 * columns and emitted as the root's, as decoding emits their changes.
 */
typedef struct LoadState
{
	List	   *leaves;			/* OIDs of the tables with storage to read */
	int			next_leaf;
	Relation	rel;			/* the leaf being read, or NULL */
	TableScanDesc scan;
	TupleTableSlot *slot;
	FrOptions	opts;
	FrRelInfo  *ri;
	FrRowMeta	meta;
	MemoryContext cxt;
	bool		done;
} LoadState;

/* Options come as a text array of names and values, like the plugin's. */
List *
fr_options_from_array(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("options must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n % 2 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must hold pairs of names and values")));
	for (int i = 0; i < n; i += 2)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("option names must not be null")));
		result = lappend(result,
						 makeDefElem(TextDatumGetCString(elems[i]),
									 nulls[i + 1] ? NULL :
									 (Node *) makeString(TextDatumGetCString(elems[i + 1])),
									 -1));
	}
	return result;
}

/* Ends the scan of the current leaf, if any. */
static void
close_leaf(LoadState *state)
{
	if (state->rel == NULL)
		return;
	ExecDropSingleTupleTableSlot(state->slot);
	table_endscan(state->scan);
	table_close(state->rel, AccessShareLock);
	if (state->ri->cxt != NULL)
		MemoryContextDelete(state->ri->cxt);
	state->ri->cxt = NULL;
	state->rel = NULL;
}

static void
load_cleanup(Datum arg)
{
	LoadState  *state = (LoadState *) DatumGetPointer(arg);

	if (state->done)
		return;
	state->done = true;
	close_leaf(state);
}

/* Opens the next leaf; false when there is none left. */
static bool
open_next_leaf(LoadState *state)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(state->cxt);
	Oid			relid;

	close_leaf(state);
	if (state->next_leaf >= list_length(state->leaves))
	{
		MemoryContextSwitchTo(oldcxt);
		return false;
	}
	relid = list_nth_oid(state->leaves, state->next_leaf++);
	state->rel = table_open(relid, AccessShareLock);

	/* Its own relation info and lookups: decoding may run too. */
	memset(state->ri, 0, sizeof(FrRelInfo));
	state->ri->relid = relid;
	fr_relinfo_build(state->ri, state->rel, &state->opts);

	/* With publications, a partition none of them publishes is not read. */
	if (!state->ri->included)
	{
		MemoryContextDelete(state->ri->cxt);
		state->ri->cxt = NULL;
		table_close(state->rel, AccessShareLock);
		state->rel = NULL;
		MemoryContextSwitchTo(oldcxt);
		return open_next_leaf(state);
	}
	state->scan = table_beginscan(state->rel, GetActiveSnapshot(), 0, NULL);
	state->slot = table_slot_create(state->rel, NULL);
	MemoryContextSwitchTo(oldcxt);
	return true;
}

/* The caller must be allowed to read relid (SELECT), or an ERROR. */
void
fr_check_select(Oid relid)
{
	AclResult	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);

	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, get_relkind_objtype(get_rel_relkind(relid)),
					   get_rel_name(relid));
}

/*
 * The metadata of load rows (an initial load's, a backfill's), read at lsn:
 * op "load", the position as commit_lsn, no xid, the transaction's start as
 * commit_time, and lookups of its own, in cxt.  The header's transaction
 * part is the same for every row, so it is made once (formatting it for each
 * row was 4 % of reading a backfill chunk).
 */
void
fr_load_meta_init(FrRowMeta *meta, const FrOptions *opts, XLogRecPtr lsn, MemoryContext cxt,
				  bool keep_open)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	StringInfoData fragment;

	memset(meta, 0, sizeof(*meta));
	meta->op = "load";
	meta->lsn = lsn;
	meta->cache_usable = true;	/* its own cache (meta->load) */
	meta->commit_lsn = lsn;
	meta->xid = InvalidTransactionId;
	meta->commit_time = GetCurrentTransactionStartTimestamp();
	meta->toast_pointers_unchanged = false;
	meta->load = fr_load_lookups_create(cxt, keep_open);
	initStringInfo(&fragment);
	fr_append_txn_fragment(&fragment, opts, meta);
	meta->txn_fragment = fragment.data;
	meta->txn_fragment_len = fragment.len;
	MemoryContextSwitchTo(oldcxt);
}

/*
 * The table an initial load reads, checked (the caller may read it and
 * its products, the options capture it), and the leaves to read: the
 * table itself, or every partition with storage, in a stable order.
 */
List *
fr_load_leaves(const FrOptions *opts, Oid relid)
{
	Relation	rel;
	char		relkind;
	FrRelInfo	check;
	List	   *leaves = NIL;

	/* Everything read is read with the caller's rights. */
	fr_check_select(relid);
	rel = table_open(relid, AccessShareLock);
	relkind = rel->rd_rel->relkind;
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));

	memset(&check, 0, sizeof(check));
	check.relid = relid;
	fr_relinfo_build(&check, rel, opts);

	/*
	 * With publications, a partitioned table's partitions decide, one by one.
	 */
	if (!check.included &&
		!(opts->publication_names != NIL && relkind == RELKIND_PARTITIONED_TABLE))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg(opts->publication_names != NIL ?
						"table \"%s.%s\" is in none of the publications of the plugin option \"publication_names\"" :
						"table \"%s.%s\" is not in the plugin option \"tables\"",
						check.schema_name, check.table_name),
				 errhint(opts->publication_names != NIL ?
						 "Pass the same options as the slot's, with publications that publish this table." :
						 "Pass the same options as the slot's, with \"tables\" naming this table.")));
	if (check.is_orders)
	{
		/* The products joined with the orders are read too. */
		Oid			nspid = get_namespace_oid(FR_EXT_SCHEMA, true);
		Oid			products = OidIsValid(nspid) ?
		get_relname_relid(FR_PRODUCTS_TABLE, nspid) : InvalidOid;

		if (OidIsValid(products))
			fr_check_select(products);
	}
	if (OidIsValid(check.rules_relid))
	{
		/* And so are the lookup tables of its enrichment rules. */
		ListCell   *lc;

		foreach(lc, fr_rules_lookups(check.rules_relid))
			fr_check_select(lfirst_oid(lc));
	}
	MemoryContextDelete(check.cxt);

	if (relkind == RELKIND_PARTITIONED_TABLE)
	{
		/* Every partition with storage, in a stable order. */
		List	   *all = find_all_inheritors(relid, AccessShareLock, NULL);
		ListCell   *lc;

		foreach(lc, all)
		{
			if (get_rel_relkind(lfirst_oid(lc)) == RELKIND_RELATION)
				leaves = lappend_oid(leaves, lfirst_oid(lc));
		}
	}
	else
		leaves = list_make1_oid(relid);
	table_close(rel, AccessShareLock);
	return leaves;
}

PG_FUNCTION_INFO_V1(fundrecs_load_rows);

Datum
fundrecs_load_rows(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	LoadState  *state;

	if (SRF_IS_FIRSTCALL())
	{
		Oid			relid = PG_GETARG_OID(0);
		XLogRecPtr	lsn = PG_GETARG_LSN(1);
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		MemoryContext oldcxt;

		funcctx = SRF_FIRSTCALL_INIT();
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		state = palloc0(sizeof(LoadState));
		state->cxt = funcctx->multi_call_memory_ctx;

		fr_options_init(&state->opts);
		fr_options_parse(&state->opts, fr_options_from_array(PG_GETARG_ARRAYTYPE_P(2)));
		fr_options_resolve(&state->opts, false);

		state->leaves = fr_load_leaves(&state->opts, relid);

		fr_load_meta_init(&state->meta, &state->opts, lsn, funcctx->multi_call_memory_ctx, false);
		state->ri = palloc0(sizeof(FrRelInfo));

		/* Also ends the scan when the query stops early (LIMIT, error). */
		if (rsinfo != NULL && IsA(rsinfo, ReturnSetInfo) && rsinfo->econtext != NULL)
			RegisterExprContextCallback(rsinfo->econtext, load_cleanup,
										PointerGetDatum(state));
		funcctx->user_fctx = state;
		MemoryContextSwitchTo(oldcxt);
	}

	funcctx = SRF_PERCALL_SETUP();
	state = funcctx->user_fctx;

	while (!state->done)
	{
		bool		should_free;
		HeapTuple	tuple;
		TupleDesc	desc;
		StringInfoData out;

		if (state->rel == NULL ||
			!table_scan_getnextslot(state->scan, ForwardScanDirection, state->slot))
		{
			if (!open_next_leaf(state))
				break;
			continue;
		}

		/* Built in the per-call context, which the executor resets per row. */
		tuple = ExecFetchSlotHeapTuple(state->slot, false, &should_free);
		desc = RelationGetDescr(state->rel);
		if (state->ri->as_root)
		{
			desc = state->ri->desc;
			if (state->ri->map != NULL)
			{
				HeapTuple	converted = execute_attr_map_tuple(tuple, state->ri->map);

				if (should_free)
					heap_freetuple(tuple);
				tuple = converted;
				should_free = true;
			}
		}
		/* A publication's row filter: rows a subscriber's copy would skip. */
		if (state->opts.publication_names != NIL &&
			!fr_publication_row_matches(state->ri, FR_PUBACTION_LOAD, desc, tuple))
		{
			if (should_free)
				heap_freetuple(tuple);
			continue;
		}
		initStringInfo(&out);
		state->meta.load->snapshot = GetActiveSnapshot();
		fr_write_row(&out, &state->opts, &state->meta, state->ri, desc, tuple, NULL);
		state->meta.load->snapshot = NULL;
		if (should_free)
			heap_freetuple(tuple);
		SRF_RETURN_NEXT(funcctx, PointerGetDatum(cstring_to_text_with_len(out.data, out.len)));
	}

	load_cleanup(PointerGetDatum(state));

	/*
	 * SRF_RETURN_DONE frees the state with the multi-call context, while the
	 * expression context lives on: its callback must not run on freed memory
	 * (UBSan caught it reading a garbage "done" flag).
	 */
	{
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

		if (rsinfo != NULL && IsA(rsinfo, ReturnSetInfo) && rsinfo->econtext != NULL)
			UnregisterExprContextCallback(rsinfo->econtext, load_cleanup,
										  PointerGetDatum(state));
	}
	SRF_RETURN_DONE(funcctx);
}

/*
 * With publication_names: is the table, or for a partitioned table one of
 * its partitions, published (for the initial load: by any action)?
 */
static bool
published(const FrOptions *opts, const char *schema, const char *table)
{
	Oid			nspid = get_namespace_oid(schema, true);
	Oid			relid = OidIsValid(nspid) ? get_relname_relid(table, nspid) : InvalidOid;
	List	   *rels;
	ListCell   *lc;
	bool		found = false;

	if (!OidIsValid(relid))
		return false;
	rels = get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ?
		find_all_inheritors(relid, AccessShareLock, NULL) : list_make1_oid(relid);
	foreach(lc, rels)
	{
		Relation	rel;
		FrRelInfo	ri;

		if (get_rel_relkind(lfirst_oid(lc)) != RELKIND_RELATION)
			continue;
		rel = table_open(lfirst_oid(lc), AccessShareLock);
		memset(&ri, 0, sizeof(ri));
		ri.relid = lfirst_oid(lc);
		fr_relinfo_build(&ri, rel, opts);
		found = ri.included;
		MemoryContextDelete(ri.cxt);
		table_close(rel, AccessShareLock);
		if (found)
			break;
	}
	return found;
}

/*
 * fundrecs.table_included(options, schema, table): the plugin's "tables"
 * filter, for the shipper to list the tables of an initial load.
 */
PG_FUNCTION_INFO_V1(fundrecs_table_included);

Datum
fundrecs_table_included(PG_FUNCTION_ARGS)
{
	FrOptions	opts;

	fr_options_init(&opts);
	fr_options_parse(&opts, fr_options_from_array(PG_GETARG_ARRAYTYPE_P(0)));
	if (opts.publication_names != NIL)
		PG_RETURN_BOOL(published(&opts, NameStr(*PG_GETARG_NAME(1)), NameStr(*PG_GETARG_NAME(2))));
	PG_RETURN_BOOL(fr_options_table_included(&opts, NameStr(*PG_GETARG_NAME(1)),
											 NameStr(*PG_GETARG_NAME(2))));
}

/*
 * fundrecs.option_problems(options): what would make a slot with these
 * plugin options silently emit nothing: "tables" entries that match no
 * table, an orders table that does not exist.  Bad options are errors, as
 * in decoding.  The shipper refuses to start on any (--allow-no-tables).
 */
PG_FUNCTION_INFO_V1(fundrecs_option_problems);

Datum
fundrecs_option_problems(PG_FUNCTION_ARGS)
{
	FrOptions	opts;
	List	   *problems;
	ListCell   *lc;
	ArrayBuildState *astate = NULL;

	fr_options_init(&opts);
	fr_options_parse(&opts, fr_options_from_array(PG_GETARG_ARRAYTYPE_P(0)));
	problems = fr_options_resolve(&opts, false);
	problems = list_concat(problems, fr_publication_problems(&opts));
	problems = list_concat(problems, fr_rules_problems(&opts));
	foreach(lc, problems)
		astate = accumArrayResult(astate, CStringGetTextDatum((char *) lfirst(lc)), false,
								  TEXTOID, CurrentMemoryContext);
	if (astate == NULL)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(TEXTOID));
	PG_RETURN_DATUM(makeArrayResult(astate, CurrentMemoryContext));
}
