/* fundrecs--1.7--1.8.sql: backfills, online and chunked, while the stream flows */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.8'" to load this file. \quit

-- A backfill request: made in SQL (fundrecs.backfill), it reaches every
-- shipper of the database's slots as a transactional message, in commit
-- order; a rolled-back request never does.
CREATE TABLE fundrecs.backfill_request (
	request_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	relid oid NOT NULL,
	schema_name name NOT NULL,
	table_name name NOT NULL,
	chunk_rows integer NOT NULL CHECK (chunk_rows BETWEEN 1 AND 1000000),
	condition text,
	slot_name name,				-- null: every slot of the database
	requested_by name NOT NULL,
	requested_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	cancelled_at timestamptz
);

COMMENT ON TABLE fundrecs.backfill_request IS
	'Backfills asked for with fundrecs.backfill(): one row per request';

-- What each slot's shipper made of a request.  A chunk is "pending" from
-- the moment its rows are handed to the targets until they are all
-- acknowledged; only then do chunks_done, rows_shipped and last_key move.
CREATE TABLE fundrecs.backfill_progress (
	request_id bigint NOT NULL REFERENCES fundrecs.backfill_request ON DELETE CASCADE,
	slot_name name NOT NULL,
	state text NOT NULL DEFAULT 'queued'
		CHECK (state IN ('queued', 'running', 'finished', 'cancelled', 'failed', 'skipped')),
	chunks_done bigint NOT NULL DEFAULT 0,
	rows_shipped bigint NOT NULL DEFAULT 0,
	rows_read bigint NOT NULL DEFAULT 0,
	last_key text[],
	pending_chunk_lsn pg_lsn,
	pending_last_key text[],
	pending_rows_shipped bigint,
	pending_rows_read bigint,
	rows_estimate bigint,
	started_at timestamptz,
	updated_at timestamptz,
	finished_at timestamptz,
	message text,
	PRIMARY KEY (request_id, slot_name)
);

COMMENT ON TABLE fundrecs.backfill_progress IS
	'Backfills per slot, as fundrecs_shipper runs them: durable per acknowledged chunk';

-- Checks a request (the caller may ask, the table can be read in key
-- order, the condition is one safe expression) and returns the table's
-- schema and name.
CREATE FUNCTION fundrecs.backfill_check(tbl regclass, condition text,
										OUT schema_name name, OUT table_name name,
										OUT requested_by name)
AS 'MODULE_PATHNAME', 'fundrecs_backfill_check'
LANGUAGE C STABLE;

REVOKE ALL ON FUNCTION fundrecs.backfill_check(regclass, text) FROM PUBLIC;

CREATE FUNCTION fundrecs.backfill(tbl regclass, chunk_rows integer DEFAULT 10000,
								  condition text DEFAULT NULL, slot_name name DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
	id bigint;
BEGIN
	IF tbl IS NULL THEN
		RAISE EXCEPTION 'the table to backfill must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF chunk_rows IS NULL OR chunk_rows < 1 OR chunk_rows > 1000000 THEN
		RAISE EXCEPTION 'chunk_rows must be between 1 and 1000000, not %', chunk_rows
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	c := fundrecs.backfill_check(tbl, condition);
	IF backfill.slot_name IS NOT NULL AND NOT EXISTS
		(SELECT 1 FROM pg_catalog.pg_replication_slots s
		  WHERE s.slot_name = backfill.slot_name AND s.database = pg_catalog.current_database())
	THEN
		RAISE EXCEPTION 'replication slot "%" does not exist in database "%"',
			backfill.slot_name, pg_catalog.current_database()
			USING ERRCODE = 'undefined_object',
				  HINT = 'Leave out slot_name to backfill for every slot of the database.';
	END IF;
	INSERT INTO fundrecs.backfill_request (relid, schema_name, table_name, chunk_rows,
										   condition, slot_name, requested_by)
	VALUES (tbl, c.schema_name, c.table_name, chunk_rows, condition, backfill.slot_name,
			c.requested_by)
	RETURNING request_id INTO id;
	PERFORM pg_catalog.pg_logical_emit_message(true, 'fundrecs.backfill', id::text);
	RETURN id;
END
$$;

COMMENT ON FUNCTION fundrecs.backfill(regclass, integer, text, name) IS
	'asks every fundrecs_shipper of this database (or of one slot) to ship the table''s rows again, in chunks, while changes flow';

CREATE FUNCTION fundrecs.cancel_backfill(tbl regclass)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n integer;
BEGIN
	PERFORM fundrecs.backfill_check(tbl, NULL);
	-- Every request of the table that some slot may still run.
	UPDATE fundrecs.backfill_request r SET cancelled_at = now()
	 WHERE r.relid = tbl AND r.cancelled_at IS NULL
	   AND (NOT EXISTS (SELECT 1 FROM fundrecs.backfill_progress p
						WHERE p.request_id = r.request_id)
			OR EXISTS (SELECT 1 FROM fundrecs.backfill_progress p
					   WHERE p.request_id = r.request_id AND p.state IN ('queued', 'running')));
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

COMMENT ON FUNCTION fundrecs.cancel_backfill(regclass) IS
	'cancels the table''s backfills that have not finished: shippers stop them after the chunk in flight';

-- The rows of one chunk, formatted and enriched like load rows, read by
-- key after after_key (NULL: from the start) and up to upto_key (NULL: no
-- bound) through the current snapshot.
CREATE FUNCTION fundrecs.backfill_rows(tbl regclass, after_key text[], max_rows integer,
									   load_lsn pg_lsn, options text[] DEFAULT '{}',
									   condition text DEFAULT NULL,
									   upto_key text[] DEFAULT NULL)
RETURNS TABLE (key text[], row_json text)
AS 'MODULE_PATHNAME', 'fundrecs_backfill_rows'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION fundrecs.backfill_rows(regclass, text[], integer, pg_lsn, text[], text, text[]) IS
	'one chunk of a backfill: up to max_rows rows after after_key (and up to upto_key) in key order, as the plugin emits them (op load)';

-- A chunk split into parts read side by side (fundrecs_shipper
-- --backfill-workers): each part's last key and its number of rows.
CREATE FUNCTION fundrecs.backfill_bounds(tbl regclass, after_key text[], max_rows integer,
										 parts integer, condition text DEFAULT NULL)
RETURNS TABLE (upto_key text[], rows integer)
AS 'MODULE_PATHNAME', 'fundrecs_backfill_bounds'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION fundrecs.backfill_bounds(regclass, text[], integer, integer, text) IS
	'the next chunk of a backfill split into parts of about max_rows / parts rows: the last key of each and its rows';

CREATE VIEW fundrecs.backfill_status AS
SELECT r.request_id,
	   pg_catalog.format('%I.%I', r.schema_name, r.table_name) AS "table",
	   coalesce(p.slot_name, r.slot_name) AS slot_name,
	   CASE WHEN p.state IS NULL AND r.cancelled_at IS NOT NULL THEN 'cancelled'
			WHEN p.state IS NULL THEN 'requested'
			WHEN p.state IN ('queued', 'running') AND r.cancelled_at IS NOT NULL THEN 'cancelling'
			ELSE p.state END AS state,
	   coalesce(p.chunks_done, 0) AS chunks_done,
	   coalesce(p.rows_shipped, 0) AS rows_shipped,
	   coalesce(p.rows_read, 0) AS rows_read,
	   p.rows_estimate,
	   p.last_key,
	   r.chunk_rows,
	   r.condition,
	   r.requested_by,
	   r.requested_at,
	   p.started_at,
	   p.updated_at,
	   p.finished_at,
	   CASE WHEN p.state = 'running' AND p.rows_read > 0 AND p.rows_estimate > p.rows_read
				 AND p.updated_at > p.started_at
			THEN p.updated_at + (p.updated_at - p.started_at)
				 * ((p.rows_estimate - p.rows_read)::float8 / p.rows_read)
	   END AS eta,
	   p.message
  FROM fundrecs.backfill_request r
  LEFT JOIN fundrecs.backfill_progress p USING (request_id);

COMMENT ON VIEW fundrecs.backfill_status IS
	'backfills: one row per request and slot, with progress, ETA and how each ended';

GRANT SELECT ON fundrecs.backfill_status TO pg_monitor;

