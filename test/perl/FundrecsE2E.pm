
# Helpers of the shipper's TAP tests: a PostgreSQL cluster with the fundrecs
# extension and the seed schema, Kinesis emulators from npm (kinesalite,
# kinesis-local), the botocore signature-checking endpoint in front of them,
# and boto3 to create and read streams.

package FundrecsE2E;

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use Exporter 'import';
our @EXPORT = qw(
	start_aws_mock botocore_credentials
  new_cluster start_kinesalite start_kinesis_mock start_s3rver start_proxy proxy_stats
  athena_figures
  kinesis_tool read_stream read_deaggregated shipper_env run_shipper start_shipper wait_for_port
  needs missing plugin_rows plugin_libraries_conf $ACCESS_KEY $SECRET_KEY $REGION $E2E_DIR $SHIPPER
  $PYTHON libfaketime json_decoders
);

# The shipper under test: FUNDRECS_SHIPPER (make check-asan points it at
# the sanitizer build), else the installed one: on PATH (PGXS puts the
# server's bindir first), else beside another pg_config on PATH (one build
# serves every server major; a toolchain of scripts/pg-toolchain.sh has
# none of its own).
our $SHIPPER = $ENV{FUNDRECS_SHIPPER} // find_shipper();

sub find_shipper
{
	my @path = split(/:/, $ENV{PATH} // '');
	foreach my $dir (@path)
	{
		return "$dir/fundrecs_shipper" if -x "$dir/fundrecs_shipper";
	}
	foreach my $dir (@path)
	{
		next unless -x "$dir/pg_config";
		my $bindir = `'$dir/pg_config' --bindir 2>/dev/null`;
		chomp $bindir;
		return "$bindir/fundrecs_shipper" if $bindir && -x "$bindir/fundrecs_shipper";
	}
	return 'fundrecs_shipper';
}
our $ACCESS_KEY = 'AKIDFUNDRECSTEST';
our $SECRET_KEY = 'fundrecs/test/secret';
our $REGION = 'us-east-1';
our $E2E_DIR = abs_path(dirname(__FILE__) . '/../e2e');
our $PYTHON = '/usr/bin/python3';
my @children;

# Stop the emulators and shippers still running; keep the test's exit code.
END
{
	my $rc = $?;
	foreach my $h (@children)
	{
		eval { $h->kill_kill(grace => 2) if $h->pumpable; };
	}
	$? = $rc;
}

# A running cluster with wal_level=logical, the plugin allowed, the extension,
# the seed's schema and products.
sub new_cluster
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	$node->append_conf('postgresql.conf', plugin_libraries_conf() . qq{
max_replication_slots = 10
wal_sender_timeout = 60s
});
	$node->start;
	my $products = "$E2E_DIR/../data/product_details.json";
	$node->safe_psql('postgres', qq{
CREATE EXTENSION fundrecs;
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (order_id serial PRIMARY KEY, product_id int,
	customer_id int, quantity int, order_date timestamp DEFAULT current_timestamp);
CREATE TABLE fundrecs_schema.customers (customer_id int PRIMARY KEY,
	customer_name varchar(255), location varchar(255));
SELECT fundrecs.load_products_file('$products');
});
	return $node;
}

# Skips the whole test file, naming what is missing, unless every tool it
# needs is here: a contributor's "make installcheck" on a fresh clone passes
# with skips instead of dying at the first emulator.
my %NEEDS = (
	shipper => sub { -x $SHIPPER || grep { -x "$_/$SHIPPER" } split(/:/, $ENV{PATH} // '') },
	kinesalite => sub { -x "$E2E_DIR/node_modules/.bin/kinesalite" },
	'kinesis-local' => sub { -f "$E2E_DIR/node_modules/kinesis-local/main.js" },
	s3rver => sub { -x "$E2E_DIR/node_modules/.bin/s3rver" },
	duckdb => sub { -d "$E2E_DIR/node_modules/\@duckdb/node-api" },
	'aws-kinesis-agg' => sub { -d "$E2E_DIR/node_modules/aws-kinesis-agg" },
	node => sub { _on_path('node') },
	boto3 => sub { -x $PYTHON && system($PYTHON, '-c', 'import boto3, botocore') == 0 },
	'python3-cbor2' => sub { -x $PYTHON && system($PYTHON, '-c', 'import cbor2') == 0 },
	promtool => sub { _on_path('promtool') },
	faketime => sub { defined libfaketime() },);

# libfaketime's preload library (Debian's faketime package), or undef.
sub libfaketime
{
	my ($lib) = grep { -f } map { "$_/faketime/libfaketime.so.1" }
	  ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib');
	return $lib;
}

sub _on_path
{
	my ($cmd) = @_;
	return grep { -x "$_/$cmd" } split(/:/, $ENV{PATH} // '');
}

# The tools of a list that are not installed.
sub missing
{
	return grep {
		my $check = $NEEDS{$_} or die "missing: unknown tool $_";
		!$check->();
	} @_;
}

sub needs
{
	my @missing = missing(@_);
	plan skip_all => join(', ', @missing) . ' not installed (scripts/install-deps.sh)' if @missing;
	return;
}

# The line that allows the plugins where the server has the setting
# output_plugin_libraries (Debian's 15.19 and later); "" for builds that
# do not know it and would refuse to start with it.
sub plugin_libraries_conf
{
	my $conf = `postgres --describe-config 2>/dev/null`;
	return $conf =~ /^output_plugin_libraries\t/m
	  ? "output_plugin_libraries = 'pgoutput, test_decoding, fundrecs_decoder'\n"
	  : "";
}

sub wait_for_port
{
	my ($port, $what) = @_;
	for (1 .. 300)
	{
		return 1 if IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
		usleep(100_000);
	}
	die "$what did not listen on port $port";
}

sub _start
{
	my ($cmd, $log, %opt) = @_;
	my $h = IPC::Run::start($cmd, '<', \undef, '>', $log, '2>', $log, %opt);
	push @children, $h;
	return $h;
}

sub start_kinesalite
{
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $h = _start([ "$E2E_DIR/node_modules/.bin/kinesalite", '--port', $port,
		'--createStreamMs', '0', '--deleteStreamMs', '0', '--shardLimit', '100' ],
		"$PostgreSQL::Test::Utils::tmp_check/kinesalite_$port.log");
	wait_for_port($port, 'kinesalite');
	return ($port, $h);
}

# kinesis-mock reads server.json from its working directory.
sub start_kinesis_mock
{
	my $plain = PostgreSQL::Test::Cluster::get_free_port();
	my $tls = PostgreSQL::Test::Cluster::get_free_port();
	local $ENV{KINESIS_MOCK_PLAIN_PORT} = $plain;
	local $ENV{KINESIS_MOCK_TLS_PORT} = $tls;
	local $ENV{CREATE_STREAM_DURATION} = '0ms';
	my $h = _start([ 'node', 'main.js' ],
		"$PostgreSQL::Test::Utils::tmp_check/kinesis_mock_$plain.log",
		init => sub { chdir "$E2E_DIR/node_modules/kinesis-local" or die $!; });
	wait_for_port($plain, 'kinesis-mock');
	wait_for_port($tls, 'kinesis-mock (TLS)');
	return ($plain, $tls, $h);
}

# s3rver with a bucket; it keeps its objects in a directory of the test's.
sub start_s3rver
{
	my ($bucket) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/s3rver_$port";
	mkdir $dir;
	my $h = _start([ "$E2E_DIR/node_modules/.bin/s3rver", '-d', $dir, '-p', $port, '-a', '127.0.0.1',
		'--configure-bucket', $bucket, '--silent' ], "$dir.log");
	wait_for_port($port, 's3rver');
	return ($port, $h);
}

# The S3 objects read back with boto3, then queried with DuckDB through the
# SQL of the Athena views: a hash of figures.
sub athena_figures
{
	my ($s3port, $bucket, $prefix, $query) = @_;
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/download_" . int(rand(1e9));
	my ($out, $err);
	IPC::Run::run([ $PYTHON, "$E2E_DIR/s3_tool.py", '--endpoint', "http://127.0.0.1:$s3port",
		'download', '--hive-route', $bucket, $prefix, $dir ], '>', \$out, '2>', \$err)
	  or die "s3_tool download failed: $err";
	local $ENV{NODE_PATH} = "$E2E_DIR/node_modules";
	IPC::Run::run([ 'node', "$E2E_DIR/athena_duckdb.js", $dir, defined $query ? ($query) : () ],
		'>', \$out, '2>', \$err)
	  or die "athena_duckdb failed: $err";
	return decode_json($out);
}

# The signature-checking (and optionally fault-injecting) endpoint.
sub start_proxy
{
	my ($upstream_port, @extra) = @_;
	my $portfile = "$PostgreSQL::Test::Utils::tmp_check/proxy_" . int(rand(1e9)) . ".port";
	my $h = _start([ $PYTHON, "$E2E_DIR/sigcheck_proxy.py", '--upstream',
		"http://127.0.0.1:$upstream_port", '--access-key', $ACCESS_KEY,
		'--secret-key', $SECRET_KEY, '--region', $REGION, '--port-file', $portfile, @extra ],
		"$portfile.log");
	for (1 .. 300)
	{
		last if -s $portfile;
		usleep(100_000);
	}
	my $port = slurp_file($portfile);
	wait_for_port($port, 'sigcheck proxy');
	return ($port, $h);
}

sub proxy_stats
{
	my ($port) = @_;
	my $out = `curl -s http://127.0.0.1:$port/__stats`;
	return decode_json($out);
}

sub kinesis_tool
{
	my ($port, @args) = @_;
	my ($stdout, $stderr);
	my $ok = IPC::Run::run([ $PYTHON, "$E2E_DIR/kinesis_tool.py", '--endpoint',
		"http://127.0.0.1:$port", '--access-key', $ACCESS_KEY, '--secret-key', $SECRET_KEY, @args ],
		'>', \$stdout, '2>', \$stderr);
	die "kinesis_tool @args failed: $stderr" unless $ok;
	chomp $stdout;
	return $stdout;
}

# Every record of a stream, read back with boto3: a list of hashes
# {shard, seq, pk, data, row}.
sub read_stream
{
	my ($port, $stream, $min) = @_;
	my $out = kinesis_tool($port, 'read', $stream, '--min', $min // 0, '--timeout', 30);
	my @recs;
	my ($bytes, $chars) = json_decoders();
	foreach my $line (split /\n/, $out)
	{
		my $r = $bytes->decode($line);
		# data is characters already (decoded with the line): not decode_json
		$r->{row} = $chars->decode($r->{data});
		push @recs, $r;
	}
	return \@recs;
}

# Every user record of a stream, de-aggregated by aws-kinesis-agg (MD5
# trailers verified), in shard then sequence then sub-sequence order: a list
# of hashes {shard, seq, sub, pk, data, row, in_shard, aggregated}.
# JSON decoders for many rows: Cpanel::JSON::XS where it is installed (a
# hundred times faster), JSON::PP otherwise.  The first takes UTF-8 bytes,
# the second characters.
sub json_decoders
{
	my $xs = eval { require Cpanel::JSON::XS; 1 };
	return $xs
	  ? (Cpanel::JSON::XS->new->utf8, Cpanel::JSON::XS->new)
	  : (JSON::PP->new->utf8, JSON::PP->new);
}

sub read_deaggregated
{
	my ($port, $stream, $min) = @_;
	my $raw = kinesis_tool($port, 'read', $stream, '--raw', '--min', $min // 0, '--timeout', 30);
	my $shards = kinesis_tool($port, 'shards', $stream);
	my $dir = $PostgreSQL::Test::Utils::tmp_check;
	my $sfile = "$dir/shards_" . int(rand(1e9)) . '.json';
	open(my $fh, '>', $sfile) or die $!;
	print $fh $shards;
	close $fh;
	my ($out, $err);
	local $ENV{NODE_PATH} = "$E2E_DIR/node_modules";
	IPC::Run::run([ 'node', "$E2E_DIR/deagg.js", $sfile ], '<', \$raw, '>', \$out, '2>', \$err)
	  or die "deagg.js failed: $err";
	my @recs;
	my ($bytes, $chars) = json_decoders();
	foreach my $line (split /\n/, $out)
	{
		my $r = $bytes->decode($line);
		# data is characters already (decoded with the line): not decode_json
		$r->{row} = $chars->decode($r->{data});
		push @recs, $r;
	}
	return \@recs;
}

# The environment of a shipper run: the test keys, and nothing from the
# machine's own AWS set-up (no profile, no role, no instance metadata).
sub shipper_env
{
	return (AWS_ACCESS_KEY_ID => $ACCESS_KEY, AWS_SECRET_ACCESS_KEY => $SECRET_KEY,
		AWS_REGION => $REGION, AWS_DEFAULT_REGION => $REGION, AWS_SESSION_TOKEN => undef,
		AWS_PROFILE => undef, AWS_DEFAULT_PROFILE => undef,
		AWS_SHARED_CREDENTIALS_FILE => '/nonexistent', AWS_CONFIG_FILE => '/nonexistent',
		AWS_EC2_METADATA_DISABLED => 'true', AWS_WEB_IDENTITY_TOKEN_FILE => undef,
		AWS_ROLE_ARN => undef, AWS_ROLE_SESSION_NAME => undef,
		AWS_CONTAINER_CREDENTIALS_RELATIVE_URI => undef,
		AWS_CONTAINER_CREDENTIALS_FULL_URI => undef,
		AWS_CONTAINER_AUTHORIZATION_TOKEN => undef,
		AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE => undef, AWS_ENDPOINT_URL => undef,
		AWS_ENDPOINT_URL_STS => undef, AWS_ENDPOINT_URL_KINESIS => undef,
		AWS_ENDPOINT_URL_S3 => undef, AWS_EC2_METADATA_SERVICE_ENDPOINT => undef);
}

# The credential-source stand-ins (aws_mock.py): (port, harness).
sub start_aws_mock
{
	my (@args) = @_;
	my $portfile = "$PostgreSQL::Test::Utils::tmp_check/awsmock_" . int(rand(1e9)) . ".port";
	my $h = _start([ $PYTHON, "$E2E_DIR/aws_mock.py", '--port-file', $portfile, @args ],
		"$portfile.log");
	for (1 .. 300)
	{
		last if -s $portfile;
		usleep(100_000);
	}
	my $port = slurp_file($portfile);
	wait_for_port($port, 'aws_mock');
	return ($port, $h);
}

# What botocore resolves with this environment: "METHOD LAST4", "none" or
# "error CLASS".
sub botocore_credentials
{
	my ($env) = @_;
	my ($out, $err) = ('', '');
	local %ENV = (%ENV, %$env);
	foreach my $k (keys %$env) { delete $ENV{$k} unless defined $env->{$k}; }
	IPC::Run::run([ $PYTHON, "$E2E_DIR/creds_botocore.py" ], '<', \undef, '>', \$out,
		'2>', \$err, IPC::Run::timeout(60));
	chomp $out;
	return $out;
}


# Runs the shipper to completion: (exit code, stdout, stderr).
sub run_shipper
{
	my ($env, @args) = @_;
	my ($stdout, $stderr) = ('', '');
	local %ENV = (%ENV, %$env);
	foreach my $k (keys %$env) { delete $ENV{$k} unless defined $env->{$k}; }
	IPC::Run::run([ $SHIPPER, @args ], '<', \undef, '>', \$stdout, '2>', \$stderr,
		IPC::Run::timeout(180));
	return ($? >> 8, $stdout, $stderr);
}

# Starts the shipper in the background; returns the harness.
sub start_shipper
{
	my ($env, $log, @args) = @_;
	local %ENV = (%ENV, %$env);
	foreach my $k (keys %$env) { delete $ENV{$k} unless defined $env->{$k}; }
	my $h = IPC::Run::start([ $SHIPPER, @args ], '<', \undef, '>>', $log, '2>>', $log);
	push @children, $h;
	return $h;
}

# What the plugin emits for a slot (peeked, the slot is not advanced).
sub plugin_rows
{
	my ($node, $slot) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT data FROM pg_logical_slot_peek_changes('$slot', NULL, NULL)");
	return [ split /\n/, $out ];
}

1;
