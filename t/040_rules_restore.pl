# Enrichment rules survive pg_dump and pg_restore whatever the tables'
# column history: pg_dump recreates a table without its dropped columns,
# so a rule's attribute numbers may point at other columns.  The rules keep
# the columns' names beside their numbers, and the tables' OIDs as plain
# numbers (1.6): a restore changes the tables' OIDs, and then decoding
# places every column by name, never at a neighbouring column's number.
# A column renamed before the dump is followed (the names are kept current),
# and one renamed after the restore too.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../test/perl";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FundrecsE2E qw(plugin_libraries_conf);

sub cluster
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	$node->append_conf('postgresql.conf', plugin_libraries_conf());
	$node->start;
	return $node;
}

my $old = cluster('dumped');
{
	my $bindir = $old->config_data('--bindir');
	my ($dump_major) = `"$bindir/pg_dump" --version` =~ /(\d+)\.\d+/;
	my $server_major = int($old->safe_psql('postgres', 'SHOW server_version_num') / 10000);
	plan skip_all => "pg_dump $dump_major cannot dump PostgreSQL $server_major (scripts/pg-toolchain.sh links this system's client programs)"
	  if !defined $dump_major || $dump_major < $server_major;
}
$old->safe_psql('postgres', q{
CREATE EXTENSION fundrecs;
CREATE SCHEMA r;
-- the lookup loses a column before its read one: numbers shift on restore
CREATE TABLE r.lk (id int PRIMARY KEY, gone text, v text) WITH (user_catalog_table = true);
ALTER TABLE r.lk DROP COLUMN gone;
INSERT INTO r.lk VALUES (1, 'one');
-- the source too, before its join and expression columns
CREATE TABLE r.src (id int PRIMARY KEY, junk int, lk_id int, qty int);
ALTER TABLE r.src DROP COLUMN junk;
SELECT fundrecs.add_enrichment('r.src', 'r.lk', ARRAY['lk_id'], ARRAY['v'],
	computed => ARRAY['twice = qty * 2', 'label = upper(v) || qty::text'], name => 'lk');
-- a lookup whose read column's number is its neighbour's after restore,
-- renamed first
CREATE TABLE r.amb (id int PRIMARY KEY, a text, b text, c text) WITH (user_catalog_table = true);
ALTER TABLE r.amb DROP COLUMN a;
ALTER TABLE r.amb RENAME COLUMN b TO b_renamed;
INSERT INTO r.amb VALUES (1, 'B', 'C');
CREATE TABLE r.src2 (id int PRIMARY KEY, amb_id int);
SELECT fundrecs.add_enrichment('r.src2', 'r.amb', ARRAY['amb_id'], ARRAY['c'], name => 'amb');
});
is($old->safe_psql('postgres', "SELECT lookup_names FROM fundrecs.enrichment_rules WHERE name = 'lk'"),
	'{id,v}', 'the lookup columns\' names are kept beside their numbers');

# The server's own pg_dump and pg_restore (a newer major's refuse an older one's
# client programs).
my $bindir = $old->config_data('--bindir');
my $dump = "$PostgreSQL::Test::Utils::tmp_check/rules.dump";
$old->command_ok([ "$bindir/pg_dump", '-Fc', '-f', $dump, '-d', $old->connstr('postgres') ], 'pg_dump');

my $new = cluster('restored');
$new->command_ok([ "$bindir/pg_restore", '--exit-on-error', '-d', $new->connstr('postgres'), $dump ],
	'pg_restore (the event triggers let it through)');
is($new->safe_psql('postgres', "SELECT attnum FROM pg_attribute WHERE attrelid = 'r.lk'::regclass AND attname = 'v'"),
	'2', 'the restored lookup has v at another number');

$new->safe_psql('postgres', q{
SELECT pg_create_logical_replication_slot('s', 'fundrecs_decoder');
INSERT INTO r.src VALUES (1, 1, 5);
INSERT INTO r.src2 VALUES (1, 1);
});
my $rows = $new->safe_psql('postgres', q{
SELECT data FROM pg_logical_slot_peek_changes('s', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'r.*', 'on_enrich_error', 'emit')});
like($rows, qr/"data":\{"id":1,"lk_id":1,"qty":5,"v":"one","twice":10,"label":"ONE5"\}/,
	'restored: the rule reads v by name, and its expressions the moved source columns');
like($rows, qr/"table":"src2".*"data":\{"id":1,"amb_id":1,"c":"C"\}/,
	'restored: the column by its name, not the neighbour at its old number');
unlike($rows, qr/"c":"B"/, 'never the neighbouring column');

# A rename after the restore is followed (the names are kept up to date).
$new->safe_psql('postgres', q{ALTER TABLE r.lk RENAME COLUMN v TO v2;
INSERT INTO r.src VALUES (2, 1, 1);});
is($new->safe_psql('postgres', "SELECT lookup_names FROM fundrecs.enrichment_rules WHERE name = 'lk'"),
	'{id,v2}', 'a renamed lookup column: its new name is kept');
$rows = $new->safe_psql('postgres', q{
SELECT data FROM pg_logical_slot_peek_changes('s', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'r.src')});
like($rows, qr/"id":2,"lk_id":1,"qty":1,"v":"one"/, 'after the rename: still the same column');

done_testing();
