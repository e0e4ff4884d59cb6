-- The plugin option publication_names: tables, actions, rows and columns
-- chosen by publications, as pgoutput chooses them.  Every publication form
-- (FOR TABLE, FOR ALL TABLES, FOR TABLES IN SCHEMA), publish = actions,
-- row filters with each UPDATE transformation, column lists with and
-- without enrichment, partitions with and without
-- publish_via_partition_root, a publication altered mid-stream (taking
-- effect at its position), the initial load, and the errors.
\set SHOW_CONTEXT never
SET timezone = 'UTC';
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Furniture", "price": 150.00}
]');
CREATE SCHEMA pub;
CREATE TABLE pub.items (id int PRIMARY KEY, v int, note text);
-- A row filter on v needs v in the replica identity for updates and deletes.
ALTER TABLE pub.items REPLICA IDENTITY FULL;
CREATE TABLE pub.other (id int PRIMARY KEY, v int);
CREATE TABLE pub.wide (id int PRIMARY KEY, a text, b text, secret text);
CREATE TABLE pub.orders (order_id int PRIMARY KEY, product_id int, customer_id int,
	quantity int, card text);
CREATE TABLE pub.parts (id int, region text, v int, PRIMARY KEY (id, region))
	PARTITION BY LIST (region);
CREATE TABLE pub.parts_eu PARTITION OF pub.parts FOR VALUES IN ('eu');
CREATE TABLE pub.parts_us PARTITION OF pub.parts FOR VALUES IN ('us');
CREATE SCHEMA pubschema;
CREATE TABLE pubschema.t (id int PRIMARY KEY, v int);

CREATE PUBLICATION p_items FOR TABLE pub.items;
CREATE PUBLICATION p_inserts FOR TABLE pub.other WITH (publish = 'insert');
CREATE PUBLICATION p_filter FOR TABLE pub.items WHERE (v > 10);
CREATE PUBLICATION p_cols FOR TABLE pub.wide (id, a);
CREATE PUBLICATION p_orders FOR TABLE pub.orders (order_id, product_id, quantity);
CREATE PUBLICATION p_schema FOR TABLES IN SCHEMA pubschema;
CREATE PUBLICATION p_leaf FOR TABLE pub.parts_eu;
CREATE PUBLICATION p_root FOR TABLE pub.parts WITH (publish_via_partition_root = true);
CREATE PUBLICATION p_all FOR ALL TABLES;
CREATE PUBLICATION p_truncate FOR TABLE pub.other WITH (publish = 'truncate');
CREATE PUBLICATION p_empty;
CREATE PUBLICATION "P Mixed" FOR TABLE pub.other;
CREATE PUBLICATION p_cols2 FOR TABLE pub.wide (id, b);

-- Changes decoded under one set of options, LSNs and times left out.
CREATE FUNCTION pub_changes(slot name, pubs text, extra text[] DEFAULT '{}')
RETURNS SETOF text LANGUAGE sql AS $$
	SELECT data FROM pg_logical_slot_peek_changes(slot, NULL, NULL,
		VARIADIC ARRAY['include_lsn', 'false', 'include_xid', 'false',
			'include_timestamp', 'false', 'publication_names', pubs] || extra)
$$;

SELECT 'init' FROM pg_create_logical_replication_slot('pub_slot', 'fundrecs_decoder');

INSERT INTO pub.items VALUES (1, 5, 'low'), (2, 50, 'high');
INSERT INTO pub.other VALUES (1, 1);
UPDATE pub.other SET v = 2;
DELETE FROM pub.other;
-- The four UPDATE transformations of a row filter (v > 10):
UPDATE pub.items SET v = 20 WHERE id = 1;	-- out to in: an insert
UPDATE pub.items SET v = 60 WHERE id = 2;	-- in to in: an update
UPDATE pub.items SET v = 1 WHERE id = 2;	-- in to out: a delete
UPDATE pub.items SET v = 2 WHERE id = 2;	-- out to out: nothing
DELETE FROM pub.items WHERE id = 1;			-- in: a delete
INSERT INTO pub.wide VALUES (1, 'a1', 'b1', 's1');
UPDATE pub.wide SET b = 'b2', a = 'a2';
INSERT INTO pub.orders VALUES (10, 1, 100, 2, '4111-1111'), (11, 3, 101, 1, '5500-0000');
INSERT INTO pubschema.t VALUES (1, 1);
INSERT INTO pub.parts VALUES (1, 'eu', 1), (2, 'us', 2);
TRUNCATE pub.other;

-- FOR TABLE: every action of pub.items, and nothing else.
SELECT * FROM pub_changes('pub_slot', 'p_items');
-- publish = 'insert': the update and the delete are not published.
SELECT * FROM pub_changes('pub_slot', 'p_inserts');
-- publish = 'truncate' alone.
SELECT * FROM pub_changes('pub_slot', 'p_truncate');
-- The row filter and its transformations.
SELECT * FROM pub_changes('pub_slot', 'p_filter');
-- The same in AWS DMS's format: the transformed operations as DMS writes them.
SELECT * FROM pub_changes('pub_slot', 'p_filter', '{format,dms}');
-- Two publications of one table, one without a filter: no filter.
SELECT * FROM pub_changes('pub_slot', 'p_filter,p_items');
-- A column list: only its columns, in data, old and key.
SELECT * FROM pub_changes('pub_slot', 'p_cols');
-- A column list without the enrichment's columns: still enriched.
SELECT * FROM pub_changes('pub_slot', 'p_orders', '{orders_table,pub.orders}');
-- FOR TABLES IN SCHEMA.
SELECT * FROM pub_changes('pub_slot', 'p_schema');
-- A partition published alone, as itself.
SELECT * FROM pub_changes('pub_slot', 'p_leaf');
-- A partitioned table with publish_via_partition_root: as the root.
SELECT * FROM pub_changes('pub_slot', 'p_root');
-- The root wins over the leaf when both publish it.
SELECT * FROM pub_changes('pub_slot', 'p_leaf,p_root');
-- FOR ALL TABLES: every table, counted by table and op.
SELECT (d::jsonb)->>'table' AS tbl, (d::jsonb)->>'op' AS op, count(*)
FROM pub_changes('pub_slot', 'p_all') d
GROUP BY 1, 2 ORDER BY 1, 2;
-- Quoted names.
SELECT count(*) FROM pub_changes('pub_slot', '"P Mixed"');
SELECT 'skip' FROM pg_logical_slot_get_changes('pub_slot', NULL, NULL, 'publication_names', 'p_items');

-- Altered mid-stream: each change is decoded with the publication as it
-- was then.
INSERT INTO pub.other VALUES (2, 2);
ALTER PUBLICATION p_items ADD TABLE pub.other;
INSERT INTO pub.other VALUES (3, 3);
ALTER PUBLICATION p_items SET (publish = 'insert, delete');
UPDATE pub.other SET v = 30 WHERE id = 3;
DELETE FROM pub.other WHERE id = 3;
ALTER PUBLICATION p_filter SET TABLE pub.items WHERE (v > 100);
INSERT INTO pub.items VALUES (5, 50, 'under the new filter');
INSERT INTO pub.items VALUES (6, 500, 'over it');
ALTER PUBLICATION p_items DROP TABLE pub.other;
INSERT INTO pub.other VALUES (4, 4);
SELECT * FROM pub_changes('pub_slot', 'p_items');
SELECT * FROM pub_changes('pub_slot', 'p_filter');

-- The initial load: the same tables, rows and columns.
SELECT tbl FROM fundrecs.load_tables('{publication_names,p_filter}');
SELECT fundrecs.load_rows('pub.items', '0/0', '{publication_names,p_filter,include_timestamp,false}');
SELECT fundrecs.load_rows('pub.wide', '0/0', '{publication_names,p_cols,include_timestamp,false}');
SELECT tbl FROM fundrecs.load_tables('{publication_names,p_leaf}');
SELECT fundrecs.load_rows('pub.parts', '0/0', '{publication_names,p_leaf,include_timestamp,false}');
SELECT fundrecs.load_rows('pub.parts', '0/0', '{publication_names,p_root,include_timestamp,false}');
SELECT fundrecs.load_rows('pub.other', '0/0', '{publication_names,p_filter}');

-- What the shipper asks before starting.
SELECT fundrecs.option_problems('{publication_names,"p_items,nosuch,p_empty"}');
SELECT fundrecs.option_problems('{publication_names,p_items}');

-- Errors.
SELECT * FROM pub_changes('pub_slot', 'nosuch');
SELECT * FROM pub_changes('pub_slot', 'p_items', '{tables,pub.*}');
SELECT * FROM pub_changes('pub_slot', 'p_items', '{publish_via_partition_root,false}');
SELECT * FROM pub_changes('pub_slot', 'p_items,"unclosed');
SELECT * FROM pub_changes('pub_slot', '');
-- Two column lists for one table.
INSERT INTO pub.wide VALUES (2, 'a', 'b', 's');
SELECT * FROM pub_changes('pub_slot', 'p_cols,p_cols2');
-- A publication created after a change does not exist for that change,
-- as with pgoutput.
CREATE PUBLICATION p_late FOR TABLE pub.other;
SELECT * FROM pub_changes('pub_slot', 'p_late');
DROP PUBLICATION p_late;

SELECT 'stop' FROM pg_drop_replication_slot('pub_slot');
DROP PUBLICATION p_items, p_inserts, p_filter, p_cols, p_cols2, p_orders, p_schema, p_leaf,
	p_root, p_all, p_truncate, p_empty, "P Mixed";
DROP FUNCTION pub_changes(name, text, text[]);
DROP SCHEMA pub, pubschema CASCADE;
