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

-- What a rule cannot survive is refused, naming the rule and the way out.
CREATE TABLE maint.lk2 (id int PRIMARY KEY, w text) WITH (user_catalog_table = true);
INSERT INTO maint.lk2 VALUES (1, 'w1');
ALTER TABLE maint.src ADD COLUMN lk2_id int;
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk2', ARRAY['lk2_id'], ARRAY['w'], name => 'lk2');
-- a rule chained on a column lk2 emits
CREATE TABLE maint.lk3 (w text PRIMARY KEY, z text) WITH (user_catalog_table = true);
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk3', ARRAY['w'], ARRAY['z'], name => 'lk3');
INSERT INTO maint.src VALUES (6, 1, 1);
DROP TABLE maint.lk2;
DROP TABLE maint.lk2 CASCADE;
TRUNCATE maint.lk2;
TRUNCATE maint.lk, maint.src;
ALTER TABLE maint.lk2 DROP CONSTRAINT lk2_pkey;
ALTER TABLE maint.lk2 SET (user_catalog_table = false);
ALTER TABLE maint.lk2 RESET (user_catalog_table);
ALTER TABLE maint.lk2 DROP COLUMN w;
ALTER TABLE maint.src DROP COLUMN lk2_id;
DROP TRIGGER fundrecs_protect_lookup ON maint.lk2;
ALTER TABLE maint.lk2 DISABLE TRIGGER fundrecs_protect_lookup;
SELECT fundrecs.drop_enrichment('lk2', 'maint.src');
-- What keeps the rule whole is allowed.
ALTER TABLE maint.lk2 ADD COLUMN extra int;
ALTER TABLE maint.lk2 DROP COLUMN extra;
ALTER TABLE maint.lk2 RENAME TO lk2_renamed;
ALTER TABLE maint.lk2_renamed RENAME TO lk2;
DELETE FROM maint.lk2 WHERE id = 99;
-- Dropped in order (the dependent rule first), the guard goes with the last rule.
SELECT fundrecs.drop_enrichment('lk3', 'maint.src');
SELECT fundrecs.drop_enrichment('lk2', 'maint.src');
SELECT tgname FROM pg_trigger WHERE tgrelid IN ('maint.lk2'::regclass, 'maint.lk3'::regclass);
TRUNCATE maint.lk2;
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk2', ARRAY['lk2_id'], ARRAY['w'], name => 'lk2');
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'maint.lk2'::regclass;
INSERT INTO maint.lk2 VALUES (1, 'w1');
INSERT INTO maint.src VALUES (7, 1, 1);

-- A superuser can still force a drop (event triggers off): the queued
-- changes of that rule are its errors, never a wedge of the slot nor
-- silently unenriched rows.  (A slot with changes of the dropped table
-- itself still queued is stopped by PostgreSQL, whatever the plugin: see
-- README, Maintenance of lookup tables.  This slot is made after them.)
CREATE TABLE maint.lk9 (id int PRIMARY KEY, q text) WITH (user_catalog_table = true);
INSERT INTO maint.lk9 VALUES (1, 'q1');
ALTER TABLE maint.src ADD COLUMN lk9_id int;
SELECT fundrecs.add_enrichment('maint.src', 'maint.lk9', ARRAY['lk9_id'], ARRAY['q'], name => 'lk9');
CREATE TABLE maint.other (id int PRIMARY KEY);
SELECT 'init' FROM pg_create_logical_replication_slot('maint_forced', 'fundrecs_decoder');
INSERT INTO maint.src (id, lk_id, lk9_id) VALUES (8, 1, 1);
INSERT INTO maint.other VALUES (1);
ALTER EVENT TRIGGER fundrecs_rule_tables_drop DISABLE;
DROP TABLE maint.lk9;
ALTER EVENT TRIGGER fundrecs_rule_tables_drop ENABLE ALWAYS;
SELECT data FROM pg_logical_slot_peek_changes('maint_forced', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'maint.src, maint.other',
	'on_enrich_error', 'emit');
-- option_problems (the shipper's check before it starts) names the rule.
SELECT unnest(fundrecs.option_problems('{tables,maint.*}'));
-- in fail mode: the rule, the change and how to get past it
CREATE FUNCTION maint_fail() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
	msg text;
	detail text;
	hint text;
BEGIN
	RETURN QUERY SELECT data FROM pg_logical_slot_peek_changes('maint_forced', NULL, NULL,
		'tables', 'maint.src');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN NEXT 'ERROR: ' || regexp_replace(msg, '[0-9A-F]+/[0-9A-F]+', 'X/X');
	RETURN NEXT 'DETAIL: ' || regexp_replace(detail, 'OID [0-9]+', 'OID N');
	RETURN NEXT 'HINT: ' || hint;
END
$$;
SELECT * FROM maint_fail();
-- fundrecs.slot_status shows what stopped the slot (1.7), until the slot
-- decodes past it (here with on_enrich_error=emit, the way out).
SELECT regexp_replace(regexp_replace(enrich_failure, '[0-9A-F]+/[0-9A-F]+', 'X/X', 'g'),
	'OID [0-9]+', 'OID N', 'g') AS enrich_failure
  FROM fundrecs.slot_status WHERE slot_name = 'maint_forced';
SELECT count(*) AS rows_past_it FROM pg_logical_slot_get_changes('maint_forced', NULL, NULL,
	'tables', 'maint.src', 'on_enrich_error', 'emit');
SELECT enrich_failure IS NULL AS failure_cleared
  FROM fundrecs.slot_status WHERE slot_name = 'maint_forced';
-- a name that is not a slot's is no path
SELECT fundrecs.slot_failure('../maint_forced') IS NULL AS not_a_path;
SELECT 'stop' FROM pg_drop_replication_slot('maint_forced');

-- Privileges: a rule reads its lookup with its owner's rights, as of the
-- change.  A REVOKE, or row-level security that applies to the owner, makes
-- the changes after it the rule's errors; RLS is refused when adding.
CREATE ROLE regress_rule_owner;
CREATE TABLE maint.priv_lk (id int PRIMARY KEY, secret text) WITH (user_catalog_table = true);
INSERT INTO maint.priv_lk VALUES (1, 'visible'), (2, 'hidden');
CREATE TABLE maint.priv_src (id int PRIMARY KEY, lk_id int);
ALTER TABLE maint.priv_src OWNER TO regress_rule_owner;
GRANT USAGE ON SCHEMA maint, fundrecs TO regress_rule_owner;
GRANT SELECT ON maint.priv_lk TO regress_rule_owner;
SET ROLE regress_rule_owner;
SELECT fundrecs.add_enrichment('maint.priv_src', 'maint.priv_lk', ARRAY['lk_id'], name => 'priv');
RESET ROLE;
SELECT 'init' FROM pg_create_logical_replication_slot('maint_priv', 'fundrecs_decoder');
INSERT INTO maint.priv_src VALUES (1, 1);
REVOKE SELECT ON maint.priv_lk FROM regress_rule_owner;
INSERT INTO maint.priv_src VALUES (2, 1);
GRANT SELECT ON maint.priv_lk TO regress_rule_owner;
ALTER TABLE maint.priv_lk ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_visible ON maint.priv_lk USING (secret = 'visible');
INSERT INTO maint.priv_src VALUES (3, 2);
ALTER TABLE maint.priv_lk DISABLE ROW LEVEL SECURITY;
INSERT INTO maint.priv_src VALUES (4, 2);
SELECT data FROM pg_logical_slot_get_changes('maint_priv', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'tables', 'maint.priv_src',
	'on_enrich_error', 'emit');
-- added under RLS that applies to the caller: refused
ALTER TABLE maint.priv_lk ENABLE ROW LEVEL SECURITY;
SET ROLE regress_rule_owner;
SELECT fundrecs.add_enrichment('maint.priv_src', 'maint.priv_lk', ARRAY['lk_id'],
	ARRAY['secret AS s2'], name => 'priv2');
RESET ROLE;
SELECT 'stop' FROM pg_drop_replication_slot('maint_priv');
SELECT fundrecs.drop_enrichment('priv', 'maint.priv_src');
DROP TABLE maint.priv_src, maint.priv_lk;
REVOKE ALL ON SCHEMA maint, fundrecs FROM regress_rule_owner;
DROP ROLE regress_rule_owner;

SELECT 'stop' FROM pg_drop_replication_slot('maint_slot');
DROP SCHEMA maint CASCADE;
DROP FUNCTION maint_changes;
DROP FUNCTION maint_fail;
SELECT count(*) AS rules_left FROM fundrecs.enrichment_rules;
