-- Every operation on the seed's tables, enrichment, routes and filtering.
\set SHOW_CONTEXT never
SET timezone = 'UTC';
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
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 2, "product_name": "Phone", "category": "Electronics", "price": 800.00},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Furniture", "price": 150.00},
	{"product_id": 4, "product_name": "Lamp", "category": "Home Office", "price": 19.99}
]');

SELECT 'init' FROM pg_create_logical_replication_slot('regression_slot', 'fundrecs_decoder');

-- The seed's sample rows (step 3), one transaction per table.
INSERT INTO fundrecs_schema.customers VALUES
	(101, 'John Doe', 'New York'), (102, 'Jane Smith', 'San Francisco'),
	(103, 'Emily Johnson', 'Los Angeles'), (104, 'Michael Brown', 'Chicago'),
	(105, 'Alice Williams', 'Boston');
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity, order_date) VALUES
	(1, 101, 2, '2026-11-23 19:47:49.1'), (2, 102, 1, '2026-11-23 19:47:50'),
	(1, 103, 4, '2026-11-23 19:47:51'), (3, 104, 1, '2026-11-23 19:47:52'),
	(1, 105, 2, '2026-11-23 19:47:53'), (3, 105, 3, '2026-11-23 19:47:54');

-- Totals for several quantities, a fractional price, and a zero quantity.
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity, order_date) VALUES
	(4, 101, 3, '2026-11-24'), (4, 101, 0, '2026-11-24'), (4, 101, 1000000, '2026-11-24'),
	(4, 101, -3, '2026-11-24'), (1, 101, 2147483647, '2026-11-24');

-- Unknown product, NULL product_id, NULL quantity: never dropped.
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity, order_date) VALUES
	(99, 101, 1, '2026-11-25'), (NULL, 101, 1, '2026-11-25'), (2, 101, NULL, '2026-11-25');

-- Update within the same category, then one that moves an order to another category.
UPDATE fundrecs_schema.orders SET quantity = quantity + 1 WHERE order_id = 1;
UPDATE fundrecs_schema.orders SET product_id = 3 WHERE order_id = 2;
-- A key change carries the old key.
UPDATE fundrecs_schema.customers SET customer_id = 106 WHERE customer_id = 105;
UPDATE fundrecs_schema.customers SET location = 'Newark' WHERE customer_id = 101;

-- Deletes under REPLICA IDENTITY DEFAULT: the key only, no route for orders.
DELETE FROM fundrecs_schema.orders WHERE order_id = 3;
DELETE FROM fundrecs_schema.customers WHERE customer_id = 104;

SELECT data FROM pg_logical_slot_get_changes('regression_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

-- REPLICA IDENTITY FULL: whole old rows, deletes routed by the old product.
ALTER TABLE fundrecs_schema.orders REPLICA IDENTITY FULL;
UPDATE fundrecs_schema.orders SET product_id = 1 WHERE order_id = 4;
DELETE FROM fundrecs_schema.orders WHERE order_id = 5;
DELETE FROM fundrecs_schema.orders WHERE order_id = 12;
ALTER TABLE fundrecs_schema.orders REPLICA IDENTITY DEFAULT;
SELECT data FROM pg_logical_slot_get_changes('regression_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

-- A rolled-back transaction and an empty one emit nothing.
BEGIN;
INSERT INTO fundrecs_schema.orders (product_id, customer_id, quantity) VALUES (1, 1, 1);
ROLLBACK;
BEGIN;
COMMIT;
SELECT txid_current() IS NOT NULL AS xid_assigned;
-- A rolled-back subtransaction is left out of its committed transaction.
BEGIN;
INSERT INTO fundrecs_schema.customers VALUES (201, 'kept', 'x');
SAVEPOINT sp;
INSERT INTO fundrecs_schema.customers VALUES (202, 'rolled back', 'x');
ROLLBACK TO SAVEPOINT sp;
COMMIT;
SELECT data FROM pg_logical_slot_get_changes('regression_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

-- TRUNCATE: one message per table; orders have no single route.
TRUNCATE fundrecs_schema.orders, fundrecs_schema.customers;
SELECT data FROM pg_logical_slot_get_changes('regression_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

-- Tables outside the filter are left out; the default is fundrecs_schema.*.
CREATE TABLE public.other (id int PRIMARY KEY, v text);
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int PRIMARY KEY, product_id int, qty numeric);
CREATE TABLE sales.refunds (id int PRIMARY KEY);
INSERT INTO public.other VALUES (1, 'not shipped by default');
INSERT INTO fundrecs_schema.customers VALUES (1, 'a', 'b');
INSERT INTO sales.orders VALUES (1, 2, 1.5);
INSERT INTO sales.refunds VALUES (1);
SELECT data FROM pg_logical_slot_peek_changes('regression_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');
-- An explicit list, a quoted identifier, and other column names for orders.
SELECT data FROM pg_logical_slot_peek_changes('regression_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false',
	'tables', 'public.other, "sales".*', 'orders_table', 'sales.orders',
	'quantity_column', 'qty');
-- Enriching a table whose product column is not there is an error.
SELECT data FROM pg_logical_slot_peek_changes('regression_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false',
	'tables', 'sales.*', 'orders_table', 'sales.orders');
SELECT data FROM pg_logical_slot_peek_changes('regression_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false',
	'tables', 'sales.*', 'orders_table', 'sales.orders', 'quantity_column', 'qty',
	'product_column', 'id_missing');
SELECT count(*) FROM pg_logical_slot_get_changes('regression_slot', NULL, NULL);

-- The position fields, when asked for, are well-formed and consistent.
INSERT INTO fundrecs_schema.customers VALUES (2, 'c', 'd'), (3, 'e', 'f');
WITH rows AS (
	SELECT lsn, xid, data::jsonb AS j
	FROM pg_logical_slot_get_changes('regression_slot', NULL, NULL)
)
SELECT (j->>'lsn')::pg_lsn = lsn AS lsn_is_change_lsn,
	   (j->>'commit_lsn')::pg_lsn > lsn AS commit_after_change,
	   (j->>'xid')::xid = xid AS xid_matches,
	   (j->>'commit_time') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$' AS iso_utc,
	   abs(extract(epoch FROM now() - (j->>'commit_time')::timestamptz)) < 3600 AS recent
FROM rows;

SELECT pg_drop_replication_slot('regression_slot');
DROP TABLE public.other;
DROP SCHEMA sales CASCADE;
DROP SCHEMA fundrecs_schema CASCADE;
