# The alert rules and the dashboard (scripts/monitoring/): promtool checks
# the rules and runs their unit tests (each alert fires on its failure's
# series, none for a healthy shipper), and every metric the rules and the
# dashboard name is one a running shipper serves (a renamed metric would
# silence an alert).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

needs(qw(shipper s3rver boto3 promtool));

my $dir = "$E2E_DIR/../../scripts/monitoring";
my ($out, $err);
ok(IPC::Run::run([ 'promtool', 'check', 'rules', "$dir/fundrecs-alerts.yml" ], '>', \$out, '2>', \$err),
	'promtool check rules') or diag("$out$err");
ok(IPC::Run::run([ 'promtool', 'test', 'rules', "$dir/fundrecs-alerts.test.yml" ], '>', \$out, '2>', \$err),
	'promtool test rules: each alert fires on its failure, none when healthy') or diag("$out$err");

my $dashboard = decode_json(slurp_file("$dir/fundrecs-dashboard.json"));
ok(scalar(@{ $dashboard->{panels} }) >= 8, 'the dashboard parses and has its panels');

# The metrics a shipper with S3 (credentials, slot state, S3 counters) serves.
my %env = shipper_env();
my $node = new_cluster('alerts');
# safe_wal_size is served only with a limit.
$node->append_conf('postgresql.conf', 'max_slot_wal_keep_size = 1GB');
$node->reload;
my ($s3port) = start_s3rver('alerts');
my ($proxy) = start_proxy($s3port, '--strip-auth');
my $mport = PostgreSQL::Test::Cluster::get_free_port();
my $h = start_shipper(\%env, "$PostgreSQL::Test::Utils::tmp_check/alerts.log", '-d', $node->connstr('postgres'),
	'-S', 'alerts', '--create-slot', '--target', 's3', '--endpoint-url', "http://127.0.0.1:$proxy",
	'--s3-url', 's3://alerts/cdc', '--metrics-address', "127.0.0.1:$mport", '-s', '1');
my $metrics = '';
for (1 .. 300)
{
	$metrics = `curl -s http://127.0.0.1:$mport/metrics`;
	last if $metrics =~ /^fundrecs_shipper_slot_wal_status\{/m;
	usleep(100_000);
}
my %served = map { $_ => 1 } $metrics =~ /^# TYPE (\S+) /mg;
ok(scalar(keys %served) > 20, 'the shipper serves its metrics');

my %named;
my $rules = slurp_file("$dir/fundrecs-alerts.yml");
$named{$_} = 'rules' foreach $rules =~ /\b(fundrecs_shipper_[a-z0-9_]+)/g;
foreach my $panel (@{ $dashboard->{panels} })
{
	$named{$_} = 'dashboard' foreach map { $_->{expr} =~ /\b(fundrecs_shipper_[a-z0-9_]+)/g } @{ $panel->{targets} };
}
my @unknown = grep { !$served{$_} } sort keys %named;
is_deeply(\@unknown, [], 'every metric the rules and the dashboard name is served')
  or diag(join("\n", map { "$_ ($named{$_})" } @unknown));

$h->signal('TERM');
$h->finish;
done_testing();
