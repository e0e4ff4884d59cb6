# The S3 target and the Athena layer: objects per route and day in s3rver
# (behind the botocore signature check), read back with boto3 and queried
# with DuckDB through the SQL of the Athena views; the figures equal the
# truth computed in PostgreSQL, also after a kill between uploads.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

needs(qw(shipper kinesalite s3rver duckdb node boto3));

my %env = shipper_env();
my $node = new_cluster('s3');
my $connstr = $node->connstr('postgres');
my ($s3port) = start_s3rver('lake');
my ($s3proxy) = start_proxy($s3port, '--strip-auth');
my ($kport) = start_kinesalite();
my ($kproxy) = start_proxy($kport);
kinesis_tool($kport, 'create', 'both', 2);

$node->safe_psql('postgres', q{
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 2, "product_name": "Phone", "category": "Electronics", "price": 800.00},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Furniture", "price": 150.00},
	{"product_id": 4, "product_name": "Lamp", "category": "Home Office", "price": 19.99}]');
INSERT INTO fundrecs_schema.customers SELECT g, 'Customer ' || g, 'City, "' || g || '"' FROM generate_series(1, 200) g;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
	SELECT 1 + g % 4, 1 + g % 200, 1 + g % 5 FROM generate_series(1, 2000) g;
CREATE PROCEDURE churn(n int, seed int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity)
			VALUES (1 + (i + seed) % 5, 1 + i % 200, 1 + i % 3);
		UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id = 1 + (i * 13 + seed) % 2000;
		-- category moves: furniture <-> electronics
		UPDATE fundrecs_schema.orders SET product_id = CASE product_id WHEN 3 THEN 1 ELSE 3 END
			WHERE order_id = 1 + (i * 17 + seed) % 2000;
		DELETE FROM fundrecs_schema.orders WHERE order_id = 1 + (i * 29 + seed) % 2000;
		UPDATE fundrecs_schema.customers SET location = 'Moved ' || i WHERE customer_id = 1 + i % 200;
		IF i % 50 = 0 THEN
			DELETE FROM fundrecs_schema.customers WHERE customer_id = 1 + (i / 50) % 200;
		END IF;
		COMMIT;
	END LOOP;
END $$;
});

# The truth, from the source tables joined with the products.
sub truth
{
	my %t;
	foreach my $line (split /\n/, $node->safe_psql('postgres', q{
		SELECT coalesce(fundrecs.category_slug(p.category), 'uncategorized'), count(*),
			   coalesce(sum(p.price * o.quantity), 0)::numeric(38,2)
		FROM fundrecs_schema.orders o LEFT JOIN fundrecs.product_details p USING (product_id)
		GROUP BY 1 ORDER BY 1}))
	{
		my ($route, $n, $sum) = split /\|/, $line;
		$t{$route} = [ $n, $sum ];
	}
	return \%t;
}

sub compare
{
	my ($fig, $name) = @_;
	my $want = truth();
	my %got = map { $_->{route} => [ $_->{orders}, $_->{total} ] } @{ $fig->{per_route} };
	# DuckDB sums a null total as nothing; PostgreSQL's coalesce makes it 0.
	$_->[1] = sprintf('%.2f', $_->[1] // 0) for values %got;
	is_deeply(\%got, $want, "$name: per-category counts and total_price sums equal PostgreSQL's");
	is($fig->{customers_current}, $node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs_schema.customers'),
		"$name: current customers");
	is($fig->{orders_current_ids}, $node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs_schema.orders'),
		"$name: every current order once, in one category");
}

my @s3 = ('--target', 'kinesis,s3', '--endpoint-url', "http://127.0.0.1:$kproxy", '--stream', 'both',
	'--s3-url', 's3://lake/cdc', '--s3-endpoint-url', "http://127.0.0.1:$s3proxy");

# 1. Load, then changes, flushed every second.
my $log = "$PostgreSQL::Test::Utils::tmp_check/s3_1.log";
my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'lake_slot', '--create-slot', @s3,
	'--flush-seconds', '1', '-s', '1', '-v');
ok($node->poll_query_until('postgres',
	"SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'lake_slot'"),
	'the initial load finished');
$node->safe_psql('postgres', 'CALL churn(300, 0)');
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'lake_slot'"),
	'the shipper confirmed everything once both targets acknowledged it');
$h->signal('TERM');
$h->finish;
my $out = slurp_file($log);
like($out, qr{wrote s3://lake/cdc/electronics/dt=\d{4}-\d\d-\d\d/[0-9A-F]{16}\.[0-9A-F]{8}-[0-9A-F]{16}\.[0-9A-F]{8}\.json\.gz \(\d+ rows},
	'objects are laid out as PREFIX/route/dt=day/FIRST-LAST.json.gz (stream positions)');
my $objects = () = $out =~ /wrote s3:/g;
cmp_ok($objects, '>', 3, "several flushes ($objects objects)");
my $fig = athena_figures($s3port, 'lake', 'cdc');
compare($fig, 'first run');
is($fig->{rows_written}, $fig->{changes}, 'no row was written twice');
is_deeply([ map { $_->{route} } @{ $fig->{objects_routes} } ],
	[ sort qw(customers electronics furniture home_office uncategorized _unrouted) ],
	'routes: categories, customers, uncategorized products, deletes without a route');
cmp_ok($fig->{seed_views}{electronics_orders}, '>', $fig->{per_route}[1]{orders},
	'the seed-style view keeps every version; the current-state view one per order');
my $stats = proxy_stats($s3proxy);
is($stats->{mismatches}, 0, "botocore verified every S3 signature ($stats->{verified} requests)");
my $krecs = read_stream($kport, 'both');
is(scalar @$krecs, $fig->{rows_written}, 'Kinesis got the same rows as S3');

# 2. Kill between uploads, restart: the query results are unchanged.
$log = "$PostgreSQL::Test::Utils::tmp_check/s3_2.log";
$h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'lake_slot', @s3, '--flush-seconds', '1',
	'--flush-bytes', '4096', '-s', '1', '-v');
my $writer = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-c', 'CALL churn(400, 7)' ],
	'>', '/dev/null', '2>', '/dev/null');
for (1 .. 100)
{
	last if (() = slurp_file($log) =~ /wrote s3:/g) >= 5;
	usleep(100_000);
}
$h->signal('KILL');
$h->finish;
like(slurp_file($log), qr/wrote s3:/, 'the killed run had written objects');
$writer->finish;
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$log = "$PostgreSQL::Test::Utils::tmp_check/s3_3.log";
$h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'lake_slot', @s3, '--flush-seconds', '1', '-s', '1');
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'lake_slot'"),
	'the restarted shipper caught up');
$h->signal('TERM');
$h->finish;
$fig = athena_figures($s3port, 'lake', 'cdc');
compare($fig, 'after a kill between uploads');
is($fig->{rows_written}, $fig->{changes}, 'after a kill between uploads: no row is in the bucket twice');
like(slurp_file($log), qr/S3 route "\w+" has objects of \d{4}-\d\d-\d\d up to position [0-9A-F]{16}\.[0-9A-F]{8}: rows of that day up to it are not written again/,
	'after a kill between uploads: the restart read where each route stands');

# 2b. The slot is lost (a failover to a standby without a copy of it) and
#     rows are deleted meanwhile: the views still count them, until
#     --resync writes a reset marker and a new load.
$node->safe_psql('postgres', q{
SELECT pg_drop_replication_slot('lake_slot');
DELETE FROM fundrecs_schema.orders WHERE order_id % 5 = 0;
DELETE FROM fundrecs_schema.customers WHERE customer_id % 4 = 0;
});
$fig = athena_figures($s3port, 'lake', 'cdc');
cmp_ok($fig->{orders_current_ids}, '>', $node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs_schema.orders'),
	'lost slot: the views still hold orders deleted while no slot decoded them');
$end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my ($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'lake_slot', @s3, '--resync', '-E', $end);
is($rc, 0, 'lost slot: --resync ships a new load') or diag($stderr);
$fig = athena_figures($s3port, 'lake', 'cdc');
compare($fig, 'after --resync');
ok((grep { $_->{route} eq '_resync' } @{ $fig->{objects_routes} }), 'after --resync: the reset marker is under route _resync');

# 3. Errors: a missing bucket, a bad URL.
($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'lake_slot', '--target', 's3',
	'--s3-url', 's3://nosuch/x', '--endpoint-url', "http://127.0.0.1:$s3proxy");
is($rc, 3, 'missing bucket: exit code 3 (permanent)');
like($stderr, qr/S3 bucket "nosuch" does not exist/, 'missing bucket: message');
# AccessDenied on every upload (the IAM policy): permanent, exit 3, so that
# systemd does not start it again (each start sent Kinesis the rows again).
{
	my ($denyproxy) = start_proxy($s3port, '--strip-auth', '--fault-rate', '1', '--faults', 'denied');
	$node->safe_psql('postgres',
		"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 777, 1)");
	my $dend = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'lake_slot', '--target', 's3',
		'--s3-url', 's3://lake/cdc', '--s3-endpoint-url', "http://127.0.0.1:$denyproxy", '-E', $dend);
	is($rc, 3, 'S3 AccessDenied: exit code 3 (permanent)') or diag($stderr);
	like($stderr, qr/S3 refused .*HTTP 403: AccessDenied/, 'S3 AccessDenied: message');
}
($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'lake_slot', '--target', 's3',
	'--s3-url', 'https://lake/x');
is($rc, 2, 'bad --s3-url: exit code 2');
like($stderr, qr/invalid --s3-url "https:\/\/lake\/x": use s3:\/\/BUCKET\/PREFIX/, 'bad --s3-url: message');
($rc, $stdout, $stderr) = run_shipper(\%env, '-d', $connstr, '-S', 'lake_slot', '--target', 's3');
is($rc, 2, 'no --s3-url: exit code 2');

# 4. The AWS CLI scripts, in dry-run mode: the documents they would send.
{
	local $ENV{AWS_REGION} = 'eu-west-1';
	my $scripts = "$E2E_DIR/../../scripts/aws";
	my ($policy, $err);
	IPC::Run::run([ 'bash', "$scripts/iam-policy.sh", 'orders-cdc', 'lake', 'cdc', '--dry-run' ],
		'>', \$policy, '2>', \$err) or die $err;
	my $doc = decode_json($policy);
	is(scalar @{ $doc->{Statement} }, 5, 'IAM policy: five statements');
	is_deeply([ sort map { @{ $_->{Action} } } @{ $doc->{Statement} } ],
		[ sort qw(kinesis:PutRecords kinesis:DescribeStreamSummary kinesis:ListShards s3:PutObject
			  s3:DeleteObject s3:GetObject s3:ListBucket s3:GetBucketLocation) ],
		'IAM policy: only what the shipper calls');
	my ($get) = grep { grep { $_ eq 's3:GetObject' } @{ $_->{Action} } } @{ $doc->{Statement} };
	is($get->{Resource}, 'arn:aws:s3:::lake/cdc/_fundrecs/*', 'IAM policy: GetObject on the owner marker alone');
	my ($list) = grep { grep { $_ eq 's3:ListBucket' } @{ $_->{Action} } } @{ $doc->{Statement} };
	is_deeply($list->{Condition}{StringLike}{'s3:prefix'}, [ 'cdc/*', 'cdc' ], 'IAM policy: ListBucket within the prefix');
	my $fh;
	IPC::Run::run([ 'bash', "$scripts/firehose.sh", 'orders-cdc', 'lake', 'cdc', '--dry-run' ],
		'>', \$fh, '2>', \$err) or die $err;
	like($fh, qr/partitionKeyFromQuery:route/, 'Firehose: dynamic partitioning on route');
	like($fh, qr/AppendDelimiterToRecord/, 'Firehose: a newline after each record');
	my $st;
	IPC::Run::run([ 'bash', "$scripts/create-stream.sh", 'orders-cdc', '4', '--dry-run' ], '>', \$st, '2>', \$err)
	  or die $err;
	like($st, qr/^aws kinesis create-stream --stream-name orders-cdc --shard-count 4/m, 'create-stream: the command');
}

done_testing();
