# Signals and slow services: SIGTERM wakes every wait (start-up checks
# against an endpoint that never answers, a hung PutRecords) within
# --shutdown-timeout; what is in flight is delivered and confirmed when it
# can be; while a call is slower than wal_sender_timeout the replication
# connection stays up (status updates go on), so nothing is shipped twice.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use IO::Socket::INET;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

needs(qw(shipper kinesalite node boto3));

my %env = shipper_env();
my $node = new_cluster('signals');
my $connstr = $node->connstr('postgres');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my ($kport) = start_kinesalite();

sub wait_for
{
	my ($what, $cond, $secs) = @_;
	my $deadline = time + ($secs // 60);
	while (time < $deadline)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	diag("timed out waiting for $what");
	return 0;
}

# Sends SIGTERM and returns (seconds until exit, exit code).
sub term_and_time
{
	my ($h) = @_;
	my $t0 = time;
	$h->signal('TERM');
	$h->finish;
	return (time - $t0, $h->result(0));
}

sub confirmed
{
	my ($slot) = @_;
	return $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
}

# 1. Start-up against an endpoint that accepts connections and never answers.
{
	my $silent = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
	  or die "listen: $!";
	my $log = "$tmp/silent.log";
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'sig_silent', '--create-slot', '--no-load',
		'--endpoint-url', 'http://127.0.0.1:' . $silent->sockport, '--stream', 'nowhere');
	sleep 2;
	my ($secs, $rc) = term_and_time($h);
	cmp_ok($secs, '<', 5, sprintf('start-up check: SIGTERM honoured while the endpoint hangs (%.1f s)', $secs));
	is($rc, 0, 'start-up check: exit code 0 on SIGTERM');
}

# 1b. Creating a slot waits for running transactions to end; SIGTERM ends
#     the wait (the command is cancelled), exit 0, no slot left behind.
{
	my $holder = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-c',
		"BEGIN; INSERT INTO fundrecs_schema.customers VALUES (6001, 'Open', 'x'); SELECT pg_sleep(120); COMMIT;" ],
		'>', '/dev/null', '2>', '/dev/null');
	ok($node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"),
		'slot creation: a transaction is open');
	my $log = "$tmp/create_wait.log";
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'sig_create', '--create-slot', '--target', 'stdout');
	ok($node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'walsender' AND wait_event IS NOT NULL AND query LIKE 'CREATE_REPLICATION_SLOT%'"),
		'slot creation: waiting for the transaction');
	my ($secs, $rc) = term_and_time($h);
	cmp_ok($secs, '<', 5, sprintf('slot creation: SIGTERM honoured while it waits (%.1f s)', $secs));
	is($rc, 0, 'slot creation: exit code 0');
	# The backend of a killed psql would sleep on with its transaction open.
	$node->safe_psql('postgres',
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()");
	$holder->kill_kill;
	$holder->finish;
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sig_create'"),
		'0', 'slot creation: no slot left behind');
	is($node->safe_psql('postgres', "SELECT count(*) FROM fundrecs.load_state WHERE slot_name = 'sig_create'"),
		'0', 'slot creation: no load state left behind');
}

kinesis_tool($kport, 'create', 'slow', 1);
my ($pport) = start_proxy($kport, '--delay-puts', '600');
my @kin = ('--endpoint-url', "http://127.0.0.1:$pport", '--stream', 'slow');

# 2. A PutRecords call that hangs: SIGTERM ends it after --shutdown-timeout;
#    nothing of it is confirmed.
{
	my $log = "$tmp/hung.log";
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'sig_hung', '--create-slot', '--no-load', @kin,
		'--shutdown-timeout', '2', '-s', '1');
	ok($node->poll_query_until('postgres', "SELECT active FROM pg_replication_slots WHERE slot_name = 'sig_hung'"),
		'hung: streaming');
	my $before = confirmed('sig_hung');
	$node->safe_psql('postgres', "INSERT INTO fundrecs_schema.customers VALUES (7001, 'Hung', 'x')");
	my $after_insert = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	ok(wait_for('the call', sub { proxy_stats($pport)->{delayed} >= 1 }), 'hung: a PutRecords call is in flight');
	my ($secs, $rc) = term_and_time($h);
	cmp_ok($secs, '>=', 1.5, sprintf('hung: waited for the call up to --shutdown-timeout (%.1f s)', $secs));
	cmp_ok($secs, '<', 6, 'hung: exited within --shutdown-timeout');
	is($rc, 0, 'hung: exit code 0');
	my $out = slurp_file($log);
	like($out, qr/--shutdown-timeout \(2 s\) reached/, 'hung: says the timeout ended the call');
	like($out, qr/shipped again on restart/, 'hung: says the rows will be shipped again');
	is($node->safe_psql('postgres', "SELECT confirmed_flush_lsn < '$after_insert' FROM pg_replication_slots WHERE slot_name = 'sig_hung'"),
		't', 'hung: the undelivered row was not confirmed');
}

# 3. A slow call that completes within --shutdown-timeout: delivered and
#    confirmed, then exit 0.
{
	IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$pport/__delay/3" ], '>', '/dev/null');
	my $log = "$tmp/slow.log";
	my $delayed = proxy_stats($pport)->{delayed};
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'sig_hung', @kin, '--shutdown-timeout', '30', '-s', '1');
	ok($node->poll_query_until('postgres', "SELECT active FROM pg_replication_slots WHERE slot_name = 'sig_hung'"),
		'slow: streaming');
	ok(wait_for('the call', sub { proxy_stats($pport)->{delayed} > $delayed }), 'slow: a call is in flight');
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my ($secs, $rc) = term_and_time($h);
	is($rc, 0, 'slow: exit code 0');
	cmp_ok($secs, '<', 10, sprintf('slow: exited once the call completed (%.1f s)', $secs));
	my $recs = read_stream($kport, 'slow', 1);
	ok((grep { ($_->{row}{data}{customer_id} // 0) == 7001 } @$recs), 'slow: the row in flight was delivered');
	my $conf = confirmed('sig_hung');
	my $row_lsn = (grep { ($_->{row}{data}{customer_id} // 0) == 7001 } @$recs)[0]{row}{commit_lsn};
	is($node->safe_psql('postgres', "SELECT '$conf'::pg_lsn >= '$row_lsn'::pg_lsn"), 't',
		'slow: the delivered row was confirmed before exit');
}

# 4. Calls slower than wal_sender_timeout: status updates keep the
#    replication connection; nothing is shipped twice.
{
	$node->append_conf('postgresql.conf', "wal_sender_timeout = 2s\n");
	$node->reload;
	kinesis_tool($kport, 'create', 'keepalive', 1);
	IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$pport/__delay/7" ], '>', '/dev/null');
	my $log = "$tmp/keepalive.log";
	my $logpos = -s $node->logfile;
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'sig_keep', '--create-slot', '--no-load',
		'--endpoint-url', "http://127.0.0.1:$pport", '--stream', 'keepalive', '-s', '10');
	ok($node->poll_query_until('postgres', "SELECT active FROM pg_replication_slots WHERE slot_name = 'sig_keep'"),
		'keepalive: streaming');
	for my $i (1 .. 3)
	{
		$node->safe_psql('postgres', "INSERT INTO fundrecs_schema.customers VALUES (8000 + $i, 'Slow', 'x')");
		sleep 1;
	}
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	ok($node->poll_query_until('postgres',
		"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'sig_keep'"),
		'keepalive: every row delivered and confirmed');
	my ($secs, $rc) = term_and_time($h);
	my $serverlog = substr(slurp_file($node->logfile), $logpos);
	unlike($serverlog, qr/terminating walsender process due to replication timeout/,
		'keepalive: the server did not time the connection out');
	unlike(slurp_file($log), qr/reconnecting/, 'keepalive: the shipper never reconnected');
	my $recs = read_stream($kport, 'keepalive', 3);
	my %n;
	$n{ $_->{row}{data}{customer_id} }++ for @$recs;
	is_deeply(\%n, { 8001 => 1, 8002 => 1, 8003 => 1 }, 'keepalive: each row shipped exactly once');
}

done_testing();
