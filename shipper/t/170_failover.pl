# Failover and lost slots.
#
# 1. A slot whose initial load finished (fundrecs.load_state says so) is
#    gone, as after a failover to a standby that had no copy of it.
#    --create-slot --if-not-exists, a plain start and --no-load all refuse
#    with exit 3 and name --resync; nothing is created.  --resync ships a
#    reset marker row at the new slot's consistent point, then the load: a
#    consumer that drops what it holds from before the marker ends with
#    exactly the table, the row deleted while the slot was gone included.
# 2. PostgreSQL 17 and later: --enable-failover creates a failover slot; a
#    physical standby with sync_replication_slots keeps a copy of it; after
#    the primary dies and the standby is promoted, the shipper goes on from
#    the copy with the documented command line, and the changes made after
#    its last confirmation (a delete among them) arrive as changes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

needs(qw(shipper));

my %env = shipper_env();
my $tmp = $PostgreSQL::Test::Utils::tmp_check;

sub rows_of
{
	my ($out) = @_;
	return [ map { decode_json($_) } grep { length } split /\n/, $out ];
}

sub lsn_value
{
	my ($lsn) = @_;
	my ($hi, $lo) = split m{/}, $lsn;
	return hex($hi) * 4294967296 + hex($lo);
}

# A consumer of the documented rules: per key, the version with the highest
# lsn wins; a delete removes the key; a reset marker drops every key whose
# last version committed before the marker, and later rows committed before it.
sub apply_rows
{
	my ($state, $rows) = @_;
	foreach my $r (@$rows)
	{
		my $lsn = lsn_value($r->{commit_lsn});
		if ($r->{op} eq 'reset')
		{
			$state->{reset} = $lsn;
			delete @{ $state->{keys} }{ grep { $state->{keys}{$_}{lsn} < $lsn } keys %{ $state->{keys} } };
			next;
		}
		next if $r->{table} ne 'orders';
		next if defined $state->{reset} && $lsn < $state->{reset};
		my $k = $r->{key}{order_id};
		my $cur = $state->{keys}{$k};
		next if $cur && $cur->{lsn} > $lsn;
		$state->{keys}{$k} = { lsn => $lsn, op => $r->{op} };
	}
	return;
}

sub live_keys
{
	my ($state) = @_;
	return join(',', sort { $a <=> $b } grep { $state->{keys}{$_}{op} ne 'delete' } keys %{ $state->{keys} });
}

# 1. A lost slot.
{
	my $node = new_cluster('lost');
	my $connstr = $node->connstr('postgres');
	my @ship = ('-d', $connstr, '-S', 'lost', '--target', 'stdout');
	$node->safe_psql('postgres',
		'INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1 + g % 3, g, g FROM generate_series(1, 5) g');
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my ($rc, $out, $err) = run_shipper(\%env, @ship, '--create-slot', '-E', $end);
	is($rc, 0, 'lost slot: the first run loads') or diag($err);
	my %consumer;
	apply_rows(\%consumer, rows_of($out));
	is(live_keys(\%consumer), '1,2,3,4,5', 'lost slot: the consumer holds the five orders');

	# Restarts with the documented options keep the record of the load.
	($rc, $out, $err) = run_shipper(\%env, @ship, '--create-slot', '--if-not-exists', '-E', $end);
	is($rc, 0, 'lost slot: a restart with --create-slot --if-not-exists') or diag($err);
	like($err, qr/shipped 0 rows, confirmed up to/, 'lost slot: the restart streams from the slot');
	is($node->safe_psql('postgres', "SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'lost'"),
		't', 'lost slot: the restart leaves the record of the load');
	($rc, $out, $err) = run_shipper(\%env, @ship, '--create-slot', '-n');
	is($rc, 1, 'lost slot: --create-slot without --if-not-exists on a loaded slot: exit 1');
	like($err, qr/replication slot "lost" already exists/, 'lost slot: says the slot exists');

	# Changes after the last confirmation, then the slot is lost.
	$node->safe_psql('postgres', q{
UPDATE fundrecs_schema.orders SET quantity = 100 WHERE order_id = 1;
DELETE FROM fundrecs_schema.orders WHERE order_id = 2;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 6, 6);
SELECT pg_drop_replication_slot('lost');
});
	my $state_before = $node->safe_psql('postgres',
		"SELECT consistent_lsn || ' ' || finished_at FROM fundrecs.load_state WHERE slot_name = 'lost'");

	foreach my $case ([ 'create-slot --if-not-exists', '--create-slot', '--if-not-exists' ],
		[ 'plain start' ], [ 'create-slot --no-load', '--create-slot', '--no-load' ])
	{
		my ($name, @args) = @$case;
		($rc, $out, $err) = run_shipper(\%env, @ship, @args, '-n');
		is($rc, 3, "lost slot, $name: exit 3 (permanent)");
		like($err, qr/replication slot "lost" does not exist, but fundrecs\.load_state shows that it was created at \S+ and its initial load finished/,
			"lost slot, $name: says what is wrong");
		like($err, qr/never the rows deleted in between/, "lost slot, $name: says what would be lost");
		like($err, qr/--resync/, "lost slot, $name: names --resync");
		is($out, '', "lost slot, $name: nothing shipped");
	}
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'lost'"),
		'0', 'lost slot: no slot was created');
	is($node->safe_psql('postgres',
		"SELECT consistent_lsn || ' ' || finished_at FROM fundrecs.load_state WHERE slot_name = 'lost'"),
		$state_before, 'lost slot: its load state is untouched');

	($rc, $out, $err) = run_shipper(\%env, @ship, '--resync', '--no-load');
	is($rc, 2, '--resync --no-load: a usage error');

	$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	($rc, $out, $err) = run_shipper(\%env, @ship, '--resync', '-E', $end);
	is($rc, 0, '--resync: exit 0') or diag($err);
	my $rows = rows_of($out);
	is($rows->[0]{op}, 'reset', '--resync: the first row is the reset marker');
	is_deeply([ @{ $rows->[0] }{qw(schema table route)} ], [ 'fundrecs', 'resync', '_resync' ],
		'--resync: the marker\'s schema, table and route');
	is($rows->[0]{data}{slot_name}, 'lost', '--resync: the marker names the slot');
	my $consistent = $node->safe_psql('postgres', "SELECT consistent_lsn FROM fundrecs.load_state WHERE slot_name = 'lost'");
	is($rows->[0]{lsn}, $consistent, '--resync: the marker is at the new load\'s consistent point');
	is(scalar(grep { $_->{op} eq 'load' && $_->{lsn} eq $consistent } @$rows), 5,
		'--resync: then every order, as load rows');
	apply_rows(\%consumer, $rows);
	is(live_keys(\%consumer), $node->safe_psql('postgres',
		"SELECT string_agg(order_id::text, ',' ORDER BY order_id) FROM fundrecs_schema.orders"),
		'--resync: the consumer holds exactly the table (the deleted order is gone)');
	is($node->safe_psql('postgres', "SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'lost'"),
		't', '--resync: its load finished');

	# The DMS format's marker is a control record.
	$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('lost')");
	$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	($rc, $out, $err) = run_shipper(\%env, @ship, '--resync', '-o', 'format=dms', '-E', $end);
	is($rc, 0, '--resync, format=dms: exit 0') or diag($err);
	$rows = rows_of($out);
	is_deeply([ @{ $rows->[0]{metadata} }{qw(record-type operation table-name)} ], [ 'control', 'reset', 'resync' ],
		'--resync, format=dms: the marker is a control record');
	is($rows->[1]{metadata}{operation}, 'load', '--resync, format=dms: the load follows');

	# Failover slots need 17; on older servers the option says so.
	if ($node->safe_psql('postgres', 'SHOW server_version_num') < 170000)
	{
		($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'fo15', '--target', 'stdout',
			'--create-slot', '--enable-failover', '-n');
		is($rc, 3, '--enable-failover before 17: exit 3');
		like($err, qr/--enable-failover needs PostgreSQL 17 or later/, '--enable-failover before 17: says why');
	}
	$node->stop;
}

# 2. A failover slot survives the promotion of a physical standby.
SKIP:
{
	my $primary = new_cluster('primary');
	my $version = $primary->safe_psql('postgres', 'SHOW server_version_num');
	skip "failover slots need PostgreSQL 17 or later (the server is $version)", 11 if $version < 170000;

	# A standby from a cold copy (the npm builds have no pg_basebackup),
	# streaming through a physical slot, synchronizing failover slots.
	$primary->stop;
	$primary->backup_fs_cold('cold');
	$primary->start;
	$primary->safe_psql('postgres', "SELECT pg_create_physical_replication_slot('phys')");
	my $standby = PostgreSQL::Test::Cluster->new('standby');
	$standby->init_from_backup($primary, 'cold');
	$standby->set_standby_mode;
	(my $primary_conninfo = $primary->connstr('postgres') . ' application_name=standby') =~ s/'/''/g;
	$standby->append_conf('postgresql.conf', qq{
primary_conninfo = '$primary_conninfo'
primary_slot_name = 'phys'
hot_standby_feedback = on
sync_replication_slots = on
});
	$standby->start;
	# Logical decoding never gets ahead of the standby.
	$primary->safe_psql('postgres', "ALTER SYSTEM SET synchronized_standby_slots = 'phys'; SELECT pg_reload_conf()");

	my $out1 = "$tmp/failover1.out";
	my $log1 = "$tmp/failover1.log";
	my @slot_args = ('-S', 'fo', '--target', 'stdout', '--create-slot', '--if-not-exists', '--enable-failover', '-s', '1');
	my $h = IPC::Run::start([ $FundrecsE2E::SHIPPER, '-d', $primary->connstr('postgres'), @slot_args ],
		'<', \undef, '>', $out1, '2>', $log1);
	ok($primary->poll_query_until('postgres', "SELECT failover FROM pg_replication_slots WHERE slot_name = 'fo'"),
		'failover slot: created with failover = true');
	$primary->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1 + g % 3, g, g FROM generate_series(1, 20) g;
UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id <= 5;
DELETE FROM fundrecs_schema.orders WHERE order_id = 20;
});
	my $end1 = $primary->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	ok($primary->poll_query_until('postgres',
		"SELECT confirmed_flush_lsn >= '$end1' FROM pg_replication_slots WHERE slot_name = 'fo'"),
		'failover slot: the shipper confirmed the first changes');
	ok($standby->poll_query_until('postgres',
		"SELECT synced AND NOT temporary AND confirmed_flush_lsn >= '$end1' FROM pg_replication_slots WHERE slot_name = 'fo'"),
		'failover slot: the standby has a synchronized copy');
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, 'failover slot: the first shipper stops cleanly');

	# Changes nobody confirmed, then the primary dies.
	$primary->safe_psql('postgres', q{
UPDATE fundrecs_schema.orders SET quantity = 500 WHERE order_id = 3;
DELETE FROM fundrecs_schema.orders WHERE order_id = 4;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (2, 99, 99);
});
	$primary->wait_for_catchup($standby);
	my $want = $primary->safe_psql('postgres',
		"SELECT string_agg(order_id::text, ',' ORDER BY order_id) FROM fundrecs_schema.orders");
	$primary->stop('immediate');
	$standby->promote;

	my $end2 = $standby->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my ($rc, $out, $err) = run_shipper(\%env, '-d', $standby->connstr('postgres'), @slot_args, '-E', $end2);
	is($rc, 0, 'after the promotion: the same command line goes on') or diag($err);
	like($err, qr/replication slot "fo" exists, using it/, 'after the promotion: it uses the synchronized slot');
	my $rows = rows_of($out);
	is(scalar(grep { $_->{op} eq 'reset' || $_->{op} eq 'load' } @$rows), 0,
		'after the promotion: no reset, no new load');
	ok((grep { $_->{op} eq 'delete' && $_->{key}{order_id} == 4 } @$rows),
		'after the promotion: the delete made after the last confirmation arrives');
	ok((grep { $_->{op} eq 'update' && $_->{key}{order_id} == 3 && $_->{data}{quantity} == 500 } @$rows),
		'after the promotion: so does the update');
	my %consumer;
	apply_rows(\%consumer, rows_of(slurp_file($out1)));
	apply_rows(\%consumer, $rows);
	is(live_keys(\%consumer), $want, 'after the promotion: the consumer holds exactly the table');
	is($standby->safe_psql('postgres', "SELECT failover FROM pg_replication_slots WHERE slot_name = 'fo'"),
		't', 'after the promotion: the slot is still a failover slot');
}

done_testing();
