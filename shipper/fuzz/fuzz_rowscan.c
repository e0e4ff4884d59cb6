/*
 * The plugin-row scanner: any bytes, as a row from the slot.  Every span
 * it reports must lie inside the input, and an LSN field must parse or be
 * refused without reading past it.
 */
#include "fuzz_common.h"
#include "rowscan.h"

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

	memcpy(row, data, size);
	if (rowscan(row, size, &f))
	{
		uint64_t	lsn;

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
