# AWS credentials as the SDKs find them: each source of botocore's chain,
# resolved by the shipper and by botocore against the same loopback
# stand-ins (same method, same access key); STS calls checked by the
# signature-verifying proxy; bad answers and bad settings; and rotation
# under load: credentials that expire 20 s after issue while the shipper
# ships through a proxy that accepts only the current key.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

needs(qw(shipper kinesalite node boto3));

my $dir = $PostgreSQL::Test::Utils::tmp_check . '/creds';
mkdir $dir;
my %base = shipper_env();
delete @base{qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY)};
$base{AWS_ACCESS_KEY_ID} = undef;
$base{AWS_SECRET_ACCESS_KEY} = undef;

sub write_file
{
	my ($path, $text) = @_;
	open(my $fh, '>', $path) or die "$path: $!";
	print $fh $text;
	close($fh);
}

# Deterministic stand-ins: the same question gets the same key, so the
# shipper and botocore can be compared.
my ($mport) = start_aws_mock('--deterministic', '--expect-auth-file', "$dir/pod_token");
my $mock = "http://127.0.0.1:$mport";
# STS through the signature-checking proxy: AssumeRole is signed with the
# source profile's keys (the test keys).
my ($sts) = start_proxy($mport);
write_file("$dir/pod_token", "pod-identity-token-1");
write_file("$dir/web_token", "eyJhbGciOiJSUzI1NiJ9.web-identity-1");

write_file("$dir/credentials", <<"EOT");
[static]
aws_access_key_id = AKIDSHAREDFILE2222
aws_secret_access_key = shared/secret

[base]
aws_access_key_id = $ACCESS_KEY
aws_secret_access_key = $SECRET_KEY
EOT
write_file("$dir/config", <<"EOT");
[profile cfg]
aws_access_key_id = AKIDCONFIGFILE3333
aws_secret_access_key = config/secret

[profile proc]
credential_process = printf '{"Version": 1, "AccessKeyId": "AKIDPROCESS4444", "SecretAccessKey": "p/s", "SessionToken": "tok", "Expiration": "2099-01-01T00:00:00Z"}'

[profile role]
role_arn = arn:aws:iam::123456789012:role/fundrecs-writer
source_profile = base
role_session_name = fundrecs-test
external_id = ext-42
duration_seconds = 1800

[profile chained]
role_arn = arn:aws:iam::123456789012:role/second
source_profile = role
role_session_name = chained-test

[profile role_container]
role_arn = arn:aws:iam::123456789012:role/from-container
credential_source = EcsContainer
role_session_name = rc-test

[profile webprofile]
role_arn = arn:aws:iam::123456789012:role/web-profile
web_identity_token_file = $dir/web_token
role_session_name = webp-test

[profile badproc]
credential_process = printf 'not json'

[profile hangproc]
credential_process = sleep 30

[profile noversion]
credential_process = printf '{"AccessKeyId": "A", "SecretAccessKey": "B"}'

[profile both]
role_arn = arn:aws:iam::123456789012:role/x
source_profile = base
credential_source = Environment

[profile baddur]
role_arn = arn:aws:iam::123456789012:role/x
source_profile = base
duration_seconds = 10
EOT

# STS straight to the stand-in (AssumeRoleWithWebIdentity is not signed; a
# chained role is signed with temporary keys), or through the proxy
# (%signed_sts: AssumeRole signed with the test keys).
my %files = (%base, AWS_SHARED_CREDENTIALS_FILE => "$dir/credentials",
	AWS_CONFIG_FILE => "$dir/config", AWS_ENDPOINT_URL_STS => $mock);
my %signed_sts = (AWS_ENDPOINT_URL_STS => "http://127.0.0.1:$sts");
# Debian 12's botocore (1.29) reads AWS_CONTAINER_AUTHORIZATION_TOKEN but
# not yet the _FILE variant: parity uses the former, the file (EKS Pod
# Identity) is tested on the shipper alone below.
my %container = (AWS_CONTAINER_CREDENTIALS_FULL_URI => "$mock/container/credentials",
	AWS_CONTAINER_AUTHORIZATION_TOKEN => 'pod-identity-token-1');
my %imds = (AWS_EC2_METADATA_DISABLED => undef, AWS_EC2_METADATA_SERVICE_ENDPOINT => "$mock/");
my %web = (AWS_WEB_IDENTITY_TOKEN_FILE => "$dir/web_token",
	AWS_ROLE_ARN => 'arn:aws:iam::123456789012:role/web', AWS_ROLE_SESSION_NAME => 'web-test');

sub shipper_credentials
{
	my ($env, @extra) = @_;
	my ($rc, $out, $err) = run_shipper($env, '--check-credentials', @extra);
	my ($method) = $out =~ /^method: (\S+)$/m;
	my ($key) = $out =~ /^access_key: \*+(\S{4})$/m;
	return ($rc, $method ? "$method $key" : 'none', $err, $out);
}

# 1. Parity with botocore, source by source, and precedence.
my @scenarios = (
	[ 'env', { %files, AWS_ACCESS_KEY_ID => 'AKIDENVIRONMENT1111', AWS_SECRET_ACCESS_KEY => 's' }, 'env' ],
	[ 'shared credentials file', { %files, AWS_PROFILE => 'static' }, 'shared-credentials-file' ],
	[ 'config file', { %files, AWS_PROFILE => 'cfg' }, 'config-file' ],
	[ 'credential_process', { %files, AWS_PROFILE => 'proc' }, 'custom-process' ],
	[ 'role_arn + source_profile', { %files, %signed_sts, AWS_PROFILE => 'role' }, 'assume-role' ],
	[ 'role chained through a role', { %files, AWS_PROFILE => 'chained' }, 'assume-role' ],
	[ 'role_arn + credential_source EcsContainer', { %files, %container, AWS_PROFILE => 'role_container' },
		'assume-role' ],
	[ 'web identity (environment)', { %files, %web }, 'assume-role-with-web-identity' ],
	[ 'web identity (profile)', { %files, AWS_PROFILE => 'webprofile' }, 'assume-role-with-web-identity' ],
	[ 'container (FULL_URI + authorization token)', { %files, %container }, 'container-role' ],
	[ 'IMDSv2', { %files, %imds }, 'iam-role' ],
	[ 'precedence: env over a profile', { %files, AWS_PROFILE => 'static',
		AWS_ACCESS_KEY_ID => 'AKIDENVIRONMENT1111', AWS_SECRET_ACCESS_KEY => 's' }, 'env' ],
	[ 'precedence: role over web identity env', { %files, %signed_sts, %web, AWS_PROFILE => 'role' },
		'assume-role' ],
	[ 'precedence: web identity over the shared file', { %files, %web, AWS_PROFILE => 'static' },
		'assume-role-with-web-identity' ],
	[ 'precedence: shared file over container and IMDS', { %files, %container, %imds, AWS_PROFILE => 'static' },
		'shared-credentials-file' ],
	[ 'precedence: container over IMDS', { %files, %container, %imds }, 'container-role' ],
);
foreach my $s (@scenarios)
{
	my ($name, $env, $method) = @$s;
	my $boto = botocore_credentials($env);
	my ($rc, $ours, $err) = shipper_credentials($env);
	is($rc, 0, "$name: resolved") or diag($err);
	like($ours, qr/^\Q$method\E \S{4}$/, "$name: method $method");
	is($ours, $boto, "$name: the same source and access key as botocore");
}
# EKS Pod Identity: the token from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE,
# which wins over AWS_CONTAINER_AUTHORIZATION_TOKEN.
{
	my ($rc, $ours, $err) = shipper_credentials({ %files, %container,
		AWS_CONTAINER_AUTHORIZATION_TOKEN => 'stale', AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE => "$dir/pod_token" });
	is($rc, 0, 'EKS Pod Identity (token file): resolved') or diag($err);
	like($ours, qr/^container-role \S{4}$/, 'EKS Pod Identity (token file): container-role');
}
my $mstats = decode_json(`curl -s $mock/__stats`);
ok((grep { $_ eq 'ext-42' } @{ $mstats->{external_ids} }), 'AssumeRole sends external_id');
ok((grep { $_ == 1800 } @{ $mstats->{durations} }), 'AssumeRole sends duration_seconds');
cmp_ok($mstats->{imds_token}, '>=', 2, 'IMDSv2: a session token was asked for');
is($mstats->{imds_v1}, 0, 'IMDSv2: no request without the token');
is($mstats->{container_denied}, 0, 'container: the authorization token was sent');
my $pstats = proxy_stats($sts);
cmp_ok($pstats->{verified}, '>=', 4, 'STS AssumeRole calls (shipper and botocore) signed correctly');
is($pstats->{mismatches}, 0, 'STS: no signature mismatch');

# Nothing configured: botocore finds nothing, the shipper says so, exit 2.
{
	my ($rc, $ours, $err) = shipper_credentials({ %files });
	is(botocore_credentials({ %files }), 'none', 'nothing configured: botocore finds nothing');
	is($rc, 2, 'nothing configured: exit 2');
	like($err, qr/no AWS credentials found/, 'nothing configured: message');
	# IMDS configured (its address set) but not answering, as at boot: an
	# outage, not a configuration error: exit 1, so that systemd starts
	# the service again (RestartPreventExitStatus=2 kept it down).
	($rc, $ours, $err) = shipper_credentials({ %files, AWS_EC2_METADATA_DISABLED => undef,
		AWS_EC2_METADATA_SERVICE_ENDPOINT => 'http://127.0.0.1:9/' });
	is($rc, 1, 'IMDS configured but unreachable: exit 1 (a runtime failure)');
	like($err, qr/could not get AWS credentials from .*\(AWS_EC2_METADATA_SERVICE_ENDPOINT is set\): could not reach/,
		'IMDS configured but unreachable: message') or diag($err);
	unlike($err, qr/secret|p\/s|shared\/secret/, 'no secret in messages');

	# A credentials file the service user cannot read: said so, exit 1 (it
	# was passed over as if empty, ending in "no AWS credentials found" and
	# exit 2, which the unit does not restart).
	my $locked = "$dir/locked_credentials";
	write_file($locked, "[default]\naws_access_key_id = AKIDLOCKED\naws_secret_access_key = x\n");
	chmod 0, $locked;
  SKIP:
	{
		skip 'running as root: every file is readable', 2 if $> == 0;
		($rc, $ours, $err) = shipper_credentials({ %files, AWS_SHARED_CREDENTIALS_FILE => $locked });
		is($rc, 1, 'unreadable credentials file: exit 1 (a runtime failure, retried)');
		like($err, qr/could not read the AWS credentials file "\Q$locked\E": Permission denied/,
			'unreadable credentials file: says so') or diag($err);
	}
}

# 2. Bad answers and bad settings: clear errors, documented exit codes.
my @bad = (
	[ 'credential_process prints no JSON', { %files, AWS_PROFILE => 'badproc' }, 1,
		qr/credential_process of profile "badproc" did not print a JSON object/ ],
	[ 'credential_process without Version', { %files, AWS_PROFILE => 'noversion' }, 1,
		qr/unsupported Version \(expected 1\)/ ],
	[ 'credential_process hangs', { %files, AWS_PROFILE => 'hangproc',
		FUNDRECS_CREDENTIAL_PROCESS_TIMEOUT => 2 }, 1, qr/did not finish within 2 s and was killed/ ],
	[ 'web identity token file missing', { %files, %web, AWS_WEB_IDENTITY_TOKEN_FILE => "$dir/gone" }, 1,
		qr/could not read "\Q$dir\E\/gone"/ ],
	[ 'web identity token refused', { %files, %web, AWS_WEB_IDENTITY_TOKEN_FILE => "$dir/bad_token" }, 1,
		qr/STS AssumeRoleWithWebIdentity at .* refused: HTTP 400: InvalidIdentityToken/ ],
	[ 'container http to a host not allowed', { %files, AWS_CONTAINER_CREDENTIALS_FULL_URI => 'http://10.1.2.3/creds' },
		2, qr/plain http is allowed only to loopback, 169\.254\.170\.2/ ],
	[ 'container token refused', { %files, %container, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE => undef,
		AWS_CONTAINER_AUTHORIZATION_TOKEN => 'wrong' }, 1, qr/container credentials endpoint .* answered HTTP 403/ ],
	[ 'source_profile and credential_source both', { %files, AWS_PROFILE => 'both' }, 2,
		qr/has both source_profile and credential_source/ ],
	[ 'duration_seconds out of range', { %files, AWS_PROFILE => 'baddur' }, 2,
		qr/duration_seconds "10" must be from 900 to 43200/ ],
	[ 'unknown profile', { %files, AWS_PROFILE => 'nosuch' }, 2, qr/AWS profile "nosuch" was not found/ ],
	[ 'half of the environment pair', { %files, AWS_ACCESS_KEY_ID => 'AKIDONLY' }, 2,
		qr/AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not/ ],
);
write_file("$dir/bad_token", "bad-token");
foreach my $b (@bad)
{
	my ($name, $env, $code, $re) = @$b;
	my ($rc, $ours, $err) = shipper_credentials($env);
	is($rc, $code, "$name: exit $code");
	like($err, $re, "$name: message") or diag($err);
}
foreach my $m ([ 'imds', { %imds } ], [ 'container', { %container } ], [ 'sts', { %web } ])
{
	my ($which, $extra) = @$m;
	my ($bport) = start_aws_mock('--malformed', $which, '--expect-auth-file', "$dir/pod_token");
	my %env = (%files, %$extra, AWS_ENDPOINT_URL_STS => "http://127.0.0.1:$bport");
	$env{AWS_EC2_METADATA_SERVICE_ENDPOINT} = "http://127.0.0.1:$bport/" if $which eq 'imds';
	$env{AWS_CONTAINER_CREDENTIALS_FULL_URI} = "http://127.0.0.1:$bport/container/credentials"
	  if $which eq 'container';
	my ($rc, $ours, $err) = shipper_credentials(\%env);
	is($rc, 1, "malformed $which answer: exit 1");
	like($err, qr/malformed/, "malformed $which answer: says so") or diag($err);
}

# No byte of a credential answer in a log: answers broken right at the
# secret key and inside the session token (the JSON parser's own message
# quoted the 20 bytes near the error: "near 'wJalrXUtnFEMI/K7'").
foreach my $m ([ 'imds-secret', { %imds } ], [ 'container-secret', { %container } ])
{
	my ($which, $extra) = @$m;
	my ($bport) = start_aws_mock('--malformed', $which, '--expect-auth-file', "$dir/pod_token");
	my %env = (%files, %$extra);
	$env{AWS_EC2_METADATA_SERVICE_ENDPOINT} = "http://127.0.0.1:$bport/" if $which eq 'imds-secret';
	$env{AWS_CONTAINER_CREDENTIALS_FULL_URI} = "http://127.0.0.1:$bport/container/credentials"
	  if $which eq 'container-secret';
	my ($rc, $ours, $err, $out) = shipper_credentials(\%env, '-v');
	is($rc, 1, "$which answer: exit 1");
	like($err, qr/malformed .*invalid JSON at line 1, column \d+/, "$which answer: says where it broke")
	  or diag($err);
	# Any 6 bytes of the secret or the token.
	my @leaks;
	foreach my $secret ('wJalrXUtnFEMI/K7MDENG/bPxRfiCYLEAKEDSECRET', 'FwoGZXIvYXdzEJr//////////LEAKEDSESSIONTOKEN')
	{
		for my $i (0 .. length($secret) - 6)
		{
			my $piece = substr($secret, $i, 6);
			push @leaks, $piece if index("$out$err", $piece) >= 0;
		}
	}
	is("@leaks", '', "$which answer: no byte of the secret key or the token in the output");
}

# 3. Rotation under load.  Web identity credentials live 20 s; the proxy
#    in front of kinesalite accepts only the latest key.  Phase A: the
#    expiry is told, the shipper refreshes ahead.  Phase B: STS claims an
#    hour but the key dies after 20 s (revoked): only the refusal
#    (ExpiredTokenException) tells, and it is a refresh and a retry.
my $node = new_cluster('creds');
my $connstr = $node->connstr('postgres');
my ($kport) = start_kinesalite();
kinesis_tool($kport, 'create', 'rot_stream', 2);
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('rot', 'fundrecs_decoder')");

foreach my $phase ([ 'A', [] ], [ 'B', [ '--claimed-lifetime', '3600' ] ])
{
	my ($label, $mockargs) = @$phase;
	my $keys = "$dir/keys_$label.json";
	my ($rport) = start_aws_mock('--lifetime', '20', '--keys-file', $keys, @$mockargs);
	my ($pport) = start_proxy($kport, '--keys-file', $keys);
	my %env = (%base, %web, AWS_ENDPOINT_URL_STS => "http://127.0.0.1:$rport");
	my $log = "$PostgreSQL::Test::Utils::tmp_check/creds_rotation_$label.log";
	my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs_schema.orders');
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'rot', '--no-load',
		'--endpoint-url', "http://127.0.0.1:$pport", '--stream', 'rot_stream', '-s', '1', '-v');
	my $seconds = $label eq 'A' ? 60 : 45;
	my $t_end = time + $seconds;
	my $n = 0;
	while (time < $t_end)
	{
		$node->safe_psql('postgres',
			"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1 + g % 4, 101, 1 FROM generate_series(1, 20) g");
		$n += 20;
		sleep 0.5;
	}
	my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	ok($node->poll_query_until('postgres',
		"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'rot'"),
		"rotation $label: everything confirmed");
	$h->signal('TERM');
	$h->finish;
	my $out = slurp_file($log);
	is($h->result(0), 0, "rotation $label: exit 0");
	unlike($out, qr/error:/, "rotation $label: no error");
	my $stats = proxy_stats($pport);
	my $nkeys = scalar(keys %{ $stats->{keys_seen} });
	cmp_ok($nkeys, '>=', 3, "rotation $label: the key changed at least twice ($nkeys keys used)");
	is($stats->{mismatches}, 0, "rotation $label: every request signed correctly");
	if ($label eq 'B')
	{
		cmp_ok($stats->{expired}, '>=', 1, 'rotation B: refused as expired at least once');
		like($out, qr/ExpiredTokenException: the credentials \(from assume-role-with-web-identity.*\) expired; refreshing them/,
			'rotation B: an expired token is a refresh and a retry');
	}
	else
	{
		like($out, qr/AWS credentials refreshed from assume-role-with-web-identity/, 'rotation A: refreshed ahead of expiry');
	}
	note("rotation $label: $n rows inserted, $nkeys keys, $stats->{expired} refused as expired");
}
# 3b. A refresh that hangs.  credential_process gives keys for 60 s, then
#     hangs (sleep 300) when asked again, 30 s in (half their life).  While the current keys
#     are good, rows keep flowing (the refresh held the lock every delivery
#     waits on: 0-2 rows per 10 s); SIGTERM is honoured within
#     --shutdown-timeout, and the hung child does not outlive the shipper.
{
	my $script = "$dir/hang_cp.sh";
	write_file($script, <<"EOS");
#!/bin/sh
if [ -f '$dir/cp_called' ]; then echo \$\$ > '$dir/cp_hang.pid'; exec sleep 300; fi
touch '$dir/cp_called'
printf '{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s", "Expiration": "%s"}' \\
	'$ACCESS_KEY' '$SECRET_KEY' "\$(date -u -d '+60 seconds' +%Y-%m-%dT%H:%M:%SZ)"
EOS
	chmod 0755, $script;
	write_file("$dir/config_hang", "[profile hangrefresh]\ncredential_process = $script\n");
	my ($pport) = start_proxy($kport);
	kinesis_tool($kport, 'create', 'hang_stream', 1);
	$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('hang', 'fundrecs_decoder')");
	my %env = (%base, AWS_CONFIG_FILE => "$dir/config_hang", AWS_SHARED_CREDENTIALS_FILE => "$dir/none",
		AWS_PROFILE => 'hangrefresh');
	my $log = "$PostgreSQL::Test::Utils::tmp_check/creds_hang.log";
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'hang', '--no-load', '--endpoint-url',
		"http://127.0.0.1:$pport", '--stream', 'hang_stream', '-s', '1', '--shutdown-timeout', '3', '-v');
	my $t0 = time;
	my ($late_end, $late_rows) = (undef, 0);
	while (time < $t0 + 42)
	{
		$node->safe_psql('postgres',
			"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1, 102, 1 FROM generate_series(1, 10) g");
		$late_rows += 10 if time > $t0 + 32;
		sleep 0.5;
	}
	$late_end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	ok(-f "$dir/cp_hang.pid", 'hanging refresh: the refresh started and hangs');
	my $deadline = time + 6;
	my $confirmed;
	while (time < $deadline)
	{
		$confirmed = $node->safe_psql('postgres',
			"SELECT confirmed_flush_lsn >= '$late_end' FROM pg_replication_slots WHERE slot_name = 'hang'");
		last if $confirmed eq 't';
		sleep 0.2;
	}
	is($confirmed, 't', "hanging refresh: the $late_rows rows written during the hang were delivered (the current keys are still good)");
	my $t_term = time;
	$h->signal('TERM');
	$h->finish;
	my $took = time - $t_term;
	cmp_ok($took, '<', 3 + 5, sprintf('hanging refresh: SIGTERM honoured in %.1f s (--shutdown-timeout 3)', $took));
	my $hung = slurp_file("$dir/cp_hang.pid");
	chomp $hung;
	sleep 0.5;
	# Gone, or at most a zombie no one reaped yet (it ran no more).
	my $state = -e "/proc/$hung/stat" ? (slurp_file("/proc/$hung/stat") =~ /^\d+ \(.*\) (\S)/s)[0] : 'gone';
	ok($state eq 'gone' || $state eq 'Z', "hanging refresh: the credential_process child is gone after the shipper exits ($state)");
	kill 'KILL', $hung;
}

# 4. SIGHUP: keys rotated in the shared credentials file are read again.
#    The proxy accepts only the key named "latest" in its keys file; the
#    files change while the shipper is idle, then SIGHUP, then rows: they
#    are signed with the new key, none is refused.
{
	my $keys = "$dir/keys_hup.json";
	my $credfile = "$dir/credentials_hup";
	my $write_keys = sub {
		my ($latest) = @_;
		write_file($keys, encode_json({ latest => $latest, keys => {
			AKIDHUPFIRST0001 => { secret => 'first/secret', token => undef, expires => time + 3600 },
			AKIDHUPSECOND002 => { secret => 'second/secret', token => undef, expires => time + 3600 } } }));
	};
	write_file($credfile, "[default]\naws_access_key_id = AKIDHUPFIRST0001\naws_secret_access_key = first/secret\n");
	$write_keys->('AKIDHUPFIRST0001');
	my ($pport) = start_proxy($kport, '--keys-file', $keys);
	my %env = (%base, AWS_SHARED_CREDENTIALS_FILE => $credfile);
	my $log = "$PostgreSQL::Test::Utils::tmp_check/creds_hup.log";
	my $h = start_shipper(\%env, $log, '-d', $connstr, '-S', 'rot', '--no-load',
		'--endpoint-url', "http://127.0.0.1:$pport", '--stream', 'rot_stream', '-s', '1', '-v');
	my $ship = sub {
		$node->safe_psql('postgres',
			"INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) SELECT 1, 101, 1 FROM generate_series(1, 10)");
		my $end = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
		return $node->poll_query_until('postgres',
			"SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'rot'");
	};
	ok($ship->(), 'SIGHUP: rows shipped with the first key');
	write_file($credfile, "[default]\naws_access_key_id = AKIDHUPSECOND002\naws_secret_access_key = second/secret\n");
	$write_keys->('AKIDHUPSECOND002');
	$h->signal('HUP');
	my $deadline = time + 30;
	sleep 0.2 while time < $deadline && slurp_file($log) !~ /SIGHUP: the AWS credentials will be read again/;
	ok($ship->(), 'SIGHUP: rows shipped after the rotation');
	$h->signal('TERM');
	$h->finish;
	my $out = slurp_file($log);
	is($h->result(0), 0, 'SIGHUP: the shipper goes on and exits 0');
	like($out, qr/SIGHUP: the AWS credentials will be read again from shared-credentials-file/, 'SIGHUP: logged');
	like($out, qr/AWS credentials refreshed from shared-credentials-file .*access key \*{16}D002/,
		'SIGHUP: the new key was read');
	my $stats = proxy_stats($pport);
	ok($stats->{keys_seen}{AKIDHUPSECOND002}, 'SIGHUP: requests signed with the new key');
	is($stats->{expired} + $stats->{unknown_keys}, 0, 'SIGHUP: no request refused');
	is($stats->{mismatches}, 0, 'SIGHUP: every signature right');
}

# Every row of both phases is in the stream, in order per key.
my $total = $node->safe_psql('postgres', 'SELECT count(*) FROM fundrecs_schema.orders');
my $recs = read_stream($kport, 'rot_stream', $total);
my %ids = map { $_->{row}{data}{order_id} => 1 } grep { $_->{row}{op} eq 'insert' } @$recs;
is(scalar(keys %ids), $total, "rotation: all $total rows delivered, nothing lost");

done_testing();
