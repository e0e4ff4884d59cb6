/*
 * The replication stream's CopyData framing (XLogData 'w', keepalive 'k'):
 * a message is decoded or refused with a message, and an XLogData's row
 * lies inside the message.
 */
#include "fuzz_common.h"
#include "stream.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *buf;
	StreamMessage msg;
	char	   *err = NULL;

	if (size > INT32_MAX)
		return 0;
	buf = pg_malloc(size ? size : 1);
	memcpy(buf, data, size);
	if (stream_parse_copy_data(buf, (int) size, &msg, &err))
	{
		if (msg.type == 'w' && (msg.data < buf || msg.data + msg.len != buf + size))
			abort();
		if (msg.type != 'w' && msg.type != 'k')
			abort();
	}
	else if (err == NULL)
		abort();
	free(err);
	free(buf);
	return 0;
}
