/*-------------------------------------------------------------------------
 *
 * fundrecs_rules_int.h
 *	  The enrichment rules' private header: what fundrecs_ruleset.c (a
 *	  table's rules read as of a change, and cached), fundrecs_compile.c
 *	  (compiled), fundrecs_lookup.c (their lookups and its cache) and
 *	  fundrecs_enrich.c (applied to a row) share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUNDRECS_RULES_INT_H
#define FUNDRECS_RULES_INT_H

#include "fundrecs.h"
#include "access/genam.h"

#include "executor/execdesc.h"
#include "nodes/execnodes.h"

#define FR_RULES_TABLE "enrichment_rules"

/* Integer keys below this are also found by index (see lookup). */
#define FR_DENSE_KEYS (1 << 20)
/* Route values kept per rule set before starting again. */
#define FR_ROUTE_CACHE_MAX 10000

/* A lookup's result, cached by the key's bytes. */
typedef struct LookupKey
{
	const char *bytes;
	int			len;
} LookupKey;

typedef struct LookupEntry
{
	LookupKey	key;			/* must be first */
	bool		found;
	bool		kept;			/* in the cache (else read for one change) */
	Datum	   *values;			/* the rule's out columns */
	bool	   *nulls;
	char	   *json;			/* ,"name":value... of the out columns */
	int			json_len;
	const char *route_json;		/* route_from_lookup: its route, once known */
	int			route_len;
	int64	   *units;			/* numeric out columns as 10^-scale units */
	int8	   *scales;			/* -1: not a numeric, or not exact */
} LookupEntry;

/*
 * A computed column "decimal * integer" whose decimal is a lookup column:
 * computed in int64 when exact, as numeric_mul would give it (the built-in
 * enrichment's price x quantity does the same).  Only where no later
 * expression reads the column: it is written, not kept.
 */
typedef struct ExactMul
{
	int			dec_rule;		/* the rule whose lookup emits the decimal */
	int			dec_out;		/* its out column */
	bool		int_inner;		/* the integer: emitted column or row's */
	AttrNumber	int_attno;
	Oid			int_type;
} ExactMul;

/*
 * A set whose rows the lookup cache may answer alone (apply_cached): one
 * rule, keyed by an integer column of the row, its computed columns exact
 * products of that row's integers, its route the lookup row's.  What such
 * a row reads, in one place.
 */
#define FR_CACHED_PATH_MAX 4

typedef struct CachedPath
{
	bool		usable;
	bool		has_route;
	AttrNumber	key_attno;		/* the row's key column */
	int16		key_typlen;		/* the lookup key's: 2, 4 or 8 */
	int			ncomputed;
	struct
	{
		int			dec_out;	/* the lookup row's decimal (out column) */
		AttrNumber	int_attno;	/* the row's integer */
		Oid			int_type;
		const char *json_name;	/* ,"name": */
		int			json_name_len;
	}			computed[FR_CACHED_PATH_MAX];
} CachedPath;

typedef struct RouteEntry
{
	LookupKey	key;			/* the route's value; must be first */
	char	   *json;			/* its slug, quoted */
	int			json_len;
} RouteEntry;

/*
 * A compiled rule: what it reads, looks up and emits, fixed once compiled
 * (as the executor's Plan is).  What changes while it is applied is its
 * FrRuleState.
 */
typedef struct FrRule
{
	char	   *name;
	Oid			lookup;			/* InvalidOid: the built-in rule without its
								 * table (every row a miss) */
	Oid			lookup_index;
	int			nkeys;
	AttrNumber *key_attnums;	/* the lookup's key columns (heap attnums) */
	int16	   *join_refs;		/* > 0 source attnum; -n the n-th emitted */
	Oid		   *key_from;		/* NULL, or per key the integer type of a join
								 * column that is not the key's own */
	FmgrInfo   *key_eq;
	Oid		   *key_coll;
	int16	   *key_typlen;
	bool	   *key_typbyval;
	bool		int_key;		/* one int2, int4 or int8 key column */
	int			nout;
	AttrNumber *out_attnums;
	int			first_col;		/* its first emitted column's index */
	int			ncomputed;
	char	  **computed_what;	/* for the error context */
	Node	  **computed_nodes;
	ExactMul  **exact;			/* per computed column, NULL: none */
	char	   *route_what;
	Node	   *route_node;		/* NULL: none */
	bool		route_from_lookup;	/* it reads only this rule's lookup */
	char	   *miss_json;		/* the out columns, all null */
	int			miss_json_len;
} FrRule;

/*
 * A rule being applied (as the executor's PlanState is to its Plan): its
 * expressions ready to run, its lookup cache and its row map.
 */
typedef struct FrRuleState
{
	/* what a row answered by the cache reads, first (apply_cached) */
	LookupEntry **dense;		/* int_key: entries of keys 0..dense_size-1 */
	uint64	   *dense_bits;		/* which of them are set: a key the cache
								 * lacks costs no read of dense (fr_dense_get) */
	int64		dense_size;
	HTAB	   *cache;			/* LookupEntry; made on first use */
	bool		cache_full;		/* over its share of lookup_cache_bytes */
	long		window_lookups; /* since the cache started: lookups... */
	long		window_hits;	/* ...and those it answered */

	const FrRule *rule;
	ExprState **computed;
	ExprState  *route;			/* NULL: none */
	MemoryContext cache_cxt;	/* holds it, reset when it is full */
	long		cache_entries;
	long		next_check;		/* cache_entries at which to measure it */
	int			admit_shift;	/* a miss is cached when its key's hash has
								 * this many low zero bits (0: always) */
	LookupEntry *last;			/* the entry found last: runs of one key */
	StringInfoData keybuf;		/* scratch: a key's bytes */

	/*
	 * int_key, a large lookup read at random: its rows' places (see
	 * rowmap_build)
	 */
	struct rowmap_hash *rowmap; /* key -> TID of the row seen by one heap scan */
	MemoryContext rowmap_cxt;	/* holds it */
	Oid			rowmap_file;	/* the heap's file number when it was read */
	BlockNumber rowmap_nblocks; /* the heap's size, read again after... */
	uint64		rowmap_inval_count; /* ...invalidations came after this count */
	long		index_reads;	/* key index reads that found a row it lacked */
	long		rowmap_threshold;	/* index_reads that call for a map (0: not
									 * computed yet) */
	bool		rowmap_refused; /* over its share of lookup_cache_bytes */

	/*
	 * The rows themselves, copied by the scan of a change that may use the
	 * caches: the whole lookup as of every such change until the caches start
	 * again (fundrecs_asof.c), so those changes read neither the heap nor the
	 * index (see rowmap_build).
	 */
	bool		rowmap_copied;	/* every row of the map has its copy */
	MinimalTuple *rowdirect;	/* copied, keys in a narrow range: the copy of
								 * key k at k - rowdirect_min (else rowmap) */
	int64		rowdirect_min;
	int64		rowdirect_len;
	TupleDesc	rowmap_desc;	/* the lookup's, for the copies */
	char	   *copy_next;		/* free space of the copies' current block */
	Size		copy_free;
	bool		copy_huge;		/* the copies' blocks are regions */
	struct RowRegions *regions; /* the map's regions (rowmap_region) */
	Size		rowmap_bytes;	/* the map's and copies' memory */

	/*
	 * A backfill chunk's lookups (one MVCC snapshot, one short statement):
	 * the lookup, its key index and a scan of it stay open until the chunk
	 * ends (fr_load_lookups_release), instead of being opened, locked, closed
	 * and unlocked for each key the cache lacks.  Not an initial load's,
	 * whose transaction may last hours (it would hold the lookup's lock, and
	 * DDL on the lookup would queue behind it), nor the decoder's: a
	 * walsender holds no lock between changes.
	 */
	Relation	open_rel;
	Relation	open_index;
	IndexScanDesc open_scan;
	Snapshot	open_snapshot;	/* the scan's */
	TupleTableSlot *open_slot;
} FrRuleState;

/* The cached entry of integer key id, NULL if the cache lacks it. */
static inline LookupEntry *
fr_dense_get(const FrRuleState *st, int64 id)
{
	if (id < 0 || id >= st->dense_size ||
		(st->dense_bits[id >> 6] & (UINT64CONST(1) << (id & 63))) == 0)
		return NULL;
	return st->dense[id];
}

/* A rule set's state while applied: its rules', the executor's, the routes. */
typedef struct FrRuleSetState
{
	FrRuleState *rules;			/* per rule */
	EState	   *estate;
	ExprContext *econtext;
	TupleTableSlot *scan_slot;
	TupleTableSlot *inner_slot;
	LookupEntry **cur;			/* per rule, the row's lookup (NULL: none) */
	Datum	   *row_values;		/* the row being enriched (the source's */
	bool	   *row_isnull;		/* columns), read in place; copied into */
	int			row_natts;		/* scan_slot only for the executor */
	HTAB	   *routes;			/* route text -> quoted slug */
	long		route_entries;
	MemoryContext route_cxt;	/* holds them */
} FrRuleSetState;

/* A table's rules, compiled (the plan), and their state. */
struct FrRuleSet
{
	Oid			source;
	MemoryContext cxt;
	int			nrules;
	FrRule	   *rules;
	int			ncols;			/* emitted columns, all rules */
	FrColumn   *cols;
	TupleDesc	source_desc;
	TupleDesc	emitted_desc;
	bool		has_route;
	Bitmapset  *source_refs;	/* source attnums read (offset as
								 * pull_varattnos) */
	int			nvarlena_refs;	/* those of a varlena type (start_state) */
	AttrNumber *varlena_refs;
	AttrNumber	max_ref;		/* the highest source attnum read */
	CachedPath	cached;			/* see apply_cached */
	char	   *error;			/* why the rules cannot be applied now */
	bool		keep_open;		/* its lookups keep their relations open
								 * (FrRuleState.open_rel) */
	FrRuleSetState state;
};


/* A cache of rule sets: the decoder's, or one initial load's. */
struct FrRulesCache
{
	MemoryContext cxt;			/* reset with the cache */
	HTAB	   *sets;			/* Oid -> FrRuleSet * (NULL: no rules) */
	Oid			last_source;	/* the table asked for last, and its rules */
	FrRuleSet  *last_set;
	HTAB	   *builtins;		/* Oid -> the built-in rule set of an orders
								 * table (a leaf's, by its own columns) */
	Oid			last_builtin_source;
	FrRuleSet  *last_builtin_set;
	bool		keep_open;		/* a load's: see FrRuleState.open_rel */
};

/*
 * A rule as compiled: read from the rules table (fundrecs_ruleset.c's
 * read_rules), or the built-in rule made in memory (builtin_rule).
 */
typedef struct RuleRow
{
	int64		rule_id;
	TransactionId xmin;			/* which version of the rule */
	char	   *name;
	Oid			lookup;
	Datum	   *lookup_key,
			   *join_refs,
			   *out_names,
			   *out_attnums,
			   *computed_names,
			   *computed_trees;
	int			nkeys,
				nout,
				ncomputed;
	char	   *route_tree;
	char	   *added_by;		/* the rule's owner: whose rights read the
								 * lookup */
	Oid			lookup_oid;		/* the tables' OIDs when the rule was added */
	Oid			source_oid;		/* (a restore changes them: InvalidOid before
								 * 1.6) */
	Datum	   *lookup_names;	/* key then out columns' names (NULL: none) */
	Datum	   *source_attnums; /* the source columns read, and their names */
	Datum	   *source_names;
	int			nlookup_names,
				nsource;
	bool		builtin;		/* the orders' built-in rule (builtin_rule) */
	Oid		   *out_types;		/* builtin without its lookup: the out types */
} RuleRow;

static inline bool
fr_is_int_type(Oid typid)
{
	return typid == INT2OID || typid == INT4OID || typid == INT8OID;
}

/* fundrecs_compile.c */
extern FrRuleSet *fr_rules_compile(Oid source, RuleRow *rows, int nrules, MemoryContext cxt);

/* fundrecs_lookup.c */
extern uint32 fr_lookup_key_hash(const void *key, Size keysize);
extern int	fr_lookup_key_match(const void *a, const void *b, Size keysize);
extern HTAB *fr_bytes_hash_start(const char *name, Size entrysize, long nelem,
								 MemoryContext parent, MemoryContext *cxt);
extern LookupEntry *fr_lookup(FrRuleSet *rs, FrRuleState *st, Datum *key, Snapshot snapshot,
							  bool cacheable);
extern void fr_lookup_keep_route(FrRuleState *st, LookupEntry *e, const char *route,
								 int route_len);
extern void fr_lookup_count_hit(FrRuleState *st);
extern void fr_lookup_release(FrRuleSet *rs);
extern void fr_lookup_set_budget(int64 bytes);

/* fundrecs_lookup.c: the caches' budget and figures, shared with the row maps */
extern int64 fr_cache_budget;
extern uint64 fr_lookups_by_rowmap;
extern uint64 fr_rowmaps_read;
extern uint64 fr_rowmaps_copied;
extern void fr_admit_judge(FrRuleState *st);

/* fundrecs_rowmap.c: row maps of integer-keyed lookups */
extern bool fr_rowmap_wanted(FrRuleSet *rs, FrRuleState *st, Relation rel);
extern void fr_rowmap_build(FrRuleSet *rs, FrRuleState *st, Relation rel, Snapshot snapshot,
							bool copy);
extern bool fr_rowmap_fetch(FrRuleState *st, Relation rel, Datum key, Snapshot snapshot,
							HeapTuple tuple, Buffer *buffer);
extern bool fr_rowmap_copied_row(FrRuleState *st, Datum key, HeapTuple tuple);

#endif							/* FUNDRECS_RULES_INT_H */
