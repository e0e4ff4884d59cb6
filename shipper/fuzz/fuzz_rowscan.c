/*
 * The plugin-row scanner: any bytes, as a row from the slot.  Every span
 * it reports must lie inside the input, and an LSN field must parse or be
 * refused without reading past it.  And it must agree with the scanner as
 * it was before it was made faster (rowscan_reference.c): the same answer
 * and the same spans, for any input.
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
check_span(const RowSpan *s, const char *base, size_t len)
{
	if (s->start == NULL)
		return;
	if (s->start < base || s->start + s->len > base + len)
		abort();
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

		same_span(&f.schema, &ref.schema);
		same_span(&f.table, &ref.table);
		same_span(&f.commit_lsn, &ref.commit_lsn);
		same_span(&f.key, &ref.key);
		same_span(&f.route, &ref.route);
		same_span(&f.commit_time, &ref.commit_time);
		same_span(&f.prefix, &ref.prefix);

		check_span(&f.schema, row, size);
		check_span(&f.table, row, size);
		check_span(&f.commit_lsn, row, size);
		check_span(&f.key, row, size);
		check_span(&f.route, row, size);
		check_span(&f.commit_time, row, size);
		check_span(&f.prefix, row, size);
		if (f.commit_lsn.start != NULL)
			(void) rowscan_parse_lsn(f.commit_lsn.start, f.commit_lsn.len, &lsn);
	}
	free(row);
	return 0;
}
