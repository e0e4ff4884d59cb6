-- Backfills (1.8): requests checked and made in commit order, chunks read
-- by key with the plugin's formatting, cancel, and the status view.
SET timezone = 'UTC';
CREATE SCHEMA bf;
CREATE TABLE bf.items (id int PRIMARY KEY, name text, qty int);
INSERT INTO bf.items SELECT g, 'item ' || g, g % 5 FROM generate_series(1, 12) g;
CREATE TABLE bf.pairs (a int, b text, v int, PRIMARY KEY (a, b));
INSERT INTO bf.pairs SELECT g / 3, chr(97 + g % 3), g FROM generate_series(0, 8) g;
CREATE TABLE bf.nokey (id int, v int);
CREATE TABLE bf.nothing (id int PRIMARY KEY);
ALTER TABLE bf.nothing REPLICA IDENTITY NOTHING;
CREATE VIEW bf.items_view AS SELECT * FROM bf.items;

SELECT 'init' FROM pg_create_logical_replication_slot('bf_slot', 'fundrecs_decoder');

-- A request is a row and a transactional message: a rolled-back one never
-- reaches a slot.
BEGIN;
SELECT fundrecs.backfill('bf.items') AS rolled_back_request \gset
ROLLBACK;
SELECT fundrecs.backfill('bf.items', chunk_rows => 5) AS first_request \gset
SELECT fundrecs.backfill('bf.pairs', 4, condition => 'v >= 2 AND b <> ''z''') > :first_request AS queued_after;
SELECT regexp_replace(data, '"(lsn|commit_lsn|xid|commit_time)":("[^"]*"|[0-9]+)', '"\1":_', 'g') AS data
  FROM pg_logical_slot_get_changes('bf_slot', NULL, NULL, 'tables', 'bf.*');
-- For one slot only: it must be a slot of this database.
SELECT fundrecs.backfill('bf.items', slot_name => 'no_such_slot');
SELECT fundrecs.backfill('bf.items', 3, slot_name => 'bf_slot') > :first_request AS for_one_slot;
SELECT "table", slot_name, state, chunks_done, rows_shipped, chunk_rows, condition,
	   requested_by = current_user AS by_me
  FROM fundrecs.backfill_status ORDER BY request_id;

-- What cannot be backfilled is refused when asked.
SELECT fundrecs.backfill('bf.nokey');
SELECT fundrecs.backfill('bf.nothing');
SELECT fundrecs.backfill('bf.items_view');
SELECT fundrecs.backfill('bf.items', 0);
SELECT fundrecs.backfill(NULL);
-- A condition is one expression over the table's columns, nothing else.
SELECT fundrecs.backfill('bf.items', condition => 'qty > 1) OR (true');
SELECT fundrecs.backfill('bf.items', condition => 'qty > 1; DROP TABLE bf.items');
SELECT fundrecs.backfill('bf.items', condition => 'id IN (SELECT 1)');
SELECT fundrecs.backfill('bf.items', condition => 'random() < 0.5');
SELECT fundrecs.backfill('bf.items', condition => 'nosuch > 1');
SELECT fundrecs.backfill('bf.items', condition => 'name');
CREATE FUNCTION bf.f(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
SELECT fundrecs.backfill('bf.items', condition => 'bf.f(id)');

-- Only the table's owner, or a member of fundrecs_backfill, may ask.
CREATE ROLE bf_stranger;
CREATE ROLE bf_owner;
GRANT USAGE ON SCHEMA fundrecs, bf TO bf_stranger, bf_owner;
CREATE TABLE bf.owned (id int PRIMARY KEY);
ALTER TABLE bf.owned OWNER TO bf_owner;
SET ROLE bf_stranger;
SELECT fundrecs.backfill('bf.owned');
SELECT fundrecs.cancel_backfill('bf.owned');
SELECT count(*) FROM fundrecs.backfill_request;
SELECT * FROM fundrecs.backfill_rows('bf.owned', NULL, 5, '0/AB', '{tables,bf.*}');
RESET ROLE;
SET ROLE bf_owner;
SELECT fundrecs.backfill('bf.owned') > 0 AS owner_may;
RESET ROLE;
CREATE ROLE fundrecs_backfill;
GRANT fundrecs_backfill TO bf_stranger;
SET ROLE bf_stranger;
SELECT fundrecs.backfill('bf.owned') > 0 AS member_may;
SELECT fundrecs.cancel_backfill('bf.owned') AS cancelled;
RESET ROLE;
SELECT "table", state, requested_by FROM fundrecs.backfill_status
 WHERE "table" = 'bf.owned' ORDER BY request_id;

-- Chunks: by key, after the last key of the one before, formatted like
-- load rows (op "load") at the position given.
SELECT key, row_json FROM fundrecs.backfill_rows('bf.items', NULL, 5, '0/AB', '{tables,bf.*,include_timestamp,false}');
SELECT key, row_json FROM fundrecs.backfill_rows('bf.items', '{10}', 5, '0/AB', '{tables,bf.*,include_timestamp,false}');
SELECT count(*) FROM fundrecs.backfill_rows('bf.items', '{12}', 5, '0/AB', '{tables,bf.*}');
-- A composite key, compared as a row; a condition.
SELECT key, row_json::jsonb->'data' AS data
  FROM fundrecs.backfill_rows('bf.pairs', '{1,a}', 4, '0/AB', '{tables,bf.*}', 'v <> 5');
-- The condition stands on lines of its own: a trailing comment ends there.
SELECT key FROM fundrecs.backfill_rows('bf.items', '{9}', 5, '0/AB', '{tables,bf.*}', 'qty > 0 --');
-- Parts read side by side: the chunk's bounds, then each part up to its
-- last key (upto_key).
SELECT * FROM fundrecs.backfill_bounds('bf.items', '{3}', 7, 3);
SELECT * FROM fundrecs.backfill_bounds('bf.items', '{8}', 100, 2);
SELECT * FROM fundrecs.backfill_bounds('bf.pairs', '{1,a}', 4, 2, 'v <> 5');
SELECT array_agg(key[1]::int ORDER BY key[1]::int) AS part
  FROM fundrecs.backfill_rows('bf.items', '{6}', 7, '0/AB', '{tables,bf.*}', NULL, '{9}');
SELECT key FROM fundrecs.backfill_rows('bf.pairs', '{1,a}', 4, '0/AB', '{tables,bf.*}', 'v <> 5', '{1,c}');
SELECT * FROM fundrecs.backfill_bounds('bf.items', NULL, 5, 6);
SELECT * FROM fundrecs.backfill_bounds('bf.items', '{1,2}', 5, 2);
SELECT * FROM fundrecs.backfill_rows('bf.items', NULL, 5, '0/AB', '{tables,bf.*}', NULL, '{1,2}');
-- The DMS format: full-load records.
SELECT row_json FROM fundrecs.backfill_rows('bf.items', '{11}', 5, '0/AB',
	'{tables,bf.*,format,dms,include_timestamp,false}');
-- The slot's options decide: a table they do not capture is an error.
SELECT * FROM fundrecs.backfill_rows('bf.items', NULL, 5, '0/AB', '{tables,public.*}');
SELECT * FROM fundrecs.backfill_rows('bf.items', '{1,2}', 5, '0/AB', '{tables,bf.*}');
SELECT * FROM fundrecs.backfill_rows('bf.items', '{x}', 5, '0/AB', '{tables,bf.*}');

-- A partitioned table is read through its root; its rows are the root's.
CREATE TABLE bf.parted (id int PRIMARY KEY, region text) PARTITION BY RANGE (id);
CREATE TABLE bf.parted_low PARTITION OF bf.parted FOR VALUES FROM (0) TO (100);
CREATE TABLE bf.parted_high (region text, id int NOT NULL);
ALTER TABLE bf.parted ATTACH PARTITION bf.parted_high FOR VALUES FROM (100) TO (1000);
INSERT INTO bf.parted VALUES (5, 'low'), (150, 'high'), (50, 'low');
SELECT key, row_json::jsonb->>'table' AS tbl, row_json::jsonb->'data' AS data
  FROM fundrecs.backfill_rows('bf.parted', NULL, 10, '0/AB', '{tables,bf.*}');
-- Partitions with the root's columns in its order are read as whole rows,
-- each telling its partition; a plan that sorts loses that, and the chunk is
-- read by address instead; a dropped column means reading by address too.
-- The rows are the same every way.
CREATE TABLE bf.even (id int PRIMARY KEY, region text, gone int) PARTITION BY RANGE (id);
CREATE TABLE bf.even_low PARTITION OF bf.even FOR VALUES FROM (0) TO (100);
CREATE TABLE bf.even_high PARTITION OF bf.even FOR VALUES FROM (100) TO (1000);
INSERT INTO bf.even SELECT g * 7, 'r' || g, g FROM generate_series(1, 40) g;
CREATE PUBLICATION bf_even FOR TABLE bf.even;
SELECT (SELECT sum(rows_read) FROM fundrecs.backfill_chunk('bf.even', '{84}', 4, '0/AB',
		'{publication_names,bf_even}')) AS rows_read,
	   r->>'table' AS tbl, r->'data' AS data
  FROM fundrecs.backfill_rows('bf.even', '{84}', 4, '0/AB', '{publication_names,bf_even}'),
	   LATERAL (SELECT row_json::jsonb) AS j (r);
CREATE TEMP TABLE even_by_index AS
  SELECT string_agg(body, E'\n') AS body FROM fundrecs.backfill_chunk('bf.even', '{21}', 30,
		 '0/AB', '{publication_names,bf_even,include_timestamp,false}');
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SET client_min_messages = debug1;
SELECT string_agg(body, E'\n') = (SELECT body FROM even_by_index) AS same_when_sorted,
	   sum(rows_read) AS rows_read
  FROM fundrecs.backfill_chunk('bf.even', '{21}', 30, '0/AB',
		 '{publication_names,bf_even,include_timestamp,false}');
RESET client_min_messages;
RESET enable_indexscan;
RESET enable_bitmapscan;
ALTER TABLE bf.even DROP COLUMN gone;
SELECT string_agg(body, E'\n') = regexp_replace((SELECT body FROM even_by_index), ',"gone":[0-9]+', '', 'g')
	   AS same_without_gone
  FROM fundrecs.backfill_chunk('bf.even', '{21}', 30, '0/AB',
		 '{publication_names,bf_even,include_timestamp,false}');
DROP PUBLICATION bf_even;

-- Publications: their row filters leave rows out (a NULL row_json keeps
-- the chunk's last key), their column lists leave columns out.
CREATE PUBLICATION bf_pub FOR TABLE bf.items (id, name) WHERE (qty > 2);
SELECT key, row_json::jsonb->'data' AS data
  FROM fundrecs.backfill_rows('bf.items', NULL, 6, '0/AB', '{publication_names,bf_pub}');
-- backfill_chunk (1.9), what the shipper reads: the same rows a line each,
-- in batches; rows left out are counted in rows_read, not written.
SELECT (c).rows_read, (c).last_key, (c).bytes_full, (c).body
  FROM (SELECT fundrecs.backfill_chunk('bf.items', NULL, 6, '0/AB',
		'{publication_names,bf_pub,include_timestamp,false}') AS c OFFSET 0) AS s;
DROP PUBLICATION bf_pub;

-- backfill_chunk's rows are backfill_rows', in the same order.
SELECT (SELECT string_agg(body, E'\n') FROM fundrecs.backfill_chunk('bf.items', '{2}', 8, '0/AB',
		  '{tables,bf.*}')) =
	   (SELECT string_agg(row_json, E'\n' ORDER BY n)
		  FROM fundrecs.backfill_rows('bf.items', '{2}', 8, '0/AB', '{tables,bf.*}')
			   WITH ORDINALITY AS r (key, row_json, n)) AS same_rows,
	   (SELECT sum(rows_read) FROM fundrecs.backfill_chunk('bf.pairs', NULL, 100, '0/AB',
		  '{tables,bf.*}', 'v <> 5', '{2,b}')) AS pairs_read;
-- max_bytes ends a chunk early: the batches stop at the first that reaches
-- it, which says bytes_full; the chunk goes on after its last_key.
SELECT rows_read, last_key, bytes_full, array_length(string_to_array(body, E'\n'), 1) AS lines
  FROM fundrecs.backfill_chunk('bf.items', NULL, 100, '0/AB', '{tables,bf.*}', max_bytes => 200);
SELECT rows_read, last_key, bytes_full
  FROM fundrecs.backfill_chunk('bf.items', '{1}', 100, '0/AB', '{tables,bf.*}', max_bytes => 1000);
-- Batches of about 256 kB; a query that stops early closes the chunk's
-- cursor and tables.
CREATE TABLE bf.many (id int PRIMARY KEY, filler text);
INSERT INTO bf.many SELECT g, repeat('x', 200) FROM generate_series(1, 4000) g;
SELECT rows_read, last_key, bytes_full, octet_length(body) BETWEEN 256 * 1024 AND 300 * 1024 AS full_batch
  FROM fundrecs.backfill_chunk('bf.many', '{10}', 3000, '0/AB', '{tables,bf.*,include_timestamp,false}');
SELECT (c).rows_read FROM (SELECT fundrecs.backfill_chunk('bf.many', NULL, 4000, '0/AB',
		'{tables,bf.*,include_timestamp,false}') AS c OFFSET 0) AS s LIMIT 1;
SELECT count(*) AS cursors_left FROM pg_cursors;
DROP TABLE bf.many;
SELECT * FROM fundrecs.backfill_chunk('bf.items', NULL, 5, '0/AB', '{tables,bf.*}', max_bytes => 0);
SELECT * FROM fundrecs.backfill_chunk('bf.items', '{12}', 5, '0/AB', '{tables,bf.*}');

-- Enrichment rules apply, as of the read.
CREATE TABLE bf.kinds (qty int PRIMARY KEY, label text);
ALTER TABLE bf.kinds SET (user_catalog_table = true);
INSERT INTO bf.kinds VALUES (1, 'one'), (2, 'two');
SELECT fundrecs.add_enrichment('bf.items', 'bf.kinds', join_columns => '{qty}', columns => '{label}') AS rule;
SELECT key, row_json::jsonb->'data' AS data
  FROM fundrecs.backfill_rows('bf.items', NULL, 3, '0/AB', '{tables,bf.*}');

-- cancel_backfill: the table's unfinished requests.
SELECT fundrecs.cancel_backfill('bf.items') AS cancelled;
SELECT fundrecs.cancel_backfill('bf.items') AS cancelled_again;
SELECT "table", state FROM fundrecs.backfill_status WHERE "table" = 'bf.items';

-- The extension's bookkeeping is never captured, even FOR ALL TABLES: a
-- request's row and a shipper's progress are not changes to ship; the
-- request's message is.
CREATE PUBLICATION bf_all FOR ALL TABLES;
SELECT 'init' FROM pg_create_logical_replication_slot('bf_all_slot', 'fundrecs_decoder');
SELECT fundrecs.backfill('bf.pairs') AS all_request \gset
INSERT INTO fundrecs.backfill_progress (request_id, slot_name) VALUES (:all_request, 'bf_all_slot');
UPDATE fundrecs.backfill_progress SET state = 'running' WHERE request_id = :all_request;
UPDATE bf.pairs SET v = v + 1 WHERE a = 0 AND b = 'a';
SELECT data::jsonb->>'op' AS op, coalesce(data::jsonb->>'table', data::jsonb->>'prefix') AS what
  FROM pg_logical_slot_get_changes('bf_all_slot', NULL, NULL, 'publication_names', 'bf_all');
SELECT pg_drop_replication_slot('bf_all_slot');
DROP PUBLICATION bf_all;

SELECT pg_drop_replication_slot('bf_slot');
DROP SCHEMA bf CASCADE;
DELETE FROM fundrecs.backfill_request;
REVOKE USAGE ON SCHEMA fundrecs FROM bf_stranger, bf_owner;
DROP ROLE bf_owner;
DROP ROLE bf_stranger;
DROP ROLE fundrecs_backfill;
