-- Logical decoding messages (pg_logical_emit_message): skipped unless
-- include_messages asks for them; message_prefixes filters them; the
-- shipper's heartbeats are never emitted unless named.
SELECT 'init' FROM pg_create_logical_replication_slot('msg_slot', 'fundrecs_decoder');
CREATE SCHEMA msg;
CREATE TABLE msg.msg_t (id int PRIMARY KEY, v text);

BEGIN;
INSERT INTO msg.msg_t VALUES (1, 'a');
SELECT 'm1' FROM pg_logical_emit_message(true, 'app.marker', 'batch 7 done');
COMMIT;
SELECT 'm2' FROM pg_logical_emit_message(false, 'audit', 'not in a transaction');
SELECT 'hb' FROM pg_logical_emit_message(true, 'fundrecs_heartbeat', '');
-- Content that is not text: NUL and a byte invalid in UTF-8.
SELECT 'm3' FROM pg_logical_emit_message(true, 'bin', '\x00ff41'::bytea);
SELECT 'm4' FROM pg_logical_emit_message(true, 'app.marker', 'quote " backslash \ newline
end');

-- By default: the row, no message.
SELECT data FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'tables', 'msg.*',
	'include_lsn', 'off', 'include_xid', 'off', 'include_timestamp', 'off');
-- include_messages: every message but the heartbeat.
SELECT data FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'tables', 'msg.*',
	'include_lsn', 'off', 'include_xid', 'off', 'include_timestamp', 'off',
	'include_messages', 'on');
-- A prefix filter, which may name the heartbeat.
SELECT data FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'tables', 'msg.*',
	'include_lsn', 'off', 'include_xid', 'off', 'include_timestamp', 'off',
	'include_messages', 'true', 'message_prefixes', ' app.marker , fundrecs_heartbeat');
-- A filter without include_messages emits nothing more.
SELECT count(*) FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'tables', 'msg.*',
	'message_prefixes', 'app.marker');
-- Positions: a transactional message carries its transaction's commit
-- position and time; a non-transactional one its own position and no time.
SELECT d->>'prefix' AS prefix,
	   (d->>'commit_lsn')::pg_lsn = (d->>'lsn')::pg_lsn AS commit_is_own_lsn,
	   (d->>'commit_lsn')::pg_lsn > (d->>'lsn')::pg_lsn AS commit_after,
	   d->'commit_time' = 'null'::jsonb AS no_time,
	   d->'xid' = 'null'::jsonb AS no_xid
  FROM (SELECT data::jsonb AS d
		  FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'tables', 'msg.*',
			   'include_messages', 'on', 'message_prefixes', 'app.marker,audit')) s
 WHERE d->>'op' = 'message';
-- The message of the first transaction arrives after its row, with the
-- same commit_lsn.
SELECT count(DISTINCT data::jsonb->>'commit_lsn')
  FROM (SELECT data FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'tables', 'msg.*',
		'include_messages', 'on', 'message_prefixes', 'app.marker') LIMIT 2) s;
-- The dms format emits messages in the same shape.
SELECT data FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'tables', 'msg.*',
	'format', 'dms', 'include_lsn', 'off', 'include_xid', 'off', 'include_timestamp', 'off',
	'include_messages', 'on', 'message_prefixes', 'audit');

-- Option errors.
SELECT * FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'include_messages', 'sometimes');
SELECT * FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'message_prefixes', '');
SELECT * FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'message_prefixes', 'a,,b');
SELECT * FROM pg_logical_slot_peek_changes('msg_slot', NULL, NULL, 'message_prefixes', NULL);

SELECT pg_drop_replication_slot('msg_slot');
DROP SCHEMA msg CASCADE;
