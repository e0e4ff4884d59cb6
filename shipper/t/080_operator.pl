# What an operator runs into: a renamed enrichment column with changes still
# in the slot, a plugin error that repeats at one position, a "tables" typo,
# option values with quotes and backslashes, a first connection that cannot
# work, endpoints that cannot be right, a clock-skew refusal, --endpos, and
# the whole pipeline run as a role with exactly the grants the README lists.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use IO::Socket::INET;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

needs(qw(shipper kinesalite node boto3));

my %env = shipper_env();
my $node = new_cluster('operator');
my $connstr = $node->connstr('postgres');
my @stdout = ('-d', $connstr, '--target', 'stdout');

sub rows
{
	my ($out) = @_;
	return [ map { decode_json($_) } grep { /^\{/ } split /\n/, $out ];
}

sub end_lsn { return $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()'); }

# 1. Order A, rename, order B, all while no shipper runs.
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('op_rename', 'fundrecs_decoder')");
$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 501, 2);
ALTER TABLE fundrecs_schema.orders RENAME quantity TO qty;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, qty) VALUES (1, 502, 3);
});
my $end = end_lsn();
my $t0 = time;
my ($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_rename', '-E', $end);
is($rc, 2, 'renamed column, old name: a configuration error (exit 2), not a loop');
cmp_ok(time - $t0, '<', 10, 'renamed column, old name: at once');
like($err, qr/column "quantity" of orders table "fundrecs_schema.orders" does not exist/, 'renamed column: names the column');
like($err, qr/Set the plugin option "quantity_column" to the column's current name/, 'renamed column: says the fix');
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_rename', '-E', $end, '-o', 'quantity_column=qty');
is($rc, 0, 'renamed column, new name: ships');
my $r = rows($out);
is_deeply([ map { [ $_->{data}{customer_id}, $_->{data}{total_price} ] } @$r ], [ [ 501, 2400 ], [ 502, 3600 ] ],
	'rows from before and after the rename are both enriched');

# 2. A change the plugin cannot decode (on_enrich_error=fail): the same
#    error three times at one position is an exit 1, not an endless loop;
#    with on_enrich_error=emit the row ships to route _error.
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('op_fail', 'fundrecs_decoder')");
$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, qty) VALUES (1, 503, 1);
ALTER TABLE fundrecs_schema.orders ADD COLUMN units int;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, qty, units) VALUES (1, 504, 1, 5);
});
$end = end_lsn();
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_fail', '-E', $end, '-o', 'quantity_column=units');
is($rc, 1, 'decode failure: exit 1');
like($err, qr/the stream failed 3 times in a row at [0-9A-F]+\/[0-9A-F]+ with the same error/, 'decode failure: says it repeats');
like($err, qr/could not enrich the change at [0-9A-F]+\/[0-9A-F]+ of table "fundrecs_schema.orders"/,
	'decode failure: the plugin\'s error names the LSN and the table');
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_fail', '-E', $end, '-o', 'quantity_column=units',
	'-o', 'on_enrich_error=emit');
is($rc, 0, 'on_enrich_error=emit: ships');
$r = rows($out);
is_deeply([ map { [ $_->{data}{customer_id}, $_->{route} ] } @$r ], [ [ 503, '_error' ], [ 504, 'electronics' ] ],
	'on_enrich_error=emit: the row before the column existed goes to _error, the next is enriched');
ok(defined $r->[0]{enrich_error}, 'on_enrich_error=emit: the row says why');
$node->safe_psql('postgres', 'ALTER TABLE fundrecs_schema.orders RENAME qty TO quantity');

# 3. A "tables" typo: refused before anything is confirmed.
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('op_typo', 'fundrecs_decoder')");
$node->safe_psql('postgres', "INSERT INTO fundrecs_schema.customers VALUES (601, 'Typo', 'x')");
$end = end_lsn();
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_typo', '-E', $end, '-o', 'tables=fundrecs_schema.custmers');
is($rc, 2, 'tables typo: exit 2');
like($err, qr/plugin option "tables": table "fundrecs_schema.custmers" does not exist/, 'tables typo: names it');
like($err, qr/--allow-no-tables/, 'tables typo: names the way out');
is($node->safe_psql('postgres', "SELECT confirmed_flush_lsn < '$end' FROM pg_replication_slots WHERE slot_name = 'op_typo'"),
	't', 'tables typo: nothing confirmed');
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_typo', '-E', $end, '-o', 'orders_table=fundrecs_schema.ordrs');
is($rc, 2, 'orders_table typo: exit 2');
like($err, qr/orders table "fundrecs_schema.ordrs" does not exist/, 'orders_table typo: names it');
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_typo', '-E', $end, '-o', 'tables=fundrecs_schema.custmers',
	'--allow-no-tables');
is($rc, 0, '--allow-no-tables: starts anyway');
like($err, qr/warning: plugin option "tables"/, '--allow-no-tables: still warns');
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_typo', '-E', $end, '-o', 'tables=nodot');
is($rc, 2, 'a bad plugin option: exit 2');
like($err, qr/invalid value "nodot" for option "tables"/, 'a bad plugin option: the plugin\'s message');

# 4. Option values with a backslash and a quote reach the plugin intact.
$node->safe_psql('postgres', q{
CREATE TABLE fundrecs_schema."a\b" (id int PRIMARY KEY);
CREATE TABLE fundrecs_schema."it's" (id int PRIMARY KEY);
SELECT pg_create_logical_replication_slot('op_quote', 'fundrecs_decoder');
INSERT INTO fundrecs_schema."a\b" VALUES (1);
INSERT INTO fundrecs_schema."it's" VALUES (2);
});
$end = end_lsn();
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_quote', '-E', $end,
	'-o', q{tables=fundrecs_schema.a\b, fundrecs_schema."it's"});
is($rc, 0, 'quoted option values: exit 0') or diag($err);
is_deeply([ map { $_->{table} } @{ rows($out) } ], [ 'a\b', q{it's} ], 'quoted option values: both tables captured');

# 5. A first connection that cannot work: exit 1 at once, like pg_recvlogical.
$t0 = time;
($rc, $out, $err) = run_shipper(\%env, '-d', $node->connstr('nosuchdb'), '--target', 'stdout', '-S', 'x');
is($rc, 1, 'unknown database: exit 1');
like($err, qr/database "nosuchdb" does not exist/, 'unknown database: the server\'s message');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-U', 'nosuchrole', '--target', 'stdout', '-S', 'x');
is($rc, 1, 'unknown role: exit 1');
cmp_ok(time - $t0, '<', 10, 'first connection failures: at once');

# 6. Endpoints that cannot be right fail at start-up, not after --retry-timeout.
my ($kport) = start_kinesalite();
$t0 = time;
($rc, $out, $err) = run_shipper(\%env, @stdout[0, 1], '-S', 'x', '--stream', 's',
	'--endpoint-url', 'http://fundrecs-no-such-host.invalid:4567');
is($rc, 1, 'unresolvable endpoint host: exit 1');
like($err, qr/host name does not resolve/, 'unresolvable endpoint host: says so');
($rc, $out, $err) = run_shipper(\%env, @stdout[0, 1], '-S', 'x', '--stream', 's',
	'--endpoint-url', "https://127.0.0.1:$kport");
is($rc, 1, 'https on an http port: exit 1');
like($err, qr/scheme \(http or https\) must match/, 'https on an http port: says so');
my $tlsport = PostgreSQL::Test::Cluster::get_free_port();
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1',
	'-keyout', "$tmp/tls.key", '-out', "$tmp/tls.crt", '-loglevel', 'error') == 0 or
  system("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 -keyout $tmp/tls.key -out $tmp/tls.crt 2>/dev/null") == 0
  or die 'openssl req failed';
my $tls = IPC::Run::start([ 'openssl', 's_server', '-quiet', '-accept', $tlsport, '-cert', "$tmp/tls.crt",
	'-key', "$tmp/tls.key", '-www' ], '<', \undef, '>', '/dev/null', '2>', '/dev/null');
wait_for_port($tlsport, 'openssl s_server');
($rc, $out, $err) = run_shipper(\%env, @stdout[0, 1], '-S', 'x', '--stream', 's',
	'--endpoint-url', "http://127.0.0.1:$tlsport");
is($rc, 1, 'http on an https port: exit 1');
like($err, qr/scheme \(http or https\) must match/, 'http on an https port: says so');
cmp_ok(time - $t0, '<', 30, 'wrong endpoints: found out at start-up');
$tls->kill_kill;

# 7. A clock-skew refusal gets a hint about the clock.
my $skew = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', ReuseAddr => 1)
  or die $!;
my $pid = fork();
if ($pid == 0)
{
	while (my $c = $skew->accept)
	{
		my $req = '';
		while (my $line = <$c>) { $req .= $line; last if $line eq "\r\n"; }
		my ($len) = $req =~ /content-length:\s*(\d+)/i;
		read($c, my $body, $len) if $len;
		my $msg = '{"__type":"InvalidSignatureException","message":"Signature expired: 20200101T000000Z is now earlier than 20260101T000000Z (20260101T000500Z - 5 min.)"}';
		print $c "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: "
		  . length($msg) . "\r\nConnection: close\r\n\r\n$msg";
		close $c;
	}
	exit 0;
}
($rc, $out, $err) = run_shipper(\%env, @stdout[0, 1], '-S', 'x', '--stream', 's',
	'--endpoint-url', 'http://127.0.0.1:' . $skew->sockport);
kill 'KILL', $pid;
waitpid($pid, 0);
is($rc, 1, 'clock skew: exit 1');
like($err, qr/check this machine's clock/, 'clock skew: the hint is about the clock');
unlike($err, qr/IAM policy/, 'clock skew: not about the IAM policy');

# 8. --endpos: never confirmed past, even when the server reports more.
$node->safe_psql('postgres', q{
CREATE TABLE public.not_captured (id int PRIMARY KEY);
SELECT pg_create_logical_replication_slot('op_endpos', 'fundrecs_decoder');
INSERT INTO fundrecs_schema.customers VALUES (701, 'End', 'x');
});
$end = end_lsn();
$node->safe_psql('postgres', 'INSERT INTO public.not_captured SELECT g FROM generate_series(1, 20000) g');
($rc, $out, $err) = run_shipper(\%env, @stdout, '-S', 'op_endpos', '-E', $end, '-s', '1');
is($rc, 0, '--endpos: exit 0');
is($node->safe_psql('postgres', "SELECT confirmed_flush_lsn <= '$end' FROM pg_replication_slots WHERE slot_name = 'op_endpos'"),
	't', '--endpos: the slot is not confirmed past it');

# 9. The whole pipeline as a role with exactly the grants of the README.
my $readme = slurp_file("$FindBin::Bin/../../README.md");
my ($grants) = $readme =~ /<!-- grants -->\s*(?:<!--[^>]*-->\s*)*```sql\n(.*?)```/s;
ok(defined $grants, 'the README lists the grants');
$grants =~ s/PASSWORD '[^']*'//;
$node->safe_psql('postgres', $grants);
$node->safe_psql('postgres', q{INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (2, 801, 1)});
my $h = start_shipper(\%env, "$tmp/grants.log", '-d', $connstr, '-U', 'cdc', '--target', 'stdout',
	'-S', 'op_grants', '--create-slot', '--if-not-exists', '-s', '1');
ok($node->poll_query_until('postgres',
	"SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'op_grants'"),
	'grants: the initial load finished');
$node->safe_psql('postgres', q{INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (3, 802, 1)});
$end = end_lsn();
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'op_grants'"),
	'grants: the change was shipped and confirmed');
$h->signal('TERM');
$h->finish;
my $log = slurp_file("$tmp/grants.log");
my @loaded = grep { /"op":"load"/ && /"customer_id":801/ } split /\n/, $log;
my @changed = grep { /"op":"insert"/ && /"customer_id":802/ } split /\n/, $log;
is(scalar @loaded, 1, 'grants: the load row is enriched and shipped') or diag($log);
like($loaded[0] // '', qr/"product_name":"Phone"/, 'grants: the load read the products');
is(scalar @changed, 1, 'grants: the change is shipped');
unlike($log, qr/permission denied/, 'grants: no permission error');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-U', 'cdc', '--target', 'stdout', '-S', 'op_grants2',
	'--create-slot', '--no-load', '-E', '0/1');
is($rc, 0, 'grants: --no-load works with the same grants') or diag($err);

done_testing();
