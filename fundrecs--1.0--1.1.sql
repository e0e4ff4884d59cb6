/* fundrecs--1.0--1.1.sql: the initial load */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.1'" to load this file. \quit

-- Every row of a table as fundrecs_decoder would emit it, with op "load",
-- formatted and enriched by the same C code, through the current snapshot.
-- Call it in the SELECT list so that rows stream out.
CREATE FUNCTION fundrecs.load_rows(tbl regclass, load_lsn pg_lsn, options text[] DEFAULT '{}')
	RETURNS SETOF text
	AS 'MODULE_PATHNAME', 'fundrecs_load_rows'
	LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION fundrecs.load_rows(regclass, pg_lsn, text[]) IS
	'Rows of a table in the plugin''s format with op "load"; options as name/value pairs';

-- Does a table pass the plugin option "tables" of these options?
CREATE FUNCTION fundrecs.table_included(options text[], schema_name name, table_name name)
	RETURNS boolean
	AS 'MODULE_PATHNAME', 'fundrecs_table_included'
	LANGUAGE C STRICT STABLE;

-- The tables an initial load reads, with the planner's row estimate.
CREATE FUNCTION fundrecs.load_tables(options text[] DEFAULT '{}')
	RETURNS TABLE (tbl regclass, estimated_rows bigint)
	LANGUAGE sql STABLE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT c.oid::regclass, greatest(c.reltuples, 0)::bigint
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'r' AND NOT c.relispartition
	  AND fundrecs.table_included(options, n.nspname, c.relname)
	ORDER BY n.nspname, c.relname
$$;

-- One row per slot whose initial load was started; finished_at stays null
-- until every load row was acknowledged, so a restart can tell an
-- interrupted load and repeat it.
CREATE TABLE fundrecs.load_state (
	slot_name name PRIMARY KEY,
	consistent_lsn pg_lsn NOT NULL,
	started_at timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz,
	rows_loaded bigint
);

COMMENT ON TABLE fundrecs.load_state IS
	'Initial loads of fundrecs_shipper: an unfinished one is repeated on restart';
