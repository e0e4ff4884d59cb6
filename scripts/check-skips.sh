#!/usr/bin/env bash
# Fails when a prove run skipped a TAP file that test/allowed-skips does not
# allow for this PostgreSQL major: in CI a skipped test is a failure.
#   scripts/check-skips.sh MAJOR OUTPUT...
# Prints each skip, allowed or not; exit 1 on any that is not.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
major=$1
shift
status=0
while IFS= read -r line; do
	file=${line%% *}
	reason=${line#*skipped: }
	if awk -v f="$file" -v m="$major" '!/^#/ && $1 == f && ($2 == m || $2 == "*") { found = 1 } END { exit !found }' \
		"$top/test/allowed-skips"; then
		echo "skip allowed ($major): $file: $reason"
	else
		echo "skip NOT allowed ($major): $file: $reason (test/allowed-skips)"
		status=1
	fi
done < <(grep -h -o -E '^t/[0-9A-Za-z_]+\.pl \.+ skipped: .*' "$@" 2>/dev/null | sed -E 's/ \.+ skipped:/ skipped:/')
exit $status
