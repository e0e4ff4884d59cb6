# Shared by the scripts of scripts/aws: argument handling and dry-run.
# DRY_RUN=1 (or --dry-run) prints the AWS CLI commands instead of running them.

set -euo pipefail

DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
	[ "$arg" = "--dry-run" ] && DRY_RUN=1
done

: "${AWS_REGION:=${AWS_DEFAULT_REGION:-}}"
if [ -z "${AWS_REGION}" ]; then
	echo "$(basename "$0"): set AWS_REGION" >&2
	exit 2
fi
export AWS_REGION

# run CMD...: prints it (quoted) in dry-run mode, else runs it.
run() {
	if [ "$DRY_RUN" = 1 ]; then
		printf '%q ' "$@"
		printf '\n'
	else
		"$@"
	fi
}

# The account id, or a placeholder in dry-run mode.
account_id() {
	if [ "$DRY_RUN" = 1 ]; then
		echo 123456789012
	else
		aws sts get-caller-identity --query Account --output text
	fi
}
