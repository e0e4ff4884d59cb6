-- Values as JSON: numbers exact, specials quoted, text escaped, json
-- embedded, timestamps ISO 8601, bytea as hex, TOAST never a wrong null.
SET timezone = 'America/New_York';
CREATE SCHEMA fundrecs_schema;
SELECT 'init' FROM pg_create_logical_replication_slot('types_slot', 'fundrecs_decoder');

CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE fundrecs_schema.all_types (
	id int PRIMARY KEY,
	i2 smallint, i8 bigint, n numeric, f4 real, f8 double precision,
	b boolean, t text, vc varchar(20), c char(3),
	j json, jb jsonb, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
	iv interval, by bytea, arr int[], u uuid, dom positive_int, e mood, o oid
);
INSERT INTO fundrecs_schema.all_types VALUES (
	1, -32768, 9223372036854775807, 123456789012345678901234567890.123456789, 1.5, 0.1,
	true, 'plain', 'vc', 'ab',
	'{"a": [1, 2,
	  3], "b": "x\ny"}', '{"k": {"nested": [true, null]}}',
	'2026-11-23', '12:34:56.789', '12:34:56+02', '2026-11-23 19:47:49.123456', '2026-11-23 19:47:49.5+01',
	'1 day 02:03:04', '\x00ff10', '{1,2,NULL}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 7, 'happy', 42);
INSERT INTO fundrecs_schema.all_types (id, n, f4, f8) VALUES
	(2, 'NaN', 'Infinity', '-Infinity'),
	(3, 'Infinity', 'NaN', '1e300');
INSERT INTO fundrecs_schema.all_types (id, n, d, ts, tstz) VALUES
	(4, '-Infinity', 'infinity', '-infinity', 'infinity');
INSERT INTO fundrecs_schema.all_types (id) VALUES (5);
SELECT data FROM pg_logical_slot_get_changes('types_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

-- Every emitted row parses as JSON and is on one line.
INSERT INTO fundrecs_schema.all_types (id, t) VALUES (6, E'line\nbreak');
SELECT data::jsonb->'data'->>'t' = E'line\nbreak' AS round_trip,
	   position(E'\n' IN data) = 0 AS one_line
FROM pg_logical_slot_get_changes('types_slot', NULL, NULL);

-- Text and varchar are copied as they are unless a character needs escaping.
INSERT INTO fundrecs_schema.all_types (id, t, vc) VALUES
	(7, E'quote " back \\ tab \t bell \x07 end', 'v"c\'),
	(8, 'été ✓ 𝄞', 'plain');
SELECT data FROM pg_logical_slot_peek_changes('types_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false',
	'tables', 'fundrecs_schema.all_types') WHERE data LIKE '%"op"%';
SELECT (data::jsonb->'data'->>'id')::int AS id,
	   data::jsonb->'data'->>'t' = t AS t_round_trip,
	   data::jsonb->'data'->>'vc' = vc AS vc_round_trip
FROM pg_logical_slot_get_changes('types_slot', NULL, NULL) d
JOIN fundrecs_schema.all_types a ON a.id = (d.data::jsonb->'data'->>'id')::int
WHERE data LIKE '%"op"%' ORDER BY 1;

-- Names with quotes, backslashes, newlines, tabs, control characters, emoji.
CREATE TABLE fundrecs_schema."we""ird\tab" (
	"id ""quoted""" int PRIMARY KEY,
	"new
line" text,
	"tab	bed" text,
	"emoji 🚀" text
);
INSERT INTO fundrecs_schema."we""ird\tab" VALUES
	(1, E'a\\b"c', E'tab\there\u0001\u001f', '🚀 naïve 日本');
SELECT data FROM pg_logical_slot_get_changes('types_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

-- TOAST: an unchanged out-of-line value is named, not emitted as null.
CREATE TABLE fundrecs_schema.docs (id int PRIMARY KEY, body text, note text);
ALTER TABLE fundrecs_schema.docs ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO fundrecs_schema.docs VALUES (1, repeat('x', 10000), 'first');
UPDATE fundrecs_schema.docs SET note = 'second' WHERE id = 1;
UPDATE fundrecs_schema.docs SET body = repeat('y', 9000), note = 'third' WHERE id = 1;
SELECT j->>'op' AS op, j->'data'->>'note' AS note,
	   length(j->'data'->>'body') AS body_length,
	   j->'data' ? 'body' AS has_body, j->'unchanged_toast' AS unchanged_toast
FROM (SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('types_slot', NULL, NULL)) s;

-- format=dms: the same marker beside data and metadata, "unchanged-toast".
UPDATE fundrecs_schema.docs SET note = 'dms' WHERE id = 1;
SELECT j->'metadata'->>'operation' AS op, j->'data' ? 'body' AS has_body,
	   j->'unchanged-toast' AS unchanged_toast, j->'metadata' ? 'unchanged-toast' AS in_metadata
FROM (SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('types_slot', NULL, NULL,
	'format', 'dms')) s;

-- Under REPLICA IDENTITY FULL the old row holds the value itself.
ALTER TABLE fundrecs_schema.docs REPLICA IDENTITY FULL;
UPDATE fundrecs_schema.docs SET note = 'fourth' WHERE id = 1;
SELECT length(j->'old'->>'body') AS old_body_length, j->'data' ? 'body' AS has_body,
	   j->'unchanged_toast' AS unchanged_toast
FROM (SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('types_slot', NULL, NULL)) s;

-- Columns added and dropped while decoding.
ALTER TABLE fundrecs_schema.docs DROP COLUMN note;
ALTER TABLE fundrecs_schema.docs ADD COLUMN added int DEFAULT 5;
INSERT INTO fundrecs_schema.docs VALUES (2, 'short', 6);
SELECT data FROM pg_logical_slot_get_changes('types_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

-- A table without a key has no "key" field.
CREATE TABLE fundrecs_schema.nokey (v text);
INSERT INTO fundrecs_schema.nokey VALUES ('x');
DELETE FROM fundrecs_schema.nokey;
SELECT data FROM pg_logical_slot_get_changes('types_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false');

SELECT pg_drop_replication_slot('types_slot');
DROP SCHEMA fundrecs_schema CASCADE;
DROP DOMAIN positive_int;
DROP TYPE mood;
