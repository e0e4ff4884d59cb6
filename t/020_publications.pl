# Publications: fundrecs_decoder with publication_names against pgoutput.
#
# Two slots are created at the same position, one with pgoutput, one with
# fundrecs_decoder.  A random workload (fixed seed) of at least 1,000 row
# changes runs over tables published every way: a row filter on a table of
# REPLICA IDENTITY FULL (so updates cross it both ways), publish =
# 'insert, delete', a partitioned table with a row filter and
# publish_via_partition_root, FOR TABLES IN SCHEMA, a column list with a
# filter on the key, a table no publication names; with TRUNCATEs, and
# ALTER PUBLICATION (a new filter, a table added and dropped) in the middle.
# pgoutput's messages (protocol 1) are decoded here, and the (operation,
# table, key) of every change each plugin publishes must be equal, in
# order.
#
#   FUNDRECS_PUB_SEED   the generator's seed (default 1; "random": a new one)
#   FUNDRECS_PUB_TXNS   transactions in the workload (default 300)
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FundrecsE2E qw(plugin_libraries_conf);

my $seed = $ENV{FUNDRECS_PUB_SEED} // 1;
$seed = int(rand(2**31)) if $seed eq 'random';
my $ntxns = $ENV{FUNDRECS_PUB_TXNS} // 300;
note "seed $seed, $ntxns transactions (FUNDRECS_PUB_SEED=$seed reproduces)";
srand($seed);

my $node = PostgreSQL::Test::Cluster->new('pub');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', plugin_libraries_conf() . "max_replication_slots = 4\n");
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION fundrecs;
CREATE SCHEMA s;
CREATE SCHEMA s2;
CREATE TABLE s.t1 (id int PRIMARY KEY, v int, w int);
ALTER TABLE s.t1 REPLICA IDENTITY FULL;
CREATE TABLE s.t2 (id int PRIMARY KEY, v int, w int);
CREATE TABLE s.parted (id int, grp int, v int, w int, PRIMARY KEY (id, grp)) PARTITION BY LIST (grp);
CREATE TABLE s.parted_0 PARTITION OF s.parted FOR VALUES IN (0);
CREATE TABLE s.parted_1 PARTITION OF s.parted FOR VALUES IN (1);
ALTER TABLE s.parted REPLICA IDENTITY FULL;
ALTER TABLE s.parted_0 REPLICA IDENTITY FULL;
ALTER TABLE s.parted_1 REPLICA IDENTITY FULL;
CREATE TABLE s2.t3 (id int PRIMARY KEY, v int, w int);
CREATE TABLE s.t4 (id int PRIMARY KEY, v int, w int);
CREATE TABLE s.t5 (id int PRIMARY KEY, v int, w int);
CREATE PUBLICATION pa FOR TABLE s.t1 WHERE (v % 3 <> 0);
CREATE PUBLICATION pb FOR TABLE s.t2 WITH (publish = 'insert, delete');
CREATE PUBLICATION pc FOR TABLE s.parted WHERE (v > 50) WITH (publish_via_partition_root = true);
CREATE PUBLICATION pd FOR TABLES IN SCHEMA s2;
CREATE PUBLICATION pf FOR TABLE s.t4 (id, v) WHERE (id % 2 = 0);
SELECT pg_create_logical_replication_slot('po', 'pgoutput');
SELECT pg_create_logical_replication_slot('fr', 'fundrecs_decoder');
});
my $pubs = 'pa,pb,pc,pd,pf';

# ---------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------
my @tables = ('s.t1', 's.t2', 's.parted', 's2.t3', 's.t4', 's.t5');
my %live = map { $_ => {} } @tables;	# table => { id => grp }
my $next_id = 1;
my $changes = 0;

sub one_change
{
	my $t = $tables[ int(rand(@tables)) ];
	my @ids = keys %{ $live{$t} };
	my $r = rand();
	my ($v, $w) = (int(rand(100)), int(rand(40)));

	if (!@ids || $r < 0.45)
	{
		my $id = $next_id++;
		my $grp = $id % 2;
		$live{$t}{$id} = $grp;
		return $t eq 's.parted'
		  ? "INSERT INTO s.parted VALUES ($id, $grp, $v, $w);"
		  : "INSERT INTO $t VALUES ($id, $v, $w);";
	}
	my $id = $ids[ int(rand(@ids)) ];
	if ($r < 0.8)
	{
		return "UPDATE $t SET v = $v, w = $w WHERE id = $id;";
	}
	delete $live{$t}{$id};
	return "DELETE FROM $t WHERE id = $id;";
}

for my $txn (1 .. $ntxns)
{
	my $sql = "BEGIN;\n";
	for (1 .. 1 + int(rand(7)))
	{
		$sql .= one_change() . "\n";
		$changes++;
	}
	$sql .= "COMMIT;\n";
	# Mid-stream: the publications change, at their positions.
	$sql .= "ALTER PUBLICATION pa SET TABLE s.t1 WHERE (v % 2 = 0);\n" if $txn == int($ntxns / 3);
	$sql .= "ALTER PUBLICATION pb ADD TABLE s.t5;\n" if $txn == int($ntxns / 2);
	$sql .= "ALTER PUBLICATION pb SET (publish = 'insert, update, delete, truncate');\n"
	  if $txn == int(2 * $ntxns / 3);
	$sql .= "ALTER PUBLICATION pb DROP TABLE s.t5;\n" if $txn == int(5 * $ntxns / 6);
	if ($txn % 97 == 0)
	{
		$sql .= "TRUNCATE s.t1, s.t2;\n";
		%{ $live{'s.t1'} } = ();
		%{ $live{'s.t2'} } = ();
	}
	$node->safe_psql('postgres', $sql);
}
cmp_ok($changes, '>=', 1000, "the workload made $changes row changes");

# ---------------------------------------------------------------------------
# pgoutput, protocol 1, decoded
# ---------------------------------------------------------------------------
my %relname;	# relation OID => schema.table
my %relcols;	# relation OID => [column names]

sub tuple_data
{
	my ($buf, $pos, $cols) = @_;
	my $n = unpack('n', substr($$buf, $$pos, 2));
	my %row;
	$$pos += 2;
	for my $i (0 .. $n - 1)
	{
		my $kind = substr($$buf, $$pos++, 1);
		next if $kind eq 'n' || $kind eq 'u';
		my $len = unpack('N', substr($$buf, $$pos, 4));
		$row{ $cols->[$i] } = substr($$buf, $$pos + 4, $len);
		$$pos += 4 + $len;
	}
	return \%row;
}

sub cstring
{
	my ($buf, $pos) = @_;
	my $end = index($$buf, "\0", $$pos);
	my $s = substr($$buf, $$pos, $end - $$pos);
	$$pos = $end + 1;
	return $s;
}

my @po;
my $out = $node->safe_psql('postgres',
	"SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('po', NULL, NULL, "
	  . "'proto_version', '1', 'publication_names', '$pubs')");
for my $hex (split /\n/, $out)
{
	my $msg = pack('H*', $hex);
	my $type = substr($msg, 0, 1);
	my $pos = 1;
	if ($type eq 'R')
	{
		my $oid = unpack('N', substr($msg, $pos, 4));
		$pos += 4;
		my $nsp = cstring(\$msg, \$pos);
		my $rel = cstring(\$msg, \$pos);
		$pos += 1;	# replica identity
		my $ncols = unpack('n', substr($msg, $pos, 2));
		$pos += 2;
		my @cols;
		for (1 .. $ncols)
		{
			$pos += 1;	# flags
			push @cols, cstring(\$msg, \$pos);
			$pos += 8;	# type OID, typmod
		}
		$relname{$oid} = "$nsp.$rel";
		$relcols{$oid} = \@cols;
	}
	elsif ($type eq 'I' || $type eq 'U' || $type eq 'D')
	{
		my $oid = unpack('N', substr($msg, $pos, 4));
		$pos += 4;
		my $row;
		while ($pos < length($msg))
		{
			my $kind = substr($msg, $pos++, 1);
			$row = tuple_data(\$msg, \$pos, $relcols{$oid});
			# The new row decides, when there is one.
			last if $kind eq 'N';
		}
		my %op = (I => 'insert', U => 'update', D => 'delete');
		push @po, "$op{$type} $relname{$oid} $row->{id}";
	}
	elsif ($type eq 'T')
	{
		my $n = unpack('N', substr($msg, $pos, 4));
		$pos += 5;
		for (1 .. $n)
		{
			push @po, "truncate " . $relname{ unpack('N', substr($msg, $pos, 4)) };
			$pos += 4;
		}
	}
}

# ---------------------------------------------------------------------------
# fundrecs_decoder with the same publications
# ---------------------------------------------------------------------------
my @fr;
$out = $node->safe_psql('postgres',
	"SELECT data FROM pg_logical_slot_peek_changes('fr', NULL, NULL, 'publication_names', '$pubs')");
for my $line (split /\n/, $out)
{
	my $r = decode_json($line);
	my $name = "$r->{schema}.$r->{table}";
	if ($r->{op} eq 'truncate')
	{
		push @fr, "truncate $name";
		next;
	}
	my $id = $r->{key}{id} // $r->{data}{id} // $r->{old}{id};
	push @fr, "$r->{op} $name $id";
}

my %count;
$count{ (split / /, $_)[0] }++ foreach @po;
note "pgoutput published " . scalar(@po) . " changes: "
  . join(', ', map { "$count{$_} $_" } sort keys %count);
cmp_ok(scalar(@po), '>', 300, 'pgoutput published a good share of the changes');
ok(scalar(grep { /^insert s\.t1 / } @po) > 0 && scalar(grep { /^delete s\.t1 / } @po) > 0,
	'row filter transformations happened (inserts and deletes of s.t1)');
ok(scalar(grep { / s\.parted / } @po) > 0 && !grep({ / s\.parted_/ } @po),
	'the partitions published as their root');
is_deeply(\@fr, \@po, 'fundrecs_decoder publishes the same (op, table, key), in the same order')
  or do
{
	for my $i (0 .. $#po)
	{
		next if defined $fr[$i] && $fr[$i] eq $po[$i];
		diag("first difference at change $i: pgoutput '$po[$i]', fundrecs '" . ($fr[$i] // 'none') . "'");
		last;
	}
};

# Column lists: only the listed columns, in data and key.
my @t4 = grep { /"table":"t4"/ } split /\n/, $out;
ok(@t4 > 0 && !grep({ /"w":/ } @t4), 's.t4: the unlisted column never appears');

$node->stop;
done_testing();
