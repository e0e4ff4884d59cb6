/* fundrecs--1.8--1.9.sql: a backfill chunk read as one value */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.9'" to load this file. \quit

-- One chunk of a backfill as fundrecs_shipper reads it, in batches of
-- about 256 kB: the rows backfill_rows would return, formatted alike, a row
-- a line in body.  rows_read counts the rows a batch covers (those the
-- publications' row filters leave out are counted, not written), last_key
-- is the key of the last of them.  Reading stops after max_rows rows, at
-- upto_key, or once the batches hold max_bytes bytes (the last batch says
-- bytes_full: the chunk then ends at its last_key).  Call it in the select
-- list, so that the batches stream (in FROM they are gathered first).
CREATE FUNCTION fundrecs.backfill_chunk(tbl regclass, after_key text[], max_rows integer,
										load_lsn pg_lsn, options text[] DEFAULT '{}',
										condition text DEFAULT NULL,
										upto_key text[] DEFAULT NULL,
										max_bytes integer DEFAULT 67108864,
										OUT rows_read integer, OUT last_key text[],
										OUT bytes_full boolean, OUT body text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'fundrecs_backfill_chunk'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION fundrecs.backfill_chunk(regclass, text[], integer, pg_lsn, text[], text, text[], integer) IS
	'one chunk of a backfill in batches: up to max_rows rows after after_key (and up to upto_key and max_bytes) in key order, a row a line as the plugin emits them (op load)';
