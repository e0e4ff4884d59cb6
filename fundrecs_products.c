/*-------------------------------------------------------------------------
 *
 * fundrecs_products.c
 *	  Product lookup for enrichment, its cache, and the SQL-callable
 *	  helpers of the extension (category_slug, the product file reader).
 *
 * Lookups read fundrecs.product_details, a user_catalog_table, through
 * the historic snapshot that logical decoding installs, so a change sees
 * the products as they were when it was made.
 *
 * The cache follows the "as of the change" rule of fundrecs_asof.c, which
 * empties it (cache_reset) when a decoded transaction changed the catalogs.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include <ctype.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"

#include "fundrecs_compat.h"
#include "utils/snapshot.h"

/* Where the product table is; resolved lazily, reset by invalidations. */
static bool products_info_valid = false;
static Oid	products_relid = InvalidOid;
static Oid	products_indexid = InvalidOid;
static AttrNumber attnum_id;
static AttrNumber attnum_name;
static AttrNumber attnum_category;
static AttrNumber attnum_price;
static bool products_callback_registered = false;
static bool warned_missing = false;

/* The cache. */
static HTAB *product_cache = NULL;
static void products_forget(void);
static FrSessionCache product_session = FR_SESSION_CACHE("fundrecs product cache", products_forget);
static MemoryContext product_cxt = NULL;	/* under the session's context,
											 * reset with the cache */

/*
 * Product ids are usually small and dense: for ids below FR_DENSE_IDS the
 * cache entries are also found by index, without hashing (about a tenth of
 * the time per row went to hash_search before).  The array grows to the
 * largest such id seen and points at the hash table's entries, which
 * dynahash never moves; it lives and is reset with the cache.
 */
#define FR_DENSE_IDS (1 << 20)
static FrProduct **product_dense = NULL;
static int64 product_dense_size = 0;

static void
products_invalidate(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || !OidIsValid(products_relid) || relid == products_relid)
		products_info_valid = false;
}

/* The cache's context is going away (shutdown, or the session's end). */
static void
products_forget(void)
{
	product_cxt = NULL;
	product_cache = NULL;
	product_dense = NULL;
	product_dense_size = 0;
}

static void
cache_reset(void)
{
	HASHCTL		ctl;

	Assert(product_cxt != NULL);
	MemoryContextReset(product_cxt);
	product_dense = NULL;
	product_dense_size = 0;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(FrProduct);
	ctl.hcxt = product_cxt;
	product_cache = hash_create("fundrecs products", 1024, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* fundrecs_asof.c's reset: only while a session holds the cache. */
static void
products_asof_reset(void)
{
	if (product_cxt != NULL)
		cache_reset();
}

/*
 * End of a decoding session: the cache's memory is freed (the invalidation
 * callback stays registered, as callbacks cannot be removed; it only marks
 * the products' relation information stale).
 */
void
fr_products_shutdown(void)
{
	fr_session_cache_end(&product_session);
	Assert(product_cxt == NULL);
}

/*
 * Start of a decoding session: the cache lives in a context under the
 * decoding context (deleted at shutdown, or with the decoding context when
 * the session ends in an error: products_forget forgets it then).
 */
void
fr_products_init(MemoryContext parent)
{
	MemoryContext owner = fr_session_cache_start(&product_session, parent);

	/*
	 * Reset whenever the products change (resetting the owner would forget
	 * it).
	 */
	product_cxt = AllocSetContextCreate(owner, "fundrecs products",
										ALLOCSET_DEFAULT_SIZES);
	if (!products_callback_registered)
	{
		CacheRegisterRelcacheCallback(products_invalidate, (Datum) 0);
		fr_asof_register(products_asof_reset);
		products_callback_registered = true;
	}
	products_info_valid = false;
	warned_missing = false;
	cache_reset();
}

static void
resolve_products_table(void)
{
	Oid			nspid;
	Relation	rel;

	products_relid = InvalidOid;
	products_indexid = InvalidOid;

	nspid = get_namespace_oid(FR_EXT_SCHEMA, true);
	if (OidIsValid(nspid))
		products_relid = get_relname_relid(FR_PRODUCTS_TABLE, nspid);

	if (OidIsValid(products_relid))
	{
		rel = table_open(products_relid, AccessShareLock);
		products_indexid = fr_primary_key_index(rel);
		table_close(rel, AccessShareLock);

		attnum_id = get_attnum(products_relid, "product_id");
		attnum_name = get_attnum(products_relid, "product_name");
		attnum_category = get_attnum(products_relid, "category");
		attnum_price = get_attnum(products_relid, "price");
		if (!OidIsValid(products_indexid) || attnum_id == InvalidAttrNumber ||
			attnum_name == InvalidAttrNumber ||
			attnum_category == InvalidAttrNumber ||
			attnum_price == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s.%s does not have the expected definition",
							FR_EXT_SCHEMA, FR_PRODUCTS_TABLE),
					 errdetail("It needs a primary key on product_id and the columns product_name, category and price."),
					 errhint("Recreate it with DROP EXTENSION fundrecs and CREATE EXTENSION fundrecs.")));
	}
	else if (!warned_missing)
	{
		ereport(WARNING,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s.%s does not exist, orders are not enriched",
						FR_EXT_SCHEMA, FR_PRODUCTS_TABLE),
				 errhint("Run CREATE EXTENSION fundrecs in this database and load the products.")));
		warned_missing = true;
	}
	products_info_valid = true;
}

/*
 * The price as an integer number of 10^-scale units, when its text is a
 * plain decimal that fits (so totals can be computed in int64, exactly).
 */
static void
parse_exact_price(FrProduct *p)
{
	p->price_exact = fr_parse_exact_decimal(p->price_text, &p->price_units, &p->price_scale);
}

/*
 * Fills "p" from the table; strings are allocated in the current context.
 * snapshot NULL means the catalog snapshot: in decoding, the historic one.
 */
static void
lookup_direct(FrProduct *p, int64 product_id, Snapshot snapshot)
{
	Relation	rel;
	Relation	index;
	SysScanDesc scan;
	ScanKeyData skey;
	HeapTuple	tuple;

	p->product_id = product_id;
	p->found = false;

	if (!OidIsValid(products_relid) || product_id < 1 || product_id > PG_INT32_MAX)
		return;

	rel = table_open(products_relid, AccessShareLock);
	/* The key index at its current file (REINDEX, VACUUM FULL, CLUSTER). */
	index = fr_index_open_current(products_indexid);
	if (index == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the primary key of fundrecs.product_details was dropped after this change was written")));
	ScanKeyInit(&skey, attnum_id, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum((int32) product_id));
	scan = systable_beginscan(rel, products_indexid, true, snapshot, 1, &skey);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		Datum	   *values = palloc(sizeof(Datum) * desc->natts);
		bool	   *nulls = palloc(sizeof(bool) * desc->natts);
		bool		isnull;
		Datum		d;
		char	   *category;

		/*
		 * One deform for the three columns.  (Not heap_getattr: from 17.12
		 * on, its inline body calls a function older 17.x servers lack, so a
		 * build against newer headers would not load into them.)
		 */
		heap_deform_tuple(tuple, desc, values, nulls);
		isnull = nulls[attnum_name - 1];
		d = values[attnum_name - 1];
		p->name_json = isnull ? pstrdup("null") : fr_json_quote(TextDatumGetCString(d));
		category = nulls[attnum_category - 1] ? NULL :
			TextDatumGetCString(values[attnum_category - 1]);
		p->category_json = category ? fr_json_quote(category) : pstrdup("null");
		p->route_json = fr_json_quote(category ? fr_category_slug(category)
									  : FR_ROUTE_UNCATEGORIZED);
		isnull = nulls[attnum_price - 1];
		d = values[attnum_price - 1];
		p->price_exact = false;
		if (isnull)
		{
			p->price = (Datum) 0;
			p->price_text = NULL;
		}
		else
		{
			p->price = PointerGetDatum(DatumGetNumericCopy(d));
			p->price_text = DatumGetCString(DirectFunctionCall1(numeric_out, p->price));
			parse_exact_price(p);
		}

		/*
		 * What every enriched row of this product holds, built once: its
		 * route, then the enrichment fields up to total_price, in one block
		 * so that a row touches one place in memory, not five.
		 */
		{
			StringInfoData buf;
			int			route_len = strlen(p->route_json);

			initStringInfo(&buf);
			appendBinaryStringInfo(&buf, p->route_json, route_len + 1);
			pfree(p->route_json);
			appendStringInfoString(&buf, ",\"product_name\":");
			appendStringInfoString(&buf, p->name_json);
			appendStringInfoString(&buf, ",\"category\":");
			appendStringInfoString(&buf, p->category_json);
			appendStringInfoString(&buf, ",\"price\":");
			appendStringInfoString(&buf, p->price_text ? p->price_text : "null");
			appendStringInfoString(&buf, ",\"total_price\":");
			p->route_json = buf.data;
			p->route_json_len = route_len;
			p->enrich_prefix = buf.data + route_len + 1;
			p->enrich_prefix_len = buf.len - route_len - 1;
		}
		p->found = true;
		pfree(values);
		pfree(nulls);
	}
	systable_endscan(scan);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
}

/*
 * Looks a product up as of the change at change_lsn.  The result lives in
 * the cache or, for a direct lookup, in the current memory context (the
 * per-change one).
 */
FrProduct *
fr_products_lookup(int64 product_id, XLogRecPtr change_lsn)
{
	bool		cacheable = fr_asof_cache_usable(change_lsn);
	FrProduct  *p;
	bool		found;

	if (!products_info_valid)
		resolve_products_table();

	if (!cacheable)
	{
		p = palloc(sizeof(FrProduct));
		lookup_direct(p, product_id, NULL);
		return p;
	}

	if (product_id >= 0 && product_id < product_dense_size &&
		product_dense[product_id] != NULL)
		return product_dense[product_id];

	p = hash_search(product_cache, &product_id, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(product_cxt);

		PG_TRY();
		{
			lookup_direct(p, product_id, NULL);
		}
		PG_CATCH();
		{
			hash_search(product_cache, &product_id, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldcxt);
	}
	if (product_id >= 0 && product_id < FR_DENSE_IDS)
	{
		if (product_id >= product_dense_size)
		{
			int64		size = Max(product_dense_size, 1024);

			while (size <= product_id)
				size *= 2;
			size = Min(size, FR_DENSE_IDS);
			if (product_dense == NULL)
				product_dense = MemoryContextAllocZero(product_cxt, sizeof(FrProduct *) * size);
			else
			{
				product_dense = repalloc(product_dense, sizeof(FrProduct *) * size);
				memset(product_dense + product_dense_size, 0,
					   sizeof(FrProduct *) * (size - product_dense_size));
			}
			product_dense_size = size;
		}
		product_dense[product_id] = p;
	}
	return p;
}

/*
 * The initial load's own cache: every row is read through one snapshot, so
 * entries stay valid for the whole load.  It shares nothing with decoding,
 * which may run in the same backend, even in the same query.
 */
FrLoadProducts *
fr_load_products_create(MemoryContext cxt)
{
	FrLoadProducts *lp = MemoryContextAllocZero(cxt, sizeof(FrLoadProducts));
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(FrProduct);
	ctl.hcxt = cxt;
	lp->cxt = cxt;
	lp->cache = hash_create("fundrecs load products", 1024, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return lp;
}

FrProduct *
fr_load_products_lookup(FrLoadProducts *lp, int64 product_id)
{
	FrProduct  *p;
	bool		found;

	if (!products_info_valid)
		resolve_products_table();
	p = hash_search(lp->cache, &product_id, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(lp->cxt);

		PG_TRY();
		{
			lookup_direct(p, product_id, lp->snapshot);
		}
		PG_CATCH();
		{
			hash_search(lp->cache, &product_id, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldcxt);
	}
	return p;
}

/*
 * Latin letters with diacritics, U+00C0 to U+017F (Latin-1 Supplement and
 * Latin Extended-A), as lower-case ASCII; NULL for the two signs (U+00D7,
 * U+00F7), which separate words.
 */
static const char *const latin_ascii[0x180 - 0xC0] = {
	"a", "a", "a", "a", "a", "a", "ae", "c",	/* U+00C0 */
	"e", "e", "e", "e", "i", "i", "i", "i", /* U+00C8 */
	"d", "n", "o", "o", "o", "o", "o", NULL,	/* U+00D0 */
	"o", "u", "u", "u", "u", "y", "th", "ss",	/* U+00D8 */
	"a", "a", "a", "a", "a", "a", "ae", "c",	/* U+00E0 */
	"e", "e", "e", "e", "i", "i", "i", "i", /* U+00E8 */
	"d", "n", "o", "o", "o", "o", "o", NULL,	/* U+00F0 */
	"o", "u", "u", "u", "u", "y", "th", "y",	/* U+00F8 */
	"a", "a", "a", "a", "a", "a", "c", "c", /* U+0100 */
	"c", "c", "c", "c", "c", "c", "d", "d", /* U+0108 */
	"d", "d", "e", "e", "e", "e", "e", "e", /* U+0110 */
	"e", "e", "e", "e", "g", "g", "g", "g", /* U+0118 */
	"g", "g", "g", "g", "h", "h", "h", "h", /* U+0120 */
	"i", "i", "i", "i", "i", "i", "i", "i", /* U+0128 */
	"i", "i", "ij", "ij", "j", "j", "k", "k",	/* U+0130 */
	"k", "l", "l", "l", "l", "l", "l", "l", /* U+0138 */
	"l", "l", "l", "n", "n", "n", "n", "n", /* U+0140 */
	"n", "n", "n", "n", "o", "o", "o", "o", /* U+0148 */
	"o", "o", "oe", "oe", "r", "r", "r", "r",	/* U+0150 */
	"r", "r", "s", "s", "s", "s", "s", "s", /* U+0158 */
	"s", "s", "t", "t", "t", "t", "t", "t", /* U+0160 */
	"u", "u", "u", "u", "u", "u", "u", "u", /* U+0168 */
	"u", "u", "u", "u", "w", "w", "y", "y", /* U+0170 */
	"y", "z", "z", "z", "z", "z", "z", "s", /* U+0178 */
};

/* The next code point of valid UTF-8 (the server encoding), advancing *p. */
static pg_wchar
next_code_point(const unsigned char **p)
{
	const unsigned char *s = *p;
	int			len = pg_utf_mblen(s);
	pg_wchar	cp = utf8_to_unicode(s);

	*p = s + len;
	return cp;
}

/* Separators among non-ASCII code points: spaces, punctuation, symbols. */
static bool
is_separator(pg_wchar cp)
{
	return (cp >= 0x80 && cp < 0xC0) || /* Latin-1 punctuation, symbols */
		cp == 0xD7 || cp == 0xF7 ||
		(cp >= 0x2000 && cp < 0x2C00) ||	/* punctuation, symbols, arrows... */
		(cp >= 0x3000 && cp < 0x3040) ||	/* CJK punctuation */
		(cp >= 0xFE00 && cp < 0xFE70) ||	/* variation selectors, small
											 * forms */
		(cp >= 0xFF00 && cp < 0xFF10) ||	/* full-width punctuation */
		cp >= 0x1F000;			/* emoji and other symbols */
}

/*
 * The route of a category, safe as an S3 key part and a Hive partition
 * value whatever the category: lower-case ASCII letters and digits; Latin
 * letters with diacritics transliterated (latin_ascii); letters of other
 * scripts as "u" and their code point in hex, each set apart by an
 * underscore; every run of anything else one underscore, none at either
 * end.  Empty result: "uncategorized".
 */
char *
fr_category_slug(const char *category)
{
	StringInfoData out;
	bool		pending_sep = false;
	bool		last_was_cp = false;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	const unsigned char *p = (const unsigned char *) category;

	initStringInfo(&out);
	while (*p)
	{
		char		ascii[12];
		const char *piece = NULL;
		bool		is_cp = false;	/* a code point written in hex */

		if (*p < 0x80)
		{
			if (isalnum(*p))
			{
				ascii[0] = (char) tolower(*p);
				ascii[1] = '\0';
				piece = ascii;
			}
			p++;
		}
		else if (!utf8)
			p++;				/* other encodings: non-ASCII separates */
		else
		{
			pg_wchar	cp = next_code_point(&p);

			if (cp >= 0xC0 && cp < 0x180)
				piece = latin_ascii[cp - 0xC0];
			else if (!is_separator(cp))
			{
				snprintf(ascii, sizeof(ascii), "u%x", (unsigned int) cp);
				piece = ascii;
				is_cp = true;
			}
		}

		if (piece == NULL)
		{
			pending_sep = true;
			continue;
		}
		/* A code point in hex stands apart, so the slug reads back. */
		if (out.len > 0 && (pending_sep || is_cp || last_was_cp))
			appendStringInfoChar(&out, '_');
		pending_sep = false;
		last_was_cp = is_cp;
		appendStringInfoString(&out, piece);
	}

	if (out.len == 0)
	{
		pfree(out.data);
		return pstrdup(FR_ROUTE_UNCATEGORIZED);
	}
	return out.data;
}

PG_FUNCTION_INFO_V1(fundrecs_category_slug);

Datum
fundrecs_category_slug(PG_FUNCTION_ARGS)
{
	text	   *category = PG_GETARG_TEXT_PP(0);

	PG_RETURN_TEXT_P(cstring_to_text(fr_category_slug(text_to_cstring(category))));
}

/*
 * fundrecs.read_product_file(path text) returns text: the contents of a
 * server-side file, for load_products_file().  Reading server files is
 * for superusers and members of pg_read_server_files only.
 */
PG_FUNCTION_INFO_V1(fundrecs_read_product_file);

#define FR_MAX_PRODUCT_FILE (256 * 1024 * 1024)

Datum
fundrecs_read_product_file(PG_FUNCTION_ARGS)
{
	char	   *path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	FILE	   *file;
	StringInfoData buf;
	char		chunk[65536];
	size_t		n;

	if (!superuser() && !has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to read product file \"%s\"", path),
				 errdetail("Only superusers and members of pg_read_server_files may read server files."),
				 errhint("Use fundrecs.load_products(jsonb) to load products from the client.")));

	file = AllocateFile(path, PG_BINARY_R);
	if (file == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open product file \"%s\": %m", path)));

	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), file)) > 0)
	{
		if ((size_t) buf.len + n > FR_MAX_PRODUCT_FILE)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("product file \"%s\" is too large", path),
					 errdetail("The limit is %d bytes.", FR_MAX_PRODUCT_FILE)));
		appendBinaryStringInfo(&buf, chunk, n);
	}
	if (ferror(file))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read product file \"%s\": %m", path)));
	FreeFile(file);

	pg_verifymbstr(buf.data, buf.len, false);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
