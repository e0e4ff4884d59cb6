# README.md, tested.  The commands a newcomer copies run as written, in
# order, on a fresh cluster: every fenced block marked
# "<!-- readme-test: sql -->" (after the hidden set-up of a
# "<!-- readme-test-setup ... -->" comment before it) runs through psql
# with ON_ERROR_STOP, and a block marked "<!-- readme-test: output -->"
# must equal what the block before it printed last, as JSON, with the
# values that are the reader's own (lsn, commit_lsn, xid, commit_time,
# order_date) left out.  And what the README states has one source:
#  - the package's file name is the one make deb builds (fundrecs.control's
#    default_version);
#  - the upgrade chain reaches that version and names its script;
#  - the option table lists every option of fundrecs_shipper --help, and
#    nothing else;
#  - every file "Where things are" names exists.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../test/perl";
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FundrecsE2E qw(plugin_libraries_conf $SHIPPER);

my $top = "$FindBin::Bin/..";
my $readme = slurp_file("$top/README.md");
my ($version) = slurp_file("$top/fundrecs.control") =~ /^default_version = '([^']+)'/m;

# 1. One source.
like($readme, qr/postgresql-15-fundrecs_\Q$version\E_amd64\.deb/, "the package file is _${version}_amd64.deb");
unlike($readme, qr/postgresql-15-fundrecs_(?!\Q$version\E_)[0-9.]+_amd64\.deb/, 'no other version of it');
like($readme, qr/ALTER EXTENSION fundrecs UPDATE;\s+-- 1\.0 ->.*-> \Q$version\E\n/, "the upgrade chain ends at $version");
my @scripts = map { s{.*/}{}r } glob("$top/fundrecs--*--$version.sql");
ok(@scripts == 1 && $readme =~ /\Q$scripts[0]\E/, "the upgrade section names $scripts[0]");

my ($where) = $readme =~ /### Where things are\n(.*?)\n## |### Where things are\n(.*)/s;
my @files;
foreach my $line (split /\n/, $where // '')
{
	next unless $line =~ /^\| (`[^|]+`) \|/;
	my $cell = $1;
	foreach my $f ($cell =~ /`([^`]+)`/g)
	{
		next if $f =~ /\*/;
		my $path = -e "$top/$f" ? "$top/$f" : "$top/shipper/$f";
		push @files, $f unless -e $path;
	}
}
is_deeply(\@files, [], 'every file "Where things are" names exists');

SKIP:
{
	my $shipper = -x $SHIPPER ? $SHIPPER : (grep { -x "$_/$SHIPPER" } split(/:/, $ENV{PATH}))[0];
	skip 'fundrecs_shipper is not built (make)', 2 unless defined $shipper;
	$shipper = "$shipper/$SHIPPER" if -d $shipper;
	my $help = `$shipper --help`;
	my %help = map { $_ => 1 } $help =~ /^\s+(?:-\w, )?(--[a-z0-9-]+)/mg;
	my ($table) = $readme =~ /### fundrecs_shipper\n(.*?)\n\n[A-Z]/s;
	my %table;
	foreach my $row (grep { /^\| `-/ } split /\n/, $table // '')
	{
		my ($first) = $row =~ /^\| ([^|]*(?:\\\|[^|]*)*) \|/;
		$table{$_} = 1 foreach $first =~ /(--[a-z0-9-]+)/g;
	}
	# -d -h -p -U -w -W and -v -q -V -? are rows of their own, by short name
	delete @help{qw(--dbname --host --port --username --no-password --password --verbose --quiet --version --help)};
	is_deeply([ sort grep { !$table{$_} } keys %help ], [], 'every option of --help is in the option table');
	is_deeply([ sort grep { !$help{$_} } keys %table ], [], 'the option table has no option --help lacks');
}

# 2. The commands, in order.
my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', plugin_libraries_conf());
$node->start;

my @blocks;
while ($readme =~ /(?:<!-- readme-test-setup\n(.*?)-->\n)?<!-- readme-test: (sql|output) -->\n```\w*\n(.*?)```/sg)
{
	push @blocks, { setup => $1, kind => $2, text => $3 };
}
cmp_ok(scalar(grep { $_->{kind} eq 'sql' } @blocks), '>=', 6, 'the README marks its SQL examples');

# The reader's own values: positions, transaction ids, times.
sub comparable
{
	my ($text) = @_;
	my @rows;
	# one JSON document per row, possibly wrapped over lines
	my $json = JSON::PP->new->canonical;
	my $buf = '';
	foreach my $line (split /\n/, $text)
	{
		# other statements' results (a count, a slot) are not rows
		next if $buf eq '' && $line !~ /^\{/;
		$buf .= $line;
		my $doc = eval { $json->decode($buf) };
		next unless defined $doc;
		delete @{$doc}{qw(lsn commit_lsn xid commit_time)};
		delete $doc->{data}{order_date} if ref $doc->{data} eq 'HASH';
		push @rows, $json->encode($doc);
		$buf = '';
	}
	push @rows, "unparsed: $buf" if $buf ne '';
	return \@rows;
}

my $last = '';
my $n = 0;
foreach my $b (@blocks)
{
	$n++;
	if ($b->{kind} eq 'output')
	{
		is_deeply(comparable($last), comparable($b->{text}), "block $n: the output shown is what the commands print")
		  or diag("printed:\n$last");
		next;
	}
	$node->safe_psql('postgres', $b->{setup}) if defined $b->{setup};
	my ($stdout, $stderr);
	my $ok = IPC::Run::run([ 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$b->{text}, '>', \$stdout, '2>', \$stderr);
	my ($first) = $b->{text} =~ /^(?!--)(.+)$/m;
	ok($ok, "block $n runs as written: $first") or diag($stderr);
	# What the block's last statement printed (psql -A -t: its rows).
	$last = $stdout;
}

done_testing();
