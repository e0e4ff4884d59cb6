# Delivery lanes: up to two batches in flight at once (dispatch.c), and the
# order rule across them.  The signature-checking proxy holds every
# PutRecords call for 50 ms and watches the partition keys (and, for KPL
# records, the sub-records' keys) of the calls in flight: another version
# of a key sent while a call with an earlier one is still unanswered is a
# version overlap.  A live workload mixes new keys (batches that may
# overlap) with hot keys updated again and again (batches that must wait).
# Checked, with and without --aggregate: calls did overlap, batches did
# wait for their keys, no version overlapped, and every row reads back
# byte for byte, each key's versions in commit order; with
# --max-in-flight 1, never two calls at once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

needs(qw(shipper kinesalite aws-kinesis-agg node boto3));

my %env = shipper_env();
my $node = new_cluster('lanes');
my $connstr = $node->connstr('postgres');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my ($kport) = start_kinesalite();

# n transactions of three new orders each; in every hot_every of them,
# hot_run in a row also update the four hot orders (the oldest ones).
# One record per row, each repeated key ends a batch, which then waits for
# the lane holding the key: short hot runs leave time for batches of new
# keys to overlap.  Aggregated, a key may repeat within a batch: runs of
# ten (about 25 ms, half a call) make a batch meet a lane holding its key.
$node->safe_psql('postgres', q{
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
	SELECT 1 + g % 3, 9, g FROM generate_series(1, 4) g;
CREATE PROCEDURE mixed(n int, hot_every int, hot_run int, tag int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
			SELECT 1 + (i + g) % 3, tag, g FROM generate_series(1, 3) g;
		IF i % hot_every < hot_run THEN
			UPDATE fundrecs_schema.orders SET quantity = quantity + 1
				WHERE order_id IN (SELECT order_id FROM fundrecs_schema.orders ORDER BY order_id LIMIT 4);
		END IF;
		COMMIT;
		PERFORM pg_sleep(0.002);
	END LOOP;
END $$;
});

# Every plugin row byte for byte; each key's versions in commit order.
sub check_rows
{
	my ($stream, $name, $want) = @_;
	my $recs = read_deaggregated($kport, $stream, 1);
	my (%first, %seq, %want_seq);
	# Rows without a key have no versions: they are spread over the shards.
	foreach my $r (@$recs)
	{
		next if $first{ $r->{data} }++;
		next unless $r->{row}{key};
		push @{ $seq{ "$r->{row}{table}:" . encode_json($r->{row}{key}) } }, $r->{row}{lsn};
	}
	is_deeply([ sort keys %first ], [ sort map { "$_\n" } @$want ], "$name: every plugin row, byte for byte");
	foreach my $text (@$want)
	{
		my $row = decode_json($text);
		next unless $row->{key};
		push @{ $want_seq{ "$row->{table}:" . encode_json($row->{key}) } }, $row->{lsn};
	}
	my @wrong = grep { "@{ $seq{$_} // [] }" ne "@{ $want_seq{$_} }" } sort keys %want_seq;
	is(scalar @wrong, 0, "$name: every key's versions in commit order" . (@wrong ? " (first: $wrong[0])" : ''));
	# Kinesis's own sequence numbers order the records of a shard.
	return $recs;
}

# One live run: the shipper streams while the workload runs, then stops
# once everything is confirmed.  Returns the proxy's counters and the log.
sub live_run
{
	my ($name, $slot, $stream, $shards, $hot, @extra) = @_;
	my ($pport) = start_proxy($kport, '--track-keys', '--delay-puts', '0.05');
	kinesis_tool($kport, 'create', $stream, $shards);
	$node->safe_psql('postgres',
		"SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{$slot,${slot}_truth}'::text[]) s");
	my $log = "$tmp/$slot.log";
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', $slot, '--endpoint-url', "http://127.0.0.1:$pport",
		'--stream', $stream, '-s', '1', '-v', @extra);
	$node->safe_psql('postgres', "CALL mixed(400, $hot, " . length($slot) . ")");
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	ok($node->poll_query_until('postgres',
		"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = '$slot'"),
		"$name: every row confirmed");
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, "$name: exit code 0 on SIGTERM");
	my $want = plugin_rows($node, "${slot}_truth");
	check_rows($stream, $name, $want);
	my $stats = proxy_stats($pport);
	is($stats->{mismatches}, 0, "$name: every signature verified");
	cmp_ok($stats->{keys_tracked}, '>=', scalar @$want, "$name: the proxy tracked every row's key");
	is($stats->{version_overlaps}, 0, "$name: no two versions of a key were ever in flight at once")
	  or diag('keys: ' . join(', ', @{ $stats->{overlap_examples} }));
	return ($stats, slurp_file($log));
}

# 1. One record per row, the default --max-in-flight (8: two lanes of 4 calls).
my ($stats, $log) = live_run('records', 'lane1', 'lanes1', 4, '80, 2');
cmp_ok($stats->{max_in_flight}, '>=', 2, "records: calls overlapped ($stats->{max_in_flight} at most)");
like($log, qr/([1-9]\d*) rows waited for an earlier version of their key/,
	'records: rows of hot keys waited for them');

# 2. --aggregate: a batch is one call (a KPL record per shard), so two calls
#    at once are two batches in flight.
($stats, $log) = live_run('aggregate', 'lane2', 'lanes2', 4, '40, 10', '--aggregate');
cmp_ok($stats->{max_in_flight}, '>=', 2, "aggregate: two batches were in flight at once ($stats->{max_in_flight} calls at most)");
like($log, qr/([1-9]\d*) rows waited for an earlier version of their key/,
	'aggregate: rows of hot keys waited for them');

# 3. --max-in-flight 1: one lane, one call at a time.
($stats, $log) = live_run('one call', 'lane3', 'lanes3', 4, '40, 10', '--aggregate', '--max-in-flight', '1');
is($stats->{max_in_flight}, 1, 'one call: never two calls at once');

# 4. One hot key and a table without a key, shipped from a backlog: the
#    rows of the hot key wait for its earlier versions, the rest does not
#    wait for them (before: a batch ended at each repeated key and waited
#    for the lane holding it, so batches were one transaction long); rows
#    without a key each get a partition key of their own (before: all of
#    them "schema.table", one row per call).
$node->safe_psql('postgres', q{
CREATE TABLE fundrecs_schema.events (happened timestamptz DEFAULT now(), payload text);
CREATE TABLE fundrecs_schema.counters (id int PRIMARY KEY, hits int);
INSERT INTO fundrecs_schema.counters VALUES (1, 0);
CREATE PROCEDURE hot_and_keyless(n int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
			SELECT 1 + (i + g) % 3, 77, g FROM generate_series(1, 3) g;
		UPDATE fundrecs_schema.counters SET hits = hits + 1 WHERE id = 1;
		INSERT INTO fundrecs_schema.events (payload) VALUES ('event ' || i);
		COMMIT;
	END LOOP;
END $$;
});
foreach my $mode ([ 'records' ], [ 'aggregate', '--aggregate' ])
{
	my ($name, @extra) = @$mode;
	my $slot = "hot_$name";
	my ($pport) = start_proxy($kport, '--track-keys', '--delay-puts', '0.05');
	kinesis_tool($kport, 'create', $slot, 4);
	$node->safe_psql('postgres',
		"SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{$slot,${slot}_truth}'::text[]) s");
	$node->safe_psql('postgres', 'CALL hot_and_keyless(300)');
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my ($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', $slot, '--endpoint-url', "http://127.0.0.1:$pport",
		'--stream', $slot, '-v', '-E', $end, @extra);
	is($rc, 0, "hot key and keyless, $name: exit 0") or diag($err);
	my $want = plugin_rows($node, "${slot}_truth");
	my $recs = check_rows($slot, "hot key and keyless, $name", $want);
	my $stats = proxy_stats($pport);
	is($stats->{version_overlaps}, 0, "hot key and keyless, $name: no two versions of a key were ever in flight at once");
	# Aggregated, the backlog goes in few batches: a key's versions share its record.
	if ($name eq 'records')
	{
		my @batches = $err =~ /shipped (\d+) rows \(/g;
		my $largest = (sort { $b <=> $a } @batches)[0] // 0;
		cmp_ok($largest, '>=', 200, "hot key and keyless, $name: other keys do not wait for the hot key "
			  . "(largest batch $largest rows, a transaction is 5)");
		like($err, qr/([1-9]\d*) rows waited for an earlier version of their key/,
			"hot key and keyless, $name: the hot key's versions waited for each other");
	}
	my %keyless_pks = map { $_->{pk} => 1 } grep { $_->{row}{table} eq 'events' } @$recs;
	is(scalar keys %keyless_pks, 300, "hot key and keyless, $name: every row without a key has a partition key of its own");
	like((keys %keyless_pks)[0], qr{^fundrecs_schema\.events\@[0-9A-F]+/[0-9A-F]+/\d+$},
		"hot key and keyless, $name: schema.table\@position/ordinal");
}

done_testing();
