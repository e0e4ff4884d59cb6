# The lake under the faults an operator meets, each with rows queued:
#  1. the server's clock steps back across midnight, and the shipper is
#     killed between the objects of two days of one route (libfaketime
#     under the server);
#  2. a PUT cut by a crash and kept by the store: empty, a gzip object cut
#     in half, an uncompressed object cut at a row's end;
#  3. the prefix's owner marker deleted while the shipper runs: written
#     again, and a second shipper that claims the prefix stops the first;
#  4. /healthz and the per-target metrics through an S3 outage, S3 alone
#     and with Kinesis;
#  5. a PUT of an initial load that lands after its shipper was killed and
#     after the next one listed the prefix to forget that load.
# Every request goes through the signature-checking proxy, which also
# plays the store's faults (sigcheck_proxy.py's /__faults).  After each
# case every inserted order is in the lake exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use POSIX qw(strftime);

needs(qw(shipper kinesalite s3rver boto3 faketime));

my %env = shipper_env();
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my ($s3port) = start_s3rver('faults');
my ($proxy) = start_proxy($s3port, '--strip-auth');

sub faults
{
	my ($query) = @_;
	my $out = `curl -s 'http://127.0.0.1:$proxy/__faults?$query'`;
	die "proxy /__faults: $out" unless $out eq '{}';
	return;
}

sub wait_for
{
	my ($what, $cond, $seconds) = @_;
	for (1 .. ($seconds // 60) * 10)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	diag("timed out waiting for $what");
	return 0;
}

# Every row of the lake under a prefix, decoded: [key, row] pairs.
sub lake_rows
{
	my ($prefix) = @_;
	my $dir = "$tmp/lake_" . int(rand(1e9));
	my ($out, $err);
	IPC::Run::run([ $PYTHON, "$E2E_DIR/s3_tool.py", '--endpoint', "http://127.0.0.1:$s3port",
		'download', 'faults', $prefix, $dir ], '>', \$out, '2>', \$err)
	  or die "s3_tool download failed: $err";
	my @rows;
	foreach my $file (split /\n/, `find $dir -type f -name '*.json*' | sort`)
	{
		next if $file =~ m{/_fundrecs/};
		my $text;
		if ($file =~ /\.gz$/)
		{
			gunzip($file => \$text) or die "gunzip $file: $GunzipError";
		}
		else
		{
			$text = slurp_file($file);
		}
		push @rows, map { [ $file, decode_json($_) ] } split /\n/, $text;
	}
	return @rows;
}

# order_id => how many insert rows of it the lake holds.
sub lake_inserts
{
	my ($prefix) = @_;
	my %n;
	foreach my $r (lake_rows($prefix))
	{
		my $row = $r->[1];
		next unless ($row->{op} // '') eq 'insert' && ($row->{table} // '') eq 'orders';
		$n{ $row->{key}{order_id} }++;
	}
	return \%n;
}

# Each of the orders from..to once, and no other insert.
sub exactly_once
{
	my ($prefix, $ids, $what) = @_;
	my $n = lake_inserts($prefix);
	my @missing = grep { !$n->{$_} } @$ids;
	my @twice = grep { $n->{$_} > 1 } keys %$n;
	is(scalar(@missing), 0, "$what: every order in the lake") or diag("missing: @missing[0 .. min(9, $#missing)]");
	is(scalar(@twice), 0, "$what: none twice") or diag("twice: @twice[0 .. min(9, $#twice)]");
	return;
}

sub min { return $_[0] < $_[1] ? $_[0] : $_[1]; }

sub insert_orders
{
	my ($node, $n, $product) = @_;
	my $ids = $node->safe_psql('postgres',
		"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) "
		  . "SELECT $product, 1, 1 FROM generate_series(1, $n) RETURNING order_id");
	return [ split /\n/, $ids ];
}

sub ship_args
{
	my ($node, $slot, $prefix, @more) = @_;
	return ('-d', $node->connstr('postgres'), '-S', $slot, '--create-slot', '--if-not-exists',
		'--target', 's3', '--endpoint-url', "http://127.0.0.1:$proxy",
		'--s3-url', "s3://faults/$prefix", '--flush-seconds', '1', '-s', '1', '-v', @more);
}

sub loaded
{
	my ($node, $slot) = @_;
	return wait_for("the load of $slot",
		sub {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM fundrecs.load_state WHERE slot_name = '$slot' AND finished_at IS NOT NULL") eq '1';
		});
}

# Ships the rest up to the current position and exits.
sub catch_up
{
	my ($node, $slot, $prefix, @more) = @_;
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my ($rc, $out, $err) = run_shipper(\%env, ship_args($node, $slot, $prefix, '-E', $end, @more));
	is($rc, 0, "$slot: shipped to $end") or diag($err);
	return $err;
}

my $node = new_cluster('lake_faults');

# ---------------------------------------------------------------------------
# 1. The clock steps back across midnight.  T1 commits at D+1 00:00:05, T2
#    at D 23:59:50, T3 at D+1 00:00:20, ten orders each, one route: one
#    flush holds the object of D+1 (T1, T3) and, after it, the object of D
#    (T2).  The shipper is killed once the first is written and before the
#    second is: on restart T2's rows must be written, not taken for rows
#    the bucket has because T3's position is past them.
# ---------------------------------------------------------------------------
{
	my $clock = new_cluster('clock');
	my $libfaketime = libfaketime();
	my $timefile = "$tmp/faketime.rc";
	my $day = time() + 3 * 86400;
	my $midnight = $day - ($day % 86400) + 86400;    # D+1 00:00:00 UTC
	my ($d, $d1) = map { strftime('%Y-%m-%d', gmtime($_)) } ($midnight - 1, $midnight);

	# Offsets from the real clock, read at every call (FAKETIME_NO_CACHE).
	my $at = sub {
		my ($t) = @_;
		open(my $fh, '>', "$timefile.tmp") or die $!;
		printf $fh "%+ds\n", $t - int(time());
		close $fh;
		rename("$timefile.tmp", $timefile) or die $!;
	};
	$at->($midnight - 60);
	# The walsender's timeout reads the same clock: a step must not end it.
	$clock->append_conf('postgresql.conf', 'wal_sender_timeout = 0');
	$clock->stop;
	{
		local $ENV{LD_PRELOAD} = $libfaketime;
		local $ENV{FAKETIME_TIMESTAMP_FILE} = $timefile;
		local $ENV{FAKETIME_NO_CACHE} = '1';
		local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = '1';
		$clock->start;
	}
	my @ship = ship_args($clock, 'clock', 'clock', '--flush-seconds', '3');
	my $log = "$tmp/clock_shipper.log";
	my $h = start_shipper(\%env, $log, @ship);
	loaded($clock, 'clock');

	faults("hang=" . "/faults/clock/electronics/dt(=|%253D)$d/");
	my @ids;
	$at->($midnight + 5);
	push @ids, @{ insert_orders($clock, 10, 1) };
	$at->($midnight - 10);
	push @ids, @{ insert_orders($clock, 10, 1) };
	$at->($midnight + 20);
	push @ids, @{ insert_orders($clock, 10, 1) };
	my $days = $clock->safe_psql('postgres',
		"SELECT string_agg(DISTINCT to_char(order_date AT TIME ZONE current_setting('TimeZone') AT TIME ZONE 'UTC', 'YYYY-MM-DD'), ',') FROM fundrecs_schema.orders WHERE order_id >= $ids[0]");
	is($days, "$d,$d1", 'clock: the orders were committed on two days, out of order');

	ok(wait_for('the object of D+1',
		sub { `$PYTHON $E2E_DIR/s3_tool.py --endpoint http://127.0.0.1:$s3port list faults clock/electronics/dt=$d1` =~ /\.json\.gz$/m }),
		'clock: the object of D+1 is written');
	ok(wait_for('the PUT of D', sub { (proxy_stats($proxy)->{hung} // 0) >= 1 }), 'clock: the PUT of D hangs');
	$h->signal('KILL');
	$h->finish;
	faults('');

	my $err = catch_up($clock, 'clock', 'clock');
	like($err, qr/S3 route "electronics" has objects of \Q$d1\E up to position/, 'clock: the restart reads where D+1 stands');
	exactly_once('clock', \@ids, 'clock stepped back, then a crash');
	my %by_day;
	foreach my $r (lake_rows('clock/electronics'))
	{
		$by_day{$1}++ if $r->[0] =~ m{/dt=([0-9-]+)/} && ($r->[1]{op} // '') eq 'insert';
	}
	is($by_day{$d}, 10, "clock: ten rows under dt=$d");
	is($by_day{$d1}, 20, "clock: twenty rows under dt=$d1");
	$clock->stop;
}

# ---------------------------------------------------------------------------
# 2. A PUT cut by a crash, kept by the store.  The store gets the first part
#    of the body (the proxy drops its Content-MD5, as a gateway that does not
#    check it would), the shipper is killed while it waits for the answer,
#    and the restart must find the object short, delete it and write its
#    rows again.
# ---------------------------------------------------------------------------
my @cuts = (
	[ 'empty', 'fraction=0', [], qr/it is empty/ ],
	[ 'gzip_half', 'fraction=0.5', [], qr/its gzip stream is cut short/ ],
	[ 'plain_rows', 'fraction=0.5&newline=1', [ '--compression', 'none' ], qr/it holds \d+ of its \d+ rows/ ],);
foreach my $cut (@cuts)
{
	my ($name, $how, $more, $why) = @$cut;
	my $log = "$tmp/torn_$name.log";
	my $h = start_shipper(\%env, $log, ship_args($node, "torn_$name", "torn_$name", @$more));
	loaded($node, "torn_$name");
	my $before = proxy_stats($proxy)->{torn} // 0;
	faults("tear=/faults/torn_$name/electronics/&$how");
	my $ids = insert_orders($node, 40, 1);
	ok(wait_for("a torn PUT ($name)", sub { (proxy_stats($proxy)->{torn} // 0) > $before }),
		"$name: a PUT reached the store cut short");
	$h->signal('KILL');
	$h->finish;
	faults('');
	push @$ids, @{ insert_orders($node, 5, 1) };
	my $err = catch_up($node, "torn_$name", "torn_$name", @$more);
	like($err, qr{s3://faults/torn_$name/electronics/dt=[0-9-]+/\S+ was cut short \($why.*\): deleting it}, "$name: the cut object is found and deleted");
	exactly_once("torn_$name", $ids, "$name cut");
}

# ---------------------------------------------------------------------------
# 3. The owner marker deleted while shipper A runs: A writes it again at its
#    next flush.  Deleted again, and shipper B (another slot) claims the
#    prefix: A stops at its next flush with exit 3, writing nothing more; B
#    ships.
# ---------------------------------------------------------------------------
{
	my $log = "$tmp/owner_a.log";
	my $s3 = "$PYTHON $E2E_DIR/s3_tool.py --endpoint http://127.0.0.1:$s3port";
	my $a = start_shipper(\%env, $log, ship_args($node, 'owner_a', 'owned'));
	loaded($node, 'owner_a');
	system("$s3 delete faults owned/_fundrecs/owner.json") == 0 or die;
	my $ids = insert_orders($node, 10, 1);
	ok(wait_for('the marker written again', sub { `$s3 list faults owned/_fundrecs` =~ /owner\.json/ }),
		'owner: a deleted marker is written again at the next flush');
	like(slurp_file($log), qr/owned\/_fundrecs\/owner\.json, which says which shipper owns the prefix, is gone/,
		'owner: the deletion is reported');
	ok(wait_for('A ships', sub { scalar(keys %{ lake_inserts('owned') }) >= 10 }), 'owner: A goes on shipping');

	system("$s3 delete faults owned/_fundrecs/owner.json") == 0 or die;
	my ($rc, $out, $err) = run_shipper(\%env, ship_args($node, 'owner_b', 'owned', '--no-load', '-E',
		$node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()')));
	is($rc, 0, 'owner: B claims the deleted prefix') or diag($err);
	my $before = lake_inserts('owned');
	my $late = insert_orders($node, 10, 2);
	ok(wait_for('A stops', sub { slurp_file($log) =~ /no longer owns/ }, 60), 'owner: A stops');
	$a->finish;
	is($a->result(0), 3, 'owner: A exits 3 (permanent: another shipper owns the prefix)');
	like(slurp_file($log), qr/this shipper no longer owns S3 prefix s3:\/\/faults\/owned/, 'owner: A says why');
	my $after = lake_inserts('owned');
	is_deeply([ grep { $_ >= $late->[0] } keys %$after ], [], 'owner: A wrote nothing after B claimed the prefix');
}

# ---------------------------------------------------------------------------
# 4. An S3 outage: /healthz goes 503 naming the target, the target's lag and
#    held rows grow, and everything is right again after it; S3 alone, then
#    with Kinesis (where Kinesis's figures go on).
# ---------------------------------------------------------------------------
my ($kport) = start_kinesalite();
kinesis_tool($kport, 'create', 'faults', 1);
my ($kproxy) = start_proxy($kport);
foreach my $targets ('s3', 'kinesis,s3')
{
	(my $slot = "outage_$targets") =~ s/,/_/;
	my $mport = PostgreSQL::Test::Cluster::get_free_port();
	my $log = "$tmp/$slot.log";
	my @args = ship_args($node, $slot, $slot, '--target', $targets, '--metrics-address', "127.0.0.1:$mport",
		'--health-max-lag', '2', '--retry-timeout', '0');
	push @args, ('--stream', 'faults', '--endpoint-url', "http://127.0.0.1:$kproxy",
		'--s3-endpoint-url', "http://127.0.0.1:$proxy") if $targets =~ /kinesis/;
	my $h = start_shipper(\%env, $log, @args);
	my $get = sub {
		my $body = `curl -s -w '\\n%{http_code}' http://127.0.0.1:$mport$_[0]`;
		my ($text, $code) = $body =~ /^(.*)\n(\d+)$/s;
		return ($code // 0, $text // '');
	};
	my $metric = sub {
		my ($name, $target) = @_;
		my $text = ($get->('/metrics'))[1];
		return $text =~ /^\Q$name\E\{target="\Q$target\E"\} (\S+)$/m ? $1 + 0 : undef;
	};
	loaded($node, $slot);
	ok(wait_for('/healthz 200', sub { ($get->('/healthz'))[0] == 200 }), "$targets: healthy");
	my $base = $metric->('fundrecs_shipper_rows_total', 's3') // 0;
	faults('outage=1');
	my $ids = insert_orders($node, 25, 1);
	ok(wait_for('/healthz 503', sub { ($get->('/healthz'))[0] == 503 }, 30), "$targets: /healthz fails during the outage");
	like(($get->('/healthz'))[1], qr/target s3: 25 rows held for \d+ s/, "$targets: /healthz names S3 and its rows");
	is($metric->('fundrecs_shipper_target_held_rows', 's3'), 25, "$targets: S3 holds the 25 rows");
	cmp_ok($metric->('fundrecs_shipper_target_lag_seconds', 's3'), '>', 1, "$targets: S3's lag grows");
	is($metric->('fundrecs_shipper_rows_total', 's3'), $base, "$targets: S3 acknowledged nothing meanwhile");
	if ($targets =~ /kinesis/)
	{
		cmp_ok($metric->('fundrecs_shipper_rows_total', 'kinesis'), '>=', 25, 'kinesis,s3: Kinesis acknowledged the rows');
		is($metric->('fundrecs_shipper_target_held_rows', 'kinesis'), 0, 'kinesis,s3: Kinesis holds nothing');
	}
	faults('');
	ok(wait_for('/healthz 200 again', sub { ($get->('/healthz'))[0] == 200 }, 60), "$targets: healthy again after the outage");
	is($metric->('fundrecs_shipper_rows_total', 's3'), $base + 25, "$targets: S3 acknowledged the 25 rows");
	is($metric->('fundrecs_shipper_target_held_rows', 's3'), 0, "$targets: S3 holds nothing");
	cmp_ok($metric->('fundrecs_shipper_target_last_delivery_timestamp_seconds', 's3'), '>', time() - 30,
		"$targets: S3's last delivery is recent");
	is($metric->('fundrecs_shipper_target_lag_seconds', 's3'), 0, "$targets: S3's lag is back to 0");
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, "$targets: SIGTERM: exit 0");
	exactly_once($slot, $ids, "$targets outage");
}

# ---------------------------------------------------------------------------
# 5. A write that lands late.  Shipper A is killed while a PUT of its
#    initial load is held by the proxy (the store has the body; S3 or a
#    gateway finishes such a PUT whatever became of the client).  B lists
#    the prefix, forgets A's load and loads again; A's PUT reaches the store
#    only then, while B's own load is under way.  B must delete it before
#    its load counts as finished: the lake holds B's load alone, once.
# ---------------------------------------------------------------------------
{
	my $log = "$tmp/late.log";
	my $s3 = "$PYTHON $E2E_DIR/s3_tool.py --endpoint http://127.0.0.1:$s3port";
	my $held = sub { proxy_stats($proxy)->{held} // 0 };
	my $before = $held->();
	faults('hold=/faults/late/.*/dt');
	my $a = start_shipper(\%env, $log, ship_args($node, 'late', 'late'));
	ok(wait_for('a held PUT of the load', sub { $held->() > $before }), 'late: a PUT of the first load is held');
	$a->signal('KILL');
	$a->finish;
	my $first = $node->safe_psql('postgres', "SELECT consistent_lsn FROM fundrecs.load_state WHERE slot_name = 'late'");
	my $b = start_shipper(\%env, $log, ship_args($node, 'late', 'late'));
	ok(wait_for('a held PUT of the load done again', sub { $held->() > $before + 1 }),
		'late: the load done again (after its listing) has a PUT held too');
	like(`curl -s 'http://127.0.0.1:$proxy/__release'`, qr/"released": 1/, 'late: the killed shipper\'s PUT lands now');
	faults('');
	`curl -s 'http://127.0.0.1:$proxy/__release?all=1'`;
	ok(loaded($node, 'late'), 'late: the second load finished');
	my $ids = insert_orders($node, 10, 1);
	$b->signal('TERM');
	$b->finish;
	my $err = catch_up($node, 'late', 'late');
	my $second = $node->safe_psql('postgres', "SELECT consistent_lsn FROM fundrecs.load_state WHERE slot_name = 'late'");
	isnt($second, $first, "late: a new load ($first, then $second)");
	my (%loads, %keys, $twice);
	foreach my $r (lake_rows('late'))
	{
		my $row = $r->[1];
		next unless ($row->{op} // '') eq 'load';
		$loads{ $row->{lsn} }++;
		$twice++ if $keys{ ($row->{table} // '') . ':' . encode_json($row->{key}) }++;
	}
	is_deeply([ keys %loads ], [$second], 'late: the lake holds rows of the second load alone');
	is($twice // 0, 0, 'late: each load row once (' . ($loads{$second} // 0) . ' rows)');
	like(slurp_file($log) . $err, qr{deleted s3://faults/late/\S+ \(written by a shipper killed during a load that did not finish\)},
		'late: the late object was deleted before the load counted as finished');
	is(`$s3 list faults late/_fundrecs/void/`, '', 'late: no void marker is left');
	exactly_once('late', $ids, 'late write');
}

done_testing();
