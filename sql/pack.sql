-- pack_bytes: the rows of one transaction packed into messages of up to
-- pack_bytes, one row per line; the same rows, byte for byte, as one row
-- per message.  A message never holds two transactions' rows; a row of
-- pack_bytes or more goes alone; a pack that reaches the bound exactly is
-- written then.
SET timezone = 'UTC';
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (
	order_id int PRIMARY KEY, product_id int, customer_id int, quantity int, order_date timestamp);
CREATE TABLE fundrecs_schema.p (id int PRIMARY KEY, t text);
SELECT 'init' FROM pg_create_logical_replication_slot('pack_slot', 'fundrecs_decoder');

-- How long is a row with an empty t?  (Then rows can be made to measure.)
INSERT INTO fundrecs_schema.p VALUES (0, '');
-- (Header fields off: their lengths vary.)
SELECT length(data) AS base FROM pg_logical_slot_get_changes('pack_slot', NULL, NULL,
	'include_lsn', 'false', 'include_xid', 'false', 'include_timestamp', 'false') \gset

-- 1. One row alone in its transaction.
INSERT INTO fundrecs_schema.p VALUES (1, 'one');
-- 2. Five rows of 204 bytes: 5 * 204 + 4 newlines = 1024, exactly the bound.
INSERT INTO fundrecs_schema.p SELECT g, repeat('x', 204 - :base - (length(g::text) - 1)) FROM generate_series(2, 6) g;
-- 3. A transaction of many rows, larger than the bound several times.
INSERT INTO fundrecs_schema.p SELECT g, repeat('y', g % 50) FROM generate_series(10, 99) g;
-- 4. A row larger than the bound between small ones (over four times the
--    bound: the buffer it grew is given back at commit, and packing goes on).
BEGIN;
INSERT INTO fundrecs_schema.p VALUES (100, 'small');
INSERT INTO fundrecs_schema.p VALUES (101, repeat('z', 10000));
INSERT INTO fundrecs_schema.p VALUES (102, 'small again');
COMMIT;
-- 5. A transaction whose rows all fit.
UPDATE fundrecs_schema.p SET t = 'u' WHERE id BETWEEN 1 AND 3;
DELETE FROM fundrecs_schema.p WHERE id = 1;

CREATE TEMP TABLE plain AS
SELECT row_number() OVER () AS n, data
FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false');
CREATE TEMP TABLE packed AS
SELECT row_number() OVER () AS n, data
FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false', 'pack_bytes', '1024');

-- The same rows, in the same order, byte for byte.
SELECT (SELECT string_agg(data, E'\n' ORDER BY n) FROM plain) =
	   (SELECT string_agg(data, E'\n' ORDER BY n) FROM packed) AS same_rows,
	   (SELECT count(*) FROM plain) AS rows,
	   (SELECT count(*) FROM packed) AS messages;

-- Each message: its rows and size.
SELECT m.n AS message, count(*) AS rows, length(m.data) AS bytes,
	   min((r.line::jsonb->'key'->>'id')::int) AS first_id,
	   max((r.line::jsonb->'key'->>'id')::int) AS last_id,
	   string_agg(DISTINCT r.line::jsonb->>'op', ',') AS ops
FROM packed m, LATERAL regexp_split_to_table(m.data, E'\n') AS r(line)
GROUP BY m.n, m.data
ORDER BY m.n;

-- With the header fields: a message never holds two transactions, the
-- rows are those of one row per message, and packing is greedy (within a
-- transaction, a message and the next one's first row would not have fit
-- together).
CREATE TEMP TABLE plain_h AS
SELECT row_number() OVER () AS n, data FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL);
CREATE TEMP TABLE packed_h AS
SELECT row_number() OVER () AS n, data FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL,
	'pack_bytes', '1024');
SELECT (SELECT string_agg(data, E'\n' ORDER BY n) FROM plain_h) =
	   (SELECT string_agg(data, E'\n' ORDER BY n) FROM packed_h) AS same_rows,
	   (SELECT count(*) FROM packed_h m WHERE (SELECT count(DISTINCT line::jsonb->>'commit_lsn')
		   FROM regexp_split_to_table(m.data, E'\n') line) <> 1) AS spanning_transactions,
	   (SELECT count(*) FROM packed_h WHERE length(data) > 1024 AND position(E'\n' IN data) > 0) AS over_bound,
	   (SELECT count(*) FROM packed_h a JOIN packed_h b ON b.n = a.n + 1
		WHERE split_part(a.data, E'\n', 1)::jsonb->>'commit_lsn' = split_part(b.data, E'\n', 1)::jsonb->>'commit_lsn'
		  AND length(a.data) + 1 + length(split_part(b.data, E'\n', 1)) <= 1024) AS not_greedy;

-- Invalid values.
SELECT data FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL, 'pack_bytes', '1023');
SELECT data FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL, 'pack_bytes', '67108865');
SELECT data FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL, 'pack_bytes', 'lots');
SELECT data FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL, 'pack_bytes', '-1');
SELECT count(*) AS zero_is_off FROM pg_logical_slot_peek_changes('pack_slot', NULL, NULL, 'pack_bytes', '0');

SELECT pg_drop_replication_slot('pack_slot');
DROP SCHEMA fundrecs_schema CASCADE;
