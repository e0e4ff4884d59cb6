/* fundrecs--1.2--1.3.sql: fundrecs.slot_status, the fundrecs_decoder slots as an operator sees them */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.3'" to load this file. \quit

-- One row per fundrecs_decoder slot of the cluster: whether a shipper reads
-- it, how far behind it is, how much WAL it holds back and whether
-- max_slot_wal_keep_size threatens it, and the state of its initial load
-- (for the slots of this database, where fundrecs.load_state lives).
CREATE VIEW fundrecs.slot_status AS
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
	   l.rows_loaded
  FROM pg_catalog.pg_replication_slots s
 CROSS JOIN (SELECT CASE WHEN pg_catalog.pg_is_in_recovery()
						 THEN pg_catalog.pg_last_wal_replay_lsn()
						 ELSE pg_catalog.pg_current_wal_lsn() END AS current_lsn) w
  LEFT JOIN fundrecs.load_state l
		 ON l.slot_name = s.slot_name AND s.database = pg_catalog.current_database()
 WHERE s.plugin = 'fundrecs_decoder';

COMMENT ON VIEW fundrecs.slot_status IS
	'fundrecs_decoder slots: activity, lag, retained WAL, wal_status, initial load';

-- Monitoring roles see it, as they see pg_replication_slots.
GRANT SELECT ON fundrecs.slot_status TO pg_monitor;
