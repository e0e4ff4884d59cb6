# The initial load is safe against any interleaving of shippers, kills and
# restarts: a second shipper of the same slot waits instead of dropping the
# first one's slot, takes over when the first one dies, and kill -9 of
# either at random points always ends with every committed row shipped.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

needs(qw(shipper));

my %env = shipper_env();
my $node = new_cluster('race');
my $connstr = $node->connstr('postgres');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;

$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
	SELECT 1 + g % 3, 1 + g % 500, 1 + g % 5 FROM generate_series(1, 200000) g;
CREATE PROCEDURE writer(n int, customer int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1 + i % 3, customer, 1);
		COMMIT;
		PERFORM pg_sleep(0.005);
	END LOOP;
END $$;
});

my @ship = ('-d', $connstr, '--create-slot', '--if-not-exists', '--target', 'stdout', '-s', '1');

sub wait_for
{
	my ($what, $cond) = @_;
	my $deadline = time + 60;
	while (time < $deadline)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	diag("timed out waiting for $what");
	return 0;
}

sub load_state
{
	my ($slot) = @_;
	return $node->safe_psql('postgres',
		"SELECT consistent_lsn || ' ' || (finished_at IS NOT NULL) FROM fundrecs.load_state WHERE slot_name = '$slot'");
}

sub loading
{
	my ($slot) = @_;
	return load_state($slot) =~ /^(?!0\/0 )\S+ false$/;
}

# A shipper writing to a file; the test stops it (SIGSTOP) in the middle
# of its load and lets it go on later (SIGCONT).
sub start_to_file
{
	my ($slot, $out, $err) = @_;
	local %ENV = (%ENV, %env);
	delete $ENV{$_} for grep { !defined $env{$_} } keys %env;
	return IPC::Run::start([ $SHIPPER, @ship, '-S', $slot ], '<', \undef,
		'>', $out, '2>', $err);
}

sub file_has
{
	my ($file, $re) = @_;
	return -s $file && slurp_file($file) =~ $re;
}

# 0. A kill after the state row was written but before the slot existed:
#    the next run creates the slot and loads, it does not fail on a drop.
{
	$node->safe_psql('postgres',
		"INSERT INTO fundrecs.load_state (slot_name, consistent_lsn) VALUES ('race0', '0/0')");
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my ($rc, $out, $err) = run_shipper(\%env, @ship, '-S', 'race0', '-E', $end);
	is($rc, 0, 'killed before creating the slot: the next run succeeds') or diag($err);
	like($err, qr/did not finish; loading again/, 'killed before creating the slot: it loads again');
	like(load_state('race0'), qr/ true$/, 'killed before creating the slot: the load finished');
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'race0'"),
		'1', 'killed before creating the slot: the slot exists');
	$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('race0')");
}

# 1. The interleaving of the report: A loads, X commits, B starts with the
#    same command.  B must wait, not drop A's slot; B is killed; A finishes
#    and streams its own slot, and X arrives.
{
	my $errA = "$tmp/race_a.log";
	my $outA = "$tmp/race_a.out";
	my $a = start_to_file('race1', $outA, $errA);
	ok(wait_for('A to load', sub { loading('race1') }), 'A: loading');
	$a->signal('STOP');
	my $stateA = load_state('race1');
	$node->safe_psql('postgres',
		"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 424201, 1)");

	my $logB = "$tmp/race_b.log";
	my $b = start_shipper(\%env, $logB, @ship, '-S', 'race1');
	ok(wait_for('B to wait', sub { -s $logB && slurp_file($logB) =~ /is preparing or loading slot "race1".*waiting/ }),
		'B: waits for the shipper that holds the slot');
	like(slurp_file($logB), qr/server process \d+/, 'B: names the process it waits for');
	is(load_state('race1'), $stateA, 'B: left A\'s load state alone');
	my $slot_lsn = $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'race1'");
	is("$slot_lsn false", $stateA, 'B: left A\'s slot alone');
	$b->signal('KILL');
	$b->finish;
	$a->signal('CONT');

	ok(wait_for('X from A', sub { file_has($outA, qr/"op":"insert"[^\n]*"customer_id":424201/) }),
		'A: X arrived as a change after the load');
	ok(wait_for('A to finish', sub { load_state('race1') =~ / true$/ }), 'A: its load is finished');
	my ($lsnA) = split / /, $stateA;
	like(load_state('race1'), qr/^\Q$lsnA\E true$/, 'A: finished the load of its own slot');
	unlike(slurp_file($logB), qr/loading again/, 'B: never loaded');
	$a->signal('TERM');
	$a->finish;
	is($a->result(0), 0, 'A: exit code 0 on SIGTERM');
}

# 2. A is killed while B waits: B takes over, loads again with a new slot,
#    and ships both X (in its load) and a later change Y.
{
	my $a = start_to_file('race2', "$tmp/race2_a.out", "$tmp/race2_a.log");
	ok(wait_for('A to load', sub { loading('race2') }), 'A: loading');
	$a->signal('STOP');
	$node->safe_psql('postgres',
		"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 424202, 1)");
	my $logB = "$tmp/race2_b.log";
	my $outB = "$tmp/race2_b.out";
	local %ENV = (%ENV, %env);
	delete $ENV{$_} for grep { !defined $env{$_} } keys %env;
	my $b = IPC::Run::start([ $SHIPPER, @ship, '-S', 'race2' ], '<', \undef, '>', $outB, '2>', $logB);
	ok(wait_for('B to wait', sub { -s $logB && slurp_file($logB) =~ /waiting/ }), 'B: waits');
	$a->signal('KILL');
	$a->finish;
	ok(wait_for('B to load and stream', sub { load_state('race2') =~ / true$/ }), 'B: took over and finished a load');
	like(slurp_file($logB), qr/the initial load of slot "race2" did not finish; loading again with a new slot/,
		'B: said why it loads again');
	$node->safe_psql('postgres',
		"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 424203, 1)");
	ok(wait_for('Y', sub { -s $outB && slurp_file($outB) =~ /"customer_id":424203/ }), 'B: streams later changes');
	my $out = slurp_file($outB);
	like($out, qr/"op":"load"[^\n]*"customer_id":424202/, 'B: X, committed during A\'s load, arrived in B\'s load');
	like($out, qr/\A\{"op":"reset",[^\n]*"table":"resync"[^\n]*\n\{"op":"load"/,
		'B: a reset marker precedes the load that replaces A\'s');
	$b->signal('TERM');
	$b->finish;
}

# 3. kill -9 at random points of one or two shippers of a slot while a
#    writer commits; a last run to the end position; every committed order
#    is in what the shippers wrote.
{
	srand($ENV{FUNDRECS_TEST_SEED} // time);
	my $out = "$tmp/race3.out";
	my $writer = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-c', 'CALL writer(1200, 515151)' ],
		'>', '/dev/null', '2>', "$tmp/race3_writer.log");
	local %ENV = (%ENV, %env);
	delete $ENV{$_} for grep { !defined $env{$_} } keys %env;
	for my $round (1 .. 8)
	{
		my @h;
		my $n = 1 + ($round % 2);
		for (1 .. $n)
		{
			push @h, IPC::Run::start([ $SHIPPER, @ship, '-S', 'race3' ], '<', \undef,
				'>>', $out, '2>>', "$tmp/race3.log");
			usleep(int(rand(300_000)));
		}
		usleep(100_000 + int(rand(2_500_000)));
		my $victim = int(rand($n));
		$h[$victim]->signal('KILL');
		$h[$victim]->finish;
		for my $i (0 .. $#h)
		{
			next if $i == $victim;
			$h[$i]->signal(rand() < 0.5 ? 'KILL' : 'TERM');
			$h[$i]->finish;
		}
	}
	$writer->finish;
	is($writer->full_result(0), 0, 'the writer committed everything');
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my ($rc) = IPC::Run::run([ $SHIPPER, @ship, '-S', 'race3', '-E', $end ], '<', \undef,
		'>>', $out, '2>>', "$tmp/race3.log", IPC::Run::timeout(300));
	ok($rc, 'the last shipper reached the end position');

	my %seen;
	open(my $fh, '<', $out) or die $!;
	while (my $line = <$fh>)
	{
		# A kill may cut the last line; such a row was never confirmed.
		my $row = eval { decode_json($line) } or next;
		next unless $row->{table} eq 'orders' && $row->{data};
		$seen{ $row->{data}{order_id} } = 1;
	}
	close $fh;
	my @ids = split /\n/, $node->safe_psql('postgres', 'SELECT order_id FROM fundrecs_schema.orders ORDER BY 1');
	my @missing = grep { !$seen{$_} } @ids;
	is(scalar @missing, 0, 'every committed order was shipped (' . scalar(@ids) . ' orders'
		  . (@missing ? ", first missing: $missing[0]" : '') . ')');
	my $written = $node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs_schema.orders WHERE customer_id = 515151');
	is($written, 1200, 'the writer\'s rows are all in the table');
}

done_testing();
