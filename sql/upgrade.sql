-- The upgrade chain: install the first release, update to each later one,
-- and end with the same objects as a fresh install.  A table's row type
-- and its array are members of their own from PostgreSQL 17 on: left out,
-- so that every major lists the same objects.
CREATE FUNCTION ext_objects() RETURNS SETOF text LANGUAGE sql AS $$
	SELECT pg_describe_object(classid, objid, objsubid)
	FROM pg_depend d
	WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
	  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'fundrecs')
	  AND NOT EXISTS (SELECT FROM pg_type t
					  WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid
						AND (t.typrelid <> 0 OR t.typelem IN
							 (SELECT oid FROM pg_type WHERE typrelid <> 0)))
	ORDER BY 1
$$;
CREATE TEMP TABLE fresh AS SELECT * FROM ext_objects();
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';

DROP EXTENSION fundrecs;
CREATE EXTENSION fundrecs VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
SELECT * FROM ext_objects();
SELECT fundrecs.load_products('[{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200}]');

ALTER EXTENSION fundrecs UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
SELECT count(*) FROM fundrecs.load_tables();

ALTER EXTENSION fundrecs UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';

ALTER EXTENSION fundrecs UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
SELECT count(*) AS slot_status_rows FROM fundrecs.slot_status;

ALTER EXTENSION fundrecs UPDATE TO '1.4';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
-- pg_monitor reads fundrecs.slot_status: USAGE on the schema too (1.4).
SELECT has_schema_privilege('pg_monitor', 'fundrecs', 'USAGE') AS monitor_usage,
	   has_table_privilege('pg_monitor', 'fundrecs.slot_status', 'SELECT') AS monitor_select;

ALTER EXTENSION fundrecs UPDATE TO '1.5';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
-- The enrichment rules: a user catalog table, dumped with the database.
SELECT reloptions FROM pg_class WHERE oid = 'fundrecs.enrichment_rules'::regclass;
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'fundrecs';

ALTER EXTENSION fundrecs UPDATE TO '1.6';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
-- Lookup tables guarded: event triggers (fired always) and a TRUNCATE guard.
SELECT evtname, evtevent, evtenabled, evttags FROM pg_event_trigger
	WHERE evtname LIKE 'fundrecs%' ORDER BY 1;

ALTER EXTENSION fundrecs UPDATE TO '1.7';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
-- slot_status shows the enrichment failure that stopped a slot; pg_monitor may read it.
SELECT attname FROM pg_attribute WHERE attrelid = 'fundrecs.slot_status'::regclass
	AND attnum > 0 ORDER BY attnum DESC LIMIT 1;
SELECT has_function_privilege('pg_monitor', 'fundrecs.slot_failure(name)', 'EXECUTE') AS monitor_exec,
	   has_function_privilege('public', 'fundrecs.slot_failure(name)', 'EXECUTE') AS public_exec;

ALTER EXTENSION fundrecs UPDATE TO '1.8';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
-- Backfills: requests and progress, not dumped (they belong to this
-- cluster's slots); the request functions run as the extension's owner.
SELECT extconfig::regclass[] FROM pg_extension WHERE extname = 'fundrecs';
SELECT p.proname, p.prosecdef, has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec
  FROM pg_proc p WHERE p.pronamespace = 'fundrecs'::regnamespace AND p.proname LIKE '%backfill%'
 ORDER BY 1;
SELECT has_table_privilege('pg_monitor', 'fundrecs.backfill_status', 'SELECT') AS monitor_select;

ALTER EXTENSION fundrecs UPDATE TO '1.9';
SELECT extversion FROM pg_extension WHERE extname = 'fundrecs';
-- 1.9: a chunk in batches, for the shipper; like backfill_rows, it checks
-- the caller's rights itself (those of the initial load).
SELECT has_function_privilege('public', 'fundrecs.backfill_chunk(regclass, text[], integer, pg_lsn, text[], text, text[], integer)', 'EXECUTE') AS public_exec;
(SELECT * FROM ext_objects() EXCEPT SELECT * FROM fresh)
UNION ALL
(SELECT * FROM fresh EXCEPT SELECT * FROM ext_objects());
SELECT count(*) AS products_kept FROM fundrecs.product_details;
SELECT * FROM pg_available_extension_versions WHERE name = 'fundrecs' ORDER BY version;
DROP FUNCTION ext_objects();
