-- Enrichment rules applied by the decoder: a two-level chained lookup,
-- computed columns (NULLs, numerics, text functions), routes, lookup rows
-- read as of the change (also inside an open transaction), rules added and
-- dropped mid-stream, lookup keys of every common type, a lookup renamed
-- and a column dropped while changes are queued, partitioned sources, the
-- DMS format, evaluation errors under on_enrich_error, and load_rows.
\set SHOW_CONTEXT never
SET timezone = 'UTC';
CREATE SCHEMA shop;
CREATE SCHEMA catalog;
CREATE TABLE catalog.vendors (vendor_id int PRIMARY KEY, vendor_name text, country text)
	WITH (user_catalog_table = true);
CREATE TABLE catalog.skus (sku_id bigint PRIMARY KEY, title text, unit_price numeric(10,2),
	vendor_id int, category text) WITH (user_catalog_table = true);
CREATE TABLE shop.line_items (id int PRIMARY KEY, sku_id bigint, qty int, discount numeric);
INSERT INTO catalog.vendors VALUES (10, 'Acme', 'DE'), (20, 'Globex', NULL);
INSERT INTO catalog.skus VALUES (1, 'Lamp', 19.99, 10, 'Home & Garden'),
	(2, 'Desk', 250.00, 20, 'Office'), (3, 'Mystery', NULL, NULL, NULL);

CREATE FUNCTION changes(slot name, VARIADIC opts text[] DEFAULT '{}') RETURNS SETOF text
LANGUAGE sql AS $$
	SELECT data FROM pg_logical_slot_get_changes(slot, NULL, NULL,
		VARIADIC ARRAY['include_lsn', 'false', 'include_xid', 'false',
					   'include_timestamp', 'false', 'tables', 'shop.*'] || opts)
$$;

SELECT fundrecs.add_enrichment(
	source => 'shop.line_items', lookup => 'catalog.skus', join_columns => ARRAY['sku_id'],
	columns => ARRAY['title', 'unit_price', 'vendor_id AS sku_vendor_id', 'category'],
	computed => ARRAY['net = unit_price * qty * (1 - discount)',
					  'label = upper(title) || '' x'' || qty::text'],
	route => 'category', name => 'skus');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.vendors', ARRAY['sku_vendor_id'],
	columns => ARRAY['vendor_name', 'country'], computed => ARRAY['origin = coalesce(country, ''??'')']);

SELECT 'init' FROM pg_create_logical_replication_slot('rules', 'fundrecs_decoder');

-- Chained: line item -> SKU -> vendor; NULLs and misses along the way.
INSERT INTO shop.line_items VALUES (1, 1, 3, 0.1), (2, 2, 1, 0), (3, 3, 2, 0),
	(4, 99, 1, 0), (5, NULL, 1, NULL);
UPDATE shop.line_items SET qty = 4 WHERE id = 1;
DELETE FROM shop.line_items WHERE id = 2;
SELECT * FROM changes('rules');

-- As of the change: a lookup row changed, also inside an open transaction.
BEGIN;
INSERT INTO shop.line_items VALUES (10, 1, 1, 0);
UPDATE catalog.skus SET title = 'Lamp II', unit_price = 25.00 WHERE sku_id = 1;
INSERT INTO shop.line_items VALUES (11, 1, 1, 0);
COMMIT;
INSERT INTO shop.line_items VALUES (12, 1, 1, 0);
UPDATE catalog.vendors SET vendor_name = 'Acme AG' WHERE vendor_id = 10;
INSERT INTO shop.line_items VALUES (13, 1, 1, 0);
SELECT * FROM changes('rules');

-- Rules dropped and added mid-stream take effect at their commit.
INSERT INTO shop.line_items VALUES (20, 2, 1, 0);
SELECT fundrecs.drop_enrichment('vendors');
INSERT INTO shop.line_items VALUES (21, 2, 1, 0);
SELECT fundrecs.drop_enrichment('skus');
INSERT INTO shop.line_items VALUES (22, 2, 1, 0);
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title'], name => 'titles');
INSERT INTO shop.line_items VALUES (23, 2, 1, 0);
-- Within one transaction: the rule is there for the changes after it.
BEGIN;
INSERT INTO shop.line_items VALUES (24, 2, 1, 0);
SELECT fundrecs.drop_enrichment('titles');
INSERT INTO shop.line_items VALUES (25, 2, 1, 0);
COMMIT;
SELECT * FROM changes('rules');

-- Lookup keys: int, bigint, text, uuid, a composite key.
CREATE TABLE catalog.k_text (code text PRIMARY KEY, v text) WITH (user_catalog_table = true);
CREATE TABLE catalog.k_uuid (id uuid PRIMARY KEY, v text) WITH (user_catalog_table = true);
CREATE TABLE catalog.k_pair (region text, n int, v text, PRIMARY KEY (region, n))
	WITH (user_catalog_table = true);
INSERT INTO catalog.k_text VALUES ('a', 'text a'), ('bé', 'text bé');
INSERT INTO catalog.k_uuid VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'uuid v');
INSERT INTO catalog.k_pair VALUES ('eu', 1, 'eu one'), ('us', 1, 'us one');
CREATE TABLE shop.keyed (id int PRIMARY KEY, code text, u uuid, region text, n int);
SELECT fundrecs.add_enrichment('shop.keyed', 'catalog.k_text', ARRAY['code'],
	columns => ARRAY['v AS text_v']);
SELECT fundrecs.add_enrichment('shop.keyed', 'catalog.k_uuid', ARRAY['u'],
	columns => ARRAY['v AS uuid_v']);
SELECT fundrecs.add_enrichment('shop.keyed', 'catalog.k_pair', ARRAY['region', 'n'],
	columns => ARRAY['v AS pair_v'], route => 'region || ''-'' || n::text');
INSERT INTO shop.keyed VALUES (1, 'a', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'eu', 1),
	(2, 'bé', NULL, 'us', 1), (3, 'zz', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 'us', 2),
	(4, NULL, NULL, NULL, NULL);
SELECT * FROM changes('rules');

-- A lookup renamed and a lookup column dropped while changes are queued:
-- queued changes are read as of their position, by attribute number.
INSERT INTO shop.keyed VALUES (5, 'a', NULL, 'eu', 1);
ALTER TABLE catalog.k_text RENAME TO k_text_renamed;
INSERT INTO shop.keyed VALUES (6, 'a', NULL, 'eu', 1);
-- Dropping a column a rule reads is refused (fundrecs' event triggers)...
ALTER TABLE catalog.k_pair DROP COLUMN v;
-- ...unless a superuser forces it: then the rule's rows are errors, not wrong.
ALTER EVENT TRIGGER fundrecs_rule_tables_drop DISABLE;
ALTER EVENT TRIGGER fundrecs_rule_tables_alter DISABLE;
ALTER TABLE catalog.k_pair DROP COLUMN v;
ALTER EVENT TRIGGER fundrecs_rule_tables_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER fundrecs_rule_tables_alter ENABLE ALWAYS;
INSERT INTO shop.keyed VALUES (7, 'a', NULL, 'eu', 1);
SELECT * FROM changes('rules', 'on_enrich_error', 'emit');
SELECT fundrecs.drop_enrichment('k_pair');

-- Evaluation errors: fail names the rule and the change; emit ships the
-- row unenriched with route "_error".
CREATE TABLE shop.ratios (id int PRIMARY KEY, a int, b int);
CREATE TABLE catalog.one (id int PRIMARY KEY, v text) WITH (user_catalog_table = true);
SELECT fundrecs.add_enrichment('shop.ratios', 'catalog.one', ARRAY['id'],
	computed => ARRAY['q = a / b'], route => '''r'' || (a / b)::text');
INSERT INTO shop.ratios VALUES (1, 6, 3);
INSERT INTO shop.ratios VALUES (2, 1, 0);
INSERT INTO shop.ratios VALUES (3, 9, 3);
DO $$
DECLARE
	ctx text;
BEGIN
	PERFORM data FROM pg_logical_slot_peek_changes('rules', NULL, NULL, 'tables', 'shop.ratios');
EXCEPTION WHEN division_by_zero THEN
	GET STACKED DIAGNOSTICS ctx = PG_EXCEPTION_CONTEXT;
	RAISE NOTICE 'division by zero, context: %',
		regexp_replace(split_part(ctx, E'\n', 1), '[0-9A-F]+/[0-9A-F]+', 'X/X');
END
$$;
SELECT * FROM changes('rules', 'on_enrich_error', 'emit');

-- Partitioned sources: the root's rules, for its partitions' rows,
-- whether emitted as the leaf or as the root; the DMS format.
CREATE TABLE shop.sales (id int, region text, sku_id bigint, qty int, PRIMARY KEY (id, region))
	PARTITION BY LIST (region);
CREATE TABLE shop.sales_eu PARTITION OF shop.sales FOR VALUES IN ('eu');
CREATE TABLE shop.sales_us (qty int, sku_id bigint, region text NOT NULL, id int NOT NULL);
ALTER TABLE shop.sales ATTACH PARTITION shop.sales_us FOR VALUES IN ('us');
SELECT fundrecs.add_enrichment('shop.sales', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title', 'unit_price', 'category'], computed => ARRAY['total = unit_price * qty'],
	route => 'category');
SELECT fundrecs.add_enrichment('shop.sales_eu', 'catalog.skus', ARRAY['sku_id']);
INSERT INTO shop.sales VALUES (1, 'eu', 1, 2), (2, 'us', 2, 3);
SELECT data FROM pg_logical_slot_peek_changes('rules', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'shop.*');
SELECT data FROM pg_logical_slot_peek_changes('rules', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'shop.*',
	'publish_via_partition_root', 'false');
SELECT * FROM changes('rules', 'format', 'dms');

-- REPLICA IDENTITY FULL: the old row is enriched too; a plain delete is not.
ALTER TABLE shop.line_items REPLICA IDENTITY FULL;
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title', 'category'], route => 'category');
UPDATE shop.line_items SET sku_id = 2 WHERE id = 1;
DELETE FROM shop.line_items WHERE id = 1;
ALTER TABLE shop.line_items REPLICA IDENTITY DEFAULT;
DELETE FROM shop.line_items WHERE id = 3;
SELECT * FROM changes('rules');

-- The initial load applies the same rules, and checks SELECT on lookups.
SELECT * FROM fundrecs.load_rows('shop.line_items', '0/0',
	ARRAY['tables', 'shop.*', 'include_timestamp', 'false', 'include_xid', 'false']) ORDER BY 1;
SELECT * FROM fundrecs.load_rows('shop.sales', '0/0',
	ARRAY['tables', 'shop.*', 'include_timestamp', 'false', 'format', 'dms']) ORDER BY 1;
CREATE ROLE rules_loader;
GRANT USAGE ON SCHEMA shop, catalog, fundrecs TO rules_loader;
GRANT SELECT ON shop.line_items TO rules_loader;
SET ROLE rules_loader;
SELECT * FROM fundrecs.load_rows('shop.line_items', '0/0', ARRAY['tables', 'shop.*']);
RESET ROLE;
GRANT SELECT ON catalog.skus TO rules_loader;
SET ROLE rules_loader;
SELECT count(*) FROM fundrecs.load_rows('shop.line_items', '0/0', ARRAY['tables', 'shop.*']);
RESET ROLE;

-- A partition takes its root's rules: none of its own.
SELECT fundrecs.add_enrichment('shop.sales_us', 'catalog.skus', ARRAY['sku_id'], name => 'leaf');

-- "decimal * integer" over a lookup's decimal is computed in integers when
-- exact: the same text numeric_mul gives, for every kind of value
-- (negative, long, NaN, an overflow, NULLs, a column read later).
CREATE TABLE catalog.prices (id int PRIMARY KEY, price numeric) WITH (user_catalog_table = true);
INSERT INTO catalog.prices VALUES (1, 19.99), (2, -1.5), (3, 0.001), (4, 12345678901234567.89),
	(5, 'NaN'), (6, NULL), (7, 92233720368547758.07), (8, 3);
CREATE TABLE shop.qty (id int PRIMARY KEY, price_id int, q bigint);
SELECT fundrecs.add_enrichment('shop.qty', 'catalog.prices', ARRAY['price_id'],
	computed => ARRAY['total = price * q', 'total2 = q * price', 'twice = total2 * 2']);
INSERT INTO shop.qty SELECT p * 10 + n, p, (ARRAY[2, -3, 0, NULL, 9223372036854775807])[n]
  FROM generate_series(1, 9) p, generate_series(1, 5) n;
SELECT count(*) AS rows,
	   count(*) FILTER (WHERE d->>'total' IS NOT DISTINCT FROM (l.price * q.q)::text
						  AND d->>'total2' IS NOT DISTINCT FROM (l.price * q.q)::text
						  AND d->>'twice' IS NOT DISTINCT FROM (l.price * q.q * 2)::text) AS same
  FROM (SELECT c::json->'data' AS d FROM changes('rules') c) c
  JOIN shop.qty q ON q.id = (d->>'id')::int
  LEFT JOIN catalog.prices l ON l.id = q.price_id;

-- The seed's enrichment written as a rule gives the built-in's output,
-- field for field (the table's name aside), and a rule on the orders
-- table itself wins over the built-in enrichment.
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 2, "product_name": "Mouse", "category": "Home Office", "price": 19.99}
]');
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (order_id int PRIMARY KEY, product_id int,
	customer_id int, quantity int);
CREATE TABLE fundrecs_schema.orders_by_rule (LIKE fundrecs_schema.orders INCLUDING ALL);
SELECT fundrecs.add_enrichment('fundrecs_schema.orders_by_rule', 'fundrecs.product_details',
	ARRAY['product_id'], columns => ARRAY['product_name', 'category', 'price'],
	computed => ARRAY['total_price = price * quantity'], route => 'category', name => 'products');
CREATE TEMP TABLE both_ways (t text, n int, data text);
CREATE PROCEDURE on_both(stmt text) LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format(stmt, 'fundrecs_schema.orders');
	EXECUTE format(stmt, 'fundrecs_schema.orders_by_rule');
END
$$;
CALL on_both('INSERT INTO %s VALUES (1, 1, 7, 2), (2, 2, 7, 3), (3, 99, 7, 1), (4, NULL, 7, 1), (5, 1, 7, NULL)');
CALL on_both('UPDATE %s SET quantity = quantity * 10, product_id = 2 WHERE order_id = 1');
CALL on_both('DELETE FROM %s WHERE order_id = 2');
INSERT INTO both_ways
SELECT data::json->>'table', row_number() OVER (PARTITION BY data::json->>'table' ORDER BY ord),
	   replace(data, '"orders_by_rule"', '"orders"')
  FROM pg_logical_slot_get_changes('rules', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'fundrecs_schema.*')
	WITH ORDINALITY AS c(lsn, xid, data, ord);
SELECT t, count(*) FROM both_ways GROUP BY t ORDER BY t;
SELECT a.n, a.data AS built_in, b.data AS by_rule
  FROM both_ways a JOIN both_ways b ON a.n = b.n AND a.t = 'orders' AND b.t = 'orders_by_rule'
 WHERE a.data IS DISTINCT FROM b.data;
SELECT data FROM both_ways WHERE t = 'orders' ORDER BY n;
SELECT fundrecs.add_enrichment('fundrecs_schema.orders', 'catalog.skus', ARRAY['product_id'],
	columns => ARRAY['title']);
SELECT fundrecs.add_enrichment('fundrecs_schema.orders', 'fundrecs.product_details',
	ARRAY['product_id'], columns => ARRAY['product_name AS name']);
INSERT INTO fundrecs_schema.orders VALUES (6, 2, 7, 1);
SELECT data FROM pg_logical_slot_get_changes('rules', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'fundrecs_schema.*');
DROP SCHEMA fundrecs_schema CASCADE;
DROP PROCEDURE on_both(text);
DELETE FROM fundrecs.product_details;

SELECT 'drop' FROM pg_drop_replication_slot('rules');
DROP OWNED BY rules_loader;
DROP ROLE rules_loader;
SELECT fundrecs.drop_enrichment(name, source) FROM fundrecs.enrichment_rules ORDER BY rule_id DESC;
DROP SCHEMA shop, catalog CASCADE;
DROP FUNCTION changes(name, text[]);
