/*
 * The other untrusted answers: an S3 error document, an STS AssumeRole*
 * XML answer, the JSON credentials of IMDS, the container endpoint and
 * credential_process, and ISO 8601 times.  Credentials that parse have
 * both keys.
 */
#include "fuzz_common.h"
#include "credentials.h"
#include "s3.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text;
	AwsCredentials c;
	char	   *err = NULL;
	double		t;

	if (size < 1)
		return 0;
	text = fuzz_cstring(data + 1, size - 1);

	switch (data[0] % 4)
	{
		case 0:
			free(s3_error_code(text));
			break;
		case 1:
			if (aws_parse_sts_credentials(text, &c))
			{
				if (c.access_key == NULL || c.secret_key == NULL || c.session_token == NULL)
					abort();
				aws_credentials_clear(&c);
			}
			break;
		case 2:
			if (aws_parse_credentials_json(text, size - 1, (data[0] & 4) ? "SessionToken" : "Token",
										   (data[0] & 8) != 0, &c, &err))
			{
				if (c.access_key == NULL || c.secret_key == NULL)
					abort();
				aws_credentials_clear(&c);
			}
			else if (err == NULL)
				abort();
			free(err);
			break;
		case 3:
			(void) aws_parse_iso8601(text, &t);
			break;
	}
	free(text);
	return 0;
}
