# Fault injection: with 20 % of PutRecords calls failing (500, 503,
# throttling, per-record failures, connections dropped before and after the
# call, malformed responses), a workload still arrives complete and in
# per-key order, with several PutRecords calls in flight at once; in
# Kinesis's JSON protocol and in its CBOR one (--kinesis-protocol cbor).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

needs(qw(shipper kinesalite node boto3));

my %env = shipper_env();
my $node = new_cluster('faults');
my $connstr = $node->connstr('postgres');
my ($kport) = start_kinesalite();
my ($pport) = start_proxy($kport, '--fault-rate', '0.2', '--seed', '42');
kinesis_tool($kport, 'create', 'faulty', 3);

$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('ship', 'fundrecs_decoder')");
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('truth', 'fundrecs_decoder')");
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('cbor', 'fundrecs_decoder')");
$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
	SELECT 1 + g % 3, g, 1 FROM generate_series(1, 200) g;
});
# Many versions of every key, in many transactions.
for my $i (1 .. 15)
{
	$node->safe_psql('postgres', "UPDATE fundrecs_schema.orders SET quantity = quantity + 1");
}
$node->safe_psql('postgres', 'DELETE FROM fundrecs_schema.orders WHERE order_id % 4 = 0');
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $truth = plugin_rows($node, 'truth');

my ($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'ship', '--endpoint-url',
	"http://127.0.0.1:$pport", '--stream', 'faulty', '-E', $end, '--batch-records', '40', '-v');
is($rc, 0, 'exit code 0 despite the faults');
like($err, qr/retrying/, 'failures were retried');

my $stats = proxy_stats($pport);
my $faults = 0;
$faults += $_ for values %{ $stats->{faults} };
cmp_ok($faults, '>=', 10, "faults were injected ($faults)");
cmp_ok(scalar keys %{ $stats->{faults} }, '>=', 5, 'of several kinds: ' . join(',', sort keys %{ $stats->{faults} }));
is($stats->{mismatches}, 0, 'every retried request was signed correctly');
cmp_ok($stats->{max_in_flight}, '>', 1,
	"calls were in flight at once (up to $stats->{max_in_flight}, --max-in-flight 8) and order still held");

my $recs = read_stream($kport, 'faulty', scalar @$truth);
my %have = map { my $d = $_->{data}; chomp $d; ($d => 1) } @$recs;
is(scalar(grep { !$have{$_} } @$truth), 0, 'complete: every plugin row arrived (' . scalar(@$truth) . ' rows)');

# Per key: the versions in shard order, duplicates dropped, equal the plugin's.
sub sequences
{
	my ($rows) = @_;
	my (%seq, %seen);
	foreach my $text (@$rows)
	{
		my $r = decode_json($text);
		my $k = "$r->{table}:" . ($r->{key}{order_id} // '');
		next if $seen{"$r->{lsn} $k"}++;
		push @{ $seq{$k} }, $r->{lsn};
	}
	return \%seq;
}
# The stream's rows, per key in shard order, against the plugin's.
sub check_order
{
	my ($name, $recs) = @_;
	my %by_shard;
	push @{ $by_shard{ $_->{shard} } }, $_ for @$recs;
	my @ordered = map { my $d = $_->{data}; chomp $d; $d } map { @{ $by_shard{$_} } } sort keys %by_shard;
	my $want = sequences($truth);
	my $have = sequences(\@ordered);
	my @wrong = grep { "@{ $have->{$_} // [] }" ne "@{ $want->{$_} }" } keys %$want;
	is(scalar @wrong, 0, "$name: every key's versions are in commit order");
}
check_order('JSON', $recs);
is(scalar @{ plugin_rows($node, 'ship') }, 0, 'everything was confirmed');

# The same rows in the CBOR protocol, through the same faults: Data as
# bytes, answers and errors in CBOR.  kinesis-local stores CBOR records
# byte for byte (kinesalite 3.3.3 keeps a CBOR record's Data as a JSON
# rendering of a Node.js Buffer, so it cannot be read back).
SKIP:
{
	my @absent = missing(qw(kinesis-local python3-cbor2));
	skip join(', ', @absent) . ' not installed (scripts/install-deps.sh)', 9 if @absent;
	my ($mport) = start_kinesis_mock();
	my ($cport) = start_proxy($mport, '--fault-rate', '0.2', '--seed', '42');
	kinesis_tool($mport, 'create', 'faulty_cbor', 3);
	my ($crc, $cout, $cerr) = run_shipper(\%env, '-d', $connstr, '-S', 'cbor', '--endpoint-url',
		"http://127.0.0.1:$cport", '--stream', 'faulty_cbor', '-E', $end, '--batch-records', '40',
		'--kinesis-protocol', 'cbor', '-v');
	is($crc, 0, 'CBOR: exit code 0 despite the faults');
	like($cerr, qr/retrying/, 'CBOR: failures were retried');
	my $cstats = proxy_stats($cport);
	cmp_ok($cstats->{cbor_calls}, '>=', 10, "CBOR: the calls were in the CBOR protocol ($cstats->{cbor_calls})");
	my $cfaults = 0;
	$cfaults += $_ for values %{ $cstats->{faults} };
	cmp_ok($cfaults, '>=', 5, "CBOR: faults were injected ($cfaults)");
	cmp_ok(scalar keys %{ $cstats->{faults} }, '>=', 5, 'CBOR: of several kinds: ' . join(',', sort keys %{ $cstats->{faults} }));
	is($cstats->{mismatches}, 0, 'CBOR: every request was signed correctly');
	my $crecs = read_stream($mport, 'faulty_cbor', scalar @$truth);
	my %chave = map { my $d = $_->{data}; chomp $d; ($d => 1) } @$crecs;
	is(scalar(grep { !$chave{$_} } @$truth), 0, 'CBOR: every plugin row arrived, byte for byte');
	check_order('CBOR', $crecs);
	is(scalar @{ plugin_rows($node, 'cbor') }, 0, 'CBOR: everything was confirmed');
}

# Malformed success answers on their own (a proxy injecting nothing else):
# whether the random mix above draws one depends on how the calls arrive.
{
	my ($gport) = start_proxy($kport, '--fault-rate', '0.5', '--faults', 'garbage', '--seed', '3');
	kinesis_tool($kport, 'create', 'garbled', 1);
	$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{garbled,garbled_truth}'::text[]) s");
	$node->safe_psql('postgres', 'UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id <= 60');
	my $gend = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my $gtruth = plugin_rows($node, 'garbled_truth');
	my ($grc, $gout, $gerr) = run_shipper(\%env, '-d', $connstr, '-S', 'garbled', '--endpoint-url',
		"http://127.0.0.1:$gport", '--stream', 'garbled', '-E', $gend, '--batch-records', '10');
	is($grc, 0, 'malformed answers: exit code 0');
	cmp_ok(proxy_stats($gport)->{faults}{garbage} // 0, '>', 0, 'malformed answers: injected');
	like($gerr, qr/malformed PutRecords response/, 'a malformed response was retried, not a crash');
	my %ghave = map { my $d = $_->{data}; chomp $d; ($d => 1) } @{ read_stream($kport, 'garbled', scalar @$gtruth) };
	is(scalar(grep { !$ghave{$_} } @$gtruth), 0, 'malformed answers: every row arrived (' . scalar(@$gtruth) . ' rows)');
}

done_testing();
