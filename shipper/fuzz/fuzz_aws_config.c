/*
 * The AWS INI files (~/.aws/config and credentials): the input is written
 * to a file the lookups read, then the keys the shipper reads are looked
 * up in a few profiles, with the config file's "profile NAME" sections.
 */
#include "fuzz_common.h"

#include <unistd.h>

#include "aws_config.h"

static char path[64];

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const profiles[] = {"default", "p", "a b", "role", ""};
	static const char *const keys[] = {"aws_access_key_id", "region", "role_arn",
	"source_profile", "credential_process", "web_identity_token_file", ""};
	FILE	   *f;

	if (path[0] == '\0')
	{
		snprintf(path, sizeof(path), "/tmp/fuzz_aws_config_%d", (int) getpid());
		setenv("AWS_CONFIG_FILE", path, 1);
		setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	}
	f = fopen(path, "w");
	if (f == NULL)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	for (int i = 0; i < 5; i++)
	{
		for (int j = 0; j < 7; j++)
		{
			bool		found;

			free(aws_config_value(profiles[i], keys[j], &found));
			free(aws_credfile_value(profiles[i], keys[j], &found));
		}
		(void) aws_profile_exists(profiles[i]);
	}
	setenv("AWS_PROFILE", "p", 1);
	free(aws_resolve_region(NULL));
	unsetenv("AWS_PROFILE");
	return 0;
}
