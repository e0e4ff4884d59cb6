/*
 * The plugin-row scanner: any bytes, as a row from the slot.  Every span
 * it reports must lie inside the input, and an LSN field must parse or be
 * refused without reading past it.  And it must agree with the scanner as
 * it was before it was made faster (rowscan_reference.c): the same answer
 * and the same spans, for any input.  A row with the first's header (up to
 * its key, rowscan_key_prefix) followed by the rest of a second line gets
 * from rowscan_after_prefix what it gets from rowscan.
 */
#include "fuzz_common.h"
#include "rowscan.h"

#include "rowscan_reference.c"

static void
same_span(const RowSpan *a, const RowSpan *b)
{
	if (a->start != b->start || (a->start != NULL && a->len != b->len))
		abort();
}

static void
same_fields(const RowFields *a, const RowFields *b)
{
	same_span(&a->schema, &b->schema);
	same_span(&a->table, &b->table);
	same_span(&a->commit_lsn, &b->commit_lsn);
	same_span(&a->key, &b->key);
	same_span(&a->route, &b->route);
	same_span(&a->commit_time, &b->commit_time);
	same_span(&a->prefix, &b->prefix);
}

static void
check_span(const RowSpan *s, const char *base, size_t len)
{
	if (s->start == NULL)
		return;
	if (s->start < base || s->start + s->len > base + len)
		abort();
}

/* rowscan_after_prefix of next, whose first prefix bytes are row's, agrees with rowscan. */
static void
check_after_prefix(const char *next, size_t nlen, const char *row, const RowFields *head,
				   size_t prefix)
{
	RowFields	full;
	RowFields	fast;
	bool		ok = rowscan(next, nlen, &full);

	if (ok != rowscan_after_prefix(next, nlen, row, head, prefix, &fast))
		abort();
	if (ok)
	{
		same_fields(&fast, &full);
	}
}

/*
 * The row again, and (an input of two lines) the first line's header
 * followed by the second line: what a chunk's next row looks like.
 */
static void
same_after_prefix(const char *row, size_t size)
{
	RowFields	head;
	size_t		prefix = rowscan_key_prefix(row, size, &head);
	const char *nl;
	char	   *next;
	size_t		tail;

	if (prefix == 0)
		return;
	if (prefix >= size)
		abort();
	check_after_prefix(row, size, row, &head, prefix);
	nl = memchr(row, '\n', size);
	if (nl == NULL || (size_t) (nl - row) <= prefix)
		return;
	tail = size - (nl + 1 - row);
	next = pg_malloc(prefix + tail + 1);
	memcpy(next, row, prefix);
	memcpy(next + prefix, nl + 1, tail);
	check_after_prefix(next, prefix + tail, row, &head, prefix);
	free(next);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy: ASan sees any read past the end. */
	char	   *row = pg_malloc(size ? size : 1);
	RowFields	f;
	RowFields	ref;
	bool		ok;

	memcpy(row, data, size);
	ok = rowscan(row, size, &f);
	if (ok != rowscan_reference(row, size, &ref))
		abort();
	if (ok)
	{
		uint64_t	lsn;

		same_fields(&f, &ref);

		check_span(&f.schema, row, size);
		check_span(&f.table, row, size);
		check_span(&f.commit_lsn, row, size);
		check_span(&f.key, row, size);
		check_span(&f.route, row, size);
		check_span(&f.commit_time, row, size);
		check_span(&f.prefix, row, size);
		if (f.commit_lsn.start != NULL)
			(void) rowscan_parse_lsn(f.commit_lsn.start, f.commit_lsn.len, &lsn);
		same_after_prefix(row, size);
	}
	free(row);
	return 0;
}
