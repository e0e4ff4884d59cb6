/*-------------------------------------------------------------------------
 *
 * monitor.c
 *	  Reads the slot's row of pg_replication_slots (see monitor.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "log.h"
#include "libpq-fe.h"
#include "metrics.h"
#include "monitor.h"
#include "rowscan.h"

static PGconn *conn = NULL;

/* On a standby, the position replayed stands for the current one. */
static const char *const health_sql =
"SELECT wal_status, safe_wal_size, restart_lsn, confirmed_flush_lsn,"
"       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
"             ELSE pg_current_wal_lsn() END) - restart_lsn"
"  FROM pg_catalog.pg_replication_slots"
" WHERE slot_name = $1 AND database = pg_catalog.current_database()";

static uint64_t
lsn_value(const char *s)
{
	uint64_t	lsn = 0;

	if (s != NULL && *s != '\0')
		(void) rowscan_parse_lsn(s, strlen(s), &lsn);
	return lsn;
}

bool
slot_health_read(const ReplConnParams *params, const char *slot, SlotHealth *h)
{
	PGresult   *res;
	const char *values[1];

	memset(h, 0, sizeof(*h));
	if (conn != NULL && PQstatus(conn) != CONNECTION_OK)
		slot_health_close();
	if (conn == NULL)
	{
		conn = db_connect(params, false);
		if (conn == NULL)
		{
			log_warning("could not connect to read the state of slot \"%s\"", slot);
			return false;
		}
		/*
		 * A heartbeat must not wait for a synchronous standby that is away
		 * (its commit waited for ever, and so did shutdown): its message is
		 * decoded from the primary's WAL whatever the standbys have.
		 */
		PQclear(PQexec(conn, "SET application_name = 'fundrecs_shipper monitor'; "
					   "SET synchronous_commit = local"));
		if (PQparameterStatus(conn, "server_version"))
			metrics_set_server_version(PQparameterStatus(conn, "server_version"));
	}
	values[0] = slot;
	res = PQexecParams(conn, health_sql, 1, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_warning("could not read the state of slot \"%s\": %s", slot, PQerrorMessage(conn));
		PQclear(res);
		slot_health_close();
		return false;
	}
	if (PQntuples(res) == 1)
	{
		h->found = true;
		strlcpy(h->wal_status, PQgetvalue(res, 0, 0), sizeof(h->wal_status));
		h->has_safe_size = !PQgetisnull(res, 0, 1);
		if (h->has_safe_size)
			h->safe_wal_size = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		h->restart_lsn = lsn_value(PQgetvalue(res, 0, 2));
		h->confirmed_lsn = lsn_value(PQgetvalue(res, 0, 3));
		h->retained = PQgetisnull(res, 0, 4) ? 0 : (int64_t) strtod(PQgetvalue(res, 0, 4), NULL);
	}
	PQclear(res);
	return true;
}

void
slot_health_close(void)
{
	if (conn != NULL)
		PQfinish(conn);
	conn = NULL;
}

/*
 * Writes a transactional logical decoding message with the prefix
 * fundrecs_heartbeat (see --heartbeat): its commit is a change of this
 * database that the slot decodes, so confirming it moves restart_lsn on
 * when the captured tables are idle.  A non-transactional message would
 * not.  The plugin never emits these messages unless asked by name.
 * Returns false after a warning, at most one per kind of failure in a row.
 */
bool
slot_heartbeat(const ReplConnParams *params)
{
	static bool warned = false;
	PGresult   *res;

	if (conn != NULL && PQstatus(conn) != CONNECTION_OK)
		slot_health_close();
	if (conn == NULL)
	{
		conn = db_connect(params, false);
		if (conn == NULL)
		{
			if (!warned)
				log_warning("could not connect to write a heartbeat");
			warned = true;
			return false;
		}
		/*
		 * A heartbeat must not wait for a synchronous standby that is away
		 * (its commit waited for ever, and so did shutdown): its message is
		 * decoded from the primary's WAL whatever the standbys have.
		 */
		PQclear(PQexec(conn, "SET application_name = 'fundrecs_shipper monitor'; "
					   "SET synchronous_commit = local"));
	}
	res = PQexec(conn, "SELECT pg_catalog.pg_logical_emit_message(true, 'fundrecs_heartbeat', '')");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		if (!warned)
		{
			log_warning("could not write a heartbeat: %s", PQerrorMessage(conn));
			log_warning_hint("--heartbeat needs a primary and EXECUTE on pg_logical_emit_message for the shipper's role.");
		}
		warned = true;
		PQclear(res);
		return false;
	}
	PQclear(res);
	if (warned)
		log_info("heartbeats are written again");
	warned = false;
	return true;
}
