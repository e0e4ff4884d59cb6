# Row maps: a rule over a large lookup read at random keys maps where each
# key's row lies with one heap scan, then reads that tuple instead of
# descending the key index (fundrecs_rowmap.c).  The map only says where to
# look, so these check that every row still carries its lookup's values as
# of its change when the map is out of date:
#  1. through SQL decoding, with lookup rows updated (HOT and not), deleted
#     and inserted, and the lookup rewritten by VACUUM FULL and CLUSTER,
#     all queued before one decoding session reads them, and a transaction
#     that updates the lookup and looks it up (its changes may not use the
#     caches: they read the map's places, and the index).  Twice: with a
#     lookup_cache_bytes that holds the places alone, then with the default,
#     where the map holds copies of the rows (by key, the keys being dense);
#  2. through a walsender session that mapped the lookup (places alone)
#     before VACUUM removed its last rows and cut its file short: rows whose
#     mapped place is gone carry no lookup values, the others theirs, and
#     nothing reads
#     past the file's end ("could not read block").  VACUUM's relcache
#     invalidation at its commit drops the rules and their maps; the size
#     check in rowmap_fetch covers the moment between the cut and that
#     commit, which a test cannot hold open, so this part checks the outcome
#     either way;
#  3. copies kept in the hash table (keys far apart), with a lookup changed
#     between batches;
#  4. a lookup large enough for its copies and key array to live in
#     2 MB-page regions, read at random keys.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../test/perl";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(sleep);
use FundrecsE2E qw(plugin_libraries_conf);

my $node = PostgreSQL::Test::Cluster->new('rowmaps');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', plugin_libraries_conf());
$node->append_conf('postgresql.conf', "autovacuum = off\n");
$node->start;

my $n = 4000;
$node->safe_psql('postgres', qq{
CREATE EXTENSION fundrecs;
CREATE SCHEMA m;
CREATE TABLE m.lk (id int PRIMARY KEY, v text, pad text) WITH (user_catalog_table = true);
INSERT INTO m.lk SELECT g, 'a' || g, repeat('x', 100) FROM generate_series(1, $n) g;
CREATE TABLE m.src (id int PRIMARY KEY, lk_id int);
SELECT fundrecs.add_enrichment('m.src', 'm.lk', ARRAY['lk_id'], ARRAY['v'], name => 'lk');
VACUUM ANALYZE m.lk;
SELECT pg_create_logical_replication_slot('maps', 'fundrecs_decoder');
});

# Each batch looks up every key once, in a random order.
my $batch = 0;
my %expect;    # src id -> the lookup's v when it was written (undef: none)
my %lk = map { $_ => "a$_" } 1 .. $n;

sub source_batch
{
	my ($keys, $before) = @_;
	my $base = $batch++ * 100_000;
	$node->safe_psql('postgres',
		    "BEGIN; "
		  . ($before // '')
		  . "; INSERT INTO m.src SELECT $base + k, k FROM unnest(ARRAY["
		  . join(',', @$keys)
		  . "]) k ORDER BY random(); COMMIT");
	$expect{ $base + $_ } = $lk{$_} for @$keys;
}

my @all = (1 .. $n);
source_batch(\@all);
# HOT updates (v is not indexed) and updates that move rows to new pages
$node->safe_psql('postgres', "UPDATE m.lk SET v = 'b' || id WHERE id % 3 = 0");
$lk{$_} = "b$_" for grep { $_ % 3 == 0 } @all;
$node->safe_psql('postgres',
	"UPDATE m.lk SET v = 'c' || id, pad = repeat('y', 300) WHERE id % 7 = 0");
$lk{$_} = "c$_" for grep { $_ % 7 == 0 } @all;
source_batch(\@all);
$node->safe_psql('postgres', "DELETE FROM m.lk WHERE id % 5 = 0");
delete $lk{$_} for grep { $_ % 5 == 0 } @all;
$node->safe_psql('postgres',
	"INSERT INTO m.lk SELECT g, 'n' || g FROM generate_series($n + 1, $n + 500) g");
$lk{$_} = "n$_" for $n + 1 .. $n + 500;
source_batch([ 1 .. $n + 500 ]);
$node->safe_psql('postgres', "VACUUM FULL m.lk");
$node->safe_psql('postgres', "UPDATE m.lk SET v = 'd' || id WHERE id % 11 = 0");
$lk{$_} = "d$_" for grep { $_ % 11 == 0 && exists $lk{$_} } 1 .. $n + 500;
source_batch([ 1 .. $n + 500 ]);
$node->safe_psql('postgres', "CLUSTER m.lk USING lk_pkey");
$node->safe_psql('postgres', "UPDATE m.lk SET v = 'e' || id WHERE id % 13 = 0");
$lk{$_} = "e$_" for grep { $_ % 13 == 0 && exists $lk{$_} } 1 .. $n + 500;
source_batch([ 1 .. $n + 500 ]);
$lk{$_} = "f$_" for grep { $_ % 17 == 0 && exists $lk{$_} } 1 .. $n + 500;
source_batch([ 1 .. $n + 500 ], "UPDATE m.lk SET v = 'f' || id WHERE id % 17 = 0");

sub check_rows
{
	my ($lines, $what) = @_;
	my ($rows, $wrong) = (0, 0);
	for my $line (@$lines)
	{
		next unless $line =~ /"schema":"m","table":"src"/;
		my ($id) = $line =~ /"id":(-?\d+)/ or next;
		next unless exists $expect{$id};
		$rows++;
		my ($v) = $line =~ /"v":(null|"[^"]*")/;
		$v = $v eq 'null' ? undef : substr($v, 1, -1) if defined $v;
		my $want = $expect{$id};
		if ((defined $v) != (defined $want) || (defined $v && $v ne $want))
		{
			diag("$what: row $id has v " . ($v // 'null') . ", wants " . ($want // 'null'))
			  if $wrong++ < 5;
		}
	}
	return ($rows, $wrong);
}

# The session's figures from the server log
sub map_figures
{
	my ($log_start) = @_;
	my $log = slurp_file($node->logfile, $log_start);
	return $log =~
	  /\((\d+) through row maps, read (\d+) times, (\d+) of them with the rows\)/;
}

my ($rows, $wrong);
for my $how ([ 'places', 'peek', ", 'lookup_cache_bytes', '1048576'" ],
	[ 'copies', 'get', '' ])
{
	my ($what, $fn, $opt) = @$how;
	my $log_start = -s $node->logfile;
	my @lines = split /\n/,
	  $node->safe_psql('postgres',
		"SELECT data FROM pg_logical_slot_${fn}_changes('maps', NULL, NULL, 'tables', 'm.src'$opt)"
	  );
	($rows, $wrong) = check_rows(\@lines, "SQL decoding, $what");
	is($rows, scalar(keys %expect), "$what: every source row was decoded");
	is($wrong, 0, "$what: every row carries the lookup as of its change, through the map");
	my ($by_map, $maps, $copied) = map_figures($log_start);
	ok(defined $by_map && $by_map > $n,
		"$what: most lookups went through a row map (" . ($by_map // 'none') . ")");
	ok(defined $maps && $maps >= 2,
		"$what: the map was read again after the rewrites (" . ($maps // 'none') . ' times)');
	if ($what eq 'places')
	{
		is($copied, 0, 'places: no map held copies of the rows');
	}
	else
	{
		ok(defined $copied && $copied >= 2,
			'copies: the maps held copies of the rows (' . ($copied // 'none') . ' times)');
	}
}

# 2. One walsender session keeps its map while VACUUM cuts the file short.
%expect = ();
$node->safe_psql('postgres', q{
CREATE TABLE m.lk2 (id int PRIMARY KEY, v text, pad text) WITH (user_catalog_table = true);
CREATE TABLE m.src2 (id int PRIMARY KEY, lk_id int);
SELECT fundrecs.add_enrichment('m.src2', 'm.lk2', ARRAY['lk_id'], ARRAY['v'], name => 'lk2');
});
$node->safe_psql('postgres',
	"INSERT INTO m.lk2 SELECT g, 'a' || g, repeat('x', 200) FROM generate_series(1, $n) g");
$node->safe_psql('postgres', "VACUUM ANALYZE m.lk2");
my $out = $node->basedir . '/recv.json';
my $recv = IPC::Run::start(
	[
		$node->config_data('--bindir') . '/pg_recvlogical', '-d', $node->connstr('postgres'),
		'-S', 'maps', '--start', '-f', $out, '-F', '1', '-s', '1',
		'-o', 'tables=m.src2', '-o', 'lookup_cache_bytes=1048576'    # places, no copies
	],
	'>', \my $recv_out, '2>', \my $recv_err);

sub received
{
	my ($count) = @_;
	my $ok = 0;
	for (1 .. 300)
	{
		my @l = -e $out ? grep { /"table":"src2"/ } split /\n/, slurp_file($out) : ();
		if (@l >= $count) { $ok = 1; last; }
		sleep 0.2;
	}
	return $ok;
}

$node->safe_psql('postgres',
	"INSERT INTO m.src2 SELECT k, k FROM generate_series(1, $n) k ORDER BY random()");
$expect{$_} = "a$_" for 1 .. $n;
ok(received($n), 'the session decoded the first batch (and mapped the lookup)');
my $size_before = $node->safe_psql('postgres', "SELECT pg_relation_size('m.lk2')");
my $del_xid = $node->safe_psql('postgres',
	"BEGIN; DELETE FROM m.lk2 WHERE id > 1000; SELECT txid_current(); COMMIT;");
$node->safe_psql('postgres', "INSERT INTO m.src2 VALUES (-1, 1)");
$expect{-1} = 'a1';
ok(received($n + 1), 'the session decoded past the delete');

# The slot lets VACUUM remove the deleted rows once its catalog_xmin passes them.
my $freed = 0;
for (1 .. 150)
{
	$node->safe_psql('postgres', 'CHECKPOINT');
	my $xmin = $node->safe_psql('postgres',
		"SELECT catalog_xmin::text::bigint FROM pg_replication_slots WHERE slot_name = 'maps'");
	if ($xmin ne '' && $xmin > $del_xid) { $freed = 1; last; }
	sleep 0.2;
}
ok($freed, 'the slot no longer holds the deleted rows');
$node->safe_psql('postgres', "VACUUM m.lk2");
my $size_after = $node->safe_psql('postgres', "SELECT pg_relation_size('m.lk2')");
cmp_ok($size_after, '<', $size_before / 2,
	"VACUUM cut the lookup's file short ($size_before -> $size_after bytes)");

# Keys whose mapped rows lay in the pages cut off, and keys still there.
$node->safe_psql('postgres',
	"INSERT INTO m.src2 SELECT 100000 + k, k FROM generate_series(1, $n, 7) k ORDER BY random()");
my $after = 0;
for (my $k = 1; $k <= $n; $k += 7) { $expect{ 100000 + $k } = $k <= 1000 ? "a$k" : undef; $after++; }
ok(received($n + 1 + $after), 'the session decoded the lookups past the file\'s end');
$recv->kill_kill;
$recv->finish;
unlike($recv_err // '', qr/could not read block/, 'no read past the file\'s end');
my @streamed = grep { /"table":"src2"/ } split /\n/, slurp_file($out);
my @rewritten = map { s/"table":"src2"/"table":"src"/r } @streamed;
($rows, $wrong) = check_rows(\@rewritten, 'walsender');
is($rows, scalar(keys %expect), 'every row of the session was decoded');
is($wrong, 0, 'rows whose lookup rows were removed carry none; the others theirs');

# 3. Keys far apart: the copies are found through the hash table.
%expect = ();
%lk = map { ($_ * 1009) => "s$_" } 1 .. $n;
$node->safe_psql('postgres', qq{
CREATE TABLE m.lk3 (id bigint PRIMARY KEY, v text) WITH (user_catalog_table = true);
INSERT INTO m.lk3 SELECT g * 1009, 's' || g FROM generate_series(1, $n) g;
VACUUM ANALYZE m.lk3;
CREATE TABLE m.src3 (id int PRIMARY KEY, lk_id bigint);
SELECT fundrecs.add_enrichment('m.src3', 'm.lk3', ARRAY['lk_id'], ARRAY['v'], name => 'lk3');
});
$batch = 0;

sub sparse_batch
{
	my $base = $batch++ * 100_000;
	my @keys = (map({ $_ * 1009 } 1 .. $n), 5, 1010);    # and two keys without a row
	$node->safe_psql('postgres',
		    "INSERT INTO m.src3 SELECT $base + i, k FROM unnest(ARRAY["
		  . join(',', @keys)
		  . "]::bigint[]) WITH ORDINALITY AS u(k, i) ORDER BY random()");
	my $i = 0;
	$expect{ $base + ++$i } = $lk{$_} for @keys;
}
sparse_batch();
$node->safe_psql('postgres', "UPDATE m.lk3 SET v = 't' || id WHERE id % 3 = 0");
$lk{$_} = "t$_" for grep { $_ % 3 == 0 } keys %lk;
sparse_batch();
my $log_start = -s $node->logfile;
my @lines = map { s/"table":"src3"/"table":"src"/r } grep { /"table":"src3"/ } split /\n/,
  $node->safe_psql('postgres',
	"SELECT data FROM pg_logical_slot_get_changes('maps', NULL, NULL, 'tables', 'm.src3')");
($rows, $wrong) = check_rows(\@lines, 'sparse keys');
is($rows, scalar(keys %expect), 'sparse keys: every source row was decoded');
is($wrong, 0, 'sparse keys: every row carries the lookup as of its change, or none');
my (undef, $maps, $copied) = map_figures($log_start);
ok(defined $copied && $copied >= 2 && $copied == $maps,
	'sparse keys: each map held copies of the rows (' . ($copied // 'none') . ' times)');

# 4. A lookup large enough for the copies and the key array to be mapped in
# regions of huge pages (rowmap_region): 600,000 rows, 20,000 random keys.
%expect = ();
my $big = 600_000;
$node->safe_psql('postgres', qq{
CREATE TABLE m.lk4 (id int PRIMARY KEY, v text) WITH (user_catalog_table = true);
INSERT INTO m.lk4 SELECT g, 'b' || g FROM generate_series(1, $big) g;
VACUUM ANALYZE m.lk4;
CREATE TABLE m.src4 (id int PRIMARY KEY, lk_id int);
SELECT fundrecs.add_enrichment('m.src4', 'm.lk4', ARRAY['lk_id'], ARRAY['v'], name => 'lk4');
INSERT INTO m.src4 SELECT i, CASE WHEN i % 1000 = 0 THEN $big + i
    ELSE 1 + (hashint4(i) & 2147483647) % $big END FROM generate_series(1, 20000) i;
});
for my $row (split /\n/, $node->safe_psql('postgres', 'SELECT id, lk_id FROM m.src4'))
{
	my ($id, $k) = split /\|/, $row;
	$expect{$id} = $k <= $big ? "b$k" : undef;
}
$log_start = -s $node->logfile;
@lines = map { s/"table":"src4"/"table":"src"/r } grep { /"table":"src4"/ } split /\n/,
  $node->safe_psql('postgres',
	"SELECT data FROM pg_logical_slot_get_changes('maps', NULL, NULL, 'tables', 'm.src4')");
($rows, $wrong) = check_rows(\@lines, 'large lookup');
is($rows, 20000, 'large lookup: every source row was decoded');
is($wrong, 0, 'large lookup: every row carries its lookup row, or none');
(my $by_map, $maps, $copied) = map_figures($log_start);
ok(defined $copied && $copied == 1 && $by_map > 5000,
	'large lookup: one map with the rows answered most lookups ('
	  . ($by_map // 'none') . ' lookups, ' . ($copied // 'none') . ' maps)');

$node->stop;
done_testing();
