-- The DMS-compatible format (plugin option format = dms): each row is a
-- DMS Kinesis record {"data", "before-image", "metadata"}.
SET timezone = 'UTC';
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (order_id int PRIMARY KEY, product_id int,
	customer_id int, quantity int, order_date timestamp);
CREATE TABLE fundrecs_schema.customers (customer_id int PRIMARY KEY,
	customer_name varchar(255), location varchar(255));
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Furniture", "price": 150.00}
]');
SELECT 'init' FROM pg_create_logical_replication_slot('dms_slot', 'fundrecs_decoder');

INSERT INTO fundrecs_schema.orders VALUES (1, 1, 101, 2, '2026-11-23 19:47:49.1');
INSERT INTO fundrecs_schema.customers VALUES (101, 'John "Q" Doe', 'New York, NY');
UPDATE fundrecs_schema.orders SET quantity = 3 WHERE order_id = 1;
UPDATE fundrecs_schema.customers SET customer_id = 102 WHERE customer_id = 101;
DELETE FROM fundrecs_schema.orders WHERE order_id = 1;
TRUNCATE fundrecs_schema.customers;
SELECT data FROM pg_logical_slot_peek_changes('dms_slot', NULL, NULL, 'format', 'dms',
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

-- The metadata fields and value spellings of DMS's Kinesis target: the
-- documented ones are all there; timestamps have six fractional digits.
SELECT j->'metadata'->>'record-type' AS record_type,
	   j->'metadata'->>'operation' AS operation,
	   j->'metadata'->>'partition-key-type' AS partition_key_type,
	   j->'metadata'->>'schema-name' AS schema_name,
	   j->'metadata'->>'table-name' AS table_name,
	   (j->'metadata'->>'transaction-id')::xid = xid AS transaction_id,
	   (j->'metadata'->>'timestamp') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' AS dms_timestamp,
	   (j->'metadata'->>'commit-lsn')::pg_lsn > lsn AS commit_lsn,
	   ARRAY(SELECT jsonb_object_keys(j) ORDER BY 1) AS top_level
FROM (SELECT lsn, xid, data::jsonb AS j
	  FROM pg_logical_slot_peek_changes('dms_slot', NULL, NULL, 'format', 'dms')) s;

-- Field by field against the documentation's insert example: the same
-- metadata keys (plus fundrecs' own lsn, commit-lsn, route, key).
WITH doc(k) AS (VALUES ('timestamp'), ('record-type'), ('operation'),
	('partition-key-type'), ('schema-name'), ('table-name'), ('transaction-id')),
ours AS (
	SELECT jsonb_object_keys((SELECT data::jsonb->'metadata'
		FROM pg_logical_slot_peek_changes('dms_slot', NULL, NULL, 'format', 'dms') LIMIT 1)) AS k)
SELECT (SELECT array_agg(k ORDER BY k) FROM doc) AS documented,
	   (SELECT array_agg(DISTINCT k ORDER BY k) FROM ours WHERE k NOT IN (SELECT k FROM doc)) AS added,
	   (SELECT count(*) FROM doc WHERE k NOT IN (SELECT k FROM ours)) AS missing;

-- REPLICA IDENTITY FULL: a delete carries the whole old row, enriched.
ALTER TABLE fundrecs_schema.orders REPLICA IDENTITY FULL;
INSERT INTO fundrecs_schema.orders VALUES (2, 3, 101, 1, '2026-11-24');
UPDATE fundrecs_schema.orders SET product_id = 1 WHERE order_id = 2;
DELETE FROM fundrecs_schema.orders WHERE order_id = 2;
SELECT data FROM pg_logical_slot_get_changes('dms_slot', NULL, NULL, 'format', 'dms',
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false')
OFFSET 6;

-- The seed Lambda's contract: skip control records, route on table-name,
-- read data.product_id and data.quantity.
INSERT INTO fundrecs_schema.orders VALUES (3, 1, 101, 4, '2026-11-25');
TRUNCATE fundrecs_schema.customers;
SELECT j->'metadata'->>'table-name' AS table_name, (j->'data'->>'product_id')::int AS product_id,
	   (j->'data'->>'quantity')::int AS quantity, j->'data'->>'total_price' AS total_price
FROM (SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('dms_slot', NULL, NULL, 'format', 'dms')) s
WHERE j->'metadata'->>'record-type' <> 'control';

SELECT * FROM pg_logical_slot_peek_changes('dms_slot', NULL, NULL, 'format', 'json');
SELECT pg_drop_replication_slot('dms_slot');
DROP SCHEMA fundrecs_schema CASCADE;
