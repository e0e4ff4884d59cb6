# Differential test: fundrecs_decoder against PostgreSQL's own test_decoding.
#
# A random workload (fixed seed) over tables of every replica identity
# (DEFAULT with and without a key, USING INDEX, FULL with and without a key,
# NOTHING), composite and TOASTed keys, TOASTed values, subtransactions
# rolled back, transactions large enough to spill, DDL between changes,
# TRUNCATE of several tables and the common types, is decoded from two slots
# created at the same position: one with test_decoding, one with
# fundrecs_decoder (native, packed and DMS).  Every change is compared:
# operation, table, position, each value of the new and the old row, the
# unchanged TOAST columns, and the key, which must come from the best row
# PostgreSQL logged or be absent.
#
#   FUNDRECS_DIFF_SEED   the generator's seed (default 1; "random": a new one,
#                        printed)
#   FUNDRECS_DIFF_TXNS   transactions in the workload (default 400)
use strict;
use warnings;

use Encode qw(encode_utf8);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FundrecsE2E qw(plugin_libraries_conf);

my $seed = $ENV{FUNDRECS_DIFF_SEED} // 1;
$seed = int(rand(2**31)) if $seed eq 'random';
my $ntxns = $ENV{FUNDRECS_DIFF_TXNS} // 400;
note "seed $seed, $ntxns transactions (FUNDRECS_DIFF_SEED=$seed reproduces)";
srand($seed);

my $node = PostgreSQL::Test::Cluster->new('diff');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', plugin_libraries_conf() . q{
max_replication_slots = 4
logical_decoding_work_mem = 64kB
});
$node->start;

# Tables: name => [definition, key columns (the replica identity index, or
# the primary key under FULL and NOTHING: what fundrecs calls the key)].
my %tables = (
	t_pk => [
		q{(id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric, f8 float8,
		   b bool, t text, vc varchar(40), d date, ts timestamp, tstz timestamptz,
		   ttz timetz, j json, jb jsonb, by bytea, u uuid, arr int[], iv interval,
		   big text)}, ['id']
	],
	t_tk => [q{(k text PRIMARY KEY, c int, v text)}, ['k']],
	t_comp => [q{(a int, b text, v text, PRIMARY KEY (a, b))}, [ 'a', 'b' ]],
	t_nokey => [q{(a int, b text)}, []],
	t_idx => [q{(id int PRIMARY KEY, u int NOT NULL, v text, big text)}, ['u']],
	t_full => [q{(id int PRIMARY KEY, v text, big text)}, ['id']],
	t_full_nokey => [q{(a int, b text)}, []],
	t_nothing => [q{(id int PRIMARY KEY, v text, big text)}, ['id']],);
my @names = sort keys %tables;

my $ddl = "CREATE EXTENSION fundrecs;\nCREATE SCHEMA diff;\nCREATE SEQUENCE diff.ids;\n";
$ddl .= "CREATE TABLE diff.$_ $tables{$_}[0];\n" foreach @names;
$ddl .= q{
ALTER TABLE diff.t_tk ALTER COLUMN k SET STORAGE EXTERNAL;
-- (v stays inline: k, the only column that can move, goes out of line.)
ALTER TABLE diff.t_tk ALTER COLUMN v SET STORAGE PLAIN;
CREATE UNIQUE INDEX t_idx_u ON diff.t_idx (u);
ALTER TABLE diff.t_idx REPLICA IDENTITY USING INDEX t_idx_u;
ALTER TABLE diff.t_full REPLICA IDENTITY FULL;
ALTER TABLE diff.t_full_nokey REPLICA IDENTITY FULL;
ALTER TABLE diff.t_nothing REPLICA IDENTITY NOTHING;
-- Random text too long and too varied to stay inline.
CREATE FUNCTION diff.blob(n int) RETURNS text LANGUAGE sql AS
  $$ SELECT string_agg(md5(random()::text), '') FROM generate_series(1, n) $$;
};
$node->safe_psql('postgres', $ddl);
$node->safe_psql('postgres', q{
SELECT pg_create_logical_replication_slot('td', 'test_decoding');
SELECT pg_create_logical_replication_slot('fr', 'fundrecs_decoder');
});

# ---------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------
sub pick { return $_[ int(rand(@_)) ]; }

sub maybe_null
{
	my ($v) = @_;
	return rand() < 0.15 ? 'NULL' : $v;
}

# A string literal with the characters JSON must escape and some it need not.
sub text_lit
{
	my @parts = ('plain', 'quote\'s', 'back\\slash', "tab\there", "new\nline",
		'dbl"q', 'naïve 日本 🚀', '', 'x' x int(rand(50)));
	my $s = join(' ', map { pick(@parts) } 1 .. 1 + int(rand(3)));
	$s =~ s/'/''/g;
	return "E'" . join('', map { $_ eq '\\' ? '\\\\' : $_ eq "\n" ? '\\n' : $_ eq "\t" ? '\\t' : $_ } split //, $s) . "'";
}

sub pk_values
{
	return sprintf(
		"(nextval('diff.ids'), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
		maybe_null(int(rand(65535)) - 32768),
		maybe_null(pick('9223372036854775807', '-1', int(rand(1e9)))),
		maybe_null(pick("'NaN'", "'Infinity'", '0.000001', '123456789012345678901234567890.12345',
				(int(rand(1e6)) / 100))),
		maybe_null(pick("'-Infinity'", '1e300', '0.1', '-2.5', "'NaN'", rand())),
		maybe_null(pick('true', 'false')),
		maybe_null(text_lit()),
		maybe_null('left(' . text_lit() . ', 40)'),
		maybe_null(pick("'2026-11-23'", "'infinity'", "'1999-01-01'")),
		maybe_null(pick("'2026-11-23 19:47:49.123456'", "'2026-01-01 00:00:00'", "'-infinity'",
				"'2026-11-23 19:47:49.1'")),
		maybe_null(pick("'2026-11-23 19:47:49.5+01'", "'2026-06-01 12:00:00-07'", "'infinity'",
				"'2026-11-23 23:59:59.999999+00'")),
		maybe_null(pick("'12:34:56+02'", "'00:00:00-05:30'", "'23:59:59.5+00'")),
		maybe_null(pick(qq{'{"a": [1, 2,\n 3], "b": "x\\\\ny"}'}, q{'[]'}, q{'"s"'}, q{'null'})),
		maybe_null(pick(q{'{"k": {"nested": [true, null, 1.50]}}'}, q{'{}'}, q{'[1, "two"]'})),
		maybe_null(pick(q{'\x00ff10'}, q{''}, q{'\xdeadbeef'})),
		maybe_null(pick(q{'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'}, 'gen_random_uuid()')),
		maybe_null(pick(q{'{1,2,NULL}'}, q{'{}'}, q{'{-1}'})),
		maybe_null(pick(q{'1 day 02:03:04'}, q{'-3 months'}, q{'00:00:00.5'})),
		maybe_null(pick('diff.blob(100)', "'small'")));
}

my $pick_row = "(SELECT ctid FROM diff.%s ORDER BY random() LIMIT 1)";
my $added_column = 0;

# One statement on a random table.
sub statement
{
	my $t = pick(@names);
	my $r = rand();
	my $where = sprintf("WHERE ctid = $pick_row", $t);

	if ($r < 0.45)
	{
		return "INSERT INTO diff.t_pk VALUES " . pk_values() if $t eq 't_pk';
		return "INSERT INTO diff.t_tk VALUES ('k' || nextval('diff.ids') || diff.blob(60), "
		  . maybe_null(int(rand(100))) . ", " . text_lit() . " || repeat('v', 600))"
		  if $t eq 't_tk';
		return "INSERT INTO diff.t_comp VALUES (" . int(rand(1000)) . ", 'b' || nextval('diff.ids'), "
		  . maybe_null(text_lit()) . ")"
		  if $t eq 't_comp';
		return "INSERT INTO diff.$t VALUES (" . int(rand(1000)) . ", " . maybe_null(text_lit()) . ")"
		  if $t =~ /nokey/;
		return "INSERT INTO diff.t_idx VALUES (nextval('diff.ids'), nextval('diff.ids'), "
		  . maybe_null(text_lit()) . ", " . pick('NULL', 'diff.blob(90)') . ")"
		  if $t eq 't_idx';
		return "INSERT INTO diff.$t VALUES (nextval('diff.ids'), " . maybe_null(text_lit()) . ", "
		  . pick('NULL', 'diff.blob(90)', "'short'") . ")";
	}
	elsif ($r < 0.70)
	{
		# An update that keeps the key (the usual case).
		my %set = (
			t_pk => "t = " . maybe_null(text_lit()) . ", n = " . maybe_null(rand()),
			t_tk => "c = " . maybe_null(int(rand(100))),
			t_comp => "v = " . maybe_null(text_lit()),
			t_nokey => "b = " . maybe_null(text_lit()),
			t_full_nokey => "b = " . maybe_null(text_lit()),
			t_idx => "v = " . maybe_null(text_lit()),
			t_full => "v = " . maybe_null(text_lit()),
			t_nothing => "v = " . maybe_null(text_lit()),);
		return "UPDATE diff.$t SET $set{$t} $where";
	}
	elsif ($r < 0.80)
	{
		# An update of the key.
		my %set = (
			t_pk => "id = nextval('diff.ids')",
			t_tk => "k = 'k' || nextval('diff.ids') || diff.blob(60)",
			t_comp => "b = 'b' || nextval('diff.ids')",
			t_nokey => "a = a + 1",
			t_full_nokey => "a = a + 1",
			t_idx => "u = nextval('diff.ids')",
			t_full => "id = nextval('diff.ids')",
			t_nothing => "id = nextval('diff.ids')",);
		return "UPDATE diff.$t SET $set{$t} $where";
	}
	else
	{
		return "DELETE FROM diff.$t $where";
	}
}

my $sql = "SELECT setseed(" . ($seed % 1000) / 1000 . ");\n";
for my $i (1 .. $ntxns)
{
	my $r = rand();
	if ($r < 0.03)
	{
		# A transaction large enough to spill (logical_decoding_work_mem 64kB).
		$sql .= "BEGIN;\nINSERT INTO diff.t_full SELECT nextval('diff.ids'), 'bulk ' || g, "
		  . "CASE WHEN g % 10 = 0 THEN diff.blob(70) END FROM generate_series(1, 300) g;\n"
		  . "UPDATE diff.t_full SET v = v || '+' WHERE v LIKE 'bulk %';\nCOMMIT;\n";
		next;
	}
	if ($r < 0.05)
	{
		$sql .= "TRUNCATE diff." . pick('t_full', 't_nokey') . ", diff." . pick('t_comp', 't_idx') . ";\n";
		next;
	}
	if ($r < 0.08)
	{
		# DDL between changes: a column added with a default, or dropped.
		if ($added_column && rand() < 0.5)
		{
			$sql .= "ALTER TABLE diff.t_pk DROP COLUMN extra_$added_column;\n";
			$added_column = 0;
		}
		elsif (!$added_column)
		{
			$added_column = $i;
			$sql .= "ALTER TABLE diff.t_pk ADD COLUMN extra_$i int DEFAULT $i;\n";
		}
		next;
	}
	$sql .= "BEGIN;\n";
	for (1 .. 1 + int(rand(6)))
	{
		if (rand() < 0.1)
		{
			# A subtransaction rolled back, then one kept.
			$sql .= "SAVEPOINT s;\n" . statement() . ";\n" . statement() . ";\nROLLBACK TO SAVEPOINT s;\n";
		}
		$sql .= statement() . ";\n";
	}
	$sql .= rand() < 0.07 ? "ROLLBACK;\n" : "COMMIT;\n";
}
# From a file (kept in tmp_check for a failure's reader): psql's error,
# if any, is in the log, and no pipe breaks.
my $file = "$PostgreSQL::Test::Utils::tmp_check/differential_workload.sql";
open(my $fh, '>', $file) or die "could not write $file: $!";
print $fh $sql;
close($fh);
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $file, '-d', $node->connstr('postgres') ],
	'workload ran');

# ---------------------------------------------------------------------------
# Reading both slots
# ---------------------------------------------------------------------------
# Rows of a peek, each [lsn, data]; separators that no value holds.
sub peek
{
	my ($slot, @options) = @_;
	my $opts = join('', map { ", '$_'" } @options);
	my $out = $node->safe_psql('postgres', qq{
SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY';
SELECT string_agg(lsn::text || chr(2) || data, chr(1) ORDER BY n)
FROM (SELECT row_number() OVER () AS n, * FROM pg_logical_slot_peek_changes('$slot', NULL, NULL$opts)) s;
});
	return map { [ split(/\x02/, $_, 2) ] } split(/\x01/, $out);
}

# test_decoding: "table diff.t: OP: col[type]:value ..." into changes.
sub td_tuple
{
	my ($s) = @_;
	my %row;
	while ($s =~ /\G\s*("(?:[^"]|"")*"|[^\s\[]+)\[(.+?)\]:(null|unchanged-toast-datum|'(?:[^']|'')*'|\S+)/gcs)
	{
		my ($col, $type, $v) = ($1, $2, $3);
		$col =~ s/^"(.*)"$/$1/s and $col =~ s/""/"/g;
		if ($v eq 'null') { $row{$col} = { null => 1 }; next; }
		if ($v eq 'unchanged-toast-datum') { $row{$col} = { toast => 1 }; next; }
		$v =~ s/^'(.*)'$/$1/s and $v =~ s/''/'/g;
		if ($type eq 'timestamp without time zone') { $v =~ s/ /T/; }
		elsif ($type eq 'timestamp with time zone') { $v =~ s/ /T/; $v =~ s/\+00$/Z/; }
		elsif ($type eq 'time with time zone') { $v =~ s/([+-]\d\d)$/$1:00/; }
		elsif ($type eq 'json') { $v =~ s/[\r\n]/ /g; }
		# json and jsonb are embedded: compared as written, not as strings.
		$row{$col} = { text => $v, json => ($type eq 'json' || $type eq 'jsonb') };
	}
	die "test_decoding tuple not understood near: " . substr($s, pos($s) // 0, 80)
	  if (pos($s) // 0) < length($s) && substr($s, pos($s) // 0) =~ /\S/;
	return \%row;
}

sub td_changes
{
	my @out;
	foreach my $r (peek('td', 'include-xids', '0', 'skip-empty-xacts', '1'))
	{
		my ($lsn, $d) = @$r;
		next if $d =~ /^(BEGIN|COMMIT)/;
		$d =~ /^table (.+?): (INSERT|UPDATE|DELETE|TRUNCATE): ?(.*)$/s
		  or die "test_decoding line not understood: " . substr($d, 0, 200);
		my ($rels, $op, $rest) = ($1, lc $2, $3);
		if ($op eq 'truncate')
		{
			push @out, { lsn => $lsn, op => $op, table => $_ } foreach split(/, /, $rels);
			next;
		}
		next unless $rels =~ /^diff\./;
		my %c = (lsn => $lsn, op => $op, table => $rels);
		if ($rest eq '(no-tuple-data)') { }
		elsif ($op eq 'update' && $rest =~ /^old-key: (.*?) new-tuple: (.*)$/s)
		{
			$c{old} = td_tuple($1);
			$c{new} = td_tuple($2);
		}
		elsif ($op eq 'delete') { $c{old} = td_tuple($rest); }
		else { $c{new} = td_tuple($rest); }
		push @out, \%c;
	}
	return @out;
}

# A small JSON reader that keeps every scalar as the text that was written
# (numbers exactly as printed), strings decoded.
sub jvalue
{
	my ($r) = @_;
	$$r =~ /\G\s*/gc;
	my $start = pos($$r);
	if ($$r =~ /\G\{/gc)
	{
		my %h;
		$$r =~ /\G\s*/gc;
		unless ($$r =~ /\G\}/gc)
		{
			do
			{
				$$r =~ /\G\s*/gc;
				my $k = jvalue($r)->{text};
				$$r =~ /\G\s*:/gc or die "no colon at " . pos($$r);
				$h{$k} = jvalue($r);
				$$r =~ /\G\s*/gc;
			} while ($$r =~ /\G,/gc);
			$$r =~ /\G\s*\}/gc or die "object not closed at " . pos($$r);
		}
		return { obj => \%h, text => substr($$r, $start, pos($$r) - $start) };
	}
	if ($$r =~ /\G\[/gc)
	{
		my @a;
		$$r =~ /\G\s*/gc;
		unless ($$r =~ /\G\]/gc)
		{
			do { push @a, jvalue($r); $$r =~ /\G\s*/gc; } while ($$r =~ /\G,/gc);
			$$r =~ /\G\s*\]/gc or die "array not closed at " . pos($$r);
		}
		return { arr => \@a, text => substr($$r, $start, pos($$r) - $start) };
	}
	if ($$r =~ /\G"((?:[^"\\]|\\.)*)"/gcs)
	{
		my $s = $1;
		$s =~ s/\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})/
		  encode_utf8(chr(0x10000 + ((hex($1) - 0xd800) << 10) + (hex($2) - 0xdc00)))/gie;
		$s =~ s/\\(u([0-9a-fA-F]{4})|.)/
		  defined $2 ? encode_utf8(chr(hex($2)))
		  : { 'n' => "\n", 't' => "\t", 'r' => "\r", 'b' => "\b", 'f' => "\f" }->{$1} \/\/ $1/ge;
		return { str => 1, text => $s, raw => substr($$r, $start, pos($$r) - $start) };
	}
	return { null => 1, text => 'null' } if $$r =~ /\Gnull/gc;
	return { text => $1 } if $$r =~ /\G(true|false|-?[0-9][0-9.eE+\-]*)/gc;
	die "JSON not understood at " . pos($$r) . ": " . substr($$r, pos($$r), 40);
}

sub jparse
{
	my ($s) = @_;
	my $v = jvalue(\$s);
	die "trailing bytes after JSON" if $s =~ /\G\s*\S/gc;
	return $v;
}

# ---------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------
my @td = td_changes();
my %ops;
$ops{ $_->{op} }++ foreach @td;
note "test_decoding: " . scalar(@td) . " changes (" . join(', ', map { "$ops{$_} $_" } sort keys %ops) . ")";
cmp_ok(scalar(@td), '>=', $ntxns, 'the workload made a few changes per transaction');

# Does fundrecs' object (data, old, ...) hold exactly test_decoding's tuple?
# Unchanged TOAST columns must be absent from it and listed in $toast.
sub same_tuple
{
	my ($what, $td, $fr, $toast, $nulls_ok) = @_;
	my @problems;
	my %fr = %{ $fr // {} };
	foreach my $col (sort keys %$td)
	{
		my $t = $td->{$col};
		if ($t->{toast})
		{
			push @problems, "$what.$col: unchanged TOAST value emitted" if exists $fr{$col};
			push @problems, "$what.$col: not listed as unchanged TOAST"
			  unless grep { $_ eq $col } @{ $toast // [] };
			next;
		}
		if (!exists $fr{$col}) { push @problems, "$what.$col missing"; next; }
		my $f = delete $fr{$col};
		if ($t->{null}) { push @problems, "$what.$col: $f->{text}, not null" unless $f->{null}; next; }
		# An embedded json value is written as it is: a JSON null is null.
		my $ftext = $t->{json} ? ($f->{raw} // $f->{text}) : $f->{text};
		if ($f->{null} && !($t->{json} && $t->{text} eq 'null'))
		{
			push @problems, "$what.$col: null, not $t->{text}";
			next;
		}
		push @problems, "$what.$col: '$ftext', test_decoding '$t->{text}'"
		  unless $ftext eq $t->{text};
	}
	# test_decoding leaves an old row's nulls out; under REPLICA IDENTITY
	# FULL fundrecs writes them.
	delete @fr{ grep { $fr{$_}{null} } keys %fr } if $nulls_ok;
	push @problems, "$what: extra columns " . join(',', sort keys %fr) if %fr;
	return @problems;
}

# The key test_decoding's rows imply: each key column from the new row unless
# unchanged TOAST, else from the old row; undef when a column is in neither.
sub expected_key
{
	my ($c) = @_;
	my ($table) = $c->{table} =~ /^diff\.(.*)$/;
	my @cols = @{ $tables{$table}[1] };
	return undef unless @cols;
	my %key;
	foreach my $col (@cols)
	{
		my $v;
		$v = $c->{new}{$col} if $c->{new} && $c->{new}{$col} && !$c->{new}{$col}{toast};
		$v = $c->{old}{$col} if !$v && $c->{old} && $c->{old}{$col} && !$c->{old}{$col}{toast};
		return undef unless $v;
		$key{$col} = $v;
	}
	return \%key;
}

sub compare
{
	my ($format, @fr) = @_;
	my ($n, @diffs) = (0);
	if (@fr != @td)
	{
		push @diffs, "$format: " . scalar(@fr) . " rows, test_decoding " . scalar(@td) . " changes";
	}
	for my $i (0 .. ($#fr < $#td ? $#fr : $#td))
	{
		my ($lsn, $json) = @{ $fr[$i] };
		my $c = $td[$i];
		my $row = jparse($json)->{obj};
		my ($op, $table, $new, $old, $key, $toast);
		if ($format eq 'dms')
		{
			my $m = $row->{metadata}{obj};
			$op = $m->{operation}{text};
			$op = 'truncate' if $op eq 'truncate-table';
			$table = "$m->{'schema-name'}{text}.$m->{'table-name'}{text}";
			$key = $m->{key};
			# beside data and metadata (1.6), as the native format's unchanged_toast
			$toast = [ map { $_->{text} } @{ $row->{'unchanged-toast'}{arr} // [] } ];
			if ($op eq 'delete') { $old = $row->{data}{obj}; }
			elsif ($op ne 'truncate') { $new = $row->{data}{obj}; $old = $row->{'before-image'}{obj}; }
		}
		else
		{
			$op = $row->{op}{text};
			$table = "$row->{schema}{text}.$row->{table}{text}";
			($new, $old, $key) = ($row->{data}{obj}, $row->{old}{obj}, $row->{key});
			$toast = [ map { $_->{text} } @{ $row->{unchanged_toast}{arr} // [] } ];
			push @diffs, "$format row $i: lsn $row->{lsn}{text}, test_decoding $c->{lsn}"
			  if $row->{lsn}{text} ne $c->{lsn};
		}
		my $where = "$format row $i ($c->{op} $c->{table} at $c->{lsn})";
		if ($op ne $c->{op} || $table ne $c->{table})
		{
			push @diffs, "$where: fundrecs has $op $table";
			last;
		}
		$n++;
		next if $op eq 'truncate';
		my @p;
		push @p, same_tuple('data', $c->{new}, $new, $toast) if $c->{new};
		push @p, "data present without a new row" if !$c->{new} && $new && %$new;
		my ($tname) = $c->{table} =~ /^diff\.(.*)$/;
		if ($c->{old}) { push @p, same_tuple('old', $c->{old}, $old, [], $tname =~ /full/); }
		elsif ($old && %$old) { push @p, "old present, test_decoding logged none"; }
		my $want = expected_key($c);
		if (!$want) { push @p, "key $key->{text}, expected none" if $key; }
		elsif (!$key) { push @p, "no key, expected one"; }
		else { push @p, same_tuple('key', $want, $key->{obj}, []); }
		push @diffs, map { "$where: $_" } @p;
	}
	return ($n, @diffs);
}

my @native = peek('fr', 'tables', 'diff.*');
my ($n, @diffs) = compare('native', @native);
is(join("\n", @diffs[0 .. ($#diffs < 19 ? $#diffs : 19)]), '', "native: $n changes agree with test_decoding");

# Packed: the same rows, byte for byte, several to a message.
my @packed = map { my $lsn = $_->[0]; map { [ $lsn, $_ ] } split(/\n/, $_->[1]) } peek('fr', 'tables', 'diff.*', 'pack_bytes', '65536');
is_deeply([ map { $_->[1] } @packed ], [ map { $_->[1] } @native ], 'packed: the same rows, byte for byte');
cmp_ok(scalar(peek('fr', 'tables', 'diff.*', 'pack_bytes', '65536')), '<', scalar(@native), 'packed: fewer messages');

my @dms = peek('fr', 'tables', 'diff.*', 'format', 'dms');
($n, @diffs) = compare('dms', @dms);
is(join("\n", @diffs[0 .. ($#diffs < 19 ? $#diffs : 19)]), '', "dms: $n changes agree with test_decoding");

# What the workload covered, so that a change to the generator that stops
# exercising a case shows.
my %seen;
foreach my $c (@td)
{
	my ($t) = $c->{table} =~ /^diff\.(.*)$/;
	$seen{"$c->{op} $t"}++;
	$seen{'unchanged toast'}++ if $c->{new} && grep { $_->{toast} } values %{ $c->{new} };
	$seen{'toasted key kept'}++ if $t eq 't_tk' && $c->{new} && $c->{new}{k}{toast};
}
foreach my $case ('insert t_pk', 'update t_tk', 'delete t_nothing', 'delete t_nokey', 'update t_idx',
	'delete t_full_nokey', 'update t_comp', 'truncate t_comp', 'unchanged toast', 'toasted key kept')
{
	ok($seen{$case}, "the workload has $case (" . ($seen{$case} // 0) . " changes)") or diag "not covered: $case";
}

$node->stop;
done_testing();
