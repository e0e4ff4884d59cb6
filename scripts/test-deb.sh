#!/usr/bin/env bash
# Builds the Debian package postgresql-15-fundrecs (dpkg-buildpackage -us -uc
# -b, in a copy of the tree), checks it with lintian (no errors, no
# warnings), installs it, and smoke-tests the installed files: the package
# holds the extension, the plugin, fundrecs_shipper, its man page and the
# systemd unit; CREATE EXTENSION, a slot, a row through the plugin and
# through the shipper on a throwaway cluster.  Removes the package at the
# end.  Needs root (dpkg -i) and scripts/install-deps.sh's packages.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$top/fundrecs.control")
pkg=postgresql-15-fundrecs
bin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/fundrecs-deb.XXXXXX)
trap 'runuser -u postgres -- "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
passed=0
fail() { echo "test-deb: FAIL: $*"; echo "test-deb: $passed passed, 1 failed"; exit 1; }
ok() { echo "test-deb: ok: $*"; passed=$((passed + 1)); }

mkdir "$work/src"
(cd "$top" && tar --exclude=./test/e2e/node_modules --exclude=./.git --exclude='*.o' --exclude='*.so' \
	--exclude='*.bc' -cf - .) | tar -C "$work/src" -xf -
(cd "$work/src" && make -s clean >/dev/null 2>&1 || true)
echo "== dpkg-buildpackage -us -uc -b"
if ! (cd "$work/src" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1); then
	tail -n 40 "$work/build.log"
	fail "dpkg-buildpackage"
fi
deb="$work/${pkg}_${version}_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || fail "no $deb (version $version from fundrecs.control)"
ok "built $(basename "$deb")"

echo "== lintian"
lintian --allow-root --fail-on error,warning "$deb" || fail "lintian reported errors or warnings"
ok "lintian: no errors, no warnings"

echo "== contents"
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/lib/postgresql/15/lib/fundrecs_decoder.so \
	./usr/share/postgresql/15/extension/fundrecs.control \
	"./usr/share/postgresql/15/extension/fundrecs--1.0.sql" \
	./usr/lib/postgresql/15/bin/fundrecs_shipper \
	./usr/share/man/man1/fundrecs_shipper.1.gz \
	./usr/share/man/man7/fundrecs_decoder.7.gz \
	./lib/systemd/system/fundrecs-shipper@.service \
	./usr/share/doc/postgresql-15-fundrecs/examples/fundrecs-shipper.env.example; do
	grep -qxF "$f" <<<"$contents" || fail "$f is not in the package"
done
ok "extension, plugin, shipper, man page and unit in the package"

echo "== dpkg -i"
dpkg -i "$deb" >/dev/null || fail "dpkg -i"
dpkg-query -W -f='${Status} ${Version}\n' "$pkg" | grep -q "install ok installed $version" ||
	fail "$pkg $version is not installed"
ok "$pkg $version installed"
# The service's user and configuration directory, as the unit expects them.
getent passwd fundrecs >/dev/null || fail "no fundrecs system user after dpkg -i"
[ "$(stat -c '%a %U %G' /etc/fundrecs 2>/dev/null)" = "750 root fundrecs" ] ||
	fail "/etc/fundrecs: $(stat -c '%a %U %G' /etc/fundrecs 2>&1), not 750 root fundrecs"
ok "the fundrecs system user and /etc/fundrecs (0750, group fundrecs)"

got=$("$bin/fundrecs_shipper" --version)
[ "$got" = "fundrecs_shipper (fundrecs) $version" ] || fail "fundrecs_shipper --version: $got"
ok "$got"
man -w fundrecs_shipper >/dev/null 2>&1 || fail "man fundrecs_shipper: no page"
man -w 7 fundrecs_decoder >/dev/null 2>&1 || fail "man 7 fundrecs_decoder: no page"
ok "man fundrecs_shipper, man 7 fundrecs_decoder"

echo "== smoke test on a throwaway cluster"
chown postgres "$work"
runuser -u postgres -- "$bin/initdb" -D "$work/data" -A trust >/dev/null
cat "$top/test/fundrecs.conf" >>"$work/data/postgresql.conf"
# The plugin allowed where the server has the setting (Debian's 15.19+).
if runuser -u postgres -- "$bin/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
	echo "output_plugin_libraries = 'pgoutput, test_decoding, fundrecs_decoder'" >>"$work/data/postgresql.conf"
fi
port=$((20000 + RANDOM % 20000))
runuser -u postgres -- "$bin/pg_ctl" -D "$work/data" -o "-p $port -k $work -c listen_addresses=''" \
	-l "$work/server.log" -w start >/dev/null
psql() { runuser -u postgres -- "$bin/psql" -X -q -At -h "$work" -p "$port" -d postgres -v ON_ERROR_STOP=1 "$@"; }
psql -c "CREATE EXTENSION fundrecs" || fail "CREATE EXTENSION fundrecs"
[ "$(psql -c "SELECT extversion FROM pg_extension WHERE extname = 'fundrecs'")" = "$version" ] ||
	fail "extension version"
ok "CREATE EXTENSION fundrecs ($version)"
psql -c "CREATE TABLE smoke (id int PRIMARY KEY, note text)"
psql -c "SELECT pg_create_logical_replication_slot('smoke', 'fundrecs_decoder')" >/dev/null
psql -c "INSERT INTO smoke VALUES (1, 'from the package')"
end=$(psql -c "SELECT pg_current_wal_lsn()")
row=$(psql -c "SELECT data FROM pg_logical_slot_peek_changes('smoke', NULL, NULL, 'tables', 'public.smoke')" 2>/dev/null)
grep -q '"from the package"' <<<"$row" || fail "the plugin's row: $row"
ok "the plugin emits the row"
shipped=$(runuser -u postgres -- "$bin/fundrecs_shipper" -h "$work" -p "$port" -d postgres -S smoke \
	--target stdout -E "$end" -o tables=public.smoke --allow-no-tables -q 2>/dev/null)
grep -q '"from the package"' <<<"$shipped" || fail "the shipper's output: $shipped"
ok "fundrecs_shipper ships the row"

echo "== dpkg -r, dpkg --purge"
dpkg -r "$pkg" >/dev/null || fail "dpkg -r"
[ ! -e "$bin/fundrecs_shipper" ] || fail "fundrecs_shipper left after dpkg -r"
ok "removed"
getent passwd fundrecs >/dev/null || fail "the fundrecs user went with dpkg -r (only a purge removes it)"
dpkg --purge "$pkg" >/dev/null || fail "dpkg --purge"
! getent passwd fundrecs >/dev/null || fail "the fundrecs user left after dpkg --purge"
[ ! -e /etc/fundrecs ] || fail "/etc/fundrecs left after dpkg --purge"
ok "purged: the fundrecs user and /etc/fundrecs are gone"
echo "test-deb: $passed passed, 0 failed"
