#!/usr/bin/env bash
# The Kinesis -> Firehose -> S3 alternative to --target s3: a delivery
# stream reading the shipper's Kinesis stream and writing JSON Lines to S3
# with dynamic partitioning on the row's route (and the day), a newline
# after each record, gzip, and the same layout the Athena DDL projects:
#   s3://BUCKET/PREFIX/<route>/dt=YYYY-MM-DD/...
#   AWS_REGION=eu-west-1 scripts/aws/firehose.sh STREAM BUCKET PREFIX [--dry-run]
source "$(dirname "$0")/common.sh"
stream=${1:?usage: firehose.sh STREAM BUCKET PREFIX [--dry-run]}
bucket=${2:?usage: firehose.sh STREAM BUCKET PREFIX [--dry-run]}
prefix=${3:?usage: firehose.sh STREAM BUCKET PREFIX [--dry-run]}
prefix=${prefix%/}
account=$(account_id)
role="fundrecs-firehose-${stream}"
role_arn="arn:aws:iam::${account}:role/${role}"

run aws iam create-role --role-name "$role" --assume-role-policy-document '{
  "Version": "2012-10-17",
  "Statement": [{"Effect": "Allow", "Principal": {"Service": "firehose.amazonaws.com"},
                 "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": "'"$account"'"}}}]}'
run aws iam put-role-policy --role-name "$role" --policy-name read-stream-write-bucket --policy-document '{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["kinesis:DescribeStream", "kinesis:GetShardIterator", "kinesis:GetRecords", "kinesis:ListShards"],
     "Resource": "arn:aws:kinesis:'"$AWS_REGION"':'"$account"':stream/'"$stream"'"},
    {"Effect": "Allow", "Action": ["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:PutObject"],
     "Resource": ["arn:aws:s3:::'"$bucket"'", "arn:aws:s3:::'"$bucket"'/*"]}]}'

# route: native rows have .route, DMS records .metadata.route; null -> _unrouted.
run aws firehose create-delivery-stream \
	--delivery-stream-name "fundrecs-${stream}-to-s3" \
	--delivery-stream-type KinesisStreamAsSource \
	--kinesis-stream-source-configuration "KinesisStreamARN=arn:aws:kinesis:${AWS_REGION}:${account}:stream/${stream},RoleARN=${role_arn}" \
	--extended-s3-destination-configuration '{
  "RoleARN": "'"$role_arn"'",
  "BucketARN": "arn:aws:s3:::'"$bucket"'",
  "Prefix": "'"$prefix"'/!{partitionKeyFromQuery:route}/dt=!{timestamp:yyyy-MM-dd}/",
  "ErrorOutputPrefix": "'"$prefix"'-errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/",
  "CompressionFormat": "GZIP",
  "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
  "DynamicPartitioningConfiguration": {"Enabled": true},
  "ProcessingConfiguration": {"Enabled": true, "Processors": [
    {"Type": "MetadataExtraction", "Parameters": [
      {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{route: ((.route // .metadata.route) // \"_unrouted\")}"},
      {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
    {"Type": "AppendDelimiterToRecord", "Parameters": [
      {"ParameterName": "Delimiter", "ParameterValue": "\\n"}]}]}
}'
