#!/bin/bash
# Indents the C sources the way PostgreSQL's pgindent does: pg_bsd_indent
# (Debian package pg-bsd-indent) with pgindent's flags and a typedefs list,
# then pgindent's fix-up of pointer return types ("Type *" on its own line).
#
#   bash scripts/pgindent.sh           indent every .c and .h in place
#   bash scripts/pgindent.sh --check   list the files that would change; exit 1 if any
#   bash scripts/pgindent.sh FILE...   only these files
#
# The typedefs list is made afresh each time from this tree, the server's
# headers (pg_config --includedir-server) and a few system types, so that
# a new struct needs no list to be kept by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pg_bsd_indent >/dev/null; then
	echo "pgindent.sh: pg_bsd_indent not installed (apt-get install pg-bsd-indent)" >&2
	exit 2
fi
check=0
if [ "${1:-}" = "--check" ]; then
	check=1
	shift
fi
if [ $# -gt 0 ]; then
	files=("$@")
else
	mapfile -t files < <(ls ./*.c ./*.h shipper/*.c shipper/*.h shipper/fuzz/*.c shipper/fuzz/*.h bench/*.c 2>/dev/null)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
server=$(${PG_CONFIG:-pg_config} --includedir-server)
{
	# struct and enum typedefs: "} Name;"
	grep -rhoE '^\}\s*[A-Za-z_][A-Za-z0-9_]*\s*;' "$server" ./*.h ./*.c shipper/*.h shipper/*.c bench/*.c |
		sed -E 's/^\}\s*([A-Za-z0-9_]+)\s*;/\1/'
	# one-line typedefs: "typedef ... Name;"
	grep -rhoE '^typedef\s+[^;(]*\b[A-Za-z_][A-Za-z0-9_]*\s*;' "$server" ./*.h ./*.c shipper/*.h shipper/*.c bench/*.c |
		sed -E 's/.*\b([A-Za-z_][A-Za-z0-9_]*)\s*;$/\1/'
	# function pointer typedefs: "typedef ... (*Name) (...)"
	grep -rhoE '^typedef\s+[^;]*\(\s*\*\s*[A-Za-z_][A-Za-z0-9_]*\s*\)' "$server" ./*.h ./*.c shipper/*.h shipper/*.c |
		sed -E 's/.*\(\s*\*\s*([A-Za-z_][A-Za-z0-9_]*)\s*\).*/\1/'
	printf '%s\n' size_t ssize_t uint8_t uint16_t uint32_t uint64_t int8_t int16_t int32_t int64_t \
		FILE pid_t pthread_t pthread_mutex_t pthread_cond_t pthread_once_t time_t useconds_t sigset_t \
		va_list atomic_int socklen_t CURL CURLcode json_t json_error_t z_stream EVP_MD EVP_MD_CTX
} | sort -u >"$tmp/typedefs.list"

changed=0
for f in "${files[@]}"; do
	pg_bsd_indent -bad -bap -bbb -bc -bl -cli1 -cp33 -cdb -nce -d0 -di12 -nfc1 -i4 -l79 -lp -lpl \
		-nip -npro -sac -tpg -ts4 -U"$tmp/typedefs.list" "$f" "$tmp/out" 2>"$tmp/err" || {
		echo "pgindent.sh: pg_bsd_indent failed on $f:" >&2
		cat "$tmp/err" >&2
		exit 1
	}
	# A pointer return type on its own line keeps one space: "Type *".
	perl -pi -e 's/^([A-Za-z_]\w*)\s+\*$/$1 */' "$tmp/out"
	if ! cmp -s "$f" "$tmp/out"; then
		changed=1
		if [ $check = 1 ]; then
			echo "$f"
		else
			cp "$tmp/out" "$f"
		fi
	fi
done
[ $check = 1 ] && exit $changed
exit 0
