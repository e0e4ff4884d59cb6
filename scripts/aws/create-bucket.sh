#!/usr/bin/env bash
# Creates the S3 bucket for --target s3 (or for Firehose), private and
# encrypted, with old noncurrent versions expired.
#   AWS_REGION=eu-west-1 scripts/aws/create-bucket.sh BUCKET [--dry-run]
source "$(dirname "$0")/common.sh"
bucket=${1:?usage: create-bucket.sh BUCKET [--dry-run]}
if [ "$AWS_REGION" = us-east-1 ]; then
	run aws s3api create-bucket --bucket "$bucket"
else
	run aws s3api create-bucket --bucket "$bucket" \
		--create-bucket-configuration "LocationConstraint=$AWS_REGION"
fi
run aws s3api put-public-access-block --bucket "$bucket" --public-access-block-configuration \
	BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
run aws s3api put-bucket-encryption --bucket "$bucket" --server-side-encryption-configuration \
	'{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'
