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

#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/varlena.h"

#define FR_VALID_OPTIONS \
	"include_lsn, include_xid, include_timestamp, tables, orders_table, " \
	"product_column, quantity_column, format"

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

static List *
parse_tables(DefElem *elem)
{
	const char *value = required_value(elem);
	char	   *raw = pstrdup(value);
	List	   *result = NIL;
	char	   *saveptr = NULL;
	char	   *item;

	for (item = strtok_r(raw, ",", &saveptr); item != NULL;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		FrTablePattern *pat = palloc(sizeof(FrTablePattern));
		char	   *start = item;
		char	   *end;

		while (*start == ' ' || *start == '\t')
			start++;
		end = start + strlen(start);
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';

		parse_qualified_name(elem, start, true, &pat->schema, &pat->table);
		result = lappend(result, pat);
	}

	if (result == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value \"%s\" for option \"%s\"", value, elem->defname),
				 errhint("Give a comma-separated list of schema.table or schema.* entries.")));
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
	opts->orders_schema = pstrdup("fundrecs_schema");
	opts->orders_table = pstrdup("orders");
	opts->product_column = pstrdup("product_id");
	opts->quantity_column = pstrdup("quantity");
	opts->format = FR_FORMAT_NATIVE;
}

void
fr_options_parse(FrOptions *opts, List *options)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *elem = lfirst_node(DefElem, lc);

		Assert(elem->arg == NULL || IsA(elem->arg, String));

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
		{
			const char *value = required_value(elem);

			if (strcmp(value, "native") == 0)
				opts->format = FR_FORMAT_NATIVE;
			else if (strcmp(value, "dms") == 0)
				opts->format = FR_FORMAT_DMS;
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value \"%s\" for option \"%s\"",
								value, elem->defname),
						 errhint("Valid values are native and dms.")));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" = \"%s\" is unknown",
							elem->defname,
							elem->arg ? strVal(elem->arg) : "(null)"),
					 errhint("Valid options are: %s.", FR_VALID_OPTIONS)));
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
