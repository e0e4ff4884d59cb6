/*-------------------------------------------------------------------------
 *
 * stream.h
 *	  The logical replication connection: connect, create the slot,
 *	  START_REPLICATION, read messages, send standby status updates.
 *
 *-------------------------------------------------------------------------
 */
#ifndef STREAM_H
#define STREAM_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "retry.h"

#define RECONNECT_SLEEP_SECS 5

typedef struct ReplConnParams
{
	const char *dbname;
	const char *host;
	const char *port;
	const char *user;
	int			prompt_password;	/* -1 never, 0 when asked, 1 always */
	const char *slot;
	char	  **plugin_options; /* name, value pairs */
	int			noptions;
} ReplConnParams;

typedef struct ReplConn ReplConn;

typedef struct StreamMessage
{
	char		type;			/* 'w' XLogData or 'k' keepalive */
	uint64_t	data_start;		/* 'w' */
	uint64_t	wal_end;
	bool		reply_requested;	/* 'k' */
	const char *data;			/* 'w': the row, valid until the next call */
	size_t		len;
} StreamMessage;

/*
 * Decodes one CopyData message of the replication stream (XLogData 'w' or
 * keepalive 'k'); msg->data points into buf.  False with *err (malloc'd)
 * when it is malformed.  Fuzzed in fuzz/.
 */
extern bool stream_parse_copy_data(const char *buf, int len, StreamMessage *msg, char **err);

typedef struct pg_conn PGconn;

extern PGconn *db_connect(const ReplConnParams *params, bool replication);
extern ReplConn *stream_connect(const ReplConnParams *params);
extern bool stream_create_slot(ReplConn *rc, bool if_not_exists, bool export_snapshot, bool failover,
							   bool *created, uint64_t *consistent_lsn,
							   char **snapshot_name, StopFlag *stop);

typedef struct pg_result PGresult;

/*
 * PQgetResult that a stop interrupts: waits on the socket in slices and,
 * on a stop, cancels the query once (*cancelled), then returns its result.
 */
extern PGresult *pq_next_result(PGconn *conn, StopFlag *stop, bool *cancelled);

/* ALTER_REPLICATION_SLOT ... (FAILOVER): the slot is kept on standbys (17+). */
extern bool stream_set_failover(ReplConn *rc);

/* The cluster's system identifier and the database, from IDENTIFY_SYSTEM. */
extern void stream_identity(ReplConn *rc, const char **system_id, const char **dbname);

/* The server's version number (170004) and its text ("17.4"). */
extern int	stream_server_version(ReplConn *rc, const char **text);
extern bool stream_start(ReplConn *rc, uint64_t startpos);
extern bool stream_start_error_is_permanent(ReplConn *rc);

/* 1: a message; 0: nothing ready; -1: connection lost or ended. */
extern int	stream_next_message(ReplConn *rc, StreamMessage *msg);

/*
 * Waits for the socket, or any of the wake_fds (those >= 0), up to seconds;
 * -1 on error.
 */
extern int	stream_wait(ReplConn *rc, double seconds, const int *wake_fds, int nwake);
extern bool stream_send_feedback(ReplConn *rc, uint64_t flush_lsn, bool reply);
extern void stream_end(ReplConn *rc);

/* The server's wal_sender_timeout in ms (0: disabled), read at connection. */
extern int	stream_sender_timeout_ms(ReplConn *rc);

/* "SQLSTATE: message" of the error that last ended the stream, or NULL. */
extern const char *stream_last_error(ReplConn *rc);
extern void stream_close(ReplConn *rc);

#endif							/* STREAM_H */
