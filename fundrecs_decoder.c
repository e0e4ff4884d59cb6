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

	/* The caches live in the decoding context, and go with it. */
	fr_relinfo_init(ctx->context);
	fr_asof_start();
	fr_rules_init(ctx->context);
	fr_failure_startup();
}

static void
fr_shutdown(LogicalDecodingContext *ctx)
{
	FrDecodingData *data = ctx->output_plugin_private;

	MemoryContextDelete(data->context);
	/* The caches go with the session, as pgoutput's relation cache does. */
	fr_relinfo_shutdown();
	fr_rules_shutdown();
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
	 * A very large row left a large buffer behind: give it back.  The new one
	 * lives as long as the decoding session, like the first (the commit
	 * callback runs in a shorter-lived context: t/160_pack.pl's rows of up to
	 * 5 kB read freed memory when it was made there).
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

	fr_asof_begin_txn(txn->final_lsn, rbtxn_has_catalog_changes(txn));

	/* Rendered once per transaction rather than once per row. */
	meta.commit_lsn = txn->end_lsn;
	meta.xid = txn->xid;
	meta.commit_time = txn->xact_time.commit_time;
	resetStringInfo(&data->txn_fragment);
	fr_append_txn_fragment(&data->txn_fragment, &data->opts, &meta);
}

static void
fr_commit_txn(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  XLogRecPtr commit_lsn)
{
	pack_flush(ctx, ctx->output_plugin_private);
	fr_asof_commit_txn(txn->end_lsn, rbtxn_has_catalog_changes(txn));
	fr_failure_clear();
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
	meta->cache_usable = fr_asof_cache_usable(lsn);
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
	TupleDesc	desc;
	const char *op;

	ri = fr_relinfo_get(relation, &data->opts);
	if (ri->is_products || RelationIsUsedAsCatalogTable(relation))
		fr_asof_txn_touched_catalog();
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

	/* A partition's row as its root's (publish_via_partition_root). */
	if (ri->map != NULL)
	{
		if (newtuple != NULL)
			newtuple = execute_attr_map_tuple(newtuple, ri->map);
		if (oldtuple != NULL)
			oldtuple = execute_attr_map_tuple(oldtuple, ri->map);
	}
	desc = ri->as_root ? ri->desc : RelationGetDescr(relation);

	/*
	 * Publications: the action must be published, and the row filter may turn
	 * an update into an insert or a delete, or leave nothing.
	 */
	if (data->opts.publication_names == NIL ||
		fr_publication_filter(ri, desc, &op, &newtuple, &oldtuple))
	{
		fill_meta(&meta, data, txn, op, change->lsn);
		fr_write_row(row_begin(ctx, data), &data->opts, &meta, ri, desc, newtuple, oldtuple);
		row_end(ctx, data);
	}

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

		if (ri->is_products || RelationIsUsedAsCatalogTable(relations[i]))
			fr_asof_txn_touched_catalog();
		if (!ri->included)
			continue;
		if (data->opts.publication_names != NIL)
		{
			/*
			 * Published as an ancestor: only the ancestor's own truncate, as
			 * pgoutput.
			 */
			if (!ri->pub_actions[FR_PUBACTION_TRUNCATE] || ri->as_root)
				continue;
		}
		/* TRUNCATE of a partitioned table: one row for the table itself. */
		else if (ri->as_root && truncated_too(ri->root_relid, nrelations, relations))
			continue;

		fill_meta(&meta, data, txn, "truncate", change->lsn);
		fr_write_truncate(row_begin(ctx, data), &data->opts, &meta, ri);
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
