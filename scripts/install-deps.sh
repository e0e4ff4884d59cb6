#!/usr/bin/env bash
# Installs what fundrecs needs to build, test and demo on Debian 12:
# PostgreSQL 15 and its server headers, libpq, libcurl, OpenSSL, jansson,
# the TAP test modules, wal2json (a benchmark peer), boto3/awscli, promtool
# (prometheus), clang with its sanitizer and libFuzzer runtimes, valgrind and
# the Debian packaging tools (debhelper, pg_buildext, lintian), libfaketime
# (a test server's clock stepped back), Node.js
# and the pinned npm packages of test/e2e (Kinesis and S3 emulators, DuckDB).
# Safe to run again: it installs only what is missing.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
packages=(
	build-essential pkg-config curl ca-certificates
	postgresql-15 postgresql-server-dev-15 postgresql-contrib libpq-dev
	libcurl4-openssl-dev libssl-dev libjansson-dev libcbor-dev libmicrohttpd-dev zlib1g-dev
	libipc-run-perl libjson-pp-perl libcpanel-json-xs-perl
	postgresql-15-wal2json
	python3 python3-boto3 python3-botocore python3-cbor2 awscli
	clang libclang-rt-14-dev valgrind debhelper postgresql-server-dev-all lintian man-db prometheus
	pg-bsd-indent faketime
)
# A machine may have Node.js from elsewhere; only ask Debian for it if absent.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The emulators, pinned by test/e2e/package-lock.json.
if [ ! -x "$top/test/e2e/node_modules/.bin/kinesalite" ] ||
	[ "$top/test/e2e/package-lock.json" -nt "$top/test/e2e/node_modules/.package-lock.json" ]; then
	echo "install-deps: npm install in test/e2e (versions from package-lock.json)"
	(cd "$top/test/e2e" && npm install --no-audit --no-fund --loglevel=error)
fi
