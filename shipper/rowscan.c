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
 * A byte loop: the strings of a row's header are short, names of 2 to 11
 * bytes, where a memchr call per string cost more than it saved.
 */
static inline const char *
skip_string(const char *p, const char *end)
{
	for (p++; p < end; p++)
	{
		if (*p == '"')
			return p + 1;
		if (*p == '\\' && ++p >= end)
			break;
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

/*
 * Where a field's value goes, by its name (without quotes, nlen bytes):
 * a switch on the length, then compares of constant size, which the
 * compiler makes a load and a compare or two (a loop over the wanted names
 * calling memcmp, and before it strnlen, was most of the shipper's time).
 * The length is checked first, so no compare reads past either name (an
 * earlier version did for longer names: fuzz/regress/rowscan/ keeps it).
 */
#define NAME_IS(lit) (memcmp(name, lit, sizeof(lit) - 1) == 0)

static RowSpan *
native_field(const char *name, size_t nlen, RowFields *out)
{
	switch (nlen)
	{
		case 3:
			return NAME_IS("key") ? &out->key : NULL;
		case 5:
			return NAME_IS("table") ? &out->table : NAME_IS("route") ? &out->route : NULL;
		case 6:
			return NAME_IS("schema") ? &out->schema : NAME_IS("prefix") ? &out->prefix : NULL;
		case 10:
			return NAME_IS("commit_lsn") ? &out->commit_lsn : NULL;
		case 11:
			return NAME_IS("commit_time") ? &out->commit_time : NULL;
	}
	return NULL;
}

/* The same for the fields of a DMS record's metadata object. */
static RowSpan *
dms_field(const char *name, size_t nlen, RowFields *out)
{
	switch (nlen)
	{
		case 3:
			return NAME_IS("key") ? &out->key : NULL;
		case 5:
			return NAME_IS("route") ? &out->route : NULL;
		case 9:
			return NAME_IS("timestamp") ? &out->commit_time : NULL;
		case 10:
			return NAME_IS("table-name") ? &out->table :
				NAME_IS("commit-lsn") ? &out->commit_lsn : NULL;
		case 11:
			return NAME_IS("schema-name") ? &out->schema : NULL;
	}
	return NULL;
}

typedef RowSpan *(*FieldFn) (const char *name, size_t nlen, RowFields *out);

static bool scan_object(const char *json, size_t len, FieldFn field,
						RowFields *out, RowSpan *metadata);
static bool scan_fields(const char *p, const char *end, FieldFn field,
						RowFields *out, RowSpan *metadata);

bool
rowscan(const char *json, size_t len, RowFields *out)
{
	RowSpan		metadata = {NULL, 0};

	memset(out, 0, sizeof(*out));
	if (!scan_object(json, len, native_field, out, &metadata))
		return false;
	/* A DMS record: {"data":...,"metadata":{"schema-name":...}} */
	if (out->schema.start == NULL && metadata.start != NULL)
		return scan_object(metadata.start, metadata.len, dms_field, out, NULL);
	return true;
}

static bool
scan_object(const char *json, size_t len, FieldFn field,
			RowFields *out, RowSpan *metadata)
{
	const char *p = json;
	const char *end = json + len;

	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return false;
	return scan_fields(p + 1, end, field, out, metadata);
}

/* The object's fields from p (after its brace, or at a field's name) on. */
static bool
scan_fields(const char *p, const char *end, FieldFn field,
			RowFields *out, RowSpan *metadata)
{
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
			size_t		nlen = name_end - name - 2;
			RowSpan    *slot = field(name + 1, nlen, out);

			/* The DMS format's object, scanned next for the fields above */
			if (metadata != NULL && nlen == 8 && memcmp(name + 1, "metadata", 8) == 0 &&
				*value == '{')
				slot = metadata;
			if (slot != NULL)
			{
				slot->start = value;
				slot->len = value_end - value;
			}

			/*
			 * A table row's fields are all known: the rest ("data", "old",
			 * most of the bytes) need not be scanned.  The decoder writes
			 * commit_time (DMS: timestamp), when it writes it at all, before
			 * key and route, so it is not waited for.  (A row without one of
			 * the others, a message row or a DMS record is scanned to its
			 * end.)
			 */
			if (out->schema.start && out->table.start && out->commit_lsn.start &&
				out->key.start && out->route.start)
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

/* A span of head's (in prev's prefix, or none), moved to its place in json. */
static inline void
shift_span(RowSpan *out, const RowSpan *in, const char *prev, const char *json)
{
	out->start = in->start != NULL ? json + (in->start - prev) : NULL;
	out->len = in->len;
}

size_t
rowscan_key_prefix(const char *json, size_t len, RowFields *head)
{
	const char *end = json + len;
	const char *p = skip_ws(json, end);
	RowSpan		name;
	RowSpan		value;

	memset(head, 0, sizeof(*head));
	if (p >= end || *p != '{')
		return 0;
	p++;
	while (rowscan_next_field(&p, end, &name, &value))
	{
		RowSpan    *slot;

		if (name.len == 5 && memcmp(name.start, "\"key\"", 5) == 0)
		{
			/* A table row's header: schema, table and commit_lsn in it. */
			if (head->schema.start == NULL || head->table.start == NULL ||
				head->commit_lsn.start == NULL)
				return 0;
			return name.start - json;
		}
		slot = native_field(name.start + 1, name.len - 2, head);
		if (slot != NULL)
			*slot = value;
	}
	return 0;
}

bool
rowscan_after_prefix(const char *json, size_t len, const char *prev, const RowFields *head,
					 size_t prefix, RowFields *out)
{
	if (prefix == 0 || len <= prefix)
		return rowscan(json, len, out);
	shift_span(&out->schema, &head->schema, prev, json);
	shift_span(&out->table, &head->table, prev, json);
	shift_span(&out->commit_lsn, &head->commit_lsn, prev, json);
	shift_span(&out->key, &head->key, prev, json);
	shift_span(&out->route, &head->route, prev, json);
	shift_span(&out->commit_time, &head->commit_time, prev, json);
	shift_span(&out->prefix, &head->prefix, prev, json);
	return scan_fields(json + prefix, json + len, native_field, out, NULL);
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

/*
 * The next field of an object: *p starts after the opening brace or after
 * the previous value.  Returns false at the object's end or on malformed
 * text.  The spans are raw: the name with its quotes, the value as written.
 */
bool
rowscan_next_field(const char **p, const char *end, RowSpan *name, RowSpan *value)
{
	const char *q = skip_ws(*p, end);
	const char *name_end;
	const char *value_end;

	if (q < end && *q == ',')
		q = skip_ws(q + 1, end);
	if (q >= end || *q != '"')
		return false;
	name_end = skip_string(q, end);
	if (name_end == NULL)
		return false;
	name->start = q;
	name->len = name_end - q;
	q = skip_ws(name_end, end);
	if (q >= end || *q != ':')
		return false;
	q = skip_ws(q + 1, end);
	value_end = skip_value(q, end);
	if (value_end == NULL)
		return false;
	value->start = q;
	value->len = value_end - q;
	*p = value_end;
	return true;
}

bool
rowscan_field(const char *json, size_t len, const char *name, RowSpan *out)
{
	const char *p = skip_ws(json, json + len);
	const char *end = json + len;
	size_t		nlen = strlen(name);
	RowSpan		n;
	RowSpan		v;

	out->start = NULL;
	out->len = 0;
	if (p >= end || *p != '{')
		return false;
	p++;
	while (rowscan_next_field(&p, end, &n, &v))
	{
		if (n.len == nlen + 2 && memcmp(n.start + 1, name, nlen) == 0)
		{
			*out = v;
			return true;
		}
	}
	return false;
}
