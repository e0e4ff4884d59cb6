/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  /metrics (Prometheus text exposition format 0.0.4) and /healthz,
 *	  served by libmicrohttpd (see metrics.h).
 *
 * libmicrohttpd rather than a hand-written server on the shipper's event
 * loop: the loop blocks in libpq and libcurl calls for up to a second at a
 * time, a scrape must not wait for that, and HTTP parsing of untrusted
 * requests is best left to a library that is kept up to date by Debian.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>

#include "log.h"
#include "metrics.h"
#include "pqexpbuffer.h"
#include "retry.h"

static struct MHD_Daemon *daemon_handle = NULL;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static MetricsState state;
static double start_time;
static int	max_lag;
static int64_t max_retained = 0;	/* --max-retained-wal; 0: not checked */
static char targets[64];
static char version[32];
static char server_version[64] = "unknown";

bool
metrics_enabled(void)
{
	return daemon_handle != NULL;
}

void
metrics_publish(const MetricsState *s)
{
	pthread_mutex_lock(&lock);
	state = *s;
	pthread_mutex_unlock(&lock);
}

void
metrics_set_server_version(const char *v)
{
	pthread_mutex_lock(&lock);
	strlcpy(server_version, v, sizeof(server_version));
	pthread_mutex_unlock(&lock);
}

static void
family(PQExpBuffer b, const char *name, const char *type, const char *help)
{
	appendPQExpBuffer(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
one(PQExpBuffer b, const char *name, const char *type, const char *help, double value)
{
	family(b, name, type, help);
	appendPQExpBuffer(b, "%s %.17g\n", name, value);
}

TargetMetrics *
metrics_target(MetricsState *s, const char *name)
{
	TargetMetrics *tm;

	for (int i = 0; i < s->ntargets; i++)
		if (strcmp(s->targets[i].name, name) == 0)
			return &s->targets[i];
	Assert(s->ntargets < METRICS_MAX_TARGETS);
	tm = &s->targets[s->ntargets++];
	memset(tm, 0, sizeof(*tm));
	strlcpy(tm->name, name, sizeof(tm->name));
	return tm;
}

/*
 * The figures over every target: rows acknowledged by all of them, rows
 * held by any, the oldest pending commit, and the last time every target
 * had delivered (the stalest target's).
 */
void
metrics_sum_targets(MetricsState *s)
{
	s->rows = s->bytes = s->held_rows = s->held_bytes = 0;
	s->oldest_pending_commit = s->last_delivery = 0;
	for (int i = 0; i < s->ntargets; i++)
	{
		const TargetMetrics *tm = &s->targets[i];

		s->rows = i == 0 ? tm->rows : Min(s->rows, tm->rows);
		s->bytes = i == 0 ? tm->bytes : Min(s->bytes, tm->bytes);
		s->held_rows += tm->held_rows;
		s->held_bytes += tm->held_bytes;
		if (tm->oldest_pending_commit > 0 &&
			(s->oldest_pending_commit == 0 || tm->oldest_pending_commit < s->oldest_pending_commit))
			s->oldest_pending_commit = tm->oldest_pending_commit;
		s->last_delivery = i == 0 ? tm->last_delivery : Min(s->last_delivery, tm->last_delivery);
	}
}

/* One gauge or counter family with a value per target. */
static void
per_target_value(PQExpBuffer b, const MetricsState *s, const char *name, const char *type,
				 const char *help, size_t offset, bool is_double, double now, bool age)
{
	family(b, name, type, help);
	for (int i = 0; i < s->ntargets; i++)
	{
		const char *field = (const char *) &s->targets[i] + offset;
		double		v;

		if (is_double)
			v = *(const double *) field;
		else
			v = (double) *(const uint64_t *) field;
		if (age)
			v = v > 0 && now > v ? now - v : 0;
		appendPQExpBuffer(b, "%s{target=\"%s\"} %.17g\n", name, s->targets[i].name, v);
	}
}

static void
render(PQExpBuffer b, const MetricsState *s, const char *server)
{
	double		now = now_seconds();
	static const char *const statuses[] = {"reserved", "extended", "unreserved", "lost"};

	family(b, "fundrecs_shipper_build_info", "gauge", "Version of the shipper and of the PostgreSQL server it reads.");
	appendPQExpBuffer(b, "fundrecs_shipper_build_info{version=\"%s\",server_version=\"%s\"} 1\n", version, server);
	one(b, "fundrecs_shipper_start_time_seconds", "gauge", "When the shipper started, in seconds since the epoch.", start_time);

	per_target_value(b, s, "fundrecs_shipper_rows_total", "counter", "Rows acknowledged by the target.",
					 offsetof(TargetMetrics, rows), false, now, false);
	per_target_value(b, s, "fundrecs_shipper_row_bytes_total", "counter", "Bytes of the rows acknowledged by the target (uncompressed).",
					 offsetof(TargetMetrics, bytes), false, now, false);
	per_target_value(b, s, "fundrecs_shipper_target_lag_seconds", "gauge", "Age of the oldest row the target has not acknowledged (commit time to now), 0 when none is pending.",
					 offsetof(TargetMetrics, oldest_pending_commit), true, now, true);
	per_target_value(b, s, "fundrecs_shipper_target_last_delivery_timestamp_seconds", "gauge", "When the target last acknowledged rows, in seconds since the epoch (0: never in this run).",
					 offsetof(TargetMetrics, last_delivery), true, now, false);
	per_target_value(b, s, "fundrecs_shipper_target_held_rows", "gauge", "Rows the target holds in memory until acknowledged.",
					 offsetof(TargetMetrics, held_rows), false, now, false);
	one(b, "fundrecs_shipper_kinesis_records_total", "counter", "Kinesis records acknowledged.", (double) s->kinesis_records);
	one(b, "fundrecs_shipper_kinesis_put_records_calls_total", "counter", "PutRecords calls sent.", (double) s->kinesis_calls);
	one(b, "fundrecs_shipper_kinesis_retried_calls_total", "counter", "PutRecords calls that were retries.", (double) s->kinesis_retried_calls);
	one(b, "fundrecs_shipper_kinesis_retried_records_total", "counter", "Kinesis records sent again after a failure.", (double) s->kinesis_retried_records);
	one(b, "fundrecs_shipper_kinesis_throttled_records_total", "counter", "Kinesis records refused with ProvisionedThroughputExceededException.", (double) s->kinesis_throttled_records);
	one(b, "fundrecs_shipper_s3_objects_total", "counter", "S3 objects written.", (double) s->s3_objects);
	one(b, "fundrecs_shipper_s3_object_bytes_total", "counter", "Bytes of the S3 objects written.", (double) s->s3_bytes);
	one(b, "fundrecs_shipper_s3_objects_cut_short_total", "counter", "S3 objects found cut short by a crash (a store that keeps a cut PUT) and deleted; their rows were written again.", (double) s->s3_objects_torn);
	one(b, "fundrecs_shipper_s3_rows_already_written_total", "counter", "Rows not written to S3 again because the bucket had them (shipped before a restart).", (double) s->s3_rows_skipped);

	one(b, "fundrecs_shipper_confirmed_lsn", "gauge", "Position confirmed to PostgreSQL (LSN as a number).", (double) s->confirmed_lsn);
	one(b, "fundrecs_shipper_server_wal_end_lsn", "gauge", "The server's WAL end from its last keepalive (LSN as a number).", (double) s->wal_end);
	one(b, "fundrecs_shipper_lag_bytes", "gauge", "WAL between the server's end and the confirmed position.",
		s->wal_end > s->confirmed_lsn ? (double) (s->wal_end - s->confirmed_lsn) : 0);
	one(b, "fundrecs_shipper_lag_seconds", "gauge", "Age of the oldest row not yet acknowledged by every target (commit time to now), 0 when none is pending.",
		s->oldest_pending_commit > 0 && now > s->oldest_pending_commit ? now - s->oldest_pending_commit : 0);
	one(b, "fundrecs_shipper_last_delivery_timestamp_seconds", "gauge", "Since when every target has delivered: the oldest of the targets' last deliveries, in seconds since the epoch (0: a target never delivered in this run).", s->last_delivery);
	one(b, "fundrecs_shipper_held_rows", "gauge", "Rows held in memory until acknowledged, over every target.", (double) s->held_rows);
	one(b, "fundrecs_shipper_held_bytes", "gauge", "Bytes of the rows held in memory until acknowledged.", (double) s->held_bytes);
	one(b, "fundrecs_shipper_deliveries_in_flight", "gauge", "Batches being delivered at once (each with its share of the --max-in-flight calls).", s->deliveries_in_flight);
	one(b, "fundrecs_shipper_connected", "gauge", "1 while streaming from the slot.", s->connected ? 1 : 0);

	if (s->has_slot_state)
	{
		one(b, "fundrecs_shipper_slot_retained_wal_bytes", "gauge", "WAL the slot holds back: current position - restart_lsn.", (double) s->retained_wal);
		family(b, "fundrecs_shipper_slot_wal_status", "gauge", "The slot's wal_status in pg_replication_slots (1 for the current one).");
		for (int i = 0; i < 4; i++)
			appendPQExpBuffer(b, "fundrecs_shipper_slot_wal_status{status=\"%s\"} %d\n", statuses[i],
							  strcmp(s->wal_status, statuses[i]) == 0 ? 1 : 0);
		if (s->has_safe_wal_size)
			one(b, "fundrecs_shipper_slot_safe_wal_size_bytes", "gauge", "WAL that may still be written before the slot is invalidated (max_slot_wal_keep_size).", (double) s->safe_wal_size);
	}
	one(b, "fundrecs_shipper_retained_wal_warnings_total", "counter", "Times the slot was found over --max-retained-wal.", (double) s->retained_wal_warnings);
	one(b, "fundrecs_shipper_heartbeats_total", "counter", "Heartbeat messages written (--heartbeat).", (double) s->heartbeats);
	if (s->has_credentials)
	{
		one(b, "fundrecs_shipper_credentials_expiry_timestamp_seconds", "gauge", "When the AWS credentials held expire, in seconds since the epoch (0: they do not expire).", s->credentials_expiry);
		one(b, "fundrecs_shipper_credentials_refresh_failures", "gauge", "AWS credential refreshes that failed in a row (0 after a success).", s->credentials_failures);
	}
	one(b, "fundrecs_shipper_load_rows_total", "counter", "Rows read by the initial load.", (double) s->load_rows);
	one(b, "fundrecs_shipper_load_estimated_rows", "gauge", "The planner's estimate of the initial load's rows.", (double) s->load_estimate);
	one(b, "fundrecs_shipper_backfill_rows_total", "counter", "Rows of backfills handed to the targets.", (double) s->backfill_rows);
	one(b, "fundrecs_shipper_backfill_rows_read_total", "counter", "Rows read by backfills (chunks read again counted again).", (double) s->backfill_rows_read);
	one(b, "fundrecs_shipper_backfill_rows_dropped_total", "counter", "Rows of backfills not shipped: the stream carried a newer version of their key.", (double) s->backfill_rows_dropped);
	one(b, "fundrecs_shipper_backfill_chunks_total", "counter", "Backfill chunks acknowledged by every target.", (double) s->backfill_chunks);
	one(b, "fundrecs_shipper_backfill_chunks_redone_total", "counter", "Backfill chunks read again (a truncate while they were read).", (double) s->backfill_chunks_redone);
	one(b, "fundrecs_shipper_backfills_running", "gauge", "Backfills running or queued for this slot.", s->backfill_running);
	if (s->backfill_remaining >= 0)
	{
		one(b, "fundrecs_shipper_backfill_remaining_rows", "gauge", "Rows the running backfill has yet to read, from the planner's estimate.", (double) s->backfill_remaining);
		one(b, "fundrecs_shipper_backfill_rows_per_second", "gauge", "Rows the running backfill reads a second, since it started or resumed.", s->backfill_rate);
	}
}

/* Empty when healthy, else the reason. */
static void
health(const MetricsState *s, char *reason, size_t len)
{
	double		now = now_seconds();

	reason[0] = '\0';
	if (!s->connected)
	{
		snprintf(reason, len, "not streaming from the slot");
		return;
	}
	for (int i = 0; i < s->ntargets && max_lag > 0; i++)
	{
		const TargetMetrics *tm = &s->targets[i];

		if (tm->held_rows == 0)
			continue;
		/* A target that holds rows on purpose (S3) has its allowance. */
		if (tm->held_since > 0 && now - tm->held_since > tm->hold_allowance + max_lag)
		{
			snprintf(reason, len, "target %s: %llu rows held for %.0f s (--flush-seconds %.0f + --health-max-lag %d)",
					 tm->name, (unsigned long long) tm->held_rows, now - tm->held_since,
					 tm->hold_allowance, max_lag);
			return;
		}
		if (tm->held_since == 0 && now - Max(tm->last_delivery, start_time) > max_lag)
		{
			snprintf(reason, len, "target %s: %llu rows pending and nothing delivered for %.0f s (--health-max-lag %d)",
					 tm->name, (unsigned long long) tm->held_rows,
					 now - Max(tm->last_delivery, start_time), max_lag);
			return;
		}
	}
	if (max_retained > 0 && s->has_slot_state && s->retained_wal > max_retained)
		snprintf(reason, len, "the slot retains %lld bytes of WAL, over --max-retained-wal %lld",
				 (long long) s->retained_wal, (long long) max_retained);
}

void
metrics_set_max_retained(int64_t bytes)
{
	max_retained = bytes;
}

static enum MHD_Result
reply(struct MHD_Connection *connection, unsigned int status, const char *type, const char *body,
	  size_t len)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *) body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result r;

	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	r = MHD_queue_response(connection, status, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *connection, const char *url, const char *method,
	   const char *http_version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	MetricsState s;
	char		server[64];

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(connection, 405, "text/plain", "method not allowed\n", 19);
	pthread_mutex_lock(&lock);
	s = state;
	strlcpy(server, server_version, sizeof(server));
	pthread_mutex_unlock(&lock);
	/* Before the first snapshot: every target, at zero. */
	if (s.ntargets == 0)
	{
		char		list[64];
		char	   *save = NULL;

		strlcpy(list, targets, sizeof(list));
		for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
			if (s.ntargets < METRICS_MAX_TARGETS)
				metrics_target(&s, t);
	}

	if (strcmp(url, "/metrics") == 0)
	{
		PQExpBufferData b;
		enum MHD_Result r;

		initPQExpBuffer(&b);
		render(&b, &s, server);
		r = reply(connection, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
		termPQExpBuffer(&b);
		return r;
	}
	if (strcmp(url, "/healthz") == 0)
	{
		char		reason[256];
		char		body[300];

		health(&s, reason, sizeof(reason));
		if (reason[0] == '\0')
			return reply(connection, 200, "text/plain", "ok\n", 3);
		snprintf(body, sizeof(body), "%s\n", reason);
		return reply(connection, 503, "text/plain", body, strlen(body));
	}
	return reply(connection, 404, "text/plain", "not found: try /metrics or /healthz\n", 36);
}

/*
 * libmicrohttpd's own messages, through the shipper's log (so that they are
 * JSON with --log-format json).  While the daemon starts, the last one is
 * kept for metrics_start's error: MHD names the port it was given, and with
 * MHD_OPTION_SOCK_ADDR that is 0 ("Failed to bind to port 0").
 */
static char mhd_last_message[512];
static volatile bool mhd_started = false;

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char		buf[512];
	size_t		len;

	vsnprintf(buf, sizeof(buf), fmt, ap);
	len = strlen(buf);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	if (mhd_started)
		log_warning("metrics server: %s", buf);
	else
		strlcpy(mhd_last_message, buf, sizeof(mhd_last_message));
}

char *
metrics_start(const char *address, int health_max_lag, const char *tgts, const char *ver,
			  int *bound_port)
{
	char		host[256];
	const char *colon = strrchr(address, ':');
	struct addrinfo hints;
	struct addrinfo *ai = NULL;
	int			rc;
	const union MHD_DaemonInfo *info;

	if (colon == NULL || colon == address || colon[1] == '\0' || (size_t) (colon - address) >= sizeof(host))
		return psprintf("invalid --metrics-address \"%s\": use HOST:PORT", address);
	memcpy(host, address, colon - address);
	host[colon - address] = '\0';
	/* [::1]:9187 */
	if (host[0] == '[' && host[strlen(host) - 1] == ']')
	{
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0)
		return psprintf("invalid --metrics-address \"%s\": %s", address, gai_strerror(rc));

	max_lag = health_max_lag;
	strlcpy(targets, tgts, sizeof(targets));
	strlcpy(version, ver, sizeof(version));
	start_time = now_seconds();

	/*
	 * poll(), not select(): no FD_SETSIZE bound on the connections; idle ones
	 * are closed after 5 s, and up to 256 are served, so that a few idle or
	 * slow clients never keep a scrape out (16 did).
	 */
	daemon_handle = MHD_start_daemon(MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
									 (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
									 0, NULL, NULL, handle, NULL,
									 MHD_OPTION_SOCK_ADDR, ai->ai_addr,
									 MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 256,
									 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 5,
									 MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
									 MHD_OPTION_END);
	freeaddrinfo(ai);
	if (daemon_handle == NULL)
	{
		/* "Failed to bind to port 0: Address already in use": the reason. */
		const char *reason = strrchr(mhd_last_message, ':');

		return psprintf("could not serve metrics on \"%s\": %s", address,
						reason ? reason + 2 : mhd_last_message[0] ? mhd_last_message :
						"the HTTP server did not start");
	}
	mhd_started = true;
	info = MHD_get_daemon_info(daemon_handle, MHD_DAEMON_INFO_BIND_PORT);
	if (bound_port)
		*bound_port = info ? info->port : 0;
	return NULL;
}
