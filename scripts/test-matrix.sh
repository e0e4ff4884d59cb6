#!/usr/bin/env bash
# The plugin on other PostgreSQL majors: for each major named (default 17
# and 18), assembles its toolchain (scripts/pg-toolchain.sh), builds the
# extension and plugin against it with warnings as errors, checks that every
# server symbol the plugin needs exists in that server, installs it there,
# and runs
#   - make installcheck: the whole pg_regress suite and the differential
#     test against test_decoding (t/),
#   - the shipper's decoding TAP tests (MATRIX_TAP_TESTS) with the installed
#     shipper (built once, against the system's libpq) streaming from that
#     major's servers.
# Runs as root like scripts/test-all.sh (the suites as "postgres" in a copy
# of the tree) or as a user who can write the toolchain cache.  Logs go to
# matrix-MAJOR.out; the last line is "version matrix: N passed, N failed".
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(17 18)
tap_tests=${MATRIX_TAP_TESTS:-t/020_kinesis.pl t/040_load.pl t/050_s3.pl t/070_signals.pl t/100_wal_safety.pl t/160_pack.pl t/170_failover.pl t/190_publications.pl t/200_enrichment_rules.pl t/210_lake_faults.pl t/250_backfill.pl}

if [ "$(id -u)" -eq 0 ]; then
	as_pg() { runuser -u postgres -- env PATH="$PATH" "$@"; }
else
	as_pg() { "$@"; }
fi

# Server symbols the plugin needs that this server lacks (built against
# headers of a newer minor release, an inline function may call one).
missing_symbols() {
	local so=$1 postgres=$2
	comm -23 <(nm -D --undefined-only "$so" | awk '{print $2}' | sed 's/@.*//' | sort -u) \
		<( (nm -D --defined-only "$postgres"; nm -D --defined-only /lib/x86_64-linux-gnu/libc.so.6 \
			/lib/x86_64-linux-gnu/libm.so.6) | awk '{print $3}' | sed 's/@.*//' | sort -u) |
		grep -v -E '^(_ITM_|__gmon_start__|__cxa_finalize)'
}

passed=0
failed=0
for major in "${majors[@]}"; do
	out="$top/matrix-$major.out"
	start=$(date +%s)
	ok=1
	{
		echo "== PostgreSQL $major"
		pgc=$(bash scripts/pg-toolchain.sh "$major" | tail -n 1) || { echo "no toolchain for $major"; exit 1; }
		echo "pg_config: $pgc ($("$pgc" --version))"
		bindir=$("$pgc" --bindir)

		# Build and install from a copy, so that the tree's own build (15)
		# is left alone.
		build=$(mktemp -d /tmp/fundrecs-pg$major.XXXXXX)
		tar --exclude=./test/e2e/node_modules --exclude=./.git --exclude='./matrix-*.out' -cf - . | tar -C "$build" -xf -
		make -s -C "$build" NO_SHIPPER=1 PG_CONFIG="$pgc" clean >/dev/null
		make -s -C "$build" NO_SHIPPER=1 PG_CONFIG="$pgc" WERROR=1 || exit 1
		missing=$(missing_symbols "$build/fundrecs_decoder.so" "$bindir/postgres")
		if [ -n "$missing" ]; then
			echo "the plugin needs symbols that the $("$pgc" --version) server lacks: $missing"
			exit 1
		fi
		make -s -C "$build" NO_SHIPPER=1 PG_CONFIG="$pgc" install >/dev/null || exit 1

		if [ "$(id -u)" -eq 0 ]; then
			ln -s "$top/test/e2e/node_modules" "$build/test/e2e/node_modules"
			chown -R postgres:postgres "$build"
		else
			ln -s "$top/test/e2e/node_modules" "$build/test/e2e/node_modules"
		fi
		cd "$build" || exit 1
		echo "-- pg_regress and t/ (make NO_SHIPPER=1 installcheck)"
		as_pg make -s NO_SHIPPER=1 PG_CONFIG="$pgc" installcheck || {
			[ -f regression.diffs ] && cat regression.diffs
			for f in tmp_check/log/regress_log_*; do
				grep -q "not ok" "$f" 2>/dev/null && { echo "---- $f"; tail -n 60 "$f"; }
			done
			exit 1
		}
		echo "-- shipper TAP tests against $major ($tap_tests)"
		# The backfill test at 300,000 rows: its million rows run on
		# the main major (make check-all), the mechanism is checked here.
		as_pg env FUNDRECS_BACKFILL_ROWS="${MATRIX_BACKFILL_ROWS:-300000}" \
			make -s -C shipper PG_CONFIG="$pgc" installcheck PROVE_TESTS="$tap_tests" || {
			for f in shipper/tmp_check/log/regress_log_*; do
				grep -q "not ok" "$f" 2>/dev/null && { echo "---- $f"; tail -n 60 "$f"; }
			done
			exit 1
		}
		cd "$top" && rm -rf "$build"
	} > "$out" 2>&1 || ok=0
	# A skip is a failure unless test/allowed-skips names it for this major.
	bash "$top/scripts/check-skips.sh" "$major" "$out" >> "$out" 2>&1 || ok=0
	secs=$(($(date +%s) - start))
	if [ $ok -eq 1 ]; then
		passed=$((passed + 1))
		echo "PostgreSQL $major: passed in $secs s ($(grep -h -E '^# All [0-9]+ tests passed|All [0-9]+ tests passed' "$out" | sed 's/^[# ]*//' | head -n 1); $(grep -h '^Files=' "$out" | tr '\n' ' '))" | tee -a "$out"
	else
		failed=$((failed + 1))
		echo "PostgreSQL $major: FAILED after $secs s (matrix-$major.out):"
		tail -n 80 "$out"
	fi
done
echo "version matrix: $passed passed, $failed failed"
[ $failed -eq 0 ]
