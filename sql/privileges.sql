-- The extension's functions read with the caller's rights: load_rows()
-- needs SELECT on the table it loads and, for the orders table, on
-- fundrecs.product_details (it must not leak products through an orders
-- table the caller made up); the product loaders need the rights their
-- statements need.
\set SHOW_CONTEXT never
SELECT fundrecs.load_products('[
	{"product_id": 1, "product_name": "Laptop", "category": "Electronics", "price": 1200.00}
]');
CREATE ROLE fr_snoop;
CREATE SCHEMA snoop AUTHORIZATION fr_snoop;
GRANT USAGE ON SCHEMA fundrecs TO fr_snoop;
CREATE TABLE public.secret_orders (order_id int PRIMARY KEY, product_id int, quantity int);
INSERT INTO public.secret_orders VALUES (1, 1, 1);

SET ROLE fr_snoop;
SELECT * FROM fundrecs.product_details;
CREATE TABLE snoop.probe (order_id int PRIMARY KEY, product_id int, quantity int);
INSERT INTO snoop.probe VALUES (1, 1, 1);
-- Its own table, made the orders table: the products stay hidden.
SELECT fundrecs.load_rows('snoop.probe', '0/1',
	'{tables,snoop.*,orders_table,snoop.probe,include_timestamp,false}');
-- As a plain table it is its own to read.
SELECT fundrecs.load_rows('snoop.probe', '0/1', '{tables,snoop.*,include_timestamp,false}');
-- Someone else's table.
SELECT fundrecs.load_rows('public.secret_orders', '0/1', '{tables,public.*,include_timestamp,false}');
-- Writing or reading products from files.
SELECT fundrecs.load_products('[{"product_id": 9, "product_name": "x", "category": "y", "price": 1}]');
SELECT fundrecs.load_products_file('/etc/passwd');
RESET ROLE;

-- With SELECT granted, the load enriches.
GRANT SELECT ON fundrecs.product_details TO fr_snoop;
SET ROLE fr_snoop;
SELECT fundrecs.load_rows('snoop.probe', '0/1',
	'{tables,snoop.*,orders_table,snoop.probe,include_timestamp,false}');
RESET ROLE;

-- No function of the extension is SECURITY DEFINER, and every SQL or
-- PL/pgSQL one pins its search_path.
SELECT p.proname, p.prosecdef, p.proconfig
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'fundrecs')
ORDER BY 1;

DROP TABLE public.secret_orders;
DROP SCHEMA snoop CASCADE;
REVOKE ALL ON fundrecs.product_details FROM fr_snoop;
REVOKE ALL ON SCHEMA fundrecs FROM fr_snoop;
DROP ROLE fr_snoop;
