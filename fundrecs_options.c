/*-------------------------------------------------------------------------
 *
 * fundrecs_options.c
 *	  Options of the fundrecs_decoder output plugin.
 *
 * Options arrive as a list of DefElem from pg_logical_slot_get_changes()
 * or from START_REPLICATION (pg_recvlogical -o).  An unknown option or a
 * bad value is an ERROR that names the option and lists what is valid.
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/varlena.h"

#define FR_VALID_OPTIONS \
	"include_lsn, include_xid, include_timestamp, tables, orders_table, " \
	"product_column, quantity_column, format, publish_via_partition_root, " \
	"on_enrich_error, exclude_columns, include_messages, message_prefixes, pack_bytes, lookup_cache_bytes, " \
	"publication_names"

static const char *
option_value(DefElem *elem)
{
	if (elem->arg == NULL)
		return NULL;
	return strVal(elem->arg);
}

static bool
parse_bool_option(DefElem *elem)
{
	const char *value = option_value(elem);
	bool		result;

	/* A bare option name, as test_decoding allows, means true. */
	if (value == NULL)
		return true;
	if (!parse_bool(value, &result))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"",
						value, elem->defname),
				 errhint("Valid values are true, false, on, off, yes, no, 1 and 0.")));
	return result;
}

static const char *
required_value(DefElem *elem)
{
	const char *value = option_value(elem);

	if (value == NULL || value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" requires a value", elem->defname)));
	return value;
}

/*
 * Split "schema.table" (identifiers may be double-quoted, as in SQL) into
 * its two parts.  "*" as the table part is allowed only when allow_star.
 */
static void
parse_qualified_name(DefElem *elem, const char *text, bool allow_star,
					 char **schema, char **table)
{
	char	   *raw = pstrdup(text);
	List	   *parts = NIL;
	size_t		len = strlen(raw);

	*schema = NULL;
	*table = NULL;

	/* SplitIdentifierString does not accept "*": handle "schema.*" here. */
	if (allow_star && len >= 2 && strcmp(raw + len - 2, ".*") == 0)
	{
		raw[len - 2] = '\0';
		if (!SplitIdentifierString(raw, '.', &parts) || list_length(parts) != 1)
			goto bad;
		*schema = pstrdup((char *) linitial(parts));
		*table = NULL;
		return;
	}

	if (!SplitIdentifierString(raw, '.', &parts) || list_length(parts) != 2)
		goto bad;
	/* "*" is a wildcard only as the whole table part; quote it otherwise. */
	if (strchr(text, '*') != NULL && strchr(text, '"') == NULL)
		goto bad;
	*schema = pstrdup((char *) linitial(parts));
	*table = pstrdup((char *) lsecond(parts));
	return;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value \"%s\" for option \"%s\"", text, elem->defname),
			 allow_star ?
			 errhint("Give a comma-separated list of schema.table or schema.* entries.") :
			 errhint("Give a schema-qualified table name, such as fundrecs_schema.orders.")));
}

/*
 * The entries of a comma-separated option value, trimmed of blanks; an
 * ERROR with hint when there is none.
 */
static List *
split_entries(DefElem *elem, const char *hint)
{
	const char *value = required_value(elem);
	char	   *raw = pstrdup(value);
	List	   *result = NIL;
	char	   *saveptr = NULL;
	char	   *item;

	for (item = strtok_r(raw, ",", &saveptr); item != NULL;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		char	   *start = item;
		char	   *end;

		while (*start == ' ' || *start == '\t')
			start++;
		end = start + strlen(start);
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		result = lappend(result, start);
	}
	if (result == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", value, elem->defname),
				 errhint("%s", hint)));
	return result;
}

static List *
parse_tables(DefElem *elem)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, split_entries(elem, "Give a comma-separated list of schema.table or schema.* entries."))
	{
		FrTablePattern *pat = palloc(sizeof(FrTablePattern));

		parse_qualified_name(elem, (char *) lfirst(lc), true, &pat->schema, &pat->table);
		result = lappend(result, pat);
	}
	return result;
}

/*
 * publication_names: comma-separated names, quoted identifiers allowed, as
 * pgoutput reads them.
 */
static List *
parse_publication_names(DefElem *elem)
{
	char	   *raw = pstrdup(required_value(elem));
	List	   *names = NIL;

	if (!SplitIdentifierString(raw, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid publication_names syntax")));
	if (names == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"\" for option \"publication_names\""),
				 errhint("Name at least one publication.")));
	return names;
}

/* An option with one of two values: the value's code, or an ERROR. */
static int
parse_choice(DefElem *elem, const char *name1, int code1, const char *name2, int code2)
{
	const char *value = required_value(elem);

	if (strcmp(value, name1) == 0)
		return code1;
	if (strcmp(value, name2) == 0)
		return code2;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value \"%s\" for option \"%s\"", value, elem->defname),
			 errhint("Valid values are %s and %s.", name1, name2)));
	return code1;				/* keep the compiler quiet */
}

/* exclude_columns: comma-separated schema.table.column entries. */
static List *
parse_column_patterns(DefElem *elem)
{
	const char *hint = "Give a comma-separated list of schema.table.column entries.";
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, split_entries(elem, hint))
	{
		FrColumnPattern *pat = palloc(sizeof(FrColumnPattern));
		List	   *parts = NIL;

		if (!SplitIdentifierString((char *) lfirst(lc), '.', &parts) || list_length(parts) != 3)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value \"%s\" for option \"%s\"",
							required_value(elem), elem->defname),
					 errhint("%s", hint)));
		pat->schema = pstrdup((char *) linitial(parts));
		pat->table = pstrdup((char *) lsecond(parts));
		pat->column = pstrdup((char *) lthird(parts));
		result = lappend(result, pat);
	}
	return result;
}

static const char *
parse_column_name(DefElem *elem)
{
	const char *value = required_value(elem);

	if (strlen(value) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", value, elem->defname),
				 errdetail("Column names are at most %d bytes long.", NAMEDATALEN - 1)));
	return pstrdup(value);
}

/*
 * message_prefixes: a comma-separated list of prefixes, each matched
 * exactly; spaces around an entry are ignored.  A prefix cannot hold a
 * comma.
 */
static List *
parse_message_prefixes(DefElem *elem)
{
	const char *value = required_value(elem);
	List	   *result = NIL;
	const char *p = value;

	for (;;)
	{
		const char *end = strchr(p, ',');
		const char *stop = end != NULL ? end : p + strlen(p);

		while (p < stop && isspace((unsigned char) *p))
			p++;
		while (stop > p && isspace((unsigned char) stop[-1]))
			stop--;
		if (stop == p)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value \"%s\" for option \"%s\"", value, elem->defname),
					 errdetail("The list has an empty entry."),
					 errhint("List message prefixes separated by commas, for example message_prefixes='app.marker,audit'.")));
		result = lappend(result, pnstrdup(p, stop - p));
		if (end == NULL)
			break;
		p = end + 1;
	}
	return result;
}

/* pack_bytes: 0 (off) or a size in bytes, 1 kB to 64 MB. */
static int
parse_pack_bytes(DefElem *elem)
{
	const char *value = required_value(elem);
	char	   *end;
	long		n;

	errno = 0;
	n = strtol(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' ||
		(n != 0 && (n < FR_PACK_BYTES_MIN || n > FR_PACK_BYTES_MAX)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", value, elem->defname),
				 errdetail("It must be 0 (one row per message) or a number of bytes from %d to %d.",
						   FR_PACK_BYTES_MIN, FR_PACK_BYTES_MAX),
				 errhint("fundrecs_shipper sets it; for example pack_bytes=65536.")));
	return (int) n;
}

/* lookup_cache_bytes: 0 (no cache) or 1 MB to 64 GB. */
static int64
parse_lookup_cache_bytes(DefElem *elem)
{
	const char *value = required_value(elem);
	char	   *end;
	long long	n;

	errno = 0;
	n = strtoll(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' ||
		(n != 0 && (n < FR_LOOKUP_CACHE_MIN || n > FR_LOOKUP_CACHE_MAX)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", value, elem->defname),
				 errdetail("It must be 0 (no lookup cache) or a number of bytes from %lld to %lld.",
						   (long long) FR_LOOKUP_CACHE_MIN, (long long) FR_LOOKUP_CACHE_MAX)));
	return (int64) n;
}

void
fr_options_init(FrOptions *opts)
{
	FrTablePattern *pat = palloc(sizeof(FrTablePattern));

	opts->include_lsn = true;
	opts->include_xid = true;
	opts->include_timestamp = true;
	pat->schema = pstrdup("fundrecs_schema");
	pat->table = NULL;
	opts->tables = list_make1(pat);
	opts->publication_names = NIL;
	opts->via_root_given = false;
	opts->orders_schema = pstrdup("fundrecs_schema");
	opts->orders_table = pstrdup("orders");
	opts->product_column = pstrdup("product_id");
	opts->quantity_column = pstrdup("quantity");
	opts->format = FR_FORMAT_NATIVE;
	opts->via_root = true;
	opts->on_enrich_error = FR_ENRICH_ERROR_FAIL;
	opts->exclude_columns = NIL;
	opts->include_messages = false;
	opts->message_prefixes = NIL;
	opts->pack_bytes = 0;
	opts->lookup_cache_bytes = FR_LOOKUP_CACHE_DEFAULT;
	opts->orders_relid = InvalidOid;
	opts->product_attnum = InvalidAttrNumber;
	opts->quantity_attnum = InvalidAttrNumber;
}

void
fr_options_parse(FrOptions *opts, List *options)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *elem = lfirst_node(DefElem, lc);

		Assert(elem->arg == NULL || IsA(elem->arg, String));

		/* An option given twice is an error, as pgoutput has it. */
		for (ListCell *earlier = list_head(options); earlier != lc;
			 earlier = lnext(options, earlier))
		{
			if (strcmp(lfirst_node(DefElem, earlier)->defname, elem->defname) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_SYNTAX_ERROR),
						 errmsg("conflicting or redundant options"),
						 errdetail("The option \"%s\" is given more than once.", elem->defname)));
		}

		if (strcmp(elem->defname, "include_lsn") == 0)
			opts->include_lsn = parse_bool_option(elem);
		else if (strcmp(elem->defname, "include_xid") == 0)
			opts->include_xid = parse_bool_option(elem);
		else if (strcmp(elem->defname, "include_timestamp") == 0)
			opts->include_timestamp = parse_bool_option(elem);
		else if (strcmp(elem->defname, "tables") == 0)
			opts->tables = parse_tables(elem);
		else if (strcmp(elem->defname, "orders_table") == 0)
			parse_qualified_name(elem, required_value(elem), false,
								 &opts->orders_schema, &opts->orders_table);
		else if (strcmp(elem->defname, "product_column") == 0)
			opts->product_column = (char *) parse_column_name(elem);
		else if (strcmp(elem->defname, "quantity_column") == 0)
			opts->quantity_column = (char *) parse_column_name(elem);
		else if (strcmp(elem->defname, "format") == 0)
			opts->format = parse_choice(elem, "native", FR_FORMAT_NATIVE, "dms", FR_FORMAT_DMS);
		else if (strcmp(elem->defname, "publish_via_partition_root") == 0)
		{
			opts->via_root = parse_bool_option(elem);
			opts->via_root_given = true;
		}
		else if (strcmp(elem->defname, "publication_names") == 0)
			opts->publication_names = parse_publication_names(elem);
		else if (strcmp(elem->defname, "on_enrich_error") == 0)
			opts->on_enrich_error = parse_choice(elem, "fail", FR_ENRICH_ERROR_FAIL,
												 "emit", FR_ENRICH_ERROR_EMIT);
		else if (strcmp(elem->defname, "exclude_columns") == 0)
			opts->exclude_columns = parse_column_patterns(elem);
		else if (strcmp(elem->defname, "include_messages") == 0)
			opts->include_messages = parse_bool_option(elem);
		else if (strcmp(elem->defname, "message_prefixes") == 0)
			opts->message_prefixes = parse_message_prefixes(elem);
		else if (strcmp(elem->defname, "pack_bytes") == 0)
			opts->pack_bytes = parse_pack_bytes(elem);
		else if (strcmp(elem->defname, "lookup_cache_bytes") == 0)
			opts->lookup_cache_bytes = parse_lookup_cache_bytes(elem);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" = \"%s\" is unknown",
							elem->defname,
							elem->arg ? strVal(elem->arg) : "(null)"),
					 errhint("Valid options are: %s.", FR_VALID_OPTIONS)));
	}

	/* Publications choose what is captured: the options that also do are out. */
	if (opts->publication_names != NIL)
	{
		bool		tables_given = false;

		foreach(lc, options)
			if (strcmp(lfirst_node(DefElem, lc)->defname, "tables") == 0)
			tables_given = true;
		if (tables_given)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("options \"publication_names\" and \"tables\" cannot be used together"),
					 errhint("Choose the tables with the publications, or with \"tables\" without publications.")));
		if (opts->via_root_given)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"publish_via_partition_root\" cannot be used with \"publication_names\""),
					 errdetail("Each publication's own publish_via_partition_root setting applies."),
					 errhint("Use ALTER PUBLICATION ... SET (publish_via_partition_root = ...).")));
		opts->tables = NIL;
	}
}

/*
 * Decides whether a table passes the "tables" filter.  Called once per
 * relation when its info is built, never per change.
 */
bool
fr_options_table_included(const FrOptions *opts, const char *schema,
						  const char *table)
{
	ListCell   *lc;

	foreach(lc, opts->tables)
	{
		FrTablePattern *pat = (FrTablePattern *) lfirst(lc);

		if (strcmp(pat->schema, schema) != 0)
			continue;
		if (pat->table == NULL || strcmp(pat->table, table) == 0)
			return true;
	}
	return false;
}

/*
 * Decides whether a logical decoding message is emitted: only with
 * include_messages, and then those whose prefix is listed in
 * message_prefixes, or with no list every prefix except the shipper's
 * heartbeat, which exists only to move the slot along.  The control
 * messages of backfills (prefixes fundrecs.backfill, fundrecs.watermark)
 * are always emitted: the shipper acts on them.
 */
bool
fr_options_message_included(const FrOptions *opts, const char *prefix)
{
	ListCell   *lc;

	/* Backfill requests and watermarks, for fundrecs_shipper: always. */
	if (strncmp(prefix, FR_CONTROL_PREFIX, strlen(FR_CONTROL_PREFIX)) == 0)
		return true;
	if (!opts->include_messages)
		return false;
	if (opts->message_prefixes == NIL)
		return strcmp(prefix, FR_HEARTBEAT_PREFIX) != 0;
	foreach(lc, opts->message_prefixes)
	{
		if (strcmp((const char *) lfirst(lc), prefix) == 0)
			return true;
	}
	return false;
}

bool
fr_options_column_excluded(const FrOptions *opts, const char *schema,
						   const char *table, const char *column)
{
	ListCell   *lc;

	foreach(lc, opts->exclude_columns)
	{
		FrColumnPattern *pat = (FrColumnPattern *) lfirst(lc);

		if (strcmp(pat->schema, schema) == 0 && strcmp(pat->table, table) == 0 &&
			strcmp(pat->column, column) == 0)
			return true;
	}
	return false;
}

/*
 * Resolves the orders table and its enrichment columns in the current
 * catalogs, once, when decoding starts: by OID and attribute number they
 * stay the same through renames, so rows from before and after a rename
 * are enriched with one configuration.  Returns what would make decoding
 * silently emit nothing for a "tables" entry (it matches no table) or for
 * the orders table (it does not exist), as messages; when decoding, also
 * as WARNINGs.
 *
 * Decoding reads the catalogs through historic snapshots only; for it, this
 * runs before it starts, in a transaction of its own when the caller (the
 * walsender) has none, and throws away what it put into the caches.  A load,
 * a backfill chunk or fundrecs.option_problems() reads as of now: it keeps
 * them (throwing them away cost each chunk every relation, index and
 * catalog entry it read built again).
 */
List *
fr_options_resolve(FrOptions *opts, bool decoding)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		own_xact = !IsTransactionState();
	List	   *problems = NIL;
	Oid			nspid;
	ListCell   *lc;

	if (own_xact)
		StartTransactionCommand();

	nspid = get_namespace_oid(opts->orders_schema, true);
	opts->orders_relid = OidIsValid(nspid) ?
		get_relname_relid(opts->orders_table, nspid) : InvalidOid;
	if (!OidIsValid(opts->orders_relid))
	{
		/* Only when it would be emitted: else it is simply not captured. */
		if (fr_options_table_included(opts, opts->orders_schema, opts->orders_table))
		{
			char	   *msg = psprintf("orders table \"%s.%s\" does not exist, no row will be enriched",
									   opts->orders_schema, opts->orders_table);

			problems = lappend(problems, MemoryContextStrdup(oldcxt, msg));
			if (decoding)
				ereport(WARNING,
						(errcode(ERRCODE_UNDEFINED_TABLE),
						 errmsg_internal("%s", msg),
						 errhint("Create it, or name the orders table with the plugin option \"orders_table\".")));
		}
	}
	else
	{
		const char *names[2] = {opts->product_column, opts->quantity_column};
		const char *options[2] = {"product_column", "quantity_column"};
		AttrNumber	attnums[2];

		for (int i = 0; i < 2; i++)
		{
			attnums[i] = get_attnum(opts->orders_relid, names[i]);
			if (attnums[i] == InvalidAttrNumber)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of orders table \"%s.%s\" does not exist",
								names[i], opts->orders_schema, opts->orders_table),
						 errdetail("Enrichment columns are named as they are now; rows from before a rename are enriched through the column's attribute number."),
						 errhint("Set the plugin option \"%s\" to the column's current name.", options[i])));
		}
		opts->product_attnum = attnums[0];
		opts->quantity_attnum = attnums[1];
	}

	foreach(lc, opts->tables)
	{
		FrTablePattern *pat = (FrTablePattern *) lfirst(lc);
		Oid			patnsp = get_namespace_oid(pat->schema, true);
		char	   *msg = NULL;

		if (!OidIsValid(patnsp))
			msg = psprintf("plugin option \"tables\": schema \"%s\" does not exist", pat->schema);
		else if (pat->table != NULL && !OidIsValid(get_relname_relid(pat->table, patnsp)))
			msg = psprintf("plugin option \"tables\": table \"%s.%s\" does not exist",
						   pat->schema, pat->table);
		if (msg == NULL)
			continue;
		problems = lappend(problems, MemoryContextStrdup(oldcxt, msg));
		if (decoding)
			ereport(WARNING,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg_internal("%s", msg),
					 errdetail("Its changes are not emitted until it exists.")));
	}

	/* Nothing looked up here may be used by decoding's historic lookups. */
	if (decoding)
		InvalidateSystemCaches();
	if (own_xact)
		CommitTransactionCommand();
	MemoryContextSwitchTo(oldcxt);
	return problems;
}
