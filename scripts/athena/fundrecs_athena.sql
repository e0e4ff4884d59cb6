-- Athena layer over the objects fundrecs_shipper writes with --target s3.
-- Render with scripts/athena/render.sh BUCKET PREFIX [ROUTES] (it fills
-- @BUCKET@, @PREFIX@ and @ROUTES@), then run each statement in Athena.
--
-- Layout: s3://@BUCKET@/@PREFIX@/<route>/dt=YYYY-MM-DD/<first>-<last>.json.gz (stream positions)
-- Partition projection on route and dt: no crawler, no MSCK REPAIR TABLE.

CREATE DATABASE IF NOT EXISTS fundrecs_cdc;

-- Every row the shipper wrote, as written: each change once (a restart skips
-- what the bucket has); the changes view still drops repeats, as defence in
-- depth for objects written by earlier versions or by hand.
CREATE EXTERNAL TABLE IF NOT EXISTS fundrecs_cdc.cdc_rows (
	op string,
	`schema` string,
	`table` string,
	lsn string,
	commit_lsn string,
	xid bigint,
	commit_time string,
	key map<string,string>,
	data struct<order_id:bigint, product_id:int, customer_id:int, quantity:int,
		order_date:string, product_name:string, category:string,
		price:decimal(12,2), total_price:decimal(38,2),
		customer_name:string, location:string>,
	old struct<order_id:bigint, product_id:int, customer_id:int, quantity:int,
		order_date:string, product_name:string, category:string,
		price:decimal(12,2), total_price:decimal(38,2),
		customer_name:string, location:string>
)
PARTITIONED BY (route string, dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'false')
LOCATION 's3://@BUCKET@/@PREFIX@/'
TBLPROPERTIES (
	'projection.enabled' = 'true',
	'projection.route.type' = 'enum',
	'projection.route.values' = '@ROUTES@',
	'projection.dt.type' = 'date',
	'projection.dt.format' = 'yyyy-MM-dd',
	'projection.dt.range' = '2024-01-01,NOW',
	'projection.dt.interval' = '1',
	'projection.dt.interval.unit' = 'DAYS',
	'storage.location.template' = 's3://@BUCKET@/@PREFIX@/${route}/dt=${dt}/'
);

-- The same objects for any table, whatever its columns: data, old and key
-- kept as JSON text (the OpenX SerDe gives a nested object to a string
-- column as its JSON).  Tables enriched by rules (fundrecs.add_enrichment)
-- read their columns, the emitted and computed ones included, with
-- json_extract_scalar; their routes are the slugs of the rules' route
-- expressions: pass them to render.sh.
CREATE EXTERNAL TABLE IF NOT EXISTS fundrecs_cdc.cdc_rows_json (
	op string,
	`schema` string,
	`table` string,
	lsn string,
	commit_lsn string,
	key string,
	data string,
	old string
)
PARTITIONED BY (route string, dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'false')
LOCATION 's3://@BUCKET@/@PREFIX@/'
TBLPROPERTIES (
	'projection.enabled' = 'true',
	'projection.route.type' = 'enum',
	'projection.route.values' = '@ROUTES@',
	'projection.dt.type' = 'date',
	'projection.dt.format' = 'yyyy-MM-dd',
	'projection.dt.range' = '2024-01-01,NOW',
	'projection.dt.interval' = '1',
	'projection.dt.interval.unit' = 'DAYS',
	'storage.location.template' = 's3://@BUCKET@/@PREFIX@/${route}/dt=${dt}/'
);

-- One row per change: a row shipped twice (after a restart) is kept once.
-- A change is identified by its table, key and LSN; positions are compared
-- as numbers (an LSN "X/Y" is X * 2^32 + Y, both hex).  A reset marker
-- (op "reset", route _resync: written before a load that replaces an
-- earlier one, after a lost slot or an interrupted load) ends everything
-- before it: only transactions committed at or after the latest marker
-- count, so rows deleted while no slot decoded them do not live on.
CREATE OR REPLACE VIEW fundrecs_cdc.changes AS
SELECT d.*
FROM (
	SELECT r.*,
		from_base(split_part(commit_lsn, '/', 1), 16) * 4294967296
			+ from_base(split_part(commit_lsn, '/', 2), 16) AS commit_pos,
		from_base(split_part(lsn, '/', 1), 16) * 4294967296
			+ from_base(split_part(lsn, '/', 2), 16) AS change_pos,
		row_number() OVER (
			PARTITION BY r."schema", r."table", json_format(CAST(r.key AS json)), r.lsn, r.op
			ORDER BY r.commit_lsn) AS copy_no
	FROM fundrecs_cdc.cdc_rows r
	WHERE r.op NOT IN ('truncate', 'reset')
) d
CROSS JOIN (
	SELECT coalesce(max(from_base(split_part(commit_lsn, '/', 1), 16) * 4294967296
			+ from_base(split_part(commit_lsn, '/', 2), 16)), 0) AS reset_pos
	FROM fundrecs_cdc.cdc_rows
	WHERE op = 'reset'
) m
WHERE d.copy_no = 1 AND d.commit_pos >= m.reset_pos;

-- The seed's tables: every version written, with the seed's columns.
CREATE OR REPLACE VIEW fundrecs_cdc.customers AS
SELECT data.customer_id, data.customer_name, data.location
FROM fundrecs_cdc.changes
WHERE "table" = 'customers' AND op IN ('load', 'insert', 'update');

CREATE OR REPLACE VIEW fundrecs_cdc.electronics_orders AS
SELECT data.order_id, data.product_id, data.customer_id, data.quantity, data.order_date,
	data.product_name, data.category, data.price, data.total_price
FROM fundrecs_cdc.changes
WHERE "table" = 'orders' AND route = 'electronics' AND op IN ('load', 'insert', 'update');

CREATE OR REPLACE VIEW fundrecs_cdc.furniture_orders AS
SELECT data.order_id, data.product_id, data.customer_id, data.quantity, data.order_date,
	data.product_name, data.category, data.price, data.total_price
FROM fundrecs_cdc.changes
WHERE "table" = 'orders' AND route = 'furniture' AND op IN ('load', 'insert', 'update');

-- Current state: the latest version of each key across every route,
-- deletes removed.  An order that moved category appears once, in its new
-- category.
CREATE OR REPLACE VIEW fundrecs_cdc.orders_current AS
SELECT route, data.order_id, data.product_id, data.customer_id, data.quantity, data.order_date,
	data.product_name, data.category, data.price, data.total_price
FROM (
	SELECT c.*, row_number() OVER (PARTITION BY key['order_id']
		ORDER BY commit_pos DESC, change_pos DESC) AS version_no
	FROM fundrecs_cdc.changes c
	WHERE "table" = 'orders'
) v
WHERE version_no = 1 AND op <> 'delete';

CREATE OR REPLACE VIEW fundrecs_cdc.customers_current AS
SELECT data.customer_id, data.customer_name, data.location
FROM (
	SELECT c.*, row_number() OVER (PARTITION BY key['customer_id']
		ORDER BY commit_pos DESC, change_pos DESC) AS version_no
	FROM fundrecs_cdc.changes c
	WHERE "table" = 'customers'
) v
WHERE version_no = 1 AND op <> 'delete';

-- Any table, generically: each change once (as the changes view), and the
-- current state (the latest version of each key, deletes removed), with
-- data as JSON.  For a table enriched by rules, e.g.:
--   SELECT route, count(*), sum(CAST(json_extract_scalar(data, '$.net') AS decimal(38,4)))
--   FROM fundrecs_cdc.current_json WHERE "schema" = 'shop' AND "table" = 'line_items'
--   GROUP BY route;
CREATE OR REPLACE VIEW fundrecs_cdc.changes_json AS
SELECT d.*
FROM (
	SELECT r.*,
		from_base(split_part(commit_lsn, '/', 1), 16) * 4294967296
			+ from_base(split_part(commit_lsn, '/', 2), 16) AS commit_pos,
		from_base(split_part(lsn, '/', 1), 16) * 4294967296
			+ from_base(split_part(lsn, '/', 2), 16) AS change_pos,
		row_number() OVER (
			PARTITION BY r."schema", r."table", r.key, r.lsn, r.op
			ORDER BY r.commit_lsn) AS copy_no
	FROM fundrecs_cdc.cdc_rows_json r
	WHERE r.op NOT IN ('truncate', 'reset')
) d
CROSS JOIN (
	SELECT coalesce(max(from_base(split_part(commit_lsn, '/', 1), 16) * 4294967296
			+ from_base(split_part(commit_lsn, '/', 2), 16)), 0) AS reset_pos
	FROM fundrecs_cdc.cdc_rows_json
	WHERE op = 'reset'
) m
WHERE d.copy_no = 1 AND d.commit_pos >= m.reset_pos;

CREATE OR REPLACE VIEW fundrecs_cdc.current_json AS
SELECT "schema", "table", route, key, data
FROM (
	SELECT c.*, row_number() OVER (PARTITION BY "schema", "table", key
		ORDER BY commit_pos DESC, change_pos DESC) AS version_no
	FROM fundrecs_cdc.changes_json c
) v
WHERE version_no = 1 AND op <> 'delete';

-- The seed's step 7 query, per category, on the current state.
-- SELECT route, count(*) AS orders, sum(total_price) AS total
-- FROM fundrecs_cdc.orders_current GROUP BY route ORDER BY route;
