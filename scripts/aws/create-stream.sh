#!/usr/bin/env bash
# Creates the Kinesis data stream the shipper writes to.
#   AWS_REGION=eu-west-1 scripts/aws/create-stream.sh STREAM [SHARDS] [--dry-run]
source "$(dirname "$0")/common.sh"
stream=${1:?usage: create-stream.sh STREAM [SHARDS] [--dry-run]}
shards=${2:-2}
[ "$shards" = "--dry-run" ] && shards=2
run aws kinesis create-stream --stream-name "$stream" --shard-count "$shards"
run aws kinesis wait stream-exists --stream-name "$stream"
run aws kinesis describe-stream-summary --stream-name "$stream"
