/* fundrecs--1.5--1.6.sql: lookup tables guarded against DDL that rules cannot survive */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.6'" to load this file. \quit

-- Names beside attribute numbers: pg_dump recreates a table without the
-- columns dropped from it, so a restored rule's numbers may point at other
-- columns; the decoder finds the columns again by these names (and refuses
-- a rule it cannot place).  lookup_names: the lookup's key columns, then
-- the columns in out_attnums; source_attnums/source_names: every source
-- column the rule reads (join columns, expressions).
-- lookup_oid and source_oid are the tables' OIDs as plain numbers: a
-- restore gives the regclass columns the new tables' OIDs and leaves these
-- as they were, which tells the decoder to place the columns by name (in
-- the same cluster, and after pg_upgrade, which keeps OIDs and attribute
-- numbers, the numbers are right whatever the renames).
ALTER TABLE fundrecs.enrichment_rules
	ADD COLUMN lookup_names text[],
	ADD COLUMN source_attnums int2[],
	ADD COLUMN source_names text[],
	ADD COLUMN lookup_oid oid,
	ADD COLUMN source_oid oid;
UPDATE fundrecs.enrichment_rules e SET
	lookup_oid = e.lookup::oid,
	source_oid = e.source::oid,
	lookup_names = ARRAY(SELECT a.attname::text
		FROM unnest(e.lookup_key || e.out_attnums) WITH ORDINALITY k(n, o)
		JOIN pg_catalog.pg_attribute a ON a.attrelid = e.lookup AND a.attnum = k.n
		ORDER BY k.o),
	source_attnums = ARRAY(SELECT DISTINCT r FROM unnest(e.join_refs) r WHERE r > 0 ORDER BY r),
	source_names = ARRAY(SELECT a.attname::text FROM unnest(e.join_refs) r
		JOIN pg_catalog.pg_attribute a ON a.attrelid = e.source AND a.attnum = r
		WHERE r > 0 GROUP BY r, a.attname ORDER BY r);

-- What an enrichment rule needs of the tables it reads, checked after every
-- DDL command that touches them (ALTER TABLE, DROP of a table, column,
-- constraint, index or trigger), as PostgreSQL's dependencies guard a
-- view's tables: the lookup exists, is a user_catalog_table, has its
-- primary key on the same columns, still has every column the rule reads,
-- and keeps its TRUNCATE guard enabled; the source still has the join
-- columns.  A command that breaks one is refused, naming the rule and the
-- way out.  Changes already written but not yet decoded are enriched from
-- the lookup as of each change, so such DDL would stop or falsify them.
-- Rules of a source table that is dropped go with it.  Only the tables the
-- command touched are checked (a restore adds a primary key after the
-- rules' rows: each table is whole by the time its own commands end).
CREATE FUNCTION fundrecs.check_rule_tables() RETURNS event_trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	rels oid[];
	dropped_guards oid[] := '{}';
	unguard oid[];
	ids oid[];
	names text[];
	r record;
BEGIN
	IF TG_EVENT = 'sql_drop' THEN
		SELECT array_agg(DISTINCT x.rel) INTO rels FROM (
			SELECT d.objid AS rel FROM pg_event_trigger_dropped_objects() d
				WHERE d.classid = 'pg_class'::regclass
			UNION ALL
			SELECT to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]))
				FROM pg_event_trigger_dropped_objects() d
				WHERE d.object_type IN ('trigger', 'table constraint')
					AND cardinality(d.address_names) = 3) x
			WHERE x.rel IS NOT NULL;
		SELECT array_agg(d.objid), array_agg(d.object_identity) INTO ids, names
			FROM pg_event_trigger_dropped_objects() d WHERE d.object_type = 'table';
		SELECT coalesce(array_agg(to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]))), '{}')
			INTO dropped_guards
			FROM pg_event_trigger_dropped_objects() d
			WHERE d.object_type = 'trigger' AND d.address_names[3] = 'fundrecs_protect_lookup';
	ELSE
		SELECT array_agg(DISTINCT c.objid) INTO rels FROM pg_event_trigger_ddl_commands() c
			WHERE c.classid = 'pg_class'::regclass;
	END IF;
	IF rels IS NULL OR to_regclass('fundrecs.enrichment_rules') IS NULL THEN
		RETURN;
	END IF;
	-- A dropped source takes its rules along, and a lookup no rule reads
	-- any more its TRUNCATE guard.
	WITH gone AS (
		DELETE FROM fundrecs.enrichment_rules e WHERE e.source::oid = ANY (rels)
			AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = e.source::oid)
		RETURNING e.lookup::oid AS lookup_oid)
	SELECT coalesce(array_agg(DISTINCT g.lookup_oid), '{}') INTO unguard FROM gone g;
	FOR r IN
		SELECT u.lookup_oid FROM unnest(unguard) u(lookup_oid)
			WHERE NOT EXISTS (SELECT 1 FROM fundrecs.enrichment_rules e
					WHERE e.lookup::oid = u.lookup_oid)
				AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = u.lookup_oid
					AND t.tgname = 'fundrecs_protect_lookup')
	LOOP
		EXECUTE format('DROP TRIGGER fundrecs_protect_lookup ON %s', r.lookup_oid::regclass);
	END LOOP;
	-- A restored lookup (its OID changed): its columns' numbers are taken
	-- again from their names, once, so that from then on the numbers are
	-- right in this cluster (a source's are not: its expressions hold them,
	-- and the decoder places them by name).
	UPDATE fundrecs.enrichment_rules e SET
			lookup_key = ARRAY(SELECT t.attnum FROM unnest(e.lookup_names[1:cardinality(e.lookup_key)])
					WITH ORDINALITY k(name, o)
				JOIN pg_attribute t ON t.attrelid = e.lookup::oid AND t.attname = k.name
					AND NOT t.attisdropped ORDER BY k.o),
			out_attnums = ARRAY(SELECT t.attnum FROM unnest(e.lookup_names[cardinality(e.lookup_key) + 1:])
					WITH ORDINALITY k(name, o)
				JOIN pg_attribute t ON t.attrelid = e.lookup::oid AND t.attname = k.name
					AND NOT t.attisdropped ORDER BY k.o),
			lookup_oid = e.lookup::oid
		WHERE e.lookup::oid = ANY (rels) AND e.lookup_oid IS DISTINCT FROM e.lookup::oid
			AND e.lookup_names IS NOT NULL
			AND NOT EXISTS (SELECT 1 FROM unnest(e.lookup_names) k(name)
				WHERE NOT EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = e.lookup::oid
					AND t.attname = k.name AND NOT t.attisdropped));
	-- A renamed column (in the cluster the numbers are right in): a name
	-- found nowhere whose number still holds a column is that column renamed.
	UPDATE fundrecs.enrichment_rules e SET lookup_names = ARRAY(
			SELECT coalesce(CASE WHEN EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = e.lookup::oid
						AND t.attname = k.name AND NOT t.attisdropped) THEN k.name END,
					(SELECT t.attname::text FROM pg_attribute t WHERE t.attrelid = e.lookup::oid
						AND t.attnum = (e.lookup_key || e.out_attnums)[k.o] AND NOT t.attisdropped),
					k.name)
			FROM unnest(e.lookup_names) WITH ORDINALITY k(name, o) ORDER BY k.o)
		WHERE e.lookup::oid = ANY (rels) AND e.lookup_names IS NOT NULL
			AND e.lookup_oid = e.lookup::oid
			AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = e.lookup::oid)
			AND EXISTS (SELECT 1 FROM unnest(e.lookup_names) k(name)
				WHERE NOT EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = e.lookup::oid
					AND t.attname = k.name AND NOT t.attisdropped));
	UPDATE fundrecs.enrichment_rules e SET source_names = ARRAY(
			SELECT coalesce(CASE WHEN EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = e.source::oid
						AND t.attname = k.name AND NOT t.attisdropped) THEN k.name END,
					(SELECT t.attname::text FROM pg_attribute t WHERE t.attrelid = e.source::oid
						AND t.attnum = e.source_attnums[k.o] AND NOT t.attisdropped),
					k.name)
			FROM unnest(e.source_names) WITH ORDINALITY k(name, o) ORDER BY k.o)
		WHERE e.source::oid = ANY (rels) AND e.source_names IS NOT NULL
			AND e.source_oid = e.source::oid
			AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = e.source::oid)
			AND EXISTS (SELECT 1 FROM unnest(e.source_names) k(name)
				WHERE NOT EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = e.source::oid
					AND t.attname = k.name AND NOT t.attisdropped));
	FOR r IN
		SELECT e.name, e.source::oid AS source_oid, e.lookup::oid AS lookup_oid,
			CASE
			WHEN NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = e.lookup::oid)
				THEN format('its lookup table %s would be dropped',
					coalesce(names[array_position(ids, e.lookup::oid)], e.lookup::oid::text))
			WHEN NOT coalesce((SELECT o.option_value::bool FROM pg_class c,
						pg_options_to_table(c.reloptions) o
						WHERE c.oid = e.lookup::oid AND o.option_name = 'user_catalog_table'), false)
				THEN format('its lookup table %s would no longer be a user_catalog_table', e.lookup)
			-- by name where the rule has names (a restore renumbers columns)
			WHEN NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = e.lookup::oid
						AND i.indisprimary AND i.indnkeyatts = cardinality(e.lookup_key)
						AND (e.lookup_names IS NULL
							AND (string_to_array(i.indkey::text, ' ')::int2[])[1:i.indnkeyatts] = e.lookup_key
							OR e.lookup_names IS NOT NULL
							AND ARRAY(SELECT t.attname::text
									FROM unnest((string_to_array(i.indkey::text, ' ')::int2[])[1:i.indnkeyatts])
										WITH ORDINALITY k(n, o)
									JOIN pg_attribute t ON t.attrelid = i.indrelid AND t.attnum = k.n
									ORDER BY k.o)
								= e.lookup_names[1:cardinality(e.lookup_key)]))
				THEN format('its lookup table %s would lose its primary key', e.lookup)
			WHEN e.lookup_names IS NULL AND EXISTS (SELECT 1 FROM unnest(e.lookup_key || e.out_attnums) a(n)
						WHERE NOT EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = e.lookup::oid
							AND t.attnum = a.n AND NOT t.attisdropped))
				OR e.lookup_names IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(e.lookup_names) a(name)
						WHERE NOT EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = e.lookup::oid
							AND t.attname = a.name AND NOT t.attisdropped))
				THEN format('it reads a column of its lookup table %s that would be dropped', e.lookup)
			WHEN e.source_names IS NULL AND EXISTS (SELECT 1 FROM unnest(e.join_refs) a(n)
						WHERE a.n > 0 AND NOT EXISTS (SELECT 1 FROM pg_attribute t
							WHERE t.attrelid = e.source::oid AND t.attnum = a.n AND NOT t.attisdropped))
				OR e.source_names IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(e.source_names) a(name)
						WHERE NOT EXISTS (SELECT 1 FROM pg_attribute t
							WHERE t.attrelid = e.source::oid AND t.attname = a.name AND NOT t.attisdropped))
				THEN format('it joins on or computes from a column of %s that would be dropped', e.source)
			WHEN e.lookup::oid = ANY (dropped_guards)
				OR EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = e.lookup::oid
						AND t.tgname = 'fundrecs_protect_lookup' AND t.tgenabled <> 'A')
				THEN format('the TRUNCATE guard of its lookup table %s would be dropped or disabled', e.lookup)
			END AS problem
		FROM fundrecs.enrichment_rules e
		WHERE e.lookup::oid = ANY (rels) OR e.source::oid = ANY (rels)
		ORDER BY e.rule_id
	LOOP
		CONTINUE WHEN r.problem IS NULL;
		RAISE EXCEPTION 'cannot execute % on %: enrichment rule "%" of % depends on it',
				TG_TAG, CASE WHEN r.problem LIKE 'it joins on %' THEN r.source_oid::regclass::text
					ELSE coalesce(names[array_position(ids, r.lookup_oid)], r.lookup_oid::regclass::text) END,
				r.name, r.source_oid::regclass
			USING ERRCODE = 'dependent_objects_still_exist',
				DETAIL = format('The rule would break: %s. Changes already written and not yet decoded are enriched from the lookup as of each change.', r.problem),
				HINT = format('Drop the rule first: SELECT fundrecs.drop_enrichment(%L, %L); (README: Enrichment rules, Maintenance of lookup tables).',
					r.name, r.source_oid::regclass::text);
	END LOOP;
END
$$;

CREATE EVENT TRIGGER fundrecs_rule_tables_drop ON sql_drop
	EXECUTE FUNCTION fundrecs.check_rule_tables();
CREATE EVENT TRIGGER fundrecs_rule_tables_alter ON ddl_command_end
	WHEN TAG IN ('ALTER TABLE', 'ALTER TRIGGER')
	EXECUTE FUNCTION fundrecs.check_rule_tables();
-- Also with session_replication_role = replica.
ALTER EVENT TRIGGER fundrecs_rule_tables_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER fundrecs_rule_tables_alter ENABLE ALWAYS;

-- TRUNCATE fires no event trigger: a statement trigger on each lookup
-- (fundrecs_protect_lookup, ENABLE ALWAYS) refuses it.  add_enrichment puts
-- it there; drop_enrichment takes it away with the last rule of the lookup.
CREATE FUNCTION fundrecs.refuse_lookup_truncate() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r record;
BEGIN
	SELECT e.name, e.source INTO r FROM fundrecs.enrichment_rules e
		WHERE e.lookup::oid = TG_RELID ORDER BY e.rule_id LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'cannot truncate %: enrichment rule "%" of % reads it', TG_RELID::regclass, r.name, r.source
			USING ERRCODE = 'dependent_objects_still_exist',
				DETAIL = 'Changes already written and not yet decoded are enriched from the table as of each change; after a TRUNCATE its earlier rows are gone.',
				HINT = format('Delete the rows instead (DELETE FROM %s), or drop the rules that read the table first: SELECT fundrecs.drop_enrichment(%L, %L);',
					TG_RELID::regclass, r.name, r.source::text);
	END IF;
	RETURN NULL;
END
$$;

-- The lookups of the rules there are.
DO $$
DECLARE
	l regclass;
BEGIN
	FOR l IN SELECT DISTINCT lookup FROM fundrecs.enrichment_rules
		WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = lookup::oid)
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = l AND tgname = 'fundrecs_protect_lookup') THEN
			EXECUTE format('CREATE TRIGGER fundrecs_protect_lookup BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION fundrecs.refuse_lookup_truncate()', l);
			EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER fundrecs_protect_lookup', l);
		END IF;
	END LOOP;
END
$$;
