#!/usr/bin/env bash
# Runs every test of fundrecs: checks the release metadata (one version,
# META.json), builds with clang and gcc with warnings as errors, builds,
# lints, installs, smoke-tests and removes the Debian package, installs the
# extension and the shipper from source, then
#   1. the pg_regress suite and the plugin's TAP tests (the differential
#      test against test_decoding): make NO_SHIPPER=1 installcheck,
#   2. the shipper's TAP tests (SigV4 suite, CLI, Kinesis emulators, faults),
#   3. fuzzing, sanitizers, the benchmark harness at its tiny scale
#      (bench/run --quick),
#   4. the version matrix: pg_regress, the differential test and the
#      shipper's decoding TAP tests on PostgreSQL 17 and 18
#      (scripts/test-matrix.sh; MATRIX_MAJORS="" skips it).
# Installs what is missing first (scripts/install-deps.sh).
#
# PostgreSQL refuses to run as root: as root, the suites run as the
# "postgres" user in a copy of the tree that it can write.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh || exit 1

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

status=0
echo "== release metadata (test/check_release.py)"
python3 test/check_release.py > release.out 2>&1 || status=1
cat release.out

echo "== C style (scripts/pgindent.sh --check)"
if indent_diff=$(PG_CONFIG="$PG_CONFIG" bash scripts/pgindent.sh --check); then
	echo "indent: every C source as pgindent leaves it" > indent.out
else
	{ echo "$indent_diff"; echo "indent: $(echo "$indent_diff" | wc -l) files not as pgindent leaves them (run bash scripts/pgindent.sh)"; } > indent.out
	status=1
fi
cat indent.out

echo "== build with clang (warnings are errors)"
make -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
make -s PG_CONFIG="$PG_CONFIG" WERROR=1 CC=clang || exit 1
make -s PG_CONFIG="$PG_CONFIG" clean >/dev/null

# Before the install from source: the package test removes what it installed.
echo "== Debian package (scripts/test-deb.sh)"
$sudo bash scripts/test-deb.sh > deb.out 2>&1 || status=1
cat deb.out

echo "== build with gcc (warnings are errors), make install"
make -s PG_CONFIG="$PG_CONFIG" WERROR=1 || exit 1
$sudo make -s PG_CONFIG="$PG_CONFIG" install >/dev/null || exit 1
python3 test/check_release.py --shipper "$($PG_CONFIG --bindir)/fundrecs_shipper" > release.out 2>&1 || status=1
tail -n 1 release.out

# Where the suites run, and as whom.
if [ "$(id -u)" -eq 0 ]; then
	work=$(mktemp -d /tmp/fundrecs-test.XXXXXX)
	tar --exclude=./test/e2e/node_modules --exclude=./.git -cf - . | tar -C "$work" -xf -
	ln -s "$top/test/e2e/node_modules" "$work/test/e2e/node_modules"
	chmod -R a+rX "$top/test/e2e/node_modules"
	chown -R postgres:postgres "$work"
	chmod 755 "$work"
	as_pg() { runuser -u postgres -- env PATH="$PATH" "$@"; }
else
	work="$top"
	as_pg() { "$@"; }
fi
cd "$work"

echo "== pg_regress and t/ (make NO_SHIPPER=1 installcheck)"
as_pg make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 installcheck > installcheck.out 2>&1
rc=$?
cat installcheck.out
if [ $rc -ne 0 ]; then
	status=1
	[ -f regression.diffs ] && cat regression.diffs
	for f in tmp_check/log/regress_log_*; do
		grep -q "not ok" "$f" 2>/dev/null && { echo "---- $f"; tail -n 60 "$f"; }
	done
fi

echo "== shipper TAP tests (make -C shipper installcheck)"
as_pg make -s -C shipper PG_CONFIG="$PG_CONFIG" installcheck > tap.out 2>&1
rc=$?
cat tap.out
if [ $rc -ne 0 ]; then
	status=1
	for f in shipper/tmp_check/log/regress_log_*; do
		grep -q "not ok" "$f" 2>/dev/null && { echo "---- $f"; tail -n 60 "$f"; }
	done
fi

echo "== skipped tests (scripts/check-skips.sh: only those test/allowed-skips names)"
bash scripts/check-skips.sh 15 installcheck.out tap.out > skips.out 2>&1 || status=1
n_skips=$(grep -c "^skip" skips.out)
cat skips.out
if grep -q "NOT allowed" skips.out; then
	echo "skips: $n_skips, some not allowed (test/allowed-skips)" >> skips.out
else
	echo "skips: $n_skips, all allowed" >> skips.out
fi

echo "== fuzzing (make -C shipper fuzz-regress, then fuzz for a few seconds each)"
{
	as_pg make -s -C shipper PG_CONFIG="$PG_CONFIG" fuzz-regress &&
	as_pg make -s -C shipper PG_CONFIG="$PG_CONFIG" fuzz FUZZ_SECONDS=${FUZZ_SECONDS:-5}
} > fuzz.out 2>&1
rc=$?
cat fuzz.out
nfuzz=$(grep -c "^fuzz_.*: [0-9]* s$" fuzz.out)
[ $rc -eq 0 ] && echo "fuzz: $nfuzz targets run, 0 crashes" >> fuzz.out || { status=1; echo "fuzz: $nfuzz targets run, FAILED" >> fuzz.out; }

echo "== sanitizers (scripts/check-asan.sh on a subset of the TAP tests)"
$sudo env ASAN_TAP_TESTS="${ASAN_TAP_TESTS:-t/001_sigv4.pl t/010_cli.pl t/090_aggregate.pl t/130_messages_logs.pl t/140_credentials.pl t/210_lake_faults.pl}" \
	PG_CONFIG="$PG_CONFIG" bash scripts/check-asan.sh > asan.out 2>&1 || status=1
cat asan.out

if [ -x bench/run ]; then
	echo "== benchmark harness (bench/run --quick)"
	as_pg bench/run --quick || status=1
fi

cd "$top"
if [ -n "${MATRIX_MAJORS-17 18}" ]; then
	echo "== other PostgreSQL majors (scripts/test-matrix.sh ${MATRIX_MAJORS-17 18})"
	bash scripts/test-matrix.sh ${MATRIX_MAJORS-17 18} > matrix.out 2>&1 || status=1
	cat matrix.out
fi
cd "$work"

# The runners' summary lines, last.
echo "== summary"
grep -h -E "tests? (passed|failed)|of [0-9]+ tests" installcheck.out 2>/dev/null | sed 's/^ *//'
grep -h -E "^(Files=|Result:)" installcheck.out tap.out 2>/dev/null
tail -n 1 "$top/release.out" 2>/dev/null
tail -n 1 "$top/deb.out" 2>/dev/null
tail -n 1 "$top/indent.out" 2>/dev/null
tail -n 1 skips.out 2>/dev/null
tail -n 1 fuzz.out 2>/dev/null
tail -n 1 asan.out 2>/dev/null
[ -f bench/out/quick.summary ] && cat bench/out/quick.summary
grep -h "^PostgreSQL [0-9]*: " "$top/matrix.out" 2>/dev/null
tail -n 1 "$top/matrix.out" 2>/dev/null
exit $status
