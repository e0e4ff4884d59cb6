-- The key, old row and DMS record for every replica identity and every
-- operation.  Regressions: a delete under REPLICA IDENTITY NOTHING and a
-- DMS delete with no old row took the server down (no old tuple was
-- logged); an update keeping a TOASTed key emitted "key":{"k":null}.
\set SHOW_CONTEXT never
CREATE SCHEMA ri;
-- (The seed's orders table, so that starting decoding warns of nothing.)
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (order_id int PRIMARY KEY, product_id int, quantity int);
-- DEFAULT with a primary key, and without any key.
CREATE TABLE ri.dflt (id int PRIMARY KEY, v text);
CREATE TABLE ri.nokey (a int, b text);
-- USING INDEX: the key is the identity index, not the primary key.
CREATE TABLE ri.idx (id int PRIMARY KEY, u int NOT NULL, v text);
CREATE UNIQUE INDEX idx_u ON ri.idx (u);
ALTER TABLE ri.idx REPLICA IDENTITY USING INDEX idx_u;
-- FULL with and without a key.
CREATE TABLE ri.full_pk (id int PRIMARY KEY, v text);
ALTER TABLE ri.full_pk REPLICA IDENTITY FULL;
CREATE TABLE ri.full_nokey (a int, b text);
ALTER TABLE ri.full_nokey REPLICA IDENTITY FULL;
-- NOTHING with a primary key: no old row is ever logged.
CREATE TABLE ri.nothing (id int PRIMARY KEY, v text);
ALTER TABLE ri.nothing REPLICA IDENTITY NOTHING;
-- A key stored out of line (TOAST).
CREATE TABLE ri.tk (k text PRIMARY KEY, big text, c text);
ALTER TABLE ri.tk ALTER COLUMN k SET STORAGE EXTERNAL;
CREATE TABLE ri.tk_nothing (k text PRIMARY KEY, big text, c text);
ALTER TABLE ri.tk_nothing ALTER COLUMN k SET STORAGE EXTERNAL;
ALTER TABLE ri.tk_nothing REPLICA IDENTITY NOTHING;

SELECT 'init' FROM pg_create_logical_replication_slot('ri_slot', 'fundrecs_decoder');

-- insert, update of a non-key column, update of the key, delete.
INSERT INTO ri.dflt VALUES (1, 'a');
UPDATE ri.dflt SET v = 'b';
UPDATE ri.dflt SET id = 2;
DELETE FROM ri.dflt;
INSERT INTO ri.nokey VALUES (1, 'a');
UPDATE ri.nokey SET b = 'b';
DELETE FROM ri.nokey;
INSERT INTO ri.idx VALUES (1, 10, 'a');
UPDATE ri.idx SET v = 'b';
UPDATE ri.idx SET u = 11;
DELETE FROM ri.idx;
INSERT INTO ri.full_pk VALUES (1, 'a');
UPDATE ri.full_pk SET v = 'b';
UPDATE ri.full_pk SET id = 2;
DELETE FROM ri.full_pk;
INSERT INTO ri.full_nokey VALUES (1, 'a');
UPDATE ri.full_nokey SET b = 'b';
DELETE FROM ri.full_nokey;
INSERT INTO ri.nothing VALUES (1, 'a');
UPDATE ri.nothing SET v = 'b';
UPDATE ri.nothing SET id = 2;
DELETE FROM ri.nothing;

-- TOASTed key: kept by an update (PostgreSQL logs the old key, since the
-- new row holds only a pointer), changed, and deleted.
INSERT INTO ri.tk VALUES (repeat('1234567890', 200), repeat('x', 2000), NULL);
UPDATE ri.tk SET c = 'changed';
UPDATE ri.tk SET k = repeat('abcdefghij', 200);
DELETE FROM ri.tk;
-- Under NOTHING the old key is not logged: no key rather than a wrong one.
INSERT INTO ri.tk_nothing VALUES (repeat('1234567890', 200), repeat('x', 2000), NULL);
UPDATE ri.tk_nothing SET c = 'changed';
DELETE FROM ri.tk_nothing;

-- Long values shortened for reading: their first 12 characters.
CREATE FUNCTION pg_temp.short(j jsonb) RETURNS text LANGUAGE sql AS $$
	SELECT regexp_replace(j::text, '"([0-9a-z]{12})[0-9a-z]{200,}"', '"\1..."', 'g')
$$;

SELECT pg_temp.short(data::jsonb) FROM pg_logical_slot_peek_changes('ri_slot', NULL, NULL,
	'tables', 'ri.*', 'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

SELECT pg_temp.short(data::jsonb) FROM pg_logical_slot_peek_changes('ri_slot', NULL, NULL,
	'tables', 'ri.*', 'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false',
	'format', 'dms');

-- Packed, the same rows (one message per transaction here).
SELECT count(*) AS rows, count(DISTINCT lsn) AS messages
FROM (SELECT lsn, regexp_split_to_table(data, E'\n') AS line
	  FROM pg_logical_slot_peek_changes('ri_slot', NULL, NULL, 'tables', 'ri.*', 'pack_bytes', '65536')) s;

-- The shipper's partition key source: every change of a keyed table has a
-- key, except the delete and key-keeping update under NOTHING.
SELECT data::jsonb->>'table' AS tbl, data::jsonb->>'op' AS op, data::jsonb ? 'key' AS has_key
FROM pg_logical_slot_get_changes('ri_slot', NULL, NULL, 'tables', 'ri.*')
WHERE data::jsonb->>'table' IN ('nothing', 'tk_nothing');
SELECT pg_drop_replication_slot('ri_slot');
DROP SCHEMA ri CASCADE;
DROP SCHEMA fundrecs_schema CASCADE;
