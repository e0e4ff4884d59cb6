-- Every option error names the option and says what is valid.
SELECT 'init' FROM pg_create_logical_replication_slot('opt_slot', 'fundrecs_decoder');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'nonsense', 'x');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'include_lsn', 'maybe');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'include_xid', '2');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'include_timestamp', '');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'tables', '');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'lookup_cache_bytes', '1000');
SELECT count(*) FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'lookup_cache_bytes', '0');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'tables', 'orders');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'tables', 'a.b.c');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'tables', 'a.b,,');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'tables', '*.orders');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'orders_table', 'orders');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'orders_table', 's.*');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'orders_table', '');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'product_column', '');
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'quantity_column', repeat('q', 64));
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'product_column', NULL);
-- An option given twice is refused, as pgoutput refuses it (the last one won).
SELECT * FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'format', 'dms', 'format', 'native');
-- Valid spellings are accepted.
SELECT count(*) FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL,
	'include_lsn', 'off', 'include_xid', 'no', 'include_timestamp', '0',
	'tables', ' a.b , "Mixed Case".* ', 'orders_table', '"My Schema"."My Orders"',
	'product_column', 'Product', 'quantity_column', 'qty');
SELECT count(*) FROM pg_logical_slot_peek_changes('opt_slot', NULL, NULL, 'include_lsn', NULL);
SELECT pg_drop_replication_slot('opt_slot');

-- What fundrecs_shipper checks before it starts: option values that would
-- make a slot emit nothing for a table (a typo), and bad options.
CREATE SCHEMA opt_check;
CREATE TABLE opt_check.orders (order_id int PRIMARY KEY, product_id int, quantity int);
SELECT unnest(fundrecs.option_problems('{tables,"nosuch.*, opt_check.nosuch, opt_check.*",orders_table,opt_check.orders}'));
SELECT unnest(fundrecs.option_problems('{tables,opt_check.*,orders_table,opt_check.missing}'));
SELECT fundrecs.option_problems('{tables,opt_check.*,orders_table,opt_check.orders}');
SELECT fundrecs.option_problems('{tables,opt_check.*,orders_table,opt_check.orders,quantity_column,qty}');
SELECT fundrecs.option_problems('{tables,nodot}');
DROP SCHEMA opt_check CASCADE;
