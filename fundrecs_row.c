/*-------------------------------------------------------------------------
 *
 * fundrecs_row.c
 *	  A change as one row of JSON: the header (op, table, positions, the
 *	  route), the key, the columns, the enrichment by the table's rules
 *	  (fundrecs_enrich.c) as of the change; in fundrecs' own format or
 *	  AWS DMS's.
 *	  Used by the decoder (fundrecs_decoder.c) and the initial load
 *	  (fundrecs_load.c) alike; the values themselves are fundrecs_json.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/htup_details.h"
#include "access/tupconvert.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"

#include "fundrecs_compat.h"

/* ----------------------------------------------------------------
 * Row assembly
 * ----------------------------------------------------------------
 */

/* The part of the header that is the same for every row of a transaction. */
void
fr_append_txn_fragment(StringInfo out, const FrOptions *opts, const FrRowMeta *meta)
{
	if (opts->include_lsn)
	{
		fr_append_lit(out, ",\"commit_lsn\":");
		fr_json_append_lsn(out, meta->commit_lsn);
	}
	if (opts->include_xid)
	{
		/* Load rows belong to no transaction of the source. */
		fr_append_lit(out, ",\"xid\":");
		if (TransactionIdIsValid(meta->xid))
			fr_json_append_uint(out, meta->xid);
		else
			fr_append_lit(out, "null");
	}
	if (opts->include_timestamp)
	{
		fr_append_lit(out, ",\"commit_time\":");
		fr_json_append_timestamptz(out, meta->commit_time);
	}
}

static void
append_header(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			  FrRelInfo *ri)
{
	fr_append_lit(out, "{\"op\":\"");
	fr_append_bytes(out, meta->op, strlen(meta->op));
	fr_append_lit(out, "\",");
	fr_append_bytes(out, ri->schema_table_json, ri->schema_table_json_len);
	if (opts->include_lsn)
	{
		fr_append_lit(out, ",\"lsn\":");
		fr_json_append_lsn(out, meta->lsn);
	}
	if (meta->txn_fragment != NULL)
		fr_append_bytes(out, meta->txn_fragment, meta->txn_fragment_len);
	else
		fr_append_txn_fragment(out, opts, meta);
}

/* Is the attribute's value an unchanged TOAST pointer? */
static inline bool
is_unchanged_toast(FrColumn *col, Datum value)
{
	return col->typisvarlena &&
		VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value));
}

/* A tuple deformed once, so that each column costs O(1) to read. */
typedef struct FrRow
{
	int			natts;
	Datum	   *values;
	bool	   *isnull;
} FrRow;

/*
 * Two rows' arrays (a new and an old tuple), kept for the life of the
 * backend and grown to the widest relation seen: three pallocs per tuple
 * fewer.  A row is finished before the next is deformed.
 */
static FrRow scratch_rows[2];
static int	scratch_natts = 0;

/*
 * The enrichment of a new and an old tuple: their buffers live as long as
 * the backend too (a kilobyte allocated per row was a tenth of the rules'
 * cost on W1).
 */
static FrEnriched scratch_enriched[2];

static FrEnriched *
enriched(int which)
{
	FrEnriched *e = &scratch_enriched[which];

	if (e->json.data == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&e->json);
		MemoryContextSwitchTo(oldcxt);
	}
	return e;
}

static FrRow *
deform(TupleDesc desc, HeapTuple tuple, int which)
{
	FrRow	   *row = &scratch_rows[which];

	if (tuple == NULL)
		return NULL;
	if (desc->natts > scratch_natts)
	{
		int			n = Max(desc->natts, 64);

		for (int i = 0; i < 2; i++)
		{
			if (scratch_rows[i].values != NULL)
			{
				pfree(scratch_rows[i].values);
				pfree(scratch_rows[i].isnull);
			}
			scratch_rows[i].values = MemoryContextAlloc(TopMemoryContext, sizeof(Datum) * n);
			scratch_rows[i].isnull = MemoryContextAlloc(TopMemoryContext, sizeof(bool) * n);
		}
		scratch_natts = n;
	}
	Assert(desc->natts <= scratch_natts);
	row->natts = desc->natts;
	heap_deform_tuple(tuple, desc, row->values, row->isnull);
	return row;
}

/*
 * Where a key column's value comes from: the new row, unless the column is
 * an out-of-line value that did not change (an on-disk TOAST pointer), in
 * which case PostgreSQL logged the old key and its value is there; the old
 * row alone for a delete.  NULL when neither row holds it: no old tuple was
 * logged (REPLICA IDENTITY NOTHING, or a key the identity does not cover).
 */
static inline FrRow *
key_source(FrColumn *col, FrRow *newrow, FrRow *oldrow, bool old_whole)
{
	int			i = col->attnum - 1;

	if (newrow != NULL && i < newrow->natts &&
		(newrow->isnull[i] || !is_unchanged_toast(col, newrow->values[i])))
		return newrow;
	if (oldrow != NULL && i < oldrow->natts && (old_whole || col->is_key) &&
		!oldrow->isnull[i] && !is_unchanged_toast(col, oldrow->values[i]))
		return oldrow;
	return NULL;
}

/*
 * Does the change have a key?  Every key column must be found in one of its
 * rows (key_source); a key with a missing column is left out rather than
 * written with a wrong null.
 */
static bool
has_key(FrRelInfo *ri, FrRow *newrow, FrRow *oldrow)
{
	if (ri->nkeys == 0)
		return false;
	for (int i = 0; i < ri->nkeys; i++)
	{
		FrColumn   *col = &ri->cols[ri->keyattrs[i] - 1];

		if (key_source(col, newrow, oldrow, ri->identity_full) == NULL)
			return false;
	}
	return true;
}

/* Appends ,"key":{...}; has_key() must have said there is one. */
static void
append_key(StringInfo out, FrRelInfo *ri, FrRow *newrow, FrRow *oldrow)
{
	fr_append_lit(out, ",\"key\":{");
	for (int i = 0; i < ri->nkeys; i++)
	{
		FrColumn   *col = &ri->cols[ri->keyattrs[i] - 1];
		FrRow	   *row = key_source(col, newrow, oldrow, ri->identity_full);

		Assert(row != NULL);
		if (i > 0)
			fr_append_bytes(out, col->json_name - 1, col->json_name_len + 1);
		else
			fr_append_bytes(out, col->json_name, col->json_name_len);
		if (row->isnull[col->attnum - 1])
			fr_append_lit(out, "null");
		else
			fr_json_append_value(out, col, row->values[col->attnum - 1]);
	}
	fr_append_char(out, '}');
}

/*
 * Appends prefix, which opens the object ("...:{"), then a tuple's
 * columns and the closing '}'; with key_only, just the key columns (an old
 * tuple that is not whole).  In decoding, an on-disk
 * TOAST pointer is an unchanged value: it is left out and its column named
 * in *toast (when toast is not NULL).
 */
static void
append_tuple(StringInfo out, const char *prefix, int prefix_len, const FrRowMeta *meta,
			 FrRelInfo *ri, FrRow *row, bool key_only, FrEnriched *rules, StringInfo toast)
{
	bool		first = true;

	/* prefix ends with the object's '{' */
	fr_append_bytes(out, prefix, prefix_len);
	for (int i = 0; i < row->natts && i < ri->natts; i++)
	{
		FrColumn   *col = &ri->cols[i];
		bool		isnull = row->isnull[i];
		Datum		value = row->values[i];

		if (col->dropped || col->excluded || (key_only && !col->is_key))
			continue;
		if (!isnull && meta->toast_pointers_unchanged && is_unchanged_toast(col, value))
		{
			if (toast != NULL)
			{
				/* Made on first use: most rows have no unchanged TOAST value. */
				if (toast->data == NULL)
					initStringInfo(toast);
				else
					fr_append_char(toast, ',');
				fr_append_bytes(toast, col->json_name, col->json_name_len - 1);
			}
			continue;
		}
		if (first)
			fr_append_bytes(out, col->json_name, col->json_name_len);
		else
			fr_append_bytes(out, col->json_name - 1, col->json_name_len + 1);
		first = false;
		if (isnull)
			fr_append_lit(out, "null");
		else
			fr_json_append_value(out, col, value);
	}
	fr_append_char(out, '}');

	if (rules != NULL && fr_rules_have_columns(rules))
	{
		/* The rules' columns, after the row's own; no comma after a '{'. */
		bool		skip = out->data[out->len - 2] == '{';

		out->len--;
		fr_rules_write(out, rules, skip);
		fr_append_char(out, '}');
	}
}

/* DMS's timestamp: ISO 8601 in UTC with six fractional digits. */
static void
append_dms_timestamp(StringInfo out, TimestampTz ts)
{
	StringInfoData buf;
	char	   *dot;
	int			frac;

	initStringInfo(&buf);
	fr_json_append_timestamptz(&buf, ts);
	/* buf: "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" with its quotes */
	buf.data[buf.len - 2] = '\0';
	dot = strchr(buf.data, '.');
	frac = dot ? (int) strlen(dot + 1) : 0;
	appendStringInfoString(out, buf.data);
	appendStringInfoString(out, dot ? "" : ".");
	for (; frac < 6; frac++)
		fr_append_char(out, '0');
	fr_append_lit(out, "Z\"");
	pfree(buf.data);
}

/*
 * The DMS metadata object up to its fundrecs additions: timestamp,
 * record-type, operation, partition-key-type, schema-name, table-name,
 * transaction-id (not for load rows), lsn and commit-lsn.  Left open.
 */
static void
append_dms_metadata(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
					FrRelInfo *ri, const char *record_type, const char *operation,
					const char *partition_key_type)
{
	fr_append_lit(out, "\"metadata\":{");
	if (opts->include_timestamp)
	{
		fr_append_lit(out, "\"timestamp\":");
		append_dms_timestamp(out, meta->commit_time);
		fr_append_char(out, ',');
	}
	appendStringInfo(out, "\"record-type\":\"%s\",\"operation\":\"%s\","
					 "\"partition-key-type\":\"%s\",\"schema-name\":",
					 record_type, operation, partition_key_type);
	fr_json_append_string(out, ri->schema_name);
	fr_append_lit(out, ",\"table-name\":");
	fr_json_append_string(out, ri->table_name);
	if (opts->include_xid && TransactionIdIsValid(meta->xid))
		appendStringInfo(out, ",\"transaction-id\":%u", meta->xid);
	if (opts->include_lsn)
	{
		fr_append_lit(out, ",\"lsn\":");
		fr_json_append_lsn(out, meta->lsn);
		fr_append_lit(out, ",\"commit-lsn\":");
		fr_json_append_lsn(out, meta->commit_lsn);
	}
}

/*
 * The DMS Kinesis record: {"data":{...},"before-image":{...},"metadata":{...}}.
 * Deletes carry the old row (its key columns at least) in data; an update's
 * old row, when PostgreSQL gives one, goes in before-image.  fundrecs adds
 * route, key, lsn and commit-lsn to metadata, which DMS consumers ignore.
 */
static void
write_row_dms(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			  FrRelInfo *ri, FrRow *newtuple, FrRow *oldtuple,
			  const char *route, FrEnriched *newrules, FrEnriched *oldrules,
			  const char *enrich_error)
{
	StringInfoData toast;

	toast.data = NULL;
	toast.len = 0;
	if (newtuple != NULL)
		append_tuple(out, FR_LIT_ARGS("{\"data\":{"), meta, ri, newtuple, false, newrules,
					 &toast);
	else if (oldtuple != NULL)
		append_tuple(out, FR_LIT_ARGS("{\"data\":{"), meta, ri, oldtuple, !ri->identity_full,
					 oldrules, NULL);
	else
	{
		/*
		 * A delete that logged no old row (REPLICA IDENTITY NOTHING, or
		 * DEFAULT without a key): DMS's data object, empty.
		 */
		fr_append_lit(out, "{\"data\":{}");
	}
	if (newtuple != NULL && oldtuple != NULL)
		append_tuple(out, FR_LIT_ARGS(",\"before-image\":{"), meta, ri, oldtuple,
					 !ri->identity_full, oldrules, NULL);

	fr_append_char(out, ',');
	append_dms_metadata(out, opts, meta, ri, "data", meta->op, "primary-key");
	fr_append_lit(out, ",\"route\":");
	appendStringInfoString(out, route);
	if (enrich_error != NULL)
	{
		fr_append_lit(out, ",\"enrich-error\":");
		fr_json_append_string(out, enrich_error);
	}
	if (has_key(ri, newtuple, oldtuple))
		append_key(out, ri, newtuple, oldtuple);
	fr_append_char(out, '}');

	/*
	 * Beside data and metadata, as the native format's unchanged_toast: the
	 * columns of "data" that are not the row's values.
	 */
	if (toast.len > 0)
	{
		fr_append_lit(out, ",\"unchanged-toast\":[");
		fr_append_bytes(out, toast.data, toast.len);
		fr_append_char(out, ']');
	}
	fr_append_char(out, '}');
}

/*
 * A row (new, or a whole old one) enriched by the rules of its table:
 * deformed already (row), or made of the table's rows by map when the rules
 * are its root's.
 */
static FrEnriched *
enrich_by_rules(FrEnriched *out, FrRuleSet *rules, const FrOptions *opts, const FrRowMeta *meta,
				FrRelInfo *ri, TupleConversionMap *map, HeapTuple tuple, FrRow *row)
{
	Datum	   *values = row->values;
	bool	   *isnull = row->isnull;
	int			natts = row->natts;

	if (map != NULL)
	{
		HeapTuple	converted = execute_attr_map_tuple(tuple, map);
		TupleDesc	desc = map->outdesc;

		natts = desc->natts;
		values = palloc(sizeof(Datum) * natts);
		isnull = palloc(sizeof(bool) * natts);
		heap_deform_tuple(converted, desc, values, isnull);
	}
	fr_rules_apply(rules, opts, values, isnull, natts, meta, ri->table_name, out);
	return out;
}

/*
 * Writes one row message; newtuple or oldtuple may be NULL.  Native:
 * header, key, route, data, old, unchanged_toast.  The initial load formats
 * its rows here too (op "load"), so both are the same shape.
 *
 * A table is enriched by its rules; the orders table without rules of its
 * own by the built-in rule (fr_rules_builtin), the same way.
 */
void
fr_write_row(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
			 FrRelInfo *ri, TupleDesc desc, HeapTuple newheap, HeapTuple oldheap)
{
	FrRow	   *newtuple = deform(desc, newheap, 0);
	FrRow	   *oldtuple = deform(desc, oldheap, 1);
	const char *route;
	int			route_len;
	StringInfoData toast;
	FrRuleSet  *rules = NULL;
	TupleConversionMap *map = NULL;
	FrEnriched *newrules = NULL;
	FrEnriched *oldrules = NULL;
	const char *enrich_error = NULL;
	FrRulesCache *cache = meta->load ? meta->load->rules : NULL;

	if (OidIsValid(ri->rules_relid))
	{
		rules = fr_rules_get(cache, meta->load ? meta->load->snapshot : NULL,
							 ri->rules_relid, meta->cache_usable);
		map = ri->rules_map;
	}
	if (rules == NULL && ri->is_orders && ri->enrich_error == NULL)
	{
		/*
		 * Its columns are numbered as the emitted table's (the root's,
		 * as_root).
		 */
		rules = fr_rules_builtin(cache, ri->as_root ? ri->root_relid : ri->relid,
								 ri->product_attnum, ri->quantity_attnum,
								 meta->cache_usable);
		map = NULL;
	}
	if (rules != NULL)
	{
		if (newheap != NULL)
			newrules = enrich_by_rules(enriched(0), rules, opts, meta, ri, map, newheap,
									   newtuple);
		if (oldheap != NULL && ri->identity_full)
			oldrules = enrich_by_rules(enriched(1), rules, opts, meta, ri, map, oldheap,
									   oldtuple);
		enrich_error = newrules ? newrules->error : oldrules ? oldrules->error : NULL;
		if (enrich_error != NULL)
		{
			route = "\"" FR_ROUTE_ERROR "\"";
			route_len = strlen(route);
		}
		else if (!fr_rules_have_route(rules))
		{
			route = ri->route_json;
			route_len = ri->route_json_len;
		}
		else if (newrules != NULL || oldrules != NULL)
		{
			FrEnriched *e = newrules != NULL ? newrules : oldrules;

			route = e->route_json;
			route_len = e->route_len;
			if (route == NULL)	/* no rule with a route got that far */
			{
				route = "\"" FR_ROUTE_UNCATEGORIZED "\"";
				route_len = strlen(route);
			}
		}
		else
		{
			/* A delete that logged only the key: its route is unknown. */
			route = "null";
			route_len = 4;
		}
	}
	else if (ri->is_orders && ri->enrich_error != NULL)
	{
		enrich_error = ri->enrich_error;
		if (opts->on_enrich_error == FR_ENRICH_ERROR_FAIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("could not enrich the change at %X/%X of table \"%s.%s\"",
							LSN_FORMAT_ARGS(meta->lsn), ri->schema_name, ri->table_name),
					 errdetail("The %s.", ri->enrich_error),
					 errhint("Set the plugin options product_column and quantity_column to the columns' current names, or set on_enrich_error to emit to ship such rows unenriched with route \"%s\".",
							 FR_ROUTE_ERROR)));
		route = "\"" FR_ROUTE_ERROR "\"";
		route_len = strlen(route);
		/* The rule's columns are there all the same, null. */
		if (newtuple != NULL)
		{
			newrules = enriched(0);
			resetStringInfo(&newrules->json);
			appendStringInfoString(&newrules->json, fr_rules_builtin_nulls());
			newrules->route_json = NULL;
			newrules->error = NULL;
			newrules->entry = NULL;
		}
	}
	else
	{
		route = ri->route_json;
		route_len = ri->route_json_len;
	}

	if (opts->format == FR_FORMAT_DMS)
	{
		write_row_dms(out, opts, meta, ri, newtuple, oldtuple, route, newrules, oldrules,
					  enrich_error);
		return;
	}

	append_header(out, opts, meta, ri);
	/* Every row but a delete's has its new tuple; a delete has no other. */
	Assert(newtuple != NULL || strcmp(meta->op, "delete") == 0);
	Assert(newtuple == NULL || strcmp(meta->op, "delete") != 0);
	if (has_key(ri, newtuple, oldtuple))
		append_key(out, ri, newtuple, oldtuple);
	fr_append_lit(out, ",\"route\":");
	fr_append_bytes(out, route, route_len);
	if (enrich_error != NULL)
	{
		fr_append_lit(out, ",\"enrich_error\":");
		fr_json_append_string(out, enrich_error);
	}

	toast.data = NULL;
	toast.len = 0;
	if (newtuple != NULL)
		append_tuple(out, FR_LIT_ARGS(",\"data\":{"), meta, ri, newtuple, false, newrules,
					 &toast);
	if (oldtuple != NULL)
		append_tuple(out, FR_LIT_ARGS(",\"old\":{"), meta, ri, oldtuple, !ri->identity_full,
					 oldrules, NULL);
	if (toast.len > 0)
	{
		fr_append_lit(out, ",\"unchanged_toast\":[");
		fr_append_bytes(out, toast.data, toast.len);
		fr_append_char(out, ']');
	}
	fr_append_char(out, '}');
}

/* A truncate: native, or a DMS control record (which DMS consumers skip). */
void
fr_write_truncate(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
				  FrRelInfo *ri)
{
	/* A truncated orders table spans every route: no single one. */
	const char *route = ri->is_orders ? "null" : ri->route_json;

	if (opts->format == FR_FORMAT_DMS)
	{
		fr_append_char(out, '{');
		append_dms_metadata(out, opts, meta, ri, "control", "truncate-table", "schema-table");
		appendStringInfo(out, ",\"route\":%s", route);
		if (ri->as_root)
			appendStringInfo(out, ",\"partition\":%s", ri->partition_json);
		fr_append_lit(out, "}}");
		return;
	}
	append_header(out, opts, meta, ri);
	appendStringInfo(out, ",\"route\":%s", route);
	/* Only this partition of the table was truncated. */
	if (ri->as_root)
		appendStringInfo(out, ",\"partition\":%s", ri->partition_json);
	fr_append_char(out, '}');
}
