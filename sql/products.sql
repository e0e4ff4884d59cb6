-- The product table, its loaders and category_slug.
\d fundrecs.product_details

SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00},
	{"product_id": 2, "product_name": "Phone", "category": "Electronics", "price": 800},
	{"product_id": 3, "product_name": "Desk Chair", "category": "Furniture", "price": 150.5}
]');
SELECT * FROM fundrecs.product_details ORDER BY product_id;

-- Every invalid element is refused with its index and field; the table is
-- unchanged after each.
SELECT fundrecs.load_products(NULL);
SELECT fundrecs.load_products('{"product_id": 1}');
SELECT fundrecs.load_products('[1]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": "b", "price": 1}, null]');
SELECT fundrecs.load_products('[{"product_name": "a", "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": "4", "product_name": "a", "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 0, "product_name": "a", "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": -3, "product_name": "a", "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 1.5, "product_name": "a", "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 3000000000, "product_name": "a", "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 4, "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "  ", "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": 7, "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": "", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": null, "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": "b"}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": "b", "price": "1"}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": "b", "price": -0.01}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": "b", "price": 1.005}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": "b", "price": 1e10}]');
SELECT fundrecs.load_products('[{"product_id": 4, "product_name": "a", "category": "b", "price": 1, "colour": "red"}]');
SELECT fundrecs.load_products('[
	{"product_id": 5, "product_name": "a", "category": "b", "price": 1},
	{"product_id": 6, "product_name": "a", "category": "b", "price": 1},
	{"product_id": 5, "product_name": "c", "category": "d", "price": 2}]');
SELECT * FROM fundrecs.product_details ORDER BY product_id;

-- An empty array empties the table only when asked; user catalog tables
-- refuse ON CONFLICT.
SELECT fundrecs.load_products('[]');
SELECT count(*) FROM fundrecs.product_details;
BEGIN;
SELECT fundrecs.load_products('[]', allow_empty => true);
SELECT count(*) FROM fundrecs.product_details;
ROLLBACK;

-- 1.0 is the integer 1; huge numbers are shown shortened in messages.
BEGIN;
SELECT fundrecs.load_products('[{"product_id": 1.0, "product_name": "a", "category": "b", "price": 1}]');
SELECT product_id FROM fundrecs.product_details;
ROLLBACK;
SELECT fundrecs.load_products('[{"product_id": 1e300, "product_name": "a", "category": "b", "price": 1}]');
SELECT fundrecs.load_products('[{"product_id": 1, "product_name": "a", "category": "b", "price": 1e-300}]');

-- Many products load in one pass (the duplicate check is hashed, not
-- quadratic); a duplicate among them is still named by both indexes.
BEGIN;
SELECT fundrecs.load_products(jsonb_agg(jsonb_build_object('product_id', g,
	'product_name', 'p' || g, 'category', 'c' || g % 7, 'price', g % 100))) AS loaded
FROM generate_series(1, 20000) g;
ROLLBACK;
SELECT fundrecs.load_products(jsonb_agg(jsonb_build_object('product_id', CASE WHEN g = 15000 THEN 123 ELSE g END,
	'product_name', 'p' || g, 'category', 'c', 'price', 1)))
FROM generate_series(1, 20000) g;
INSERT INTO fundrecs.product_details VALUES (1, 'x', 'y', 1) ON CONFLICT DO NOTHING;

-- The file loader: the seed's file, a missing file, a malformed one.  Errors
-- name the file; the helper hides the checkout's path to keep output stable.
\getenv abs_srcdir PG_ABS_SRCDIR
SELECT set_config('fundrecs_test.dir', :'abs_srcdir' || '/test/data', false) IS NOT NULL AS ok;
CREATE FUNCTION try_load_file(name text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	dir text := current_setting('fundrecs_test.dir');
	msg text; detail text; code text;
BEGIN
	RETURN 'loaded ' || fundrecs.load_products_file(
		CASE WHEN name LIKE '/%' THEN name ELSE dir || '/' || name END);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, code = RETURNED_SQLSTATE;
	RETURN code || ': ' || replace(msg, dir, '<dir>') ||
		coalesce(' (' || nullif(replace(detail, dir, '<dir>'), '') || ')', '');
END
$$;
SELECT try_load_file('product_details.json');
SELECT * FROM fundrecs.product_details ORDER BY product_id;
SELECT try_load_file('/nonexistent/products.json');
SELECT try_load_file('malformed_products.json');
SELECT try_load_file('invalid_products.json');
SELECT count(*) FROM fundrecs.product_details;

-- Only superusers and members of pg_read_server_files read server files.
CREATE ROLE fundrecs_loader;
GRANT USAGE ON SCHEMA fundrecs TO fundrecs_loader;
GRANT SELECT, INSERT, DELETE ON fundrecs.product_details TO fundrecs_loader;
GRANT EXECUTE ON FUNCTION try_load_file(text) TO fundrecs_loader;
SET ROLE fundrecs_loader;
SELECT try_load_file('product_details.json');
SELECT fundrecs.load_products('[{"product_id": 9, "product_name": "By loader", "category": "Misc", "price": 1}]');
RESET ROLE;
GRANT pg_read_server_files TO fundrecs_loader;
SET ROLE fundrecs_loader;
SELECT try_load_file('product_details.json');
RESET ROLE;
SELECT * FROM fundrecs.product_details ORDER BY product_id;
DROP OWNED BY fundrecs_loader;
DROP ROLE fundrecs_loader;
DROP FUNCTION try_load_file(text);

-- category_slug: ASCII kept, Latin letters transliterated, other scripts as
-- hex code points set apart, everything else separates; always a valid S3
-- key part and Hive partition value.
SELECT c, fundrecs.category_slug(c)
FROM unnest(ARRAY['Electronics', 'Home Office', '  Home   Office  ', 'Kids'' Toys & Games',
	'4K-TV/Audio', '___', '', 'Électronique', 'Straße & Gärten', 'Œuvres d''Ærø',
	'Łódź — Żywność', 'ĲSSEL', '日本', 'Жa', 'Ж Ж', 'Café☕Bar', '€ 100', 'UPPER lower 123']) AS c;
SELECT count(*) AS unsafe_slugs FROM (
	SELECT fundrecs.category_slug(chr(cp)) AS s FROM generate_series(1, 70000) cp
	WHERE cp NOT BETWEEN 55296 AND 57343) x
WHERE s !~ '^[a-z0-9]+(_[a-z0-9]+)*$';
SELECT fundrecs.category_slug(NULL) IS NULL AS strict;
