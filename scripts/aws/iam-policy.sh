#!/usr/bin/env bash
# Prints (and with --create, creates) the least-privilege IAM policy of the
# shipper: PutRecords, DescribeStreamSummary and ListShards (--aggregate) on one stream;
# PutObject and DeleteObject (the objects of a load done again) under one prefix,
# GetObject on the prefix's owner marker (PREFIX/_fundrecs/), ListBucket limited to
# the prefix (the bucket check, and where each route stands after a restart) and
# GetBucketLocation.
#   AWS_REGION=eu-west-1 scripts/aws/iam-policy.sh STREAM BUCKET PREFIX [--create] [--dry-run]
source "$(dirname "$0")/common.sh"
stream=${1:?usage: iam-policy.sh STREAM BUCKET PREFIX [--create] [--dry-run]}
bucket=${2:?usage: iam-policy.sh STREAM BUCKET PREFIX [--create] [--dry-run]}
prefix=${3:?usage: iam-policy.sh STREAM BUCKET PREFIX [--create] [--dry-run]}
prefix=${prefix%/}
account=$(account_id)
policy=$(cat <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ShipToKinesis",
      "Effect": "Allow",
      "Action": ["kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"],
      "Resource": "arn:aws:kinesis:${AWS_REGION}:${account}:stream/${stream}"
    },
    {
      "Sid": "WriteObjects",
      "Effect": "Allow",
      "Action": ["s3:PutObject", "s3:DeleteObject"],
      "Resource": "arn:aws:s3:::${bucket}/${prefix}/*"
    },
    {
      "Sid": "ReadTheOwnerMarker",
      "Effect": "Allow",
      "Action": ["s3:GetObject"],
      "Resource": "arn:aws:s3:::${bucket}/${prefix}/_fundrecs/*"
    },
    {
      "Sid": "CheckBucket",
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation"],
      "Resource": "arn:aws:s3:::${bucket}"
    },
    {
      "Sid": "ListThePrefix",
      "Effect": "Allow",
      "Action": ["s3:ListBucket"],
      "Resource": "arn:aws:s3:::${bucket}",
      "Condition": {"StringLike": {"s3:prefix": ["${prefix}/*", "${prefix}"]}}
    }
  ]
}
JSON
)
echo "$policy"
for arg in "$@"; do
	if [ "$arg" = "--create" ]; then
		run aws iam create-policy --policy-name "fundrecs-shipper-${stream}" --policy-document "$policy"
	fi
done
