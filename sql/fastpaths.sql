-- The decoder's fast paths against PostgreSQL's own encoders: timestamps
-- written directly (years 1-9999) must read exactly as to_json() writes
-- them, with "Z" for a timestamptz; the rest (infinity, BC, five-digit
-- years) take PostgreSQL's path.  Every escape class of text, 4-byte
-- UTF-8, numerics; products found by index (ids below 2^20) and by hash
-- (above), before and after a price change.
SET timezone = 'Asia/Kathmandu';
CREATE SCHEMA fundrecs_schema;
CREATE TABLE fundrecs_schema.orders (
	order_id int PRIMARY KEY, product_id int, customer_id int, quantity int, order_date timestamp);
CREATE TABLE fundrecs_schema.stamps (id int PRIMARY KEY, ts timestamp, tstz timestamptz);
SELECT 'init' FROM pg_create_logical_replication_slot('fast_slot', 'fundrecs_decoder');

INSERT INTO fundrecs_schema.stamps VALUES
	(1, '2026-11-26 05:21:00', '2026-11-26 05:21:00+00'),
	(2, '2024-02-29 23:59:59.999999', '2024-02-29 23:59:59.999999+05:45'),
	(3, '2000-02-29 00:00:00.000001', '2000-02-29 00:00:00.000001-03:30'),
	(4, '1900-02-28 12:00:00.1', '1900-03-01 00:00:00.1+14'),
	(5, '0001-01-01 00:00:00', '0001-01-01 00:00:00+00'),
	(6, '9999-12-31 23:59:59.99999', '9999-12-31 23:59:59.99999+00'),
	(7, '10000-01-01 00:00:00', '10000-01-01 00:00:00+00'),
	(8, '0001-12-31 23:59:59 BC', '0001-12-31 23:59:59+00 BC'),
	(9, '4713-01-01 00:00:00 BC', '4713-01-01 12:00:00+00 BC'),
	(10, 'infinity', '-infinity'),
	(11, '-infinity', 'infinity'),
	(12, '1970-01-01 00:00:00.5', '1969-12-31 23:59:59.5-00:30'),
	(13, '2026-11-26 05:21:00.120000', '2026-11-26 05:21:00.000100+09'),
	(14, NULL, NULL);

CREATE TEMP TABLE decoded AS
SELECT data::jsonb AS j
FROM pg_logical_slot_peek_changes('fast_slot', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false');

-- What the plugin wrote, and what PostgreSQL writes (in UTC, "+00:00" as "Z").
SET timezone = 'UTC';
SELECT s.id, d.j->'data'->>'ts' AS plugin_ts, d.j->'data'->>'tstz' AS plugin_tstz,
	   (d.j->'data'->'ts') = coalesce(to_jsonb(s.ts), 'null') AS ts_same,
	   (d.j->'data'->>'tstz') IS NOT DISTINCT FROM
		   regexp_replace(to_json(s.tstz)#>>'{}', '\+00:00$', 'Z') AS tstz_same
FROM fundrecs_schema.stamps s JOIN decoded d ON (d.j->'key'->>'id')::int = s.id
ORDER BY s.id;
-- The raw text, byte for byte, for one row.
SELECT data FROM pg_logical_slot_get_changes('fast_slot', NULL, NULL, 'include_lsn', 'false',
	'include_xid', 'false', 'include_timestamp', 'false')
WHERE data LIKE '%"id":2}%';

-- Text: every control character, quote, backslash, DEL, 2-, 3- and 4-byte
-- UTF-8, each alone and in runs of safe bytes.
CREATE TABLE fundrecs_schema.texts (id int PRIMARY KEY, t text);
INSERT INTO fundrecs_schema.texts
SELECT c, 'a' || chr(c) || 'bc' || chr(c) FROM generate_series(1, 127) c;
INSERT INTO fundrecs_schema.texts VALUES
	(200, 'é ñ ü'), (201, '日本語テキスト'), (202, '🚀🎉 emoji 𝄞 and 😀'),
	(203, repeat('safe bytes ', 500) || E'"\\' || repeat('x', 100)), (204, ''), (205, NULL);
SELECT count(*) AS rows,
	   count(*) FILTER (WHERE (d.j->'data'->'t') IS NOT DISTINCT FROM coalesce(to_jsonb(x.t), 'null')) AS same
FROM fundrecs_schema.texts x
JOIN (SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('fast_slot', NULL, NULL)) d
	ON (d.j->'key'->>'id')::int = x.id;

-- Numerics: specials, huge and tiny scales, negative zero scale.
CREATE TABLE fundrecs_schema.nums (id int PRIMARY KEY, n numeric, i2 smallint, i4 int, i8 bigint);
INSERT INTO fundrecs_schema.nums VALUES
	(1, 'NaN', -32768, -2147483648, -9223372036854775808),
	(2, 'Infinity', 32767, 2147483647, 9223372036854775807),
	(3, '-Infinity', 0, 0, 0),
	(4, '1e-1000', -1, -1, -1),
	(5, ('9' || repeat('0', 999))::numeric, 1, 1, 1),
	(6, '-0.000000000000000000001', NULL, NULL, NULL),
	(7, '123456789012345678901234567890.123456789012345678901234567890', 10, 10, 10);
SELECT x.id, length(d.j->'data'->>'n') AS n_length,
	   (d.j->'data'->'n') = CASE WHEN x.n IN ('NaN', 'Infinity', '-Infinity') THEN to_jsonb(x.n::text)
								 ELSE to_jsonb(x.n) END AS n_same,
	   (d.j->'data'->'i2') = coalesce(to_jsonb(x.i2), 'null') AND
	   (d.j->'data'->'i4') = coalesce(to_jsonb(x.i4), 'null') AND
	   (d.j->'data'->'i8') = coalesce(to_jsonb(x.i8), 'null') AS ints_same
FROM fundrecs_schema.nums x
JOIN (SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('fast_slot', NULL, NULL)) d
	ON (d.j->'key'->>'id')::int = x.id
ORDER BY x.id;

-- Products by index and by hash; a price change in between.
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "One", "category": "Low", "price": 1.00},
	{"product_id": 1048575, "product_name": "Last indexed", "category": "Edge", "price": 2.00},
	{"product_id": 1048576, "product_name": "First hashed", "category": "Edge", "price": 3.00},
	{"product_id": 2147483647, "product_name": "Largest", "category": "High", "price": 4.00}
]');
INSERT INTO fundrecs_schema.orders VALUES
	(1, 1, 1, 2, NULL), (2, 1048575, 1, 2, NULL), (3, 1048576, 1, 2, NULL),
	(4, 2147483647, 1, 2, NULL), (5, 1048574, 1, 2, NULL);
UPDATE fundrecs.product_details SET price = price * 10;
INSERT INTO fundrecs_schema.orders VALUES
	(6, 1, 1, 2, NULL), (7, 1048575, 1, 2, NULL), (8, 1048576, 1, 2, NULL),
	(9, 2147483647, 1, 2, NULL);
SELECT j->'data'->>'order_id' AS order_id, j->'data'->>'product_id' AS product_id,
	   j->'data'->>'product_name' AS name, j->'data'->>'price' AS price,
	   j->'data'->>'total_price' AS total, j->>'route' AS route
FROM (SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('fast_slot', NULL, NULL)) s
WHERE j->>'table' = 'orders'
ORDER BY (j->'data'->>'order_id')::int;

-- Tuples are deformed into arrays kept from one change to the next, grown
-- for a wider table: a 100-column row, then a narrower table's update with
-- its whole old row (REPLICA IDENTITY FULL: both arrays in one change),
-- then the wide table again.
SELECT format('CREATE TABLE fundrecs_schema.wide (id int PRIMARY KEY, %s)',
	string_agg(format('c%s int', g), ', ')) FROM generate_series(2, 100) g \gexec
ALTER TABLE fundrecs_schema.stamps REPLICA IDENTITY FULL;
INSERT INTO fundrecs_schema.wide (id, c2, c50, c100) VALUES (1, 2, 50, 100);
UPDATE fundrecs_schema.stamps SET ts = '2026-11-27 00:00:00' WHERE id = 1;
UPDATE fundrecs_schema.wide SET c100 = 1000 WHERE id = 1;
SELECT j->>'op' AS op, j->>'table' AS tbl,
	   (SELECT count(*) FROM jsonb_object_keys(j->'data')) AS data_fields,
	   j->'data'->>'c2' AS c2, j->'data'->>'c50' AS c50, j->'data'->>'c100' AS c100,
	   j->'data'->>'ts' AS new_ts, j->'old'->>'ts' AS old_ts,
	   (SELECT count(*) FROM jsonb_object_keys(j->'old')) AS old_fields
FROM (SELECT data::jsonb AS j FROM pg_logical_slot_get_changes('fast_slot', NULL, NULL)) s;

SELECT pg_drop_replication_slot('fast_slot');
DROP SCHEMA fundrecs_schema CASCADE;
