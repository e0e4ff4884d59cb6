/*-------------------------------------------------------------------------
 *
 * fundrecs_failure.c
 *	  The last enrichment failure that stopped a slot, kept beside the slot.
 *
 * With on_enrich_error=fail, a change an enrichment rule cannot enrich
 * stops decoding with an error, and the slot does not move until the
 * operator acts (decodes with on_enrich_error=emit, or fixes what the rule
 * reads for later changes).  The error reaches the client and the server
 * log; so that fundrecs.slot_status shows it too, whoever looks, the
 * decoder writes it into the slot's own directory
 * (pg_replslot/<slot>/fundrecs_failure) before raising it, and removes the
 * file once a transaction of the slot is decoded to its end.  PostgreSQL
 * removes the directory, and the file with it, when the slot is dropped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/fd.h"
#include "utils/builtins.h"

#include "fundrecs.h"

#define FAILURE_FILE "fundrecs_failure"

/* This session's slot has a failure file (read at startup, set on failure). */
static bool failure_on_file = false;

static void
failure_path(const char *slot, char *path, size_t size)
{
	snprintf(path, size, "pg_replslot/%s/" FAILURE_FILE, slot);
}

/* At the start of a decoding session: is a failure on file? */
void
fr_failure_startup(void)
{
	char		path[MAXPGPATH];
	struct stat st;

	failure_on_file = false;
	if (MyReplicationSlot == NULL)
		return;
	failure_path(NameStr(MyReplicationSlot->data.name), path, sizeof(path));
	failure_on_file = stat(path, &st) == 0;
}

/*
 * Records why the change at lsn of table relname stopped decoding, before
 * the error is raised.  Best effort: a failure to write it is logged and
 * the error goes on.
 */
void
fr_failure_record(XLogRecPtr lsn, const char *relname, const char *message)
{
	char		path[MAXPGPATH];
	char		tmp[MAXPGPATH];
	FILE	   *f;

	if (MyReplicationSlot == NULL)
		return;
	failure_path(NameStr(MyReplicationSlot->data.name), path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = AllocateFile(tmp, PG_BINARY_W);
	if (f == NULL)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp)));
		return;
	}
	fprintf(f, "the change at %X/%X of table \"%s\": %s",
			LSN_FORMAT_ARGS(lsn), relname, message);
	if (FreeFile(f) != 0 || rename(tmp, path) != 0)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", path)));
		return;
	}
	failure_on_file = true;
}

/* A transaction was decoded to its end: the slot is past any failure. */
void
fr_failure_clear(void)
{
	char		path[MAXPGPATH];

	if (!failure_on_file || MyReplicationSlot == NULL)
		return;
	failure_path(NameStr(MyReplicationSlot->data.name), path, sizeof(path));
	if (unlink(path) != 0 && errno != ENOENT)
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not remove file \"%s\": %m", path)));
	failure_on_file = false;
}

/*
 * fundrecs.slot_failure(slot_name name) returns text: the failure on file
 * for that slot, NULL if none.
 */
PG_FUNCTION_INFO_V1(fundrecs_slot_failure);

Datum
fundrecs_slot_failure(PG_FUNCTION_ARGS)
{
	Name		slot = PG_GETARG_NAME(0);
	char		path[MAXPGPATH];
	FILE	   *f;
	StringInfoData buf;
	char		chunk[1024];
	size_t		n;

	/* A slot's name, never a path (the name also reaches the file's path). */
	if (!ReplicationSlotValidateName(NameStr(*slot), DEBUG1))
		PG_RETURN_NULL();
	failure_path(NameStr(*slot), path, sizeof(path));
	f = AllocateFile(path, PG_BINARY_R);
	if (f == NULL)
	{
		if (errno == ENOENT)
			PG_RETURN_NULL();
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path)));
	}
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && buf.len < 65536)
		appendBinaryStringInfo(&buf, chunk, n);
	FreeFile(f);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
