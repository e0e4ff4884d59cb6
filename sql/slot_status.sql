-- fundrecs.slot_status: the fundrecs_decoder slots as an operator sees them.
SELECT 'init' FROM pg_create_logical_replication_slot('status_slot', 'fundrecs_decoder');
SELECT 'init' FROM pg_create_logical_replication_slot('status_other', 'test_decoding');
CREATE TABLE fundrecs_status_t (id int PRIMARY KEY);
INSERT INTO fundrecs_status_t SELECT generate_series(1, 100);

-- Only fundrecs_decoder slots; lag and retained WAL grow with unread WAL.
SELECT slot_name, database = current_database() AS this_db, active, active_pid IS NULL AS no_pid,
	   wal_status, lag_bytes > 0 AS behind, retained_wal_bytes >= lag_bytes AS retains_at_least_lag,
	   load_state
  FROM fundrecs.slot_status ORDER BY slot_name;

-- Consumed up to now: no lag left.
SELECT count(*) >= 0 AS consumed FROM pg_logical_slot_get_changes('status_slot', NULL, NULL,
	'tables', 'public.fundrecs_status_t');
SELECT lag_bytes < 1024 AS caught_up FROM fundrecs.slot_status WHERE slot_name = 'status_slot';

-- The initial load's state as fundrecs_shipper records it.
INSERT INTO fundrecs.load_state (slot_name, consistent_lsn) VALUES ('status_slot', '0/0');
SELECT load_state FROM fundrecs.slot_status WHERE slot_name = 'status_slot';
UPDATE fundrecs.load_state SET consistent_lsn = '0/1000000' WHERE slot_name = 'status_slot';
SELECT load_state FROM fundrecs.slot_status WHERE slot_name = 'status_slot';
UPDATE fundrecs.load_state SET finished_at = now(), rows_loaded = 100 WHERE slot_name = 'status_slot';
SELECT load_state, rows_loaded, load_finished_at >= load_started_at AS ordered
  FROM fundrecs.slot_status WHERE slot_name = 'status_slot';

-- Monitoring roles may read it; others may not.
SELECT has_table_privilege('pg_monitor', 'fundrecs.slot_status', 'SELECT') AS pg_monitor_reads,
	   has_table_privilege('public', 'fundrecs.slot_status', 'SELECT') AS public_reads;
-- A member of pg_monitor reads it (the schema's USAGE was missing: 1.4).
CREATE ROLE regress_fundrecs_monitor IN ROLE pg_monitor;
SET ROLE regress_fundrecs_monitor;
SELECT slot_name, active FROM fundrecs.slot_status ORDER BY slot_name;
RESET ROLE;
DROP ROLE regress_fundrecs_monitor;

DELETE FROM fundrecs.load_state WHERE slot_name = 'status_slot';
SELECT pg_drop_replication_slot('status_slot');
SELECT pg_drop_replication_slot('status_other');
DROP TABLE fundrecs_status_t;
