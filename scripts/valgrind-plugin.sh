#!/bin/bash
# make valgrind-plugin: the pg_regress suite against a server running under
# valgrind (memcheck), so that every backend that loads fundrecs_decoder is
# checked; passes when no valgrind error has a frame in fundrecs_decoder.so.
#
# AddressSanitizer cannot be preloaded into Debian's postgres (see
# scripts/check-asan.sh), so this is the plugin's memory check.  The
# server is not a valgrind-aware build (USE_VALGRIND): palloc'd chunks are
# not tracked one by one, but reads and writes outside the memory the
# plugin was given, uses of uninitialised values and bad frees are.
# Errors of PostgreSQL itself are counted apart, not failed on.  Slow
# (about 10 minutes); not in CI.  Run as root or as a user who can initdb.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$($PG_CONFIG --bindir)
work=$(mktemp -d /tmp/fundrecs-vgplugin.XXXXXX)
chmod 777 "$work"
if [ "$(id -u)" -eq 0 ]; then
	as_pg() { runuser -u postgres -- env PATH="$PATH" "$@"; }
	chown -R postgres:postgres "$work" "$top/sql" "$top/expected"
	chmod 777 "$top"
else
	as_pg() { "$@"; }
fi
port=$(( (RANDOM % 10000) + 50000 ))
as_pg "$bindir/initdb" -D "$work/data" -A trust -U postgres >/dev/null || exit 1
cat "$top/test/fundrecs.conf" >> "$work/data/postgresql.conf"
if as_pg "$bindir/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
	echo "output_plugin_libraries = 'pgoutput, test_decoding, fundrecs_decoder'" >> "$work/data/postgresql.conf"
fi
cat >> "$work/data/postgresql.conf" <<EOC
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
EOC
as_pg sh -c "valgrind --quiet --trace-children=yes --error-limit=no --num-callers=30 \
	--log-file='$work/vg.%p.log' '$bindir/postgres' -D '$work/data' > '$work/server.log' 2>&1 &"
for i in $(seq 1 120); do
	as_pg "$bindir/pg_isready" -q -h "$work" -p "$port" && break
	sleep 1
done
as_pg make -s PG_CONFIG="$PG_CONFIG" NO_SHIPPER=1 installcheck \
	REGRESS_OPTS="--host=$work --port=$port --user=postgres --load-extension=fundrecs" > valgrind_plugin.out 2>&1
rc=$?
grep -E "tests? (passed|failed)|of [0-9]+ tests" valgrind_plugin.out | sed 's/^ *//'
as_pg "$bindir/pg_ctl" -D "$work/data" -m fast -w -t 300 stop >/dev/null

# Error records: "==PID== Invalid read ..." up to the next blank record line.
read ours theirs < <(python3 - "$work" <<'EOP'
import glob, re, sys
ours = theirs = 0
for f in glob.glob(sys.argv[1] + "/vg.*.log"):
    blocks, cur = [], []
    for line in open(f, errors="replace"):
        body = re.sub(r"^==\d+== ?", "", line.rstrip("\n"))
        if body == "":
            if cur:
                blocks.append(cur)
            cur = []
        else:
            cur.append(body)
    if cur:
        blocks.append(cur)
    for b in blocks:
        if not re.match(r"(Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and dest|Argument)", b[0]):
            continue
        if any("fundrecs_decoder.so" in l or re.search(r"\bfr_\w+ \(", l) for l in b):
            ours += 1
            sys.stderr.write("---- " + f + "\n" + "\n".join(b[:40]) + "\n")
        else:
            theirs += 1
print(ours, theirs)
EOP
)
backends=$(ls "$work"/vg.*.log | wc -l)
echo "valgrind (plugin): $backends processes, $ours errors in fundrecs_decoder, $theirs errors elsewhere (PostgreSQL itself, not failed on)"
[ $rc -eq 0 ] && [ $ours -eq 0 ]
