/*-------------------------------------------------------------------------
 *
 * slot.c
 *	  The replication slot, before and while streaming (see slot.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <sys/select.h>

#include "log.h"
#include "libpq-fe.h"
#include "metrics.h"
#include "options.h"
#include "load.h"
#include "slot.h"
#include "target.h"
#include "notify.h"
#include "retry.h"
#include "rowscan.h"


/*
 * A monitor query that has no answer after this long is cancelled; one
 * whose cancel has no answer after MONITOR_CANCEL_GRACE is abandoned with
 * its connection (a server process that hangs cannot hold the tick up:
 * metrics, health and heartbeats keep their cadence).
 */
#define MONITOR_QUERY_TIMEOUT 10.0
#define MONITOR_CANCEL_GRACE 1.0

void
slot_monitor_init(SlotMonitor *m, const ReplConnParams *params, StopFlag *stop)
{
	memset(m, 0, sizeof(*m));
	m->params = params;
	m->stop = stop;
}

static bool
stopping(SlotMonitor *m)
{
	return m->stop != NULL && *m->stop;
}

/*
 * Runs a query on the monitor connection, cancellable: NULL when it could
 * not be sent or was given up (the connection is then closed, and *quiet
 * tells whether a stop request did it, which deserves no warning).
 */
static PGresult *
monitor_exec(SlotMonitor *m, const char *sql, int nparams, const char *const *values, bool *quiet)
{
	double		started = now_seconds();
	double		cancelled_at = 0;
	PGresult   *res;
	PGresult   *next;

	*quiet = false;
	if (m->conn == NULL || !PQsendQueryParams(m->conn, sql, nparams, NULL, values, NULL, NULL, 0))
		return NULL;
	while (PQisBusy(m->conn))
	{
		int			sock = PQsocket(m->conn);
		fd_set		input;
		struct timeval tv = {0, 100000};
		double		now = now_seconds();

		notify_watchdog();
		if (cancelled_at == 0 && (stopping(m) || now - started >= MONITOR_QUERY_TIMEOUT))
		{
			PGcancel   *cancel = PQgetCancel(m->conn);
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
			*quiet = stopping(m);
			if (!*quiet)
				log_warning("the server did not answer the monitor's query within %.0f s; connecting again",
							MONITOR_QUERY_TIMEOUT);
			slot_monitor_close(m);
			return NULL;
		}
		if (sock < 0)
			break;
		FD_ZERO(&input);
		FD_SET(sock, &input);
		if (select(sock + 1, &input, NULL, NULL, &tv) < 0 && errno != EINTR)
			break;
		if (!PQconsumeInput(m->conn))
			break;
	}
	res = PQgetResult(m->conn);
	while ((next = PQgetResult(m->conn)) != NULL)
		PQclear(next);
	/* Cancelled by a stop request: not worth a warning. */
	if (cancelled_at != 0 && stopping(m))
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
monitor_setup(SlotMonitor *m)
{
	static const char *const settings[] = {
		"SET application_name = 'fundrecs_shipper monitor'",
		"SET synchronous_commit = local",
	};

	for (int i = 0; i < lengthof(settings) && m->conn != NULL; i++)
	{
		bool		quiet;

		PQclear(monitor_exec(m, settings[i], 0, NULL, &quiet));
	}
}

bool
slot_health_read(SlotMonitor *m, const char *slot, SlotHealth *h)
{
	PGresult   *res;
	const char *values[1];
	bool		quiet;

	memset(h, 0, sizeof(*h));
	if (stopping(m))
		return false;
	if (m->conn != NULL && PQstatus(m->conn) != CONNECTION_OK)
		slot_monitor_close(m);
	if (m->conn == NULL)
	{
		m->conn = db_connect(m->params, false);
		if (m->conn == NULL)
		{
			log_warning("could not connect to read the state of slot \"%s\"", slot);
			return false;
		}

		/*
		 * A heartbeat must not wait for a synchronous standby that is away
		 * (its commit waited for ever, and so did shutdown): its message is
		 * decoded from the primary's WAL whatever the standbys have.
		 */
		monitor_setup(m);
		if (m->conn != NULL && PQparameterStatus(m->conn, "server_version"))
			metrics_set_server_version(PQparameterStatus(m->conn, "server_version"));
	}
	values[0] = slot;
	res = monitor_exec(m, health_sql, 1, values, &quiet);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		if (!quiet && m->conn != NULL)
			log_warning("could not read the state of slot \"%s\": %s", slot, PQerrorMessage(m->conn));
		PQclear(res);
		slot_monitor_close(m);
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
slot_monitor_close(SlotMonitor *m)
{
	if (m->conn != NULL)
		PQfinish(m->conn);
	m->conn = NULL;
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
slot_heartbeat(SlotMonitor *m)
{
	PGresult   *res;
	bool		quiet;

	if (stopping(m))
		return false;
	if (m->conn != NULL && PQstatus(m->conn) != CONNECTION_OK)
		slot_monitor_close(m);
	if (m->conn == NULL)
	{
		m->conn = db_connect(m->params, false);
		if (m->conn == NULL)
		{
			if (!m->heartbeat_warned)
				log_warning("could not connect to write a heartbeat");
			m->heartbeat_warned = true;
			return false;
		}

		/*
		 * A heartbeat must not wait for a synchronous standby that is away
		 * (its commit waited for ever, and so did shutdown): its message is
		 * decoded from the primary's WAL whatever the standbys have.
		 */
		monitor_setup(m);
	}
	res = monitor_exec(m, "SELECT pg_catalog.pg_logical_emit_message(true, 'fundrecs_heartbeat', '')",
					   0, NULL, &quiet);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		if (quiet || m->conn == NULL)
		{
			PQclear(res);
			slot_monitor_close(m);
			return false;
		}
		if (!m->heartbeat_warned)
		{
			log_warning("could not write a heartbeat: %s", PQerrorMessage(m->conn));
			log_warning_hint("--heartbeat needs a primary and EXECUTE on pg_logical_emit_message for the shipper's role.");
		}
		m->heartbeat_warned = true;
		PQclear(res);
		return false;
	}
	PQclear(res);
	if (m->heartbeat_warned)
		log_info("heartbeats are written again");
	m->heartbeat_warned = false;
	return true;
}

/* ----------------------------------------------------------------
 * The slot's health, acted on
 * ----------------------------------------------------------------
 */

static const char *
pretty_bytes(int64_t bytes, char *buf, size_t len)
{
	if (bytes >= 10LL * 1024 * 1024 * 1024)
		snprintf(buf, len, "%lld GB", (long long) (bytes >> 30));
	else if (bytes >= 10LL * 1024 * 1024)
		snprintf(buf, len, "%lld MB", (long long) (bytes >> 20));
	else if (bytes >= 10LL * 1024)
		snprintf(buf, len, "%lld kB", (long long) (bytes >> 10));
	else
		snprintf(buf, len, "%lld bytes", (long long) bytes);
	return buf;
}

/* --max-retained-wal: warned of once a minute while it lasts. */
static void
warn_retained(const SlotHealth *h, SlotMonitor *w, double now)
{
	char		b1[32],
				b2[32],
				b3[32];

	if (h->retained <= opts.max_retained_wal)
	{
		if (w->warned_retained_at != 0)
			log_info("replication slot \"%s\" retains %s of WAL, under --max-retained-wal again",
					 opts.slot, pretty_bytes(h->retained, b1, sizeof(b1)));
		w->warned_retained_at = 0;
		return;
	}
	if (w->warned_retained_at != 0 && now - w->warned_retained_at < 60)
		return;
	if (h->has_safe_size)
		log_warning("replication slot \"%s\" retains %s of WAL, over --max-retained-wal (%s); %s more before max_slot_wal_keep_size invalidates it",
					opts.slot, pretty_bytes(h->retained, b1, sizeof(b1)),
					pretty_bytes(opts.max_retained_wal, b2, sizeof(b2)),
					pretty_bytes(h->safe_wal_size, b3, sizeof(b3)));
	else
		log_warning("replication slot \"%s\" retains %s of WAL, over --max-retained-wal (%s)",
					opts.slot, pretty_bytes(h->retained, b1, sizeof(b1)),
					pretty_bytes(opts.max_retained_wal, b2, sizeof(b2)));
	w->warned_retained_at = now;
}

bool
slot_check_health(SlotMonitor *w, SlotHealth *h)
{
	char		b1[32];

	if (!slot_health_read(w, opts.slot, h) || !h->found)
		return false;
	if (strcmp(h->wal_status, "lost") == 0)
	{
		log_error("replication slot \"%s\" has been invalidated: the server removed WAL it still needed",
				  opts.slot);
		log_error_detail("Its WAL went past max_slot_wal_keep_size while the slot was behind (confirmed up to %X/%X). The changes after that position are gone from the server, so shipping cannot go on without a gap.",
						 LSN_FORMAT_ARGS(h->confirmed_lsn));
		log_error_hint("Run the shipper once with --resync: it drops the slot, creates it again and ships a reset marker row, then every row as a new initial load (consumers drop what they hold from before the marker). To keep it from happening again, raise max_slot_wal_keep_size and watch --max-retained-wal.");
		exit(EXIT_PERMANENT);
	}
	if (strcmp(h->wal_status, "unreserved") == 0 && strcmp(w->last_status, "unreserved") != 0)
		log_warning("replication slot \"%s\" holds more WAL than max_slot_wal_keep_size allows (%s retained): the next checkpoint may invalidate it unless the shipper catches up",
					opts.slot, pretty_bytes(h->retained, b1, sizeof(b1)));
	strlcpy(w->last_status, h->wal_status, sizeof(w->last_status));
	if (opts.max_retained_wal > 0)
		warn_retained(h, w, now_seconds());
	return true;
}

/* ----------------------------------------------------------------
 * Before streaming
 * ----------------------------------------------------------------
 */

/* The extension's verdict on the plugin options failed: what it means. */
static void
plugin_options_unchecked(PGconn *conn, PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	/* No extension, or one older than 1.2: the plugin warns instead. */
	if (state && (strcmp(state, "42883") == 0 || strcmp(state, "3F000") == 0))
	{
		if (opts.verbosity > 0)
			log_info("fundrecs extension 1.2 not in the database: plugin options not checked before starting");
		return;
	}
	if (state && (strncmp(state, "22", 2) == 0 || strcmp(state, "42703") == 0))
	{
		if (strncmp(state, "22", 2) == 0)
			log_error("invalid plugin options: %s", PQresultErrorMessage(res));
		else
			log_error("%s", PQresultErrorMessage(res));
		PQclear(res);
		PQfinish(conn);
		exit(2);
	}
	log_warning("could not check the plugin options: %s", PQerrorMessage(conn));
}

/*
 * Asks the extension (1.2), which runs the plugin's own checks (a "tables"
 * entry matching no table, a missing orders table); skipped without it.
 * Bad options fail here too, with the plugin's message.
 */
void
slot_check_plugin_options(const ReplConnParams *params)
{
	PGconn	   *conn = db_connect(params, false);
	char	   *options;
	const char *values[1];
	PGresult   *res;

	if (conn == NULL)
		exit(failure_exit_code());
	options = options_array(opts.plugin_options, opts.noptions);
	values[0] = options;
	res = PQexecParams(conn, "SELECT unnest(fundrecs.option_problems($1::text[]))",
					   1, NULL, values, NULL, NULL, 0);
	free(options);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		plugin_options_unchecked(conn, res);
	else if (PQntuples(res) > 0)
	{
		int			fatal = 0;

		for (int i = 0; i < PQntuples(res); i++)
		{
			const char *problem = PQgetvalue(res, i, 0);

			/*
			 * A rule set that cannot be applied now is the rules' matter
			 * (on_enrich_error decides their rows): said, not fatal.
			 */
			if (strncmp(problem, "the enrichment rules of table", 29) == 0)
			{
				log_warning("%s", problem);
				log_warning_hint("Its changes fail or go to route \"_error\" (on_enrich_error); fix or drop the rule (README: Maintenance of lookup tables).");
			}
			else if (opts.allow_no_tables)
				log_warning("%s", problem);
			else
			{
				log_error("%s", problem);
				fatal++;
			}
		}
		if (fatal > 0)
		{
			log_error_detail("Changes of such tables would be confirmed without being shipped.");
			log_error_hint("Check the plugin options \"tables\", \"publication_names\" and \"orders_table\" (-o), or pass --allow-no-tables to start anyway.");
			PQclear(res);
			PQfinish(conn);
			exit(2);
		}
	}
	PQclear(res);
	PQfinish(conn);
}

/* The plugin option format=dms is set (the plugin refuses a repeated option). */
static bool
plugin_format_is_dms(void)
{
	bool		dms = false;

	for (int i = 0; i < opts.noptions; i++)
		if (strcmp(opts.plugin_options[2 * i], "format") == 0)
			dms = pg_strcasecmp(opts.plugin_options[2 * i + 1], "dms") == 0;
	return dms;
}

/* What slot_prepare decided before creating anything. */
typedef struct SlotPlan
{
	const ReplConnParams *params;	/* to connect for SQL */
	Target	   *target;			/* where a load goes */
	StopFlag   *stop;
	PGconn	   *sql;			/* holds the load lock (unless --no-load) */
	LoadStatus	status;			/* fundrecs.load_state's word on the slot */
	bool		create;			/* create the slot */
	bool		replaces_load;	/* the new load replaces an earlier one: reset
								 * marker */
} SlotPlan;

/* An unfinished load: its objects go, then its slot; a new load follows. */
static bool
plan_reload(SlotPlan *p)
{
	uint64_t	old_lsn;
	int			old;

	/* We hold the lock: the loader of that slot is gone. */
	log_warning("the initial load of slot \"%s\" did not finish; loading again with a new slot",
				opts.slot);
	/* The target must not keep a partial copy (S3: the lake). */
	old = target_keeps_loads(p->target) ? load_state_unfinished(p->sql, opts.slot, &old_lsn) : 0;
	if (old < 0 ||
		(old > 0 && target_forget_load(p->target, old_lsn, p->stop) != SHIP_OK))
		return false;
	if (!drop_slot(p->sql, opts.slot))
		return false;
	p->create = true;
	p->replaces_load = true;
	return true;
}

/* A finished load (or --resync): the slot is used, refused as lost, or made again. */
static bool
plan_loaded(ReplConn *rc, SlotPlan *p)
{
	int			exists = slot_exists(p->sql, opts.slot);

	if (exists < 0)
		return false;
	if (opts.resync)
	{
		/*
		 * Once per lost slot: a slot that is there, valid, with its load
		 * finished is streamed from, so --resync may stay in a unit's
		 * arguments.
		 */
		if (exists == 1 && p->status == LOAD_FINISHED)
		{
			p->create = false;
			log_info("replication slot \"%s\" exists and its initial load finished: --resync has nothing to do",
					 opts.slot);
			return !opts.enable_failover || stream_set_failover(rc);
		}
		/* Whatever the slot had confirmed is replaced by the new load. */
		if (exists)
		{
			log_info("dropping replication slot \"%s\" for --resync%s", opts.slot,
					 exists == 2 ? " (it was invalidated)" : "");
			if (!drop_slot(p->sql, opts.slot))
				return false;
		}
		p->replaces_load = exists || p->status != LOAD_NONE;
		return true;
	}
	if (!exists)
	{
		report_lost_slot(p->sql, opts.slot);
		retry_note_permanent();
		return false;
	}
	if (p->create && !opts.if_not_exists)
	{
		log_error("replication slot \"%s\" already exists", opts.slot);
		log_error_hint("Add --if-not-exists to ship from it, or use --resync to create it again with a new initial load.");
		return false;
	}

	/*
	 * Loaded and there: nothing to create, and its load state stays (it is
	 * what tells a lost slot from a new one).
	 */
	p->create = false;
	if (opts.verbosity >= 0)
		log_info("replication slot \"%s\" exists, using it", opts.slot);
	return !opts.enable_failover || stream_set_failover(rc);
}

/* With the initial load: takes the load lock and reads the slot's load state. */
static bool
plan_with_load(ReplConn *rc, SlotPlan *p, PGconn **lockconn)
{
	if ((p->sql = db_connect(p->params, false)) == NULL)
		return false;
	if (load_lock(p->sql, opts.slot, p->stop) != LOAD_LOCK_TAKEN)
	{
		PQfinish(p->sql);
		p->sql = NULL;
		return false;
	}
	*lockconn = p->sql;
	p->status = load_status(p->sql, opts.slot);
	if (p->status == LOAD_ERROR)
		return false;
	if (p->status == LOAD_UNFINISHED && !plan_reload(p))
		return false;
	if (p->status == LOAD_UNSUPPORTED && p->create)
	{
		log_error("the initial load needs the fundrecs extension, version 1.1 or later, in this database");
		log_error_hint("Run ALTER EXTENSION fundrecs UPDATE (or CREATE EXTENSION fundrecs), or pass --no-load.");
		return false;
	}
	if (p->status != LOAD_UNFINISHED && (p->status == LOAD_FINISHED || opts.resync) &&
		!plan_loaded(rc, p))
		return false;
	/* Written before the slot exists: a kill from here on is seen. */
	if (p->create && p->status != LOAD_UNSUPPORTED && !load_state_creating(p->sql, opts.slot))
		return false;
	return true;
}

/* --no-load: a lost slot is not re-created either; an old gap is warned about. */
static bool
plan_without_load(SlotPlan *p)
{
	PGconn	   *c = db_connect(p->params, false);
	bool		ok = true;

	p->status = c != NULL ? load_status(c, opts.slot) : LOAD_ERROR;
	if (p->status == LOAD_UNFINISHED && opts.create_slot)
		log_warning("the initial load of slot \"%s\" did not finish and --no-load leaves it unfinished",
					opts.slot);
	if (p->status == LOAD_FINISHED && slot_exists(c, opts.slot) == 0)
	{
		report_lost_slot(c, opts.slot);
		retry_note_permanent();
		ok = false;
	}
	if (c != NULL)
		PQfinish(c);
	return ok;
}

/* Creates the slot as planned, and says what initial load it needs. */
static bool
create_slot(ReplConn *rc, SlotPlan *p, SlotLoad *load)
{
	bool		created = false;
	uint64_t	consistent = 0;
	char	   *snapshot = NULL;
	bool		ok = true;
	LoadParams *lp = &load->params;

	if (!stream_create_slot(rc, opts.if_not_exists || p->status == LOAD_UNFINISHED,
							!opts.no_load && !opts.chunked_load, opts.enable_failover,
							&created, &consistent, &snapshot, p->stop))
		ok = false;
	else if (created && opts.verbosity >= 0)
		log_info("created %sreplication slot \"%s\" at %X/%X",
				 opts.enable_failover ? "failover " : "", opts.slot, LSN_FORMAT_ARGS(consistent));

	/*
	 * Not created (it existed, or an error): it is not ours to load, and the
	 * row written before must not make a later run drop it.
	 */
	if (!created && p->sql != NULL && p->status != LOAD_UNSUPPORTED &&
		!load_state_forget(p->sql, opts.slot))
		ok = false;
	if (ok && created && !opts.no_load)
	{
		load->run = true;
		load->sql = p->sql;
		load->snapshot = snapshot;
		lp->slot = opts.slot;
		lp->snapshot_name = snapshot;
		lp->chunked = opts.chunked_load;
		lp->consistent_lsn = consistent;
		lp->plugin_options = opts.plugin_options;
		lp->noptions = opts.noptions;
		lp->reset_marker = p->replaces_load;
		lp->dms_format = plugin_format_is_dms();
		lp->progress = opts.verbosity > 0 || (opts.verbosity == 0 && isatty(fileno(stderr)));
		lp->summary = opts.verbosity >= 0;
	}
	else
		free(snapshot);
	return ok;
}

bool
slot_prepare(ReplConn *rc, const ReplConnParams *params, Target *target, StopFlag *stop,
			 PGconn **lockconn, SlotLoad *load)
{
	SlotPlan	plan;
	const char *server_version = NULL;

	*lockconn = NULL;
	memset(load, 0, sizeof(*load));
	memset(&plan, 0, sizeof(plan));
	plan.params = params;
	plan.target = target;
	plan.stop = stop;
	plan.status = LOAD_NONE;
	plan.create = opts.create_slot;
	if (opts.enable_failover && stream_server_version(rc, &server_version) < 170000)
	{
		log_error("--enable-failover needs PostgreSQL 17 or later; the server is %s",
				  server_version ? server_version : "older");
		log_error_hint("Leave out --enable-failover: on this version a standby has no copy of the slot, and a failover needs --resync.");
		retry_note_permanent();
		return false;
	}
	if (!opts.no_load ? !plan_with_load(rc, &plan, lockconn) : !plan_without_load(&plan))
		return false;
	return !plan.create || create_slot(rc, &plan, load);
}
