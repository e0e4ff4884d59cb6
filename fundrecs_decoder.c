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
#include "access/tupconvert.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/reorderbuffer.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"

#include "fundrecs_compat.h"

PG_MODULE_MAGIC;

typedef struct FrDecodingData
{
	MemoryContext context;		/* reset after every change */
	FrOptions	opts;
	StringInfoData txn_fragment;	/* commit_lsn, xid, commit_time of the txn */
	StringInfoData pack;		/* pack_bytes: the transaction's rows not yet
								 * written, one per line */
	int			pack_row_start; /* where the row being written starts */
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
static void append_txn_fragment(StringInfo out, const FrOptions *opts,
								const FrRowMeta *meta);
static void fr_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						int nrelations, Relation relations[],
						ReorderBufferChange *change);
static void fr_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					   XLogRecPtr message_lsn, bool transactional,
					   const char *prefix, Size message_size,
					   const char *message);

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = fr_startup;
	cb->begin_cb = fr_begin_txn;
	cb->change_cb = fr_change;
	cb->truncate_cb = fr_truncate;
	cb->commit_cb = fr_commit_txn;
	cb->message_cb = fr_message;
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
	/* Creating the slot decodes nothing: no need to look anything up. */
	if (!is_init)
		fr_options_resolve(&data->opts, true);
	initStringInfo(&data->txn_fragment);
	initStringInfo(&data->pack);

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
	/* The caches go with the session, as pgoutput's relation cache does. */
	fr_relinfo_shutdown();
	fr_products_shutdown();
}

/* ----------------------------------------------------------------
 * Messages: a row each, or with pack_bytes, the rows of a transaction
 * packed into messages of up to pack_bytes, one row per line.  A row of
 * pack_bytes or more goes alone; a message never holds rows of two
 * transactions (the pack is written out at commit).  Each message costs
 * the walsender a send() and its bookkeeping, so packing rows makes the
 * replication connection carry several times more rows per second
 * (BENCHMARKS.md); the client splits them at the newlines, which a row
 * never contains.
 * ----------------------------------------------------------------
 */

/* Where the next row is written: its own message, or the pack. */
static StringInfo
row_begin(LogicalDecodingContext *ctx, FrDecodingData *data)
{
	if (data->opts.pack_bytes == 0)
	{
		OutputPluginPrepareWrite(ctx, true);
		return ctx->out;
	}
	/* A pack holds whole rows of one transaction, each under the bound. */
	Assert(data->pack.len < data->opts.pack_bytes);
	if (data->pack.len > 0)
		fr_append_char(&data->pack, '\n');
	data->pack_row_start = data->pack.len;
	return &data->pack;
}

static void
pack_write(LogicalDecodingContext *ctx, const char *bytes, int len)
{
	OutputPluginPrepareWrite(ctx, true);
	fr_append_bytes(ctx->out, bytes, len);
	OutputPluginWrite(ctx, true);
}

/* The row is complete: its message goes, or the pack when it is full. */
static void
row_end(LogicalDecodingContext *ctx, FrDecodingData *data)
{
	StringInfo	pack = &data->pack;
	int			limit = data->opts.pack_bytes;

	if (limit == 0)
	{
		OutputPluginWrite(ctx, true);
		return;
	}
	if (pack->len < limit)
		return;
	if (pack->len > limit && data->pack_row_start > 0)
	{
		/* Over the bound: the rows before this one go (not their newline). */
		int			rowlen = pack->len - data->pack_row_start;

		pack_write(ctx, pack->data, data->pack_row_start - 1);
		memmove(pack->data, pack->data + data->pack_row_start, rowlen);
		pack->len = rowlen;
		pack->data[rowlen] = '\0';
		data->pack_row_start = 0;
		if (pack->len < limit)
			return;
	}
	/* Exactly full, or one row of pack_bytes or more. */
	pack_write(ctx, pack->data, pack->len);
	resetStringInfo(pack);
}

/* The end of a transaction: the rest of the pack goes. */
static void
pack_flush(LogicalDecodingContext *ctx, FrDecodingData *data)
{
	if (data->pack.len > 0)
		pack_write(ctx, data->pack.data, data->pack.len);
	resetStringInfo(&data->pack);
	/*
	 * A very large row left a large buffer behind: give it back.  The new
	 * one lives as long as the decoding session, like the first (the commit
	 * callback runs in a shorter-lived context: t/160_pack.pl's rows of up
	 * to 5 kB read freed memory when it was made there).
	 */
	if (data->pack.maxlen > 4 * Max(data->opts.pack_bytes, FR_PACK_BYTES_MIN))
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(GetMemoryChunkContext(data));

		pfree(data->pack.data);
		initStringInfo(&data->pack);
		MemoryContextSwitchTo(oldcxt);
	}
}

static void
fr_begin_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	FrDecodingData *data = ctx->output_plugin_private;
	FrRowMeta	meta;

	resetStringInfo(&data->pack);

	fr_products_begin_txn(txn->final_lsn, rbtxn_has_catalog_changes(txn));

	/* Rendered once per transaction rather than once per row. */
	meta.commit_lsn = txn->end_lsn;
	meta.xid = txn->xid;
	meta.commit_time = txn->xact_time.commit_time;
	resetStringInfo(&data->txn_fragment);
	append_txn_fragment(&data->txn_fragment, &data->opts, &meta);
}

static void
fr_commit_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  XLogRecPtr commit_lsn)
{
	pack_flush(ctx, ctx->output_plugin_private);
	fr_products_commit_txn(txn->end_lsn, rbtxn_has_catalog_changes(txn));
}

/* ----------------------------------------------------------------
 * Row assembly
 * ----------------------------------------------------------------
 */

/* The part of the header that is the same for every row of a transaction. */
static void
append_txn_fragment(StringInfo out, const FrOptions *opts, const FrRowMeta *meta)
{
	if (opts->include_lsn)
	{
		fr_append_lit(out, ",\"commit_lsn\":");
		fr_json_append_lsn(out, meta->commit_lsn);
	}
	if (opts->include_xid)
	{
		/* Load rows belong to no transaction of the source. */
		fr_append_lit(out, ",\"xid\":");
		if (TransactionIdIsValid(meta->xid))
			fr_json_append_uint(out, meta->xid);
		else
			fr_append_lit(out, "null");
	}
	if (opts->include_timestamp)
	{
		fr_append_lit(out, ",\"commit_time\":");
		fr_json_append_timestamptz(out, meta->commit_time);
	}
}

static void
append_header(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			  FrRelInfo *ri)
{
	fr_append_lit(out, "{\"op\":\"");
	fr_append_bytes(out, meta->op, strlen(meta->op));
	fr_append_lit(out, "\",");
	fr_append_bytes(out, ri->schema_table_json, ri->schema_table_json_len);
	if (opts->include_lsn)
	{
		fr_append_lit(out, ",\"lsn\":");
		fr_json_append_lsn(out, meta->lsn);
	}
	if (meta->txn_fragment != NULL)
		fr_append_bytes(out, meta->txn_fragment, meta->txn_fragment_len);
	else
		append_txn_fragment(out, opts, meta);
}

/* Is the attribute's value an unchanged TOAST pointer? */
static inline bool
is_unchanged_toast(FrColumn *col, Datum value)
{
	return col->typisvarlena &&
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value));
}

/* A tuple deformed once, so that each column costs O(1) to read. */
typedef struct FrRow
{
	int			natts;
	Datum	   *values;
	bool	   *isnull;
} FrRow;

/*
 * Two rows' arrays (a new and an old tuple), kept for the life of the
 * backend and grown to the widest relation seen: three pallocs per tuple
 * fewer.  A row is finished before the next is deformed.
 */
static FrRow scratch_rows[2];
static int	scratch_natts = 0;

static FrRow *
deform(TupleDesc desc, HeapTuple tuple, int which)
{
	FrRow	   *row = &scratch_rows[which];

	if (tuple == NULL)
		return NULL;
	if (desc->natts > scratch_natts)
	{
		int			n = Max(desc->natts, 64);

		for (int i = 0; i < 2; i++)
		{
			if (scratch_rows[i].values != NULL)
			{
				pfree(scratch_rows[i].values);
				pfree(scratch_rows[i].isnull);
			}
			scratch_rows[i].values = MemoryContextAlloc(TopMemoryContext, sizeof(Datum) * n);
			scratch_rows[i].isnull = MemoryContextAlloc(TopMemoryContext, sizeof(bool) * n);
		}
		scratch_natts = n;
	}
	Assert(desc->natts <= scratch_natts);
	row->natts = desc->natts;
	heap_deform_tuple(tuple, desc, row->values, row->isnull);
	return row;
}

/*
 * Where a key column's value comes from: the new row, unless the column is
 * an out-of-line value that did not change (an on-disk TOAST pointer), in
 * which case PostgreSQL logged the old key and its value is there; the old
 * row alone for a delete.  NULL when neither row holds it: no old tuple was
 * logged (REPLICA IDENTITY NOTHING, or a key the identity does not cover).
 */
static inline FrRow *
key_source(FrColumn *col, FrRow *newrow, FrRow *oldrow, bool old_whole)
{
	int			i = col->attnum - 1;

	if (newrow != NULL && i < newrow->natts &&
		(newrow->isnull[i] || !is_unchanged_toast(col, newrow->values[i])))
		return newrow;
	if (oldrow != NULL && i < oldrow->natts && (old_whole || col->is_key) &&
		!oldrow->isnull[i] && !is_unchanged_toast(col, oldrow->values[i]))
		return oldrow;
	return NULL;
}

/*
 * Does the change have a key?  Every key column must be found in one of its
 * rows (key_source); a key with a missing column is left out rather than
 * written with a wrong null.
 */
static bool
has_key(FrRelInfo *ri, FrRow *newrow, FrRow *oldrow)
{
	if (ri->nkeys == 0)
		return false;
	for (int i = 0; i < ri->nkeys; i++)
	{
		FrColumn   *col = &ri->cols[ri->keyattrs[i] - 1];

		if (key_source(col, newrow, oldrow, ri->identity_full) == NULL)
			return false;
	}
	return true;
}

/* Appends ,"key":{...}; has_key() must have said there is one. */
static void
append_key(StringInfo out, FrRelInfo *ri, FrRow *newrow, FrRow *oldrow)
{
	fr_append_lit(out, ",\"key\":{");
	for (int i = 0; i < ri->nkeys; i++)
	{
		FrColumn   *col = &ri->cols[ri->keyattrs[i] - 1];
		FrRow	   *row = key_source(col, newrow, oldrow, ri->identity_full);

		Assert(row != NULL);
		if (i > 0)
			fr_append_bytes(out, col->json_name - 1, col->json_name_len + 1);
		else
			fr_append_bytes(out, col->json_name, col->json_name_len);
		if (row->isnull[col->attnum - 1])
			fr_append_lit(out, "null");
		else
			fr_json_append_value(out, col, row->values[col->attnum - 1]);
	}
	fr_append_char(out, '}');
}

/*
 * The product of an orders row, or NULL when its product column is absent
 * from the tuple or NULL.  An old tuple is whole only under REPLICA
 * IDENTITY FULL; otherwise it holds the key columns alone.
 */
static FrProduct *
row_product(FrRelInfo *ri, FrRow *row, bool whole,
			const FrRowMeta *meta, bool *has_product_column)
{
	Datum		value;
	int64		product_id;

	*has_product_column = false;
	if (ri->product_attnum > row->natts)
		return NULL;
	if (!whole && !ri->cols[ri->product_attnum - 1].is_key)
		return NULL;
	*has_product_column = true;
	if (row->isnull[ri->product_attnum - 1])
		return NULL;
	value = row->values[ri->product_attnum - 1];

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

/*
 * price x quantity in int64 when the price fits (price_units / 10^scale)
 * and the quantity is an integer: the exact value numeric_mul computes,
 * printed with the price's scale, as numeric_out prints it.  False when it
 * does not apply (overflow, numeric quantity).
 */
static bool
append_exact_total(StringInfo out, FrProduct *product, Oid qtype, Datum quantity)
{
	int64		q;
	int64		total;
	uint64		abs_total;
	uint64		pow10 = 1;
	char		frac[20];

	switch (qtype)
	{
		case INT2OID:
			q = DatumGetInt16(quantity);
			break;
		case INT4OID:
			q = DatumGetInt32(quantity);
			break;
		case INT8OID:
			q = DatumGetInt64(quantity);
			break;
		default:
			return false;
	}
	if (__builtin_mul_overflow(product->price_units, q, &total))
		return false;
	for (int i = 0; i < product->price_scale; i++)
		pow10 *= 10;
	abs_total = total < 0 ? (uint64) 0 - (uint64) total : (uint64) total;
	if (total < 0)
		fr_append_char(out, '-');
	fr_json_append_uint(out, abs_total / pow10);
	if (product->price_scale > 0)
	{
		uint64		f = abs_total % pow10;

		for (int i = product->price_scale - 1; i >= 0; i--)
		{
			frac[i] = '0' + (char) (f % 10);
			f /= 10;
		}
		fr_append_char(out, '.');
		fr_append_bytes(out, frac, product->price_scale);
	}
	return true;
}

static void
append_enrichment(StringInfo out, FrRelInfo *ri, FrRow *row, FrProduct *product)
{
	bool		isnull;
	Datum		quantity = (Datum) 0;

	if (product == NULL || !product->found)
	{
		appendStringInfoString(out,
							   ",\"product_name\":null,\"category\":null,"
							   "\"price\":null,\"total_price\":null");
		return;
	}

	fr_append_bytes(out, product->enrich_prefix, product->enrich_prefix_len);

	isnull = ri->quantity_attnum > row->natts || row->isnull[ri->quantity_attnum - 1];
	if (!isnull)
		quantity = row->values[ri->quantity_attnum - 1];
	if (isnull || product->price_text == NULL)
		fr_append_lit(out, "null");
	else if (product->price_exact &&
			 append_exact_total(out, product, ri->cols[ri->quantity_attnum - 1].basetypid,
								quantity))
	{
		/* integer arithmetic gave the same digits numeric_mul would */
	}
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

			/* A NaN quantity makes a NaN total: quoted like any NaN. */
			fr_json_append_number_text(out, text);
		}
	}
}

/*
 * Appends prefix, which opens the object ("...:{"), then a tuple's
 * columns and the closing '}'; with key_only, just the key columns (an old
 * tuple that is not whole).  In decoding, an on-disk
 * TOAST pointer is an unchanged value: it is left out and its column named
 * in *toast (when toast is not NULL).
 */
static void
append_tuple(StringInfo out, const char *prefix, int prefix_len, const FrRowMeta *meta,
			 FrRelInfo *ri, FrRow *row, bool key_only,
			 FrProduct *product, bool enrich, StringInfo toast)
{
	bool		first = true;

	/* prefix ends with the object's '{' */
	fr_append_bytes(out, prefix, prefix_len);
	for (int i = 0; i < row->natts && i < ri->natts; i++)
	{
		FrColumn   *col = &ri->cols[i];
		bool		isnull = row->isnull[i];
		Datum		value = row->values[i];

		if (col->dropped || col->excluded || (key_only && !col->is_key))
			continue;
		if (!isnull && meta->toast_pointers_unchanged && is_unchanged_toast(col, value))
		{
			if (toast != NULL)
			{
				/* Made on first use: most rows have no unchanged TOAST value. */
				if (toast->data == NULL)
					initStringInfo(toast);
				else
					fr_append_char(toast, ',');
				fr_append_bytes(toast, col->json_name, col->json_name_len - 1);
			}
			continue;
		}
		if (first)
			fr_append_bytes(out, col->json_name, col->json_name_len);
		else
			fr_append_bytes(out, col->json_name - 1, col->json_name_len + 1);
		first = false;
		if (isnull)
			fr_append_lit(out, "null");
		else
			fr_json_append_value(out, col, value);
	}
	fr_append_char(out, '}');

	if (enrich)
	{
		/* Put the enrichment fields inside the object just closed. */
		out->len--;
		out->data[out->len] = '\0';
		append_enrichment(out, ri, row, product);
		fr_append_char(out, '}');
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
		fr_append_char(out, '0');
	fr_append_lit(out, "Z\"");
	pfree(buf.data);
}

/*
 * The DMS metadata object up to its fundrecs additions: timestamp,
 * record-type, operation, partition-key-type, schema-name, table-name,
 * transaction-id (not for load rows), lsn and commit-lsn.  Left open.
 */
static void
append_dms_metadata(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
					FrRelInfo *ri, const char *record_type, const char *operation,
					const char *partition_key_type)
{
	fr_append_lit(out, "\"metadata\":{");
	if (opts->include_timestamp)
	{
		fr_append_lit(out, "\"timestamp\":");
		append_dms_timestamp(out, meta->commit_time);
		fr_append_char(out, ',');
	}
	appendStringInfo(out, "\"record-type\":\"%s\",\"operation\":\"%s\","
					 "\"partition-key-type\":\"%s\",\"schema-name\":",
					 record_type, operation, partition_key_type);
	fr_json_append_string(out, ri->schema_name);
	fr_append_lit(out, ",\"table-name\":");
	fr_json_append_string(out, ri->table_name);
	if (opts->include_xid && TransactionIdIsValid(meta->xid))
		appendStringInfo(out, ",\"transaction-id\":%u", meta->xid);
	if (opts->include_lsn)
	{
		fr_append_lit(out, ",\"lsn\":");
		fr_json_append_lsn(out, meta->lsn);
		fr_append_lit(out, ",\"commit-lsn\":");
		fr_json_append_lsn(out, meta->commit_lsn);
	}
}

/*
 * The DMS Kinesis record: {"data":{...},"before-image":{...},"metadata":{...}}.
 * Deletes carry the old row (its key columns at least) in data; an update's
 * old row, when PostgreSQL gives one, goes in before-image.  fundrecs adds
 * route, key, lsn and commit-lsn to metadata, which DMS consumers ignore.
 */
static void
write_row_dms(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			  FrRelInfo *ri, FrRow *newtuple, FrRow *oldtuple,
			  FrProduct *newproduct, FrProduct *oldproduct, bool old_has_product,
			  const char *route)
{
	StringInfoData toast;

	toast.data = NULL;
	toast.len = 0;
	if (newtuple != NULL)
		append_tuple(out, FR_LIT_ARGS("{\"data\":{"), meta, ri, newtuple, false, newproduct,
					 ri->is_orders, &toast);
	else if (oldtuple != NULL)
		append_tuple(out, FR_LIT_ARGS("{\"data\":{"), meta, ri, oldtuple, !ri->identity_full,
					 oldproduct, ri->is_orders && old_has_product, NULL);
	else
	{
		/*
		 * A delete that logged no old row (REPLICA IDENTITY NOTHING, or
		 * DEFAULT without a key): DMS's data object, empty.
		 */
		fr_append_lit(out, "{\"data\":{}");
	}
	if (newtuple != NULL && oldtuple != NULL)
		append_tuple(out, FR_LIT_ARGS(",\"before-image\":{"), meta, ri, oldtuple,
					 !ri->identity_full, oldproduct, ri->is_orders && old_has_product,
					 NULL);

	fr_append_char(out, ',');
	append_dms_metadata(out, opts, meta, ri, "data", meta->op, "primary-key");
	fr_append_lit(out, ",\"route\":");
	appendStringInfoString(out, route);
	if (ri->is_orders && ri->enrich_error != NULL)
	{
		fr_append_lit(out, ",\"enrich-error\":");
		fr_json_append_string(out, ri->enrich_error);
	}
	if (has_key(ri, newtuple, oldtuple))
		append_key(out, ri, newtuple, oldtuple);
	if (toast.len > 0)
	{
		fr_append_lit(out, ",\"unchanged-toast\":[");
		fr_append_bytes(out, toast.data, toast.len);
		fr_append_char(out, ']');
	}
	fr_append_lit(out, "}}");
}

/*
 * Writes one row message; newtuple or oldtuple may be NULL.  Native:
 * header, key, route, data, old, unchanged_toast.  The initial load formats
 * its rows here too (op "load"), so both are the same shape.
 */
void
fr_write_row(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			 FrRelInfo *ri, TupleDesc desc, HeapTuple newheap, HeapTuple oldheap)
{
	FrRow	   *newtuple = deform(desc, newheap, 0);
	FrRow	   *oldtuple = deform(desc, oldheap, 1);
	FrProduct  *newproduct = NULL;
	FrProduct  *oldproduct = NULL;
	bool		new_has_product = false;
	bool		old_has_product = false;
	const char *route;
	int			route_len;
	StringInfoData toast;

	if (ri->is_orders && ri->enrich_error != NULL)
	{
		if (opts->on_enrich_error == FR_ENRICH_ERROR_FAIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("could not enrich the change at %X/%X of table \"%s.%s\"",
							LSN_FORMAT_ARGS(meta->lsn), ri->schema_name, ri->table_name),
					 errdetail("The %s.", ri->enrich_error),
					 errhint("Set the plugin options product_column and quantity_column to the columns' current names, or set on_enrich_error to emit to ship such rows unenriched with route \"%s\".",
							 FR_ROUTE_ERROR)));
		route = "\"" FR_ROUTE_ERROR "\"";
		route_len = strlen(route);
	}
	else if (ri->is_orders)
	{
		FrProduct  *p = NULL;

		if (newtuple != NULL)
			newproduct = row_product(ri, newtuple, true, meta, &new_has_product);
		if (oldtuple != NULL)
			oldproduct = row_product(ri, oldtuple, ri->identity_full, meta,
									 &old_has_product);
		if (newtuple != NULL)
			p = newproduct;
		else if (oldtuple != NULL && old_has_product)
			p = oldproduct;
		if (p != NULL && p->found)
		{
			route = p->route_json;
			route_len = p->route_json_len;
		}
		else if (newtuple != NULL || (oldtuple != NULL && old_has_product))
		{
			route = "\"" FR_ROUTE_UNCATEGORIZED "\"";
			route_len = strlen(route);
		}
		else
		{
			route = "null";
			route_len = 4;
		}
	}
	else
	{
		route = ri->route_json;
		route_len = ri->route_json_len;
	}

	if (opts->format == FR_FORMAT_DMS)
	{
		write_row_dms(out, opts, meta, ri, newtuple, oldtuple, newproduct,
					  oldproduct, old_has_product, route);
		return;
	}

	append_header(out, opts, meta, ri);
	/* Every row but a delete's has its new tuple; a delete has no other. */
	Assert(newtuple != NULL || strcmp(meta->op, "delete") == 0);
	Assert(newtuple == NULL || strcmp(meta->op, "delete") != 0);
	if (has_key(ri, newtuple, oldtuple))
		append_key(out, ri, newtuple, oldtuple);
	fr_append_lit(out, ",\"route\":");
	fr_append_bytes(out, route, route_len);
	if (ri->is_orders && ri->enrich_error != NULL)
	{
		fr_append_lit(out, ",\"enrich_error\":");
		fr_json_append_string(out, ri->enrich_error);
	}

	toast.data = NULL;
	toast.len = 0;
	if (newtuple != NULL)
		append_tuple(out, FR_LIT_ARGS(",\"data\":{"), meta, ri, newtuple, false, newproduct,
					 ri->is_orders, &toast);
	if (oldtuple != NULL)
		append_tuple(out, FR_LIT_ARGS(",\"old\":{"), meta, ri, oldtuple, !ri->identity_full,
					 oldproduct, ri->is_orders && old_has_product, NULL);
	if (toast.len > 0)
	{
		fr_append_lit(out, ",\"unchanged_toast\":[");
		fr_append_bytes(out, toast.data, toast.len);
		fr_append_char(out, ']');
	}
	fr_append_char(out, '}');
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
		fr_append_char(out, '{');
		append_dms_metadata(out, opts, meta, ri, "control", "truncate-table", "schema-table");
		appendStringInfo(out, ",\"route\":%s", route);
		if (ri->as_root)
			appendStringInfo(out, ",\"partition\":%s", ri->partition_json);
		fr_append_lit(out, "}}");
		return;
	}
	append_header(out, opts, meta, ri);
	appendStringInfo(out, ",\"route\":%s", route);
	/* Only this partition of the table was truncated. */
	if (ri->as_root)
		appendStringInfo(out, ",\"partition\":%s", ri->partition_json);
	fr_append_char(out, '}');
}

/* Is relid among the relations of this truncate? */
static bool
truncated_too(Oid relid, int nrelations, Relation relations[])
{
	for (int i = 0; i < nrelations; i++)
	{
		if (RelationGetRelid(relations[i]) == relid)
			return true;
	}
	return false;
}

static void
fill_meta(FrRowMeta *meta, FrDecodingData *data, ReorderBufferTXN *txn, const char *op,
		  XLogRecPtr lsn)
{
	meta->op = op;
	meta->lsn = lsn;
	meta->commit_lsn = txn->end_lsn;
	meta->xid = txn->xid;
	meta->commit_time = txn->xact_time.commit_time;
	meta->toast_pointers_unchanged = true;
	meta->load = NULL;
	meta->txn_fragment = data->txn_fragment.data;
	meta->txn_fragment_len = data->txn_fragment.len;
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

	newtuple = fr_change_newtuple(change);
	oldtuple = fr_change_oldtuple(change);
	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			op = "insert";
			oldtuple = NULL;
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			op = "update";
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			op = "delete";
			newtuple = NULL;
			break;
		default:
			return;
	}

	/*
	 * PostgreSQL logs the new row of every insert and update of a table that
	 * is decoded; an old row only where the replica identity asks for one,
	 * which the writers handle.  A missing new row is a WAL record this
	 * plugin cannot make sense of: an error naming it, never a guess.
	 */
	if (newtuple == NULL && change->action != REORDER_BUFFER_CHANGE_DELETE)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s at %X/%X of table \"%s.%s\" carries no new row",
						op, LSN_FORMAT_ARGS(change->lsn), ri->schema_name, ri->table_name),
				 errdetail("The WAL record of an insert or update of a logically logged table always holds the new row.")));

	oldcxt = MemoryContextSwitchTo(data->context);
	fill_meta(&meta, data, txn, op, change->lsn);

	/* A partition's row as its root's (publish_via_partition_root). */
	if (ri->map != NULL)
	{
		if (newtuple != NULL)
			newtuple = execute_attr_map_tuple(newtuple, ri->map);
		if (oldtuple != NULL)
			oldtuple = execute_attr_map_tuple(oldtuple, ri->map);
	}

	fr_write_row(row_begin(ctx, data), &data->opts, &meta, ri,
				 ri->as_root ? ri->desc : RelationGetDescr(relation),
				 newtuple, oldtuple);
	row_end(ctx, data);

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
		/* TRUNCATE of a partitioned table: one row for the table itself. */
		if (ri->as_root && truncated_too(ri->root_relid, nrelations, relations))
			continue;

		fill_meta(&meta, data, txn, "truncate", change->lsn);
		write_truncate(row_begin(ctx, data), &data->opts, &meta, ri);
		row_end(ctx, data);
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->context);
}

/*
 * A pg_logical_emit_message() message: skipped unless include_messages asks
 * for it (see fr_options_message_included).  Emitted as
 *
 *   {"op":"message","transactional":...,"prefix":"...","lsn":...,
 *    "commit_lsn":...,"xid":...,"commit_time":...,"content":"..."}
 *
 * in both formats.  A transactional message arrives with its transaction,
 * at commit.  A non-transactional one arrives when it is decoded and
 * belongs to no commit: its commit_lsn is its own position and its
 * commit_time is null.  Content that is not valid text in the database
 * encoding is emitted as "content_base64" instead.
 */
static void
fr_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		   XLogRecPtr message_lsn, bool transactional, const char *prefix,
		   Size message_size, const char *message)
{
	FrDecodingData *data = ctx->output_plugin_private;
	const FrOptions *opts = &data->opts;
	MemoryContext oldcxt;
	StringInfo	out;

	if (!fr_options_message_included(opts, prefix))
		return;

	oldcxt = MemoryContextSwitchTo(data->context);
	/* A non-transactional message belongs to no transaction's pack. */
	if (transactional)
		out = row_begin(ctx, data);
	else
	{
		OutputPluginPrepareWrite(ctx, true);
		out = ctx->out;
	}
	fr_append_lit(out, "{\"op\":\"message\",\"transactional\":");
	appendStringInfoString(out, transactional ? "true" : "false");
	fr_append_lit(out, ",\"prefix\":");
	fr_json_append_string(out, prefix);
	if (opts->include_lsn)
	{
		fr_append_lit(out, ",\"lsn\":");
		fr_json_append_lsn(out, message_lsn);
		fr_append_lit(out, ",\"commit_lsn\":");
		fr_json_append_lsn(out, transactional ? txn->end_lsn : message_lsn);
	}
	if (opts->include_xid)
	{
		fr_append_lit(out, ",\"xid\":");
		if (txn != NULL && TransactionIdIsValid(txn->xid))
			fr_json_append_uint(out, txn->xid);
		else
			fr_append_lit(out, "null");
	}
	if (opts->include_timestamp)
	{
		fr_append_lit(out, ",\"commit_time\":");
		if (transactional)
			fr_json_append_timestamptz(out, txn->xact_time.commit_time);
		else
			fr_append_lit(out, "null");
	}
	if (pg_verifymbstr(message, message_size, true))
	{
		fr_append_lit(out, ",\"content\":");
		fr_json_append_string(out, pnstrdup(message, message_size));
	}
	else
	{
		int			enclen = pg_b64_enc_len(message_size);
		char	   *encoded = palloc(enclen + 1);
		int			n = pg_b64_encode(FR_B64_SRC(message), message_size, encoded, enclen);

		if (n < 0)
			elog(ERROR, "could not encode the content of the message at %X/%X",
				 LSN_FORMAT_ARGS(message_lsn));
		fr_append_lit(out, ",\"content_base64\":\"");
		fr_append_bytes(out, encoded, n);
		fr_append_char(out, '"');
	}
	fr_append_char(out, '}');
	if (transactional)
		row_end(ctx, data);
	else
		OutputPluginWrite(ctx, true);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(data->context);
}
