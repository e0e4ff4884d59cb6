/*-------------------------------------------------------------------------
 *
 * fundrecs_publication.c
 *	  The plugin option publication_names: tables, actions, rows and
 *	  columns chosen by publications, with pgoutput's semantics.
 *
 * For each relation (once, when its FrRelInfo is built) the publications
 * named by the option are asked, as pgoutput asks them: is it in one of
 * them (directly, through FOR ALL TABLES, FOR TABLES IN SCHEMA, or through
 * an ancestor), which actions do they publish, as which relation (the
 * top-most ancestor in a publication with publish_via_partition_root),
 * with which row filters (one per action: the filters of the publications
 * that publish it, ORed; none when one of them has none) and which column
 * list.  Catalogs are read through decoding's historic snapshot, and the
 * cache is invalidated by the publication catalogs' invalidations, so an
 * ALTER PUBLICATION takes effect at its position in the stream.
 *
 * Per change, fr_publication_filter applies the row filter and pgoutput's
 * UPDATE transformations: old row in and new row out, a delete; old out
 * and new in, an insert; both out, nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/htup_details.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_publication.h"
#include "catalog/pg_publication_rel.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

/* The publications of the session's publication_names, loaded when needed. */
static MemoryContext pub_cxt = NULL;
static List *pub_list = NIL;	/* of Publication * */
static List *pub_names = NIL;	/* the names they were loaded for */
static bool pub_valid = false;

/*
 * A publication, or what publishes in it, changed: the publications are
 * read again (the relation cache, which owns the catalogs' invalidation
 * callbacks as pgoutput's does, calls this and builds every relation's
 * info again).
 */
void
fr_publication_invalidate(void)
{
	pub_valid = false;
}

static bool
same_names(List *a, List *b)
{
	ListCell   *la,
			   *lb;

	if (list_length(a) != list_length(b))
		return false;
	forboth(la, a, lb, b)
		if (strcmp((char *) lfirst(la), (char *) lfirst(lb)) != 0)
		return false;
	return true;
}

/*
 * The publications named by the option, as of the change being decoded.
 * A name that is no publication is an error (pgoutput's).
 */
static List *
load_publications(const FrOptions *opts)
{
	MemoryContext oldcxt;
	ListCell   *lc;

	if (pub_valid && same_names(pub_names, opts->publication_names))
		return pub_list;

	if (pub_cxt == NULL)
		pub_cxt = AllocSetContextCreate(CacheMemoryContext, "fundrecs publications",
										ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(pub_cxt);
	pub_list = NIL;
	pub_names = NIL;
	pub_valid = false;
	oldcxt = MemoryContextSwitchTo(pub_cxt);
	foreach(lc, opts->publication_names)
	{
		char	   *name = (char *) lfirst(lc);

		pub_list = lappend(pub_list, GetPublicationByName(name, false));
		pub_names = lappend(pub_names, pstrdup(name));
	}
	MemoryContextSwitchTo(oldcxt);
	pub_valid = true;
	return pub_list;
}

void
fr_publication_reset(void)
{
	if (pub_cxt != NULL)
		MemoryContextDelete(pub_cxt);
	pub_cxt = NULL;
	pub_list = NIL;
	pub_names = NIL;
	pub_valid = false;
}

/* The publication's actions, by FrPubAction. */
static bool
publishes(Publication *pub, int action)
{
	switch (action)
	{
		case FR_PUBACTION_INSERT:
			return pub->pubactions.pubinsert;
		case FR_PUBACTION_UPDATE:
			return pub->pubactions.pubupdate;
		case FR_PUBACTION_DELETE:
			return pub->pubactions.pubdelete;
		case FR_PUBACTION_TRUNCATE:
			return pub->pubactions.pubtruncate;
		default:
			return true;		/* the initial load: every publication's rows */
	}
}

/*
 * An attribute of the relation's pg_publication_rel row in the
 * publication, or false when there is none: FOR ALL TABLES, FOR TABLES IN
 * SCHEMA, or a table without that clause.
 */
static bool
publication_rel_attr(Publication *pub, Oid publish_as, AttrNumber attr, Datum *value)
{
	HeapTuple	tup;
	bool		isnull = true;

	if (pub->alltables)
		return false;
	tup = SearchSysCache2(PUBLICATIONRELMAP, ObjectIdGetDatum(publish_as),
						  ObjectIdGetDatum(pub->oid));
	if (!HeapTupleIsValid(tup))
		return false;
	*value = SysCacheGetAttr(PUBLICATIONRELMAP, tup, attr, &isnull);
	/* The value is copied before the tuple goes. */
	if (!isnull)
		*value = attr == Anum_pg_publication_rel_prqual ?
			PointerGetDatum(stringToNode(TextDatumGetCString(*value))) :
			PointerGetDatum(PG_DETOAST_DATUM_COPY(*value));
	ReleaseSysCache(tup);
	return !isnull;
}

/* The row filter (a node tree over publish_as's columns), or NULL: none. */
static Node *
row_filter(Publication *pub, Oid publish_as)
{
	Datum		d;

	return publication_rel_attr(pub, publish_as, Anum_pg_publication_rel_prqual, &d) ?
		(Node *) DatumGetPointer(d) : NULL;
}

/* The relation's column list in the publication, or NULL: every column. */
static Bitmapset *
column_list(Publication *pub, Oid publish_as)
{
	Datum		d;
	Bitmapset  *cols = NULL;

	if (publication_rel_attr(pub, publish_as, Anum_pg_publication_rel_prattrs, &d))
	{
		int2vector *attnums = (int2vector *) DatumGetPointer(d);

		for (int i = 0; i < attnums->dim1; i++)
			cols = bms_add_member(cols, attnums->values[i]);
	}
	return cols;
}

/*
 * The publications that publish the relation, and as which relation: the
 * top-most ancestor published with publish_via_partition_root across them
 * all, as pgoutput's get_rel_sync_entry decides.  Sets ri->pub_actions.
 */
static List *
relation_publications(FrRelInfo *ri, Relation rel, List *pubs, Oid *publish_as)
{
	Oid			relid = RelationGetRelid(rel);
	bool		am_partition = rel->rd_rel->relispartition;
	char		relkind = rel->rd_rel->relkind;
	List	   *direct = GetRelationPublications(relid);
	List	   *in_schema = GetSchemaPublications(RelationGetNamespace(rel));
	List	   *ancestors = am_partition ? get_partition_ancestors(relid) : NIL;
	List	   *chosen = NIL;
	int			chosen_level = 0;
	ListCell   *lc;

	*publish_as = relid;
	foreach(lc, pubs)
	{
		Publication *pub = (Publication *) lfirst(lc);
		bool		publish = false;
		Oid			pub_relid = relid;
		int			level = 0;

		if (pub->alltables)
		{
			publish = true;
			if (pub->pubviaroot && am_partition)
			{
				pub_relid = llast_oid(ancestors);
				level = list_length(ancestors);
			}
		}
		if (!publish)
		{
			bool		ancestor_published = false;

			if (am_partition)
			{
				int			alevel;
				Oid			ancestor = GetTopMostAncestorInPublication(pub->oid, ancestors, &alevel);

				if (OidIsValid(ancestor))
				{
					ancestor_published = true;
					if (pub->pubviaroot)
					{
						pub_relid = ancestor;
						level = alevel;
					}
				}
			}
			publish = list_member_oid(direct, pub->oid) ||
				list_member_oid(in_schema, pub->oid) || ancestor_published;
		}

		/* A partitioned table's own changes (a TRUNCATE) only as a root. */
		if (!publish || (relkind == RELKIND_PARTITIONED_TABLE && !pub->pubviaroot))
			continue;
		for (int a = FR_PUBACTION_INSERT; a <= FR_PUBACTION_TRUNCATE; a++)
			ri->pub_actions[a] |= publishes(pub, a);
		ri->pub_actions[FR_PUBACTION_LOAD] = true;
		/* As the top-most ancestor any of them publishes it as. */
		if (chosen_level > level)
			continue;
		if (chosen_level < level)
		{
			*publish_as = pub_relid;
			chosen_level = level;
			chosen = NIL;
		}
		chosen = lappend(chosen, pub);
	}
	return chosen;
}

/* The row filters, one per action, ORed across the publications. */
static void
prepare_filters(FrRelInfo *ri, List *pubs, Oid publish_as)
{
	for (int a = FR_PUBACTION_INSERT; a < FR_PUBACTION_COUNT; a++)
	{
		List	   *quals = NIL;
		bool		unfiltered = false;
		ListCell   *lc;

		if (a == FR_PUBACTION_TRUNCATE)
			continue;
		foreach(lc, pubs)
		{
			Publication *pub = (Publication *) lfirst(lc);
			Node	   *qual;

			if (!publishes(pub, a))
				continue;
			qual = row_filter(pub, publish_as);
			if (qual == NULL)
			{
				unfiltered = true;
				break;
			}
			quals = lappend(quals, qual);
		}
		if (unfiltered || quals == NIL)
			continue;
		if (ri->pub_estate == NULL)
			ri->pub_estate = CreateExecutorState();
		ri->pub_filters[a] = ExecPrepareExpr((Expr *) (list_length(quals) > 1 ?
													   make_orclause(quals) : linitial(quals)),
											 ri->pub_estate);
	}
}

/*
 * The column list: the same in every publication that publishes the
 * relation (FOR ALL TABLES counts as none), or an error, as pgoutput has it.
 */
static void
prepare_columns(FrRelInfo *ri, Relation rel, List *pubs, Oid publish_as)
{
	bool		first = true;
	ListCell   *lc;

	foreach(lc, pubs)
	{
		Bitmapset  *cols = column_list((Publication *) lfirst(lc), publish_as);

		if (first)
			ri->pub_columns = cols;
		else if (!bms_equal(ri->pub_columns, cols))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot use different column lists for table \"%s.%s\" in different publications",
							get_namespace_name(RelationGetNamespace(rel)),
							RelationGetRelationName(rel))));
		first = false;
	}
}

Oid
fr_publication_resolve(FrRelInfo *ri, Relation rel, const FrOptions *opts)
{
	List	   *pubs;
	Oid			publish_as;

	memset(ri->pub_actions, 0, sizeof(ri->pub_actions));
	memset(ri->pub_filters, 0, sizeof(ri->pub_filters));
	ri->pub_estate = NULL;
	ri->pub_columns = NULL;
	pubs = relation_publications(ri, rel, load_publications(opts), &publish_as);
	if (pubs == NIL)
		return publish_as;
	prepare_filters(ri, pubs, publish_as);
	prepare_columns(ri, rel, pubs, publish_as);
	return publish_as;
}

void
fr_publication_release(FrRelInfo *ri)
{
	if (ri->pub_estate != NULL)
		FreeExecutorState(ri->pub_estate);
	ri->pub_estate = NULL;
	memset(ri->pub_filters, 0, sizeof(ri->pub_filters));
}

/* The filter's verdict on the row in slot: NULL counts as false. */
static bool
matches(FrRelInfo *ri, ExprState *filter, TupleTableSlot *slot)
{
	ExprContext *ecxt = GetPerTupleExprContext(ri->pub_estate);
	bool		isnull;
	Datum		d;

	ecxt->ecxt_scantuple = slot;
	d = ExecEvalExprSwitchContext(filter, ecxt, &isnull);
	ResetPerTupleExprContext(ri->pub_estate);
	return !isnull && DatumGetBool(d);
}

bool
fr_publication_row_matches(FrRelInfo *ri, FrPubAction action, TupleDesc desc, HeapTuple tuple)
{
	TupleTableSlot *slot;
	bool		result;

	if (ri->pub_filters[action] == NULL)
		return true;
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	ExecStoreHeapTuple(tuple, slot, false);
	result = matches(ri, ri->pub_filters[action], slot);
	ExecDropSingleTupleTableSlot(slot);
	return result;
}

/*
 * The new row of an update, for its filter: a replica identity column left
 * unchanged and stored out of line is only in the old row (the new one
 * holds an on-disk TOAST pointer), so its value is taken from there, as
 * pgoutput does.  NULL when the new row needs nothing of the old.
 */
static HeapTuple
new_row_for_filter(TupleDesc desc, HeapTuple newtuple, HeapTuple oldtuple)
{
	Datum	   *nv = palloc(sizeof(Datum) * desc->natts);
	bool	   *nn = palloc(sizeof(bool) * desc->natts);
	Datum	   *ov = palloc(sizeof(Datum) * desc->natts);
	bool	   *on = palloc(sizeof(bool) * desc->natts);
	bool		patched = false;

	heap_deform_tuple(newtuple, desc, nv, nn);
	heap_deform_tuple(oldtuple, desc, ov, on);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (nn[i] || on[i] || att->attlen != -1)
			continue;
		if (VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(nv[i])) &&
			!VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(ov[i])))
		{
			nv[i] = ov[i];
			patched = true;
		}
	}
	return patched ? heap_form_tuple(desc, nv, nn) : NULL;
}

bool
fr_publication_filter(FrRelInfo *ri, TupleDesc desc, const char **op,
					  HeapTuple *newtuple, HeapTuple *oldtuple)
{
	FrPubAction action = strcmp(*op, "insert") == 0 ? FR_PUBACTION_INSERT :
	strcmp(*op, "update") == 0 ? FR_PUBACTION_UPDATE : FR_PUBACTION_DELETE;
	ExprState  *filter;
	HeapTuple	patched;
	bool		old_in,
				new_in;

	if (!ri->pub_actions[action])
		return false;
	filter = ri->pub_filters[action];
	if (filter == NULL)
		return true;

	/*
	 * One row: an insert's new row, a delete's old one, or an update's new
	 * row when the old one was not logged (no key column changed): the filter
	 * decides alone.
	 */
	if (*newtuple == NULL || *oldtuple == NULL)
		return fr_publication_row_matches(ri, action, desc,
										  *newtuple != NULL ? *newtuple : *oldtuple);

	/* An update with both rows: each is tested. */
	patched = new_row_for_filter(desc, *newtuple, *oldtuple);
	old_in = fr_publication_row_matches(ri, action, desc, *oldtuple);
	new_in = fr_publication_row_matches(ri, action, desc, patched ? patched : *newtuple);
	if (!old_in && !new_in)
		return false;
	if (!old_in)
	{
		/* Into the rows published: an insert, of the whole new row. */
		*op = "insert";
		if (patched)
			*newtuple = patched;
		*oldtuple = NULL;
	}
	else if (!new_in)
	{
		/* Out of them: a delete of the old row. */
		*op = "delete";
		*newtuple = NULL;
	}
	return true;
}

/*
 * For fundrecs.option_problems: publications that do not exist, or that
 * publish no table or no action.
 */
List *
fr_publication_problems(const FrOptions *opts)
{
	List	   *problems = NIL;
	ListCell   *lc;

	foreach(lc, opts->publication_names)
	{
		const char *name = (const char *) lfirst(lc);
		Publication *pub = GetPublicationByName(name, true);

		if (pub == NULL)
			problems = lappend(problems, psprintf("publication \"%s\" does not exist", name));
		else if (!pub->alltables &&
				 GetPublicationRelations(pub->oid, PUBLICATION_PART_ROOT) == NIL &&
				 GetPublicationSchemas(pub->oid) == NIL)
			problems = lappend(problems, psprintf("publication \"%s\" publishes no table", name));
		else if (!pub->pubactions.pubinsert && !pub->pubactions.pubupdate &&
				 !pub->pubactions.pubdelete && !pub->pubactions.pubtruncate)
			problems = lappend(problems, psprintf("publication \"%s\" publishes no action (publish = '')", name));
	}
	return problems;
}
