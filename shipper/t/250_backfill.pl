# Backfills while the stream flows (fundrecs.backfill, extension 1.8).
#
# 1. Standard output, a writer updating, deleting, inserting and changing the
#    keys of random rows meanwhile: applying the shipped rows in order gives
#    the table, and no key's version ever goes backwards.  Cancel, a table
#    dropped or renamed mid-backfill, a table the slot does not capture, a
#    request made while the shipper was down, a rolled-back request.
# 2. At scale: a table of FUNDRECS_BACKFILL_ROWS rows (default 1,000,000)
#    backfilled to Kinesis (--aggregate, through the signature-checking
#    proxy) and S3 at once, a writer changing random rows all along, the
#    shipper killed with SIGKILL several times during the backfill, each
#    chunk read in 3 parts side by side (--backfill-workers 3).  Then:
#    per key, Kinesis in delivery order ends with the table's row and never
#    goes back a version; the lake holds no line twice, and its newest row
#    per key is the table's; the rows the backfill read are about the
#    table's plus the chunks read again.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

needs(qw(shipper kinesalite aws-kinesis-agg s3rver node boto3));
my ($json) = json_decoders();

my %env = shipper_env();
my $node = new_cluster('backfill');
my $connstr = $node->connstr('postgres');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;

$node->safe_psql('postgres', q{
CREATE SCHEMA shop;
CREATE TABLE shop.accounts (id bigint PRIMARY KEY, version int NOT NULL DEFAULT 1,
	balance int, note text);
CREATE SEQUENCE shop.new_ids START 10000000;
INSERT INTO shop.accounts SELECT g, 1, g % 1000, 'account ' || g FROM generate_series(1, 20000) g;
-- Random changes, each a transaction: updates (a version more), deletes,
-- inserts of new keys, and key changes (with keys_too).
CREATE PROCEDURE churn(tbl regclass, n int, top int, keys_too boolean, pause float8) LANGUAGE plpgsql AS $$
DECLARE
	k bigint;
BEGIN
	FOR i IN 1 .. n LOOP
		k := 1 + floor(random() * top);
		CASE floor(random() * 10)
			WHEN 0 THEN EXECUTE format('DELETE FROM %s WHERE id = $1', tbl) USING k;
			WHEN 1 THEN EXECUTE format('INSERT INTO %s (id, balance, note) VALUES (nextval(''shop.new_ids''), 1, ''new'')', tbl);
			WHEN 2 THEN
				IF keys_too THEN
					EXECUTE format('UPDATE %s SET id = nextval(''shop.new_ids''), version = version + 1 WHERE id = $1', tbl) USING k;
				ELSE
					EXECUTE format('UPDATE %s SET version = version + 1 WHERE id = $1', tbl) USING k;
				END IF;
			ELSE EXECUTE format('UPDATE %s SET version = version + 1, balance = balance + 1 WHERE id = $1', tbl) USING k;
		END CASE;
		COMMIT;
		IF pause > 0 THEN PERFORM pg_sleep(pause); END IF;
	END LOOP;
END $$;
});

# The rows a consumer applies in order: key -> data, and how often a key's
# version went backwards.  Rows shipped again after a kill (at-least-once)
# are dropped by their lsn and key, as the README tells consumers to.
sub apply_rows
{
	my ($state, $backwards, $rows) = @_;
	my %seen;
	foreach my $r (@$rows)
	{
		next unless $r->{table} && $r->{key};
		my $id = $r->{key}{id};
		next if $seen{"$r->{lsn} $id"}++;
		if ($r->{op} eq 'delete')
		{
			delete $state->{$id};
			next;
		}
		next if $r->{op} eq 'truncate';
		# A key change: the old key's row is gone.
		delete $state->{ $r->{old}{id} } if $r->{old} && defined $r->{old}{id} && $r->{old}{id} != $id;
		my $prev = $state->{$id};
		$$backwards++ if $prev && $r->{data}{version} < $prev->{version};
		$state->{$id} = $r->{data};
	}
	return;
}

sub table_state
{
	my ($tbl) = @_;
	my %t;
	foreach my $line (split /\n/, $node->safe_psql('postgres', "SELECT id, version, balance FROM $tbl"))
	{
		my ($id, $v, $b) = split /\|/, $line;
		$t{$id} = "$v/$b";
	}
	return \%t;
}

sub compare_state
{
	my ($state, $tbl, $name) = @_;
	my $want = table_state($tbl);
	my %got = map { $_ => "$state->{$_}{version}/$state->{$_}{balance}" } keys %$state;
	my @missing = grep { !exists $got{$_} } keys %$want;
	my @extra = grep { !exists $want->{$_} } keys %got;
	my @differ = grep { exists $got{$_} && $got{$_} ne $want->{$_} } keys %$want;
	ok(!@missing && !@extra && !@differ,
		"$name: every key ends with the table's row (" . scalar(keys %$want) . ' rows)')
	  or diag('missing ' . scalar(@missing) . " (e.g. @missing[0 .. Min(4, $#missing)]), extra "
		  . scalar(@extra) . ', differing ' . scalar(@differ));
	return;
}

sub Min { return $_[0] < $_[1] ? $_[0] : $_[1]; }

sub status
{
	my ($id, $slot, $db) = @_;
	return $node->safe_psql($db // 'postgres',
		"SELECT state || '|' || chunks_done || '|' || coalesce(message, '') FROM fundrecs.backfill_status"
		  . " WHERE request_id = $id AND slot_name = '$slot'");
}

# Waits until the slot has confirmed everything written so far.
sub catch_up
{
	my ($slot, $db) = @_;
	$db //= 'postgres';
	my $end = $node->safe_psql($db, 'SELECT pg_current_wal_lsn()');
	$node->poll_query_until($db,
		"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = '$slot'")
	  or die "$slot did not catch up";
	return;
}

sub wait_state
{
	my ($id, $slot, $re, $db) = @_;
	my $deadline = time + 300;
	my $s = '';
	while (time < $deadline)
	{
		$s = status($id, $slot, $db);
		return $s if $s =~ $re;
		usleep(100_000);
	}
	return $s;
}

# ----------------------------------------------------------------------
# 1. Standard output
# ----------------------------------------------------------------------
my $out = "$tmp/backfill_stdout.jsonl";
my $log = "$tmp/backfill_stdout.log";
my @stdout_ship = ('-d', $connstr, '-S', 'bf_out', '--create-slot', '--if-not-exists', '--no-load',
	'--target', 'stdout', '-o', 'tables=shop.*', '-s', '1', '-v');
sub start_stdout
{
	local %ENV = (%ENV, %env);
	foreach my $k (keys %env) { delete $ENV{$k} unless defined $env{$k}; }
	return IPC::Run::start([ $FundrecsE2E::SHIPPER, @stdout_ship ], '<', \undef, '>>', $out, '2>>', $log);
}
my $h = start_stdout();
$node->poll_query_until('postgres', "SELECT active FROM pg_replication_slots WHERE slot_name = 'bf_out'")
  or die 'the shipper did not start';

# A rolled-back request is never run.
$node->safe_psql('postgres', "BEGIN; SELECT fundrecs.backfill('shop.accounts'); ROLLBACK;");

my $writer = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-c',
	"CALL churn('shop.accounts', 4000, 20000, true, 0.001)" ], '>', '/dev/null', '2>', "$tmp/writer1.log");
usleep(300_000);
my $id = $node->safe_psql('postgres', "SELECT fundrecs.backfill('shop.accounts', chunk_rows => 1000)");
my $s = wait_state($id, 'bf_out', qr/^(finished|failed|cancelled)/);
like($s, qr/^finished\|2\d\|$/, "the backfill finished in about 20 chunks ($s)");
$writer->finish;
catch_up('bf_out');
is($node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs.backfill_request'), 1,
	'the rolled-back request left nothing');

my @rows = map { $json->decode($_) } grep { /^\{/ } split /\n/, slurp_file($out);
my %state;
my $backwards = 0;
apply_rows(\%state, \$backwards, \@rows);
compare_state(\%state, 'shop.accounts', 'stdout');
is($backwards, 0, 'stdout: no key went back a version');
my @loads = grep { $_->{op} eq 'load' } @rows;
my %load_keys = map { $_->{key}{id} => 1 } @loads;
is(scalar(keys %load_keys), scalar(@loads), 'stdout: each key backfilled once');
my $loglines = slurp_file($log);
my $left_out = 0;
$left_out += $1 while $loglines =~ /shipped at \S+: \d+ rows, (\d+) left out for newer changes/g;
diag("stdout: " . scalar(@loads) . " rows backfilled, $left_out left out for newer changes");
like($loglines, qr/backfill $id of shop\.accounts finished/, 'the log says it finished');

# A change the stream has before anyone sees it.  A commit is in the WAL,
# and so in the stream, before it is visible: in between it flushes, and
# with synchronous replication waits for its standby.  A chunk read in that
# window used to miss it and ship the row as it was before, after the
# stream's newer version (in the churn above, now and then).  Here the
# window is held open by a synchronous standby that never comes.
$node->safe_psql('postgres', q{
CREATE TABLE shop.held (id int PRIMARY KEY, version int NOT NULL DEFAULT 1, balance int);
INSERT INTO shop.held SELECT g, 1, 0 FROM generate_series(1, 50) g;
ALTER SYSTEM SET synchronous_standby_names = 'fundrecs_absent_standby';
SELECT pg_reload_conf();
});
my $held = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-c',
	'SET synchronous_commit = on; UPDATE shop.held SET version = 2, balance = 7 WHERE id = 7' ],
	'>', '/dev/null', '2>', "$tmp/held.log");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
  or die 'the update did not wait for the standby';
my $streamed = 0;
foreach (1 .. 300)
{
	$streamed = grep { /"table":"held"/ && /"op":"update"/ } split /\n/, slurp_file($out);
	last if $streamed;
	usleep(100_000);
}
ok($streamed, 'the update is in the stream');
is($node->safe_psql('postgres', 'SELECT version FROM shop.held WHERE id = 7'), 1, 'and not yet visible');
my $held_id = $node->safe_psql('postgres',
	"SET synchronous_commit = local; SELECT fundrecs.backfill('shop.held')");
my $waiting = 0;
foreach (1 .. 300)
{
	$waiting = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fundrecs_shipper backfill'"
		  . " AND wait_event_type = 'Lock' AND wait_event = 'transactionid'");
	last if $waiting;
	last if status($held_id, 'bf_out') =~ /^(finished|failed)/;
	usleep(100_000);
}
is($waiting, 1, 'the chunk waits for the commit it would not see');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf();');
$held->finish;
like(wait_state($held_id, 'bf_out', qr/^(finished|failed|cancelled)/), qr/^finished\|1\|$/,
	'then reads it, and the backfill finishes');
catch_up('bf_out');
my %held_state;
my $held_back = 0;
apply_rows(\%held_state, \$held_back,
	[ grep { ($_->{table} // '') eq 'held' } map { $json->decode($_) } grep { /^\{/ } split /\n/, slurp_file($out) ]);
compare_state(\%held_state, 'shop.held', 'a commit seen before it is visible');
is($held_back, 0, 'a commit seen before it is visible: no key went back a version');

# Cancel, a dropped table, a renamed one, a table the slot does not capture.
# The dropped and renamed tables have 20,000 chunks of 5 rows: enough that
# their backfills are still running when the DDL comes (with 600 chunks, a
# fast machine once finished one between two polls of its state).
$node->safe_psql('postgres', q{
CREATE TABLE shop.doomed (id int PRIMARY KEY, version int DEFAULT 1, balance int);
INSERT INTO shop.doomed SELECT g, 1, 0 FROM generate_series(1, 100000) g;
CREATE TABLE shop.renamed (LIKE shop.doomed INCLUDING ALL);
INSERT INTO shop.renamed SELECT g, 1, 0 FROM generate_series(1, 100000) g;
CREATE TABLE public.elsewhere (id int PRIMARY KEY);
});
my $cancel = $node->safe_psql('postgres', "SELECT fundrecs.backfill('shop.accounts', 10)");
like(wait_state($cancel, 'bf_out', qr/^running\|[3-9]/), qr/^running/, 'a slow backfill runs');
is($node->safe_psql('postgres', "SELECT fundrecs.cancel_backfill('shop.accounts')"), 1, 'cancel_backfill');
like(wait_state($cancel, 'bf_out', qr/^cancelled/), qr/^cancelled\|\d+\|cancelled with fundrecs.cancel_backfill/,
	'it stops, cancelled');
my $doomed = $node->safe_psql('postgres', "SELECT fundrecs.backfill('shop.doomed', 5)");
wait_state($doomed, 'bf_out', qr/^running\|[2-9]/);
$node->safe_psql('postgres', 'DROP TABLE shop.doomed');
like(wait_state($doomed, 'bf_out', qr/^failed/), qr/^failed\|\d+\|table shop.doomed was dropped during its backfill$/,
	'a table dropped mid-backfill ends it with a clear message');
my $renamed = $node->safe_psql('postgres', "SELECT fundrecs.backfill('shop.renamed', 5)");
wait_state($renamed, 'bf_out', qr/^running\|[2-9]/);
$node->safe_psql('postgres', 'ALTER TABLE shop.renamed RENAME TO renamed2');
like(wait_state($renamed, 'bf_out', qr/^failed/),
	qr/^failed\|\d+\|table shop.renamed was renamed to shop.renamed2 during its backfill; request a backfill of shop.renamed2$/,
	'so does a rename');
my $other = $node->safe_psql('postgres', "SELECT fundrecs.backfill('public.elsewhere')");
like(wait_state($other, 'bf_out', qr/^skipped/), qr/^skipped\|0\|the slot's plugin options do not capture this table$/,
	'a table the slot does not capture is skipped');

# A request made while the shipper is down runs when it is back.
$h->signal('TERM');
$h->finish;
my $while_down = $node->safe_psql('postgres', "SELECT fundrecs.backfill('shop.renamed2', 1000)");
is(status($while_down, 'bf_out'), '', 'no shipper has seen the request yet');
$h = start_stdout();
like(wait_state($while_down, 'bf_out', qr/^finished/), qr/^finished\|100\|/, 'it ran once the shipper was back');

# Chunks resume after keys of any text: the shipper turns the last key the
# server sends (a text[] in binary) into the next chunk's literal.
$node->safe_psql('postgres', q{
CREATE TABLE shop.tricky (a text, b int, v int DEFAULT 1, PRIMARY KEY (a, b));
INSERT INTO shop.tricky (a, b)
SELECT a, b FROM unnest(ARRAY['plain', 'with "quotes"', 'back\slash', '{brace,comma}', ' spaced ',
	'NULL', 'été', E'tab\there', '']) a, generate_series(1, 3) b;
});
my $tricky = $node->safe_psql('postgres', "SELECT fundrecs.backfill('shop.tricky', 4)");
like(wait_state($tricky, 'bf_out', qr/^(finished|failed)/), qr/^finished\|7\|/,
	'a composite text key with quotes, backslashes, braces and commas: 27 rows in 7 chunks');
catch_up('bf_out');
my %tricky_keys;
$tricky_keys{"$_->{key}{a}|$_->{key}{b}"}++
  foreach grep { $_->{op} eq 'load' && $_->{table} eq 'tricky' } map { $json->decode($_) } grep { /^\{/ }
  split /\n/, slurp_file($out);
is(scalar(keys %tricky_keys), 27, 'every row of shop.tricky was backfilled');
is(scalar(grep { $_ != 1 } values %tricky_keys), 0, 'each once');

# --initial-load=chunked: the shipper's user requests the backfills, so it
# must be a member of fundrecs_backfill; refused with the way out if not.
$node->safe_psql('postgres', q{
CREATE ROLE bf_plain LOGIN REPLICATION;
GRANT USAGE ON SCHEMA fundrecs, shop TO bf_plain;
GRANT SELECT ON fundrecs.product_details TO bf_plain;
GRANT SELECT, INSERT, UPDATE, DELETE ON fundrecs.load_state TO bf_plain;
GRANT SELECT ON fundrecs.backfill_request TO bf_plain;
GRANT SELECT, INSERT, UPDATE ON fundrecs.backfill_progress TO bf_plain;
GRANT SELECT ON ALL TABLES IN SCHEMA shop TO bf_plain;
});
my @plain = ('-d', $connstr, '-U', 'bf_plain', '-S', 'bf_plain', '--create-slot', '--if-not-exists',
	'--initial-load=chunked', '--target', 'stdout', '-o', 'tables=shop.accounts', '-s', '1');
my ($rc, $o, $e) = run_shipper(\%env, @plain);
is($rc, 1, '--initial-load=chunked without fundrecs_backfill: exit 1');
like($e, qr/permission denied to backfill table "accounts".*member of the role fundrecs_backfill/s,
	'and the error says which role is missing');
$node->safe_psql('postgres', 'CREATE ROLE fundrecs_backfill NOLOGIN; GRANT fundrecs_backfill TO bf_plain');
my $ph = start_shipper(\%env, "$tmp/plain.log", @plain);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM fundrecs.backfill_request WHERE slot_name = 'bf_plain'")
  or die 'no backfill was requested for bf_plain';
my $plain_id = $node->safe_psql('postgres', "SELECT request_id FROM fundrecs.backfill_request WHERE slot_name = 'bf_plain'");
like(wait_state($plain_id, 'bf_plain', qr/^(finished|failed)/), qr/^finished\|/,
	'with it, the slot is made again and its table backfilled');
catch_up('bf_out');
is($node->safe_psql('postgres', "SELECT string_agg(slot_name, ',') FROM fundrecs.backfill_progress WHERE request_id = $plain_id"),
	'bf_plain', 'only that slot ran the request: bf_out, streaming meanwhile, left it alone');
$_->signal('TERM') foreach ($ph, $h);
$_->finish foreach ($ph, $h);
my $plain_rows = () = slurp_file("$tmp/plain.log") =~ /"op":"load"/g;
cmp_ok($plain_rows, '>=', 18000, "the load rows reached the target ($plain_rows)");
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('bf_plain')");

# --backfill-chunk-bytes: a chunk part ends once its rows hold that many
# bytes, and the chunk at that part's last key; the parts after it are read
# again with the next chunk.  Two parts of 5,000 rows (about 1.2 MB each)
# against 1 MB: every chunk ends inside its first part.
my @bytes_ship = ('-d', $connstr, '-S', 'bf_bytes', '--create-slot', '--if-not-exists', '--no-load',
	'--target', 'stdout', '-o', 'tables=shop.accounts', '-s', '1', '-v',
	'--backfill-workers', '2', '--backfill-chunk-bytes', '1048576');
my $bh = start_shipper(\%env, "$tmp/bytes.log", @bytes_ship);
$node->poll_query_until('postgres', "SELECT active FROM pg_replication_slots WHERE slot_name = 'bf_bytes'")
  or die 'the shipper did not start';
my $accounts = $node->safe_psql('postgres', 'SELECT count(*) FROM shop.accounts');
my $bytes_id = $node->safe_psql('postgres',
	"SELECT fundrecs.backfill('shop.accounts', 10000, slot_name => 'bf_bytes')");
my $bs = wait_state($bytes_id, 'bf_bytes', qr/^(finished|failed)/);
my ($bytes_chunks) = $bs =~ /^finished\|(\d+)\|/;
ok(defined $bytes_chunks && $bytes_chunks > int($accounts / 10000) + 2,
	"$accounts rows in chunks of 10,000 rows or 1 MB: more chunks than by rows ($bs)");
catch_up('bf_bytes');
$bh->signal('TERM');
$bh->finish;
my %bytes_keys;
$bytes_keys{ $_->{key}{id} }++
  foreach grep { $_->{op} eq 'load' } map { $json->decode($_) } grep { /^\{/ } split /\n/,
  slurp_file("$tmp/bytes.log");
my %table_keys = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', 'SELECT id FROM shop.accounts');
is(scalar(grep { !$bytes_keys{$_} } keys %table_keys), 0, 'every row of the table was backfilled');
is(scalar(grep { $_ != 1 } values %bytes_keys), 0, 'each once, none twice (the parts cut off were not shipped)');
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('bf_bytes')");

# A database whose extension is still 1.8 (the shipper upgraded first):
# chunks are read through 1.8's backfill_rows(), with a warning to update.
$node->safe_psql('postgres', 'CREATE DATABASE old18');
$node->safe_psql('old18', q{
CREATE EXTENSION fundrecs VERSION '1.8';
CREATE SCHEMA s;
CREATE TABLE s.t (id int PRIMARY KEY, v text);
INSERT INTO s.t SELECT g, 'row ' || g FROM generate_series(1, 5000) g;
});
my $old_connstr = $node->connstr('old18');
my $oh = start_shipper(\%env, "$tmp/old18.log", '-d', $old_connstr, '-S', 'bf_old18', '--create-slot',
	'--if-not-exists', '--no-load', '--target', 'stdout', '-o', 'tables=s.*', '-s', '1');
$node->poll_query_until('old18', "SELECT active FROM pg_replication_slots WHERE slot_name = 'bf_old18'")
  or die 'the shipper did not start';
my $old_id = $node->safe_psql('old18', "SELECT fundrecs.backfill('s.t', 1000)");
like(wait_state($old_id, 'bf_old18', qr/^(finished|failed)/, 'old18'), qr/^finished\|5\|/,
	'extension 1.8: the backfill runs, 5 chunks');
catch_up('bf_old18', 'old18');
$oh->signal('TERM');
$oh->finish;
my $old_log = slurp_file("$tmp/old18.log");
my %old_keys;
$old_keys{$1}++ while $old_log =~ /"op":"load".*?"key":\{"id":(\d+)\}/g;
ok(scalar(keys %old_keys) == 5000 && !grep({ $_ != 1 } values %old_keys), 'each of its 5,000 rows once');
like($old_log, qr/read their chunks through fundrecs 1\.8's backfill_rows\(\).*\n.*hint: Run ALTER EXTENSION fundrecs UPDATE/,
	'with a warning to update the extension');
$node->safe_psql('old18', "SELECT pg_drop_replication_slot('bf_old18')");

# ----------------------------------------------------------------------
# 2. At scale, to Kinesis and S3, with kills
# ----------------------------------------------------------------------
my $n = $ENV{FUNDRECS_BACKFILL_ROWS} || 1_000_000;
my ($kport) = start_kinesalite();
my ($kproxy) = start_proxy($kport);
my ($s3port) = start_s3rver('lake');
my ($s3proxy) = start_proxy($s3port, '--strip-auth');
kinesis_tool($kport, 'create', 'accounts', 4);
$node->safe_psql('postgres', qq{
CREATE TABLE shop.big (id bigint PRIMARY KEY, version int NOT NULL DEFAULT 1, balance int, note text);
INSERT INTO shop.big SELECT g, 1, g % 1000, 'account ' || g FROM generate_series(1, $n) g;
ANALYZE shop.big;
});
my @ship = ('-d', $connstr, '-S', 'bf_big', '--create-slot', '--if-not-exists', '--initial-load=chunked',
	'--target', 'kinesis,s3', '--stream', 'accounts', '--aggregate', '--endpoint-url',
	"http://127.0.0.1:$kproxy", '--s3-endpoint-url', "http://127.0.0.1:$s3proxy",
	'--s3-url', 's3://lake/cdc', '--flush-seconds', '1', '-o', 'tables=shop.big', '-s', '1', '-v',
	'--backfill-workers', '3');
my $biglog = "$tmp/backfill_big.log";
$h = start_shipper(\%env, $biglog, @ship);
$node->poll_query_until('postgres', "SELECT active FROM pg_replication_slots WHERE slot_name = 'bf_big'")
  or die 'the shipper did not start';
# --initial-load=chunked: the slot's load is a backfill of each table it
# captures, for this slot only.
my $big = $node->safe_psql('postgres',
	"SELECT request_id FROM fundrecs.backfill_request WHERE slot_name = 'bf_big' AND table_name = 'big'");
like($big, qr/^\d+$/, '--initial-load=chunked requested a backfill of the table for its slot');
is($node->safe_psql('postgres', "SELECT finished_at IS NOT NULL FROM fundrecs.load_state WHERE slot_name = 'bf_big'"),
	't', 'and recorded the load as handed over');
$writer = IPC::Run::start([ 'psql', '-X', '-q', '-d', $connstr, '-c',
	"CALL churn('shop.big', 1000000, $n, false, 0.002)" ], '>', '/dev/null', '2>', "$tmp/writer2.log");
my $started = time;
srand($ENV{FUNDRECS_TEST_SEED} // 7);
my $kills = 0;
my $total_chunks = int($n / 10000) + 1;
foreach my $round (1 .. 4)
{
	# Somewhere in the next fifth of the table.
	my $target = int($total_chunks * ($round - 0.5 + rand(0.8)) / 5);
	wait_state($big, 'bf_big', qr/^(running\|(\d+)|finished)/ ) ;
	my $deadline = time + 300;
	while (time < $deadline)
	{
		my ($st, $done) = split /\|/, status($big, 'bf_big');
		last if ($st // '') ne 'running' || $done >= $target;
		usleep(50_000);
	}
	usleep(int(rand(400_000)));
	last if status($big, 'bf_big') !~ /^running/;
	$h->signal('KILL');
	$h->finish;
	$kills++;
	$h = start_shipper(\%env, $biglog, @ship);
}
$s = wait_state($big, 'bf_big', qr/^(finished|failed|cancelled)/);
like($s, qr/^finished\|/, "the big backfill finished after $kills kills ($s)");
my $elapsed = time - $started;
# The writer stops; everything up to now is shipped.
$node->safe_psql('postgres', 'SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE \'CALL churn%\'');
$writer->finish;
$h->signal('TERM');
$h->finish;
my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
($rc, $o, $e) = run_shipper(\%env, @ship, '-E', $end);
is($rc, 0, 'the last run reached the end position') or diag($e);
$loglines = slurp_file($biglog) . $e;

# Kinesis: per key, in delivery order.
my $recs = read_deaggregated($kport, 'accounts', 1);
my %kstate;
$backwards = 0;
apply_rows(\%kstate, \$backwards, [ map { $_->{row} } @$recs ]);
compare_state(\%kstate, 'shop.big', 'Kinesis');
is($backwards, 0, 'Kinesis: no key went back a version');
my $stats = proxy_stats($kproxy);
is($stats->{mismatches}, 0, "botocore verified every Kinesis signature ($stats->{verified} requests)");

# S3: no line twice; the newest row of each key is the table's.
my $dir = "$tmp/backfill_lake";
my ($dl, $dlerr);
IPC::Run::run([ '/usr/bin/python3', "$E2E_DIR/s3_tool.py", '--endpoint', "http://127.0.0.1:$s3port",
	'download', 'lake', 'cdc', $dir ], '>', \$dl, '2>', \$dlerr) or die "download failed: $dlerr";
my (%seen, $repeats, %newest);
sub pos_of
{
	my ($hi, $lo) = split m{/}, shift;
	return hex($hi) * 4294967296 + hex($lo);
}
my $lake_rows = 0;
foreach my $f (split /\n/, `find '$dir' -name '*.json.gz' | sort`)
{
	foreach my $line (split /\n/, `gzip -dc '$f'`)
	{
		$lake_rows++;
		$repeats++ if $seen{$line}++;
		my $r = $json->decode($line);
		next unless $r->{key};
		my $p = [ pos_of($r->{commit_lsn}), pos_of($r->{lsn}) ];
		my $cur = $newest{ $r->{key}{id} };
		$newest{ $r->{key}{id} } = [ $p, $r ]
		  if !$cur || $p->[0] > $cur->[0][0] || ($p->[0] == $cur->[0][0] && $p->[1] > $cur->[0][1]);
	}
}
is($repeats // 0, 0, "the lake holds no line twice ($lake_rows rows)");
my %lstate = map { $_ => $newest{$_}[1]{data} } grep { $newest{$_}[1]{op} ne 'delete' } keys %newest;
compare_state(\%lstate, 'shop.big', 'the lake (newest row per key)');

# What the backfill read: the table, plus the chunks read again.
my $read = 0;
$read += $1 while $loglines =~ /backfill $big: chunk \d+ read: (\d+) rows/g;
my $again = () = $loglines =~ /backfill $big: the chunk at \S+ was not acknowledged/g;
my $rows_now = $node->safe_psql('postgres', 'SELECT count(*) FROM shop.big');
cmp_ok($read, '<=', $n + 100000 + ($again + $kills) * 10000,
	"rows read ($read) are about the table's ($n) plus the chunks read again ($again)");
cmp_ok($read, '>=', $rows_now * 0.9, 'and at least the table\'s');
like($loglines, qr/backfill $big of shop\.big resumes/, 'a killed backfill resumes');
diag(sprintf('%d rows backfilled in %.0f s with %d kills; %d rows read, %d chunks read again; '
	  . '%d Kinesis user records, %d lake rows', $n, $elapsed, $kills, $read, $again,
	  scalar(@$recs), $lake_rows));

done_testing();
