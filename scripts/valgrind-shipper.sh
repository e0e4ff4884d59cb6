#!/bin/bash
# make valgrind: one TAP scenario with every shipper run under valgrind
# (memcheck); passes when no run has a memory error and none has
# "definitely lost" memory.
#
#   scripts/valgrind-shipper.sh [t/130_messages_logs.pl]
#
# The shipper is started through a wrapper (FUNDRECS_SHIPPER) that runs it
# under valgrind with one log per process in tmp_valgrind/.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
test=${1:-t/130_messages_logs.pl}
logs="$top/tmp_valgrind"
rm -rf "$logs"
mkdir -p "$logs"
chmod 777 "$logs"
wrapper="$logs/fundrecs_shipper"
cat > "$wrapper" <<EOW
#!/bin/sh
exec valgrind --quiet --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
	--error-exitcode=99 --track-fds=no --log-file="$logs/vg.%p.log" \\
	"$($PG_CONFIG --bindir)/fundrecs_shipper" "\$@"
EOW
chmod 755 "$wrapper"

if [ "$(id -u)" -eq 0 ]; then
	as_pg() { runuser -u postgres -- env PATH="$PATH" "$@"; }
	chown -R postgres:postgres "$top/shipper"
else
	as_pg() { "$@"; }
fi
as_pg env FUNDRECS_SHIPPER="$wrapper" make -s -C shipper PG_CONFIG="$PG_CONFIG" installcheck \
	PROVE_TESTS="$test" > valgrind_tap.out 2>&1
rc=$?
grep -E "^(t/|Files=|Result:)" valgrind_tap.out
runs=$(ls "$logs"/vg.*.log 2>/dev/null | wc -l)
# A log with content is a report (--quiet prints nothing otherwise).
bad=0
for f in "$logs"/vg.*.log; do
	[ -s "$f" ] || continue
	bad=$((bad + 1))
	echo "---- $f"
	head -n 60 "$f"
done
echo "valgrind: $runs shipper runs, $bad with reports (memory errors or definitely lost)"
[ $rc -eq 0 ] && [ $bad -eq 0 ] && [ $runs -gt 0 ]
