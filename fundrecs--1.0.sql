/* fundrecs--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION fundrecs" to load this file. \quit

-- The schema "fundrecs" is created by CREATE EXTENSION (see the control file).

-- Product details joined with orders during logical decoding.  A user
-- catalog table, so the output plugin can read it through the historic
-- snapshot: each change sees the products as they were when it was made.
CREATE TABLE fundrecs.product_details (
	product_id integer PRIMARY KEY,
	product_name text NOT NULL,
	category text NOT NULL,
	price numeric(12,2) NOT NULL CHECK (price >= 0)
) WITH (user_catalog_table = true);

COMMENT ON TABLE fundrecs.product_details IS
	'Products that fundrecs_decoder joins with orders; load with fundrecs.load_products()';

-- pg_dump keeps the products with the extension.
SELECT pg_catalog.pg_extension_config_dump('fundrecs.product_details', '');

CREATE FUNCTION fundrecs.category_slug(category text) RETURNS text
	AS 'MODULE_PATHNAME', 'fundrecs_category_slug'
	LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION fundrecs.category_slug(text) IS
	'The route of a category: lower case ASCII letters and digits, other runs as one underscore';

-- Replaces the whole product table with the array, atomically.  Every
-- element is checked before the table is touched; the first invalid one
-- raises an error that names its array index and field.
CREATE FUNCTION fundrecs.load_products(products jsonb) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	elem jsonb;
	idx integer;
	pid numeric;
	price numeric;
	field text;
	seen integer[] := '{}';
	first_idx integer;
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
				RAISE EXCEPTION 'invalid product at index %: unknown field "%"', idx, field
					USING ERRCODE = 'invalid_parameter_value',
					HINT = 'The fields are product_id, product_name, category and price.';
			END IF;
		END LOOP;

		IF jsonb_typeof(elem->'product_id') IS DISTINCT FROM 'number' THEN
			RAISE EXCEPTION 'invalid product at index %: product_id must be a positive integer', idx
				USING ERRCODE = 'invalid_parameter_value',
				DETAIL = format('Found %s.', coalesce(elem->>'product_id', 'nothing'));
		END IF;
		pid := (elem->>'product_id')::numeric;
		IF pid <> trunc(pid) OR pid < 1 OR pid > 2147483647 THEN
			RAISE EXCEPTION 'invalid product at index %: product_id must be a positive integer', idx
				USING ERRCODE = 'invalid_parameter_value',
				DETAIL = format('Found %s; it must be between 1 and 2147483647.', pid);
		END IF;

		FOREACH field IN ARRAY ARRAY['product_name', 'category']
		LOOP
			IF jsonb_typeof(elem->field) IS DISTINCT FROM 'string'
				OR btrim(elem->>field) = '' THEN
				RAISE EXCEPTION 'invalid product at index %: % must be a non-empty string', idx, field
					USING ERRCODE = 'invalid_parameter_value',
					DETAIL = format('Found %s.', coalesce((elem->field)::text, 'nothing'));
			END IF;
		END LOOP;

		IF jsonb_typeof(elem->'price') IS DISTINCT FROM 'number' THEN
			RAISE EXCEPTION 'invalid product at index %: price must be a number >= 0', idx
				USING ERRCODE = 'invalid_parameter_value',
				DETAIL = format('Found %s.', coalesce((elem->'price')::text, 'nothing'));
		END IF;
		price := (elem->>'price')::numeric;
		IF price < 0 THEN
			RAISE EXCEPTION 'invalid product at index %: price must be a number >= 0', idx
				USING ERRCODE = 'invalid_parameter_value',
				DETAIL = format('Found %s.', price);
		END IF;
		IF price >= 10000000000 OR round(price, 2) <> price THEN
			RAISE EXCEPTION 'invalid product at index %: price % does not fit numeric(12,2)', idx, price
				USING ERRCODE = 'numeric_value_out_of_range',
				DETAIL = 'Prices have at most 10 digits before the decimal point and 2 after it.';
		END IF;

		IF pid::integer = ANY (seen) THEN
			first_idx := array_position(seen, pid::integer) - 1;
			RAISE EXCEPTION 'invalid product at index %: product_id % is a duplicate', idx, pid
				USING ERRCODE = 'unique_violation',
				DETAIL = format('The same product_id is at index %s.', first_idx);
		END IF;
		seen := seen || pid::integer;
	END LOOP;

	-- User catalog tables refuse INSERT ... ON CONFLICT: replace the rows.
	LOCK TABLE fundrecs.product_details IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM fundrecs.product_details;
	INSERT INTO fundrecs.product_details (product_id, product_name, category, price)
	SELECT (e->>'product_id')::integer, e->>'product_name', e->>'category',
		   (e->>'price')::numeric(12,2)
	FROM jsonb_array_elements(products) AS e;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

COMMENT ON FUNCTION fundrecs.load_products(jsonb) IS
	'Replaces fundrecs.product_details with a JSON array of products; returns their number';

-- The file reader behind load_products_file(); checks the caller itself.
CREATE FUNCTION fundrecs.read_product_file(path text) RETURNS text
	AS 'MODULE_PATHNAME', 'fundrecs_read_product_file'
	LANGUAGE C VOLATILE STRICT;


CREATE FUNCTION fundrecs.load_products_file(path text) RETURNS integer
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
	RETURN fundrecs.load_products(products);
END
$$;

COMMENT ON FUNCTION fundrecs.load_products_file(text) IS
	'Replaces fundrecs.product_details with the products of a server-side JSON file';
