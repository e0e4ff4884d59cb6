# Logical decoding messages through the shipper (plugin option
# include_messages), --heartbeat moving an idle slot on without its
# messages reaching the target, and --log-format json.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

needs(qw(shipper kinesalite node boto3));

my %env = shipper_env();
my $node = new_cluster('messages');
my $connstr = $node->connstr('postgres');
my $log = "$PostgreSQL::Test::Utils::tmp_check/messages_shipper.log";

# 1. Messages to Kinesis: a row of their own, partition key message:PREFIX,
#    in commit order with the rows of their transaction.
my ($kport) = start_kinesalite();
my ($pport) = start_proxy($kport);
kinesis_tool($kport, 'create', 'msg_stream', 2);
$node->safe_psql('postgres', q{
SELECT pg_create_logical_replication_slot('msgs', 'fundrecs_decoder');
BEGIN;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 101, 2);
SELECT pg_logical_emit_message(true, 'app.marker', 'batch 1 done');
COMMIT;
SELECT pg_logical_emit_message(false, 'audit', 'outside');
SELECT pg_logical_emit_message(true, 'fundrecs_heartbeat', '');
SELECT pg_logical_emit_message(true, 'other', 'filtered out');
});
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my ($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'msgs', '-E', $end,
	'--endpoint-url', "http://127.0.0.1:$pport", '--stream', 'msg_stream',
	'-o', 'include_messages=on', '-o', 'message_prefixes=app.marker,audit');
is($rc, 0, 'messages: shipped to --endpos') or diag($err);
my $recs = read_stream($kport, 'msg_stream', 3);
my @msgs = grep { $_->{row}{op} eq 'message' } @$recs;
is(scalar(@$recs), 3, 'one order row and two messages');
is_deeply([ sort map { "$_->{pk} $_->{row}{content}" } @msgs ],
	[ 'message:app.marker batch 1 done', 'message:audit outside' ],
	'messages: partition key message:PREFIX and their content');
my ($order) = grep { $_->{row}{op} eq 'insert' } @$recs;
my ($marker) = grep { $_->{row}{prefix} eq 'app.marker' } @msgs;
is($marker->{row}{commit_lsn}, $order->{row}{commit_lsn},
	'a transactional message carries its transaction\'s commit_lsn');
is($node->safe_psql('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'msgs'"),
	't', 'messages: confirmed up to --endpos');

# 2. --heartbeat on an idle database: heartbeats are written (a second
#    slot sees them when asked by name), the shipper ships none of them,
#    and its slot's confirmed_flush_lsn and restart_lsn move past them.
$node->safe_psql('postgres', q{
SELECT pg_create_logical_replication_slot('hb', 'fundrecs_decoder');
SELECT pg_create_logical_replication_slot('hb_witness', 'fundrecs_decoder');
});
$node->safe_psql('postgres', 'CHECKPOINT');
my ($restart0) = $node->safe_psql('postgres',
	"SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'hb'");
my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'hb', '--target', 'stdout', '-s', '1',
	'--heartbeat', '1', '--log-format', 'json', '-v', '--metrics-address', '127.0.0.1:0',
	'-o', 'include_messages=on');
my $deadline = time + 60;
my $nbeats = 0;
while (time < $deadline)
{
	$nbeats = $node->safe_psql('postgres', q{
SELECT count(*) FROM pg_logical_slot_peek_changes('hb_witness', NULL, NULL,
	'include_messages', 'on', 'message_prefixes', 'fundrecs_heartbeat')});
	last if $nbeats >= 4;
	sleep 0.5;
}
cmp_ok($nbeats, '>=', 4, '--heartbeat: heartbeat messages written while idle');
my $last_beat = $node->safe_psql('postgres', q{
SELECT max(lsn) FROM pg_logical_slot_peek_changes('hb_witness', NULL, NULL,
	'include_messages', 'on', 'message_prefixes', 'fundrecs_heartbeat')});
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn > '$last_beat' FROM pg_replication_slots WHERE slot_name = 'hb'"),
	'--heartbeat: confirmed_flush_lsn moves past the heartbeats');
# A checkpoint logs the running transactions; with the next heartbeat
# confirmed, restart_lsn follows.
my $restart_moved = 0;
for (1 .. 30)
{
	$node->safe_psql('postgres', 'CHECKPOINT');
	$restart_moved = $node->safe_psql('postgres',
		"SELECT restart_lsn > '$restart0' FROM pg_replication_slots WHERE slot_name = 'hb'") eq 't';
	last if $restart_moved;
	sleep 1;
}
ok($restart_moved, '--heartbeat: restart_lsn moves on an otherwise idle database');

# A row still ships; while rows arrive, no heartbeat is needed.
$node->safe_psql('postgres',
	"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (2, 102, 1)");
$deadline = time + 30;
while (time < $deadline)
{
	last if slurp_file($log) =~ /"op":"insert"/;
	sleep 0.2;
}
$h->signal('TERM');
$h->finish;
is($h->result(0), 0, 'json logs: exit 0 on SIGTERM');

my (@rows, @lines);
foreach my $line (split /\n/, slurp_file($log))
{
	my $obj = eval { decode_json($line) };
	ok(defined $obj, 'stdout and stderr: every line is JSON') or diag($line);
	next unless $obj;
	if (exists $obj->{level}) { push @lines, $obj; }
	else { push @rows, $obj; }
}
is(scalar(grep { ($_->{prefix} // '') eq 'fundrecs_heartbeat' } @rows), 0,
	'--heartbeat: no heartbeat reaches the target, even with include_messages');
is(scalar(grep { $_->{op} eq 'insert' } @rows), 1, 'the order row is shipped');
cmp_ok(scalar(@lines), '>=', 2, 'json logs: log lines');
is(scalar(grep { !(defined $_->{time} && $_->{time} =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) } @lines),
	0, 'json logs: every line has an ISO-8601 UTC time');
is(scalar(grep { ($_->{level} // '') !~ /^(error|warning|info|debug)$/ } @lines), 0,
	'json logs: every line has a level');
is(scalar(grep { ($_->{slot} // '') ne 'hb' || ($_->{target} // '') ne 'stdout' } @lines), 0,
	'json logs: every line names the slot and the target');
ok((grep { defined $_->{lsn} && $_->{lsn} =~ m{^[0-9A-F]+/[0-9A-F]+$} } @lines),
	'json logs: lines carry the confirmed lsn once there is one');
ok((grep { ($_->{message} // '') =~ /serving metrics/ } @lines), 'json logs: the messages of -v');

# Usage errors are JSON too, with the hint on a line of its own.
($rc, $out, $err) = run_shipper(\%env, '--log-format=json', '--no-such-flag');
is($rc, 2, 'json logs: usage error exits 2');
my @err = map { decode_json($_) } split /\n/, $err;
ok(@err >= 2 && $err[0]{level} eq 'error' && defined $err[-1]{hint}
	  && $err[-1]{hint} =~ /--help/, 'json logs: a usage error and its hint')
  or diag($err);
# The metrics port taken: the message names the address and the reason
# (libmicrohttpd's own said "port 0" and went around the JSON log).
{
	my $busy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 0)
	  or die "could not listen: $!";
	my $bport = $busy->sockport;
	($rc, $out, $err) = run_shipper(\%env, '--log-format', 'json', '-d', $node->connstr('postgres'),
		'-S', 'hb', '--target', 'stdout', '--metrics-address', "127.0.0.1:$bport", '-E', '0/1');
	isnt($rc, 0, 'metrics port in use: the shipper stops');
	my @j = map { eval { decode_json($_) } } grep { /\S/ } split /\n/, $err;
	is(scalar(@j), scalar(grep { /\S/ } split /\n/, $err), 'metrics port in use: every line is JSON') or diag($err);
	ok((grep { ($_->{message} // '') =~ /could not serve metrics on "127\.0\.0\.1:$bport": Address already in use/ } @j),
		'metrics port in use: names the address and the reason') or diag($err);
	unlike($err, qr/port 0/, 'metrics port in use: no "port 0"');
	close($busy);
}

# --heartbeat under synchronous replication with the standby away: the
# heartbeat's commit does not wait for it (it waited for ever, and SIGTERM
# was not honoured), and heartbeats still move the slot.
{
	$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{hb_sync,hb_sync_witness}'::text[]) s");
	$node->append_conf('postgresql.conf', "synchronous_standby_names = 'absent_standby'");
	$node->reload;
	my $slog = "$PostgreSQL::Test::Utils::tmp_check/hb_sync.log";
	my $hs = start_shipper(\%env, $slog, '-d', $connstr, '-S', 'hb_sync', '--target', 'stdout', '-s', '1',
		'--heartbeat', '1', '--shutdown-timeout', '3');
	my $beats = 0;
	my $until = time + 30;
	while (time < $until)
	{
		# (Peeking writes nothing: it does not wait for the standby.)
		$beats = $node->safe_psql('postgres', q{
SELECT count(*) FROM pg_logical_slot_peek_changes('hb_sync_witness', NULL, NULL,
	'include_messages', 'on', 'message_prefixes', 'fundrecs_heartbeat')});
		last if $beats >= 3;
		sleep 0.5;
	}
	cmp_ok($beats, '>=', 3, 'heartbeat under synchronous replication: heartbeats go on, the standby away');
	my $t = time;
	$hs->signal('TERM');
	$hs->finish;
	cmp_ok(time - $t, '<', 3 + 5, sprintf('heartbeat under synchronous replication: SIGTERM honoured in %.1f s', time - $t));
	$node->adjust_conf('postgresql.conf', 'synchronous_standby_names', "''");
	$node->reload;
}

# A monitor connection whose server process hangs (SIGSTOP: it answers
# neither the query nor its cancel): the query is given up after 10 s and
# the monitor connects again, so metrics and heartbeats keep their cadence;
# with the new one hung too, SIGTERM is still honoured within
# --shutdown-timeout (every monitor query is cancellable).
{
	$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('hung_monitor', 'fundrecs_decoder')");
	my $mlog = "$PostgreSQL::Test::Utils::tmp_check/hung_monitor.log";
	my $hm = start_shipper(\%env, $mlog, '-d', $connstr, '-S', 'hung_monitor', '--target', 'stdout', '-s', '1',
		'--heartbeat', '1', '--shutdown-timeout', '3');
	my $monitor_sql = "SELECT pid FROM pg_stat_activity WHERE application_name = 'fundrecs_shipper monitor' "
	  . "AND state IS NOT NULL ORDER BY backend_start DESC LIMIT 1";
	ok($node->poll_query_until('postgres', "SELECT count(*) > 0 FROM ($monitor_sql) m"), 'hung monitor: it connected');
	my $first = $node->safe_psql('postgres', $monitor_sql);
	kill 'STOP', $first;
	ok($node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM ($monitor_sql) m WHERE pid <> $first"),
		'hung monitor: a query given up, it connected again');
	like(slurp_file($mlog), qr/the server did not answer the monitor's query within 10 s; connecting again/,
		'hung monitor: it said so');
	my $second = $node->safe_psql('postgres', $monitor_sql);
	kill 'STOP', $second;
	sleep 1.5;
	my $t = time;
	$hm->signal('TERM');
	$hm->finish;
	my $secs = time - $t;
	is($hm->result(0), 0, 'hung monitor: exit 0 on SIGTERM');
	cmp_ok($secs, '<', 3 + 2, sprintf('hung monitor: SIGTERM honoured in %.1f s (--shutdown-timeout 3)', $secs));
	kill 'CONT', $first, $second;
}

# The server's own notices are JSON too: the plugin's WARNING (an orders
# table that does not exist) with its HINT, sent on the replication
# connection (libpq printed them as plain text).
{
	$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('noticed', 'fundrecs_decoder')");
	$node->safe_psql('postgres', "INSERT INTO fundrecs_schema.customers VALUES (424242, 'N', 'X')");
	my $nend = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	($rc, $out, $err) = run_shipper(\%env, '--log-format', 'json', '-d', $node->connstr('postgres'), '-S', 'noticed',
		'--target', 'stdout', '-o', 'orders_table=fundrecs_schema.no_such_orders', '--allow-no-tables', '-E', $nend);
	is($rc, 0, 'server notices: exit 0') or diag($err);
	my @lines = grep { /\S/ } split /\n/, $err;
	my @j = map { eval { decode_json($_) } } @lines;
	is(scalar(@j), scalar(@lines), 'server notices: every line is JSON') or diag($err);
	ok((grep { ($_->{level} // '') eq 'warning' && ($_->{message} // '') =~ /^server WARNING: orders table "fundrecs_schema\.no_such_orders" does not exist/ } @j),
		'server notices: the plugin\'s WARNING as a JSON warning') or diag($err);
	ok((grep { defined $_->{hint} && $_->{hint} =~ /orders_table/ } @j), 'server notices: its HINT on a line of its own')
	  or diag($err);
}

($rc, $out, $err) = run_shipper(\%env, '--log-format', 'xml', '-S', 's', '-d', 'x');
is($rc, 2, '--log-format xml: exit 2');
like($err, qr/invalid --log-format "xml": use text or json/, '--log-format xml: message');
($rc, $out, $err) = run_shipper(\%env, '--heartbeat', '0', '-S', 's', '-d', 'x');
is($rc, 2, '--heartbeat 0: exit 2');

done_testing();
