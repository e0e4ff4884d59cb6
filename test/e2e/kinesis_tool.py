#!/usr/bin/python3
"""Creates and reads Kinesis streams with boto3 (a real AWS client).

    kinesis_tool.py --endpoint URL create STREAM [SHARDS]
    kinesis_tool.py --endpoint URL arn STREAM
    kinesis_tool.py --endpoint URL read STREAM [--min N] [--timeout S] [--raw]
    kinesis_tool.py --endpoint URL shards STREAM
    kinesis_tool.py --endpoint URL split STREAM SHARD
    kinesis_tool.py --endpoint URL merge STREAM SHARD ADJACENT_SHARD

"read" prints one JSON object per record, in shard order then sequence
order: {"shard", "seq", "pk", "data"} with data decoded from base64 (boto3
does that) as text; with --raw, "data_b64" instead (aggregated records are
binary).  "shards" prints every shard (open and closed) with its hash key
range; "split" splits a shard at the middle of its range.
"""

import argparse
import base64
import json
import sys
import time

import boto3
from botocore.config import Config


def client(args):
    return boto3.client("kinesis", endpoint_url=args.endpoint, region_name=args.region,
                        aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key,
                        config=Config(retries={"max_attempts": 10, "mode": "standard"}))


def create(args):
    k = client(args)
    k.create_stream(StreamName=args.stream, ShardCount=args.shards)
    for _ in range(200):
        s = k.describe_stream_summary(StreamName=args.stream)["StreamDescriptionSummary"]
        if s["StreamStatus"] == "ACTIVE":
            print(s["StreamARN"])
            return
        time.sleep(0.05)
    sys.exit("stream %s did not become ACTIVE" % args.stream)


def arn(args):
    k = client(args)
    print(k.describe_stream_summary(StreamName=args.stream)["StreamDescriptionSummary"]["StreamARN"])


def read_all(k, stream, raw=False):
    out = []
    shards = k.list_shards(StreamName=stream)["Shards"]
    for shard in sorted(shards, key=lambda s: s["ShardId"]):
        it = k.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            r = k.get_records(ShardIterator=it, Limit=10000)
            for rec in r["Records"]:
                item = {"shard": shard["ShardId"], "seq": rec["SequenceNumber"],
                        "pk": rec["PartitionKey"],
                        "arrival": rec["ApproximateArrivalTimestamp"].timestamp()}
                if raw:
                    item["data_b64"] = base64.b64encode(rec["Data"]).decode("ascii")
                else:
                    item["data"] = rec["Data"].decode("utf-8")
                out.append(item)
            if not r["Records"] and r.get("MillisBehindLatest", 0) == 0:
                break
            it = r.get("NextShardIterator")
    return out


def read(args):
    k = client(args)
    deadline = time.time() + args.timeout
    while True:
        records = read_all(k, args.stream, args.raw)
        if len(records) >= args.min or time.time() > deadline:
            break
        time.sleep(0.2)
    for r in records:
        print(json.dumps(r))


def shards(args):
    k = client(args)
    out, token = [], None
    while True:
        r = k.list_shards(NextToken=token) if token else k.list_shards(StreamName=args.stream)
        out += r["Shards"]
        token = r.get("NextToken")
        if not token:
            break
    print(json.dumps([{"id": s["ShardId"], "start": s["HashKeyRange"]["StartingHashKey"],
                       "end": s["HashKeyRange"]["EndingHashKey"], "parent": s.get("ParentShardId"),
                       "open": "EndingSequenceNumber" not in s["SequenceNumberRange"]} for s in out]))


def wait_active(k, stream):
    for _ in range(400):
        if k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    sys.exit("stream %s did not become ACTIVE" % stream)


def split(args):
    k = client(args)
    shard = k.describe_stream(StreamName=args.stream)["StreamDescription"]["Shards"]
    shard = [s for s in shard if s["ShardId"] == args.shard][0]
    lo = int(shard["HashKeyRange"]["StartingHashKey"])
    hi = int(shard["HashKeyRange"]["EndingHashKey"])
    k.split_shard(StreamName=args.stream, ShardToSplit=args.shard, NewStartingHashKey=str((lo + hi) // 2 + 1))
    wait_active(k, args.stream)


def merge(args):
    k = client(args)
    k.merge_shards(StreamName=args.stream, ShardToMerge=args.shard, AdjacentShardToMerge=args.adjacent)
    wait_active(k, args.stream)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", default="AKIDFUNDRECSTEST")
    ap.add_argument("--secret-key", default="fundrecs/test/secret")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("stream")
    c.add_argument("shards", type=int, nargs="?", default=2)
    a = sub.add_parser("arn")
    a.add_argument("stream")
    r = sub.add_parser("read")
    r.add_argument("stream")
    r.add_argument("--min", type=int, default=0)
    r.add_argument("--timeout", type=float, default=0)
    r.add_argument("--raw", action="store_true")
    sh = sub.add_parser("shards")
    sh.add_argument("stream")
    sp = sub.add_parser("split")
    sp.add_argument("stream")
    sp.add_argument("shard")
    m = sub.add_parser("merge")
    m.add_argument("stream")
    m.add_argument("shard")
    m.add_argument("adjacent")
    args = ap.parse_args()
    {"create": create, "arn": arn, "read": read, "shards": shards, "split": split,
     "merge": merge}[args.cmd](args)


if __name__ == "__main__":
    main()
