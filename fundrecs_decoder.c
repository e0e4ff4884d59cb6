/*-------------------------------------------------------------------------
 *
 * fundrecs_decoder.c
 *	  Logical decoding output plugin that emits one JSON object per row
 *	  change, with orders enriched from fundrecs.product_details as of
 *	  the change, priced exactly and routed by product category.
 *
 * Use: pg_create_logical_replication_slot('slot', 'fundrecs_decoder').
 * The library also holds the C functions of the fundrecs extension.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/htup_details.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/reorderbuffer.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"

PG_MODULE_MAGIC;

typedef struct FrDecodingData
{
	MemoryContext context;		/* reset after every change */
	FrOptions	opts;
} FrDecodingData;

extern void _PG_output_plugin_init(OutputPluginCallbacks *cb);

static void fr_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt,
					   bool is_init);
static void fr_shutdown(LogicalDecodingContext *ctx);
static void fr_begin_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void fr_commit_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						  XLogRecPtr commit_lsn);
static void fr_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					  Relation relation, ReorderBufferChange *change);
static void fr_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						int nrelations, Relation relations[],
						ReorderBufferChange *change);

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = fr_startup;
	cb->begin_cb = fr_begin_txn;
	cb->change_cb = fr_change;
	cb->truncate_cb = fr_truncate;
	cb->commit_cb = fr_commit_txn;
	cb->shutdown_cb = fr_shutdown;
}

static void
fr_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	FrDecodingData *data = palloc0(sizeof(FrDecodingData));

	data->context = AllocSetContextCreate(ctx->context,
										  "fundrecs_decoder change context",
										  ALLOCSET_DEFAULT_SIZES);
	fr_options_init(&data->opts);
	fr_options_parse(&data->opts, ctx->output_plugin_options);

	ctx->output_plugin_private = data;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;

	fr_relinfo_init();
	fr_products_init();
}

static void
fr_shutdown(LogicalDecodingContext *ctx)
{
	FrDecodingData *data = ctx->output_plugin_private;

	MemoryContextDelete(data->context);
}

static void
fr_begin_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	fr_products_begin_txn(txn->final_lsn, rbtxn_has_catalog_changes(txn));
}

static void
fr_commit_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  XLogRecPtr commit_lsn)
{
	fr_products_commit_txn(txn->end_lsn, rbtxn_has_catalog_changes(txn));
}

/* ----------------------------------------------------------------
 * Row assembly
 * ----------------------------------------------------------------
 */

static void
append_header(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			  FrRelInfo *ri)
{
	appendStringInfo(out, "{\"op\":\"%s\",", meta->op);
	appendStringInfoString(out, ri->schema_json);
	appendStringInfoChar(out, ',');
	appendStringInfoString(out, ri->table_json);
	if (opts->include_lsn)
	{
		appendStringInfoString(out, ",\"lsn\":");
		fr_json_append_lsn(out, meta->lsn);
		appendStringInfoString(out, ",\"commit_lsn\":");
		fr_json_append_lsn(out, meta->commit_lsn);
	}
	if (opts->include_xid)
	{
		/* Load rows belong to no transaction of the source. */
		if (TransactionIdIsValid(meta->xid))
			appendStringInfo(out, ",\"xid\":%u", meta->xid);
		else
			appendStringInfoString(out, ",\"xid\":null");
	}
	if (opts->include_timestamp)
	{
		appendStringInfoString(out, ",\"commit_time\":");
		fr_json_append_timestamptz(out, meta->commit_time);
	}
}

/* Is the attribute's value an unchanged TOAST pointer? */
static inline bool
is_unchanged_toast(FrColumn *col, Datum value)
{
	return col->typisvarlena &&
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value));
}

static void
append_key(StringInfo out, FrRelInfo *ri, TupleDesc desc, HeapTuple tuple)
{
	appendStringInfoString(out, ",\"key\":{");
	for (int i = 0; i < ri->nkeys; i++)
	{
		FrColumn   *col = &ri->cols[ri->keyattrs[i] - 1];
		bool		isnull;
		Datum		value = heap_getattr(tuple, col->attnum, desc, &isnull);

		if (i > 0)
			appendStringInfoChar(out, ',');
		appendStringInfoString(out, col->json_name);
		if (isnull || is_unchanged_toast(col, value))
			appendStringInfoString(out, "null");
		else
			fr_json_append_value(out, col, value);
	}
	appendStringInfoChar(out, '}');
}

/*
 * The product of an orders row, or NULL when its product column is absent
 * from the tuple or NULL.  An old tuple is whole only under REPLICA
 * IDENTITY FULL; otherwise it holds the key columns alone.
 */
static FrProduct *
row_product(FrRelInfo *ri, TupleDesc desc, HeapTuple tuple, bool whole,
			const FrRowMeta *meta, bool *has_product_column)
{
	bool		isnull;
	Datum		value;
	int64		product_id;

	*has_product_column = false;
	if (ri->product_attnum > desc->natts)
		return NULL;
	if (!whole && !ri->cols[ri->product_attnum - 1].is_key)
		return NULL;
	value = heap_getattr(tuple, ri->product_attnum, desc, &isnull);
	*has_product_column = true;
	if (isnull)
		return NULL;

	switch (ri->cols[ri->product_attnum - 1].basetypid)
	{
		case INT2OID:
			product_id = DatumGetInt16(value);
			break;
		case INT4OID:
			product_id = DatumGetInt32(value);
			break;
		default:
			product_id = DatumGetInt64(value);
			break;
	}
	if (meta->load != NULL)
		return fr_load_products_lookup(meta->load, product_id);
	return fr_products_lookup(product_id, meta->lsn);
}

static void
append_enrichment(StringInfo out, FrRelInfo *ri, TupleDesc desc,
				  HeapTuple tuple, FrProduct *product)
{
	bool		isnull;
	Datum		quantity;

	if (product == NULL || !product->found)
	{
		appendStringInfoString(out,
							   ",\"product_name\":null,\"category\":null,"
							   "\"price\":null,\"total_price\":null");
		return;
	}

	appendStringInfoString(out, ",\"product_name\":");
	appendStringInfoString(out, product->name_json);
	appendStringInfoString(out, ",\"category\":");
	appendStringInfoString(out, product->category_json);
	appendStringInfoString(out, ",\"price\":");
	appendStringInfoString(out, product->price_text ? product->price_text : "null");
	appendStringInfoString(out, ",\"total_price\":");

	quantity = heap_getattr(tuple, ri->quantity_attnum, desc, &isnull);
	if (isnull || product->price_text == NULL)
		appendStringInfoString(out, "null");
	else
	{
		Datum		qnum;
		Datum		total;

		switch (ri->cols[ri->quantity_attnum - 1].basetypid)
		{
			case INT2OID:
				qnum = NumericGetDatum(int64_to_numeric(DatumGetInt16(quantity)));
				break;
			case INT4OID:
				qnum = NumericGetDatum(int64_to_numeric(DatumGetInt32(quantity)));
				break;
			case INT8OID:
				qnum = NumericGetDatum(int64_to_numeric(DatumGetInt64(quantity)));
				break;
			default:
				qnum = quantity;
				break;
		}
		total = DirectFunctionCall2(numeric_mul, product->price, qnum);
		{
			char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, total));

			/* A NaN quantity makes a NaN total: quote it like any NaN. */
			if (text[0] == 'N' || text[0] == 'I' || (text[0] == '-' && text[1] == 'I'))
				fr_json_append_string(out, text);
			else
				appendStringInfoString(out, text);
		}
	}
}

/*
 * Appends prefix and {...columns...} for a tuple; with key_only, just the
 * key columns (an old tuple that is not whole).  In decoding, an on-disk
 * TOAST pointer is an unchanged value: it is left out and its column named
 * in *toast (when toast is not NULL).
 */
static void
append_tuple(StringInfo out, const char *prefix, const FrRowMeta *meta,
			 FrRelInfo *ri, TupleDesc desc, HeapTuple tuple, bool key_only,
			 FrProduct *product, bool enrich, StringInfo toast)
{
	bool		first = true;

	appendStringInfoString(out, prefix);
	appendStringInfoChar(out, '{');
	for (int i = 0; i < desc->natts && i < ri->natts; i++)
	{
		FrColumn   *col = &ri->cols[i];
		bool		isnull;
		Datum		value;

		if (col->dropped || (key_only && !col->is_key))
			continue;
		value = heap_getattr(tuple, col->attnum, desc, &isnull);
		if (!isnull && meta->toast_pointers_unchanged && is_unchanged_toast(col, value))
		{
			if (toast != NULL)
			{
				appendStringInfoString(toast, toast->len > 0 ? "," : "");
				appendBinaryStringInfo(toast, col->json_name,
									   strlen(col->json_name) - 1);
			}
			continue;
		}
		if (!first)
			appendStringInfoChar(out, ',');
		first = false;
		appendStringInfoString(out, col->json_name);
		if (isnull)
			appendStringInfoString(out, "null");
		else
			fr_json_append_value(out, col, value);
	}
	appendStringInfoChar(out, '}');

	if (enrich)
	{
		/* Put the enrichment fields inside the object just closed. */
		out->len--;
		out->data[out->len] = '\0';
		append_enrichment(out, ri, desc, tuple, product);
		appendStringInfoChar(out, '}');
	}
}

/* DMS's timestamp: ISO 8601 in UTC with six fractional digits. */
static void
append_dms_timestamp(StringInfo out, TimestampTz ts)
{
	StringInfoData buf;
	char	   *dot;
	int			frac;

	initStringInfo(&buf);
	fr_json_append_timestamptz(&buf, ts);
	/* buf: "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" with its quotes */
	buf.data[buf.len - 2] = '\0';
	dot = strchr(buf.data, '.');
	frac = dot ? (int) strlen(dot + 1) : 0;
	appendStringInfoString(out, buf.data);
	appendStringInfoString(out, dot ? "" : ".");
	for (; frac < 6; frac++)
		appendStringInfoChar(out, '0');
	appendStringInfoString(out, "Z\"");
	pfree(buf.data);
}

/*
 * The DMS Kinesis record: {"data":{...},"before-image":{...},"metadata":{...}}.
 * Deletes carry the old row (its key columns at least) in data; an update's
 * old row, when PostgreSQL gives one, goes in before-image.  fundrecs adds
 * route, key, lsn and commit-lsn to metadata, which DMS consumers ignore.
 */
static void
write_row_dms(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			  FrRelInfo *ri, TupleDesc desc, HeapTuple newtuple, HeapTuple oldtuple,
			  FrProduct *newproduct, FrProduct *oldproduct, bool old_has_product,
			  const char *route)
{
	StringInfoData toast;

	initStringInfo(&toast);
	if (newtuple != NULL)
		append_tuple(out, "{\"data\":", meta, ri, desc, newtuple, false, newproduct,
					 ri->is_orders, &toast);
	else
		append_tuple(out, "{\"data\":", meta, ri, desc, oldtuple, !ri->identity_full,
					 oldproduct, ri->is_orders && old_has_product, NULL);
	if (newtuple != NULL && oldtuple != NULL)
		append_tuple(out, ",\"before-image\":", meta, ri, desc, oldtuple,
					 !ri->identity_full, oldproduct, ri->is_orders && old_has_product,
					 NULL);

	appendStringInfoString(out, ",\"metadata\":{");
	if (opts->include_timestamp)
	{
		appendStringInfoString(out, "\"timestamp\":");
		append_dms_timestamp(out, meta->commit_time);
		appendStringInfoChar(out, ',');
	}
	appendStringInfo(out, "\"record-type\":\"data\",\"operation\":\"%s\","
					 "\"partition-key-type\":\"primary-key\",\"schema-name\":",
					 meta->op);
	fr_json_append_string(out, ri->schema_name);
	appendStringInfoString(out, ",\"table-name\":");
	fr_json_append_string(out, ri->table_name);
	if (opts->include_xid && TransactionIdIsValid(meta->xid))
		appendStringInfo(out, ",\"transaction-id\":%u", meta->xid);
	if (opts->include_lsn)
	{
		appendStringInfoString(out, ",\"lsn\":");
		fr_json_append_lsn(out, meta->lsn);
		appendStringInfoString(out, ",\"commit-lsn\":");
		fr_json_append_lsn(out, meta->commit_lsn);
	}
	appendStringInfoString(out, ",\"route\":");
	appendStringInfoString(out, route);
	if (ri->nkeys > 0)
	{
		StringInfoData key;

		initStringInfo(&key);
		append_key(&key, ri, desc, newtuple != NULL ? newtuple : oldtuple);
		/* append_key writes ,"key":{...} */
		appendStringInfoString(out, key.data);
	}
	if (toast.len > 0)
	{
		appendStringInfoString(out, ",\"unchanged-toast\":[");
		appendBinaryStringInfo(out, toast.data, toast.len);
		appendStringInfoChar(out, ']');
	}
	appendStringInfoString(out, "}}");
}

/*
 * Writes one row message; newtuple or oldtuple may be NULL.  Native:
 * header, key, route, data, old, unchanged_toast.  The initial load formats
 * its rows here too (op "load"), so both are the same shape.
 */
void
fr_write_row(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			 FrRelInfo *ri, TupleDesc desc, HeapTuple newtuple, HeapTuple oldtuple)
{
	FrProduct  *newproduct = NULL;
	FrProduct  *oldproduct = NULL;
	bool		new_has_product = false;
	bool		old_has_product = false;
	const char *route;
	StringInfoData toast;

	if (ri->is_orders)
	{
		if (newtuple != NULL)
			newproduct = row_product(ri, desc, newtuple, true, meta, &new_has_product);
		if (oldtuple != NULL)
			oldproduct = row_product(ri, desc, oldtuple, ri->identity_full, meta,
									 &old_has_product);
		if (newtuple != NULL)
			route = newproduct && newproduct->found ? newproduct->route_json :
				"\"" FR_ROUTE_UNCATEGORIZED "\"";
		else if (oldtuple != NULL && old_has_product)
			route = oldproduct && oldproduct->found ? oldproduct->route_json :
				"\"" FR_ROUTE_UNCATEGORIZED "\"";
		else
			route = "null";
	}
	else
		route = ri->route_json;

	if (opts->format == FR_FORMAT_DMS)
	{
		write_row_dms(out, opts, meta, ri, desc, newtuple, oldtuple, newproduct,
					  oldproduct, old_has_product, route);
		return;
	}

	append_header(out, opts, meta, ri);
	if (ri->nkeys > 0)
		append_key(out, ri, desc, newtuple != NULL ? newtuple : oldtuple);
	appendStringInfoString(out, ",\"route\":");
	appendStringInfoString(out, route);

	initStringInfo(&toast);
	if (newtuple != NULL)
		append_tuple(out, ",\"data\":", meta, ri, desc, newtuple, false, newproduct,
					 ri->is_orders, &toast);
	if (oldtuple != NULL)
		append_tuple(out, ",\"old\":", meta, ri, desc, oldtuple, !ri->identity_full,
					 oldproduct, ri->is_orders && old_has_product, NULL);
	if (toast.len > 0)
	{
		appendStringInfoString(out, ",\"unchanged_toast\":[");
		appendBinaryStringInfo(out, toast.data, toast.len);
		appendStringInfoChar(out, ']');
	}
	appendStringInfoChar(out, '}');
}

/* A truncate: native, or a DMS control record (which DMS consumers skip). */
static void
write_truncate(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			   FrRelInfo *ri)
{
	/* A truncated orders table spans every route: no single one. */
	const char *route = ri->is_orders ? "null" : ri->route_json;

	if (opts->format == FR_FORMAT_DMS)
	{
		appendStringInfoString(out, "{\"metadata\":{");
		if (opts->include_timestamp)
		{
			appendStringInfoString(out, "\"timestamp\":");
			append_dms_timestamp(out, meta->commit_time);
			appendStringInfoChar(out, ',');
		}
		appendStringInfoString(out, "\"record-type\":\"control\",\"operation\":\"truncate-table\","
							   "\"partition-key-type\":\"schema-table\",\"schema-name\":");
		fr_json_append_string(out, ri->schema_name);
		appendStringInfoString(out, ",\"table-name\":");
		fr_json_append_string(out, ri->table_name);
		if (opts->include_xid)
			appendStringInfo(out, ",\"transaction-id\":%u", meta->xid);
		if (opts->include_lsn)
		{
			appendStringInfoString(out, ",\"lsn\":");
			fr_json_append_lsn(out, meta->lsn);
			appendStringInfoString(out, ",\"commit-lsn\":");
			fr_json_append_lsn(out, meta->commit_lsn);
		}
		appendStringInfo(out, ",\"route\":%s}}", route);
		return;
	}
	append_header(out, opts, meta, ri);
	appendStringInfo(out, ",\"route\":%s}", route);
}

static void
fill_meta(FrRowMeta *meta, ReorderBufferTXN *txn, const char *op, XLogRecPtr lsn)
{
	meta->op = op;
	meta->lsn = lsn;
	meta->commit_lsn = txn->end_lsn;
	meta->xid = txn->xid;
	meta->commit_time = txn->xact_time.commit_time;
	meta->toast_pointers_unchanged = true;
	meta->load = NULL;
}

static void
fr_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		  Relation relation, ReorderBufferChange *change)
{
	FrDecodingData *data = ctx->output_plugin_private;
	MemoryContext oldcxt;
	FrRelInfo  *ri;
	FrRowMeta	meta;
	HeapTuple	newtuple = NULL;
	HeapTuple	oldtuple = NULL;
	const char *op;

	ri = fr_relinfo_get(relation, &data->opts);
	if (ri->is_products)
		fr_products_txn_touched_products();
	if (!ri->included)
		return;

	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			op = "insert";
			if (change->data.tp.newtuple)
				newtuple = &change->data.tp.newtuple->tuple;
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			op = "update";
			if (change->data.tp.newtuple)
				newtuple = &change->data.tp.newtuple->tuple;
			if (change->data.tp.oldtuple)
				oldtuple = &change->data.tp.oldtuple->tuple;
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			op = "delete";
			if (change->data.tp.oldtuple)
				oldtuple = &change->data.tp.oldtuple->tuple;
			break;
		default:
			return;
	}

	oldcxt = MemoryContextSwitchTo(data->context);
	fill_meta(&meta, txn, op, change->lsn);

	OutputPluginPrepareWrite(ctx, true);
	fr_write_row(ctx->out, &data->opts, &meta, ri, RelationGetDescr(relation),
				 newtuple, oldtuple);
	OutputPluginWrite(ctx, true);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->context);
}

static void
fr_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			int nrelations, Relation relations[], ReorderBufferChange *change)
{
	FrDecodingData *data = ctx->output_plugin_private;
	MemoryContext oldcxt = MemoryContextSwitchTo(data->context);

	for (int i = 0; i < nrelations; i++)
	{
		FrRelInfo  *ri = fr_relinfo_get(relations[i], &data->opts);
		FrRowMeta	meta;

		if (ri->is_products)
			fr_products_txn_touched_products();
		if (!ri->included)
			continue;

		fill_meta(&meta, txn, "truncate", change->lsn);
		OutputPluginPrepareWrite(ctx, true);
		write_truncate(ctx->out, &data->opts, &meta, ri);
		OutputPluginWrite(ctx, true);
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->context);
}
