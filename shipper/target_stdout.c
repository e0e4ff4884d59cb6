/*-------------------------------------------------------------------------
 *
 * target_stdout.c
 *	  Standard output as a target (--target stdout, the default without
 *	  AWS settings): rows batched by dispatch.c and written, one per line,
 *	  on the main thread when a batch is flushed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <sys/uio.h>
#include <unistd.h>

#include "dispatch.h"
#include "log.h"
#include "target_ops.h"

/* Rows per writev() call (Linux's IOV_MAX is 1024). */
#define STDOUT_IOV 512

/*
 * The batch's rows to standard output with writev(), straight from the
 * batch: stdio's buffer is 4 kB on /dev/null or a pipe, which made a copy
 * and a write() per 4 kB.  A short write resumes where it stopped.
 */
static ShipResult
stdout_deliver(void *ctx, ShipRecord *recs, int n, StopFlag *stop)
{
	struct iovec iov[STDOUT_IOV];
	int			i = 0;
	size_t		off = 0;		/* bytes of recs[i] already written */

	/* Whatever stdio holds goes first. */
	if (fflush(stdout) != 0)
	{
		log_error("could not write to standard output: %m");
		return SHIP_FATAL;
	}
	while (i < n)
	{
		int			cnt = 0;
		ssize_t		w;

		for (int j = i; j < n && cnt < STDOUT_IOV; j++, cnt++)
		{
			size_t		skip = j == i ? off : 0;

			iov[cnt].iov_base = recs[j].data + skip;
			iov[cnt].iov_len = recs[j].len - skip;
		}
		w = writev(STDOUT_FILENO, iov, cnt);
		if (w < 0)
		{
			if (errno == EINTR)
				continue;
			log_error("could not write to standard output: %m");
			return SHIP_FATAL;
		}
		while (w > 0)
		{
			size_t		left = recs[i].len - off;

			if ((size_t) w >= left)
			{
				w -= left;
				i++;
				off = 0;
			}
			else
			{
				off += w;
				w = 0;
			}
		}
	}
	return SHIP_OK;
}

static bool
stdout_add(Target *t, const TargetRow *row)
{
	size_t		record_bytes = row->len + 1;

	if (!dispatch_make_room(t->dispatcher, record_bytes))
		return false;
	dispatch_add(t->dispatcher, row->data, row->len, "", 0, 0, row->commit_lsn, row->safe_lsn,
				 row->commit_time);
	return true;
}

static Target *
stdout_create(const TargetSettings *ts)
{
	static const TargetOps ops = {
		.name = "stdout",
		.add = stdout_add,
		.poll = dispatch_target_poll,
		.next_due = dispatch_target_next_due,
		.wake_fd = dispatch_target_wake_fd,
		.flush = dispatch_target_flush,
		.held_lsn = dispatch_target_held_lsn,
		.held_rows = dispatch_target_held_rows,
		.stats = dispatch_target_stats,
		.destroy = dispatch_target_destroy,
	};
	Target	   *t = pg_malloc0(sizeof(Target));
	DispatchConfig dc;

	memset(&dc, 0, sizeof(dc));
	dc.deliver = stdout_deliver;
	dc.lanes = 0;
	dc.capacity = ts->config->batch_records;
	dc.max_bytes = (size_t) Min(ts->config->batch_bytes, ts->config->max_buffer_bytes);
	dc.stop = ts->abort;
	dc.tick = ts->tick;
	dc.tick_arg = ts->tick_arg;
	dc.verbose = ts->config->verbose;
	dc.linger_ms = ts->config->linger_ms;
	t->dispatcher = dispatch_create(&dc);
	t->ops = &ops;
	return t;
}

/* The AWS targets' settings are not for standard output. */
static const char *
stdout_check_options(const TargetConfig *cfg, bool chosen)
{
	if (chosen && (cfg->stream || cfg->stream_arn || cfg->endpoint || cfg->s3_url))
		return "--stream, --stream-arn, --endpoint-url and --s3-url are not for --target stdout";
	return NULL;
}

const TargetKind target_kind_stdout = {
	.name = "stdout",
	.alone = true,
	.check_options = stdout_check_options,
	.create = stdout_create,
};
