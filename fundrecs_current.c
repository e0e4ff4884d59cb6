/*-------------------------------------------------------------------------
 *
 * fundrecs_current.c
 *	  Lookup tables as they are now, beside the historic snapshot.
 *
 * A change is enriched from its lookup tables as of the change: their rows
 * are read through the historic snapshot of decoding, from the tables'
 * current files.  PostgreSQL points a user_catalog_table's heap at its
 * current file during decoding (RelationInitPhysicalAddr), since REINDEX,
 * VACUUM FULL and CLUSTER keep the old row versions a historic snapshot
 * needs but move them to new files; it does not do so for the table's
 * indexes, whose historic pg_class row names a file that a rewrite has
 * removed ("could not read block 0 ... read only 0 of 8192 bytes").  So an
 * index scanned for a lookup is pointed here at the file its current
 * pg_class row names, read with a non-historic catalog snapshot, as
 * RelationInitPhysicalAddr does for the heap.  The new index holds every
 * row version the heap keeps (a rebuild indexes recently dead tuples, and
 * the slot's catalog_xmin keeps them recently dead).
 *
 * The same reading tells whether a lookup table or its key index still
 * exists: one dropped since the change (which fundrecs' event triggers
 * refuse, unless a superuser forces it) is a per-rule error for the
 * caller, not PostgreSQL's "could not find pg_class entry" that stops the
 * whole slot.
 *
 * What was read is kept per relation until a relcache invalidation of it
 * (a relcache rebuild also resets the index's file to the historic one).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "fundrecs.h"
#include "fundrecs_compat.h"

typedef struct CurrentRel
{
	Oid			relid;			/* hash key */
	bool		valid;			/* read since the last invalidation */
	bool		exists;			/* pg_class has it now */
	Oid			filenumber;		/* its relfilenode now (0: mapped) */
} CurrentRel;

static HTAB *current_rels = NULL;

static void
current_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	CurrentRel *c;

	if (current_rels == NULL)
		return;
	if (OidIsValid(relid))
	{
		c = hash_search(current_rels, &relid, HASH_FIND, NULL);
		if (c != NULL)
			c->valid = false;
		return;
	}
	hash_seq_init(&status, current_rels);
	while ((c = hash_seq_search(&status)) != NULL)
		c->valid = false;
}

/* The relation's pg_class row now, read with a non-historic snapshot. */
static CurrentRel *
current_rel(Oid relid)
{
	CurrentRel *c;
	bool		found;

	if (current_rels == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CurrentRel);
		ctl.hcxt = TopMemoryContext;
		current_rels = hash_create("fundrecs current relations", 64, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(current_invalidate, (Datum) 0);
	}
	c = hash_search(current_rels, &relid, HASH_ENTER, &found);
	if (!found || !c->valid)
	{
		Relation	pg_class = table_open(RelationRelationId, AccessShareLock);
		ScanKeyData key;
		SysScanDesc scan;
		HeapTuple	tuple;

		ScanKeyInit(&key, Anum_pg_class_oid, BTEqualStrategyNumber, F_OIDEQ,
					ObjectIdGetDatum(relid));
		scan = systable_beginscan(pg_class, ClassOidIndexId, true,
								  GetNonHistoricCatalogSnapshot(RelationRelationId), 1, &key);
		tuple = systable_getnext(scan);
		c->exists = HeapTupleIsValid(tuple);
		c->filenumber = c->exists ? ((Form_pg_class) GETSTRUCT(tuple))->relfilenode : InvalidOid;
		systable_endscan(scan);
		table_close(pg_class, AccessShareLock);
		c->valid = true;
	}
	return c;
}

bool
fr_relation_exists_now(Oid relid)
{
	return current_rel(relid)->exists;
}

Relation
fr_index_open_current(Oid indexid)
{
	CurrentRel *c = current_rel(indexid);
	Relation	index;

	if (!c->exists)
		return NULL;
	index = index_open(indexid, AccessShareLock);
	/* index_open may have taken invalidations: read again if so. */
	c = current_rel(indexid);
	if (!c->exists)
	{
		index_close(index, AccessShareLock);
		return NULL;
	}
	if (OidIsValid(c->filenumber) && FR_REL_FILE_NUMBER(index) != c->filenumber)
	{
		RelationCloseSmgr(index);
		FR_REL_FILE_NUMBER(index) = c->filenumber;
	}
	return index;
}
