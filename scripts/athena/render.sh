#!/usr/bin/env bash
# Renders fundrecs_athena.sql for a bucket and prefix.
#   scripts/athena/render.sh BUCKET PREFIX [MORE_ROUTES]
# The routes (partition values) are the category slugs of
# fundrecs.product_details (read with psql and the usual PG* variables),
# plus customers, uncategorized, _unrouted, _resync (reset markers),
# _messages (logical decoding messages) and _error (rows an enrichment rule
# could not enrich); MORE_ROUTES (comma-separated: your enrichment rules'
# route slugs, say) are added to them.  Re-render and re-run the CREATE
# TABLE when categories or rules are added.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BUCKET PREFIX [MORE_ROUTES]" >&2; exit 2; }
bucket=$1
prefix=${2%/}
more=${3:-}
routes=$(psql -X -At -v more="$more" <<'SQL'
SELECT string_agg(r, ',' ORDER BY r) FROM (
	SELECT fundrecs.category_slug(category) AS r FROM fundrecs.product_details
	UNION SELECT unnest(ARRAY['customers', 'uncategorized', '_unrouted', '_resync', '_messages', '_error'])
	UNION SELECT btrim(m) FROM unnest(string_to_array(:'more', ',')) m WHERE btrim(m) <> '') s;
SQL
)
sed -e "s|@BUCKET@|$bucket|g" -e "s|@PREFIX@|$prefix|g" -e "s|@ROUTES@|$routes|g" \
	"$(dirname "$0")/fundrecs_athena.sql"
