# The initial load: rows that exist when the slot is created arrive once as
# "load", changes made during and after the load arrive once as changes;
# an interrupted load is done again; the DMS format passes through to a
# consumer written to the seed Lambda's contract.
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
my $node = new_cluster('load');
my $connstr = $node->connstr('postgres');
my ($kport) = start_kinesalite();
my ($pport) = start_proxy($kport);
my @kin = ('--endpoint-url', "http://127.0.0.1:$pport");

$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.customers SELECT g, 'Customer ' || g, 'City ' || g FROM generate_series(1, 500) g;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
	SELECT 1 + g % 3, 1 + g % 500, 1 + g % 5 FROM generate_series(1, 20000) g;
CREATE PROCEDURE writer(n int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1 + i % 3, 1, i % 7);
		UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id = 1 + (i * 37) % 20000;
		DELETE FROM fundrecs_schema.orders WHERE order_id = 1 + (i * 101) % 20000;
		COMMIT;
		PERFORM pg_sleep(0.002);
	END LOOP;
END $$;
});

sub lsn_value
{
	my ($lsn) = @_;
	my ($hi, $lo) = split m{/}, $lsn;
	return hex($hi) * 4294967296 + hex($lo);
}

# Replays a stream (load rows, then changes in shard order) into the final
# state per key, and checks it against a fresh load of the tables now.
sub check_replay
{
	my ($stream, $name, $reloaded) = @_;
	my $recs = read_stream($kport, $stream);
	my (%state, %loads, %seen_change, $dup_loads, $dup_changes);
	my %by_shard;
	push @{ $by_shard{ $_->{shard} } }, $_ for @$recs;
	# A load done again is preceded by a reset marker: whatever is older
	# than the marker (the interrupted load's rows) is dropped, on every shard.
	my $reset = 0;
	foreach my $r (@$recs)
	{
		$reset = lsn_value($r->{row}{commit_lsn}) if $r->{row}{op} eq 'reset' && lsn_value($r->{row}{commit_lsn}) > $reset;
	}
	foreach my $r (map { @{ $by_shard{$_} } } sort keys %by_shard)
	{
		my $row = $r->{row};
		my $k = "$row->{table}:" . encode_json($row->{key});
		next if $row->{op} eq 'reset';
		if ($row->{op} eq 'load')
		{
			$dup_loads++ if $loads{$k}++;
			$state{$k} = $row->{data} if lsn_value($row->{commit_lsn}) >= $reset;
		}
		elsif (lsn_value($row->{commit_lsn}) < $reset)
		{
			next;
		}
		else
		{
			$dup_changes++ if $seen_change{"$row->{lsn} $k"}++;
			if ($row->{op} eq 'delete') { delete $state{$k}; }
			else { $state{$k} = $row->{data}; }
		}
	}
	my %now;
	foreach my $t (qw(orders customers))
	{
		foreach my $line (split /\n/, $node->safe_psql('postgres',
			"SELECT fundrecs.load_rows('fundrecs_schema.$t', '0/1', '{}')"))
		{
			my $row = decode_json($line);
			$now{"$row->{table}:" . encode_json($row->{key})} = $row->{data};
		}
	}
	if ($reloaded)
	{
		ok($dup_loads, "$name: rows of the interrupted load were loaded again");
		ok($reset, "$name: a reset marker came with the new load");
	}
	else
	{
		ok(!$dup_loads, "$name: no row was loaded twice");
		ok(!$reset, "$name: no reset marker");
	}
	ok(!$dup_changes, "$name: no change was shipped twice");
	is(scalar keys %state, scalar keys %now, "$name: as many rows as the tables hold");
	my $json = JSON::PP->new->canonical;
	my @diff = grep { !defined $state{$_} || $json->encode($state{$_}) ne $json->encode($now{$_}) } keys %now;
	is(scalar @diff, 0, "$name: load + changes replay to the tables' content" . (@diff ? " (first: $diff[0])" : ''));
	return ($recs, \%loads);
}

# 1. A load while a workload keeps writing.
kinesis_tool($kport, 'create', 'loaded', 2);
my $log = "$PostgreSQL::Test::Utils::tmp_check/load1.log";
my $writer = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-c', 'CALL writer(1500)' ],
	'>', '/dev/null', '2>', "$PostgreSQL::Test::Utils::tmp_check/writer.log");
usleep(200_000);
my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'load_slot', '--create-slot', @kin,
	'--stream', 'loaded', '-v', '-s', '1');
$writer->finish;
is($writer->full_result(0), 0, 'the concurrent writer ran');
my $target = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$target' FROM pg_replication_slots WHERE slot_name = 'load_slot'"),
	'the shipper caught up after the load');
$h->signal('TERM');
$h->finish;
my $out = slurp_file($log);
# With the planner's estimate, or saying there is none (tables never analyzed).
like($out, qr/initial load of \d+ tables (?:\(~\d+ rows\) at [0-9A-F]+\/[0-9A-F]+|at [0-9A-F]+\/[0-9A-F]+ \(no row estimate: not analyzed yet\))/,
	'the load announced itself');
like($out, qr/initial load: \d+ rows in [\d.]+ s/, 'the load reported its total');
my ($recs, $loads) = check_replay('loaded', 'load during writes');
cmp_ok(scalar keys %$loads, '>=', 20000, 'every existing row arrived as a load row');
my @changes = grep { $_->{row}{op} ne 'load' } @$recs;
cmp_ok(scalar @changes, '>', 0, 'changes made during the load arrived as changes (' . scalar(@changes) . ')');
my $consistent = $node->safe_psql('postgres', "SELECT consistent_lsn FROM fundrecs.load_state WHERE slot_name = 'load_slot'");
is((grep { $_->{row}{op} eq 'load' && $_->{row}{lsn} ne $consistent } @$recs), 0,
	'load rows carry the consistent point as their LSN');
is($node->safe_psql('postgres', "SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'load_slot'"),
	't', 'the load is recorded as finished');

# 2. Kill in the middle of a load: the restart loads again, nothing is missing.
kinesis_tool($kport, 'create', 'reloaded', 2);
$log = "$PostgreSQL::Test::Utils::tmp_check/load2.log";
$h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'kill_slot', '--create-slot', @kin,
	'--stream', 'reloaded', '--batch-records', '20', '--linger-ms', '0');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM fundrecs.load_state WHERE slot_name = 'kill_slot' AND finished_at IS NULL"),
	'a load is under way');
usleep(500_000);
$h->signal('KILL');
$h->finish;
is($node->safe_psql('postgres', "SELECT finished_at IS NULL FROM fundrecs.load_state WHERE slot_name = 'kill_slot'"),
	't', 'the killed load is recorded as unfinished');
$node->safe_psql('postgres', 'CALL writer(50)');
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$log = "$PostgreSQL::Test::Utils::tmp_check/load3.log";
$h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'kill_slot', @kin, '--stream', 'reloaded', '-s', '1');
ok($node->poll_query_until('postgres',
	"SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'kill_slot'"),
	'the restarted shipper finished a new load');
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'kill_slot'"),
	'and caught up');
$h->signal('TERM');
$h->finish;
like(slurp_file($log), qr/the initial load of slot "kill_slot" did not finish; loading again with a new slot/,
	'the restart said why it loads again');
check_replay('reloaded', 'after a killed load', 1);

# 3. --no-load: only changes.
kinesis_tool($kport, 'create', 'noload', 1);
my ($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'noload_slot', '--create-slot',
	'--no-load', @kin, '--stream', 'noload', '-E', '0/1');
is($rc, 0, '--no-load: exit code 0');
$node->safe_psql('postgres', "INSERT INTO fundrecs_schema.customers VALUES (9001, 'After', 'x')");
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'noload_slot', @kin, '--stream', 'noload',
	'-E', $end);
is($rc, 0, '--no-load: the stream runs');
my $nl = read_stream($kport, 'noload', 1);
is(scalar @$nl, 1, '--no-load: only the change arrived');
is($nl->[0]{row}{op}, 'insert', '--no-load: it is an insert');

# 4. The DMS format: load and changes, read by a consumer written to the
#    seed Lambda's contract, which needs no change.
kinesis_tool($kport, 'create', 'dms', 2);
$node->safe_psql('postgres', q{
CREATE TABLE fundrecs_schema.audit (id int PRIMARY KEY);
});
$log = "$PostgreSQL::Test::Utils::tmp_check/dms.log";
$h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'dms_slot', '--create-slot', @kin, '--stream', 'dms',
	'-o', 'format=dms', '-s', '1');
ok($node->poll_query_until('postgres',
	"SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'dms_slot'"), 'dms: loaded');
$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (3, 1, 2), (1, 2, 1);
UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id = 2;
DELETE FROM fundrecs_schema.orders WHERE order_id = 3;
TRUNCATE fundrecs_schema.audit;
});
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'dms_slot'"), 'dms: caught up');
$h->signal('TERM');
$h->finish;

my $products = "$E2E_DIR/../data/product_details.json";
my $consumer;
IPC::Run::run([ '/usr/bin/python3', "$E2E_DIR/dms_consumer.py", '--endpoint', "http://127.0.0.1:$kport",
	'dms', $products ], '>', \$consumer) or die 'dms_consumer failed';
my $got = decode_json($consumer);
is($got->{skipped}, 1, 'dms: the TRUNCATE control record was skipped');
cmp_ok($got->{operations}{load}, '>', 20000, 'dms: load records');
is($got->{operations}{insert}, 2, 'dms: insert records');
is($got->{operations}{update}, 1, 'dms: update records');
is($got->{operations}{delete}, 1, 'dms: delete records');
cmp_ok($got->{customers}, '>=', 500, 'dms: customers collected');
# The consumer's per-category totals equal the same sums over the stream's
# own enrichment (the plugin priced each row as of its change).
my $dms = read_stream($kport, 'dms');
my %want;
foreach my $r (@$dms)
{
	my $d = $r->{row};
	next if $d->{metadata}{'record-type'} eq 'control' || $d->{metadata}{'table-name'} ne 'orders';
	next unless defined $d->{data}{product_id} && $d->{data}{product_id} =~ /^[123]$/;
	my $slug = $d->{data}{category} ? lc($d->{data}{category}) =~ s/[^a-z0-9]+/_/gr : undef;
	next unless $slug;
	$want{$slug}[0]++;
}
is_deeply({ map { $_ => $got->{orders}{$_}[0] } keys %{ $got->{orders} } }, { map { $_ => $want{$_}[0] } keys %want },
	'dms: the Lambda-style consumer routes every order by category');
ok((!grep { $_->{row}{metadata}{'record-type'} eq 'data' && !exists $_->{row}{data} } @$dms),
	'dms: every data record has data');
is(proxy_stats($pport)->{mismatches}, 0, 'every signature verified');

done_testing();
