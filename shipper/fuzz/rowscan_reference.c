/*
 * fuzz/rowscan_reference.c
 *	  The row scanner as it was before its speed-ups (commit 8750c73): a
 *	  byte loop over strings and each wanted name compared in turn.
 *	  fuzz_rowscan.c includes it and checks that rowscan() reports the same
 *	  result and the same spans for every input.
 */
/* Skips a string starting at p (on the opening quote); returns the end. */
static const char *
skip_string(const char *p, const char *end)
{
	p++;
	while (p < end)
	{
		if (*p == '\\')
			p += 2;
		else if (*p == '"')
			return p + 1;
		else
			p++;
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
 * Is the quoted name (len bytes with its quotes) want?  strnlen stops
 * within want however long the name is (a plain strlen per field cost 5 %
 * of the shipper's time; reading want[len - 2] for a longer name, tried
 * first, read past want's end: fuzz/regress/rowscan/ keeps the input).
 */
static inline bool
name_is(const char *name, size_t len, const char *want)
{
	return len >= 2 && strnlen(want, len - 1) == len - 2 &&
		memcmp(name + 1, want, len - 2) == 0;
}

/* Field names of the native format, and of the DMS format's metadata. */
static const char *const native_names[] = {"schema", "table", "commit_lsn", "key", "route", "metadata", "commit_time", "prefix"};
static const char *const dms_names[] = {"schema-name", "table-name", "commit-lsn", "key", "route", NULL, "timestamp", NULL};

static bool scan_object(const char *json, size_t len, const char *const names[8],
						RowFields *out, RowSpan *metadata);

static bool
rowscan_reference(const char *json, size_t len, RowFields *out)
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
scan_object(const char *json, size_t len, const char *const names[8],
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

			if (name_is(name, nlen, names[0]))
				slot = &out->schema;
			else if (name_is(name, nlen, names[1]))
				slot = &out->table;
			else if (name_is(name, nlen, names[2]))
				slot = &out->commit_lsn;
			else if (name_is(name, nlen, names[3]))
				slot = &out->key;
			else if (name_is(name, nlen, names[4]))
				slot = &out->route;
			else if (name_is(name, nlen, names[6]))
				slot = &out->commit_time;
			else if (names[7] != NULL && name_is(name, nlen, names[7]))
				slot = &out->prefix;
			else if (names[5] != NULL && metadata != NULL &&
					 name_is(name, nlen, names[5]) && *value == '{')
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
