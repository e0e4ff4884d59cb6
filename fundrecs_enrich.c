/*-------------------------------------------------------------------------
 *
 * fundrecs_enrich.c
 *	  Enrichment rules applied to a row: the lookups (fundrecs_lookup.c),
 *	  computed columns evaluated with the executor (or exactly, in
 *	  integers), the route as a category slug, evaluation errors per
 *	  on_enrich_error; a row the lookup cache answers alone is written
 *	  without the executor.  The rule sets are fundrecs_ruleset.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs_rules_int.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "utils/array.h"
#include "storage/bufmgr.h"
#include "storage/sinval.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

#include "fundrecs_compat.h"


/* ----------------------------------------------------------------
 * Applying them to a row
 * ----------------------------------------------------------------
 */

/* The quoted slug of a route's value (len bytes), remembered per rule set. */
static void
route_json(FrRuleSet *rs, const char *value, int len, FrEnriched *out)
{
	RouteEntry *e;
	bool		found;
	LookupKey	k;

	if (rs->state.routes == NULL || rs->state.route_entries >= FR_ROUTE_CACHE_MAX)
	{
		rs->state.routes = fr_bytes_hash_start("fundrecs routes", sizeof(RouteEntry), 64, rs->cxt,
											   &rs->state.route_cxt);
		rs->state.route_entries = 0;
	}
	k.bytes = value;
	k.len = len;
	e = hash_search(rs->state.routes, &k, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(rs->state.route_cxt);
		char	   *copy = palloc(len + 1);

		memcpy(copy, value, len);
		copy[len] = '\0';
		e->key.bytes = copy;
		e->json = fr_json_quote(fr_category_slug(copy));
		e->json_len = strlen(e->json);
		MemoryContextSwitchTo(oldcxt);
		rs->state.route_entries++;
	}
	out->route_json = e->json;
	out->route_len = e->json_len;
}

/* A column of the row being enriched (attno from 1), read in place. */
static inline Datum
source_value(FrRuleSet *rs, AttrNumber attno, bool *isnull)
{
	if (attno > rs->state.row_natts)
	{
		*isnull = true;
		return (Datum) 0;
	}
	*isnull = rs->state.row_isnull[attno - 1];
	return rs->state.row_values[attno - 1];
}

/*
 * Appends an ExactMul's value when it can: false to evaluate it instead.
 * *null tells whether it is NULL.
 */
static bool
append_exact(FrRuleSet *rs, ExactMul *x, StringInfo json, bool *null)
{
	LookupEntry *e = rs->state.cur[x->dec_rule];
	int64		q;
	Datum		d;
	bool		inull;

	if (e == NULL)
		return false;
	if (x->int_inner)
	{
		d = rs->state.inner_slot->tts_values[x->int_attno - 1];
		inull = rs->state.inner_slot->tts_isnull[x->int_attno - 1];
	}
	else
		d = source_value(rs, x->int_attno, &inull);
	*null = e->nulls[x->dec_out] || inull;
	if (*null)
	{
		fr_append_lit(json, "null");
		return true;
	}
	if (e->scales[x->dec_out] < 0)
		return false;
	switch (x->int_type)
	{
		case INT2OID:
			q = DatumGetInt16(d);
			break;
		case INT4OID:
			q = DatumGetInt32(d);
			break;
		default:
			q = DatumGetInt64(d);
			break;
	}
	return fr_json_append_scaled_product(json, e->units[x->dec_out], e->scales[x->dec_out], q);
}

/* For the CONTEXT line of an error while evaluating. */
typedef struct ApplyContext
{
	FrRuleSet  *rs;
	const char *what;
	const char *relname;
	XLogRecPtr	lsn;
} ApplyContext;

static void
apply_error_context(void *arg)
{
	ApplyContext *ac = arg;

	if (ac->what != NULL)
		errcontext("%s, for the change at %X/%X of table \"%s\"", ac->what,
				   LSN_FORMAT_ARGS(ac->lsn), ac->relname);
}

/*
 * A join column of another integer type than the key's (the built-in rule's
 * product column may be any): its value as the key's type; false when out
 * of the key type's range, which no row of the lookup can hold.
 */
static bool
int_key_convert(const FrRule *rule, int k, Datum *key)
{
	int64		v;

	switch (rule->key_from[k])
	{
		case INT2OID:
			v = DatumGetInt16(*key);
			break;
		case INT4OID:
			v = DatumGetInt32(*key);
			break;
		default:
			v = DatumGetInt64(*key);
			break;
	}
	switch (rule->key_typlen[k])
	{
		case 2:
			if (v < PG_INT16_MIN || v > PG_INT16_MAX)
				return false;
			*key = Int16GetDatum((int16) v);
			break;
		case 4:
			if (v < PG_INT32_MIN || v > PG_INT32_MAX)
				return false;
			*key = Int32GetDatum((int32) v);
			break;
		default:
			*key = Int64GetDatum(v);
			break;
	}
	return true;
}

/* The row's integer of computed column j of a cached path (not null). */
static inline int64
cached_int(const CachedPath *cp, int j, const Datum *values)
{
	Datum		d = values[cp->computed[j].int_attno - 1];

	switch (cp->computed[j].int_type)
	{
		case INT2OID:
			return DatumGetInt16(d);
		case INT4OID:
			return DatumGetInt32(d);
		default:
			return DatumGetInt64(d);
	}
}

/*
 * A row of a set that may take it (CachedPath: one rule, looked up by an
 * integer column of the row, computed columns all exact, a route that is
 * the lookup row's), whose lookup row the dense cache holds with its route
 * known: the route and the cached row, written later by fr_rules_write
 * straight into the row's JSON, without the executor.  False, having set
 * nothing, when the row needs apply_rules (a row not cached yet, a product
 * that would overflow).
 */
static bool
apply_cached(FrRuleSet *rs, Datum *values, bool *isnull, int natts, FrEnriched *out)
{
	const CachedPath *cp = &rs->cached;
	FrRuleState *st = &rs->state.rules[0];
	AttrNumber	ref = cp->key_attno;
	LookupEntry *e;
	int64		id;

	if (ref > natts || isnull[ref - 1] || st->cache == NULL || st->cache_full)
		return false;
	id = cp->key_typlen == 4 ? DatumGetInt32(values[ref - 1]) :
		cp->key_typlen == 8 ? DatumGetInt64(values[ref - 1]) : DatumGetInt16(values[ref - 1]);
	if ((e = fr_dense_get(st, id)) == NULL || (cp->has_route && e->route_json == NULL))
	{
		/*
		 * The lookup will read the row's copy in the map: start loading it
		 * now, so that it comes while the lookup gets ready.
		 */
		if (st->rowdirect != NULL &&
			(uint64) (id - st->rowdirect_min) < (uint64) st->rowdirect_len &&
			st->rowdirect[id - st->rowdirect_min] != NULL)
			__builtin_prefetch(st->rowdirect[id - st->rowdirect_min]);
		return false;
	}

	/* Every product exact (else numeric_mul's way, by apply_rules). */
	for (int j = 0; j < cp->ncomputed; j++)
	{
		int			dec = cp->computed[j].dec_out;
		AttrNumber	a = cp->computed[j].int_attno;
		int64		total;

		if (e->nulls[dec] || a > natts || isnull[a - 1])
			continue;
		if (e->scales[dec] < 0 ||
			__builtin_mul_overflow(e->units[dec], cached_int(cp, j, values), &total))
			return false;
	}

	/* Written by fr_rules_write, straight into the row. */
	out->entry = e;
	out->set = rs;
	out->values = values;
	out->isnull = isnull;
	out->natts = natts;
	if (cp->has_route)
	{
		out->route_json = e->route_json;
		out->route_len = e->route_len;
	}
	/* Counted as fr_lookup() counts a hit. */
	fr_lookup_count_hit(st);
	return true;
}

/*
 * Appends the rules' columns of a row: the JSON apply_rules made, or the
 * cached row apply_cached found and the products of the row's integers.
 */
void
fr_rules_write(StringInfo out, const FrEnriched *en, bool skip_comma)
{
	int			start = out->len;

	if (en->entry == NULL)
		fr_append_bytes(out, en->json.data, en->json.len);
	else
	{
		const LookupEntry *e = en->entry;
		const CachedPath *cp = &en->set->cached;

		fr_append_bytes(out, e->json, e->json_len);
		for (int j = 0; j < cp->ncomputed; j++)
		{
			int			dec = cp->computed[j].dec_out;
			AttrNumber	a = cp->computed[j].int_attno;

			fr_append_bytes(out, cp->computed[j].json_name, cp->computed[j].json_name_len);
			if (e->nulls[dec] || a > en->natts || en->isnull[a - 1])
				fr_append_lit(out, "null");
			else
				(void) fr_json_append_scaled_product(out, e->units[dec], e->scales[dec],
													 cached_int(cp, j, en->values));
		}
	}
	/* After a '{': the first column without its comma. */
	if (skip_comma && out->len > start)
	{
		memmove(out->data + start, out->data + start + 1, out->len - start - 1);
		out->len--;
		out->data[out->len] = '\0';
	}
}

/* The row's slots, stored for the executor before it evaluates. */
static inline void
slots_ready(FrRuleSet *rs)
{
	if (TTS_EMPTY(rs->state.scan_slot))
	{
		TupleTableSlot *scan = rs->state.scan_slot;

		/* The columns the rules read; the others stay null (start_state). */
		for (int i = 0; i < rs->max_ref; i++)
			scan->tts_values[i] = source_value(rs, i + 1, &scan->tts_isnull[i]);
		ExecStoreVirtualTuple(scan);
		ExecStoreVirtualTuple(rs->state.inner_slot);
	}
}

static void
apply_rules(FrRuleSet *rs, Datum *values, bool *isnull, int natts, Snapshot snapshot,
			bool cacheable, FrEnriched *out, ApplyContext *ac)
{
	TupleTableSlot *scan = rs->state.scan_slot;
	TupleTableSlot *inner = rs->state.inner_slot;
	ExprContext *econtext = rs->state.econtext;
	StringInfo	json = &out->json;

	/*
	 * The row is read in place; the slots are stored for the executor only
	 * when it evaluates something (slots_ready): exact products and the
	 * routes kept with lookup rows read the arrays.
	 */
	rs->state.row_values = values;
	rs->state.row_isnull = isnull;
	rs->state.row_natts = natts;
	if (!TTS_EMPTY(scan))
	{
		ExecClearTuple(scan);
		ExecClearTuple(inner);
	}
	for (int i = 0; i < rs->ncols; i++)
		inner->tts_isnull[i] = true;

	for (int r = 0; r < rs->nrules; r++)
	{
		FrRule	   *rule = &rs->rules[r];
		FrRuleState *st = &rs->state.rules[r];
		Datum		key[INDEX_MAX_KEYS];
		bool		miss = false;
		LookupEntry *e = NULL;

		for (int k = 0; k < rule->nkeys; k++)
		{
			int16		ref = rule->join_refs[k];
			bool		null;

			if (ref > 0)
				key[k] = source_value(rs, ref, &null);
			else
			{
				key[k] = inner->tts_values[-ref - 1];
				null = inner->tts_isnull[-ref - 1];
			}
			if (null)
				miss = true;
			else if (rule->key_from != NULL && OidIsValid(rule->key_from[k]) &&
					 !int_key_convert(rule, k, &key[k]))
				miss = true;
		}
		/* The built-in rule without its lookup table: nothing is found. */
		if (!OidIsValid(rule->lookup))
			miss = true;
		rs->state.cur[r] = NULL;
		if (miss)
		{
			fr_append_bytes(json, rule->miss_json, rule->miss_json_len);
			/* inner columns stay null */
		}
		else
		{
			e = fr_lookup(rs, st, key, snapshot, cacheable);
			rs->state.cur[r] = e;
			fr_append_bytes(json, e->json, e->json_len);
			for (int i = 0; i < rule->nout; i++)
			{
				inner->tts_values[rule->first_col + i] = e->values[i];
				inner->tts_isnull[rule->first_col + i] = e->nulls[i];
			}
		}

		for (int j = 0; j < rule->ncomputed; j++)
		{
			int			c = rule->first_col + rule->nout + j;
			FrColumn   *col = &rs->cols[c];
			bool		null;
			Datum		d;

			ac->what = rule->computed_what[j];
			fr_append_bytes(json, col->json_name - 1, col->json_name_len + 1);
			if (rule->exact[j] != NULL && append_exact(rs, rule->exact[j], json, &null))
			{
				/* written; no expression reads it */
				inner->tts_values[c] = (Datum) 0;
				inner->tts_isnull[c] = true;
				continue;
			}
			slots_ready(rs);
			d = ExecEvalExprSwitchContext(st->computed[j], econtext, &null);
			inner->tts_values[c] = d;
			inner->tts_isnull[c] = null;
			if (null)
				fr_append_lit(json, "null");
			else
				fr_json_append_value(json, col, d);
		}
		if (st->route != NULL && e != NULL && e->route_json != NULL)
		{
			out->route_json = e->route_json;
			out->route_len = e->route_len;
		}
		else if (st->route != NULL)
		{
			bool		null;
			Datum		d;

			ac->what = rule->route_what;
			slots_ready(rs);
			d = ExecEvalExprSwitchContext(st->route, econtext, &null);
			if (null)
			{
				out->route_json = "\"" FR_ROUTE_UNCATEGORIZED "\"";
				out->route_len = strlen(out->route_json);
			}
			else
			{
				struct varlena *t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(d));

				route_json(rs, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), out);
			}
			/* The route and the cached row live as long as the rule set. */
			if (rule->route_from_lookup && e != NULL && e->kept)
				fr_lookup_keep_route(st, e, out->route_json, out->route_len);
		}
		ac->what = NULL;
	}
}

/*
 * Enriches one row (values/isnull in the rule source's columns) into out:
 * the emitted columns' JSON, each after a comma, and the route when a rule
 * has one.  Evaluation errors follow on_enrich_error: an ERROR naming the
 * rule, the change and the table, or out->error with the row unenriched.
 */
void
fr_rules_apply(FrRuleSet *rs, const FrOptions *opts, Datum *values, bool *isnull, int natts,
			   const FrRowMeta *meta, const char *relname, FrEnriched *out)
{
	ApplyContext ac = {rs, NULL, relname, meta->lsn};
	ErrorContextCallback errcb;
	Snapshot	snapshot = meta->load != NULL ? meta->load->snapshot : NULL;
	bool		cacheable = (meta->load != NULL || meta->cache_usable) &&
	opts->lookup_cache_bytes > 0;

	fr_lookup_set_budget(opts->lookup_cache_bytes);

	/* The caller's buffer is used again (fundrecs_row.c keeps two). */
	if (out->json.data == NULL)
		initStringInfo(&out->json);
	else
		resetStringInfo(&out->json);
	out->route_json = NULL;
	out->route_len = 0;
	out->error = NULL;
	out->entry = NULL;

	/* A column the change does not carry cannot be read. */
	if (meta->toast_pointers_unchanged)
	{
		for (int i = 0; i < rs->nvarlena_refs; i++)
		{
			AttrNumber	a = rs->varlena_refs[i];

			if (a > natts || isnull[a - 1])
				continue;
			if (VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(values[a - 1])))
			{
				out->error = psprintf("column \"%s\", which an enrichment rule reads, is an unchanged out-of-line value the change does not carry (set REPLICA IDENTITY FULL on the table)",
									  NameStr(TupleDescAttr(rs->source_desc, a - 1)->attname));
				break;
			}
		}
	}
	if (out->error == NULL && rs->error != NULL)
		out->error = rs->error;
	if (out->error == NULL && rs->cached.usable && cacheable &&
		apply_cached(rs, values, isnull, natts, out))
		return;
	if (out->error != NULL)
	{
		if (opts->on_enrich_error == FR_ENRICH_ERROR_FAIL)
		{
			fr_failure_record(meta->lsn, relname, out->error);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("could not enrich the change at %X/%X of table \"%s\"",
							LSN_FORMAT_ARGS(meta->lsn), relname),
					 errdetail("%c%s.", pg_toupper((unsigned char) out->error[0]), out->error + 1),
					 errhint("Changes already written are decoded as they were written: fixing or dropping the rule now helps only later ones. To get past these, decode with the plugin option on_enrich_error=emit (fundrecs_shipper -o on_enrich_error=emit): they are shipped unenriched, with route \"%s\" and the reason.",
							 FR_ROUTE_ERROR)));
		}
		return;
	}

	errcb.callback = apply_error_context;
	errcb.arg = &ac;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	if (opts->on_enrich_error == FR_ENRICH_ERROR_FAIL)
	{
		MemoryContext oldcxt = CurrentMemoryContext;

		PG_TRY();
		{
			apply_rules(rs, values, isnull, natts, snapshot, cacheable, out, &ac);
		}
		PG_CATCH();
		{
			/* Kept for fundrecs.slot_status, then raised as it was. */
			MemoryContext errcxt = MemoryContextSwitchTo(oldcxt);
			ErrorData  *edata = CopyErrorData();

			fr_failure_record(meta->lsn, relname,
							  edata->context != NULL ?
							  psprintf("%s (%s)", edata->message, edata->context) :
							  edata->message);
			MemoryContextSwitchTo(errcxt);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	else
	{
		/*
		 * An evaluation error (a division by zero, an overflow) is caught in
		 * a subtransaction, as PL/pgSQL catches one: the row is emitted
		 * unenriched, with the error's message.
		 */
		MemoryContext oldcxt = CurrentMemoryContext;
		ResourceOwner oldowner = CurrentResourceOwner;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		PG_TRY();
		{
			apply_rules(rs, values, isnull, natts, snapshot, cacheable, out, &ac);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(oldcxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			out->error = ac.what != NULL ? psprintf("%s: %s", ac.what, edata->message) :
				pstrdup(edata->message);
			resetStringInfo(&out->json);
			out->route_json = NULL;
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
	error_context_stack = errcb.previous;
	ResetExprContext(rs->state.econtext);
}

/* Does the rule set give a route? */
bool
fr_rules_have_route(FrRuleSet *rs)
{
	return rs->has_route;
}
