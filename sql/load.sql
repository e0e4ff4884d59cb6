-- The initial load: fundrecs.load_rows() formats existing rows with the
-- plugin's code, op "load", enriched as of the snapshot.
SET timezone = 'UTC';
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (order_id int PRIMARY KEY, product_id int,
	customer_id int, quantity int, order_date timestamp);
CREATE TABLE fundrecs_schema.customers (customer_id int PRIMARY KEY,
	customer_name varchar(255), location varchar(255), notes text);
CREATE TABLE public.elsewhere (id int PRIMARY KEY);
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Home Office", "price": 150.00}
]');
INSERT INTO fundrecs_schema.orders VALUES (1, 1, 101, 2, '2026-11-23 19:47:49.1'),
	(2, 3, 104, 3, '2026-11-23 10:00'), (3, 99, 105, 1, '2026-11-23'), (4, 1, 105, NULL, NULL);
INSERT INTO fundrecs_schema.customers VALUES (101, 'John Doe', 'New York', repeat('long ', 3000)),
	(104, E'Tab\there', 'Chicago', NULL);
ALTER TABLE fundrecs_schema.customers ALTER COLUMN notes SET STORAGE EXTERNAL;
UPDATE fundrecs_schema.customers SET notes = repeat('longer ', 3000) WHERE customer_id = 101;

SELECT tbl, estimated_rows >= 0 AS has_estimate FROM fundrecs.load_tables();
SELECT tbl FROM fundrecs.load_tables('{tables,public.*}');

SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1234ABCD',
	'{include_xid,false,include_timestamp,false}') AS row ORDER BY 1;
SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1234ABCD',
	'{format,dms,include_timestamp,false}') AS row ORDER BY 1;

-- TOASTed values are loaded whole, never as "unchanged".
SELECT j->'key' AS key, length(j->'data'->>'notes') AS notes_length, j ? 'unchanged_toast' AS unchanged
FROM (SELECT fundrecs.load_rows('fundrecs_schema.customers', '0/1', '{}')::jsonb AS j) s ORDER BY 1;

-- A load row and a change row of the same table have the same shape.
SELECT 'init' FROM pg_create_logical_replication_slot('load_slot', 'fundrecs_decoder');
INSERT INTO fundrecs_schema.orders VALUES (5, 3, 101, 1, '2026-11-26');
WITH change AS (
	SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('load_slot', NULL, NULL)),
load AS (
	SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1', '{}')::jsonb AS j)
SELECT (SELECT array_agg(k ORDER BY k) FROM change, jsonb_object_keys(j) k) =
	   (SELECT array_agg(k ORDER BY k) FROM (SELECT j FROM load WHERE j->'key'->>'order_id' = '5') l,
			jsonb_object_keys(j) k) AS same_fields,
	   (SELECT array_agg(k ORDER BY k) FROM change, jsonb_object_keys(j->'data') k) =
	   (SELECT array_agg(k ORDER BY k) FROM (SELECT j FROM load WHERE j->'key'->>'order_id' = '5') l,
			jsonb_object_keys(j->'data') k) AS same_data_fields,
	   (SELECT j->'data' FROM change) = (SELECT j->'data' FROM load WHERE j->'key'->>'order_id' = '5')
		AS same_data,
	   (SELECT j->>'op' FROM load LIMIT 1) AS load_op,
	   (SELECT j->>'xid' FROM load LIMIT 1) IS NULL AS load_xid_null;
SELECT pg_drop_replication_slot('load_slot');

-- Products as of the load's snapshot: a repeatable-read transaction keeps
-- seeing the old price while another session changes it.
CREATE EXTENSION dblink;
SELECT dblink_connect('other', format('host=%s port=%s dbname=%s',
	split_part(current_setting('unix_socket_directories'), ',', 1),
	current_setting('port'), current_database()));
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM fundrecs.product_details;
SELECT dblink_exec('other', 'UPDATE fundrecs.product_details SET price = 1.00 WHERE product_id = 1');
SELECT j->'data'->>'price' AS price FROM (SELECT fundrecs.load_rows('fundrecs_schema.orders',
	'0/1', '{}')::jsonb AS j) s WHERE j->'key'->>'order_id' = '1';
COMMIT;
SELECT j->'data'->>'price' AS price FROM (SELECT fundrecs.load_rows('fundrecs_schema.orders',
	'0/1', '{}')::jsonb AS j) s WHERE j->'key'->>'order_id' = '1';
SELECT dblink_disconnect('other');
DROP EXTENSION dblink;

-- Stopping early (LIMIT) ends the scan cleanly.
SELECT count(*) FROM (SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1', '{}') LIMIT 2) s;

-- Errors.
SELECT fundrecs.load_rows('public.elsewhere', '0/1', '{}');
SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1', '{format}');
SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1', '{format,xml}');
SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1', '{{a,b},{c,d}}');
SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1', ARRAY[NULL, 'x']);
CREATE VIEW fundrecs_schema.v AS SELECT 1 AS x;
SELECT fundrecs.load_rows('fundrecs_schema.v', '0/1', '{}');
CREATE ROLE fundrecs_reader;
GRANT USAGE ON SCHEMA fundrecs, fundrecs_schema TO fundrecs_reader;
SET ROLE fundrecs_reader;
SELECT fundrecs.load_rows('fundrecs_schema.orders', '0/1', '{}');
RESET ROLE;
DROP OWNED BY fundrecs_reader;
DROP ROLE fundrecs_reader;

DROP TABLE public.elsewhere;
DROP SCHEMA fundrecs_schema CASCADE;
