/* fundrecs--1.6--1.7.sql: fundrecs.slot_status shows the enrichment failure that stopped a slot */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.7'" to load this file. \quit

-- With on_enrich_error=fail, the decoder keeps the error that stopped a
-- slot beside the slot (pg_replslot/<slot>/fundrecs_failure) until a later
-- transaction of the slot is decoded to its end.
CREATE FUNCTION fundrecs.slot_failure(slot_name name)
RETURNS text
AS 'MODULE_PATHNAME', 'fundrecs_slot_failure'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION fundrecs.slot_failure(name) IS
	'the enrichment failure that stopped the slot (on_enrich_error=fail): the change, its table, the rule and the error; NULL if none';

REVOKE ALL ON FUNCTION fundrecs.slot_failure(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fundrecs.slot_failure(name) TO pg_monitor;

CREATE OR REPLACE VIEW fundrecs.slot_status AS
SELECT s.slot_name,
	   s.database,
	   s.active,
	   s.active_pid,
	   s.confirmed_flush_lsn,
	   s.restart_lsn,
	   pg_catalog.pg_wal_lsn_diff(w.current_lsn, s.confirmed_flush_lsn)::bigint AS lag_bytes,
	   pg_catalog.pg_wal_lsn_diff(w.current_lsn, s.restart_lsn)::bigint AS retained_wal_bytes,
	   s.wal_status,
	   s.safe_wal_size,
	   CASE WHEN l.slot_name IS NULL THEN NULL
			WHEN l.finished_at IS NOT NULL THEN 'finished'
			WHEN l.consistent_lsn = '0/0' THEN 'creating slot'
			ELSE 'loading' END AS load_state,
	   l.started_at AS load_started_at,
	   l.finished_at AS load_finished_at,
	   l.rows_loaded,
	   fundrecs.slot_failure(s.slot_name) AS enrich_failure
  FROM pg_catalog.pg_replication_slots s
 CROSS JOIN (SELECT CASE WHEN pg_catalog.pg_is_in_recovery()
						 THEN pg_catalog.pg_last_wal_replay_lsn()
						 ELSE pg_catalog.pg_current_wal_lsn() END AS current_lsn) w
  LEFT JOIN fundrecs.load_state l
		 ON l.slot_name = s.slot_name AND s.database = pg_catalog.current_database()
 WHERE s.plugin = 'fundrecs_decoder';

COMMENT ON VIEW fundrecs.slot_status IS
	'fundrecs_decoder slots: activity, lag, retained WAL, wal_status, initial load, the enrichment failure that stopped one';
