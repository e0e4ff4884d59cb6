/*-------------------------------------------------------------------------
 *
 * fundrecs.h
 *	  Shared declarations of the fundrecs extension and of the
 *	  fundrecs_decoder logical decoding output plugin.
 *
 * The library's parts, one file each, and a header of version guards:
 *	  fundrecs_decoder.c	output plugin callbacks: a message per row, pack_bytes
 *	  fundrecs_row.c		a change as a row of JSON, native or DMS, enriched
 *	  fundrecs_relinfo.c	the per-relation output info cache
 *	  fundrecs_json.c		column values to JSON
 *	  fundrecs_options.c	plugin option parsing and table filters
 *	  fundrecs_products.c	category_slug, the product file reader
 *	  fundrecs_load.c		the initial load (load_rows, load_tables)
 *	  fundrecs_backfill.c	backfills: requests checked, chunks read by key
 *	  fundrecs_publication.c	publication_names: what pgoutput would publish
 *	  fundrecs_rules.c		add_enrichment, drop_enrichment: rules checked
 *	  fundrecs_ruleset.c	a table's rules read as of a change, cached; the
 *							orders' built-in rule made in memory
 *	  fundrecs_compile.c	a table's rules compiled (fundrecs_rules_int.h)
 *	  fundrecs_lookup.c		the rules' lookups and their cache
 *	  fundrecs_rowmap.c		row maps (and copies) of large lookups
 *	  fundrecs_enrich.c		the rules applied to a row
 *	  fundrecs_compat.h		what differs between PostgreSQL 15, 16, 17, 18
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUNDRECS_H
#define FUNDRECS_H

#include "postgres.h"

#include "access/attnum.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/hsearch.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* The slug used for rows whose product is unknown. */
#define FR_ROUTE_UNCATEGORIZED "uncategorized"

/* Names of the extension's objects. */
#define FR_EXT_SCHEMA "fundrecs"
#define FR_PRODUCTS_TABLE "product_details"

/* ----------------------------------------------------------------
 * Options (fundrecs_options.c)
 * ----------------------------------------------------------------
 */
typedef enum FrFormat
{
	FR_FORMAT_NATIVE,
	FR_FORMAT_DMS
} FrFormat;

typedef struct FrTablePattern
{
	char	   *schema;
	char	   *table;			/* NULL means every table of the schema */
} FrTablePattern;

typedef enum FrOnEnrichError
{
	FR_ENRICH_ERROR_FAIL,		/* an ERROR naming the LSN, table and fix */
	FR_ENRICH_ERROR_EMIT		/* the row unenriched, "enrich_error", route
								 * _error */
} FrOnEnrichError;

/* The route of rows that could not be enriched (on_enrich_error=emit). */
#define FR_ROUTE_ERROR "_error"

/*
 * The prefix of the messages fundrecs_shipper --heartbeat writes.  They are
 * never emitted unless message_prefixes names this prefix.
 */
#define FR_HEARTBEAT_PREFIX "fundrecs_heartbeat"
/* Backfill requests and watermarks (fundrecs_backfill.c): always emitted. */
#define FR_CONTROL_PREFIX "fundrecs."

typedef struct FrColumnPattern
{
	char	   *schema;
	char	   *table;
	char	   *column;
} FrColumnPattern;

typedef struct FrOptions
{
	bool		include_lsn;
	bool		include_xid;
	bool		include_timestamp;
	List	   *tables;			/* list of FrTablePattern */
	List	   *publication_names;	/* char *; NIL: the "tables" option
									 * decides */
	bool		via_root_given; /* publish_via_partition_root was passed */
	char	   *orders_schema;
	char	   *orders_table;
	char	   *product_column;
	char	   *quantity_column;
	FrFormat	format;
	bool		via_root;		/* publish_via_partition_root */
	FrOnEnrichError on_enrich_error;
	List	   *exclude_columns;	/* list of FrColumnPattern */
	bool		include_messages;	/* emit pg_logical_emit_message() rows */
	List	   *message_prefixes;	/* char *; NIL: every prefix but the
									 * heartbeat's */
	int			pack_bytes;		/* 0: a row per message; else rows of a
								 * transaction share messages up to this size */
	int64		lookup_cache_bytes; /* enrichment rules' lookup caches, in all */

	/*
	 * Resolved once from the current catalogs when decoding starts (see
	 * fr_options_resolve): the orders table and its enrichment columns by OID
	 * and attribute number, which a rename does not change.  Invalid when the
	 * table did not exist then; names are used instead.
	 */
	Oid			orders_relid;
	AttrNumber	product_attnum;
	AttrNumber	quantity_attnum;
} FrOptions;

#define FR_PACK_BYTES_MIN 1024

/*
 * lookup_cache_bytes: what the enrichment rules' lookup caches may hold, in
 * all (each rule its share); a cache over its share starts again.
 */
#define FR_LOOKUP_CACHE_DEFAULT ((int64) 256 * 1024 * 1024)
#define FR_LOOKUP_CACHE_MIN ((int64) 1024 * 1024)
#define FR_LOOKUP_CACHE_MAX ((int64) 64 * 1024 * 1024 * 1024)
#define FR_PACK_BYTES_MAX (64 * 1024 * 1024)

/* fundrecs_current.c: lookup tables as they are now, beside the historic snapshot */
extern bool fr_relation_exists_now(Oid relid);
extern Relation fr_index_open_current(Oid indexid);

extern void fr_options_init(FrOptions *opts);
extern void fr_options_parse(FrOptions *opts, List *options);
extern List *fr_options_resolve(FrOptions *opts, bool decoding);
extern bool fr_options_table_included(const FrOptions *opts,
									  const char *schema, const char *table);
extern bool fr_options_message_included(const FrOptions *opts, const char *prefix);
extern bool fr_options_column_excluded(const FrOptions *opts, const char *schema,
									   const char *table, const char *column);

/* ----------------------------------------------------------------
 * JSON output and per-relation info (fundrecs_json.c)
 * ----------------------------------------------------------------
 */
typedef enum FrValueKind
{
	FR_KIND_INTEGER,			/* int2, int4, int8, oid: bare number */
	FR_KIND_NUMERIC,			/* numeric: bare number, NaN/Infinity quoted */
	FR_KIND_FLOAT,				/* float4, float8: same */
	FR_KIND_BOOL,
	FR_KIND_JSON,				/* json: embedded, newlines turned into spaces */
	FR_KIND_JSONB,				/* jsonb: embedded */
	FR_KIND_DATETIME,			/* date, time(tz), timestamp(tz): ISO 8601 */
	FR_KIND_BYTEA,				/* "\x..." */
	FR_KIND_TEXT				/* everything else: text output, quoted */
} FrValueKind;

typedef struct FrColumn
{
	AttrNumber	attnum;
	bool		dropped;
	char	   *json_name;		/* "name": already escaped, with the colon;
								 * json_name[-1] is a comma */
	int			json_name_len;
	Oid			typid;			/* the column's type */
	Oid			basetypid;		/* after resolving domains */
	FrValueKind kind;
	bool		typisvarlena;
	bool		is_key;			/* one of the key columns */
	bool		excluded;		/* left out by the option exclude_columns */
	FmgrInfo	outfunc;
} FrColumn;

/* What a publication publishes, and the initial load (for row filters). */
typedef enum FrPubAction
{
	FR_PUBACTION_INSERT,
	FR_PUBACTION_UPDATE,
	FR_PUBACTION_DELETE,
	FR_PUBACTION_TRUNCATE,		/* no row filter */
	FR_PUBACTION_LOAD,			/* the initial load: any publication's rows */
	FR_PUBACTION_COUNT
} FrPubAction;

typedef struct FrRelInfo
{
	Oid			relid;			/* hash key: must be first */
	bool		valid;
	bool		included;		/* passes the "tables" filter */
	bool		is_orders;		/* the table that gets enriched */
	bool		is_products;	/* fundrecs.product_details itself */
	bool		identity_full;	/* REPLICA IDENTITY FULL: old rows are whole */
	MemoryContext cxt;			/* holds everything below */
	char	   *schema_json;	/* "schema":"..." fragment */
	char	   *table_json;		/* "table":"..." fragment */
	char	   *schema_table_json;	/* the two, comma-separated: every row's */
	int			schema_table_json_len;
	char	   *schema_name;
	char	   *table_name;
	char	   *route_json;		/* quoted table name, the route of others */
	int			route_json_len;
	int			natts;
	FrColumn   *cols;			/* natts entries, by attribute position */
	int			nkeys;
	AttrNumber *keyattrs;		/* replica identity (or primary key) columns */
	AttrNumber	product_attnum; /* orders only; InvalidAttrNumber if absent */
	AttrNumber	quantity_attnum;
	char	   *enrich_error;	/* orders only: why rows cannot be enriched */

	/*
	 * A partition.  With publish_via_partition_root, its rows are emitted as
	 * the root's: converted by map (NULL when the columns line up) and
	 * formatted with desc, the root's.  partition_json names the leaf.
	 */
	Oid			root_relid;		/* InvalidOid unless a partition */
	bool		as_root;
	struct TupleConversionMap *map;
	TupleDesc	desc;			/* the root's, when as_root */
	char	   *partition_json; /* quoted schema.leaf */

	/*
	 * With publication_names (fundrecs_publication.c): the actions the
	 * publications publish for it, their row filters (NULL: none) for insert,
	 * update, delete and the initial load, evaluated in estate, and their
	 * column list (NULL: every column).
	 */
	bool		pub_actions[FR_PUBACTION_COUNT];
	struct ExprState *pub_filters[FR_PUBACTION_COUNT];
	struct EState *pub_estate;
	struct Bitmapset *pub_columns;

	/*
	 * Enrichment rules (fundrecs_enrich.c) are those of rules_relid: the
	 * table itself, or a partition's top-most root, whose rows rules_map
	 * (NULL: none needed) makes of the emitted ones.
	 */
	Oid			rules_relid;
	struct TupleConversionMap *rules_map;
} FrRelInfo;

extern void fr_relinfo_init(MemoryContext parent);
extern void fr_relinfo_shutdown(void);
extern FrRelInfo *fr_relinfo_get(Relation rel, const FrOptions *opts);

/* ----------------------------------------------------------------
 * Publications (fundrecs_publication.c), with publication_names
 * ----------------------------------------------------------------
 */
/* Fills ri's publication fields; returns the relation to publish it as. */
extern Oid	fr_publication_resolve(FrRelInfo *ri, Relation rel, const FrOptions *opts);
extern void fr_publication_release(FrRelInfo *ri);
extern void fr_publication_reset(void);
extern void fr_publication_invalidate(void);

/*
 * The row filter and UPDATE transformations for a change (rows in desc,
 * publish_as's columns): false when nothing is published; else *op and the
 * rows may have changed (an update into an insert or a delete).
 */
extern bool fr_publication_filter(FrRelInfo *ri, TupleDesc desc, const char **op,
								  HeapTuple *newtuple, HeapTuple *oldtuple);
extern bool fr_publication_row_matches(FrRelInfo *ri, FrPubAction action, TupleDesc desc,
									   HeapTuple tuple);
extern List *fr_publication_problems(const FrOptions *opts);
extern void fr_relinfo_build(FrRelInfo *ri, Relation rel, const FrOptions *opts);
extern FrValueKind fr_value_kind(Oid basetypid);
extern void fr_json_append_value(StringInfo out, FrColumn *col, Datum value);
extern void fr_json_append_lsn(StringInfo out, XLogRecPtr lsn);
extern void fr_json_append_uint(StringInfo out, uint64 value);
extern void fr_json_append_timestamptz(StringInfo out, TimestampTz ts);
extern void fr_json_append_string(StringInfo out, const char *str);
extern void fr_json_append_number_text(StringInfo out, const char *str);
extern char *fr_json_quote(const char *str);
extern bool fr_json_append_scaled_product(StringInfo out, int64 units, int scale, int64 q);
extern bool fr_parse_exact_decimal(const char *text, int64 *units, int *scale);

/* ----------------------------------------------------------------
 * Row messages (fundrecs_row.c), written by the decoder and the initial load
 * ----------------------------------------------------------------
 */
typedef struct FrRowMeta
{
	const char *op;
	XLogRecPtr	lsn;
	XLogRecPtr	commit_lsn;
	TransactionId xid;			/* InvalidTransactionId for load rows */
	TimestampTz commit_time;
	bool		toast_pointers_unchanged;	/* decoding: on-disk TOAST =
											 * unchanged */
	struct FrLoadLookups *load; /* the initial load's lookups, else NULL */
	bool		cache_usable;	/* decoding: may the caches answer for it
								 * (fr_asof_cache_usable, read once a change) */
	const char *txn_fragment;	/* decoding: the header's per-transaction part */
	int			txn_fragment_len;
} FrRowMeta;

extern void fr_write_row(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
						 FrRelInfo *ri, TupleDesc desc, HeapTuple newtuple,
						 HeapTuple oldtuple);
extern void fr_write_truncate(StringInfo out, const FrOptions *opts, const FrRowMeta *meta,
							  FrRelInfo *ri);

/* The header's per-transaction part (commit_lsn, xid, commit_time). */
extern void fr_append_txn_fragment(StringInfo out, const FrOptions *opts, const FrRowMeta *meta);

/* ----------------------------------------------------------------
 * Appending to a StringInfo, inline
 *
 * appendBinaryStringInfo, appendStringInfoChar and enlargeStringInfo's
 * call, made only when the buffer is short: a row is some thirty appends,
 * and the calls were about 6 % of decoding (perf, W1).  The buffer keeps
 * its trailing NUL, as StringInfo's own functions keep it.  The sums are
 * taken in 64 bits: a buffer and a piece may each be up to MaxAllocSize.
 * ----------------------------------------------------------------
 */
static inline void
fr_reserve(StringInfo out, int needed)
{
	if (unlikely((int64) out->len + needed >= out->maxlen))
		enlargeStringInfo(out, needed);
}

static inline void
fr_append_bytes(StringInfo out, const char *bytes, int len)
{
	if (unlikely((int64) out->len + len >= out->maxlen))
		enlargeStringInfo(out, len);
	memcpy(out->data + out->len, bytes, len);
	out->len += len;
	out->data[out->len] = '\0';
}

static inline void
fr_append_char(StringInfo out, char c)
{
	if (unlikely((int64) out->len + 1 >= out->maxlen))
		enlargeStringInfo(out, 1);
	out->data[out->len++] = c;
	out->data[out->len] = '\0';
}

/*
 * Appends a string literal: its length is known when compiling, so no
 * strlen() per row ("" lit "" refuses anything but a literal).
 */
#define fr_append_lit(buf, lit) fr_append_bytes((buf), "" lit "", sizeof(lit) - 1)
/* A literal as a (string, length) pair of arguments. */
#define FR_LIT_ARGS(lit) "" lit "", (int) (sizeof(lit) - 1)

/* ----------------------------------------------------------------
 * Lookups of the initial load and backfills: their enrichment rules (the
 * built-in one too) read through their snapshot, cached for all their rows
 * and shared with nothing (decoding may run in the same backend, even in
 * the same query).
 * ----------------------------------------------------------------
 */
typedef struct FrLoadLookups
{
	Snapshot	snapshot;
	struct FrRulesCache *rules;
} FrLoadLookups;

/*
 * keep_open: the lookups keep their tables and indexes open, and locked,
 * until fr_load_lookups_release (a backfill chunk: one short statement);
 * not for an initial load, whose transaction may last hours.
 */
extern FrLoadLookups *fr_load_lookups_create(MemoryContext cxt, bool keep_open);
extern void fr_load_lookups_release(FrLoadLookups *lookups);

/* The initial load's checks, shared with backfills (fundrecs_load.c). */
struct ArrayType;
extern List *fr_options_from_array(struct ArrayType *arr);
extern void fr_check_select(Oid relid);
extern List *fr_load_leaves(const FrOptions *opts, Oid relid);
extern void fr_load_meta_init(FrRowMeta *meta, const FrOptions *opts, XLogRecPtr lsn,
							  MemoryContext cxt, bool keep_open);
extern char *fr_category_slug(const char *category);

/* ----------------------------------------------------------------
 * Enrichment rules applied (fundrecs_enrich.c)
 * ----------------------------------------------------------------
 */
typedef struct FrRuleSet FrRuleSet;
typedef struct FrRulesCache FrRulesCache;

/* A row's enrichment by rules. */
typedef struct FrEnriched
{
	StringInfoData json;		/* the emitted columns, each after a comma */
	const char *route_json;		/* quoted; NULL: no rule gave one */
	int			route_len;
	char	   *error;			/* on_enrich_error=emit: why not enriched */

	/*
	 * A row the lookup cache answered (fundrecs_enrich.c's apply_cached): its
	 * columns are written by fr_rules_write from the cached row and the row's
	 * values, not copied through json.
	 */
	const struct LookupEntry *entry;
	const struct FrRuleSet *set;
	const Datum *values;
	const bool *isnull;
	int			natts;
} FrEnriched;

/* Appends the columns of e (without the leading comma when skip_comma). */
extern void fr_rules_write(StringInfo out, const FrEnriched *e, bool skip_comma);

static inline bool
fr_rules_have_columns(const FrEnriched *e)
{
	return e->error == NULL && (e->entry != NULL || e->json.len > 0);
}

extern void fr_rules_init(MemoryContext parent);
extern void fr_rules_shutdown(void);
extern FrRulesCache *fr_rules_cache_create(MemoryContext parent);
extern FrRuleSet *fr_rules_get(FrRulesCache *load, Snapshot snapshot, Oid source,
							   bool cache_usable);
extern FrRuleSet *fr_rules_builtin(FrRulesCache *load, Oid source, AttrNumber product_attnum,
								   AttrNumber quantity_attnum, bool cache_usable);
extern const char *fr_rules_builtin_nulls(void);
extern void fr_rules_apply(FrRuleSet *rs, const FrOptions *opts, Datum *values, bool *isnull,
						   int natts, const FrRowMeta *meta, const char *relname,
						   FrEnriched *out);
extern bool fr_rules_have_route(FrRuleSet *rs);
extern void fr_rules_log_cache_stats(void);

/*
 * fundrecs_asof.c: a cache that lives for one decoding session, in a
 * context under the decoding context.  The context goes at the session's
 * end, or with the decoding context when the session ends in an error;
 * forget then clears the owner's pointers into it.
 */
typedef struct FrSessionCache
{
	const char *name;
	void		(*forget) (void);
	MemoryContext cxt;			/* NULL outside a session */
	MemoryContextCallback callback;
} FrSessionCache;

#define FR_SESSION_CACHE(name, forget) {(name), (forget), NULL, {NULL, NULL, NULL}}

extern MemoryContext fr_session_cache_start(FrSessionCache *c, MemoryContext parent);
extern void fr_session_cache_end(FrSessionCache *c);

/* fundrecs_asof.c: when a catalog-backed cache may answer for a change */
typedef void (*FrAsofResetFn) (void);
extern void fr_asof_register(FrAsofResetFn reset);
extern void fr_asof_start(void);
extern void fr_asof_begin_txn(XLogRecPtr first_commit_lsn, bool txn_changes_catalog);
extern void fr_asof_txn_touched_catalog(void);
extern void fr_asof_commit_txn(XLogRecPtr end_lsn, bool txn_changes_catalog);
extern bool fr_asof_cache_usable(XLogRecPtr change_lsn);

/* fundrecs_failure.c */
extern void fr_failure_startup(void);
extern void fr_failure_record(XLogRecPtr lsn, const char *relname, const char *message);
extern void fr_failure_clear(void);
extern List *fr_rules_lookups(Oid source);

/*
 * For option_problems: the rule sets of the tables opts captures that could
 * not be applied to a change made now, each as "the enrichment rules of
 * table ...: why".
 */
extern List *fr_rules_problems(const FrOptions *opts);

#endif							/* FUNDRECS_H */
