#!/usr/bin/env bash
# make demo: the whole pipeline on a throwaway cluster.
#
#   1. a PostgreSQL 15 cluster in a temporary directory (wal_level=logical,
#      fundrecs_decoder allowed in output_plugin_libraries);
#   2. the seed's schema and sample rows, the fundrecs extension, the seed's
#      product file loaded;
#   3. a local Kinesis emulator (kinesalite) with a stream;
#   4. fundrecs_shipper creating its slot and shipping to the stream;
#   5. the seed's step 8: a few rows inserted (and one updated, one deleted);
#   6. what a consumer reads back from the stream with boto3, and the
#      per-category totals computed from it.
#
# Everything is removed at the end (KEEP=1 keeps the directory and logs).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$($PG_CONFIG --bindir)

echo "== building and installing fundrecs"
make -s PG_CONFIG="$PG_CONFIG" >/dev/null
$sudo make -s PG_CONFIG="$PG_CONFIG" install >/dev/null

demo=$(mktemp -d /tmp/fundrecs-demo.XXXXXX)
if [ "$(id -u)" -eq 0 ]; then
	chown postgres:postgres "$demo"
	as_pg() { runuser -u postgres -- "$@"; }
	dbuser=postgres
else
	as_pg() { "$@"; }
	dbuser=$(id -un)
fi
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kinesalite_pid=""
s3rver_pid=""
shipper_pid=""

cleanup() {
	[ -n "$shipper_pid" ] && kill "$shipper_pid" 2>/dev/null || true
	[ -n "$kinesalite_pid" ] && kill "$kinesalite_pid" 2>/dev/null || true
	[ -n "$s3rver_pid" ] && kill "$s3rver_pid" 2>/dev/null || true
	as_pg "$bindir/pg_ctl" -D "$demo/data" -m fast stop >/dev/null 2>&1 || true
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $demo"
	else
		rm -rf "$demo"
	fi
}
trap cleanup EXIT

echo "== a throwaway cluster in $demo (port $port)"
as_pg "$bindir/initdb" -D "$demo/data" -A trust -U "$dbuser" >/dev/null
cat >>"$demo/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$demo'
wal_level = logical
max_replication_slots = 4
output_plugin_libraries = 'pgoutput, test_decoding, fundrecs_decoder'
CONF
as_pg "$bindir/pg_ctl" -D "$demo/data" -l "$demo/postgresql.log" -w start >/dev/null
cp test/data/product_details.json "$demo/product_details.json"
chmod a+r "$demo/product_details.json"
psql() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$demo" -p "$port" -U "$dbuser" -d postgres "$@"; }

echo "== the seed's schema and sample rows, the extension, the products"
psql <<SQL
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (
	order_id serial PRIMARY KEY,
	product_id int,
	customer_id int,
	quantity int,
	order_date timestamp DEFAULT current_timestamp
);
CREATE TABLE fundrecs_schema.customers (
	customer_id int PRIMARY KEY,
	customer_name varchar(255),
	location varchar(255)
);
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES
	(1, 101, 2), (2, 102, 1), (1, 103, 4), (3, 104, 1), (1, 105, 2), (3, 105, 3);
INSERT INTO fundrecs_schema.customers VALUES
	(101, 'John Doe', 'New York'), (102, 'Jane Smith', 'San Francisco'),
	(103, 'Emily Johnson', 'Los Angeles'), (104, 'Michael Brown', 'Chicago'),
	(105, 'Alice Williams', 'Boston');
CREATE EXTENSION fundrecs;
SELECT fundrecs.load_products_file('$demo/product_details.json') AS products_loaded \gset
\echo products loaded: :products_loaded
SQL

echo "== a local Kinesis emulator (kinesalite on port $kport) and a stream"
test/e2e/node_modules/.bin/kinesalite --port "$kport" --createStreamMs 0 >"$demo/kinesalite.log" 2>&1 &
kinesalite_pid=$!
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break
	sleep 0.1
done
# s3rver knows one key pair, S3RVER/S3RVER; kinesalite takes any.
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
tool() { /usr/bin/python3 test/e2e/kinesis_tool.py --endpoint "http://127.0.0.1:$kport" \
	--access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$@"; }
tool create fundrecs-demo 2 >/dev/null

s3port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "== a local S3 (s3rver on port $s3port) with bucket fundrecs-lake"
mkdir -p "$demo/s3"
test/e2e/node_modules/.bin/s3rver -d "$demo/s3" -p "$s3port" -a 127.0.0.1 \
	--configure-bucket fundrecs-lake --allow-mismatched-signatures --silent >"$demo/s3rver.log" 2>&1 &
s3rver_pid=$!
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$s3port") 2>/dev/null && break
	sleep 0.1
done

echo "== fundrecs_shipper: slot fundrecs_slot -> stream fundrecs-demo and s3://fundrecs-lake/cdc"
"$bindir/fundrecs_shipper" -d "host=$demo port=$port user=$dbuser dbname=postgres" \
	-S fundrecs_slot --create-slot --if-not-exists \
	--target kinesis,s3 --stream fundrecs-demo --endpoint-url "http://127.0.0.1:$kport" \
	--s3-url s3://fundrecs-lake/cdc --s3-endpoint-url "http://127.0.0.1:$s3port" --flush-seconds 1 \
	--linger-ms 20 -s 1 -v >"$demo/shipper.log" 2>&1 &
shipper_pid=$!
for _ in $(seq 1 100); do
	[ "$(psql -Atc "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'fundrecs_slot' AND active")" = 1 ] && break
	sleep 0.1
done

echo "== the seed's step 8: insert a few rows in the source tables"
psql -e <<'SQL'
INSERT INTO fundrecs_schema.customers VALUES (106, 'Grace Hopper', 'Arlington');
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES
	(2, 106, 3), (3, 101, 2), (99, 102, 1);
UPDATE fundrecs_schema.orders SET quantity = 5 WHERE order_id = 1;
DELETE FROM fundrecs_schema.orders WHERE order_id = 4;
SQL
target=$(psql -Atc "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 150); do
	[ "$(psql -Atc "SELECT confirmed_flush_lsn >= '$target' FROM pg_replication_slots WHERE slot_name = 'fundrecs_slot'")" = t ] && break
	sleep 0.1
done
kill -TERM "$shipper_pid"
wait "$shipper_pid" || true
shipper_pid=""
sed 's/^/  /' "$demo/shipper.log"

echo
echo "== what a consumer reads back from Kinesis (boto3 get_records)"
tool read fundrecs-demo --min 17 --timeout 10 | /usr/bin/python3 -c '
import json, sys
from decimal import Decimal
totals = {}
for line in sys.stdin:
    r = json.loads(line)
    row = json.loads(r["data"], parse_float=Decimal)
    print("%s  pk=%s" % (r["shard"], r["pk"]))
    print("  " + r["data"].rstrip("\n"))
    d = row.get("data") or {}
    if row["table"] == "orders" and row["op"] in ("load", "insert", "update"):
        t = totals.setdefault(row["route"], [0, Decimal(0)])
        t[0] += 1
        t[1] += d.get("total_price") or Decimal(0)
print()
print("== enriched order rows per route in the stream (load, insert and update rows)")
print("%-15s %6s %12s" % ("route", "rows", "total_price"))
for route, (n, total) in sorted(totals.items()):
    print("%-15s %6d %12s" % (route, n, total))
'

echo
echo "== the seed's step 7/8: the S3 layout queried like Athena (DuckDB, the Athena views' SQL)"
(cd "$demo/s3" && find fundrecs-lake -name '*._S3rver_object' | sed 's/._S3rver_object$//' | sort | sed 's/^/  s3:\/\//')
/usr/bin/python3 test/e2e/s3_tool.py --endpoint "http://127.0.0.1:$s3port" download --hive-route \
	fundrecs-lake cdc "$demo/lake" >/dev/null
NODE_PATH=test/e2e/node_modules node test/e2e/athena_duckdb.js "$demo/lake" | /usr/bin/python3 -c '
import json, sys
f = json.load(sys.stdin)
print("SELECT route, count(*), sum(total_price) FROM orders_current GROUP BY route;")
print("%-15s %6s %12s" % ("route", "orders", "total_price"))
for r in f["per_route"]:
    print("%-15s %6s %12s" % (r["route"], r["orders"], r["total"] if r["total"] is not None else "-"))
print("customers_current: %s rows; seed views: customers %s, electronics_orders %s, furniture_orders %s"
      % (f["customers_current"], f["seed_views"]["customers"], f["seed_views"]["electronics_orders"],
         f["seed_views"]["furniture_orders"]))
'
echo
echo "== the same from PostgreSQL, for comparison"
psql -c "SELECT coalesce(fundrecs.category_slug(p.category), 'uncategorized') AS route, count(*) AS orders,
	sum(p.price * o.quantity) AS total_price
	FROM fundrecs_schema.orders o LEFT JOIN fundrecs.product_details p USING (product_id)
	GROUP BY 1 ORDER BY 1"
echo
echo "== more throughput: KPL aggregation"
echo "  Add --aggregate to the shipper to pack many rows into each Kinesis record, per shard"
echo "  (consumers must de-aggregate: KCL, Firehose, Lambda with aws-kinesis-agg); bench/aggregate"
echo "  measures it (about 200 rows per record on W1, 51k rows/s into a 16-shard stand-in). See README.md, 'Aggregation'."
