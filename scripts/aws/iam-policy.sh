#!/usr/bin/env bash
# Prints (and with --create, creates) the least-privilege IAM policy of the
# shipper: PutRecords, DescribeStreamSummary and ListShards (--aggregate) on one stream, PutObject
# under one prefix and ListBucket/GetBucketLocation for the bucket check.
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
      "Action": ["s3:PutObject"],
      "Resource": "arn:aws:s3:::${bucket}/${prefix}/*"
    },
    {
      "Sid": "CheckBucket",
      "Effect": "Allow",
      "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
      "Resource": "arn:aws:s3:::${bucket}"
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
