// The Athena views of scripts/athena/fundrecs_athena.sql, in DuckDB's SQL,
// over a local copy of the S3 objects (same layout: route=/dt= as Hive
// partitions).  Prints the figures the tests compare with PostgreSQL.
//   node athena_duckdb.js DIRECTORY [SQL]   (from s3_tool.py download --hive-route)
// SQL, when given, is run over the views too; its rows come back as "query".
'use strict';
const { DuckDBInstance } = require('@duckdb/node-api');

const dir = process.argv[2];
const lsn = (col) =>
  `(('0x' || split_part(${col}, '/', 1))::UBIGINT * 4294967296 + ('0x' || split_part(${col}, '/', 2))::UBIGINT)`;

const views = [
  `CREATE VIEW cdc_rows AS
   SELECT * FROM read_json('${dir}/route=*/dt=*/*.json*', format = 'newline_delimited',
     hive_partitioning = true,
     columns = {op: 'VARCHAR', "schema": 'VARCHAR', "table": 'VARCHAR', lsn: 'VARCHAR',
                commit_lsn: 'VARCHAR', "key": 'JSON', data: 'JSON', old: 'JSON'})`,
  // changes: one row per (table, key, lsn, op), as the Athena view; only
  // transactions committed at or after the latest reset marker.
  `CREATE VIEW changes AS
   SELECT d.* FROM (
     SELECT r.*, ${lsn('commit_lsn')} AS commit_pos, ${lsn('lsn')} AS change_pos,
       row_number() OVER (PARTITION BY r."schema", r."table", r."key"::VARCHAR, r.lsn, r.op
                          ORDER BY r.commit_lsn) AS copy_no
     FROM cdc_rows r WHERE r.op NOT IN ('truncate', 'reset')) d
   CROSS JOIN (SELECT coalesce(max(${lsn('commit_lsn')}), 0) AS reset_pos
               FROM cdc_rows WHERE op = 'reset') m
   WHERE d.copy_no = 1 AND d.commit_pos >= m.reset_pos`,
  `CREATE VIEW customers AS
   SELECT (data->>'customer_id')::INT AS customer_id, data->>'customer_name' AS customer_name,
          data->>'location' AS location
   FROM changes WHERE "table" = 'customers' AND op IN ('load', 'insert', 'update')`,
  `CREATE VIEW electronics_orders AS
   SELECT (data->>'order_id')::BIGINT AS order_id, (data->>'total_price')::DECIMAL(38,2) AS total_price
   FROM changes WHERE "table" = 'orders' AND route = 'electronics' AND op IN ('load', 'insert', 'update')`,
  `CREATE VIEW furniture_orders AS
   SELECT (data->>'order_id')::BIGINT AS order_id, (data->>'total_price')::DECIMAL(38,2) AS total_price
   FROM changes WHERE "table" = 'orders' AND route = 'furniture' AND op IN ('load', 'insert', 'update')`,
  `CREATE VIEW orders_current AS
   SELECT route, (data->>'order_id')::BIGINT AS order_id, (data->>'product_id')::INT AS product_id,
          (data->>'quantity')::INT AS quantity, data->>'category' AS category,
          (data->>'price')::DECIMAL(12,2) AS price, (data->>'total_price')::DECIMAL(38,2) AS total_price
   FROM (SELECT c.*, row_number() OVER (PARTITION BY "key"->>'order_id'
                                         ORDER BY commit_pos DESC, change_pos DESC) AS version_no
         FROM changes c WHERE "table" = 'orders') v
   WHERE version_no = 1 AND op <> 'delete'`,
  `CREATE VIEW customers_current AS
   SELECT (data->>'customer_id')::INT AS customer_id, data->>'customer_name' AS customer_name,
          data->>'location' AS location
   FROM (SELECT c.*, row_number() OVER (PARTITION BY "key"->>'customer_id'
                                         ORDER BY commit_pos DESC, change_pos DESC) AS version_no
         FROM changes c WHERE "table" = 'customers') v
   WHERE version_no = 1 AND op <> 'delete'`,
  // The generic form, for any table (those enriched by rules): the latest
  // version of each key, data as JSON.
  `CREATE VIEW current_json AS
   SELECT "schema", "table", route, "key", data
   FROM (SELECT c.*, row_number() OVER (PARTITION BY "schema", "table", "key"::VARCHAR
                                         ORDER BY commit_pos DESC, change_pos DESC) AS version_no
         FROM changes c) v
   WHERE version_no = 1 AND op <> 'delete'`,
];

(async () => {
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  for (const v of views) await c.run(v);
  const q = async (sql) => (await c.runAndReadAll(sql)).getRowObjectsJson();
  const out = {
    per_route: await q(`SELECT route, count(*) AS orders, sum(total_price)::VARCHAR AS total
                        FROM orders_current GROUP BY route ORDER BY route`),
    customers_current: (await q('SELECT count(*) AS n FROM customers_current'))[0].n,
    customers_checksum: (await q(`SELECT coalesce(sum(hash(customer_id, customer_name, location)), 0)::VARCHAR AS h
                                  FROM customers_current`))[0].h,
    orders_current_ids: (await q('SELECT count(DISTINCT order_id) AS n FROM orders_current'))[0].n,
    seed_views: (await q(`SELECT (SELECT count(*) FROM customers) AS customers,
                                 (SELECT count(*) FROM electronics_orders) AS electronics_orders,
                                 (SELECT count(*) FROM furniture_orders) AS furniture_orders`))[0],
    rows_written: (await q('SELECT count(*) AS n FROM cdc_rows'))[0].n,
    changes: (await q('SELECT count(*) AS n FROM changes'))[0].n,
    objects_routes: await q(`SELECT DISTINCT route FROM cdc_rows ORDER BY route`),
  };
  if (process.argv[3]) out.query = await q(process.argv[3]);
  console.log(JSON.stringify(out));
})().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
