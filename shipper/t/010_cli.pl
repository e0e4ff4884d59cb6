# Command line, configuration and error handling of fundrecs_shipper.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

needs(qw(shipper kinesalite kinesis-local node boto3));

my %env = shipper_env();

# --help and --version, like PostgreSQL's tools.
program_help_ok('fundrecs_shipper');
program_version_ok('fundrecs_shipper');
my ($rc, $out, $err) = run_shipper(\%env, '--help');
is($rc, 0, '--help exits 0');
like($out, qr/^Usage:\n  fundrecs_shipper -d CONNSTR -S SLOT --stream NAME/m, '--help shows usage');
foreach my $opt (qw(--dbname --slot --create-slot --if-not-exists --no-load --resync --enable-failover --option --startpos --endpos
	--no-loop --status-interval --target --stream --stream-arn --region --endpoint-url --ca-file
	--batch-records --batch-bytes --linger-ms --max-buffer-bytes --s3-url --s3-endpoint-url
	--s3-addressing --compression --flush-bytes --flush-seconds --verbose --quiet --version))
{
	like($out, qr/\Q$opt\E/, "--help documents $opt");
}

# Usage errors: one line, a hint, exit code 2.
my @usage = (
	[ [ '--bogus' ], qr/unrecognized option|invalid option/, 'unknown flag' ],
	[ [ '-d', 'postgres' ], qr/no slot specified/, 'missing slot' ],
	[ [ '-d', 'postgres', '-S', 's' ], qr/no stream specified/, 'missing stream' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--stream-arn', 'b' ],
		qr/cannot be used together/, 'stream and stream-arn' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--resync', '--no-load' ],
		qr/--resync ships a new initial load: it cannot be used with --no-load/, 'resync without a load' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--resync', '-I', '0/10' ],
		qr/--resync starts at the new slot's consistent point/, 'resync with a start position' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--enable-failover' ],
		qr/--enable-failover requires --create-slot or --resync/, 'failover without creating' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--batch-records', '501' ],
		qr/--batch-records must be in range 1\.\.500/, 'batch over 500 records' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--batch-bytes', '6000000' ],
		qr/--batch-bytes must be in range 1\.\.5242880/, 'batch over 5 MiB' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--linger-ms', 'soon' ],
		qr/invalid value "soon" for option --linger-ms/, 'non-numeric linger' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '-E', 'nonsense' ],
		qr/could not parse end location "nonsense"/, 'bad end LSN' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '-o', 'include_lsn=false' ],
		qr/needs the plugin option include_lsn/, 'include_lsn=false refused' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '-o', 'novalue' ],
		qr/invalid plugin option "novalue"/, 'plugin option without a value' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 'kafka' ], qr/invalid target "kafka"/, 'unknown target' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 'kinesis,kafka', '--stream', 'x' ],
		qr/invalid target "kinesis,kafka": use stdout, kinesis or s3/, 'an unknown target in a list' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 'kinesis,kinesis', '--stream', 'x' ],
		qr/invalid target "kinesis,kinesis": a target is named twice/, 'a target named twice' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 'stdout,s3', '--s3-url', 's3://b/p' ],
		qr/stdout cannot be combined with other targets/, 'stdout with another target' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', ',' ], qr/invalid target ",": name one/, 'no target named' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 's3,kinesis', '--s3-url', 's3://b/p' ],
		qr/no stream specified/, 'both targets, in either order, need their settings' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 'stdout', '--stream', 'x' ],
		qr/--stream, --stream-arn, --endpoint-url and --s3-url are not for --target stdout/, 'stream with stdout' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 's3' ], qr/no S3 location specified/, 's3 without --s3-url' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 's3', '--s3-url', 's3://b/p', '--compression', 'zstd' ],
		qr/invalid --compression "zstd": use gzip or none/, 'unknown compression' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 's3', '--s3-url', 's3://b/p', '--s3-addressing', 'dns' ],
		qr/invalid --s3-addressing "dns": use path or virtual/, 'unknown addressing' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 's3', '--s3-url', 's3://b/p', '--flush-seconds', '0' ],
		qr/--flush-seconds must be in range 1\.\.86400/, 'zero flush interval' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--s3-url', 's3://b/p' ],
		qr/--s3-url, --s3-endpoint-url and --s3-addressing are for --target s3/, 's3 options without the s3 target' ],
	[ [ '-d', 'postgres', '-S', 's', '--if-not-exists', '--target', 'stdout' ],
		qr/--if-not-exists requires --create-slot/, 'if-not-exists alone' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 'stdout', 'extra' ],
		qr/too many command-line arguments/, 'extra argument' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 'stdout', '--aggregate' ],
		qr/--aggregate is for --target kinesis/, 'aggregate without Kinesis' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--max-in-flight', '0' ],
		qr/--max-in-flight must be in range 1\.\.\d+/, 'no call in flight' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--aggregate-bytes', '2000000' ],
		qr/--aggregate-bytes must be in range 1024\.\.\d+/, 'aggregate over 1 MiB' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--kinesis-protocol', 'xml' ],
		qr/invalid --kinesis-protocol "xml": use json or cbor/, 'unknown Kinesis protocol' ],
	[ [ '-d', 'postgres', '-S', 's', '--target', 'stdout', '--kinesis-protocol', 'cbor' ],
		qr/--kinesis-protocol is for --target kinesis/, 'Kinesis protocol without Kinesis' ],
	[ [ '-d', 'postgres', '-S', 's', '--stream', 'a', '--shutdown-timeout', '-1' ],
		qr/--shutdown-timeout must be in range 0\.\.86400/, 'negative shutdown timeout' ],
);
foreach my $u (@usage)
{
	my ($args, $re, $name) = @$u;
	($rc, $out, $err) = run_shipper(\%env, @$args);
	is($rc, 2, "$name: exit code 2");
	like($err, $re, "$name: message");
	like($err, qr/Try "fundrecs_shipper --help"/, "$name: hint");
}

# Credentials and region: configuration errors, exit 2, no secret printed.
($rc, $out, $err) = run_shipper({ %env, AWS_ACCESS_KEY_ID => undef, AWS_SECRET_ACCESS_KEY => undef },
	'-d', 'postgres', '-S', 's', '--stream', 'a');
is($rc, 2, 'missing credentials: exit code 2');
like($err, qr/no AWS credentials found/, 'missing credentials: message');
($rc, $out, $err) = run_shipper({ %env, AWS_ACCESS_KEY_ID => undef },
	'-d', 'postgres', '-S', 's', '--stream', 'a');
is($rc, 2, 'half the key pair: exit code 2');
like($err, qr/AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not/, 'half the key pair: message');
unlike($err, qr/\Q$SECRET_KEY\E/, 'the secret is not printed');
($rc, $out, $err) = run_shipper({ %env, AWS_ACCESS_KEY_ID => undef, AWS_SECRET_ACCESS_KEY => undef,
	AWS_PROFILE => 'nosuch' }, '-d', 'postgres', '-S', 's', '--stream', 'a');
is($rc, 2, 'unknown profile: exit code 2');
like($err, qr/AWS profile "nosuch" was not found/, 'unknown profile: message');
($rc, $out, $err) = run_shipper({ %env, AWS_REGION => undef, AWS_DEFAULT_REGION => undef },
	'-d', 'postgres', '-S', 's', '--stream', 'a');
is($rc, 2, 'missing region: exit code 2');
like($err, qr/no AWS region specified/, 'missing region: message');

# A real server and emulators for the runtime errors.
my $node = new_cluster('cli');
my $connstr = $node->connstr('postgres');
my ($kport) = start_kinesalite();
my ($pport) = start_proxy($kport);
kinesis_tool($kport, 'create', 'cli_stream', 1);
my @kin = ('--endpoint-url', "http://127.0.0.1:$pport", '--stream', 'cli_stream');

($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 's', '--endpoint-url',
	"http://127.0.0.1:$pport", '--stream', 'no_such_stream');
is($rc, 3, 'unknown stream: exit code 3 (permanent)');
like($err, qr/Kinesis stream "no_such_stream" does not exist/, 'unknown stream: message');

my $dead = PostgreSQL::Test::Cluster::get_free_port();
my $t0 = time();
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 's', '--endpoint-url',
	"http://127.0.0.1:$dead", '--stream', 'x', '--retry-timeout', '2');
is($rc, 1, 'unreachable endpoint: exit code 1');
like($err, qr/could not reach http:\/\/127\.0\.0\.1:$dead.*retrying/s, 'unreachable endpoint: retried');
like($err, qr/giving up on stream "x" after \d+ attempts in 2 s/, 'unreachable endpoint: gave up');

# Wrong secret: the signature-checking endpoint refuses it, not retried;
# keys from the environment will not change by starting again: exit 3.
($rc, $out, $err) = run_shipper({ %env, AWS_SECRET_ACCESS_KEY => 'wrong-secret' }, '-d', $connstr,
	'-S', 's', @kin);
is($rc, 3, 'bad signature: exit code 3 (static keys: permanent)');
like($err, qr/InvalidSignatureException/, 'bad signature: the service error is shown');
unlike($err, qr/wrong-secret/, 'bad signature: the secret is not printed');
($rc, $out, $err) = run_shipper({ %env, AWS_ACCESS_KEY_ID => 'AKIDUNKNOWN' }, '-d', $connstr,
	'-S', 's', @kin);
is($rc, 3, 'unknown key: exit code 3 (static keys: permanent)');
like($err, qr/Check the AWS credentials \(from env/, 'unknown key: the hint names the source');

# Credentials from a profile in the shared credentials file.
my $credfile = "$PostgreSQL::Test::Utils::tmp_check/credentials";
my $conffile = "$PostgreSQL::Test::Utils::tmp_check/config";
append_to_file($credfile, "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n"
	  . "[ci]\naws_access_key_id = $ACCESS_KEY\naws_secret_access_key = $SECRET_KEY\n");
append_to_file($conffile, "[profile ci]\nregion = $REGION\n");

# Slot errors.
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'no_such_slot', @kin, '--no-loop');
is($rc, 3, 'missing slot: exit code 3 (permanent)');
like($err, qr/could not start streaming from slot "no_such_slot".*does not exist/s, 'missing slot: message');
like($err, qr/hint: Check the slot's name \(-S.*or add --create-slot/, 'missing slot: hint');

$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('cli_slot', 'fundrecs_decoder')");
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'cli_slot', @kin, '-o', 'tables=nodot');
is($rc, 2, 'bad plugin option: a configuration error, exit code 2');
like($err, qr/invalid value "nodot" for option "tables"/, 'bad plugin option: the plugin\'s error');

($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'cli_slot', '--create-slot', @kin);
is($rc, 1, 'create an existing slot: exit code 1');
like($err, qr/could not create replication slot "cli_slot".*already exists/s, 'create an existing slot: message');

# --target stdout with --endpos: exactly the plugin's rows, then exit 0.
$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 101, 2), (3, 104, 1);
INSERT INTO fundrecs_schema.customers VALUES (101, 'John Doe', 'New York');
UPDATE fundrecs_schema.orders SET quantity = 5 WHERE order_id = 1;
});
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $want = join("\n", @{ plugin_rows($node, 'cli_slot') }) . "\n";
# A transaction after --endpos is neither shipped nor confirmed.
$node->safe_psql('postgres', "INSERT INTO fundrecs_schema.customers VALUES (102, 'Jane Smith', 'San Francisco')");
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'cli_slot', '--target', 'stdout',
	'-E', $end, '--if-not-exists', '--create-slot');
is($rc, 0, 'stdout target: exit code 0 at --endpos');
is($out, $want, 'stdout target: the plugin\'s rows up to --endpos, one per line');
my $confirmed = $node->safe_psql('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'cli_slot'");
is($confirmed, 't', '--endpos is confirmed to the server');
my $left_after = plugin_rows($node, 'cli_slot');
is(scalar @$left_after, 1, 'only the transaction after --endpos is left in the slot');
like($left_after->[0], qr/Jane Smith/, 'and it is that one');

# Kinesis through a profile from the shared credentials file.
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
($rc, $out, $err) = run_shipper({ %env, AWS_ACCESS_KEY_ID => undef, AWS_SECRET_ACCESS_KEY => undef,
	AWS_REGION => undef, AWS_DEFAULT_REGION => undef, AWS_PROFILE => 'ci',
	AWS_SHARED_CREDENTIALS_FILE => $credfile, AWS_CONFIG_FILE => $conffile },
	'-d', $connstr, '-S', 'cli_slot', @kin, '-E', $end, '-v');
is($rc, 0, 'profile credentials: exit code 0');
like($err, qr/AWS credentials from shared-credentials-file \(profile "ci" in \Q$credfile\E\): access key \*{16}TEST/,
	'profile credentials: used, the access key masked');
like($err, qr/Kinesis: region $REGION/, 'profile credentials: the profile\'s region');
unlike($err, qr/\Q$SECRET_KEY\E/, 'profile credentials: the secret is not printed');
my $recs = read_stream($kport, 'cli_stream', 1);
is(scalar @$recs, 1, 'profile credentials: the row arrived');
is($recs->[0]{row}{data}{customer_name}, 'Jane Smith', 'profile credentials: the right row');
is(proxy_stats($pport)->{mismatches}, 2, 'only the wrong-secret and unknown-key calls failed the signature check');

# A row over Kinesis's 1 MiB limit: fatal, naming LSN and table; nothing confirmed past it.
$node->safe_psql('postgres', q{
CREATE TABLE fundrecs_schema.blobs (id int PRIMARY KEY, body text);
INSERT INTO fundrecs_schema.customers VALUES (103, 'Emily Johnson', 'Los Angeles');
});
my $before = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$node->safe_psql('postgres', "INSERT INTO fundrecs_schema.blobs SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 40000) g");
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'cli_slot', @kin, '--no-loop');
is($rc, 1, 'oversize row: exit code 1');
like($err, qr/row at [0-9A-F]+\/[0-9A-F]+ of table fundrecs_schema\.blobs is \d+ bytes, over Kinesis's limit/,
	'oversize row: names LSN and table');
like($err, qr/exclude_columns=fundrecs_schema\.blobs\.COLUMN/, 'oversize row: the hint offers exclude_columns');
like($err, qr/--target s3 has no per-row limit/, 'oversize row: the hint offers S3');
my $left = plugin_rows($node, 'cli_slot');
is(scalar @$left, 1, 'oversize row: the earlier row was confirmed, the big one was not');
like($left->[0], qr/"table":"blobs"/, 'oversize row: it is still in the slot');
# The remedy the hint names works: the row ships without the large column.
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'cli_slot', '--target', 'stdout', '-E', $end,
	'-o', 'exclude_columns=fundrecs_schema.blobs.body');
is($rc, 0, 'oversize row, exclude_columns: exit code 0');
like($out, qr/"table":"blobs".*"data":\{"id":1\}\}$/m, 'oversize row, exclude_columns: shipped without the column');

# TLS: peer verification is on; kinesis-mock's self-signed certificate is refused.
my ($mplain, $mtls) = start_kinesis_mock();
$t0 = time();
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'cli_slot', '--endpoint-url',
	"https://127.0.0.1:$mtls", '--stream', 'x', '--retry-timeout', '60');
is($rc, 1, 'unverifiable TLS certificate: exit code 1');
like($err, qr/could not connect to https:\/\/127\.0\.0\.1:$mtls: .*certificate/i, 'unverifiable TLS certificate: message');
like($err, qr/--ca-file/, 'unverifiable TLS certificate: hint');
cmp_ok(time() - $t0, '<', 30, 'unverifiable TLS certificate: not retried for the whole retry timeout');

# The man page lists exactly the options of --help (doc/fundrecs_shipper.1).
{
	my ($hrc, $help) = run_shipper(\%env, '--help');
	my %in_help = map { $_ => 1 } ($help =~ /^\s+(?:-\S, )?(--[a-z0-9-]+)/mg);
	open(my $fh, '<', "$ENV{TESTDIR}/../doc/fundrecs_shipper.1") or die "man page: $!";
	my $man = do { local $/; <$fh> };
	close($fh);
	my %in_man;
	for my $line (split /\n/, $man)
	{
		# the option lines: .TP followed by .B/.BR naming the option
		next unless $line =~ /^\.BR? /;
		(my $plain = $line) =~ s/\\-/-/g;
		$in_man{$1} = 1 while $plain =~ /(?<![\w-])(--[a-z0-9-]+)(?=[\s"=]|$)/g;
	}
	# Options named in running text (.BR lines of ENVIRONMENT) are still options.
	my @help_only = grep { !$in_man{$_} } sort keys %in_help;
	my @man_only = grep { !$in_help{$_} } sort keys %in_man;
	cmp_ok(scalar(keys %in_help), '>=', 40, 'options found in --help');
	is_deeply(\@help_only, [], 'every --help option is in the man page');
	is_deeply(\@man_only, [], 'the man page has no option --help lacks');
}

done_testing();
