/*-------------------------------------------------------------------------
 *
 * fundrecs_compat.h
 *	  What differs between the PostgreSQL major releases fundrecs builds
 *	  against (15, 16, 17, 18), in one place: each difference is a named
 *	  helper here, so that the rest of the code has no version tests.
 *
 * Include it after postgres.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUNDRECS_COMPAT_H
#define FUNDRECS_COMPAT_H

#if PG_VERSION_NUM < 150000
#error "fundrecs needs PostgreSQL 15 or later"
#endif

#include "access/htup_details.h"
#include "replication/reorderbuffer.h"

/*
 * A change's rows.  PostgreSQL 17 dropped ReorderBufferTupleBuf: the rows
 * are HeapTuples of their own.
 */
static inline HeapTuple
fr_change_newtuple(ReorderBufferChange *change)
{
#if PG_VERSION_NUM >= 170000
	return change->data.tp.newtuple;
#else
	return change->data.tp.newtuple ? &change->data.tp.newtuple->tuple : NULL;
#endif
}

static inline HeapTuple
fr_change_oldtuple(ReorderBufferChange *change)
{
#if PG_VERSION_NUM >= 170000
	return change->data.tp.oldtuple;
#else
	return change->data.tp.oldtuple ? &change->data.tp.oldtuple->tuple : NULL;
#endif
}

/*
 * A relation's primary key index, InvalidOid if none.  PostgreSQL 18 asks
 * whether a deferrable one will do; it never did before, and a deferrable
 * key is not a replica identity: no.
 */
#if PG_VERSION_NUM >= 180000
#define fr_primary_key_index(rel) RelationGetPrimaryKeyIndex((rel), false)
#else
#define fr_primary_key_index(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/* index_beginscan took instrumentation in PostgreSQL 18. */
#if PG_VERSION_NUM >= 180000
#define fr_index_beginscan(heap, index, snapshot, nkeys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), 0)
#else
#define fr_index_beginscan(heap, index, snapshot, nkeys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), 0)
#endif

/*
 * pg_b64_encode's source became "const uint8 *" in PostgreSQL 18; a cast
 * to the type each release declares.
 */
#if PG_VERSION_NUM >= 180000
#define FR_B64_SRC(p) ((const uint8 *) (p))
#else
#define FR_B64_SRC(p) ((const char *) (p))
#endif

/* Does the role own the relation?  object_ownercheck came in 16. */
#if PG_VERSION_NUM >= 160000
#define fr_relation_owned(relid, role) object_ownercheck(RelationRelationId, (relid), (role))
#else
#define fr_relation_owned(relid, role) pg_class_ownercheck((relid), (role))
#endif

/*
 * A relation's file number: rd_locator.relNumber from 16 on, rd_node.relNode
 * before.
 */
#if PG_VERSION_NUM >= 160000
#define FR_REL_FILE_NUMBER(rel) ((rel)->rd_locator.relNumber)
#else
#define FR_REL_FILE_NUMBER(rel) ((rel)->rd_node.relNode)
#endif

/*
 * One column of a heap tuple (attnum > 0).  Not heap_getattr: from 17.12
 * and 18.2 its inline body calls heap_datum_check, which the servers of
 * earlier minor releases lack, so a plugin built against newer headers
 * would not load there.  fastgetattr and getmissingattr are in all.
 */
static inline Datum
fr_heap_attr(HeapTuple tup, int attnum, TupleDesc desc, bool *isnull)
{
	if (attnum > (int) HeapTupleHeaderGetNatts(tup->t_data))
		return getmissingattr(desc, attnum, isnull);
	return fastgetattr(tup, attnum, desc, isnull);
}

#endif							/* FUNDRECS_COMPAT_H */
