# systemd's notification protocol: with NOTIFY_SOCKET set, the shipper sends
# READY=1 once connected, STATUS= lines while streaming, WATCHDOG=1 at half
# of WATCHDOG_USEC, and STOPPING=1 on SIGTERM.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../../test/perl";
use FundrecsE2E;
use IO::Select;
use IO::Socket::UNIX;
use PostgreSQL::Test::Utils;
use Socket qw(SOCK_DGRAM);
use Test::More;
use Time::HiRes qw(time);

needs(qw(shipper));

my %env = shipper_env();
my $node = new_cluster('systemd');
my $connstr = $node->connstr('postgres');
my $path = "$PostgreSQL::Test::Utils::tmp_check/notify.sock";
unlink $path;
my $sock = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $path) or die "socket: $!";
my $log = "$PostgreSQL::Test::Utils::tmp_check/systemd_shipper.log";

my $h = start_shipper({ %env, NOTIFY_SOCKET => $path, WATCHDOG_USEC => 1_000_000 }, $log,
	'-d', $connstr, '-S', 'sd', '--create-slot', '--target', 'stdout', '-s', '1');

my @msgs;
my $sel = IO::Select->new($sock);

# An EnvironmentFile as systemd reads it: KEY=VALUE lines, # comments, a
# value in double quotes taken without them.
sub env_file
{
	my ($text) = @_;
	my %vars;
	foreach my $line (split /\n/, $text)
	{
		next if $line =~ /^\s*(#|$)/;
		my ($k, $v) = $line =~ /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*?)\s*$/ or next;
		$v = $1 if $v =~ /^"(.*)"$/;
		$vars{$k} = $v;
	}
	return %vars;
}

# ExecStart's words with systemd's variable expansion.
sub systemd_expand
{
	my ($cmd, $vars) = @_;
	my @out;
	foreach my $word (split ' ', $cmd)
	{
		if ($word =~ /^\$([A-Za-z_][A-Za-z0-9_]*)$/)
		{
			push @out, split(' ', $vars->{$1} // '');
		}
		else
		{
			$word =~ s/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/$vars->{$1} \/\/ ''/ge;
			push @out, $word;
		}
	}
	return @out;
}

# Collects datagrams for up to $secs seconds, or until $until matches one.
sub collect
{
	my ($secs, $until) = @_;
	my $t_end = time + $secs;
	while (time < $t_end)
	{
		last if $until && grep { /$until/ } @msgs;
		next unless $sel->can_read(0.2);
		my $buf;
		$sock->recv($buf, 4096);
		push @msgs, $buf;
	}
}

collect(6);
$h->signal('TERM');
collect(10, qr/STOPPING=1/);
$h->finish;

my @ready = grep { /^READY=1$/m } @msgs;
is(scalar @ready, 1, 'READY=1 sent once');
like($ready[0] // '', qr/^STATUS=connected/m, 'READY=1 comes with a status');
ok((grep { /^STATUS=streaming slot sd: confirmed [0-9A-F]+\/[0-9A-F]+, \d+ bytes behind, \d+ rows held$/m } @msgs),
	'STATUS= lines while streaming');
cmp_ok(scalar(grep { /^WATCHDOG=1$/ } @msgs), '>=', 6, 'WATCHDOG=1 at half of WATCHDOG_USEC (0.5 s) for 6 s');
ok((grep { /^STOPPING=1$/ } @msgs), 'STOPPING=1 on SIGTERM');
is($h->result(0), 0, 'exit 0 after SIGTERM');

# Waiting is not hanging: --create-slot behind an open write transaction
# (CREATE_REPLICATION_SLOT waits for it to end) keeps the watchdog fed and
# says why in STATUS= (it sent nothing for 23 s: WatchdogSec=60 killed it).
{
	@msgs = ();
	my $open = $node->background_psql('postgres');
	$open->query_safe("BEGIN; INSERT INTO fundrecs_schema.customers VALUES (424242, 'open', 'transaction')");
	my $hw = start_shipper({ %env, NOTIFY_SOCKET => $path, WATCHDOG_USEC => 1_000_000 }, $log,
		'-d', $connstr, '-S', 'sd_wait', '--create-slot', '--target', 'stdout', '-s', '1');
	collect(4);
	cmp_ok(scalar(grep { /^WATCHDOG=1$/ } @msgs), '>=', 5, 'waiting for an open transaction: WATCHDOG=1 goes on');
	ok((grep { /^STATUS=creating replication slot sd_wait: waiting for the transactions running now to end$/m } @msgs),
		'waiting for an open transaction: STATUS= says why');
	$open->query_safe('COMMIT');
	$open->quit;
	collect(15, qr/^STATUS=streaming slot sd_wait/m);
	ok((grep { /^STATUS=streaming slot sd_wait/m } @msgs), 'waiting for an open transaction: streams once it ended');
	$hw->signal('TERM');
	$hw->finish;
}

# The packaged unit's command line, expanded as systemd expands it, with an
# env file written like the example: "$VAR" is split at whitespace (quotes
# kept as they are), "${VAR}" is one argument.  A connection string with
# spaces in FUNDRECS_SHIPPER_ARGS was split ("too many command-line
# arguments"); FUNDRECS_SHIPPER_DSN keeps it whole.
{
	my $dir = "$FindBin::Bin/../../scripts/systemd";
	my ($exec) = slurp_file("$dir/fundrecs-shipper\@.service") =~ /^ExecStart=(.*)$/m;
	my %example = env_file(slurp_file("$dir/fundrecs-shipper.env.example"));
	like($example{FUNDRECS_SHIPPER_DSN} // '', qr/ /, 'unit: the example\'s connection string has spaces');
	my @argv = systemd_expand($exec, \%example);
	my ($d) = grep { $argv[$_] eq '-d' } 0 .. $#argv;
	is($argv[ $d + 1 ], $example{FUNDRECS_SHIPPER_DSN}, 'unit: the example\'s connection string is one argument');
	unlike(join(' ', @argv), qr/ -d .* -d /, 'unit: -d given once');

	# The same command line on this cluster, to an end position.
	$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('unit_slot', 'fundrecs_decoder')");
	$node->safe_psql('postgres', "INSERT INTO fundrecs_schema.customers VALUES (515151, 'unit', 'line')");
	my $uend = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my %mine = (%example, FUNDRECS_SHIPPER_DSN => $node->connstr('postgres'),
		FUNDRECS_SHIPPER_ARGS => "-S unit_slot --target stdout -E $uend");
	my @run = systemd_expand($exec, \%mine);
	shift @run;    # the packaged binary's path: the shipper under test instead
	my ($urc, $uout, $uerr) = run_shipper(\%env, @run);
	is($urc, 0, 'unit: the command line runs') or diag($uerr);
	like($uout, qr/"customer_name":"unit"/, 'unit: and ships the row');
}

# A watchdog meant for another process is not ours.
@msgs = ();
$h = start_shipper({ %env, NOTIFY_SOCKET => $path, WATCHDOG_USEC => 1_000_000, WATCHDOG_PID => 1 }, $log,
	'-d', $connstr, '-S', 'sd', '--target', 'stdout', '-s', '1');
collect(3);
$h->signal('TERM');
$h->finish;
ok((grep { /^READY=1$/m } @msgs), 'READY=1 without our watchdog');
is(scalar(grep { /^WATCHDOG=1$/ } @msgs), 0, 'no WATCHDOG=1 when WATCHDOG_PID names another process');

done_testing();
