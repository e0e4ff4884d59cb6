/*-------------------------------------------------------------------------
 *
 * fuzz_common.h
 *	  Shared by the libFuzzer targets of the shipper's parsers (see
 *	  README in this directory).
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "postgres_fe.h"

#include <stdint.h>

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a NUL-terminated string (parsers of text take those). */
static inline char *
fuzz_cstring(const uint8_t *data, size_t size)
{
	char	   *s = pg_malloc(size + 1);

	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#endif							/* FUZZ_COMMON_H */
