/*-------------------------------------------------------------------------
 *
 * rowscan.c
 *	  One pass over a row's JSON text that records where the top-level
 *	  values of interest start and end.  Strings are skipped with their
 *	  escapes, nested values by depth, so names and values that look like
 *	  field names cannot confuse it.  The row itself is shipped verbatim.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "rowscan.h"

/*
 * Skips a string starting at p (on the opening quote); returns the end.
 * memchr finds each candidate closing quote; it is escaped when an odd
 * number of backslashes stands right before it (a byte-at-a-time loop was
 * the shipper's largest cost catching up).
 */
static const char *
skip_string(const char *p, const char *end)
{
	const char *start = p + 1;

	p = start;
	while (p < end)
	{
		const char *q = memchr(p, '"', end - p);
		const char *b;

		if (q == NULL)
			return NULL;
		b = q;
		while (b > start && b[-1] == '\\')
			b--;
		if (((q - b) & 1) == 0)
			return q + 1;
		p = q + 1;
	}
	return NULL;
}

/* Skips any value starting at p; returns the end or NULL. */
static const char *
skip_value(const char *p, const char *end)
{
	int			depth = 0;

	if (p >= end)
		return NULL;
	if (*p == '"')
		return skip_string(p, end);
	if (*p != '{' && *p != '[')
	{
		while (p < end && *p != ',' && *p != '}' && *p != ']' &&
			   *p != ' ' && *p != '\n')
			p++;
		return p;
	}
	while (p < end)
	{
		if (*p == '"')
		{
			p = skip_string(p, end);
			if (p == NULL)
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if (*p == '}' || *p == ']')
		{
			depth--;
			if (depth == 0)
				return p + 1;
		}
		p++;
	}
	return NULL;
}

static inline const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* A field name wanted, with its length known when compiling. */
typedef struct FieldName
{
	const char *name;			/* NULL: no such field in this format */
	size_t		len;
} FieldName;

#define FIELD(s) {s, sizeof(s) - 1}
#define NO_FIELD {NULL, 0}

/*
 * Is the quoted name (len bytes with its quotes) want?  The lengths are
 * compared first, so memcmp never reads past either (an earlier version
 * read past want for longer names: fuzz/regress/rowscan/ keeps the input).
 */
static inline bool
name_is(const char *name, size_t len, const FieldName *want)
{
	return want->name != NULL && len == want->len + 2 &&
		memcmp(name + 1, want->name, want->len) == 0;
}

/* Field names of the native format, and of the DMS format's metadata. */
static const FieldName native_names[8] = {
	FIELD("schema"), FIELD("table"), FIELD("commit_lsn"), FIELD("key"),
	FIELD("route"), FIELD("metadata"), FIELD("commit_time"), FIELD("prefix")
};
static const FieldName dms_names[8] = {
	FIELD("schema-name"), FIELD("table-name"), FIELD("commit-lsn"), FIELD("key"),
	FIELD("route"), NO_FIELD, FIELD("timestamp"), NO_FIELD
};

static bool scan_object(const char *json, size_t len, const FieldName names[8],
						RowFields *out, RowSpan *metadata);

bool
rowscan(const char *json, size_t len, RowFields *out)
{
	RowSpan		metadata = {NULL, 0};

	memset(out, 0, sizeof(*out));
	if (!scan_object(json, len, native_names, out, &metadata))
		return false;
	/* A DMS record: {"data":...,"metadata":{"schema-name":...}} */
	if (out->schema.start == NULL && metadata.start != NULL)
		return scan_object(metadata.start, metadata.len, dms_names, out, NULL);
	return true;
}

static bool
scan_object(const char *json, size_t len, const FieldName names[8],
			RowFields *out, RowSpan *metadata)
{
	const char *p = json;
	const char *end = json + len;

	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return false;
	p++;
	for (;;)
	{
		const char *name;
		const char *name_end;
		const char *value;
		const char *value_end;

		p = skip_ws(p, end);
		if (p < end && *p == '}')
			return true;
		if (p >= end || *p != '"')
			return false;
		name = p;
		name_end = skip_string(p, end);
		if (name_end == NULL)
			return false;
		p = skip_ws(name_end, end);
		if (p >= end || *p != ':')
			return false;
		value = skip_ws(p + 1, end);
		value_end = skip_value(value, end);
		if (value_end == NULL)
			return false;

		{
			size_t		nlen = name_end - name;
			RowSpan    *slot = NULL;

			if (name_is(name, nlen, &names[0]))
				slot = &out->schema;
			else if (name_is(name, nlen, &names[1]))
				slot = &out->table;
			else if (name_is(name, nlen, &names[2]))
				slot = &out->commit_lsn;
			else if (name_is(name, nlen, &names[3]))
				slot = &out->key;
			else if (name_is(name, nlen, &names[4]))
				slot = &out->route;
			else if (name_is(name, nlen, &names[6]))
				slot = &out->commit_time;
			else if (name_is(name, nlen, &names[7]))
				slot = &out->prefix;
			else if (metadata != NULL && name_is(name, nlen, &names[5]) &&
					 *value == '{')
				slot = metadata;
			if (slot != NULL)
			{
				slot->start = value;
				slot->len = value_end - value;
			}

			/*
			 * A table row's fields are all known: the rest ("data", "old",
			 * most of the bytes) need not be scanned.  (A row without one of
			 * them, a message row or a DMS record is scanned to its end.)
			 */
			if (out->schema.start && out->table.start && out->commit_lsn.start &&
				out->key.start && out->route.start && out->commit_time.start)
				return true;
		}

		p = skip_ws(value_end, end);
		if (p < end && *p == ',')
		{
			p++;
			continue;
		}
		if (p < end && *p == '}')
			return true;
		return false;
	}
}

bool
rowscan_parse_lsn(const char *s, size_t len, uint64_t *lsn)
{
	uint64_t	hi = 0;
	uint64_t	lo = 0;
	size_t		i = 0;
	int			digits = 0;

	if (len >= 2 && s[0] == '"' && s[len - 1] == '"')
	{
		s++;
		len -= 2;
	}
	for (; i < len && s[i] != '/'; i++, digits++)
	{
		int			v = (s[i] >= '0' && s[i] <= '9') ? s[i] - '0' :
		(s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 10 :
		(s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 10 : -1;

		if (v < 0 || digits >= 8)
			return false;
		hi = hi * 16 + v;
	}
	if (i >= len || digits == 0)
		return false;
	i++;
	digits = 0;
	for (; i < len; i++, digits++)
	{
		int			v = (s[i] >= '0' && s[i] <= '9') ? s[i] - '0' :
		(s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 10 :
		(s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 10 : -1;

		if (v < 0 || digits >= 8)
			return false;
		lo = lo * 16 + v;
	}
	if (digits == 0)
		return false;
	*lsn = (hi << 32) | lo;
	return true;
}
