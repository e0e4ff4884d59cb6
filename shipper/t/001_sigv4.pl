# The SigV4 signer against every case of the AWS SigV4 test suite: the
# canonical request, the string to sign and the signature of each.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);

my $dir = abs_path(dirname(__FILE__) . '/..');
exec("$dir/test_sigv4", "$dir/testdata/aws-sig-v4-test-suite")
  or die "could not run test_sigv4: $!";
