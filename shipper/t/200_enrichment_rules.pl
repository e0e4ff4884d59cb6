# Enrichment rules through the shipper: a schema that is not the seed's
# (line items -> SKUs -> vendors, a computed net, routed by the SKU's
# category) shipped to Kinesis and S3.  Kinesis gets exactly what the
# decoder emits, rules applied as of each change (checked against a second
# slot read with the same options); the initial load applies the same rules;
# the lake, read through the generic Athena view (current_json, DuckDB),
# gives PostgreSQL's own join, per route.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

needs(qw(shipper kinesalite s3rver duckdb node boto3));

my %env = shipper_env();
my $node = new_cluster('rules');
my $connstr = $node->connstr('postgres');
my ($s3port) = start_s3rver('lake');
my ($s3proxy) = start_proxy($s3port, '--strip-auth');
my ($kport) = start_kinesalite();
my ($kproxy) = start_proxy($kport);
kinesis_tool($kport, 'create', 'items', 2);

$node->safe_psql('postgres', q{
CREATE SCHEMA shop;
CREATE SCHEMA catalog;
CREATE TABLE catalog.vendors (vendor_id int PRIMARY KEY, vendor_name text)
	WITH (user_catalog_table = true);
CREATE TABLE catalog.skus (sku_id bigint PRIMARY KEY, title text, unit_price numeric(10,2),
	vendor_id int, category text) WITH (user_catalog_table = true);
INSERT INTO catalog.vendors SELECT v, 'Vendor ' || v FROM generate_series(1, 5) v;
INSERT INTO catalog.skus SELECT s, 'SKU ' || s, 1 + s * 1.25, 1 + s % 6,
	(ARRAY['Garden & Outdoor', 'Kitchen', 'Électroménager', NULL])[1 + s % 4]
  FROM generate_series(1, 40) s;
CREATE TABLE shop.line_items (id int PRIMARY KEY, sku_id bigint, qty int, discount numeric(4,2));
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title', 'unit_price', 'vendor_id AS sku_vendor_id', 'category'],
	computed => ARRAY['net = unit_price * qty * (1 - discount)'], route => 'category', name => 'skus');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.vendors', ARRAY['sku_vendor_id'],
	columns => ARRAY['vendor_name']);
INSERT INTO shop.line_items SELECT g, 1 + g % 45, 1 + g % 7, (g % 4) * 0.05
  FROM generate_series(1, 600) g;
CREATE PROCEDURE churn(n int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		INSERT INTO shop.line_items VALUES (1000 + i, 1 + i % 43, 1 + i % 5, 0.1);
		UPDATE shop.line_items SET qty = qty + 1 WHERE id = 1 + (i * 13) % 600;
		UPDATE shop.line_items SET sku_id = 1 + (sku_id + 7) % 42 WHERE id = 1 + (i * 17) % 600;
		DELETE FROM shop.line_items WHERE id = 1 + (i * 29) % 600;
		IF i = n / 2 THEN
			-- A lookup change mid-stream: later changes see it, earlier ones do not.
			UPDATE catalog.skus SET category = 'Kitchen', unit_price = unit_price * 2 WHERE sku_id <= 10;
			UPDATE catalog.vendors SET vendor_name = 'Renamed ' || vendor_id WHERE vendor_id = 2;
		END IF;
		COMMIT;
	END LOOP;
END $$;
});

my @targets = ('--target', 'kinesis,s3', '--endpoint-url', "http://127.0.0.1:$kproxy",
	'--stream', 'items', '--s3-url', 's3://lake/rules',
	'--s3-endpoint-url', "http://127.0.0.1:$s3proxy", '--flush-seconds', '1',
	'-o', 'tables=shop.*');
my $log = "$PostgreSQL::Test::Utils::tmp_check/rules.log";
my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'rules_slot', '--create-slot', @targets,
	'-s', '1', '-v');
ok($node->poll_query_until('postgres',
	"SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'rules_slot'"),
	'the initial load finished') or diag(slurp_file($log));

# What the load shipped of one row, joined by PostgreSQL before anything changes.
my $want5 = $node->safe_psql('postgres', q{
	SELECT s.title || '|' || (s.unit_price * l.qty * (1 - l.discount))::numeric(38,4) || '|' || v.vendor_name
	  || '|' || coalesce(fundrecs.category_slug(s.category), 'uncategorized')
	FROM shop.line_items l JOIN catalog.skus s USING (sku_id) JOIN catalog.vendors v
	  ON v.vendor_id = s.vendor_id WHERE l.id = 5});

# The oracle: a slot of its own from here on, read with the same options.
$node->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('oracle', 'fundrecs_decoder')");
$node->safe_psql('postgres', 'CALL churn(200)');
# Every current row touched after the lookup change, for the lake's check.
$node->safe_psql('postgres', 'UPDATE shop.line_items SET qty = qty + 1');
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok($node->poll_query_until('postgres',
	"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'rules_slot'"),
	'the shipper confirmed everything once Kinesis and S3 had it') or diag(slurp_file($log));
$h->signal('TERM');
$h->finish;

my $json = JSON::PP->new->canonical;
my $recs = read_stream($kport, 'items');
my @loaded = grep { $_->{row}{op} eq 'load' } @$recs;
is(scalar @loaded, 600, 'the initial load: every row');
is(scalar(grep { exists $_->{row}{data}{net} && exists $_->{row}{data}{vendor_name} } @loaded),
	600, '... each enriched by both rules (the chained vendor too)');
my ($sample) = grep { $_->{row}{key}{id} == 5 } @loaded;

is(join('|', $sample->{row}{data}{title}, sprintf('%.4f', $sample->{row}{data}{net}),
		$sample->{row}{data}{vendor_name}, $sample->{row}{route}),
	$want5, 'a loaded row: title, net, vendor and route as PostgreSQL joins them');

my %oracle = map { $json->encode(decode_json($_)) => 1 }
  split /\n/, $node->safe_psql('postgres',
	"SELECT data FROM pg_logical_slot_peek_changes('oracle', NULL, NULL, 'tables', 'shop.*')");
my %shipped = map { $json->encode($_->{row}) => 1 } grep { $_->{row}{op} ne 'load' } @$recs;
cmp_ok(scalar keys %oracle, '>', 800, 'the churn made changes (' . scalar(keys %oracle) . ')');
is_deeply([ sort grep { !$shipped{$_} } keys %oracle ], [], 'Kinesis got every row the decoder emits');
is_deeply([ sort grep { !$oracle{$_} } keys %shipped ], [], '... and nothing else');
my %routes = map { $_->{row}{route} // 'null' => 1 } @$recs;
is_deeply([ sort keys %routes ],
	[ sort qw(garden_outdoor kitchen electromenager uncategorized null) ],
	'routes: the category slugs, uncategorized for no category or no SKU, null for deletes');
my @kitchen_before = grep {
	$_->{row}{op} ne 'load' && ($_->{row}{data}{sku_id} // 99) <= 10
	  && ($_->{row}{data}{category} // '') ne 'Kitchen'
} @$recs;
cmp_ok(scalar @kitchen_before, '>', 0,
	'rows before the lookup change carry the category they had then');

# The lake, through the generic view, equals PostgreSQL's join.
my $fig = athena_figures($s3port, 'lake', 'rules', q{
	SELECT route, count(*) AS n, sum((data->>'net')::DECIMAL(38,4))::VARCHAR AS net,
		   count(data->>'vendor_name') AS vendors
	FROM current_json WHERE "schema" = 'shop' AND "table" = 'line_items'
	GROUP BY route ORDER BY route});
my $truth = $node->safe_psql('postgres', q{
	SELECT coalesce(fundrecs.category_slug(s.category), 'uncategorized'), count(*),
		   coalesce(sum(s.unit_price * l.qty * (1 - l.discount)), 0)::numeric(38,4),
		   count(v.vendor_name)
	FROM shop.line_items l LEFT JOIN catalog.skus s USING (sku_id)
	LEFT JOIN catalog.vendors v ON v.vendor_id = s.vendor_id
	GROUP BY 1 ORDER BY 1});
my $got = join("\n", map { join('|', $_->{route}, $_->{n}, $_->{net} // '0.0000', $_->{vendors}) }
	  @{ $fig->{query} });
is($got, $truth, 'current_json per route: rows, sum of net and vendors equal PostgreSQL\'s join');
is($fig->{rows_written}, scalar(@$recs), 'S3 holds the rows Kinesis got, each once');
my $stats = proxy_stats($s3proxy);
is($stats->{mismatches}, 0, "botocore verified every S3 signature ($stats->{verified} requests)");

done_testing();
