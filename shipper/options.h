/*-------------------------------------------------------------------------
 *
 * options.h
 *	  The command line of fundrecs_shipper, parsed (options.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHIPPER_OPTIONS_H
#define SHIPPER_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

/* From fundrecs.control's default_version, by the Makefile. */
#ifndef FUNDRECS_VERSION
#error "FUNDRECS_VERSION is not defined: build with the Makefile"
#endif
#define FUNDRECS_SHIPPER_VERSION FUNDRECS_VERSION

typedef struct ShipperOptions
{
	/* connection and slot */
	char	   *dbname;
	char	   *host;
	char	   *port;
	char	   *user;
	int			prompt_password;	/* -1 never, 1 force */
	char	   *slot;
	bool		create_slot;
	bool		if_not_exists;
	bool		resync;			/* --resync: new slot, reset marker, load */
	bool		enable_failover;	/* --enable-failover (PostgreSQL 17+) */
	bool		no_load;		/* --no-load, --initial-load=none */
	bool		chunked_load;	/* --initial-load=chunked */
	int			backfill_workers;	/* --backfill-workers: parts of a chunk */
	long		backfill_chunk_bytes;	/* --backfill-chunk-bytes: a part's
										 * most */
	bool		allow_no_tables;
	char	  **plugin_options; /* name, value, name, value, ... */
	int			noptions;
	int			pack_bytes;		/* plugin option pack_bytes, 0: a row per
								 * message */
	uint64_t	startpos;
	uint64_t	endpos;
	bool		no_loop;
	int			status_interval;
	char	   *target;			/* --target: target names, joined by commas
								 * (checked by target_check_options) */
	char	   *s3_url;
	char	   *s3_endpoint;
	char	   *s3_addressing;
	bool		gzip;
	long		flush_bytes;
	int			flush_seconds;
	char	   *stream;
	char	   *stream_arn;
	char	   *region;
	char	   *endpoint;
	char	   *ca_file;
	/* batching and delivery */
	int			batch_records;
	long		batch_bytes;
	bool		aggregate;
	long		aggregate_bytes;
	bool		kinesis_cbor;	/* --kinesis-protocol cbor */
	int			max_in_flight;
	int			linger_ms;
	long		max_buffer_bytes;
	int			request_timeout_ms;
	int			retry_timeout;
	int			shutdown_timeout;
	long		max_retained_wal;	/* bytes, 0: no warning */
	char	   *metrics_address;	/* HOST:PORT, NULL: no metrics */
	int			health_max_lag;
	int			heartbeat;		/* seconds between heartbeat messages, 0: none */
	bool		log_json;		/* --log-format json */
	bool		check_credentials;	/* print the credential source, exit */
	int			verbosity;		/* -1 quiet, 1 verbose, 2 debug */
} ShipperOptions;

extern const char *progname;
extern ShipperOptions opts;

/* Parses and checks the command line into opts; exits 0 or 2 itself. */
extern void parse_options(int argc, char **argv);

/* The checks that need nothing but the options: usage errors exit 2. */
extern void check_options(void);

/* A usage error: the message (fmt with one %s), the --help hint, exit 2. */
extern void usage_error(const char *fmt, const char *arg) pg_attribute_noreturn();

#endif							/* SHIPPER_OPTIONS_H */
