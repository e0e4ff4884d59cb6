/*-------------------------------------------------------------------------
 *
 * options.c
 *	  The command line of fundrecs_shipper: --help, the options parsed into
 *	  one struct, and every check that needs nothing but the options
 *	  (usage errors exit 2, after pg_recvlogical).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "backfill.h"
#include "log.h"
#include "common/string.h"
#include "fe_utils/option_utils.h"
#include "getopt_long.h"
#include "kinesis.h"
#include "options.h"
#include "rowscan.h"

const char *progname;

ShipperOptions opts = {
	.status_interval = 10,
	.target = "kinesis",
	.gzip = true,
	.flush_bytes = 64L * 1024 * 1024,
	.flush_seconds = 60,
	.batch_records = KINESIS_MAX_RECORDS,
	.max_in_flight = 8,
	.aggregate_bytes = 262144,	/* measured: bench/aggregate */
	.batch_bytes = KINESIS_MAX_REQUEST_BYTES,
	.linger_ms = 20,
	.max_buffer_bytes = 8 * 1024 * 1024,
	.request_timeout_ms = 30000,
	.retry_timeout = 600,
	.shutdown_timeout = 30,
	.backfill_workers = 1,
	.backfill_chunk_bytes = BACKFILL_DEFAULT_CHUNK_BYTES,
	.health_max_lag = 60,
	.pack_bytes = 65536,		/* measured: bench/run */
};

static void
usage(void)
{
	printf("%s reads a fundrecs_decoder replication slot and ships its rows to Kinesis.\n\n", progname);
	printf("Usage:\n  %s -d CONNSTR -S SLOT --stream NAME [OPTION]...\n", progname);
	printf("\nConnection options:\n");
	printf("  -d, --dbname=CONNSTR     database name or connection string\n");
	printf("  -h, --host=HOSTNAME      database server host or socket directory\n");
	printf("  -p, --port=PORT          database server port number\n");
	printf("  -U, --username=NAME      connect as specified database user\n");
	printf("  -w, --no-password        never prompt for password\n");
	printf("  -W, --password           force password prompt (should happen automatically)\n");
	printf("\nSlot options:\n");
	printf("  -S, --slot=SLOTNAME      name of the logical replication slot\n");
	printf("      --create-slot        create the slot (plugin fundrecs_decoder) before shipping\n");
	printf("      --if-not-exists      do not error if the slot already exists with --create-slot\n");
	printf("      --enable-failover    create the slot as a failover slot, synchronized to\n"
		   "                           physical standbys (PostgreSQL 17 or later)\n");
	printf("      --resync             when the slot is missing or invalidated (a failover\n"
		   "                           that lost it, max_slot_wal_keep_size), create it, ship a\n"
		   "                           reset marker row, then every row as a new initial load;\n"
		   "                           a slot that is there with its load finished is used\n");
	printf("      --initial-load=MODE  how a new slot's existing rows are shipped: snapshot\n"
		   "                           (default: all of them, then the stream), chunked\n"
		   "                           (streaming at once, tables backfilled in chunks), none\n");
	printf("      --backfill-workers=N read each backfill chunk in N parts side by side, on N\n"
		   "                           connections (default: 1)\n");
	printf("      --backfill-chunk-bytes=N\n"
		   "                           end a backfill chunk (each part) early once its rows\n"
		   "                           hold N bytes (default: 67108864, 64 MiB)\n");
	printf("      --no-load            do not ship the rows that exist when the slot is created\n"
		   "                           (--initial-load=none)\n");
	printf("      --allow-no-tables    start even if the plugin option \"tables\" matches no table\n"
		   "                           or the orders table does not exist\n");
	printf("  -o, --option=NAME=VALUE  pass option NAME with value VALUE to the plugin\n");
	printf("  -I, --startpos=LSN       where in an existing slot to start\n");
	printf("  -E, --endpos=LSN         ship up to LSN, confirm it and exit\n");
	printf("  -n, --no-loop            exit on connection loss instead of reconnecting\n");
	printf("      --pack-bytes=N       replication messages carry a transaction's rows, up to N\n"
		   "                           bytes each (plugin option pack_bytes; default: %d,\n"
		   "                           0: a message per row)\n", opts.pack_bytes);
	printf("  -s, --status-interval=SECS\n"
		   "                           time between status updates to the server (default: %d)\n",
		   opts.status_interval);
	printf("\nTarget options:\n");
	printf("      --target=TARGET      kinesis (default), s3, kinesis,s3, or stdout (one JSON row per line)\n");
	printf("      --stream=NAME        Kinesis data stream name\n");
	printf("      --stream-arn=ARN     Kinesis data stream ARN (instead of --stream)\n");
	printf("      --region=REGION      AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, profile)\n");
	printf("      --endpoint-url=URL   Kinesis endpoint (emulators, VPC endpoints)\n");
	printf("      --ca-file=FILE       CA certificates to verify the endpoint with\n");
	printf("      --batch-records=N    records per PutRecords call, at most 500 (default: %d)\n",
		   opts.batch_records);
	printf("      --batch-bytes=N      bytes per PutRecords call, at most 5 MiB (default: %ld)\n",
		   opts.batch_bytes);
	printf("      --linger-ms=N        how long a partial batch waits for more rows (default: %d)\n",
		   opts.linger_ms);
	printf("      --max-in-flight=N    PutRecords calls sent at once, at most %d (default: %d)\n",
		   KINESIS_MAX_IN_FLIGHT, opts.max_in_flight);
	printf("      --aggregate          KPL-aggregate rows into Kinesis records, per shard\n"
		   "                           (consumers must de-aggregate: KCL, Firehose, aws-kinesis-agg)\n");
	printf("      --aggregate-bytes=N  largest aggregated record (default: %ld, at most 1 MiB)\n",
		   opts.aggregate_bytes);
	printf("      --kinesis-protocol=PROTO\n"
		   "                           json (default) or cbor: PutRecords calls in CBOR carry\n"
		   "                           rows as bytes, not base64 (smaller calls, less CPU)\n");
	printf("      --max-buffer-bytes=N unacknowledged bytes held before reading stops (default: %ld)\n",
		   opts.max_buffer_bytes);
	printf("      --request-timeout=MS timeout of one HTTP request (default: %d)\n",
		   opts.request_timeout_ms);
	printf("      --retry-timeout=SECS give up retrying a batch after this long, 0 never (default: %d)\n",
		   opts.retry_timeout);
	printf("      --shutdown-timeout=SECS\n"
		   "                           on SIGTERM/SIGINT, time to deliver what is in flight (default: %d)\n",
		   opts.shutdown_timeout);
	printf("\nS3 options (--target s3 or kinesis,s3):\n");
	printf("      --s3-url=s3://BUCKET/PREFIX  where objects go: PREFIX/<route>/dt=YYYY-MM-DD/<lsns>.json.gz\n");
	printf("      --s3-endpoint-url=URL  S3 endpoint (default: --endpoint-url with --target s3)\n");
	printf("      --s3-addressing=STYLE  path or virtual (default: path with an endpoint URL)\n");
	printf("      --compression=METHOD   gzip (default) or none\n");
	printf("      --flush-bytes=N        write objects when this many bytes are held (default: %ld)\n",
		   opts.flush_bytes);
	printf("      --flush-seconds=SECS   write objects at least this often (default: %d)\n",
		   opts.flush_seconds);
	printf("\nMonitoring options:\n");
	printf("      --max-retained-wal=BYTES\n"
		   "                           warn while the slot holds back more WAL than this\n");
	printf("      --metrics-address=HOST:PORT\n"
		   "                           serve Prometheus metrics at /metrics and a health check\n"
		   "                           at /healthz (off by default)\n");
	printf("      --health-max-lag=SECS\n"
		   "                           /healthz fails when a target holds rows and delivered\n"
		   "                           nothing for this long (S3: past --flush-seconds + this;\n"
		   "                           default: %d)\n", opts.health_max_lag);
	printf("      --heartbeat=SECS     when no row arrived for SECS, write a transactional\n"
		   "                           heartbeat message so the slot's restart_lsn moves on\n"
		   "                           (off by default; needs a writable primary)\n");
	printf("      --log-format=FORMAT  text (default) or json: one JSON object per line\n");
	printf("\nOther options:\n");
	printf("      --check-credentials  find AWS credentials and the region as shipping would,\n"
		   "                           print where they come from (never the secret), exit\n");
	printf("  -v, --verbose            output verbose messages (twice: debug)\n");
	printf("  -q, --quiet              output errors only\n");
	printf("  -V, --version            output version information, then exit\n");
	printf("  -?, --help               show this help, then exit\n");
	printf("\nAWS credentials are found as the AWS SDKs find them, in this order: the\n"
		   "environment, a role_arn profile (STS AssumeRole), web identity, the shared\n"
		   "credentials file, credential_process, the config file, the container endpoint,\n"
		   "EC2 instance metadata; they are refreshed before they expire.  SIGHUP reads\n"
		   "them again.\n");
	printf("\nOn SIGTERM or SIGINT the shipper stops reading, delivers and confirms what it\n"
		   "holds within --shutdown-timeout, then exits; rows still unacknowledged then (or\n"
		   "at a second signal) are not confirmed and are shipped again on restart.\n");
	printf("\nExit status: 0 on success, --endpos reached or SIGINT/SIGTERM; 1 on a runtime\n"
		   "failure; 2 on a usage or configuration error; 3 on a failure that restarting\n"
		   "will not cure (a missing stream, bucket or slot, access denied, static keys AWS\n"
		   "refuses, a lost slot, a server certificate that fails verification).\n");
}

void
usage_error(const char *fmt, const char *arg)
{
	log_error(fmt, arg);
	log_error_hint("Try \"%s --help\" for more information.", progname);
	exit(2);
}

/*
 * A size in bytes (a long: more than an int holds), with the rules and
 * messages of option_parse_int.
 */
static long
parse_bytes(const char *name, const char *value, long min, long max)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(value, &end, 10);
	while (*end != '\0' && isspace((unsigned char) *end))
		end++;
	if (errno == ERANGE || *value == '\0' || *end != '\0')
		log_error("invalid value \"%s\" for option %s", value, name);
	else if (v < min || v > max)
		log_error("%s must be in range %ld..%ld", name, min, max);
	else
		return v;
	log_error_hint("Try \"%s --help\" for more information.", progname);
	exit(2);
}

/*
 * An integer option within its range, parsed by option_parse_int as
 * PostgreSQL's tools do.  Its messages are plain text: with --log-format
 * json, parse_bytes applies the same rules with the same messages, as JSON.
 */
static int
parse_int(const char *name, const char *value, int min, int max)
{
	int			v;

	if (opts.log_json)
		return (int) parse_bytes(name, value, min, max);
	if (!option_parse_int(value, name, min, max, &v))
	{
		log_error_hint("Try \"%s --help\" for more information.", progname);
		exit(2);
	}
	return v;
}

static uint64_t
parse_lsn_option(const char *name, const char *value)
{
	uint64_t	lsn;

	if (!rowscan_parse_lsn(value, strlen(value), &lsn))
	{
		log_error("could not parse %s location \"%s\"", name, value);
		log_error_hint("Try \"%s --help\" for more information.", progname);
		exit(2);
	}
	return lsn;
}

static bool
parse_bool_value(const char *value, bool *result)
{
	if (pg_strcasecmp(value, "true") == 0 || pg_strcasecmp(value, "on") == 0 ||
		pg_strcasecmp(value, "yes") == 0 || strcmp(value, "1") == 0)
		*result = true;
	else if (pg_strcasecmp(value, "false") == 0 || pg_strcasecmp(value, "off") == 0 ||
			 pg_strcasecmp(value, "no") == 0 || strcmp(value, "0") == 0)
		*result = false;
	else
		return false;
	return true;
}

static void
add_plugin_option(const char *arg)
{
	const char *eq = strchr(arg, '=');

	if (eq == NULL || eq == arg)
		usage_error("invalid plugin option \"%s\": use NAME=VALUE", arg);
	opts.plugin_options = pg_realloc(opts.plugin_options,
									 sizeof(char *) * (opts.noptions + 1) * 2);
	opts.plugin_options[opts.noptions * 2] = pnstrdup(arg, eq - arg);
	opts.plugin_options[opts.noptions * 2 + 1] = pg_strdup(eq + 1);
	opts.noptions++;
}

/* Codes of the options without a short form, in --help's order. */
typedef enum LongOption
{
	OPT_CREATE_SLOT = 256,
	OPT_IF_NOT_EXISTS,
	OPT_RESYNC,
	OPT_ENABLE_FAILOVER,
	OPT_NO_LOAD,
	OPT_INITIAL_LOAD,
	OPT_BACKFILL_WORKERS,
	OPT_BACKFILL_CHUNK_BYTES,
	OPT_ALLOW_NO_TABLES,
	OPT_PACK_BYTES,
	OPT_TARGET,
	OPT_STREAM,
	OPT_STREAM_ARN,
	OPT_REGION,
	OPT_ENDPOINT_URL,
	OPT_CA_FILE,
	OPT_CHECK_CREDENTIALS,
	OPT_S3_URL,
	OPT_S3_ENDPOINT_URL,
	OPT_S3_ADDRESSING,
	OPT_COMPRESSION,
	OPT_FLUSH_BYTES,
	OPT_FLUSH_SECONDS,
	OPT_BATCH_RECORDS,
	OPT_BATCH_BYTES,
	OPT_LINGER_MS,
	OPT_MAX_IN_FLIGHT,
	OPT_AGGREGATE,
	OPT_AGGREGATE_BYTES,
	OPT_MAX_BUFFER_BYTES,
	OPT_REQUEST_TIMEOUT,
	OPT_RETRY_TIMEOUT,
	OPT_SHUTDOWN_TIMEOUT,
	OPT_MAX_RETAINED_WAL,
	OPT_METRICS_ADDRESS,
	OPT_HEALTH_MAX_LAG,
	OPT_HEARTBEAT,
	OPT_LOG_FORMAT,
	OPT_KINESIS_PROTOCOL,
} LongOption;

static const struct option long_options[] = {
	{"dbname", required_argument, NULL, 'd'},
	{"host", required_argument, NULL, 'h'},
	{"port", required_argument, NULL, 'p'},
	{"username", required_argument, NULL, 'U'},
	{"no-password", no_argument, NULL, 'w'},
	{"password", no_argument, NULL, 'W'},
	{"slot", required_argument, NULL, 'S'},
	{"option", required_argument, NULL, 'o'},
	{"startpos", required_argument, NULL, 'I'},
	{"endpos", required_argument, NULL, 'E'},
	{"no-loop", no_argument, NULL, 'n'},
	{"status-interval", required_argument, NULL, 's'},
	{"verbose", no_argument, NULL, 'v'},
	{"quiet", no_argument, NULL, 'q'},
	{"version", no_argument, NULL, 'V'},
	{"help", no_argument, NULL, '?'},
	{"create-slot", no_argument, NULL, OPT_CREATE_SLOT},
	{"if-not-exists", no_argument, NULL, OPT_IF_NOT_EXISTS},
	{"resync", no_argument, NULL, OPT_RESYNC},
	{"enable-failover", no_argument, NULL, OPT_ENABLE_FAILOVER},
	{"no-load", no_argument, NULL, OPT_NO_LOAD},
	{"initial-load", required_argument, NULL, OPT_INITIAL_LOAD},
	{"backfill-workers", required_argument, NULL, OPT_BACKFILL_WORKERS},
	{"backfill-chunk-bytes", required_argument, NULL, OPT_BACKFILL_CHUNK_BYTES},
	{"allow-no-tables", no_argument, NULL, OPT_ALLOW_NO_TABLES},
	{"pack-bytes", required_argument, NULL, OPT_PACK_BYTES},
	{"target", required_argument, NULL, OPT_TARGET},
	{"stream", required_argument, NULL, OPT_STREAM},
	{"stream-arn", required_argument, NULL, OPT_STREAM_ARN},
	{"region", required_argument, NULL, OPT_REGION},
	{"endpoint-url", required_argument, NULL, OPT_ENDPOINT_URL},
	{"ca-file", required_argument, NULL, OPT_CA_FILE},
	{"check-credentials", no_argument, NULL, OPT_CHECK_CREDENTIALS},
	{"s3-url", required_argument, NULL, OPT_S3_URL},
	{"s3-endpoint-url", required_argument, NULL, OPT_S3_ENDPOINT_URL},
	{"s3-addressing", required_argument, NULL, OPT_S3_ADDRESSING},
	{"compression", required_argument, NULL, OPT_COMPRESSION},
	{"flush-bytes", required_argument, NULL, OPT_FLUSH_BYTES},
	{"flush-seconds", required_argument, NULL, OPT_FLUSH_SECONDS},
	{"batch-records", required_argument, NULL, OPT_BATCH_RECORDS},
	{"batch-bytes", required_argument, NULL, OPT_BATCH_BYTES},
	{"linger-ms", required_argument, NULL, OPT_LINGER_MS},
	{"max-in-flight", required_argument, NULL, OPT_MAX_IN_FLIGHT},
	{"aggregate", no_argument, NULL, OPT_AGGREGATE},
	{"aggregate-bytes", required_argument, NULL, OPT_AGGREGATE_BYTES},
	{"kinesis-protocol", required_argument, NULL, OPT_KINESIS_PROTOCOL},
	{"max-buffer-bytes", required_argument, NULL, OPT_MAX_BUFFER_BYTES},
	{"request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT},
	{"retry-timeout", required_argument, NULL, OPT_RETRY_TIMEOUT},
	{"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
	{"max-retained-wal", required_argument, NULL, OPT_MAX_RETAINED_WAL},
	{"metrics-address", required_argument, NULL, OPT_METRICS_ADDRESS},
	{"health-max-lag", required_argument, NULL, OPT_HEALTH_MAX_LAG},
	{"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
	{"log-format", required_argument, NULL, OPT_LOG_FORMAT},
	{NULL, 0, NULL, 0}
};

/* Options that set a flag. */
static const struct
{
	int			code;
	bool	   *flag;
}			flag_options[] = {
	{'n', &opts.no_loop},
	{OPT_CREATE_SLOT, &opts.create_slot},
	{OPT_IF_NOT_EXISTS, &opts.if_not_exists},
	{OPT_RESYNC, &opts.resync},
	{OPT_ENABLE_FAILOVER, &opts.enable_failover},
	{OPT_NO_LOAD, &opts.no_load},
	{OPT_ALLOW_NO_TABLES, &opts.allow_no_tables},
	{OPT_CHECK_CREDENTIALS, &opts.check_credentials},
	{OPT_AGGREGATE, &opts.aggregate},
};

/* Options whose value is kept as given. */
static const struct
{
	int			code;
	char	  **value;
}			string_options[] = {
	{'d', &opts.dbname},
	{'h', &opts.host},
	{'U', &opts.user},
	{'S', &opts.slot},
	{OPT_STREAM, &opts.stream},
	{OPT_STREAM_ARN, &opts.stream_arn},
	{OPT_REGION, &opts.region},
	{OPT_ENDPOINT_URL, &opts.endpoint},
	{OPT_CA_FILE, &opts.ca_file},
	{OPT_S3_URL, &opts.s3_url},
	{OPT_S3_ENDPOINT_URL, &opts.s3_endpoint},
};

/* Integer options and their ranges. */
static const struct
{
	int			code;
	const char *name;
	int		   *value;
	int			min;
	int			max;
}			int_options[] = {
	{'s', "-s/--status-interval", &opts.status_interval, 0, INT_MAX / 1000},
	{OPT_PACK_BYTES, "--pack-bytes", &opts.pack_bytes, 0, 64 * 1024 * 1024},
	{OPT_BACKFILL_WORKERS, "--backfill-workers", &opts.backfill_workers, 1, 32},
	{OPT_FLUSH_SECONDS, "--flush-seconds", &opts.flush_seconds, 1, 24 * 3600},
	{OPT_BATCH_RECORDS, "--batch-records", &opts.batch_records, 1, KINESIS_MAX_RECORDS},
	{OPT_LINGER_MS, "--linger-ms", &opts.linger_ms, 0, 3600 * 1000},
	{OPT_MAX_IN_FLIGHT, "--max-in-flight", &opts.max_in_flight, 1, KINESIS_MAX_IN_FLIGHT},
	{OPT_REQUEST_TIMEOUT, "--request-timeout", &opts.request_timeout_ms, 100, 3600 * 1000},
	{OPT_RETRY_TIMEOUT, "--retry-timeout", &opts.retry_timeout, 0, INT_MAX},
	{OPT_SHUTDOWN_TIMEOUT, "--shutdown-timeout", &opts.shutdown_timeout, 0, 24 * 3600},
	{OPT_HEALTH_MAX_LAG, "--health-max-lag", &opts.health_max_lag, 1, 24 * 3600},
	{OPT_HEARTBEAT, "--heartbeat", &opts.heartbeat, 1, 24 * 3600},
};

/* Sizes in bytes and their ranges. */
static const struct
{
	int			code;
	const char *name;
	long	   *value;
	long		min;
	long		max;
}			size_options[] = {
	{OPT_FLUSH_BYTES, "--flush-bytes", &opts.flush_bytes, 1024, 1024L * 1024 * 1024},
	{OPT_BATCH_BYTES, "--batch-bytes", &opts.batch_bytes, 1, KINESIS_MAX_REQUEST_BYTES},
	{OPT_AGGREGATE_BYTES, "--aggregate-bytes", &opts.aggregate_bytes, 1024,
	KINESIS_MAX_RECORD_BYTES - KINESIS_MAX_KEY_CHARS},
	{OPT_MAX_BUFFER_BYTES, "--max-buffer-bytes", &opts.max_buffer_bytes, 1024, LONG_MAX},
	{OPT_BACKFILL_CHUNK_BYTES, "--backfill-chunk-bytes", &opts.backfill_chunk_bytes, 1024,
	BACKFILL_MAX_CHUNK_BYTES},
	{OPT_MAX_RETAINED_WAL, "--max-retained-wal", &opts.max_retained_wal, 1, LONG_MAX},
};

/* An option of the tables above: set; false when c is none of theirs. */
static bool
set_from_tables(int c, const char *arg)
{
	for (int i = 0; i < lengthof(flag_options); i++)
		if (flag_options[i].code == c)
			return *flag_options[i].flag = true;
	for (int i = 0; i < lengthof(string_options); i++)
		if (string_options[i].code == c)
			return (*string_options[i].value = pg_strdup(arg)) != NULL;
	for (int i = 0; i < lengthof(int_options); i++)
		if (int_options[i].code == c)
		{
			*int_options[i].value = parse_int(int_options[i].name, arg,
											  int_options[i].min, int_options[i].max);
			return true;
		}
	for (int i = 0; i < lengthof(size_options); i++)
		if (size_options[i].code == c)
		{
			*size_options[i].value = parse_bytes(size_options[i].name, arg,
												 size_options[i].min, size_options[i].max);
			return true;
		}
	return false;
}

/* --metrics-address HOST:PORT */
static void
set_metrics_address(const char *arg)
{
	const char *colon = strrchr(arg, ':');

	if (colon == NULL || colon == arg || colon[1] == '\0' ||
		strspn(colon + 1, "0123456789") != strlen(colon + 1) || atol(colon + 1) > 65535)
		usage_error("invalid --metrics-address \"%s\": use HOST:PORT, e.g. 127.0.0.1:9187", arg);
	opts.metrics_address = pg_strdup(arg);
}

/* --log-format text|json */
static void
set_log_format(const char *arg)
{
	if (strcmp(arg, "json") == 0)
		opts.log_json = true;
	else if (strcmp(arg, "text") == 0)
		opts.log_json = false;
	else
		usage_error("invalid --log-format \"%s\": use text or json", arg);
	log_set_format(opts.log_json ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT, progname);
}

/* The options that are neither flags nor plain values. */
static void
set_other(int c, const char *arg, char **argv)
{
	switch (c)
	{
		case 'p':
			(void) parse_int("-p/--port", arg, 1, 65535);
			opts.port = pg_strdup(arg);
			break;
		case 'w':
			opts.prompt_password = -1;
			break;
		case 'W':
			opts.prompt_password = 1;
			break;
		case 'o':
			add_plugin_option(arg);
			break;
		case 'I':
			opts.startpos = parse_lsn_option("start", arg);
			break;
		case 'E':
			opts.endpos = parse_lsn_option("end", arg);
			break;
		case 'v':
			opts.verbosity++;
			break;
		case 'q':
			opts.verbosity = -1;
			break;
		case 'V':
			printf("fundrecs_shipper (fundrecs) " FUNDRECS_SHIPPER_VERSION "\n");
			exit(0);
		case OPT_TARGET:
			opts.target = pg_strdup(arg);
			break;
		case OPT_S3_ADDRESSING:
			if (strcmp(arg, "path") != 0 && strcmp(arg, "virtual") != 0)
				usage_error("invalid --s3-addressing \"%s\": use path or virtual", arg);
			opts.s3_addressing = pg_strdup(arg);
			break;
		case OPT_INITIAL_LOAD:
			if (strcmp(arg, "snapshot") != 0 && strcmp(arg, "chunked") != 0 &&
				strcmp(arg, "none") != 0)
				usage_error("invalid --initial-load \"%s\": use snapshot, chunked or none", arg);
			opts.no_load = strcmp(arg, "none") == 0;
			opts.chunked_load = strcmp(arg, "chunked") == 0;
			break;
		case OPT_COMPRESSION:
			if (strcmp(arg, "gzip") != 0 && strcmp(arg, "none") != 0)
				usage_error("invalid --compression \"%s\": use gzip or none", arg);
			opts.gzip = strcmp(arg, "gzip") == 0;
			break;
		case OPT_METRICS_ADDRESS:
			set_metrics_address(arg);
			break;
		case OPT_LOG_FORMAT:
			set_log_format(arg);
			break;
		case OPT_KINESIS_PROTOCOL:
			if (strcmp(arg, "json") != 0 && strcmp(arg, "cbor") != 0)
				usage_error("invalid --kinesis-protocol \"%s\": use json or cbor", arg);
			opts.kinesis_cbor = strcmp(arg, "cbor") == 0;
			break;
		default:
			if (opts.log_json && optopt != 0)
				log_error("invalid option or missing argument -- '%c'", optopt);
			else if (opts.log_json)
				log_error("unrecognized option or missing argument '%s'", argv[optind - 1]);
			log_error_hint("Try \"%s --help\" for more information.", progname);
			exit(2);
	}
}

/*
 * --log-format first, so that every message, usage errors too, has it;
 * then --help and --version, as the first argument, like PostgreSQL's
 * tools.
 */
static void
early_options(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
	{
		const char *v = NULL;

		if (strcmp(argv[i], "--log-format") == 0 && i + 1 < argc)
			v = argv[i + 1];
		else if (strncmp(argv[i], "--log-format=", 13) == 0)
			v = argv[i] + 13;
		else if (strcmp(argv[i], "--") == 0)
			break;
		if (v != NULL && strcmp(v, "json") == 0)
		{
			opts.log_json = true;
			log_set_format(LOG_FORMAT_JSON, progname);
		}
	}
	if (argc > 1)
	{
		if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-?") == 0)
		{
			usage();
			exit(0);
		}
		if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)
		{
			printf("fundrecs_shipper (fundrecs) " FUNDRECS_SHIPPER_VERSION "\n");
			exit(0);
		}
	}
}

/* The slot's options: what --resync, --startpos and friends allow together. */
static void
check_slot_options(void)
{
	if (opts.slot == NULL)
		usage_error("%s", "no slot specified");
	if (opts.dbname == NULL && getenv("PGDATABASE") == NULL)
		usage_error("%s", "no database specified");
	if (opts.if_not_exists && !opts.create_slot && !opts.resync)
		usage_error("%s", "--if-not-exists requires --create-slot");
	if (opts.resync && opts.no_load)
		usage_error("%s", "--resync ships a new initial load: it cannot be used with --no-load or --initial-load=none");
	if (opts.no_load)
		opts.chunked_load = false;
	if (opts.resync && opts.startpos != 0)
		usage_error("%s", "--resync starts at the new slot's consistent point: it cannot be used with --startpos");
	if (opts.enable_failover && !opts.create_slot && !opts.resync)
		usage_error("%s", "--enable-failover requires --create-slot or --resync");

	/*
	 * --resync creates the slot when it is missing or invalidated (dropping
	 * the one there), and uses it when it is there with its load finished.
	 */
	if (opts.resync)
		opts.create_slot = true;
	if (opts.startpos != 0 && opts.endpos != 0 && opts.endpos < opts.startpos)
		usage_error("%s", "--endpos must not be before --startpos");
}

/* Plugin options the shipper depends on, and --pack-bytes passed on. */
static void
check_plugin_options(void)
{
	for (int i = 0; i < opts.noptions; i++)
	{
		bool		b;

		if (strcmp(opts.plugin_options[2 * i], "include_lsn") == 0 &&
			parse_bool_value(opts.plugin_options[2 * i + 1], &b) && !b)
			usage_error("%s", "the shipper needs the plugin option include_lsn (do not set it to false)");
		if (strcmp(opts.plugin_options[2 * i], "pack_bytes") == 0)
			usage_error("%s", "use --pack-bytes rather than the plugin option pack_bytes");
	}
	if (opts.pack_bytes != 0 && opts.pack_bytes < 1024)
		usage_error("%s", "--pack-bytes must be 0 or from 1024 to 67108864");

	/*
	 * Rows packed into messages: the plugin writes them, the shipper splits
	 * them.
	 */
	if (opts.pack_bytes > 0)
	{
		char		arg[64];

		snprintf(arg, sizeof(arg), "pack_bytes=%d", opts.pack_bytes);
		add_plugin_option(arg);
	}
}

void
check_options(void)
{
	/* Only the AWS settings matter to --check-credentials. */
	if (opts.check_credentials)
		return;
	check_slot_options();
	check_plugin_options();
}

void
parse_options(int argc, char **argv)
{
	int			c;
	int			option_index;

	pg_logging_init(argv[0]);
	progname = get_progname(argv[0]);
	early_options(argc, argv);

	/* In JSON, getopt's own complaints are ours to write (see set_other). */
	if (opts.log_json)
		opterr = 0;
	while ((c = getopt_long(argc, argv, "d:h:p:U:wWS:o:I:E:ns:vqV?",
							long_options, &option_index)) != -1)
	{
		if (!set_from_tables(c, optarg))
			set_other(c, optarg, argv);
	}
	if (optind < argc)
		usage_error("too many command-line arguments (first is \"%s\")", argv[optind]);
}
