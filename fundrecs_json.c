/*-------------------------------------------------------------------------
 *
 * fundrecs_json.c
 *	  Column values as JSON, and the per-relation output info cache.
 *
 * Everything that needs the catalogs (column names, types, output
 * functions, replica identity) is looked up once per relation and kept
 * in FrRelInfo until a relcache invalidation names the relation.  The
 * per-change path then only calls output functions.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tupconvert.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "fundrecs_compat.h"

static HTAB *relinfo_hash = NULL;
/* The entry found last: changes come in runs of one table.  Entries are
 * never removed, only marked invalid, so it stays valid with the hash. */
static FrRelInfo *relinfo_last = NULL;
static bool relinfo_callback_registered = false;

static void
relinfo_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	FrRelInfo  *entry;

	if (relinfo_hash == NULL)
		return;

	/* An entry, and the partitions emitted as its root when it is one. */
	hash_seq_init(&status, relinfo_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (!OidIsValid(relid) || entry->relid == relid || entry->root_relid == relid)
			entry->valid = false;
	}
}

/*
 * Frees the cache and its entries' contexts.  Called when a decoding
 * session ends (the plugin's shutdown callback, as pgoutput frees its
 * relation cache), and at the next start when a session ended in an error
 * before its shutdown.
 */
void
fr_relinfo_shutdown(void)
{
	HASH_SEQ_STATUS status;
	FrRelInfo  *entry;

	if (relinfo_hash == NULL)
		return;
	hash_seq_init(&status, relinfo_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->cxt != NULL)
			MemoryContextDelete(entry->cxt);
	}
	hash_destroy(relinfo_hash);
	relinfo_hash = NULL;
	relinfo_last = NULL;
}

/*
 * Called at the start of every decoding session: entries depend on the
 * session's options, so a new session starts from an empty cache.
 */
void
fr_relinfo_init(void)
{
	HASHCTL		ctl;

	fr_relinfo_shutdown();

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(FrRelInfo);
	ctl.hcxt = CacheMemoryContext;
	relinfo_hash = hash_create("fundrecs relation info", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* Callbacks cannot be unregistered: register once per backend. */
	if (!relinfo_callback_registered)
	{
		CacheRegisterRelcacheCallback(relinfo_invalidate, (Datum) 0);
		relinfo_callback_registered = true;
	}
}

static FrValueKind
kind_of_type(Oid basetypid)
{
	switch (basetypid)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
			return FR_KIND_INTEGER;
		case NUMERICOID:
			return FR_KIND_NUMERIC;
		case FLOAT4OID:
		case FLOAT8OID:
			return FR_KIND_FLOAT;
		case BOOLOID:
			return FR_KIND_BOOL;
		case JSONOID:
			return FR_KIND_JSON;
		case JSONBOID:
			return FR_KIND_JSONB;
		case DATEOID:
		case TIMEOID:
		case TIMETZOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return FR_KIND_DATETIME;
		case BYTEAOID:
			return FR_KIND_BYTEA;
		default:
			return FR_KIND_TEXT;
	}
}

/* Returns "str" as a JSON string literal, quotes included. */
char *
fr_json_quote(const char *str)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, str);
	return buf.data;
}

static AttrNumber
find_column(FrRelInfo *ri, TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/*
 * Why the enrichment column attnum (resolved for the orders table, root
 * attribute numbers) cannot be used in this version of desc, or NULL.
 */
static char *
enrichment_column_problem(TupleDesc desc, AttrNumber attnum, const char *option,
						  const char *name, const char *relname, bool allow_numeric)
{
	Form_pg_attribute att;
	Oid			typid;

	if (attnum == InvalidAttrNumber || attnum > desc->natts ||
		TupleDescAttr(desc, attnum - 1)->attisdropped)
		return psprintf("column \"%s\" (option \"%s\") does not exist in this version of %s",
						name, option, relname);
	att = TupleDescAttr(desc, attnum - 1);
	typid = getBaseType(att->atttypid);
	if (typid == INT2OID || typid == INT4OID || typid == INT8OID ||
		(allow_numeric && typid == NUMERICOID))
		return NULL;
	return psprintf("column \"%s\" (option \"%s\") of %s has type %s; it must be %s",
					NameStr(att->attname), option, relname, format_type_be(typid),
					allow_numeric ? "smallint, integer, bigint or numeric" :
					"smallint, integer or bigint");
}

/* The attribute of desc named like attnum of other (a partition's root). */
static AttrNumber
same_column(TupleDesc desc, TupleDesc other, AttrNumber attnum)
{
	if (attnum == InvalidAttrNumber || attnum > other->natts ||
		TupleDescAttr(other, attnum - 1)->attisdropped)
		return InvalidAttrNumber;
	return find_column(NULL, desc, NameStr(TupleDescAttr(other, attnum - 1)->attname));
}

void
fr_relinfo_build(FrRelInfo *ri, Relation rel, const FrOptions *opts)
{
	Relation	target = rel;	/* whose name, columns and key are emitted */
	Relation	root = NULL;
	TupleDesc	desc;
	MemoryContext oldcxt;
	Oid			keyindex;
	Oid			base_relid;
	char	   *root_schema = NULL;
	char	   *root_name = NULL;
	char	   *relname;

	if (ri->cxt == NULL)
		ri->cxt = AllocSetContextCreate(CacheMemoryContext,
										"fundrecs relation info",
										ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(ri->cxt);

	oldcxt = MemoryContextSwitchTo(ri->cxt);

	ri->root_relid = InvalidOid;
	ri->as_root = false;
	ri->map = NULL;
	ri->desc = NULL;
	ri->partition_json = NULL;
	ri->enrich_error = NULL;

	/* A partition: find its top-most root, as pgoutput does. */
	if (rel->rd_rel->relispartition)
	{
		List	   *ancestors = get_partition_ancestors(RelationGetRelid(rel));

		if (ancestors != NIL)
		{
			ri->root_relid = llast_oid(ancestors);
			root = RelationIdGetRelation(ri->root_relid);
			if (!RelationIsValid(root))
				elog(ERROR, "could not open relation with OID %u", ri->root_relid);
			root_schema = get_namespace_name(RelationGetNamespace(root));
			root_name = pstrdup(RelationGetRelationName(root));
		}
	}
	if (root != NULL && opts->via_root)
	{
		TupleDesc	leafdesc = CreateTupleDescCopyConstr(RelationGetDescr(rel));

		target = root;
		ri->as_root = true;
		ri->desc = CreateTupleDescCopyConstr(RelationGetDescr(root));
		ri->map = convert_tuples_by_name(leafdesc, ri->desc);
		ri->partition_json = fr_json_quote(psprintf("%s.%s",
													get_namespace_name(RelationGetNamespace(rel)),
													RelationGetRelationName(rel)));
	}
	desc = RelationGetDescr(target);
	base_relid = root != NULL ? ri->root_relid : RelationGetRelid(rel);

	ri->schema_name = get_namespace_name(RelationGetNamespace(target));
	ri->table_name = pstrdup(RelationGetRelationName(target));
	ri->schema_json = psprintf("\"schema\":%s", fr_json_quote(ri->schema_name));
	ri->table_json = psprintf("\"table\":%s", fr_json_quote(ri->table_name));
	ri->schema_table_json = psprintf("%s,%s", ri->schema_json, ri->table_json);
	ri->schema_table_json_len = strlen(ri->schema_table_json);
	ri->route_json = fr_json_quote(ri->table_name);
	ri->route_json_len = strlen(ri->route_json);
	ri->included = fr_options_table_included(opts, ri->schema_name, ri->table_name) ||
		(root != NULL && !ri->as_root &&
		 fr_options_table_included(opts, root_schema, root_name));
	if (OidIsValid(opts->orders_relid))
		ri->is_orders = base_relid == opts->orders_relid;
	else if (root != NULL)
		ri->is_orders = (strcmp(root_schema, opts->orders_schema) == 0 &&
						 strcmp(root_name, opts->orders_table) == 0);
	else
		ri->is_orders = (strcmp(ri->schema_name, opts->orders_schema) == 0 &&
						 strcmp(ri->table_name, opts->orders_table) == 0);
	ri->is_products = (strcmp(ri->schema_name, FR_EXT_SCHEMA) == 0 &&
					   strcmp(ri->table_name, FR_PRODUCTS_TABLE) == 0);
	/* What the old tuple holds is the leaf's replica identity. */
	ri->identity_full = (rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL);
	ri->natts = 0;
	ri->cols = NULL;
	ri->nkeys = 0;
	ri->keyattrs = NULL;
	ri->product_attnum = InvalidAttrNumber;
	ri->quantity_attnum = InvalidAttrNumber;

	if (ri->included)
	{
		ri->natts = desc->natts;
		ri->cols = palloc0(sizeof(FrColumn) * Max(desc->natts, 1));
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);
			FrColumn   *col = &ri->cols[i];
			Oid			outfunc;

			col->attnum = att->attnum;
			col->dropped = att->attisdropped;
			if (col->dropped)
				continue;
			/* ,"name": with json_name after the comma: one append per column */
			col->json_name = psprintf(",%s:", fr_json_quote(NameStr(att->attname))) + 1;
			col->json_name_len = strlen(col->json_name);
			col->typid = att->atttypid;
			col->basetypid = getBaseType(att->atttypid);
			col->kind = kind_of_type(col->basetypid);
			col->excluded = fr_options_column_excluded(opts, ri->schema_name, ri->table_name,
													   NameStr(att->attname));
			getTypeOutputInfo(att->atttypid, &outfunc, &col->typisvarlena);
			fmgr_info_cxt(outfunc, &col->outfunc, ri->cxt);
		}

		/*
		 * The key: the replica identity index, or the primary key when the
		 * identity is FULL or NOTHING (of the root, for rows emitted as it).
		 */
		keyindex = RelationGetReplicaIndex(target);
		if (!OidIsValid(keyindex))
			keyindex = fr_primary_key_index(target);
		if (OidIsValid(keyindex))
		{
			Relation	idxrel = index_open(keyindex, AccessShareLock);
			int			nkeys = idxrel->rd_index->indnkeyatts;

			ri->keyattrs = palloc(sizeof(AttrNumber) * nkeys);
			for (int i = 0; i < nkeys; i++)
			{
				AttrNumber	attnum = idxrel->rd_index->indkey.values[i];

				/* Expression index columns cannot be a key; skip. */
				if (attnum > 0)
				{
					ri->keyattrs[ri->nkeys++] = attnum;
					ri->cols[attnum - 1].is_key = true;
					/* A key column is never left out. */
					ri->cols[attnum - 1].excluded = false;
				}
			}
			index_close(idxrel, AccessShareLock);
		}

		if (ri->is_orders)
		{
			char	   *problem;

			relname = psprintf("%s.%s", ri->schema_name, ri->table_name);
			if (OidIsValid(opts->orders_relid))
			{
				/* Attribute numbers of the orders table (the root). */
				ri->product_attnum = opts->product_attnum;
				ri->quantity_attnum = opts->quantity_attnum;
				if (root != NULL && !ri->as_root)
				{
					TupleDesc	rootdesc = RelationGetDescr(root);

					ri->product_attnum = same_column(desc, rootdesc, ri->product_attnum);
					ri->quantity_attnum = same_column(desc, rootdesc, ri->quantity_attnum);
				}
			}
			else
			{
				ri->product_attnum = find_column(ri, desc, opts->product_column);
				ri->quantity_attnum = find_column(ri, desc, opts->quantity_column);
			}
			problem = enrichment_column_problem(desc, ri->product_attnum, "product_column",
												opts->product_column, relname, false);
			if (problem == NULL)
				problem = enrichment_column_problem(desc, ri->quantity_attnum, "quantity_column",
													opts->quantity_column, relname, true);
			ri->enrich_error = problem;
			if (problem != NULL)
				ri->product_attnum = ri->quantity_attnum = InvalidAttrNumber;
		}
	}

	if (root != NULL)
		RelationClose(root);
	MemoryContextSwitchTo(oldcxt);
	ri->valid = true;
}

FrRelInfo *
fr_relinfo_get(Relation rel, const FrOptions *opts)
{
	Oid			relid = RelationGetRelid(rel);
	FrRelInfo  *ri;
	bool		found;

	if (relinfo_last != NULL && relinfo_last->relid == relid && relinfo_last->valid)
		return relinfo_last;
	ri = hash_search(relinfo_hash, &relid, HASH_ENTER, &found);
	if (!found)
	{
		ri->valid = false;
		ri->cxt = NULL;
		ri->root_relid = InvalidOid;
	}
	if (!ri->valid)
	{
		PG_TRY();
		{
			fr_relinfo_build(ri, rel, opts);
		}
		PG_CATCH();
		{
			ri->valid = false;
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	relinfo_last = ri;
	return ri;
}

void
fr_json_append_string(StringInfo out, const char *str)
{
	escape_json(out, str);
}

static int
hex32(char *out, uint32 v)
{
	static const char hex[] = "0123456789ABCDEF";
	/* digits: at least one; v | 1 keeps __builtin_clz defined for 0 */
	int			n = (32 - __builtin_clz(v | 1) + 3) / 4;

	for (int i = n - 1; i >= 0; i--)
	{
		out[i] = hex[v & 0xF];
		v >>= 4;
	}
	return n;
}

/* "X/Y" as %X/%X writes it, without the cost of a format string. */
void
fr_json_append_lsn(StringInfo out, XLogRecPtr lsn)
{
	fr_reserve(out, 20);
	out->data[out->len++] = '"';
	out->len += hex32(out->data + out->len, (uint32) (lsn >> 32));
	out->data[out->len++] = '/';
	out->len += hex32(out->data + out->len, (uint32) lsn);
	out->data[out->len++] = '"';
	out->data[out->len] = '\0';
}

void
fr_json_append_uint(StringInfo out, uint64 value)
{
	fr_reserve(out, 21);
	out->len += pg_ulltoa_n(value, out->data + out->len);
	out->data[out->len] = '\0';
}

static inline char *
put_digits(char *p, int value, int width)
{
	for (int i = width - 1; i >= 0; i--)
	{
		p[i] = (char) ('0' + value % 10);
		value /= 10;
	}
	return p + width;
}

/*
 * A timestamp as JsonEncodeDateTime writes it (XSD style), quoted, with
 * "Z" after a timestamptz, written directly: "YYYY-MM-DDTHH:MM:SS", then
 * the microseconds without trailing zeros.  Only for finite values in
 * years 1 to 9999; false for the rest (infinity, BC, five-digit years),
 * which take JsonEncodeDateTime's path.  About three times faster, and a
 * timestamp column is in most rows.  The date part is kept for the day
 * last written: a change's timestamps are mostly of the same day as the
 * previous change's, and j2date is half the cost of the rest.
 */
static bool
append_timestamp_fast(StringInfo out, Timestamp ts, bool zulu)
{
	static int64 cached_day = PG_INT64_MIN;
	static char cached_date[10];	/* "YYYY-MM-DD" of cached_day */
	int64		day;
	int64		time;
	int			hour;
	int			min;
	int			sec;
	int			usec;
	char	   *p;

	if (TIMESTAMP_NOT_FINITE(ts))
		return false;
	/* timestamp2tm's split, without a time zone: floor to whole days */
	day = ts / USECS_PER_DAY;
	time = ts - day * USECS_PER_DAY;
	if (time < 0)
	{
		time += USECS_PER_DAY;
		day--;
	}
	if (day != cached_day)
	{
		int64		julian = day + POSTGRES_EPOCH_JDATE;
		int			year;
		int			month;
		int			mday;

		if (julian < 0 || julian > (int64) PG_INT32_MAX)
			return false;
		j2date((int) julian, &year, &month, &mday);
		if (year < 1 || year > 9999)
			return false;
		put_digits(cached_date, year, 4);
		cached_date[4] = '-';
		put_digits(cached_date + 5, month, 2);
		cached_date[7] = '-';
		put_digits(cached_date + 8, mday, 2);
		cached_day = day;
	}
	hour = (int) (time / USECS_PER_HOUR);
	time -= (int64) hour * USECS_PER_HOUR;
	min = (int) (time / USECS_PER_MINUTE);
	time -= (int64) min * USECS_PER_MINUTE;
	sec = (int) (time / USECS_PER_SEC);
	usec = (int) (time - (int64) sec * USECS_PER_SEC);

	fr_reserve(out, 32);
	p = out->data + out->len;
	*p++ = '"';
	memcpy(p, cached_date, 10);
	p += 10;
	*p++ = 'T';
	p = put_digits(p, hour, 2);
	*p++ = ':';
	p = put_digits(p, min, 2);
	*p++ = ':';
	p = put_digits(p, sec, 2);
	if (usec != 0)
	{
		*p++ = '.';
		p = put_digits(p, usec, 6);
		while (p[-1] == '0')
			p--;
	}
	if (zulu)
		*p++ = 'Z';
	*p++ = '"';
	*p = '\0';
	out->len = p - out->data;
	return true;
}

/* ISO 8601 in UTC with a "Z", microseconds without trailing zeros. */
void
fr_json_append_timestamptz(StringInfo out, TimestampTz ts)
{
	char		buf[MAXDATELEN + 1];
	int			utc = 0;
	size_t		len;

	if (append_timestamp_fast(out, ts, true))
		return;
	JsonEncodeDateTime(buf, TimestampTzGetDatum(ts), TIMESTAMPTZOID, &utc);
	len = strlen(buf);
	fr_append_char(out, '"');
	if (len > 6 && strcmp(buf + len - 6, "+00:00") == 0)
	{
		fr_append_bytes(out, buf, len - 6);
		fr_append_char(out, 'Z');
	}
	else
		fr_append_bytes(out, buf, len);
	fr_append_char(out, '"');
}

/*
 * A number's text output as JSON: the one rule for every number the plugin
 * writes (columns, computed totals).  NaN and infinities are not JSON
 * numbers: they are quoted.
 */
void
fr_json_append_number_text(StringInfo out, const char *str)
{
	if (str[0] == 'N' || str[0] == 'I' || (str[0] == '-' && str[1] == 'I'))
		escape_json(out, str);
	else
		appendStringInfoString(out, str);
}

static void
append_json_text(StringInfo out, const char *str)
{
	/*
	 * A json value is valid JSON already; raw newlines can only be
	 * whitespace between tokens (inside strings they are escaped), so
	 * turning them into spaces keeps the row on one line.
	 */
	for (const char *p = str; *p; p++)
	{
		if (*p == '\n' || *p == '\r')
			fr_append_char(out, ' ');
		else
			fr_append_char(out, *p);
	}
}

static void
append_bytea(StringInfo out, Datum value)
{
	static const char hex[] = "0123456789abcdef";
	bytea	   *b = DatumGetByteaPP(value);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(b);
	int			len = VARSIZE_ANY_EXHDR(b);

	fr_reserve(out, 2 * len + 5);
	fr_append_lit(out, "\"\\\\x");
	for (int i = 0; i < len; i++)
	{
		out->data[out->len++] = hex[p[i] >> 4];
		out->data[out->len++] = hex[p[i] & 0x0F];
	}
	out->data[out->len] = '\0';
	fr_append_char(out, '"');
}

void
fr_json_append_value(StringInfo out, FrColumn *col, Datum value)
{
	char		buf[MAXDATELEN + 1];

	switch (col->kind)
	{
		case FR_KIND_INTEGER:
			switch (col->basetypid)
			{
				case INT2OID:
					fr_reserve(out, 8);
					out->len += pg_itoa(DatumGetInt16(value), out->data + out->len);
					break;
				case INT4OID:
					fr_reserve(out, 12);
					out->len += pg_ltoa(DatumGetInt32(value), out->data + out->len);
					break;
				case INT8OID:
					fr_reserve(out, 21);
					out->len += pg_lltoa(DatumGetInt64(value), out->data + out->len);
					break;
				default:
					appendStringInfoString(out, OutputFunctionCall(&col->outfunc, value));
					break;
			}
			break;
		case FR_KIND_NUMERIC:
		case FR_KIND_FLOAT:
			fr_json_append_number_text(out, OutputFunctionCall(&col->outfunc, value));
			break;
		case FR_KIND_BOOL:
			appendStringInfoString(out, DatumGetBool(value) ? "true" : "false");
			break;
		case FR_KIND_JSON:
			append_json_text(out, OutputFunctionCall(&col->outfunc, value));
			break;
		case FR_KIND_JSONB:
			appendStringInfoString(out, OutputFunctionCall(&col->outfunc, value));
			break;
		case FR_KIND_DATETIME:
			if (col->basetypid == TIMESTAMPTZOID)
				fr_json_append_timestamptz(out, DatumGetTimestampTz(value));
			else if (col->basetypid == TIMESTAMPOID &&
					 append_timestamp_fast(out, DatumGetTimestamp(value), false))
				break;
			else
			{
				JsonEncodeDateTime(buf, value, col->basetypid, NULL);
				fr_append_char(out, '"');
				appendStringInfoString(out, buf);
				fr_append_char(out, '"');
			}
			break;
		case FR_KIND_BYTEA:
			append_bytea(out, value);
			break;
		case FR_KIND_TEXT:
			escape_json(out, OutputFunctionCall(&col->outfunc, value));
			break;
	}
}
