# The shipper's memory stays flat while it ships to S3: 1,000,000 order
# rows in four transactions of 250,000 go to s3rver (through the signature
# check), and the shipper's resident set after the last is within 10 % of
# what it was after the first.  A leak of a few bytes a row (the
# route-mark leak of 1.5: about 140 bytes a row, +130 MB here) fails it.
# Speed is not measured here (bench/ does).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

needs(qw(shipper s3rver boto3));

my %env = shipper_env();
my $node = new_cluster('s3_memory');
my $connstr = $node->connstr('postgres');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my ($s3port) = start_s3rver('mem');
my ($proxy) = start_proxy($s3port, '--strip-auth');
my $log = "$tmp/s3_memory.log";
my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'mem', '--create-slot', '--target', 's3',
	'--endpoint-url', "http://127.0.0.1:$proxy", '--s3-url', 's3://mem/cdc', '--flush-bytes', '4194304',
	'--flush-seconds', '1', '-s', '1');
my $pid = $h->{KIDS}[0]{PID};

sub rss_kb
{
	my $status = slurp_file("/proc/$pid/status");
	return $status =~ /^VmRSS:\s+(\d+) kB/m ? $1 : die "no VmRSS for $pid";
}

# Waits until the slot has confirmed everything written so far.
sub caught_up
{
	my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	$node->poll_query_until('postgres',
		"SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = 'mem'")
	  or die "the shipper did not confirm $lsn";
	return;
}

$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'mem'")
  or die 'no slot';
my @rss;
for my $batch (1 .. 4)
{
	$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
	SELECT 1 + g % 4, 1 + g % 100, 1 + g % 5 FROM generate_series(1, 250000) g});
	caught_up();
	push @rss, rss_kb();
	note("after $batch x 250,000 rows: RSS $rss[-1] kB");
}
ok(kill(0, $pid), 'the shipper is still running');
cmp_ok($rss[-1], '<=', $rss[0] * 1.10,
	"RSS after 1,000,000 rows ($rss[-1] kB) within 10 % of after 250,000 ($rss[0] kB)");

# Every row is in the lake (the objects' row counts, as the log says).
$h->signal('TERM');
$h->finish;
is($h->result(0), 0, 'exit 0 on SIGTERM');
my ($rows, $text) = (0, slurp_file($log));
$rows += $1 while $text =~ /wrote s3:\/\/mem\/cdc\/\S+ \((\d+) rows,/g;
is($rows, 1_000_000, 'every row written to S3');

done_testing();
