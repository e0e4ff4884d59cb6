/*-------------------------------------------------------------------------
 *
 * monitor.c
 *	  Reads the slot's row of pg_replication_slots (see monitor.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <sys/select.h>

#include "log.h"
#include "libpq-fe.h"
#include "metrics.h"
#include "monitor.h"
#include "notify.h"
#include "retry.h"
#include "rowscan.h"

static PGconn *conn = NULL;
static volatile sig_atomic_t *stop_flag = NULL;

/*
 * A monitor query that has no answer after this long is cancelled; one
 * whose cancel has no answer after MONITOR_CANCEL_GRACE is abandoned with
 * its connection (a server process that hangs cannot hold the tick up:
 * metrics, health and heartbeats keep their cadence).
 */
#define MONITOR_QUERY_TIMEOUT 10.0
#define MONITOR_CANCEL_GRACE 1.0

void
slot_monitor_set_stop(volatile sig_atomic_t *stop)
{
	stop_flag = stop;
}

static bool
stopping(void)
{
	return stop_flag != NULL && *stop_flag;
}

/*
 * Runs a query on the monitor connection, cancellable: NULL when it could
 * not be sent or was given up (the connection is then closed, and *quiet
 * tells whether a stop request did it, which deserves no warning).
 */
static PGresult *
monitor_exec(const char *sql, int nparams, const char *const *values, bool *quiet)
{
	double		started = now_seconds();
	double		cancelled_at = 0;
	PGresult   *res;
	PGresult   *next;

	*quiet = false;
	if (conn == NULL || !PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0))
		return NULL;
	while (PQisBusy(conn))
	{
		int			sock = PQsocket(conn);
		fd_set		input;
		struct timeval tv = {0, 100000};
		double		now = now_seconds();

		notify_watchdog();
		if (cancelled_at == 0 && (stopping() || now - started >= MONITOR_QUERY_TIMEOUT))
		{
			PGcancel   *cancel = PQgetCancel(conn);
			char		errbuf[256];

			if (cancel != NULL)
			{
				PQcancel(cancel, errbuf, sizeof(errbuf));
				PQfreeCancel(cancel);
			}
			cancelled_at = now;
		}
		if (cancelled_at != 0 && now - cancelled_at >= MONITOR_CANCEL_GRACE)
		{
			*quiet = stopping();
			if (!*quiet)
				log_warning("the server did not answer the monitor's query within %.0f s; connecting again",
							MONITOR_QUERY_TIMEOUT);
			slot_health_close();
			return NULL;
		}
		if (sock < 0)
			break;
		FD_ZERO(&input);
		FD_SET(sock, &input);
		if (select(sock + 1, &input, NULL, NULL, &tv) < 0 && errno != EINTR)
			break;
		if (!PQconsumeInput(conn))
			break;
	}
	res = PQgetResult(conn);
	while ((next = PQgetResult(conn)) != NULL)
		PQclear(next);
	/* Cancelled by a stop request: not worth a warning. */
	if (cancelled_at != 0 && stopping())
		*quiet = true;
	return res;
}

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

/* The monitor connection's settings, set once it is connected. */
static void
monitor_setup(void)
{
	static const char *const settings[] = {
		"SET application_name = 'fundrecs_shipper monitor'",
		"SET synchronous_commit = local",
	};

	for (int i = 0; i < lengthof(settings) && conn != NULL; i++)
	{
		bool		quiet;

		PQclear(monitor_exec(settings[i], 0, NULL, &quiet));
	}
}

bool
slot_health_read(const ReplConnParams *params, const char *slot, SlotHealth *h)
{
	PGresult   *res;
	const char *values[1];
	bool		quiet;

	memset(h, 0, sizeof(*h));
	if (stopping())
		return false;
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
		monitor_setup();
		if (conn != NULL && PQparameterStatus(conn, "server_version"))
			metrics_set_server_version(PQparameterStatus(conn, "server_version"));
	}
	values[0] = slot;
	res = monitor_exec(health_sql, 1, values, &quiet);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		if (!quiet && conn != NULL)
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
	bool		quiet;

	if (stopping())
		return false;
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
		monitor_setup();
	}
	res = monitor_exec("SELECT pg_catalog.pg_logical_emit_message(true, 'fundrecs_heartbeat', '')",
					   0, NULL, &quiet);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		if (quiet || conn == NULL)
		{
			PQclear(res);
			slot_health_close();
			return false;
		}
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
