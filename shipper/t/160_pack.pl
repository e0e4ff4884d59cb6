# --pack-bytes: the plugin packs a transaction's rows into replication
# messages (plugin option pack_bytes), the shipper splits them.  The rows
# shipped are the same, byte for byte, as with a message per row; a
# shipper killed between the messages of one large transaction ships the
# whole transaction again on restart (nothing confirmed inside it); bad
# values are usage errors.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

needs(qw(shipper kinesalite node boto3));

my %env = shipper_env();
my $node = new_cluster('pack');
my $connstr = $node->connstr('postgres');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;

# Small and large transactions, rows over the bound, every operation.
$node->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{p0,p1,p2,truth}'::text[]) s");
$node->safe_psql('postgres', q{
CREATE TABLE fundrecs_schema.notes (id int PRIMARY KEY, body text);
INSERT INTO fundrecs_schema.notes SELECT g, repeat('n', g * 37 % 5000) FROM generate_series(1, 300) g;
INSERT INTO fundrecs_schema.customers VALUES (1, 'one', 'here');
INSERT INTO fundrecs_schema.customers SELECT g, repeat('n', g % 250), 'city ' || g FROM generate_series(2, 400) g;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1 + g % 3, g, g FROM generate_series(1, 2000) g;
UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id % 3 = 0;
DELETE FROM fundrecs_schema.customers WHERE customer_id % 7 = 0;
UPDATE fundrecs_schema.notes SET body = body || 'x' WHERE id % 5 = 0;
TRUNCATE fundrecs_schema.customers;
});
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $truth = join('', map { "$_\n" } @{ plugin_rows($node, 'truth') });

my %out;
foreach my $case ([ 'p0', '0' ], [ 'p1', '1024' ], [ 'p2', '65536' ])
{
	my ($slot, $bytes) = @$case;
	my ($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', $slot, '--target', 'stdout',
		'-E', $end, '--pack-bytes', $bytes);
	is($rc, 0, "--pack-bytes $bytes: exit code 0") or diag($stderr);
	$out{$bytes} = $stdout;
}
is($out{0}, $truth, '--pack-bytes 0: every plugin row, byte for byte');
is($out{1024}, $truth, '--pack-bytes 1024: the same rows, byte for byte');
is($out{65536}, $truth, '--pack-bytes 65536: the same rows, byte for byte');
ok($node->poll_query_until('postgres',
	"SELECT bool_and(confirmed_flush_lsn >= '$end') FROM pg_replication_slots WHERE slot_name IN ('p0', 'p1', 'p2')"),
	'every slot confirmed to the end');

# A kill -9 between the messages of one large transaction: the proxy holds
# every call, so the shipper has read part of the transaction's messages
# when it dies; nothing inside the transaction may have been confirmed.
my ($kport) = start_kinesalite();
my ($pport) = start_proxy($kport, '--delay-puts', '0.3');
kinesis_tool($kport, 'create', 'packed', 2);
$node->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{pk,pk_truth}'::text[]) s");
my $before = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1 + g % 3, g, 1 FROM generate_series(1, 3000) g;
});
my @ship = ('-d', $connstr, '-S', 'pk', '--endpoint-url', "http://127.0.0.1:$pport", '--stream', 'packed',
	'--pack-bytes', '2048', '--batch-records', '100', '--max-in-flight', '1', '-s', '1');
my $h = start_shipper(\%env, "$tmp/pack_kill.log", @ship);
# Wait until calls are being made, then kill.
for (1 .. 100)
{
	last if proxy_stats($pport)->{delayed} >= 2;
	usleep(100_000);
}
cmp_ok(proxy_stats($pport)->{delayed}, '>=', 2, 'kill: the shipper was mid-transaction');
$h->signal('KILL');
$h->finish;
my $confirmed = $node->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pk'");
my $commit = decode_json($node->safe_psql('postgres',
	"SELECT data FROM pg_logical_slot_peek_changes('pk_truth', NULL, 1) LIMIT 1"))->{commit_lsn};
ok($node->safe_psql('postgres', "SELECT '$confirmed'::pg_lsn < '$commit'::pg_lsn") eq 't',
	"kill: nothing of the transaction was confirmed ($confirmed, its commit at $commit)");
$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 1, 1);
});
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my ($rc, $stdout, $stderr) = run_shipper(\%env, @ship, '-E', $end);
is($rc, 0, 'kill: the restart reached the end') or diag($stderr);
my $want = plugin_rows($node, 'pk_truth');
my $recs = read_stream($kport, 'packed', scalar @$want);
my %have = map { my $d = $_->{data}; chomp $d; ($d => 1) } @$recs;
is(scalar(grep { !$have{$_} } @$want), 0, 'kill: every row of the transaction arrived (' . scalar(@$want) . ' rows)');

# Usage errors.
($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'p0', '--target', 'stdout', '--pack-bytes', '100');
is($rc, 2, '--pack-bytes 100: exit code 2');
like($stderr, qr/--pack-bytes must be 0 or from 1024/, '--pack-bytes 100: says why');
($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'p0', '--target', 'stdout', '-o', 'pack_bytes=4096');
is($rc, 2, '-o pack_bytes: exit code 2');
like($stderr, qr/use --pack-bytes/, '-o pack_bytes: points to --pack-bytes');

done_testing();
