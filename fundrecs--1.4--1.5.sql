/* fundrecs--1.4--1.5.sql: declarative enrichment rules */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.5'" to load this file. \quit

-- The rules, a user catalog table: decoding reads it through the change's
-- historic snapshot, so a rule added or dropped takes effect at its
-- commit's position in the stream.  Tables are regclass (a rename keeps a
-- rule, and a dump restores them by name) and columns attribute numbers;
-- the texts given are kept for display.  Written by add_enrichment, which
-- checks everything; readable by the extension's owner.
CREATE TABLE fundrecs.enrichment_rules (
	rule_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	source regclass NOT NULL,		-- the table whose changes are enriched
	name name NOT NULL,
	lookup regclass NOT NULL,		-- a user_catalog_table with a primary key
	lookup_key int2[] NOT NULL,		-- its primary key columns, in order
	join_refs int2[] NOT NULL,		-- per key column: a source attnum (> 0), or -n, the n-th column emitted before
	out_names text[] NOT NULL,		-- the columns it emits...
	out_attnums int2[] NOT NULL,	-- ...read from these lookup columns
	computed_names text[] NOT NULL,
	computed_exprs text[] NOT NULL,	-- as given
	computed_trees text[] NOT NULL,	-- as compiled (nodeToString)
	route_expr text,
	route_tree text,
	added_by name NOT NULL DEFAULT current_user,
	added_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (source, name)
) WITH (user_catalog_table = true);
SELECT pg_catalog.pg_extension_config_dump('fundrecs.enrichment_rules', '');
SELECT pg_catalog.pg_extension_config_dump('fundrecs.enrichment_rules_rule_id_seq', '');

CREATE FUNCTION fundrecs.add_enrichment(
	source regclass,
	lookup regclass,
	join_columns text[],
	columns text[] DEFAULT NULL,
	computed text[] DEFAULT '{}',
	route text DEFAULT NULL,
	name name DEFAULT NULL)
	RETURNS name
	AS 'MODULE_PATHNAME', 'fundrecs_add_enrichment'
	LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION fundrecs.drop_enrichment(name name, source regclass DEFAULT NULL)
	RETURNS void
	AS 'MODULE_PATHNAME', 'fundrecs_drop_enrichment'
	LANGUAGE C CALLED ON NULL INPUT VOLATILE;
