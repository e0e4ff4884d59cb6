/*-------------------------------------------------------------------------
 *
 * log.h
 *	  The shipper's messages: PostgreSQL's frontend logging (the same
 *	  levels, -v/-q, and the same text on stderr as pg_recvlogical), or,
 *	  with --log-format json, one JSON object per line for CloudWatch Logs,
 *	  journald or Loki.
 *
 * A JSON line holds "time" (UTC, milliseconds), "level" (error, warning,
 * info, debug), "program", then "message" for a primary message or
 * "detail" / "hint" for the lines that follow one, then the context set
 * with log_set_context (slot, target, stream, bucket) and "lsn", the
 * position confirmed to the server so far.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHIPPER_LOG_H
#define SHIPPER_LOG_H

#include <stdint.h>

#include "access/xlogdefs.h"	/* LSN_FORMAT_ARGS */
#include "common/logging.h"

typedef enum LogFormat
{
	LOG_FORMAT_TEXT,
	LOG_FORMAT_JSON
} LogFormat;

/* The format, and the program name JSON lines carry. */
extern void log_set_format(LogFormat format, const char *program);

/* Adds "name":"value" to every JSON line (copied; at most 8 fields). */
extern void log_set_context(const char *name, const char *value);

/* The confirmed position, shown as "lsn" on JSON lines once non-zero. */
extern void log_set_lsn(uint64_t lsn);

extern void log_message(enum pg_log_level level, enum pg_log_part part,
						const char *fmt,...) pg_attribute_printf(3, 4);

#define log_error(...) log_message(PG_LOG_ERROR, PG_LOG_PRIMARY, __VA_ARGS__)
#define log_error_detail(...) log_message(PG_LOG_ERROR, PG_LOG_DETAIL, __VA_ARGS__)
#define log_error_hint(...) log_message(PG_LOG_ERROR, PG_LOG_HINT, __VA_ARGS__)
#define log_warning(...) log_message(PG_LOG_WARNING, PG_LOG_PRIMARY, __VA_ARGS__)
#define log_warning_detail(...) log_message(PG_LOG_WARNING, PG_LOG_DETAIL, __VA_ARGS__)
#define log_warning_hint(...) log_message(PG_LOG_WARNING, PG_LOG_HINT, __VA_ARGS__)
#define log_info(...) log_message(PG_LOG_INFO, PG_LOG_PRIMARY, __VA_ARGS__)
#define log_debug(...) do { \
		if (unlikely(__pg_log_level <= PG_LOG_DEBUG)) \
			log_message(PG_LOG_DEBUG, PG_LOG_PRIMARY, __VA_ARGS__); \
	} while (0)

#endif							/* SHIPPER_LOG_H */
