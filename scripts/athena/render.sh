#!/usr/bin/env bash
# Renders fundrecs_athena.sql for a bucket and prefix.
#   scripts/athena/render.sh BUCKET PREFIX [ROUTES]
# ROUTES (comma-separated partition values) defaults to the category slugs
# of fundrecs.product_details (read with psql and the usual PG* variables),
# plus customers, uncategorized, _unrouted and _resync (reset markers).  Re-render and re-run the
# CREATE TABLE when categories are added.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BUCKET PREFIX [ROUTES]" >&2; exit 2; }
bucket=$1
prefix=${2%/}
routes=${3:-}
if [ -z "$routes" ]; then
	routes=$(psql -X -At -c "SELECT string_agg(r, ',' ORDER BY r) FROM (
		SELECT DISTINCT fundrecs.category_slug(category) AS r FROM fundrecs.product_details
		UNION SELECT unnest(ARRAY['customers', 'uncategorized', '_unrouted', '_resync'])) s")
fi
sed -e "s|@BUCKET@|$bucket|g" -e "s|@PREFIX@|$prefix|g" -e "s|@ROUTES@|$routes|g" \
	"$(dirname "$0")/fundrecs_athena.sql"
