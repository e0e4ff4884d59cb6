-- Enrichment rules: the SQL interface.  What add_enrichment accepts and
-- records, and what it refuses, with the fix (enrichment_decoding shows
-- the rules applied).
\set SHOW_CONTEXT never
CREATE SCHEMA shop;
CREATE SCHEMA catalog;
CREATE TABLE catalog.vendors (vendor_id int PRIMARY KEY, vendor_name text, country text);
CREATE TABLE catalog.skus (sku_id bigint PRIMARY KEY, title text, unit_price numeric(10,2),
	vendor_id int, category text);
CREATE TABLE catalog.plain (id int PRIMARY KEY, v text);
CREATE TABLE catalog.nokey (id int, v text) WITH (user_catalog_table = true);
ALTER TABLE catalog.skus SET (user_catalog_table = true);
ALTER TABLE catalog.vendors SET (user_catalog_table = true);
CREATE TABLE shop.line_items (id int PRIMARY KEY, sku_id bigint, qty int, discount numeric);

-- A rule, then one chained on a column the first emits.
SELECT fundrecs.add_enrichment(
	source => 'shop.line_items', lookup => 'catalog.skus', join_columns => ARRAY['sku_id'],
	columns => ARRAY['title', 'unit_price', 'vendor_id AS sku_vendor_id', 'category'],
	computed => ARRAY['net = unit_price * qty * (1 - discount)', 'label = upper(title) || '' x'' || qty::text'],
	route => 'category', name => 'skus');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.vendors', ARRAY['sku_vendor_id']);
SELECT name, lookup::regclass, lookup_key, join_refs, out_names, out_attnums, computed_names,
	computed_exprs, route_expr FROM fundrecs.enrichment_rules ORDER BY rule_id;

-- Refused, each with its reason.
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.plain', ARRAY['id']);
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.nokey', ARRAY['id']);
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['qty'], name => 'x');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id', 'qty'], name => 'x');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['nosuch'], name => 'x');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id']);
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title'], name => 'again');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title AS t2'], computed => ARRAY['n = (SELECT 1)'], name => 'x');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title AS t2'], computed => ARRAY['n = now()'], name => 'x');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title AS t2'], computed => ARRAY['n = random()'], name => 'x');
CREATE FUNCTION shop.double(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title AS t2'], computed => ARRAY['n = shop.double(qty)'], name => 'x');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title AS t2'], computed => ARRAY['n qty * 2'], name => 'x');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['title AS t2'], computed => ARRAY['n = nosuch + 1'], name => 'x');
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'],
	columns => ARRAY['nosuch'], name => 'x');
CREATE ROLE rules_stranger;
SET ROLE rules_stranger;
SELECT fundrecs.add_enrichment('shop.line_items', 'catalog.skus', ARRAY['sku_id'], name => 'x');
SELECT fundrecs.drop_enrichment('skus');
RESET ROLE;

-- A table's owner adds and drops its rules without rights on the rules
-- table, given SELECT on the lookup.
CREATE ROLE rules_owner;
GRANT USAGE ON SCHEMA shop, catalog, fundrecs TO rules_owner;
CREATE TABLE shop.mine (id int PRIMARY KEY, sku_id bigint);
ALTER TABLE shop.mine OWNER TO rules_owner;
SET ROLE rules_owner;
SELECT fundrecs.add_enrichment('shop.mine', 'catalog.skus', ARRAY['sku_id'], columns => ARRAY['title']);
SELECT * FROM fundrecs.enrichment_rules;
RESET ROLE;
GRANT SELECT ON catalog.skus TO rules_owner;
SET ROLE rules_owner;
SELECT fundrecs.add_enrichment('shop.mine', 'catalog.skus', ARRAY['sku_id'], columns => ARRAY['title']);
SELECT fundrecs.drop_enrichment('skus', 'shop.mine');
RESET ROLE;
DROP TABLE shop.mine;
DROP OWNED BY rules_owner;
DROP ROLE rules_owner;

-- Dropped by name, or by name and source where it is ambiguous.
CREATE TABLE shop.returns (id int PRIMARY KEY, sku_id bigint);
SELECT fundrecs.add_enrichment('shop.returns', 'catalog.skus', ARRAY['sku_id'], columns => ARRAY['title']);
SELECT fundrecs.drop_enrichment('skus');
SELECT fundrecs.drop_enrichment('skus', 'shop.returns');
SELECT fundrecs.drop_enrichment('vendors');
SELECT fundrecs.drop_enrichment('vendors');
SELECT name FROM fundrecs.enrichment_rules ORDER BY rule_id;
SELECT fundrecs.drop_enrichment('skus');
DROP ROLE rules_stranger;
DROP SCHEMA shop, catalog CASCADE;
