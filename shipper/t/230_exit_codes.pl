# Exit codes are systemd's contract (README "Exit status"; the unit's
# RestartPreventExitStatus=2 3): a failure that starting again cannot cure
# exits 3, one that may pass exits 1, a stop exits 0.  One case per class:
#  - TLS verification of PostgreSQL's certificate (verify-full): a host name
#    the certificate does not name, a missing root certificate, an expired
#    certificate: 3, each with a hint;
#  - a clock two hours off AWS's (libfaketime under the shipper): corrected
#    from the service's Date as the AWS SDKs do, and everything ships;
#  - SIGTERM while deliveries are stuck (Kinesis and S3): 0 after
#    --shutdown-timeout, the held rows unconfirmed.
# (Bad static keys and a slot name typo: 010_cli.pl; an invalidated slot:
# 100_wal_safety.pl.)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

needs(qw(shipper kinesalite s3rver boto3 faketime));

my %env = shipper_env();
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $node = new_cluster('exit_codes');
my $port = $node->port;

# ---------------------------------------------------------------------------
# 1. TLS: a CA, a certificate for another host name, and an expired one
#    (signed with the clock in 2020).
# ---------------------------------------------------------------------------
my $pki = "$tmp/pki";
mkdir $pki;
sub ossl
{
	my (@cmd) = @_;
	my ($out, $err);
	IPC::Run::run([@cmd], '>', \$out, '2>', \$err) or die "@cmd: $err";
	return;
}
ossl('openssl', 'req', '-x509', '-new', '-nodes', '-newkey', 'rsa:2048', '-keyout', "$pki/ca.key",
	'-out', "$pki/ca.crt", '-days', '30', '-subj', '/CN=fundrecs test CA');
foreach my $cert ([ 'other', 'DNS:db.example.com', [] ], [ 'expired', 'IP:127.0.0.1', [ 'faketime', '2020-01-01 00:00:00' ] ],
	[ 'good', 'IP:127.0.0.1', [] ])
{
	my ($name, $san, $clock) = @$cert;
	ossl('openssl', 'req', '-new', '-nodes', '-newkey', 'rsa:2048', '-keyout', "$pki/$name.key",
		'-out', "$pki/$name.csr", '-subj', "/CN=$name");
	append_to_file("$pki/$name.ext", "subjectAltName=$san\n");
	ossl(@$clock, 'openssl', 'x509', '-req', '-in', "$pki/$name.csr", '-CA', "$pki/ca.crt", '-CAkey',
		"$pki/ca.key", '-CAcreateserial', '-out', "$pki/$name.crt", '-days', '30', '-extfile', "$pki/$name.ext");
	chmod 0600, "$pki/$name.key";
}

sub serve_cert
{
	my ($name) = @_;
	$node->append_conf('postgresql.conf', "ssl = on\nssl_cert_file = '$pki/$name.crt'\nssl_key_file = '$pki/$name.key'\n");
	$node->reload;
	usleep(300_000);
	return;
}

sub tls_run
{
	my ($extra) = @_;
	return run_shipper(\%env, '-d', "host=127.0.0.1 port=$port dbname=postgres sslmode=verify-full $extra",
		'-S', 'tls', '--create-slot', '--if-not-exists', '--target', 'stdout', '--no-load',
		'-E', $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()'));
}
$node->append_conf('pg_hba.conf', "hostssl all all 127.0.0.1/32 trust\n");
$node->append_conf('postgresql.conf', "listen_addresses = '127.0.0.1'\n");
$node->restart;

serve_cert('good');
my ($rc, $out, $err) = tls_run("sslrootcert=$pki/ca.crt");
is($rc, 0, 'TLS: a certificate that verifies: exit 0') or diag($err);

serve_cert('other');
($rc, $out, $err) = tls_run("sslrootcert=$pki/ca.crt");
is($rc, 3, 'TLS: wrong host name: exit 3');
like($err, qr/does not match host name "127\.0\.0\.1".*hint: sslmode=verify-full checks that the certificate names the host/s,
	'TLS: wrong host name: says so, with a hint');

($rc, $out, $err) = tls_run("sslrootcert=$pki/missing.crt");
is($rc, 3, 'TLS: missing root certificate: exit 3');
like($err, qr/root certificate file ".*missing\.crt" does not exist.*hint: Set sslrootcert/s,
	'TLS: missing root certificate: says so, with a hint');

serve_cert('expired');
($rc, $out, $err) = tls_run("sslrootcert=$pki/ca.crt");
is($rc, 3, 'TLS: expired certificate: exit 3');
like($err, qr/certificate verify failed.*hint: The server's certificate could not be verified with sslrootcert: it may have expired/s,
	'TLS: expired certificate: a hint beyond "certificate verify failed"');
$node->append_conf('postgresql.conf', "ssl = off\n");
$node->reload;

# ---------------------------------------------------------------------------
# 2. The shipper's clock two hours behind: Kinesis answers "Signature
#    expired", S3 RequestTimeTooSkewed; the shipper signs with the
#    service's time from their Date, and ships.
# ---------------------------------------------------------------------------
my ($kport) = start_kinesalite();
kinesis_tool($kport, 'create', 'codes', 1);
my ($kproxy) = start_proxy($kport);
my ($s3port) = start_s3rver('codes');
my ($s3proxy) = start_proxy($s3port, '--strip-auth');
my $connstr = $node->connstr('postgres');
my @both = ('--target', 'kinesis,s3', '--stream', 'codes', '--endpoint-url', "http://127.0.0.1:$kproxy",
	'--s3-endpoint-url', "http://127.0.0.1:$s3proxy", '--s3-url', 's3://codes/skew', '--flush-seconds', '1');
$node->safe_psql('postgres', 'INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1, 1, 1 FROM generate_series(1, 20)');
{
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	local $ENV{LD_PRELOAD} = libfaketime();
	local $ENV{FAKETIME} = '-2h';
	local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = '1';
	($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'skew', '--create-slot', @both, '-E', $end, '-v');
}
is($rc, 0, 'clock two hours off: exit 0') or diag($err);
like($err, qr/this machine's clock is -?\d+ s off Kinesis's; signing with Kinesis's time/, 'clock: corrected for Kinesis');
cmp_ok(proxy_stats($kproxy)->{skewed}, '>=', 1, 'clock: Kinesis refused a skewed request first');
is(proxy_stats($s3proxy)->{skewed}, 0, 'clock: one correction serves S3 too (one clock)');
like($err, qr/wrote s3:\/\/codes\/skew\/electronics\//, 'clock: the rows reached S3');
is(scalar(@{ read_stream($kport, 'codes', 20) }), 20, 'clock: the rows reached Kinesis');
{
	$node->safe_psql('postgres', 'INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 1, 1)');
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	local $ENV{LD_PRELOAD} = libfaketime();
	local $ENV{FAKETIME} = '-2h';
	local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = '1';
	($rc, $out, $err) = run_shipper(\%env, '-d', $connstr, '-S', 'skew', '--target', 's3',
		'--endpoint-url', "http://127.0.0.1:$s3proxy", '--s3-url', 's3://codes/skew', '--flush-seconds', '1',
		'-E', $end, '-v');
}
is($rc, 0, 'clock two hours off, S3 alone: exit 0') or diag($err);
like($err, qr/this machine's clock is -?\d+ s off S3's; signing with S3's time/, 'clock: corrected for S3');
cmp_ok(proxy_stats($s3proxy)->{skewed}, '>=', 1, 'clock: S3 refused a skewed request first');

# ---------------------------------------------------------------------------
# 3. SIGTERM while every delivery hangs: a clean stop after
#    --shutdown-timeout, nothing confirmed past the held rows.
# ---------------------------------------------------------------------------
foreach my $case ([ 'kinesis', [ '--stream', 'codes', '--endpoint-url', "http://127.0.0.1:$kproxy" ] ],
	[ 's3', [ '--target', 's3', '--endpoint-url', "http://127.0.0.1:$s3proxy", '--s3-url', 's3://codes/stuck', '--flush-seconds', '1' ] ])
{
	my ($name, $args) = @$case;
	my $slot = "stuck_$name";
	my $log = "$tmp/$slot.log";
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', $slot, '--create-slot', '--no-load',
		'--shutdown-timeout', '2', @$args);
	$node->poll_query_until('postgres', "SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'")
	  or die;
	my $before = $node->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
	if ($name eq 'kinesis')
	{
		`curl -s http://127.0.0.1:$kproxy/__delay/120`;
	}
	else
	{
		`curl -s 'http://127.0.0.1:$s3proxy/__faults?hang=/codes/stuck/'`;
	}
	$node->safe_psql('postgres', 'INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 1, 1)');
	my $proxy = $name eq 'kinesis' ? $kproxy : $s3proxy;
	my $key = $name eq 'kinesis' ? 'delayed' : 'hung';
	for (1 .. 100)
	{
		last if (proxy_stats($proxy)->{$key} // 0) >= 1;
		usleep(100_000);
	}
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, "stuck $name: SIGTERM: exit 0 after --shutdown-timeout");
	like(slurp_file($log), qr/will be shipped again on restart/, "stuck $name: says the held rows come again");
	my $after = $node->safe_psql('postgres', "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
	is($after, $before, "stuck $name: nothing past the held row confirmed");
	`curl -s http://127.0.0.1:$kproxy/__delay/0`;
	`curl -s 'http://127.0.0.1:$s3proxy/__faults'`;
}

done_testing();
