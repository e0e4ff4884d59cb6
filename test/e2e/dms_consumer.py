#!/usr/bin/python3
"""A consumer written to the seed Lambda's contract, reading a Kinesis
stream of DMS records with boto3:

- each record's Data is a DMS JSON document (boto3 has base64-decoded it);
- records whose metadata.record-type is "control" are skipped;
- rows are routed on metadata.table-name;
- orders are joined with the product file on data.product_id, and
  total_price = price * data.quantity (here in Decimal, not float);
- orders are grouped by category slug, customers collected as they are.

    dms_consumer.py --endpoint URL STREAM PRODUCT_FILE
    dms_consumer.py --user-records FILE - PRODUCT_FILE

With --user-records, the records are the user records that deagg.js
de-aggregated from a stream of KPL aggregated records (one JSON object a
line, the DMS document in "data"), as a Lambda with aws-kinesis-agg sees
them; records whose sub-record is not in its shard are dropped, as KCL does.

Prints {"orders": {slug: [count, total]}, "customers": n, "skipped": n,
"operations": {...}} as JSON.
"""

import argparse
import json
import re
import sys
from decimal import Decimal

sys.path.insert(0, __import__("os").path.dirname(__file__))
import kinesis_tool  # noqa: E402


def slug(category):
    s = re.sub(r"[^a-z0-9]+", "_", category.strip().lower()).strip("_")
    return s or "uncategorized"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint")
    ap.add_argument("--user-records")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", default="AKIDFUNDRECSTEST")
    ap.add_argument("--secret-key", default="fundrecs/test/secret")
    ap.add_argument("stream")
    ap.add_argument("products")
    args = ap.parse_args()

    products = {p["product_id"]: p for p in json.load(open(args.products), parse_float=Decimal)}
    if args.user_records:
        records = [r for r in map(json.loads, open(args.user_records)) if r["in_shard"]]
    else:
        records = kinesis_tool.read_all(kinesis_tool.client(args), args.stream)
    orders, customers, skipped, operations = {}, 0, 0, {}
    for rec in records:
        doc = json.loads(rec["data"], parse_float=Decimal)
        meta = doc["metadata"]
        if meta["record-type"] == "control":
            skipped += 1
            continue
        operations[meta["operation"]] = operations.get(meta["operation"], 0) + 1
        data = doc["data"]
        if meta["table-name"] == "orders":
            product = products.get(data.get("product_id"))
            if product is None:
                continue
            cat = slug(product["category"])
            entry = orders.setdefault(cat, [0, Decimal(0)])
            entry[0] += 1
            entry[1] += product["price"] * data["quantity"]
        elif meta["table-name"] == "customers":
            customers += 1
    print(json.dumps({"orders": {c: [n, str(t)] for c, (n, t) in sorted(orders.items())},
                      "customers": customers, "skipped": skipped, "operations": operations}))


if __name__ == "__main__":
    main()
