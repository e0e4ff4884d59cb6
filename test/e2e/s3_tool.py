#!/usr/bin/python3
"""S3 with boto3 (a real AWS client), for the tests and the demo.

    s3_tool.py --endpoint URL download BUCKET PREFIX DIRECTORY
    s3_tool.py --endpoint URL list BUCKET PREFIX
    s3_tool.py --endpoint URL put BUCKET KEY TEXT
    s3_tool.py --endpoint URL delete BUCKET KEY

"download" copies every object under PREFIX into DIRECTORY, keeping the
key's path below PREFIX (so route/dt=... become directories).
"""

import argparse
import os

import boto3
from botocore.config import Config


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", default="S3RVER")
    ap.add_argument("--secret-key", default="S3RVER")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download")
    d.add_argument("bucket")
    d.add_argument("prefix")
    d.add_argument("directory")
    d.add_argument("--hive-route", action="store_true",
                   help="name the first directory route=<route>, as Hive partitioning reads it")
    ls = sub.add_parser("list")
    ls.add_argument("bucket")
    ls.add_argument("prefix")
    put = sub.add_parser("put")
    put.add_argument("bucket")
    put.add_argument("key")
    put.add_argument("text")
    rm = sub.add_parser("delete")
    rm.add_argument("bucket")
    rm.add_argument("key")
    args = ap.parse_args()

    s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name=args.region,
                      aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key,
                      config=Config(s3={"addressing_style": "path"}))
    if args.cmd == "put":
        s3.put_object(Bucket=args.bucket, Key=args.key, Body=args.text.encode())
        return
    if args.cmd == "delete":
        s3.delete_object(Bucket=args.bucket, Key=args.key)
        return
    prefix = args.prefix.rstrip("/") + "/"
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    if args.cmd == "list":
        for k in keys:
            print(k)
        return
    for k in keys:
        rel = k[len(prefix):]
        if args.hive_route:
            rel = "route=" + rel
        path = os.path.join(args.directory, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(args.bucket, k, path)
    print(len(keys))


if __name__ == "__main__":
    main()
