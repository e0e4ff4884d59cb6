/*-------------------------------------------------------------------------
 *
 * fundrecs_relinfo.c
 *	  The per-relation output info cache.
 *
 * Everything that needs the catalogs (column names, types, output
 * functions, the key, whether rows are emitted as the partition root and
 * whether the table is the orders table) is looked up once per relation and
 * kept in FrRelInfo until a relcache invalidation names the relation.  The
 * per-change path then only calls output functions.
 *
 * The cache lives in a memory context of its own under the decoding
 * context (as pgoutput's RelationSyncCache lives with its session): it is
 * deleted by the plugin's shutdown callback, or with the decoding context
 * when a session ends in an error, and a reset callback forgets it then.
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
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "fundrecs_compat.h"

static void relinfo_forget(void);
static FrSessionCache relinfo_session = FR_SESSION_CACHE("fundrecs relation cache", relinfo_forget);
static HTAB *relinfo_hash = NULL;	/* in relinfo_session's context */

/*
 * The entry found last: changes come in runs of one table.  Entries are
 * never removed, only marked invalid, so it stays valid with the hash.
 */
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
 * A publication, or what publishes in it, changed: the publications are
 * read again, and every relation's info is built again (pgoutput's
 * init_rel_sync_cache registers the same catalogs).
 */
static void
publication_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	fr_publication_invalidate();
	relinfo_invalidate((Datum) 0, InvalidOid);
}

/* The cache's context is going away (shutdown, or the session's end). */
static void
relinfo_forget(void)
{
	relinfo_hash = NULL;
	relinfo_last = NULL;
}

void
fr_relinfo_shutdown(void)
{
	fr_session_cache_end(&relinfo_session);
	Assert(relinfo_hash == NULL);
}

/*
 * Called at the start of every decoding session, with the decoding
 * context: entries depend on the session's options, so a new session
 * starts from an empty cache.
 */
void
fr_relinfo_init(MemoryContext parent)
{
	HASHCTL		ctl;

	fr_publication_reset();
	fr_session_cache_start(&relinfo_session, parent);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(FrRelInfo);
	ctl.hcxt = relinfo_session.cxt;
	relinfo_hash = hash_create("fundrecs relation info", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* Callbacks cannot be unregistered: register once per backend. */
	if (!relinfo_callback_registered)
	{
		CacheRegisterRelcacheCallback(relinfo_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONOID, publication_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONRELMAP, publication_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONNAMESPACEMAP, publication_invalidate, (Datum) 0);
		relinfo_callback_registered = true;
	}
}

FrValueKind
fr_value_kind(Oid basetypid)
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

/*
 * A partition: its top-most root, as pgoutput finds it; opened, with its
 * name.  NULL for a table that is not a partition.
 */
static Relation
open_root(FrRelInfo *ri, Relation rel, char **root_schema, char **root_name)
{
	List	   *ancestors;
	Relation	root;

	if (!rel->rd_rel->relispartition ||
		(ancestors = get_partition_ancestors(RelationGetRelid(rel))) == NIL)
		return NULL;
	ri->root_relid = llast_oid(ancestors);
	root = RelationIdGetRelation(ri->root_relid);
	if (!RelationIsValid(root))
		elog(ERROR, "could not open relation with OID %u", ri->root_relid);
	*root_schema = get_namespace_name(RelationGetNamespace(root));
	*root_name = pstrdup(RelationGetRelationName(root));
	return root;
}

/*
 * Rows of the leaf emitted as an ancestor's, the root's with the option
 * publish_via_partition_root, or with publications the top-most ancestor
 * one of them publishes it as.
 */
static void
emit_as_root(FrRelInfo *ri, Relation rel, Relation root)
{
	TupleDesc	leafdesc = CreateTupleDescCopyConstr(RelationGetDescr(rel));

	ri->as_root = true;
	ri->desc = CreateTupleDescCopyConstr(RelationGetDescr(root));
	ri->map = convert_tuples_by_name(leafdesc, ri->desc);
	ri->partition_json = fr_json_quote(psprintf("%s.%s",
												get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
}

/* The emitted table's names, as JSON, and what the options say of it. */
static void
set_names(FrRelInfo *ri, Relation rel, Relation target, Relation root, const char *root_schema,
		  const char *root_name, const FrOptions *opts)
{
	Oid			base_relid = root != NULL ? ri->root_relid : RelationGetRelid(rel);

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
}

/* Each column's JSON name, kind and output function. */
static void
set_columns(FrRelInfo *ri, TupleDesc desc, const FrOptions *opts)
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
		col->kind = fr_value_kind(col->basetypid);
		col->excluded = fr_options_column_excluded(opts, ri->schema_name, ri->table_name,
												   NameStr(att->attname)) ||
			(ri->pub_columns != NULL && !bms_is_member(att->attnum, ri->pub_columns));
		getTypeOutputInfo(att->atttypid, &outfunc, &col->typisvarlena);
		fmgr_info_cxt(outfunc, &col->outfunc, ri->cxt);
	}
}

/*
 * The key: the replica identity index, or the primary key when the
 * identity is FULL or NOTHING (of the root, for rows emitted as it).
 */
static void
set_key(FrRelInfo *ri, Relation target, const FrOptions *opts)
{
	Oid			keyindex = RelationGetReplicaIndex(target);
	Relation	idxrel;
	int			nkeys;

	if (!OidIsValid(keyindex))
		keyindex = fr_primary_key_index(target);
	if (!OidIsValid(keyindex))
		return;
	idxrel = index_open(keyindex, AccessShareLock);
	nkeys = idxrel->rd_index->indnkeyatts;
	ri->keyattrs = palloc(sizeof(AttrNumber) * nkeys);
	for (int i = 0; i < nkeys; i++)
	{
		AttrNumber	attnum = idxrel->rd_index->indkey.values[i];

		/*
		 * Expression index columns cannot be a key; skip.  A publication's
		 * column list leaves out the key columns it does not list.
		 */
		if (attnum > 0 &&
			(ri->pub_columns == NULL || bms_is_member(attnum, ri->pub_columns)))
		{
			const char *attname = NameStr(TupleDescAttr(RelationGetDescr(target), attnum - 1)->attname);

			/*
			 * A key column is never left out: exclude_columns may not name
			 * one.
			 */
			if (fr_options_column_excluded(opts, ri->schema_name, ri->table_name, attname))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("exclude_columns names column \"%s\" of table \"%s.%s\", which is in the table's key",
								attname, ri->schema_name, ri->table_name),
						 errdetail("Every change carries its row's key (the replica identity, or the primary key), so that a consumer can tell which row it is."),
						 errhint("Remove %s.%s.%s from exclude_columns.", ri->schema_name,
								 ri->table_name, attname)));
			ri->keyattrs[ri->nkeys++] = attnum;
			ri->cols[attnum - 1].is_key = true;
			ri->cols[attnum - 1].excluded = false;
		}
	}
	index_close(idxrel, AccessShareLock);
}

/*
 * The orders table: its product and quantity columns in this version of
 * desc, or why they cannot be used (enrich_error).
 */
static void
set_enrichment(FrRelInfo *ri, TupleDesc desc, Relation root, const FrOptions *opts)
{
	char	   *relname = psprintf("%s.%s", ri->schema_name, ri->table_name);
	char	   *problem;

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

/*
 * Whose enrichment rules apply: the emitted table's, or its top-most
 * root's when it is a partition (rules are added to partitioned tables, not
 * to partitions), through a map of the columns when they differ.
 */
static void
set_rules_source(FrRelInfo *ri, Relation target, Relation root)
{
	if (root == NULL || RelationGetRelid(target) == ri->root_relid)
	{
		ri->rules_relid = RelationGetRelid(target);
		return;
	}
	ri->rules_relid = ri->root_relid;
	ri->rules_map = convert_tuples_by_name(CreateTupleDescCopy(RelationGetDescr(target)),
										   CreateTupleDescCopy(RelationGetDescr(root)));
}

void
fr_relinfo_build(FrRelInfo *ri, Relation rel, const FrOptions *opts)
{
	Relation	target = rel;	/* whose name, columns and key are emitted */
	Relation	root;
	Relation	as = NULL;		/* the ancestor a publication publishes it as */
	TupleDesc	desc;
	MemoryContext oldcxt;
	char	   *root_schema = NULL;
	char	   *root_name = NULL;

	/*
	 * An entry outside the cache (the initial load's) lives as long as the
	 * backend's caches.
	 */
	if (ri->cxt == NULL)
		ri->cxt = AllocSetContextCreate(relinfo_session.cxt != NULL ? relinfo_session.cxt : CacheMemoryContext,
										"fundrecs relation info",
										ALLOCSET_SMALL_SIZES);
	else
	{
		fr_publication_release(ri);
		MemoryContextReset(ri->cxt);
	}
	oldcxt = MemoryContextSwitchTo(ri->cxt);

	ri->root_relid = InvalidOid;
	ri->as_root = false;
	ri->map = NULL;
	ri->desc = NULL;
	ri->partition_json = NULL;
	ri->enrich_error = NULL;
	ri->natts = 0;
	ri->cols = NULL;
	ri->nkeys = 0;
	ri->keyattrs = NULL;
	ri->product_attnum = InvalidAttrNumber;
	ri->quantity_attnum = InvalidAttrNumber;
	memset(ri->pub_actions, 0, sizeof(ri->pub_actions));
	memset(ri->pub_filters, 0, sizeof(ri->pub_filters));
	ri->pub_estate = NULL;
	ri->pub_columns = NULL;
	ri->rules_relid = InvalidOid;
	ri->rules_map = NULL;

	root = open_root(ri, rel, &root_schema, &root_name);
	if (opts->publication_names != NIL)
	{
		/* The publications say as which relation, if any, it is published. */
		Oid			publish_as = fr_publication_resolve(ri, rel, opts);

		if (publish_as != RelationGetRelid(rel))
		{
			as = publish_as == ri->root_relid ? root : RelationIdGetRelation(publish_as);
			if (!RelationIsValid(as))
				elog(ERROR, "could not open relation with OID %u", publish_as);
			emit_as_root(ri, rel, as);
			target = as;
		}
	}
	else if (root != NULL && opts->via_root)
	{
		emit_as_root(ri, rel, root);
		target = root;
	}
	desc = RelationGetDescr(target);
	set_names(ri, rel, target, root, root_schema, root_name, opts);
	if (opts->publication_names != NIL)
		ri->included = ri->pub_actions[FR_PUBACTION_INSERT] || ri->pub_actions[FR_PUBACTION_UPDATE] ||
			ri->pub_actions[FR_PUBACTION_DELETE] || ri->pub_actions[FR_PUBACTION_TRUNCATE];

	/*
	 * The extension's own bookkeeping (the shipper writes it as it goes) is
	 * never a change to ship, even through FOR ALL TABLES.
	 */
	if (ri->included && strcmp(ri->schema_name, FR_EXT_SCHEMA) == 0 &&
		(strcmp(ri->table_name, "load_state") == 0 ||
		 strcmp(ri->table_name, "backfill_request") == 0 ||
		 strcmp(ri->table_name, "backfill_progress") == 0))
		ri->included = false;
	set_rules_source(ri, target, root);
	if (ri->included)
	{
		set_columns(ri, desc, opts);
		set_key(ri, target, opts);
		if (ri->is_orders)
			set_enrichment(ri, desc, root, opts);
	}
	if (as != NULL && as != root)
		RelationClose(as);
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
