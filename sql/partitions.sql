-- Partitioned orders: changes of partitions are emitted as the root table
-- (publish_via_partition_root, the default), enriched by the orders_table
-- rules and routed by category, with the root's key and column order; leaf
-- names on request; multi-level partitioning; ATTACH and DETACH PARTITION
-- mid-stream; TRUNCATE; the initial load reads partitioned tables through
-- their root.
\set SHOW_CONTEXT never
SET timezone = 'UTC';
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Furniture", "price": 150.00}
]');
CREATE SCHEMA part;
CREATE TABLE part.orders (
	order_id int,
	product_id int,
	customer_id int,
	quantity int,
	order_date date NOT NULL,
	PRIMARY KEY (order_id, order_date)
) PARTITION BY RANGE (order_date);
CREATE TABLE part.orders_2024 PARTITION OF part.orders
	FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
-- Made apart with its columns in another order, then attached.
CREATE TABLE part.orders_2025 (order_date date NOT NULL, quantity int, order_id int NOT NULL,
	customer_id int, product_id int);
ALTER TABLE part.orders ATTACH PARTITION part.orders_2025
	FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
-- Two levels: 2026 is itself partitioned.
CREATE TABLE part.orders_2026 PARTITION OF part.orders
	FOR VALUES FROM ('2026-01-01') TO ('2027-01-01') PARTITION BY HASH (order_id);
CREATE TABLE part.orders_2026_a PARTITION OF part.orders_2026 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE part.orders_2026_b PARTITION OF part.orders_2026 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE part.customers (customer_id int PRIMARY KEY, name text);

SELECT 'init' FROM pg_create_logical_replication_slot('part_slot', 'fundrecs_decoder');

INSERT INTO part.orders VALUES
	(1, 1, 101, 2, '2024-03-01'), (2, 3, 102, 1, '2025-03-01'),
	(3, 1, 103, 4, '2026-03-01'), (4, 3, 104, 5, '2026-03-02');
-- Within a partition, then one that moves a row to another partition
-- (a delete from the old partition and an insert into the new one).
UPDATE part.orders SET quantity = 3 WHERE order_id = 1;
UPDATE part.orders SET order_date = '2025-06-01' WHERE order_id = 1;
DELETE FROM part.orders WHERE order_id = 3;

-- As the root, enriched: the default.
SELECT data FROM pg_logical_slot_peek_changes('part_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false',
	'tables', 'part.*', 'orders_table', 'part.orders');
-- "tables" names the root.
SELECT count(*) FROM pg_logical_slot_peek_changes('part_slot', NULL, NULL,
	'tables', 'part.orders', 'orders_table', 'part.orders');
-- Leaf names on request, still enriched; "tables" may name the root.
SELECT data FROM pg_logical_slot_get_changes('part_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false',
	'tables', 'part.orders', 'orders_table', 'part.orders',
	'publish_via_partition_root', 'false');

-- DETACH mid-stream: before it, the partition's rows are orders; after it,
-- the table is on its own (not enriched); attached again, orders again.
INSERT INTO part.orders VALUES (10, 1, 101, 1, '2024-05-01');
ALTER TABLE part.orders DETACH PARTITION part.orders_2024;
INSERT INTO part.orders_2024 VALUES (11, 1, 101, 1, '2024-05-02');
ALTER TABLE part.orders ATTACH PARTITION part.orders_2024
	FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO part.orders VALUES (12, 3, 101, 1, '2024-05-03');
-- A renamed root keeps its partitions' rows its own.
ALTER TABLE part.orders RENAME TO orders_all;
INSERT INTO part.orders_all VALUES (13, 3, 101, 1, '2025-05-03');
ALTER TABLE part.orders_all RENAME TO orders;
-- TRUNCATE of one partition names it; of the table, one row.
TRUNCATE part.orders_2025;
TRUNCATE part.orders;
SELECT data FROM pg_logical_slot_get_changes('part_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false',
	'tables', 'part.*', 'orders_table', 'part.orders');

-- The initial load: the partitioned table is listed once, by its root, and
-- read through it.
INSERT INTO part.orders VALUES
	(20, 1, 101, 2, '2024-03-01'), (21, 3, 102, 1, '2025-03-01'),
	(22, 1, 103, 4, '2026-03-01'), (23, 3, 104, 5, '2026-03-02');
INSERT INTO part.customers VALUES (101, 'John');
SELECT tbl FROM fundrecs.load_tables('{tables,part.*}');
SELECT fundrecs.load_rows('part.orders', '0/1',
	'{tables,part.*,orders_table,part.orders,include_timestamp,false}') AS row ORDER BY 1;
SELECT fundrecs.load_rows('part.orders', '0/1',
	'{tables,part.*,orders_table,part.orders,include_timestamp,false,publish_via_partition_root,false}') AS row
ORDER BY 1;

SELECT pg_drop_replication_slot('part_slot');
DROP SCHEMA part CASCADE;
