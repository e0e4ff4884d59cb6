/*
 * Values from the command line and the environment: URLs (the Host header
 * and path of an endpoint), stream ARNs, LSNs and hash keys.  A hash key
 * that parses formats back to the same digits.
 */
#include "fuzz_common.h"
#include "http.h"
#include "kinesis.h"
#include "kpl.h"
#include "rowscan.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *s = fuzz_cstring(data, size);
	char	   *path = NULL;
	char	   *err = NULL;
	char	   *host = http_host_header(s, &path, &err);
	uint64_t	lsn;
	uint128_t	h;

	if (host == NULL && err == NULL)
		abort();
	free(host);
	free(path);
	free(err);
	free(kinesis_arn_region(s));
	(void) rowscan_parse_lsn(s, size, &lsn);
	if (kpl_parse_hash_key(s, &h))
	{
		char		out[40];
		const char *digits = s;

		kpl_format_hash_key(h, out);
		while (*digits == '0' && digits[1] != '\0')
			digits++;
		if (strcmp(out, digits) != 0)
			abort();
	}
	free(s);
	return 0;
}
