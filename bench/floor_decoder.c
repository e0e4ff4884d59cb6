/*-------------------------------------------------------------------------
 *
 * floor_decoder.c
 *	  A measuring plugin for bench/decode_floor, never installed by
 *	  "make install": for each change it writes a message of a given size
 *	  and does nothing else.  Its peek costs what PostgreSQL spends decoding
 *	  the WAL and storing that many bytes, so a real decoder's peek minus
 *	  this one's, at the same bytes per change, is the decoder's own work.
 *
 * Option "bytes": the size of each message (default 100).
 *
 * Like every decoder measured beside it, it writes each message in a
 * memory context reset after the change: the peek copies the message into
 * that context (LogicalOutputWrite), and a plugin without one would be
 * charged for a fresh page every few messages.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

PG_MODULE_MAGIC;

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

typedef struct FloorData
{
	int			bytes;
	char	   *fill;
	MemoryContext context;		/* reset after each change */
} FloorData;

static void
floor_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	FloorData  *data = palloc0(sizeof(FloorData));
	ListCell   *option;

	data->bytes = 100;
	foreach(option, ctx->output_plugin_options)
	{
		DefElem    *elem = lfirst(option);

		if (strcmp(elem->defname, "bytes") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" is unknown to floor_decoder", elem->defname),
					 errhint("Its only option is \"bytes\".")));
		if (elem->arg == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"bytes\" needs a value")));
		data->bytes = pg_strtoint32(strVal(elem->arg));
		if (data->bytes < 0 || data->bytes > 64 * 1024 * 1024)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"bytes\" is %d, out of range", data->bytes),
					 errdetail("It must be between 0 and 67108864.")));
	}
	data->fill = palloc(Max(data->bytes, 1));
	memset(data->fill, 'x', data->bytes);
	data->context = AllocSetContextCreate(ctx->context, "floor_decoder change",
										  ALLOCSET_DEFAULT_SIZES);
	ctx->output_plugin_private = data;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
}

static void
floor_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
}

static void
floor_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
}

static void
floor_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
			 ReorderBufferChange *change)
{
	FloorData  *data = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(data->context);

	OutputPluginPrepareWrite(ctx, true);
	appendBinaryStringInfo(ctx->out, data->fill, data->bytes);
	OutputPluginWrite(ctx, true);
	MemoryContextSwitchTo(old);
	MemoryContextReset(data->context);
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = floor_startup;
	cb->begin_cb = floor_begin;
	cb->change_cb = floor_change;
	cb->commit_cb = floor_commit;
}
