-- Enrichment columns are resolved once, by attribute number, when decoding
-- starts: rows from before and after a rename are enriched with one
-- configuration.  Rows that cannot be enriched have a defined outcome
-- (on_enrich_error): fail with a clear error, or emit them unenriched with
-- route "_error".  exclude_columns leaves columns out.
\set SHOW_CONTEXT never
SET timezone = 'UTC';
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00}
]');
CREATE SCHEMA ren;
CREATE TABLE ren.orders (order_id int PRIMARY KEY, product_id int, quantity int, note text);
-- Errors come with LSNs: show them without.
CREATE FUNCTION ren_changes(VARIADIC opts text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
	msg text;
	detail text;
	hint text;
BEGIN
	RETURN QUERY SELECT data FROM pg_logical_slot_peek_changes('ren_slot', NULL, NULL,
		VARIADIC array['include_lsn', 'false', 'include_xid', 'false',
			'include_timestamp', 'false', 'tables', 'ren.*', 'orders_table', 'ren.orders'] || opts);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN NEXT 'ERROR: ' || regexp_replace(msg, '[0-9A-F]+/[0-9A-F]+', 'X/X');
	RETURN NEXT 'DETAIL: ' || detail;
	RETURN NEXT 'HINT: ' || hint;
END
$$;

SELECT 'init' FROM pg_create_logical_replication_slot('ren_slot', 'fundrecs_decoder');
INSERT INTO ren.orders VALUES (1, 1, 2, 'before the rename');
ALTER TABLE ren.orders RENAME quantity TO qty;
INSERT INTO ren.orders VALUES (2, 1, 3, 'after the rename');

-- The current name enriches both rows.
SELECT * FROM ren_changes('quantity_column', 'qty');
-- The old name is a clear error when decoding starts.
SELECT * FROM ren_changes(VARIADIC '{}'::text[]);

-- A column that did not exist yet when older rows were written.
ALTER TABLE ren.orders ADD COLUMN units int;
INSERT INTO ren.orders VALUES (3, 1, 0, 'with units', 4);
SELECT * FROM ren_changes('quantity_column', 'units');
SELECT * FROM ren_changes('quantity_column', 'units', 'on_enrich_error', 'emit');
SELECT * FROM ren_changes('quantity_column', 'units', 'on_enrich_error', 'emit', 'format', 'dms');
SELECT * FROM ren_changes('quantity_column', 'units', 'on_enrich_error', 'never');

-- A type that cannot be a quantity.
ALTER TABLE ren.orders ADD COLUMN qtext text;
INSERT INTO ren.orders VALUES (4, 1, 1, 'text quantity', 1, 'many');
SELECT * FROM ren_changes('quantity_column', 'qtext', 'on_enrich_error', 'emit');

-- exclude_columns: a large or private column left out.
SELECT * FROM ren_changes('quantity_column', 'qty',
	'exclude_columns', 'ren.orders.note, ren.orders.qtext');
-- A key column cannot be left out: an error, not silently kept.
SELECT * FROM ren_changes('quantity_column', 'qty',
	'exclude_columns', 'ren.orders.note, ren.orders.order_id');
SELECT * FROM ren_changes('exclude_columns', 'ren.orders');

SELECT pg_drop_replication_slot('ren_slot');
DROP FUNCTION ren_changes(text[]);

-- The built-in rule takes any integer product column and numeric
-- quantities: a bigint beyond the products' integer key, a negative one or
-- a null is a miss (route "uncategorized"), not an error; a domain over an
-- integer is that integer.
CREATE DOMAIN ren.product_ref AS smallint;
CREATE TABLE ren.big_orders (order_id int PRIMARY KEY, product_id bigint, quantity numeric);
CREATE TABLE ren.small_orders (order_id int PRIMARY KEY, product_id ren.product_ref,
	quantity smallint);
SELECT 'init' FROM pg_create_logical_replication_slot('big_slot', 'fundrecs_decoder');
INSERT INTO ren.big_orders VALUES (1, 1, 2.5), (2, 3000000000, 1), (3, -1, 1), (4, NULL, 1),
	(5, 1, NULL);
INSERT INTO ren.small_orders VALUES (1, 1, 3), (2, 2, 3);
SELECT data FROM pg_logical_slot_peek_changes('big_slot', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'ren.big_orders',
	'orders_table', 'ren.big_orders');
SELECT data FROM pg_logical_slot_peek_changes('big_slot', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'ren.small_orders',
	'orders_table', 'ren.small_orders');
SELECT pg_drop_replication_slot('big_slot');
DROP SCHEMA ren CASCADE;
