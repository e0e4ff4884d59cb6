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

#include "log.h"
#include "common/string.h"
#include "getopt_long.h"
#include "kinesis.h"
#include "options.h"
#include "rowscan.h"

const char *progname;

ShipperOptions opts = {
	.status_interval = 10,
	.ship_kinesis = true,
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
	printf("      --resync             (re)create the slot and ship a reset marker row, then\n"
		   "                           every row as a new initial load (after a failover that\n"
		   "                           lost the slot, or an invalidated slot)\n");
	printf("      --no-load            do not ship the rows that exist when the slot is created\n");
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
		   "                           /healthz fails when rows are pending and nothing was\n"
		   "                           delivered for this long (default: %d)\n", opts.health_max_lag);
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
		   "will not cure (a missing stream or bucket, access denied, a lost slot).\n");
}

static void
usage_error(const char *fmt, const char *arg)
{
	log_error(fmt, arg);
	log_error_hint("Try \"%s --help\" for more information.", progname);
	exit(2);
}

static long
parse_long(const char *name, const char *value, long min, long max)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno != 0 || *value == '\0' || *end != '\0' || v < min || v > max)
	{
		log_error("invalid value \"%s\" for option %s", value, name);
		log_error_detail("It must be an integer from %ld to %ld.", min, max);
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

void
parse_options(int argc, char **argv)
{
	static struct option long_options[] = {
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
		{"create-slot", no_argument, NULL, 1},
		{"if-not-exists", no_argument, NULL, 2},
		{"target", required_argument, NULL, 3},
		{"stream", required_argument, NULL, 4},
		{"stream-arn", required_argument, NULL, 5},
		{"region", required_argument, NULL, 6},
		{"endpoint-url", required_argument, NULL, 7},
		{"ca-file", required_argument, NULL, 8},
		{"batch-records", required_argument, NULL, 9},
		{"batch-bytes", required_argument, NULL, 10},
		{"linger-ms", required_argument, NULL, 11},
		{"max-buffer-bytes", required_argument, NULL, 12},
		{"request-timeout", required_argument, NULL, 13},
		{"retry-timeout", required_argument, NULL, 14},
		{"no-load", no_argument, NULL, 15},
		{"s3-url", required_argument, NULL, 16},
		{"s3-endpoint-url", required_argument, NULL, 17},
		{"s3-addressing", required_argument, NULL, 18},
		{"compression", required_argument, NULL, 19},
		{"flush-bytes", required_argument, NULL, 20},
		{"flush-seconds", required_argument, NULL, 21},
		{"shutdown-timeout", required_argument, NULL, 22},
		{"allow-no-tables", no_argument, NULL, 23},
		{"aggregate", no_argument, NULL, 24},
		{"max-in-flight", required_argument, NULL, 26},
		{"aggregate-bytes", required_argument, NULL, 25},
		{"max-retained-wal", required_argument, NULL, 27},
		{"metrics-address", required_argument, NULL, 28},
		{"health-max-lag", required_argument, NULL, 29},
		{"heartbeat", required_argument, NULL, 30},
		{"log-format", required_argument, NULL, 31},
		{"check-credentials", no_argument, NULL, 32},
		{"pack-bytes", required_argument, NULL, 33},
		{"resync", no_argument, NULL, 34},
		{"enable-failover", no_argument, NULL, 35},
		{NULL, 0, NULL, 0}
	};
	int			c;
	int			option_index;

	pg_logging_init(argv[0]);
	progname = get_progname(argv[0]);

	/* --log-format first, so that every message, usage errors too, has it. */
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

	/* In JSON, getopt's own complaints are ours to write (see default:). */
	if (opts.log_json)
		opterr = 0;

	while ((c = getopt_long(argc, argv, "d:h:p:U:wWS:o:I:E:ns:vqV?",
							long_options, &option_index)) != -1)
	{
		switch (c)
		{
			case 'd':
				opts.dbname = pg_strdup(optarg);
				break;
			case 'h':
				opts.host = pg_strdup(optarg);
				break;
			case 'p':
				parse_long("-p/--port", optarg, 1, 65535);
				opts.port = pg_strdup(optarg);
				break;
			case 'U':
				opts.user = pg_strdup(optarg);
				break;
			case 'w':
				opts.prompt_password = -1;
				break;
			case 'W':
				opts.prompt_password = 1;
				break;
			case 'S':
				opts.slot = pg_strdup(optarg);
				break;
			case 'o':
				add_plugin_option(optarg);
				break;
			case 'I':
				opts.startpos = parse_lsn_option("start", optarg);
				break;
			case 'E':
				opts.endpos = parse_lsn_option("end", optarg);
				break;
			case 'n':
				opts.no_loop = true;
				break;
			case 's':
				opts.status_interval = (int) parse_long("-s/--status-interval", optarg, 0, INT_MAX / 1000);
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
			case 1:
				opts.create_slot = true;
				break;
			case 2:
				opts.if_not_exists = true;
				break;
			case 3:
				if (strcmp(optarg, "kinesis") == 0)
					opts.ship_kinesis = true, opts.ship_s3 = false, opts.ship_stdout = false;
				else if (strcmp(optarg, "s3") == 0)
					opts.ship_kinesis = false, opts.ship_s3 = true, opts.ship_stdout = false;
				else if (strcmp(optarg, "kinesis,s3") == 0 || strcmp(optarg, "s3,kinesis") == 0)
					opts.ship_kinesis = true, opts.ship_s3 = true, opts.ship_stdout = false;
				else if (strcmp(optarg, "stdout") == 0)
					opts.ship_kinesis = false, opts.ship_s3 = false, opts.ship_stdout = true;
				else
					usage_error("invalid target \"%s\": use kinesis, s3, kinesis,s3 or stdout", optarg);
				break;
			case 4:
				opts.stream = pg_strdup(optarg);
				break;
			case 5:
				opts.stream_arn = pg_strdup(optarg);
				break;
			case 6:
				opts.region = pg_strdup(optarg);
				break;
			case 7:
				opts.endpoint = pg_strdup(optarg);
				break;
			case 8:
				opts.ca_file = pg_strdup(optarg);
				break;
			case 9:
				opts.batch_records = (int) parse_long("--batch-records", optarg, 1, KINESIS_MAX_RECORDS);
				break;
			case 10:
				opts.batch_bytes = parse_long("--batch-bytes", optarg, 1, KINESIS_MAX_REQUEST_BYTES);
				break;
			case 11:
				opts.linger_ms = (int) parse_long("--linger-ms", optarg, 0, 3600 * 1000);
				break;
			case 12:
				opts.max_buffer_bytes = parse_long("--max-buffer-bytes", optarg, 1024, LONG_MAX);
				break;
			case 13:
				opts.request_timeout_ms = (int) parse_long("--request-timeout", optarg, 100, 3600 * 1000);
				break;
			case 14:
				opts.retry_timeout = (int) parse_long("--retry-timeout", optarg, 0, INT_MAX);
				break;
			case 15:
				opts.no_load = true;
				break;
			case 16:
				opts.s3_url = pg_strdup(optarg);
				break;
			case 17:
				opts.s3_endpoint = pg_strdup(optarg);
				break;
			case 18:
				if (strcmp(optarg, "path") != 0 && strcmp(optarg, "virtual") != 0)
					usage_error("invalid --s3-addressing \"%s\": use path or virtual", optarg);
				opts.s3_addressing = pg_strdup(optarg);
				break;
			case 19:
				if (strcmp(optarg, "gzip") == 0)
					opts.gzip = true;
				else if (strcmp(optarg, "none") == 0)
					opts.gzip = false;
				else
					usage_error("invalid --compression \"%s\": use gzip or none", optarg);
				break;
			case 20:
				opts.flush_bytes = parse_long("--flush-bytes", optarg, 1024, 1024L * 1024 * 1024);
				break;
			case 21:
				opts.flush_seconds = (int) parse_long("--flush-seconds", optarg, 1, 24 * 3600);
				break;
			case 22:
				opts.shutdown_timeout = (int) parse_long("--shutdown-timeout", optarg, 0, 24 * 3600);
				break;
			case 23:
				opts.allow_no_tables = true;
				break;
			case 24:
				opts.aggregate = true;
				break;
			case 27:
				opts.max_retained_wal = parse_long("--max-retained-wal", optarg, 1, LONG_MAX);
				break;
			case 28:
				{
					const char *colon = strrchr(optarg, ':');

					if (colon == NULL || colon == optarg || colon[1] == '\0' ||
						strspn(colon + 1, "0123456789") != strlen(colon + 1) || atol(colon + 1) > 65535)
						usage_error("invalid --metrics-address \"%s\": use HOST:PORT, e.g. 127.0.0.1:9187", optarg);
					opts.metrics_address = pg_strdup(optarg);
				}
				break;
			case 29:
				opts.health_max_lag = (int) parse_long("--health-max-lag", optarg, 1, 24 * 3600);
				break;
			case 30:
				opts.heartbeat = (int) parse_long("--heartbeat", optarg, 1, 24 * 3600);
				break;
			case 32:
				opts.check_credentials = true;
				break;
			case 33:
				opts.pack_bytes = (int) parse_long("--pack-bytes", optarg, 0, 64L * 1024 * 1024);
				if (opts.pack_bytes != 0 && opts.pack_bytes < 1024)
					usage_error("%s", "--pack-bytes must be 0 or from 1024 to 67108864");
				break;
			case 31:
				if (strcmp(optarg, "json") == 0)
					opts.log_json = true;
				else if (strcmp(optarg, "text") == 0)
					opts.log_json = false;
				else
					usage_error("invalid --log-format \"%s\": use text or json", optarg);
				log_set_format(opts.log_json ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT, progname);
				break;
			case 26:
				opts.max_in_flight = (int) parse_long("--max-in-flight", optarg, 1, KINESIS_MAX_IN_FLIGHT);
				break;
			case 34:
				opts.resync = true;
				break;
			case 35:
				opts.enable_failover = true;
				break;
			case 25:
				opts.aggregate_bytes = parse_long("--aggregate-bytes", optarg, 1024,
												 KINESIS_MAX_RECORD_BYTES - KINESIS_MAX_KEY_CHARS);
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

	if (optind < argc)
		usage_error("too many command-line arguments (first is \"%s\")", argv[optind]);
	/* Only the AWS settings matter to --check-credentials. */
	if (opts.check_credentials)
		return;
	if (opts.slot == NULL)
		usage_error("%s", "no slot specified");
	if (opts.dbname == NULL && getenv("PGDATABASE") == NULL)
		usage_error("%s", "no database specified");
	if (opts.if_not_exists && !opts.create_slot)
		usage_error("%s", "--if-not-exists requires --create-slot");
	if (opts.resync && opts.no_load)
		usage_error("%s", "--resync ships a new initial load: it cannot be used with --no-load");
	if (opts.resync && opts.startpos != 0)
		usage_error("%s", "--resync starts at the new slot's consistent point: it cannot be used with --startpos");
	if (opts.resync && opts.if_not_exists)
		usage_error("%s", "--resync always creates the slot: it cannot be used with --if-not-exists");
	if (opts.enable_failover && !opts.create_slot && !opts.resync)
		usage_error("%s", "--enable-failover requires --create-slot or --resync");
	/* --resync creates the slot (dropping the one there, if any). */
	if (opts.resync)
		opts.create_slot = true;
	if (opts.startpos != 0 && opts.endpos != 0 && opts.endpos < opts.startpos)
		usage_error("%s", "--endpos must not be before --startpos");
	for (int i = 0; i < opts.noptions; i++)
	{
		bool		b;

		if (strcmp(opts.plugin_options[2 * i], "include_lsn") == 0 &&
			parse_bool_value(opts.plugin_options[2 * i + 1], &b) && !b)
			usage_error("%s", "the shipper needs the plugin option include_lsn (do not set it to false)");
		if (strcmp(opts.plugin_options[2 * i], "pack_bytes") == 0)
			usage_error("%s", "use --pack-bytes rather than the plugin option pack_bytes");
	}
	/* Rows packed into messages: the plugin writes them, the shipper splits them. */
	if (opts.pack_bytes > 0)
	{
		char		arg[64];

		snprintf(arg, sizeof(arg), "pack_bytes=%d", opts.pack_bytes);
		add_plugin_option(arg);
	}

	if (opts.aggregate && !opts.ship_kinesis)
		usage_error("%s", "--aggregate is for --target kinesis");
	if (opts.ship_kinesis || opts.ship_s3)
	{
		if (opts.ship_kinesis && opts.stream == NULL && opts.stream_arn == NULL)
			usage_error("%s", "no stream specified: use --stream or --stream-arn");
		if (opts.stream != NULL && opts.stream_arn != NULL)
			usage_error("%s", "--stream and --stream-arn cannot be used together");
		if (!opts.ship_kinesis && (opts.stream || opts.stream_arn))
			usage_error("%s", "--stream and --stream-arn are for --target kinesis");
		if (opts.ship_s3 && opts.s3_url == NULL)
			usage_error("%s", "no S3 location specified: use --s3-url s3://BUCKET/PREFIX");
		if (!opts.ship_s3 && (opts.s3_url || opts.s3_endpoint || opts.s3_addressing))
			usage_error("%s", "--s3-url, --s3-endpoint-url and --s3-addressing are for --target s3");
	}
	else if (opts.stream || opts.stream_arn || opts.endpoint || opts.s3_url)
		usage_error("%s", "--stream, --stream-arn, --endpoint-url and --s3-url are not for --target stdout");
}
