# The lake, exactly once: the shipper is killed with SIGKILL at many points
# of its S3 writing (during the initial load, before, during and after a
# PUT, between the objects of one flush) while a writer commits, restarted
# each time, and finally run to an end position.  Then every change is in
# the bucket exactly once: the change rows equal, byte for byte and with
# no repeat, what the plugin emits after the last load's consistent point;
# the load rows are those of the last load alone (a load done again
# deletes the objects of the one before); and the Athena views' figures
# equal PostgreSQL's.  Every request goes through the signature-checking
# proxy, which delays each PUT and drops some answers after the object is
# written.  A second slot writing the same prefix is refused.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

needs(qw(shipper s3rver duckdb node boto3));

my %env = shipper_env();
my $node = new_cluster('lake_once');
my $connstr = $node->connstr('postgres');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my ($s3port) = start_s3rver('once');
my ($s3proxy) = start_proxy($s3port, '--strip-auth', '--delay-puts', '0.03', '--fault-rate', '0.05',
	'--faults', 'drop-after,500', '--seed', $ENV{FUNDRECS_TEST_SEED} // 7);

$node->safe_psql('postgres', q{
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 2, "product_name": "Phone", "category": "Electronics", "price": 800.00},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Furniture", "price": 150.00},
	{"product_id": 4, "product_name": "Lamp", "category": "Home Office", "price": 19.99}]');
INSERT INTO fundrecs_schema.customers SELECT g, 'Customer ' || g, 'City ' || g FROM generate_series(1, 300) g;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
	SELECT 1 + g % 5, 1 + g % 300, 1 + g % 5 FROM generate_series(1, 6000) g;
CREATE PROCEDURE churn(n int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
			VALUES (1 + i % 5, 1 + i % 300, 1 + i % 3);
		UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id = 1 + (i * 13) % 6000;
		UPDATE fundrecs_schema.orders SET product_id = CASE product_id WHEN 3 THEN 1 ELSE 3 END
			WHERE order_id = 1 + (i * 17) % 6000;
		DELETE FROM fundrecs_schema.orders WHERE order_id = 1 + (i * 29) % 6000;
		UPDATE fundrecs_schema.customers SET location = 'Moved ' || i WHERE customer_id = 1 + i % 300;
		COMMIT;
		PERFORM pg_sleep(0.01);
	END LOOP;
END $$;
SELECT pg_create_logical_replication_slot('truth', 'fundrecs_decoder');
});

my @ship = ('-d', $connstr, '-S', 'lake', '--create-slot', '--if-not-exists', '--target', 's3',
	'--endpoint-url', "http://127.0.0.1:$s3proxy", '--s3-url', 's3://once/cdc',
	'--flush-seconds', '1', '--flush-bytes', '65536', '-s', '1', '-v');

# 1. Kills at random points while the writer commits: the first rounds in
#    the initial load (6,300 rows in objects of 64 kB, each PUT delayed),
#    the others once a load has finished, while changes stream.
srand($ENV{FUNDRECS_TEST_SEED} // 7);
my $writer = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-c', 'CALL churn(3000)' ],
	'>', '/dev/null', '2>', "$tmp/lake_writer.log");
my $log = "$tmp/lake_once.log";
my ($kills, $kills_in_load) = (0, 0);
for my $round (1 .. 14)
{
	my $h = start_shipper(\%env, $log, @ship);
	if ($round > 4)
	{
		$node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM fundrecs.load_state WHERE slot_name = 'lake' AND finished_at IS NOT NULL");
	}
	usleep(300_000 + int(rand($round <= 4 ? 1_200_000 : 2_000_000)));
	my $loading = $node->safe_psql('postgres',
		"SELECT count(*) FROM fundrecs.load_state WHERE slot_name = 'lake' AND finished_at IS NULL");
	$h->signal('KILL');
	$h->finish;
	$kills++;
	$kills_in_load++ if $loading;
}
$writer->finish;
is($writer->full_result(0), 0, 'the writer committed everything');
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my ($rc, $out, $err) = run_shipper(\%env, @ship, '-E', $end);
is($rc, 0, 'the last run reached the end position') or diag($err);
my $all_log = slurp_file($log) . $err;
cmp_ok($kills_in_load, '>=', 1, "killed during the initial load ($kills_in_load of $kills kills)");
like($all_log, qr/did not finish; loading again/, 'a load was done again');
like($all_log, qr/deleted s3:\/\/once\/cdc\/\S+ \(the initial load that did not finish\)/,
	'the objects of a load that did not finish were deleted');
like($all_log, qr/has objects of [0-9-]+ up to position [0-9A-F.]+: rows of that day up to it are not written again/,
	'restarts read where each route stands');
my ($skipped) = $all_log =~ /(\d+) rows already in the bucket not written again/;
diag("kills: $kills ($kills_in_load in the load); the last run skipped " . ($skipped // 0) . ' rows');

# 2. What the bucket holds.
my $dir = "$tmp/lake_download";
my ($dl, $dlerr);
IPC::Run::run([ '/usr/bin/python3', "$E2E_DIR/s3_tool.py", '--endpoint', "http://127.0.0.1:$s3port",
	'download', 'once', 'cdc', $dir ], '>', \$dl, '2>', \$dlerr) or die "download failed: $dlerr";
my (@rows, %names);
foreach my $f (split /\n/, `find '$dir' -name '*.json.gz' | sort`)
{
	foreach my $line (split /\n/, `gzip -dc '$f'`)
	{
		push @rows, $line;
	}
}
my $consistent = $node->safe_psql('postgres', "SELECT consistent_lsn FROM fundrecs.load_state WHERE slot_name = 'lake'");
sub lsn_value
{
	my ($hi, $lo) = split m{/}, shift;
	return hex($hi) * 4294967296 + hex($lo);
}
my (%seen, $repeats, @changes, %load_keys, $load_repeats, $old_loads, $markers);
foreach my $line (@rows)
{
	$repeats++ if $seen{$line}++;
	my $r = decode_json($line);
	if ($r->{op} eq 'load')
	{
		$old_loads++ if $r->{lsn} ne $consistent;
		$load_repeats++ if $load_keys{"$r->{table}:" . encode_json($r->{key})}++;
	}
	elsif ($r->{op} eq 'reset')
	{
		$markers++;
		$old_loads++ if $r->{lsn} ne $consistent;
	}
	else
	{
		push @changes, $line;
	}
}
is($repeats // 0, 0, 'no row is in the bucket twice (' . scalar(@rows) . ' rows)');
is($old_loads // 0, 0, 'no row of an earlier, unfinished load is left');
is($load_repeats // 0, 0, 'each row of the last load once');
cmp_ok(scalar keys %load_keys, '>', 0, 'the last load is in the bucket');
my @truth = grep { lsn_value(decode_json($_)->{commit_lsn}) > lsn_value($consistent) }
  @{ plugin_rows($node, 'truth') };
my $c = $node->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'lake'");
@truth = grep { lsn_value(decode_json($_)->{commit_lsn}) <= lsn_value($c) } @truth;
is_deeply([ sort @changes ], [ sort @truth ],
	'every change after the last load\'s consistent point exactly once, byte for byte (' . scalar(@truth) . ' changes)');

# 3. The Athena views equal PostgreSQL.
my $fig = athena_figures($s3port, 'once', 'cdc');
is($fig->{rows_written}, scalar(@rows), 'DuckDB reads every row');
is($fig->{orders_current_ids}, $node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs_schema.orders'),
	'the views: every current order once');
is($fig->{customers_current}, $node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs_schema.customers'),
	'the views: every current customer');
my %want;
foreach my $line (split /\n/, $node->safe_psql('postgres', q{
	SELECT coalesce(fundrecs.category_slug(p.category), 'uncategorized'), count(*),
		   coalesce(sum(p.price * o.quantity), 0)::numeric(38,2)
	FROM fundrecs_schema.orders o LEFT JOIN fundrecs.product_details p USING (product_id)
	GROUP BY 1 ORDER BY 1}))
{
	my ($route, $n, $sum) = split /\|/, $line;
	$want{$route} = [ $n, $sum ];
}
my %got = map { $_->{route} => [ $_->{orders}, sprintf('%.2f', $_->{total} // 0) ] } @{ $fig->{per_route} };
is_deeply(\%got, \%want, 'the views: per-category counts and total_price sums equal PostgreSQL\'s');
my $stats = proxy_stats($s3proxy);
is($stats->{mismatches}, 0, "botocore verified every S3 signature ($stats->{verified} requests)");

# 4. A second slot on the same prefix is refused, and changes nothing.
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('intruder', 'fundrecs_decoder')");
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'intruder', '--target', 's3', '--endpoint-url',
	"http://127.0.0.1:$s3proxy", '--s3-url', 's3://once/cdc', '-n');
is($rc, 3, 'another slot on the prefix: exit 3');
like($err, qr{S3 prefix s3://once/cdc/ belongs to another fundrecs_shipper: cdc/_fundrecs/owner\.json says .*"slot":"lake"},
	'another slot on the prefix: names the owner');

done_testing();
