#!/bin/bash
# make check-asan: the shipper built with AddressSanitizer and UBSan, run
# through the TAP suite; the plugin built the same way, loaded into the
# test servers for pg_regress and decoding TAP tests; passes only with zero
# sanitizer reports.
#
#   scripts/check-asan.sh                 every TAP test
#   ASAN_TAP_TESTS="t/010_cli.pl ..." scripts/check-asan.sh   a subset (CI)
#
# The plugin (clang -fsanitize=address,undefined) is loaded by the temp
# instance's postmaster with clang's AddressSanitizer runtime preloaded
# (LD_PRELOAD): the server itself is not rebuilt, so ASan sees the plugin's
# stack, globals and malloc'd memory, not overruns inside palloc'd chunks
# (valgrind's run, scripts/valgrind-plugin.sh, sees those through
# PostgreSQL's memory-context annotations).  Beside the runtime a small
# library (scripts/asan-preload.c) is preloaded: without it the runtime
# deadlocks Debian's postgres at start (see that file).  The sanitized
# plugin is installed for the run and the normal build installed again
# afterwards.  Leaks are not checked here (PostgreSQL frees by memory
# context, the shipper's exit paths leave what the OS reclaims): valgrind's
# run (scripts/valgrind-shipper.sh) checks them.  Run as root (installs) or
# as a user who may write the PostgreSQL directories.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
reports="$top/tmp_asan"
rm -rf "$reports"
mkdir -p "$reports"
chmod 777 "$reports"

if [ "$(id -u)" -eq 0 ]; then
	as_pg() { runuser -u postgres -- env PATH="$PATH" "$@"; }
	chown -R postgres:postgres "$top/shipper" "$top/sql" "$top/expected" 2>/dev/null
	chmod 777 "$top"
else
	as_pg() { "$@"; }
fi
status=0

echo "== sanitizers: the shipper (clang -fsanitize=address,undefined)"
as_pg make -s -C shipper PG_CONFIG="$PG_CONFIG" asan || exit 1
as_pg env FUNDRECS_SHIPPER="$top/shipper/asan/fundrecs_shipper" \
	ASAN_OPTIONS="detect_leaks=0:log_path=$reports/shipper-asan" \
	UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/shipper-ubsan" \
	make -s -C shipper PG_CONFIG="$PG_CONFIG" installcheck ${ASAN_TAP_TESTS:+PROVE_TESTS="$ASAN_TAP_TESTS"} \
	> asan_tap.out 2>&1 || status=1
grep -E "^(t/|Files=|Result:)" asan_tap.out

echo "== sanitizers: the plugin (clang -fsanitize=address,undefined, its Asserts on, ASan runtime preloaded)"
runtime="$(clang -print-file-name=libclang_rt.asan-x86_64.so)"
[ -f "$runtime" ] || { echo "no ASan runtime at $runtime (apt-get install libclang-rt-14-dev)"; exit 1; }
clang -shared -fPIC -O2 -Wall -o "$top/tmp_asan_preload.so" scripts/asan-preload.c || exit 1
preload="$runtime $top/tmp_asan_preload.so"
plugin_asan="detect_leaks=0:halt_on_error=1:log_path=$reports/plugin-asan"
make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 clean >/dev/null
make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 CC=clang \
	PG_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -Wall -DUSE_ASSERT_CHECKING" \
	SHLIB_LINK="-fsanitize=address,undefined -shared-libasan" || exit 1
make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 CC=clang install >/dev/null || exit 1
as_pg env LD_PRELOAD="$preload" ASAN_OPTIONS="$plugin_asan" \
	UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/plugin-ubsan" \
	make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 installcheck > asan_regress.out 2>&1 || status=1
grep -E "tests? (passed|failed)|of [0-9]+ tests" asan_regress.out | sed 's/^ *//'
# (The sanitized plugin cannot load without the runtime in the server:
# its __asan_* symbols would be undefined, and every decoding test fail.)
# The TAP tests' decoding with the sanitized plugin too (a subset).
as_pg env LD_PRELOAD="$preload" ASAN_OPTIONS="$plugin_asan" \
	UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/plugin-tap-ubsan" \
	make -s -C shipper PG_CONFIG="$PG_CONFIG" installcheck \
	PROVE_TESTS="${ASAN_PLUGIN_TAP_TESTS:-t/040_load.pl t/130_messages_logs.pl}" > asan_plugin_tap.out 2>&1 || status=1
grep -E "^(Files=|Result:)" asan_plugin_tap.out

# The normal build back in place.
make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 clean >/dev/null
make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 >/dev/null && make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 install >/dev/null

n=$(ls "$reports" | wc -l)
if [ "$n" -ne 0 ]; then
	status=1
	for f in "$reports"/*; do echo "---- $f"; head -n 60 "$f"; done
fi
[ -f asan_tap.out ] && grep -q "Result: PASS" asan_tap.out || status=1
echo "sanitizers: $n reports"
exit $status
