/* fundrecs--1.1--1.2.sql: partitioned tables in the initial load, linear and stricter product loading */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.2'" to load this file. \quit

-- The tables an initial load reads, with the planner's row estimate: plain
-- tables and partitioned tables, by their root (partitions are read through
-- it, as decoding emits them with publish_via_partition_root).
CREATE OR REPLACE FUNCTION fundrecs.load_tables(options text[] DEFAULT '{}')
	RETURNS TABLE (tbl regclass, estimated_rows bigint)
	LANGUAGE sql STABLE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT c.oid::regclass,
		CASE WHEN c.relkind = 'p' THEN
			(SELECT coalesce(sum(greatest(l.reltuples, 0)), 0)::bigint
			 FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid
			 WHERE l.relkind = 'r')
		ELSE greatest(c.reltuples, 0)::bigint END
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
	  AND fundrecs.table_included(options, n.nspname, c.relname)
	ORDER BY n.nspname, c.relname
$$;

-- load_products gains allow_empty: an empty array empties the table only
-- when asked, so a truncated file cannot silently unenrich every order.
DROP FUNCTION fundrecs.load_products_file(text);
DROP FUNCTION fundrecs.load_products(jsonb);

-- A value for an error message: at most 40 characters.
CREATE FUNCTION fundrecs.shown_value(v text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN v IS NULL THEN 'nothing'
		WHEN length(v) > 40 THEN left(v, 20) || '...' || right(v, 8) || format(' (%s characters)', length(v))
		ELSE v END
$$;

-- Replaces the whole product table with the array, atomically.  Every
-- element is checked before the table is touched; the first invalid one
-- raises an error that names its array index and field.  Linear in the
-- number of products.
CREATE FUNCTION fundrecs.load_products(products jsonb, allow_empty boolean DEFAULT false)
	RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	elem jsonb;
	idx integer;
	pid numeric;
	price numeric;
	field text;
	dup record;
	n integer;
BEGIN
	IF products IS NULL THEN
		RAISE EXCEPTION 'products must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF jsonb_typeof(products) <> 'array' THEN
		RAISE EXCEPTION 'products must be a JSON array, not %', jsonb_typeof(products)
			USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Give an array of objects with product_id, product_name, category and price.';
	END IF;
	IF jsonb_array_length(products) = 0 AND NOT coalesce(allow_empty, false) THEN
		RAISE EXCEPTION 'products is an empty array'
			USING ERRCODE = 'invalid_parameter_value',
			DETAIL = 'Loading it would delete every product, and orders would no longer be enriched.',
			HINT = 'Pass allow_empty => true to empty the product table on purpose.';
	END IF;

	FOR elem, idx IN
		SELECT e.value, (e.ordinality - 1)::integer
		FROM jsonb_array_elements(products) WITH ORDINALITY AS e
	LOOP
		IF jsonb_typeof(elem) <> 'object' THEN
			RAISE EXCEPTION 'invalid product at index %: element must be an object, not %',
				idx, jsonb_typeof(elem)
				USING ERRCODE = 'invalid_parameter_value';
		END IF;

		FOR field IN SELECT k FROM jsonb_object_keys(elem) AS k
		LOOP
			IF field NOT IN ('product_id', 'product_name', 'category', 'price') THEN
				RAISE EXCEPTION 'invalid product at index %: unknown field "%"', idx,
					fundrecs.shown_value(field)
					USING ERRCODE = 'invalid_parameter_value',
					HINT = 'The fields are product_id, product_name, category and price.';
			END IF;
		END LOOP;

		IF jsonb_typeof(elem->'product_id') IS DISTINCT FROM 'number' THEN
			RAISE EXCEPTION 'invalid product at index %: product_id must be a positive integer', idx
				USING ERRCODE = 'invalid_parameter_value',
				DETAIL = format('Found %s.', fundrecs.shown_value((elem->'product_id')::text));
		END IF;
		pid := (elem->>'product_id')::numeric;
		-- 1.0 is the integer 1; 1.5 and 1e12 are not product ids.
		IF pid < 1 OR pid > 2147483647 OR pid <> trunc(pid) THEN
			RAISE EXCEPTION 'invalid product at index %: product_id must be a positive integer', idx
				USING ERRCODE = 'invalid_parameter_value',
				DETAIL = format('Found %s; it must be between 1 and 2147483647.',
								fundrecs.shown_value((elem->'product_id')::text));
		END IF;

		FOREACH field IN ARRAY ARRAY['product_name', 'category']
		LOOP
			IF jsonb_typeof(elem->field) IS DISTINCT FROM 'string'
				OR btrim(elem->>field) = '' THEN
				RAISE EXCEPTION 'invalid product at index %: % must be a non-empty string', idx, field
					USING ERRCODE = 'invalid_parameter_value',
					DETAIL = format('Found %s.', fundrecs.shown_value((elem->field)::text));
			END IF;
		END LOOP;

		IF jsonb_typeof(elem->'price') IS DISTINCT FROM 'number' THEN
			RAISE EXCEPTION 'invalid product at index %: price must be a number >= 0', idx
				USING ERRCODE = 'invalid_parameter_value',
				DETAIL = format('Found %s.', fundrecs.shown_value((elem->'price')::text));
		END IF;
		price := (elem->>'price')::numeric;
		IF price < 0 THEN
			RAISE EXCEPTION 'invalid product at index %: price must be a number >= 0', idx
				USING ERRCODE = 'invalid_parameter_value',
				DETAIL = format('Found %s.', fundrecs.shown_value(price::text));
		END IF;
		IF price >= 10000000000 OR round(price, 2) <> price THEN
			RAISE EXCEPTION 'invalid product at index %: price % does not fit numeric(12,2)', idx,
				fundrecs.shown_value((elem->'price')::text)
				USING ERRCODE = 'numeric_value_out_of_range',
				DETAIL = 'Prices have at most 10 digits before the decimal point and 2 after it.';
		END IF;
	END LOOP;

	-- Duplicates, in one hashed pass: the first repeated id, by index.
	SELECT e.idx, e.first_idx, e.pid INTO dup
	FROM (SELECT (x.ordinality - 1)::integer AS idx,
				 (x.value->>'product_id')::numeric AS pid,
				 (min(x.ordinality) OVER (PARTITION BY (x.value->>'product_id')::numeric) - 1)::integer AS first_idx
		  FROM jsonb_array_elements(products) WITH ORDINALITY AS x) e
	WHERE e.idx > e.first_idx
	ORDER BY e.idx
	LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'invalid product at index %: product_id % is a duplicate', dup.idx, dup.pid
			USING ERRCODE = 'unique_violation',
			DETAIL = format('The same product_id is at index %s.', dup.first_idx);
	END IF;

	-- User catalog tables refuse INSERT ... ON CONFLICT: replace the rows.
	LOCK TABLE fundrecs.product_details IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM fundrecs.product_details;
	INSERT INTO fundrecs.product_details (product_id, product_name, category, price)
	SELECT (e->>'product_id')::numeric::integer, e->>'product_name', e->>'category',
		   (e->>'price')::numeric(12,2)
	FROM jsonb_array_elements(products) AS e;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

COMMENT ON FUNCTION fundrecs.load_products(jsonb, boolean) IS
	'Replaces fundrecs.product_details with a JSON array of products; returns their number';

CREATE FUNCTION fundrecs.load_products_file(path text, allow_empty boolean DEFAULT false)
	RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	contents text;
	products jsonb;
BEGIN
	contents := fundrecs.read_product_file(path);
	BEGIN
		products := contents::jsonb;
	EXCEPTION WHEN invalid_text_representation THEN
		RAISE EXCEPTION 'product file "%" is not valid JSON', path
			USING ERRCODE = 'invalid_text_representation',
			DETAIL = SQLERRM;
	END;
	RETURN fundrecs.load_products(products, allow_empty);
END
$$;

COMMENT ON FUNCTION fundrecs.load_products_file(text, boolean) IS
	'Replaces fundrecs.product_details with the products of a server-side JSON file';

-- What would make a slot with these plugin options silently emit nothing.
CREATE FUNCTION fundrecs.option_problems(options text[] DEFAULT '{}')
	RETURNS text[]
	AS 'MODULE_PATHNAME', 'fundrecs_option_problems'
	LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION fundrecs.option_problems(text[]) IS
	'Plugin option problems: "tables" entries matching no table, a missing orders table';
