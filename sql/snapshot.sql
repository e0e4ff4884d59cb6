-- Products as of each change: the historic snapshot, and the cache that
-- must be exactly as correct as it.
SET timezone = 'UTC';
CREATE EXTENSION dblink;
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (
	order_id int PRIMARY KEY,
	product_id int,
	customer_id int,
	quantity int
);
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Furniture", "price": 150.00}
]');
SELECT 'init' FROM pg_create_logical_replication_slot('snap_slot', 'fundrecs_decoder');

CREATE FUNCTION changes() RETURNS TABLE (op text, order_id int, route text,
	category text, price numeric, quantity int, total_price numeric)
LANGUAGE sql AS $$
	SELECT j->>'op', (j->'key'->>'order_id')::int, j->>'route', j->'data'->>'category',
		   (j->'data'->>'price')::numeric, (j->'data'->>'quantity')::int,
		   (j->'data'->>'total_price')::numeric
	FROM (SELECT data::jsonb AS j
		  FROM pg_logical_slot_get_changes('snap_slot', NULL, NULL,
			   'include_lsn', 'false', 'include_xid', 'false',
			   'include_timestamp', 'false')) s
$$;

-- A price change between transactions: earlier orders keep the old price
-- even though they are decoded after the change was made.
INSERT INTO fundrecs_schema.orders VALUES (1, 1, 1, 2);
UPDATE fundrecs.product_details SET price = 1000.00 WHERE product_id = 1;
INSERT INTO fundrecs_schema.orders VALUES (2, 1, 1, 2);
UPDATE fundrecs.product_details SET price = 1100.00 WHERE product_id = 1;
INSERT INTO fundrecs_schema.orders VALUES (3, 1, 1, 2);
SELECT * FROM changes();

-- A price change inside a transaction: changes before it see the old price,
-- changes after it the new one.
BEGIN;
INSERT INTO fundrecs_schema.orders VALUES (4, 1, 1, 1);
UPDATE fundrecs.product_details SET price = 1300.00 WHERE product_id = 1;
INSERT INTO fundrecs_schema.orders VALUES (5, 1, 1, 1);
UPDATE fundrecs.product_details SET category = 'Office Furniture' WHERE product_id = 1;
INSERT INTO fundrecs_schema.orders VALUES (6, 1, 1, 1);
COMMIT;
INSERT INTO fundrecs_schema.orders VALUES (7, 1, 1, 1);
SELECT * FROM changes();

-- Interleaved: another session inserts an order, then this session changes
-- the price and commits, then the other session commits.  The order was made
-- before the price change, so it keeps the old price although its
-- transaction is decoded after it; orders made after the change get the new.
SELECT dblink_connect('other', format('host=%s port=%s dbname=%s',
	split_part(current_setting('unix_socket_directories'), ',', 1),
	current_setting('port'), current_database()));
INSERT INTO fundrecs_schema.orders VALUES (10, 3, 1, 1);  -- warms the cache
SELECT dblink_exec('other', 'BEGIN');
SELECT dblink_exec('other', 'INSERT INTO fundrecs_schema.orders VALUES (11, 3, 1, 2)');
UPDATE fundrecs.product_details SET price = 175.00 WHERE product_id = 3;
SELECT dblink_exec('other', 'INSERT INTO fundrecs_schema.orders VALUES (12, 3, 1, 2)');
INSERT INTO fundrecs_schema.orders VALUES (13, 3, 1, 1);
SELECT dblink_exec('other', 'COMMIT');
INSERT INTO fundrecs_schema.orders VALUES (14, 3, 1, 1);
SELECT * FROM changes();

-- The other way round: the price change is in flight while orders commit.
SELECT dblink_exec('other', 'BEGIN');
SELECT dblink_exec('other', 'UPDATE fundrecs.product_details SET price = 200.00 WHERE product_id = 3');
INSERT INTO fundrecs_schema.orders VALUES (20, 3, 1, 1);
SELECT dblink_exec('other', 'COMMIT');
INSERT INTO fundrecs_schema.orders VALUES (21, 3, 1, 1);
SELECT * FROM changes();

-- Reloading the products and deleting one: orders after it are uncategorized.
SELECT fundrecs.load_products('[{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 999.99}]');
INSERT INTO fundrecs_schema.orders VALUES (30, 1, 1, 3), (31, 3, 1, 1);
SELECT * FROM changes();

-- A new decoding session over old changes looks them up as of then too.
INSERT INTO fundrecs_schema.orders VALUES (40, 1, 1, 1);
UPDATE fundrecs.product_details SET price = 1.00 WHERE product_id = 1;
INSERT INTO fundrecs_schema.orders VALUES (41, 1, 1, 1);
SELECT data::jsonb->'data'->>'price' AS price
FROM pg_logical_slot_peek_changes('snap_slot', NULL, NULL);
SELECT * FROM changes();

SELECT dblink_disconnect('other');
SELECT pg_drop_replication_slot('snap_slot');
DROP FUNCTION changes();
DROP SCHEMA fundrecs_schema CASCADE;
DROP EXTENSION dblink;
