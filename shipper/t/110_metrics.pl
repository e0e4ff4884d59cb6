# /metrics and /healthz (--metrics-address): values move as rows ship, the
# exposition passes promtool, lag returns to 0 when idle; /healthz goes 503
# while Kinesis does not answer and 200 again when it does.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

needs(qw(shipper kinesalite node boto3 promtool));

my %env = shipper_env();
my $node = new_cluster('metrics');
my $connstr = $node->connstr('postgres');
my ($kport) = start_kinesalite();
kinesis_tool($kport, 'create', 'm', '2');
my ($pport) = start_proxy($kport);
my $mport = PostgreSQL::Test::Cluster::get_free_port();
my $log = "$PostgreSQL::Test::Utils::tmp_check/metrics_shipper.log";

sub get
{
	my ($path) = @_;
	my $body = `curl -s -w '\\n%{http_code}' http://127.0.0.1:$mport$path`;
	my ($text, $code) = $body =~ /^(.*)\n(\d+)$/s;
	return ($code // 0, $text // '');
}

sub metric
{
	my ($text, $name) = @_;
	return $text =~ /^\Q$name\E (\S+)$/m ? $1 + 0 : undef;
}

sub wait_for
{
	my ($what, $cond) = @_;
	for (1 .. 300)
	{
		return 1 if $cond->();
		sleep 0.1;
	}
	diag("timed out waiting for $what");
	return 0;
}

# Bad addresses are usage errors.
my ($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'x', '--stream', 'm',
	'--metrics-address', 'nohostport');
is($rc, 2, 'malformed --metrics-address: exit 2');
like($err, qr/invalid --metrics-address "nohostport": use HOST:PORT/, 'malformed --metrics-address: message');

my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'metrics', '--create-slot', '--stream', 'm',
	'--endpoint-url', "http://127.0.0.1:$pport", '--metrics-address', "127.0.0.1:$mport",
	'--health-max-lag', '2', '-s', '1', '-v');
ok(wait_for('/healthz', sub { (get('/healthz'))[0] == 200 }), '/healthz: 200 once streaming');

$node->safe_psql('postgres',
	"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1, g, 1 FROM generate_series(1, 50) g");
my $text;
ok(wait_for('rows shipped', sub {
	my $code;
	($code, $text) = get('/metrics');
	($text =~ /^fundrecs_shipper_rows_total\{target="kinesis"\} (\d+)$/m ? $1 : 0) >= 50 }),
	'fundrecs_shipper_rows_total counts the 50 rows');
like($text, qr/^fundrecs_shipper_build_info\{version="[\d.]+",server_version="15[^"]*"\} 1$/m, 'build info');
cmp_ok(metric($text, 'fundrecs_shipper_kinesis_records_total'), '>=', 50, 'Kinesis records counted');
cmp_ok(metric($text, 'fundrecs_shipper_kinesis_put_records_calls_total'), '>=', 1, 'PutRecords calls counted');
cmp_ok(metric($text, 'fundrecs_shipper_start_time_seconds'), '>', time - 600, 'start time');

# Idle: everything confirmed, lag back to 0, slot state read.
ok(wait_for('idle', sub {
	my $code;
	($code, $text) = get('/metrics');
	defined metric($text, 'fundrecs_shipper_lag_seconds') && metric($text, 'fundrecs_shipper_lag_seconds') == 0
	  && metric($text, 'fundrecs_shipper_held_rows') == 0
	  && metric($text, 'fundrecs_shipper_lag_bytes') == 0
	  && metric($text, 'fundrecs_shipper_confirmed_lsn') > 0 }), 'idle: lag 0, nothing held');
my $slot_confirmed = $node->safe_psql('postgres',
	"SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'metrics'");
cmp_ok(metric($text, 'fundrecs_shipper_confirmed_lsn'), '<=', $slot_confirmed + 0,
	'confirmed_lsn metric is not ahead of the slot');
like($text, qr/^fundrecs_shipper_slot_wal_status\{status="reserved"\} 1$/m, 'slot wal_status');
ok(defined metric($text, 'fundrecs_shipper_slot_retained_wal_bytes'), 'slot retained WAL');
is(metric($text, 'fundrecs_shipper_connected'), 1, 'connected');

# promtool (Debian's prometheus) lints the exposition.
my $file = "$PostgreSQL::Test::Utils::tmp_check/metrics.txt";
open(my $fh, '>', $file) or die;
print $fh $text;
close($fh);
my ($pout, $perr) = ('', '');
my $ok = IPC::Run::run([ 'promtool', 'check', 'metrics' ], '<', $file, '>', \$pout, '2>', \$perr);
ok($ok, 'promtool check metrics passes') or diag("$pout$perr");

# Kinesis stops answering (each call held 8 s): rows pend, /healthz fails.
IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$pport/__delay/8" ], '>', '/dev/null');
$node->safe_psql('postgres',
	"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 900, 1)");
my $body;
ok(wait_for('503', sub { my $code; ($code, $body) = get('/healthz'); $code == 503 }), '/healthz: 503 while nothing is delivered');
like($body, qr/rows pending and nothing delivered for \d+ s \(--health-max-lag 2\)/, '/healthz: one-line reason');
($rc, $text) = get('/metrics');
cmp_ok(metric($text, 'fundrecs_shipper_lag_seconds'), '>', 0, 'lag_seconds > 0 while rows pend');
cmp_ok(metric($text, 'fundrecs_shipper_held_rows'), '>=', 1, 'held_rows while rows pend');
IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$pport/__delay/0" ], '>', '/dev/null');
ok(wait_for('200 again', sub { (get('/healthz'))[0] == 200 }), '/healthz: 200 again once delivered');
is((get('/nothing'))[0], 404, 'other paths: 404');

# Idle connections do not keep a scrape out (16 made every scrape fail with
# "Server reached connection limit").
{
	my @idle = map { IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $mport, Proto => 'tcp') } 1 .. 40;
	is(scalar(grep { defined } @idle), 40, '40 idle connections to the metrics port');
	my ($icode) = get('/metrics');
	is($icode, 200, 'a scrape gets through 40 idle connections');
	close($_) for grep { defined } @idle;
}

$h->signal('TERM');
$h->finish;
unlike(slurp_file($log), qr/error:/, 'no errors');

# An outage (every PutRecords answered 503) while rows keep coming: reading
# stops once --max-buffer-bytes are held, and the deliveries retry.  The
# metrics and the slot's state keep their cadence meanwhile (they showed 0
# bytes retained and no wal_status: the monitor did not run while
# deliveries waited), and /healthz says what is wrong.
{
	my ($downport) = start_proxy($kport, '--fault-rate', '1', '--faults', '503');
	$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('outage', 'fundrecs_decoder')");
	my $olog = "$PostgreSQL::Test::Utils::tmp_check/metrics_outage.log";
	my $ho = start_shipper(\%env, $olog, '-d', $connstr, '-S', 'outage', '--no-load', '--stream', 'm',
		'--endpoint-url', "http://127.0.0.1:$downport", '--metrics-address', "127.0.0.1:$mport",
		'--max-buffer-bytes', '65536', '--max-retained-wal', '1048576', '--health-max-lag', '600',
		'--retry-timeout', '0', '--shutdown-timeout', '1', '-s', '1');
	ok(wait_for('outage: serving', sub { (get('/metrics'))[0] == 200 }), 'outage: metrics served');
	$node->safe_psql('postgres',
		"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1 + g % 4, g, 1 FROM generate_series(1, 20000) g");
	my ($ocode, $otext, $obody);
	# The walsender decodes the 20,000-row transaction before the first row
	# reaches the shipper, so the slot can retain WAL while nothing is held
	# yet: wait for both.
	ok(wait_for('outage: retained WAL and held rows seen', sub {
		($ocode, $otext) = get('/metrics');
		(metric($otext, 'fundrecs_shipper_slot_retained_wal_bytes') // 0) > 1048576
		  && (metric($otext, 'fundrecs_shipper_held_rows') // 0) > 0 }),
		'outage: /metrics shows the WAL the slot retains while deliveries retry')
	  or diag($otext);
	like($otext, qr/^fundrecs_shipper_slot_wal_status\{status="reserved"\} 1$/m, 'outage: and its wal_status');
	cmp_ok(metric($otext, 'fundrecs_shipper_held_rows'), '>', 0, 'outage: and the rows held');
	ok(wait_for('outage: /healthz fails', sub { ($ocode, $obody) = get('/healthz'); $ocode == 503 }),
		'outage: /healthz fails')
	  or diag("healthz $ocode: $obody");
	like($obody, qr/the slot retains \d+ bytes of WAL, over --max-retained-wal 1048576/, 'outage: /healthz says why');
	$ho->signal('TERM');
	$ho->finish;
}

done_testing();
