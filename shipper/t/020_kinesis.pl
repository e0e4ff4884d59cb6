# Shipping to Kinesis emulators through the signature-checking endpoint,
# read back with boto3: every row exactly as the plugin emitted it, the
# partition keys, per-key order, --endpos, restart after a kill, reconnect
# after a server restart, and kinesis-local addressed by stream ARN.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

needs(qw(shipper kinesalite kinesis-local node boto3));

my %env = shipper_env();
my $node = new_cluster('kinesis');
my $connstr = $node->connstr('postgres');
my ($kport) = start_kinesalite();
my ($pport) = start_proxy($kport);
kinesis_tool($kport, 'create', 'orders_stream', 4);
my @kin = ('--endpoint-url', "http://127.0.0.1:$pport", '--stream', 'orders_stream');

# A second slot made at the same moment is the truth to compare with.
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('truth', 'fundrecs_decoder')");
my ($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'ship', '--create-slot', @kin,
	'-E', '0/1', '-q');
is($rc, 0, '--create-slot with an --endpos in the past exits 0');
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('truth')");
$node->safe_psql('postgres', "SELECT pg_copy_logical_replication_slot('ship', 'truth')");

sub workload
{
	my ($n) = @_;
	$node->safe_psql('postgres', qq{
INSERT INTO fundrecs_schema.customers SELECT g, 'Customer ' || g, 'City "' || g || '"'
	FROM generate_series($n * 1000 + 1, $n * 1000 + 50) g;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
	SELECT 1 + g % 4, $n * 1000 + 1 + g % 50, 1 + g % 7 FROM generate_series(1, 300) g;
UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id % 3 = 0;
UPDATE fundrecs_schema.orders SET product_id = 3 WHERE order_id % 10 = 1;
DELETE FROM fundrecs_schema.orders WHERE order_id % 25 = 0;
UPDATE fundrecs.product_details SET price = price + 1 WHERE product_id = 1;
UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id % 7 = 0;
BEGIN;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (2, 1, 1);
ROLLBACK;
});
	for my $i (1 .. 20)
	{
		$node->safe_psql('postgres',
			"UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id % 20 = $i % 20");
	}
}

# Per-key sequences of rows, duplicates (same lsn and key) after the first dropped.
sub per_key
{
	my ($rows) = @_;
	my (%seq, %seen);
	foreach my $text (@$rows)
	{
		my $r = decode_json($text);
		my $k = $r->{table} . ':' . JSON::PP->new->canonical->encode($r->{key} // {});
		next if $seen{"$r->{lsn} $k"}++;
		push @{ $seq{$k} }, $text;
	}
	return \%seq;
}

sub check_stream_matches_truth
{
	my ($name, $allow_dups) = @_;
	my $truth = plugin_rows($node, 'truth');
	my $recs = read_stream($kport, 'orders_stream', scalar @$truth);
	my @got = map { my $d = $_->{data}; chomp $d; $d } @$recs;

	if ($allow_dups)
	{
		my %have = map { $_ => 1 } @got;
		is(scalar(grep { !$have{$_} } @$truth), 0, "$name: no row is missing");
	}
	else
	{
		is(scalar @got, scalar @$truth, "$name: as many records as plugin rows");
		is_deeply([ sort @got ], [ sort @$truth ], "$name: every row exactly as the plugin emitted it");
	}
	ok((!grep { $_->{data} !~ /\n\z/ } @$recs), "$name: each record is one JSON row and a newline");

	# Partition key: schema.table:{key}; one shard per key.
	my (%shard_of, $bad_pk, $split);
	foreach my $r (@$recs)
	{
		my ($key) = $r->{data} =~ /,"key":(\{.*?\}),"route"/;
		my $want = "$r->{row}{schema}.$r->{row}{table}" . (defined $key ? ":$key" : '');
		$bad_pk++ if $r->{pk} ne $want;
		$split++ if defined $shard_of{ $r->{pk} } && $shard_of{ $r->{pk} } ne $r->{shard};
		$shard_of{ $r->{pk} } = $r->{shard};
	}
	ok(!$bad_pk, "$name: partition key is schema.table and the key");
	ok(!$split, "$name: all versions of a key are on one shard");
	cmp_ok(scalar(keys %{ { map { $_->{shard} => 1 } @$recs } }), '>', 1, "$name: rows spread over shards");

	# Per-key order: records of a shard in sequence order are the plugin's order.
	my $want = per_key($truth);
	my %by_shard;
	push @{ $by_shard{ $_->{shard} } }, $_ for @$recs;
	my @in_order = map { my $d = $_->{data}; chomp $d; $d }
	  map { @{ $by_shard{$_} } } sort keys %by_shard;
	my $have = per_key(\@in_order);
	my $wrong = grep { !defined $have->{$_} || "@{ $have->{$_} }" ne "@{ $want->{$_} }" } keys %$want;
	is($wrong, 0, "$name: every key's versions arrive in commit order");
	return scalar @$truth;
}

# 1. A workload shipped with --endpos.
workload(1);
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'ship', @kin, '-E', $end, '--batch-records', '200');
is($rc, 0, 'endpos run: exit code 0');
my $n = check_stream_matches_truth('endpos run', 0);
cmp_ok($n, '>', 500, "endpos run: a real workload ($n rows)");
like($err, qr/shipped $n rows, confirmed up to/, 'endpos run: the summary counts the rows shipped');
is($node->safe_psql('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'ship'"),
	't', 'endpos run: the slot is confirmed up to --endpos');
is(scalar @{ plugin_rows($node, 'ship') }, 0, 'endpos run: nothing left in the slot');
my $stats = proxy_stats($pport);
is($stats->{mismatches}, 0, 'botocore verified every signature');
cmp_ok($stats->{verified}, '>=', 5, "signatures checked: $stats->{verified}");

# 2. Kill -9 in the middle, restart: nothing lost (re-sent rows allowed).
my $log = "$PostgreSQL::Test::Utils::tmp_check/shipper_kill.log";
my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'ship', @kin, '--batch-records', '50',
	'--linger-ms', '10', '-s', '1');
workload(2);
usleep(300_000);
$h->signal('KILL');
$h->finish;
workload(3);
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'ship', @kin, '-E', $end);
is($rc, 0, 'after a kill: restart exits 0 at --endpos');
check_stream_matches_truth('after a kill', 1);

# 3. The server restarts under a running shipper: it reconnects.
$log = "$PostgreSQL::Test::Utils::tmp_check/shipper_reconnect.log";
$h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'ship', @kin, '-s', '1');
workload(4);
$node->restart;
workload(5);
my $want = scalar @{ plugin_rows($node, 'truth') };
my $target = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$target' FROM pg_replication_slots WHERE slot_name = 'ship'"),
	'after a server restart: the running shipper confirms the new rows');
$h->signal('TERM');
$h->finish;
is($h->full_result(0), 0, 'SIGTERM: exit code 0 (not killed by the signal)');
like(slurp_file($log), qr/reconnecting in \d+ s/, 'the shipper reconnected after the server restart');
check_stream_matches_truth('after a server restart', 1);
is(scalar @{ plugin_rows($node, 'ship') }, 0, 'after a server restart: everything confirmed');

# 4. kinesis-local (kinesis-mock), addressed by stream ARN.
my ($mport) = start_kinesis_mock();
my ($mproxy) = start_proxy($mport);
my $arn = kinesis_tool($mport, 'create', 'arn_stream', 2);
like($arn, qr/^arn:aws:kinesis:us-east-1:\d+:stream\/arn_stream$/, 'kinesis-mock stream ARN');
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('arn_slot', 'fundrecs_decoder')");
workload(6);
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $arn_truth = plugin_rows($node, 'arn_slot');
($rc, $out, $err) = run_shipper({ %env, AWS_REGION => undef }, '-d', $connstr, '-S', 'arn_slot',
	'--endpoint-url', "http://127.0.0.1:$mproxy", '--stream-arn', $arn, '-E', $end);
is($rc, 0, 'stream ARN: exit code 0 (region taken from the ARN)');
my $recs = read_stream($mport, 'arn_stream', scalar @$arn_truth);
is_deeply([ sort map { my $d = $_->{data}; chomp $d; $d } @$recs ], [ sort @$arn_truth ],
	'stream ARN: kinesis-mock holds every row');
is(proxy_stats($mproxy)->{mismatches}, 0, 'stream ARN: signatures verified');

done_testing();
