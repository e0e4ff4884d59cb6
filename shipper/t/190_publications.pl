# Publications through the shipper: -o publication_names chooses what the
# initial load and the stream ship, with the row filter, the column list and
# the UPDATE transformations applied to both; a publication that does not
# exist or publishes nothing stops the shipper before it starts (exit 2),
# as a "tables" typo does.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

needs(qw(shipper));

my %env = shipper_env();
my $node = new_cluster('pubship');
my $connstr = $node->connstr('postgres');

$node->safe_psql('postgres', q{
CREATE TABLE public.accounts (id int PRIMARY KEY, region text NOT NULL, balance int, secret text);
-- The filter's column in the replica identity, which the column list covers.
CREATE UNIQUE INDEX accounts_id_region ON public.accounts (id, region);
ALTER TABLE public.accounts REPLICA IDENTITY USING INDEX accounts_id_region;
CREATE TABLE public.unpublished (id int PRIMARY KEY);
INSERT INTO public.accounts SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g * 10, 'pw' || g
  FROM generate_series(1, 10) g;
INSERT INTO public.unpublished SELECT generate_series(1, 5);
CREATE PUBLICATION eu_accounts FOR TABLE public.accounts (id, region, balance) WHERE (region = 'eu');
CREATE PUBLICATION nothing;
});

# Refused before anything is shipped.
my ($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'bad', '--target', 'stdout',
	'--create-slot', '-o', 'publication_names=eu_accounts,nosuch');
is($rc, 2, 'a publication that does not exist: exit 2');
like($err, qr/publication "nosuch" does not exist/, '... naming it');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'bad', '--target', 'stdout',
	'--create-slot', '-o', 'publication_names=nothing');
is($rc, 2, 'a publication that publishes no table: exit 2');
like($err, qr/publication "nothing" publishes no table/, '... saying so');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'bad', '--target', 'stdout',
	'--create-slot', '-o', 'publication_names=eu_accounts', '-o', 'tables=public.*');
is($rc, 2, 'publication_names with tables: exit 2');
like($err, qr/options "publication_names" and "tables" cannot be used together/, '... the plugin\'s message');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bad'"),
	'0', 'no slot was left behind');

# The initial load (an end position before the slot's: the run ends after
# it), then the changes made since, to an end position.
my $before = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $loaded;
($rc, $loaded, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'pub', '--target', 'stdout',
	'--create-slot', '-E', $before, '-o', 'publication_names=eu_accounts', '-o', 'include_timestamp=false');
is($rc, 0, 'the initial load: exit 0') or diag($err);
$node->safe_psql('postgres', q{
INSERT INTO public.accounts VALUES (11, 'us', 110, 'x'), (12, 'eu', 120, 'y');
UPDATE public.accounts SET region = 'eu' WHERE id = 1;		-- into the filter: an insert
UPDATE public.accounts SET balance = balance + 1 WHERE id = 2;	-- within it: an update
UPDATE public.accounts SET region = 'us' WHERE id = 4;		-- out of it: a delete
UPDATE public.accounts SET balance = 0 WHERE id = 3;		-- outside: nothing
DELETE FROM public.accounts WHERE id = 6;
INSERT INTO public.unpublished VALUES (6);
});
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'pub', '--target', 'stdout', '-E', $end,
	'-o', 'publication_names=eu_accounts', '-o', 'include_timestamp=false');
is($rc, 0, 'streaming to the end: exit 0') or diag($err);
my @rows = map { decode_json($_) } grep { /^\{/ } split /\n/, $loaded . $out;
my @load = grep { $_->{op} eq 'load' } @rows;
my @changes = grep { $_->{op} ne 'load' } @rows;
is_deeply([ sort { $a <=> $b } map { $_->{data}{id} } @load ], [ 2, 4, 6, 8, 10 ],
	'the load shipped the rows of the filter only');
ok(!grep({ exists $_->{data}{secret} || exists(($_->{old} // {})->{secret}) } @rows),
	'the column outside the list is never shipped');
ok(!grep({ $_->{table} eq 'unpublished' } @rows), 'an unpublished table is not shipped');
is_deeply([ map { "$_->{op} $_->{key}{id}" } @changes ],
	[ 'insert 12', 'insert 1', 'update 2', 'delete 4', 'delete 6' ],
	'the stream: filtered, and updates across the filter turned into inserts and deletes');
done_testing();
