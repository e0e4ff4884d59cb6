/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  The replication side of fundrecs_shipper, after pg_recvlogical:
 *	  a replication=database connection, IDENTIFY_SYSTEM, the optional
 *	  CREATE_REPLICATION_SLOT, START_REPLICATION ... LOGICAL with the
 *	  plugin options, then XLogData and keepalive messages read without
 *	  blocking and standby status updates ('r') carrying the flush LSN.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <limits.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/time.h>

#include "log.h"
#include "common/string.h"
#include "libpq-fe.h"
#include "pqexpbuffer.h"
#include "notify.h"
#include "retry.h"
#include "stream.h"

/* Seconds from the Unix epoch to PostgreSQL's (2000-01-01). */
#define PG_EPOCH_OFFSET 946684800LL

struct ReplConn
{
	PGconn	   *conn;
	const ReplConnParams *params;
	char	   *copybuf;		/* last buffer from PQgetCopyData */
	char	   *start_error_sqlstate;
	char		system_id[32];	/* IDENTIFY_SYSTEM's systemid and dbname */
	char		dbname[NAMEDATALEN];
	int			sender_timeout_ms;	/* the server's wal_sender_timeout, 0:
									 * none */
	char	   *stream_error;	/* how the stream last ended with an error */
};

static uint64_t
read_u64(const char *p)
{
	uint64_t	v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | (unsigned char) p[i];
	return v;
}

static void
write_u64(char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--)
	{
		p[i] = (char) (v & 0xFF);
		v >>= 8;
	}
}

static int64_t
pg_now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return ((int64_t) tv.tv_sec - PG_EPOCH_OFFSET) * 1000000 + tv.tv_usec;
}

/*
 * The server's notices (a plugin's WARNING, with its DETAIL and HINT)
 * through the shipper's log, so that --log-format json keeps them JSON;
 * libpq's default printed them to stderr as text.
 */
static void
notice_receiver(void *arg, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	enum pg_log_level level = PG_LOG_INFO;

	if (severity != NULL && strcmp(severity, "WARNING") == 0)
		level = PG_LOG_WARNING;
	if (primary == NULL)
		primary = PQresultErrorMessage(res);
	log_message(level, PG_LOG_PRIMARY, "server %s: %s", severity ? severity : "NOTICE", primary);
	if (detail != NULL)
		log_message(level, PG_LOG_DETAIL, "%s", detail);
	if (hint != NULL)
		log_message(level, PG_LOG_HINT, "%s", hint);
}

/*
 * A connection with the shipper's parameters: a replication=database one
 * for the stream, or a plain one for the initial load.  NULL on failure
 * (reported).
 */
PGconn *
db_connect(const ReplConnParams *params, bool replication)
{
	const char *keywords[8];
	const char *values[8];
	int			i = 0;
	char	   *password = NULL;
	PGconn	   *conn;

	for (;;)
	{
		i = 0;

		/*
		 * dbname first: a connection string in it is expanded, the rest
		 * override.
		 */
		keywords[i] = "dbname";
		values[i++] = params->dbname ? params->dbname : getenv("PGDATABASE");
		if (replication)
		{
			keywords[i] = "replication";
			values[i++] = "database";
		}
		keywords[i] = "fallback_application_name";
		values[i++] = "fundrecs_shipper";
		if (params->host)
		{
			keywords[i] = "host";
			values[i++] = params->host;
		}
		if (params->port)
		{
			keywords[i] = "port";
			values[i++] = params->port;
		}
		if (params->user)
		{
			keywords[i] = "user";
			values[i++] = params->user;
		}
		if (password)
		{
			keywords[i] = "password";
			values[i++] = password;
		}
		keywords[i] = NULL;
		values[i] = NULL;

		if (params->prompt_password == 1 && password == NULL)
		{
			password = simple_prompt("Password: ", false);
			continue;
		}

		conn = PQconnectdbParams(keywords, values, true);
		if (PQstatus(conn) == CONNECTION_BAD && PQconnectionNeedsPassword(conn) &&
			password == NULL && params->prompt_password != -1)
		{
			PQfinish(conn);
			password = simple_prompt("Password: ", false);
			continue;
		}
		break;
	}
	free(password);

	if (PQstatus(conn) == CONNECTION_BAD)
	{
		const char *msg = PQerrorMessage(conn);

		log_error("could not connect to the database: %s", msg);
		if (strstr(msg, "certificate verify failed") != NULL)
		{
			log_error_hint("The server's certificate could not be verified with sslrootcert: it may have expired or not be valid yet, or be signed by another CA; \"openssl s_client -starttls postgres -connect HOST:PORT -CAfile ROOT.crt -verify_return_error\" names the reason.");
			retry_note_permanent();
		}
		else if (strstr(msg, "does not match host name") != NULL)
		{
			log_error_hint("sslmode=verify-full checks that the certificate names the host connected to: connect by a name the certificate lists, or have the certificate reissued.");
			retry_note_permanent();
		}
		else if (strstr(msg, "root certificate file") != NULL)
		{
			log_error_hint("Set sslrootcert in the connection string to the CA certificate that signed the server's, or install it at the path named.");
			retry_note_permanent();
		}
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeReceiver(conn, notice_receiver, NULL);
	return conn;
}

ReplConn *
stream_connect(const ReplConnParams *params)
{
	PGconn	   *conn = db_connect(params, true);
	PGresult   *res;
	ReplConn   *rc;

	if (conn == NULL)
		return NULL;
	res = PQexec(conn, "IDENTIFY_SYSTEM");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_error("could not send replication command \"%s\": %s",
				  "IDENTIFY_SYSTEM", PQerrorMessage(conn));
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	if (PQntuples(res) != 1 || PQnfields(res) < 4 || PQgetisnull(res, 0, 3))
	{
		log_error("could not identify system: got %d rows and %d fields",
				  PQntuples(res), PQnfields(res));
		log_error_hint("Connect to a database, not with replication=true.");
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	rc = pg_malloc0(sizeof(ReplConn));
	rc->conn = conn;
	rc->params = params;
	strlcpy(rc->system_id, PQgetvalue(res, 0, 0), sizeof(rc->system_id));
	strlcpy(rc->dbname, PQgetvalue(res, 0, 3), sizeof(rc->dbname));
	PQclear(res);

	/* How often the server must hear from us, for waits on deliveries. */
	rc->sender_timeout_ms = 60000;
	res = PQexec(conn, "SHOW wal_sender_timeout");
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
	{
		char	   *unit;
		double		v = strtod(PQgetvalue(res, 0, 0), &unit);

		if (strcmp(unit, "ms") == 0)
			rc->sender_timeout_ms = (int) v;
		else if (strcmp(unit, "s") == 0)
			rc->sender_timeout_ms = (int) (v * 1000);
		else if (strcmp(unit, "min") == 0)
			rc->sender_timeout_ms = (int) (v * 60000);
		else if (strcmp(unit, "h") == 0)
			rc->sender_timeout_ms = (int) Min(v * 3600000, INT_MAX);
		else if (strcmp(unit, "d") == 0)
			rc->sender_timeout_ms = INT_MAX;
		else if (*unit == '\0')
			rc->sender_timeout_ms = (int) v;
	}
	PQclear(res);
	return rc;
}

/*
 * PQgetResult that a stop interrupts: while the server has not answered,
 * wait on the socket in slices; on a stop, cancel the query (its result,
 * an error, then ends the loop).
 */
PGresult *
pq_next_result(PGconn *conn, StopFlag *stop, bool *cancelled)
{
	while (PQisBusy(conn))
	{
		int			sock = PQsocket(conn);
		fd_set		input;
		struct timeval tv = {0, 100000};

		/* However long the server takes, systemd's watchdog is fed. */
		notify_watchdog();

		if (stop && *stop && !*cancelled)
		{
			PGcancel   *cancel = PQgetCancel(conn);
			char		errbuf[256];

			if (cancel != NULL)
			{
				PQcancel(cancel, errbuf, sizeof(errbuf));
				PQfreeCancel(cancel);
			}
			*cancelled = true;
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
	return PQgetResult(conn);
}

bool
stream_set_failover(ReplConn *rc)
{
	char	   *slot = PQescapeIdentifier(rc->conn, rc->params->slot, strlen(rc->params->slot));
	char	   *cmd = psprintf("ALTER_REPLICATION_SLOT %s (FAILOVER)", slot);
	PGresult   *res = PQexec(rc->conn, cmd);
	bool		ok = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!ok)
		log_error("could not make replication slot \"%s\" a failover slot: %s",
				  rc->params->slot, PQerrorMessage(rc->conn));
	PQclear(res);
	free(cmd);
	PQfreemem(slot);
	return ok;
}

bool
stream_create_slot(ReplConn *rc, bool if_not_exists, bool export_snapshot, bool failover,
				   bool *created, uint64_t *consistent_lsn, char **snapshot_name,
				   StopFlag *stop)
{
	PQExpBufferData cmd;
	PGresult   *res;
	char	   *slot = PQescapeIdentifier(rc->conn, rc->params->slot,
										  strlen(rc->params->slot));
	bool		ok = true;

	*created = false;
	*consistent_lsn = 0;
	*snapshot_name = NULL;
	initPQExpBuffer(&cmd);

	/*
	 * FAILOVER (17+): the slot is synchronized to standbys
	 * (sync_replication_slots).
	 */
	appendPQExpBuffer(&cmd, "CREATE_REPLICATION_SLOT %s LOGICAL fundrecs_decoder (SNAPSHOT '%s'%s)",
					  slot, export_snapshot ? "export" : "nothing", failover ? ", FAILOVER" : "");
	/* It waits for running transactions to end: a stop cancels it. */
	notify_status(true, "creating replication slot %s: waiting for the transactions running now to end",
				  rc->params->slot);
	if (!PQsendQuery(rc->conn, cmd.data))
		res = NULL;
	else
	{
		bool		cancelled = false;
		PGresult   *next;

		res = pq_next_result(rc->conn, stop, &cancelled);
		while ((next = pq_next_result(rc->conn, stop, &cancelled)) != NULL)
			PQclear(next);
		if (cancelled)
		{
			PQclear(res);
			PQfreemem(slot);
			termPQExpBuffer(&cmd);
			return false;
		}
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (if_not_exists && state && strcmp(state, "42710") == 0)
		{
			log_info("replication slot \"%s\" exists, using it", rc->params->slot);
			/* An existing slot becomes a failover slot too. */
			if (failover && !stream_set_failover(rc))
				ok = false;
		}
		else
		{
			log_error("could not create replication slot \"%s\": %s",
					  rc->params->slot, PQerrorMessage(rc->conn));
			if (state && strcmp(state, "42501") == 0)
				log_error_hint("Add fundrecs_decoder to the server setting output_plugin_libraries, or connect as a superuser.");
			ok = false;
		}
	}
	else
	{
		uint32_t	hi,
					lo;

		*created = true;
		/* slot_name, consistent_point, snapshot_name, output_plugin */
		if (PQnfields(res) >= 3 && sscanf(PQgetvalue(res, 0, 1), "%X/%X", &hi, &lo) == 2)
			*consistent_lsn = ((uint64_t) hi << 32) | lo;
		if (export_snapshot && PQnfields(res) >= 3 && !PQgetisnull(res, 0, 2))
			*snapshot_name = pg_strdup(PQgetvalue(res, 0, 2));
	}
	PQclear(res);
	PQfreemem(slot);
	termPQExpBuffer(&cmd);
	return ok;
}

void
stream_identity(ReplConn *rc, const char **system_id, const char **dbname)
{
	*system_id = rc->system_id;
	*dbname = rc->dbname;
}

int
stream_server_version(ReplConn *rc, const char **text)
{
	if (text)
		*text = PQparameterStatus(rc->conn, "server_version");
	return PQserverVersion(rc->conn);
}

bool
stream_start(ReplConn *rc, uint64_t startpos)
{
	PQExpBufferData cmd;
	PGresult   *res;
	char	   *slot = PQescapeIdentifier(rc->conn, rc->params->slot,
										  strlen(rc->params->slot));
	bool		ok = true;

	initPQExpBuffer(&cmd);
	appendPQExpBuffer(&cmd, "START_REPLICATION SLOT %s LOGICAL %X/%X",
					  slot, LSN_FORMAT_ARGS(startpos));
	if (rc->params->noptions > 0)
	{
		appendPQExpBufferStr(&cmd, " (");
		for (int i = 0; i < rc->params->noptions; i++)
		{
			const char *name = rc->params->plugin_options[2 * i];
			const char *value = rc->params->plugin_options[2 * i + 1];
			char	   *qname = PQescapeIdentifier(rc->conn, name, strlen(name));

			/*
			 * The replication grammar takes standard '...' strings, quotes
			 * doubled, and no E'...' (which PQescapeLiteral writes for a
			 * backslash): a backslash is an ordinary character in them.
			 */
			appendPQExpBuffer(&cmd, "%s%s '", i > 0 ? ", " : "", qname);
			for (const char *c = value; *c; c++)
			{
				if (*c == '\'')
					appendPQExpBufferChar(&cmd, '\'');
				appendPQExpBufferChar(&cmd, *c);
			}
			appendPQExpBufferChar(&cmd, '\'');
			PQfreemem(qname);
		}
		appendPQExpBufferChar(&cmd, ')');
	}

	res = PQexec(rc->conn, cmd.data);
	if (PQresultStatus(res) != PGRES_COPY_BOTH)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		log_error("could not start streaming from slot \"%s\": %s",
				  rc->params->slot, PQerrorMessage(rc->conn));
		if (state != NULL && strcmp(state, "42704") == 0)
			log_error_hint("Check the slot's name (-S; pg_replication_slots lists this server's slots), or add --create-slot to create it.");
		free(rc->start_error_sqlstate);
		rc->start_error_sqlstate = pg_strdup(state ? state : "");
		ok = false;
	}
	PQclear(res);
	PQfreemem(slot);
	termPQExpBuffer(&cmd);
	return ok;
}

/*
 * A missing slot, a slot of another database or plugin, a bad plugin
 * option or a missing privilege will not heal by reconnecting.
 */
bool
stream_start_error_is_permanent(ReplConn *rc)
{
	const char *s = rc->start_error_sqlstate;

	if (s == NULL || *s == '\0')
		return false;
	/* 08: connection exceptions, 57: operator intervention, 53: resources */
	if (strncmp(s, "08", 2) == 0 || strncmp(s, "57", 2) == 0 || strncmp(s, "53", 2) == 0)
		return false;
	/* 55006: the slot is active for another process; it may go away. */
	if (strcmp(s, "55006") == 0)
		return false;
	return true;
}

bool
stream_parse_copy_data(const char *buf, int len, StreamMessage *msg, char **err)
{
	memset(msg, 0, sizeof(*msg));
	if (len < 1)
	{
		*err = pg_strdup("empty streaming message");
		return false;
	}
	msg->type = buf[0];
	if (msg->type == 'k')
	{
		if (len < 1 + 8 + 8 + 1)
		{
			*err = psprintf("streaming header too small: %d", len);
			return false;
		}
		msg->wal_end = read_u64(buf + 1);
		msg->reply_requested = buf[17] != 0;
		return true;
	}
	if (msg->type == 'w')
	{
		const int	hdr = 1 + 8 + 8 + 8;

		if (len < hdr)
		{
			*err = psprintf("streaming header too small: %d", len);
			return false;
		}
		msg->data_start = read_u64(buf + 1);
		msg->wal_end = read_u64(buf + 9);
		msg->data = buf + hdr;
		msg->len = len - hdr;
		return true;
	}
	*err = psprintf("unrecognized streaming header: \"%c\"", msg->type);
	return false;
}

int
stream_next_message(ReplConn *rc, StreamMessage *msg)
{
	int			r;

	if (rc->copybuf != NULL)
	{
		PQfreemem(rc->copybuf);
		rc->copybuf = NULL;
	}

	r = PQgetCopyData(rc->conn, &rc->copybuf, 1);
	if (r == 0)
		return 0;
	if (r == -1)
	{
		PGresult   *res = PQgetResult(rc->conn);

		if (PQresultStatus(res) == PGRES_COPY_OUT)
		{
			PQclear(res);
			log_info("the server ended the stream");
		}
		else if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			log_error("unexpected termination of replication stream: %s",
					  PQresultErrorMessage(res));
			free(rc->stream_error);
			rc->stream_error = psprintf("%s: %s",
										PQresultErrorField(res, PG_DIAG_SQLSTATE) ?
										PQresultErrorField(res, PG_DIAG_SQLSTATE) : "",
										PQresultErrorMessage(res));
		}
		PQclear(res);
		return -1;
	}
	if (r == -2)
	{
		log_error("could not read COPY data: %s", PQerrorMessage(rc->conn));
		return -1;
	}

	{
		char	   *err = NULL;

		if (!stream_parse_copy_data(rc->copybuf, r, msg, &err))
		{
			log_error("%s", err);
			free(err);
			return -1;
		}
	}
	return 1;
}

int
stream_wait(ReplConn *rc, double seconds, const int *wake_fds, int nwake)
{
	int			sock = PQsocket(rc->conn);
	int			maxfd = sock;
	fd_set		input;
	struct timeval tv;
	int			r;

	if (sock < 0)
	{
		log_error("invalid socket: %s", PQerrorMessage(rc->conn));
		return -1;
	}
	FD_ZERO(&input);
	FD_SET(sock, &input);
	for (int i = 0; i < nwake; i++)
		if (wake_fds[i] >= 0)
		{
			FD_SET(wake_fds[i], &input);
			maxfd = Max(maxfd, wake_fds[i]);
		}
	tv.tv_sec = (time_t) seconds;
	tv.tv_usec = (suseconds_t) ((seconds - (double) tv.tv_sec) * 1e6);
	r = select(maxfd + 1, &input, NULL, NULL, &tv);
	if (r < 0 && errno != EINTR)
	{
		log_error("%s() failed: %m", "select");
		return -1;
	}
	if (r > 0 && !FD_ISSET(sock, &input))
		return 0;
	if (r > 0 && PQconsumeInput(rc->conn) == 0)
	{
		log_error("could not receive data from WAL stream: %s",
				  PQerrorMessage(rc->conn));
		return -1;
	}
	return 0;
}

/*
 * Standby status update: write, flush and apply all report the position
 * up to which rows are acknowledged by the target.
 */
bool
stream_send_feedback(ReplConn *rc, uint64_t flush_lsn, bool reply)
{
	char		buf[1 + 8 + 8 + 8 + 8 + 1];

	buf[0] = 'r';
	write_u64(buf + 1, flush_lsn);
	write_u64(buf + 9, flush_lsn);
	write_u64(buf + 17, flush_lsn);
	write_u64(buf + 25, (uint64_t) pg_now_us());
	buf[33] = reply ? 1 : 0;

	if (PQputCopyData(rc->conn, buf, sizeof(buf)) <= 0 || PQflush(rc->conn))
	{
		log_error("could not send feedback packet: %s", PQerrorMessage(rc->conn));
		return false;
	}
	return true;
}

/* Ends the copy and drains the connection so a last error is not missed. */
void
stream_end(ReplConn *rc)
{
	PGresult   *res;

	if (PQputCopyEnd(rc->conn, NULL) <= 0 || PQflush(rc->conn))
		return;
	for (;;)
	{
		char	   *buf = NULL;
		int			r = PQgetCopyData(rc->conn, &buf, 0);

		if (buf)
			PQfreemem(buf);
		if (r < 0)
			break;
	}
	while ((res = PQgetResult(rc->conn)) != NULL)
	{
		if (PQresultStatus(res) == PGRES_FATAL_ERROR)
			log_error("unexpected termination of replication stream: %s",
					  PQresultErrorMessage(res));
		PQclear(res);
	}
}

const char *
stream_last_error(ReplConn *rc)
{
	return rc->stream_error;
}

int
stream_sender_timeout_ms(ReplConn *rc)
{
	return rc->sender_timeout_ms;
}

void
stream_close(ReplConn *rc)
{
	if (rc == NULL)
		return;
	if (rc->copybuf)
		PQfreemem(rc->copybuf);
	PQfinish(rc->conn);
	free(rc->start_error_sqlstate);
	free(rc->stream_error);
	free(rc);
}
