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

typedef struct LoadState
{
	Relation	rel;
	TableScanDesc scan;
	TupleTableSlot *slot;
	FrOptions	opts;
	FrRelInfo  *ri;
	FrRowMeta	meta;
	bool		done;
} LoadState;

/* Options come as a text array of names and values, like the plugin's. */
static List *
options_from_array(ArrayType *arr)
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

static void
load_cleanup(Datum arg)
{
	LoadState  *state = (LoadState *) DatumGetPointer(arg);

	if (state->done)
		return;
	state->done = true;
	ExecDropSingleTupleTableSlot(state->slot);
	table_endscan(state->scan);
	table_close(state->rel, AccessShareLock);
	if (state->ri->cxt != NULL)
		MemoryContextDelete(state->ri->cxt);
	state->ri->cxt = NULL;
}

PG_FUNCTION_INFO_V1(fundrecs_load_rows);

Datum
fundrecs_load_rows(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	LoadState  *state;
	bool		found;

	if (SRF_IS_FIRSTCALL())
	{
		Oid			relid = PG_GETARG_OID(0);
		XLogRecPtr	lsn = PG_GETARG_LSN(1);
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		MemoryContext oldcxt;
		AclResult	aclresult;

		funcctx = SRF_FIRSTCALL_INIT();
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		state = palloc0(sizeof(LoadState));

		fr_options_init(&state->opts);
		fr_options_parse(&state->opts, options_from_array(PG_GETARG_ARRAYTYPE_P(2)));

		aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
		if (aclresult != ACLCHECK_OK)
			aclcheck_error(aclresult, get_relkind_objtype(get_rel_relkind(relid)),
						   get_rel_name(relid));

		state->rel = table_open(relid, AccessShareLock);
		if (state->rel->rd_rel->relkind != RELKIND_RELATION)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("\"%s\" is not a table", RelationGetRelationName(state->rel))));

		/* Its own relation info and product cache: decoding may run too. */
		state->ri = palloc0(sizeof(FrRelInfo));
		state->ri->relid = relid;
		fr_relinfo_build(state->ri, state->rel, &state->opts);
		if (!state->ri->included)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("table \"%s.%s\" is not in the plugin option \"tables\"",
							state->ri->schema_name, state->ri->table_name),
					 errhint("Pass the same options as the slot's, with \"tables\" naming this table.")));

		state->meta.op = "load";
		state->meta.lsn = lsn;
		state->meta.commit_lsn = lsn;
		state->meta.xid = InvalidTransactionId;
		state->meta.commit_time = GetCurrentTransactionStartTimestamp();
		state->meta.toast_pointers_unchanged = false;
		state->meta.txn_fragment = NULL;

		state->meta.load = fr_load_products_create(funcctx->multi_call_memory_ctx);
		state->scan = table_beginscan(state->rel, GetActiveSnapshot(), 0, NULL);
		state->slot = table_slot_create(state->rel, NULL);

		/* Also ends the scan when the query stops early (LIMIT, error). */
		if (rsinfo != NULL && IsA(rsinfo, ReturnSetInfo) && rsinfo->econtext != NULL)
			RegisterExprContextCallback(rsinfo->econtext, load_cleanup,
										PointerGetDatum(state));
		funcctx->user_fctx = state;
		MemoryContextSwitchTo(oldcxt);
	}

	funcctx = SRF_PERCALL_SETUP();
	state = funcctx->user_fctx;

	found = !state->done &&
		table_scan_getnextslot(state->scan, ForwardScanDirection, state->slot);
	if (found)
	{
		bool		should_free;
		HeapTuple	tuple = ExecFetchSlotHeapTuple(state->slot, false, &should_free);
		StringInfoData out;

		/* Built in the per-call context, which the executor resets per row. */
		initStringInfo(&out);
		state->meta.load->snapshot = GetActiveSnapshot();
		fr_write_row(&out, &state->opts, &state->meta, state->ri,
					 RelationGetDescr(state->rel), tuple, NULL);
		state->meta.load->snapshot = NULL;
		if (should_free)
			heap_freetuple(tuple);
		SRF_RETURN_NEXT(funcctx, PointerGetDatum(cstring_to_text_with_len(out.data, out.len)));
	}

	load_cleanup(PointerGetDatum(state));
	SRF_RETURN_DONE(funcctx);
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
	fr_options_parse(&opts, options_from_array(PG_GETARG_ARRAYTYPE_P(0)));
	PG_RETURN_BOOL(fr_options_table_included(&opts, NameStr(*PG_GETARG_NAME(1)),
											 NameStr(*PG_GETARG_NAME(2))));
}
