# --aggregate: KPL aggregated records, one shard's rows per record, read back
# with boto3 and de-aggregated with aws-kinesis-agg (MD5 trailers verified):
# every plugin row exactly as emitted, per-key order, one shard per key, each
# sub-record's hash key inside the shard it was read from; then with 20 %
# injected faults and kill -9; then a SplitShard and a MergeShards while
# shipping (rows of a record that lands in another shard are sent again, so
# every row is readable from its right shard); a ListShards answer with a
# hole is read again.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Math::BigInt;
use Time::HiRes qw(usleep);

needs(qw(shipper kinesalite aws-kinesis-agg node boto3));

my %env = shipper_env();
my $node = new_cluster('aggregate');
my $connstr = $node->connstr('postgres');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my ($kport) = start_kinesalite();
my ($pport) = start_proxy($kport);
my ($fport) = start_proxy($kport, '--fault-rate', '0.2', '--seed', '7');

$node->safe_psql('postgres', q{
CREATE PROCEDURE workload(n int, customer int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
			SELECT 1 + (i + g) % 3, customer, g FROM generate_series(1, 5) g;
		UPDATE fundrecs_schema.orders SET quantity = quantity + 1
			WHERE order_id = (SELECT max(order_id) - 2 FROM fundrecs_schema.orders);
		DELETE FROM fundrecs_schema.orders
			WHERE order_id = (SELECT max(order_id) - 4 FROM fundrecs_schema.orders);
		INSERT INTO fundrecs_schema.customers VALUES (customer * 100000 + i, 'C' || i, 'City ' || i % 17);
		COMMIT;
	END LOOP;
END $$;
});

# Checks what a consumer reads against the plugin's own rows.
sub check_stream
{
	my ($stream, $name, $want, %opt) = @_;
	my $recs = read_deaggregated($opt{port} // $kport, $stream, 1);
	my @readable = grep { $_->{in_shard} } @$recs;
	if ($opt{exact})
	{
		is(scalar @readable, scalar @$recs, "$name: every sub-record is in the shard it was read from");
		is_deeply([ sort map { $_->{data} } @$recs ], [ sort map { "$_\n" } @$want ],
			"$name: every plugin row exactly once, byte for byte");
	}
	else
	{
		my %have = map { $_->{data} => 1 } @readable;
		my @missing = grep { !$have{"$_\n"} } @$want;
		is(scalar @missing, 0, "$name: every plugin row readable from its right shard"
			  . (@missing ? " (first missing: $missing[0])" : ''));
	}
	ok((!grep { !$_->{aggregated} } @$recs), "$name: every Kinesis record is aggregated");
	# Per key, shards in lineage order (a parent's id sorts before its
	# children's), first occurrences only: the plugin's commit order.
	my (%shard_of, $split_keys, %seq, %seen, %want_seq);
	foreach my $r (sort { $a->{shard} cmp $b->{shard} } @readable)
	{
		my $k = $r->{pk};
		$split_keys++ if defined $shard_of{$k} && $shard_of{$k} ne $r->{shard} && !$opt{resharded};
		$shard_of{$k} //= $r->{shard};
		my $id = "$r->{row}{table}:" . encode_json($r->{row}{key} // {});
		next if $seen{"$r->{row}{lsn} $id"}++;
		push @{ $seq{$id} }, $r->{row}{lsn};
	}
	foreach my $text (@$want)
	{
		my $row = decode_json($text);
		push @{ $want_seq{ "$row->{table}:" . encode_json($row->{key} // {}) } }, $row->{lsn};
	}
	my @wrong = grep { "@{ $seq{$_} // [] }" ne "@{ $want_seq{$_} }" } keys %want_seq;
	ok(!$split_keys, "$name: one shard per key");
	is(scalar @wrong, 0, "$name: every key's versions in commit order" . (@wrong ? " (first: $wrong[0])" : ''))
	  or diag("got @{ $seq{$wrong[0]} // [] }; want @{ $want_seq{$wrong[0]} }; records: "
		  . join(' | ', map { "$_->{shard} $_->{seq}/$_->{sub} $_->{row}{lsn} in_shard=$_->{in_shard}" }
			  grep { "$_->{row}{table}:" . encode_json($_->{row}{key} // {}) eq $wrong[0] } @$recs));
	my %records = map { ("$_->{shard} $_->{seq}" => 1) } @$recs;
	return (scalar(@$recs) / (scalar(keys %records) || 1), $recs);
}

# The consumer's rule after a reshard (README, Aggregation): per key, skip a
# row whose lsn is not above the last one applied.  Read as KCL reads
# (parents before children, each shard in order, sub-records outside the
# shard dropped) and as a Lambda with aws-kinesis-agg reads (the same, none
# dropped), the rule must give every key's versions in increasing lsn order,
# ending at its last version, and every version must be readable (KCL).
sub lsn_rule
{
	my ($name, $recs, $want) = @_;
	my (%last_want, %all_want);
	foreach my $text (@$want)
	{
		my $row = decode_json($text);
		my $id = "$row->{table}:" . encode_json($row->{key} // {});
		$last_want{$id} = $row->{lsn};
		$all_want{"$id $row->{lsn}"} = 1;
	}
	my $lsn = sub { my ($hi, $lo) = split m{/}, $_[0]; return hex($hi) * 2**32 + hex($lo); };
	my @ordered = sort { $a->{shard} cmp $b->{shard} || Math::BigInt->new($a->{seq}) <=> Math::BigInt->new($b->{seq})
		  || $a->{sub} <=> $b->{sub} } @$recs;
	foreach my $view ([ 'KCL', 1 ], [ 'aws-kinesis-agg', 0 ])
	{
		my ($label, $kcl) = @$view;
		my (%applied, %readable, $stale, $back, %seen_version);
		foreach my $r (@ordered)
		{
			next if $kcl && !$r->{in_shard};
			my $id = "$r->{row}{table}:" . encode_json($r->{row}{key} // {});
			my $l = $lsn->($r->{row}{lsn});
			$readable{"$id $r->{row}{lsn}"} = 1;
			$back++ if $seen_version{$id} && $l < $seen_version{$id};
			$seen_version{$id} = $l if !$seen_version{$id} || $l > $seen_version{$id};
			if (defined $applied{$id} && $l <= $lsn->($applied{$id})) { $stale++; next; }
			$applied{$id} = $r->{row}{lsn};
		}
		my @wrong_end = grep { ($applied{$_} // '') ne $last_want{$_} } keys %last_want;
		is(scalar @wrong_end, 0, "$name, read as $label with the lsn rule: every key ends at its last version")
		  or diag("first: $wrong_end[0]: $applied{$wrong_end[0]} vs $last_want{$wrong_end[0]}");
		if ($kcl)
		{
			my @missing = grep { !$readable{$_} } keys %all_want;
			is(scalar @missing, 0, "$name, read as KCL: every version readable");
		}
		note(sprintf("%s, read as %s: %d rows read, %d stale copies dropped by the lsn rule, %d steps back",
			$name, $label, scalar(grep { !$kcl || $_->{in_shard} } @ordered), $stale // 0, $back // 0));
	}
	return;
}

# 1. A 16-shard stream, one run to --endpos.
kinesis_tool($kport, 'create', 'agg16', 16);
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{agg1,agg1_cbor}'::text[]) s");
$node->safe_psql('postgres', 'CALL workload(300, 1)');
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $want = plugin_rows($node, 'agg1');
my ($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'agg1', '--endpoint-url', "http://127.0.0.1:$pport",
	'--stream', 'agg16', '--aggregate', '-E', $end, '-v');
is($rc, 0, 'aggregate: exit code 0') or diag($err);
like($err, qr/aggregating into 16 open shards/, 'aggregate: the shard map was read');
my ($per_record) = check_stream('agg16', 'aggregate', $want, exact => 1);
cmp_ok($per_record, '>', 5, sprintf('aggregate: rows are packed (%.1f rows per record)', $per_record));
like($err, qr/rows in aggregated records \(([\d.]+) rows per record\)/, 'aggregate: the totals report rows per record');
is(proxy_stats($pport)->{mismatches}, 0, 'aggregate: every signature verified');

# 1b. The same rows aggregated in the CBOR protocol (--kinesis-protocol
#     cbor), to kinesis-local, which stores CBOR records byte for byte.
SKIP:
{
	my @absent = missing(qw(kinesis-local python3-cbor2));
	skip join(', ', @absent) . ' not installed (scripts/install-deps.sh)', 8 if @absent;
	my ($mport) = start_kinesis_mock();
	my ($cport) = start_proxy($mport);
	kinesis_tool($mport, 'create', 'agg16cbor', 16);
	my ($crc, $cout, $cerr) = run_shipper(\%env, '-d', $connstr, '-S', 'agg1_cbor', '--endpoint-url',
		"http://127.0.0.1:$cport", '--stream', 'agg16cbor', '--aggregate', '--kinesis-protocol', 'cbor',
		'-E', $end, '-v');
	is($crc, 0, 'aggregate, CBOR: exit code 0') or diag($cerr);
	my ($cper) = check_stream('agg16cbor', 'aggregate, CBOR', $want, exact => 1, port => $mport);
	cmp_ok($cper, '>', 5, sprintf('aggregate, CBOR: rows are packed (%.1f rows per record)', $cper));
	my $cstats = proxy_stats($cport);
	cmp_ok($cstats->{cbor_calls}, '>', 0, "aggregate, CBOR: the PutRecords calls were CBOR ($cstats->{cbor_calls})");
	is($cstats->{mismatches}, 0, 'aggregate, CBOR: every signature verified');
}
# The node has slots for the sections that follow, not more.
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('agg1_cbor')");

# 2. 20 % injected faults and a kill -9: nothing lost, order kept.
kinesis_tool($kport, 'create', 'aggfault', 4);
# A second slot made at the same moment keeps the plugin's rows for the check.
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{agg2,agg2_truth}'::text[]) s");
my @faulty = ('-d', $connstr, '-S', 'agg2', '--endpoint-url', "http://127.0.0.1:$fport", '--stream', 'aggfault',
	'--aggregate', '--aggregate-bytes', '4096', '-s', '1');
my $h = start_shipper(\%env, "$tmp/aggfault.log", @faulty);
$node->safe_psql('postgres', 'CALL workload(150, 2)');
usleep(300_000);
$h->signal('KILL');
$h->finish;
$node->safe_psql('postgres', 'CALL workload(150, 3)');
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$want = plugin_rows($node, 'agg2_truth');
($rc, $out, $err) = run_shipper(\%env, @faulty, '-E', $end);
is($rc, 0, 'faults and kill -9: the restart reached the end');
my $stats = proxy_stats($fport);
cmp_ok(scalar(keys %{ $stats->{faults} }), '>', 0, 'faults and kill -9: faults were injected (' . encode_json($stats->{faults}) . ')');
check_stream('aggfault', 'faults and kill -9', $want);

# 3. SplitShard and MergeShards while shipping.
kinesis_tool($kport, 'create', 'aggsplit', 2);
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{agg3,agg3_truth}'::text[]) s");
$h = start_shipper(\%env, "$tmp/aggsplit.log", '-d', $connstr, '-S', 'agg3', '--endpoint-url',
	"http://127.0.0.1:$pport", '--stream', 'aggsplit', '--aggregate', '-s', '1', '-v');
$node->safe_psql('postgres', 'CALL workload(100, 4)');
my $shards = decode_json(kinesis_tool($kport, 'shards', 'aggsplit'));
kinesis_tool($kport, 'split', 'aggsplit', $shards->[0]{id});
$node->safe_psql('postgres', 'CALL workload(100, 5)');
$shards = [ grep { $_->{open} } @{ decode_json(kinesis_tool($kport, 'shards', 'aggsplit')) } ];
is(scalar @$shards, 3, 'split: three open shards');
my @sorted = sort { Math::BigInt->new($a->{start}) <=> Math::BigInt->new($b->{start}) } @$shards;
kinesis_tool($kport, 'merge', 'aggsplit', $sorted[1]{id}, $sorted[2]{id});
$node->safe_psql('postgres', 'CALL workload(100, 6)');
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'agg3'"),
	'split and merge: every row confirmed');
$h->signal('TERM');
$h->finish;
$want = plugin_rows($node, 'agg3_truth');
my (undef, $split_recs) = check_stream('aggsplit', 'split and merge', $want, resharded => 1);
lsn_rule('split and merge', $split_recs, $want);
like(slurp_file("$tmp/aggsplit.log"), qr/was resharded: \d+ aggregated records landed in another shard/,
	'split and merge: the shipper saw the resharding and sent those rows again');

# 5 (first). Kinesis's per-shard limits: records over 1 MiB/s of a shard are
#    refused per record, as AWS does; they are retried and nothing is lost
#    or reordered.
{
	my ($lport) = start_proxy($kport, '--shard-limits');
	kinesis_tool($kport, 'create', 'agglimit', 2);
	$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{agg5,agg5_truth}'::text[]) s");
	$node->safe_psql('postgres', 'CALL workload(1200, 8)');
	my $lend = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my ($lrc, $lout, $lerr) = run_shipper(\%env, '-d', $connstr, '-S', 'agg5', '--endpoint-url',
		"http://127.0.0.1:$lport", '--stream', 'agglimit', '--aggregate', '-E', $lend, '-v');
	is($lrc, 0, 'per-shard limits: exit code 0');
	cmp_ok(proxy_stats($lport)->{throttled_records}, '>', 0, 'per-shard limits: records were throttled');
	like($lerr, qr/[1-9]\d* throttled records/, 'per-shard limits: the totals count them');
	check_stream('agglimit', 'per-shard limits', plugin_rows($node, 'agg5_truth'));
}

# 4. The DMS format, aggregated: the consumer written to the seed Lambda's
#    contract, fed through aws-kinesis-agg's de-aggregation, needs no change.
kinesis_tool($kport, 'create', 'aggdms', 4);
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('agg4', 'fundrecs_decoder')");
$node->safe_psql('postgres', 'CALL workload(50, 7)');
$node->safe_psql('postgres', 'TRUNCATE fundrecs_schema.customers');
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$want = [ split /\n/, $node->safe_psql('postgres',
	"SELECT data FROM pg_logical_slot_peek_changes('agg4', NULL, NULL, 'format', 'dms')") ];
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'agg4', '--endpoint-url', "http://127.0.0.1:$pport",
	'--stream', 'aggdms', '--aggregate', '-o', 'format=dms', '-E', $end);
is($rc, 0, 'dms, aggregated: exit code 0');
my $users = read_deaggregated($kport, 'aggdms', 1);
my $ufile = "$tmp/aggdms.jsonl";
open(my $uf, '>', $ufile) or die $!;
print $uf encode_json({ data => $_->{data}, in_shard => $_->{in_shard} ? JSON::PP::true : JSON::PP::false }), "\n"
  for @$users;
close $uf;
my $consumer;
IPC::Run::run([ '/usr/bin/python3', "$E2E_DIR/dms_consumer.py", '--user-records', $ufile, '-',
	"$E2E_DIR/../data/product_details.json" ], '>', \$consumer) or die 'dms_consumer failed';
my $got = decode_json($consumer);
my %ops;
my $control = 0;
foreach my $w (@$want)
{
	my $m = decode_json($w)->{metadata};
	if ($m->{'record-type'} eq 'control') { $control++; next; }
	$ops{ $m->{operation} }++;
}
is_deeply($got->{operations}, \%ops, 'dms, aggregated: the consumer saw every operation (' . encode_json(\%ops) . ')');
is($got->{skipped}, $control, 'dms, aggregated: the TRUNCATE control record was skipped');
is($got->{customers}, 50, 'dms, aggregated: customers collected');

# 5. A ListShards answer with a hole (one open shard left out of the first
# answer, as a lost page or a reshard caught half-way would): the shipper
# must read the map again, never place a row by a guess.  (It put the hole's
# rows into shard 0's records, confirmed but stored outside their shard.)
my ($hport) = start_proxy($kport, '--list-shards-hole', '1');
kinesis_tool($kport, 'create', 'agghole', 4);
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot(s, 'fundrecs_decoder') FROM unnest('{agg9,agg9_truth}'::text[]) s");
$node->safe_psql('postgres', 'CALL workload(200, 9)');
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$want = plugin_rows($node, 'agg9_truth');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'agg9', '--endpoint-url', "http://127.0.0.1:$hport",
	'--stream', 'agghole', '--aggregate', '-E', $end, '-v');
is($rc, 0, 'shard map with a hole: exit code 0') or diag($err);
is(proxy_stats($hport)->{faults}{'list-shards-hole'}, 1, 'shard map with a hole: the hole was injected');
like($err, qr/unusable shard map \(no open shard covers hash keys \d+ to \d+\)/,
	'shard map with a hole: the shipper saw it and read the map again');
like($err, qr/aggregating into 4 open shards/, 'shard map with a hole: the whole map was used');
check_stream('agghole', 'shard map with a hole', $want, exact => 1);

done_testing();
