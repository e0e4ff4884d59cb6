-- Maintenance of a lookup table while changes wait in the slot: REINDEX,
-- VACUUM FULL and CLUSTER move its files, and every queued change is still
-- enriched with the lookup's values as of the change (the lookup's key
-- index is read at its current file, as PostgreSQL reads the heap).
-- Expressions that are not one value per row are refused when a rule is
-- added.
\set SHOW_CONTEXT never
CREATE SCHEMA maint;
CREATE TABLE maint.lk (id int PRIMARY KEY, v text) WITH (user_catalog_table = true);
CREATE TABLE maint.src (id int PRIMARY KEY, lk_id int);
INSERT INTO maint.lk SELECT g, 'one-' || g FROM generate_series(1, 200) g;
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk', ARRAY['lk_id'], ARRAY['v'], name => 'lk');
SELECT 'init' FROM pg_create_logical_replication_slot('maint_slot', 'fundrecs_decoder');

CREATE FUNCTION maint_changes(VARIADIC opts text[] DEFAULT '{}') RETURNS SETOF text LANGUAGE sql AS $$
	SELECT data FROM pg_logical_slot_peek_changes('maint_slot', NULL, NULL,
		VARIADIC array['include_lsn', 'false', 'include_xid', 'false',
			'include_timestamp', 'false', 'tables', 'maint.src'] || opts)
$$;

-- Each step: a change queued, the lookup changed after it, then rewritten.
INSERT INTO maint.src VALUES (1, 1);
UPDATE maint.lk SET v = 'two-1' WHERE id = 1;
REINDEX TABLE maint.lk;
INSERT INTO maint.src VALUES (2, 1);
UPDATE maint.lk SET v = 'three-1' WHERE id = 1;
VACUUM FULL maint.lk;
INSERT INTO maint.src VALUES (3, 1);
UPDATE maint.lk SET v = 'four-1' WHERE id = 1;
CLUSTER maint.lk USING lk_pkey;
INSERT INTO maint.src VALUES (4, 1), (5, 150);
UPDATE maint.lk SET v = 'five-1' WHERE id = 1;
REINDEX TABLE maint.lk;
VACUUM FULL maint.lk;

-- one-1, two-1, three-1, four-1, four-1 and one-150: each as of its change.
SELECT * FROM maint_changes();
SELECT * FROM maint_changes('format', 'dms');
-- Decoded again from the start after more rewrites: the same.
VACUUM FULL maint.lk;
REINDEX TABLE maint.lk;
SELECT count(*) FILTER (WHERE data LIKE '%"v":"one-1"%') AS one,
	count(*) FILTER (WHERE data LIKE '%"v":"four-1"%') AS four
	FROM pg_logical_slot_peek_changes('maint_slot', NULL, NULL, 'tables', 'maint.src') t;

-- Expressions: one value per row, parsed as an expression.
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk', ARRAY['lk_id'], ARRAY['v AS v2'],
	computed => ARRAY['x = generate_series(1, 3)'], name => 'srf');
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk', ARRAY['lk_id'], ARRAY['v AS v2'],
	computed => ARRAY['x = count(*)'], name => 'agg');
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk', ARRAY['lk_id'], ARRAY['v AS v2'],
	computed => ARRAY['x = row_number() OVER ()'], name => 'win');
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk', ARRAY['lk_id'], ARRAY['v AS v2'],
	computed => ARRAY['x = 1 FROM pg_class'], name => 'from');
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk', ARRAY['lk_id'], ARRAY['v AS v2'],
	computed => ARRAY['x = 1) FROM pg_class --'], name => 'paste');
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk', ARRAY['lk_id'], ARRAY['v AS v2'],
	computed => ARRAY['x = 1, 2'], name => 'two');
SELECT count(*) FROM fundrecs.enrichment_rules WHERE source = 'maint.src'::regclass;

SELECT 'stop' FROM pg_drop_replication_slot('maint_slot');
DROP SCHEMA maint CASCADE;
DROP FUNCTION maint_changes;
