/*-------------------------------------------------------------------------
 *
 * log.c
 *	  Text or JSON messages on stderr (see log.h).
 *
 * Messages come from the main thread, the delivery thread and the metrics
 * thread: a JSON line is built whole and written with one write(2) under a
 * mutex, so lines never interleave.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <pthread.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pqexpbuffer.h"

#define MAX_CONTEXT 8

static LogFormat log_format = LOG_FORMAT_TEXT;
static const char *log_program = "fundrecs_shipper";
static char *context_names[MAX_CONTEXT];
static char *context_values[MAX_CONTEXT];
static int	ncontext = 0;
static uint64_t current_lsn = 0;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void
log_set_format(LogFormat format, const char *program)
{
	log_format = format;
	if (program != NULL)
		log_program = program;
}

void
log_set_context(const char *name, const char *value)
{
	if (value == NULL)
		return;
	for (int i = 0; i < ncontext; i++)
	{
		if (strcmp(context_names[i], name) == 0)
		{
			free(context_values[i]);
			context_values[i] = pg_strdup(value);
			return;
		}
	}
	if (ncontext < MAX_CONTEXT)
	{
		context_names[ncontext] = pg_strdup(name);
		context_values[ncontext] = pg_strdup(value);
		ncontext++;
	}
}

void
log_set_lsn(uint64_t lsn)
{
	__atomic_store_n(&current_lsn, lsn, __ATOMIC_RELAXED);
}

/* Length of the valid UTF-8 sequence at s (at most len bytes), 0 if none. */
static int
utf8_sequence(const unsigned char *s, size_t len)
{
	int			n;
	uint32_t	cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		n = 2, cp = s[0] & 0x1F;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		n = 3, cp = s[0] & 0x0F;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if ((size_t) n > len)
		return 0;
	for (int i = 1; i < n; i++)
	{
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	/* Overlong forms, surrogates and code points past U+10FFFF. */
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		(cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

/*
 * A JSON string of text that may hold anything (a server's error in
 * another encoding, a row excerpt): invalid UTF-8 becomes U+FFFD, so every
 * line parses.  Trailing newlines (libpq's messages end with one) go.
 */
static void
append_json_string(PQExpBuffer out, const char *s)
{
	size_t		len = strlen(s);

	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	appendPQExpBufferChar(out, '"');
	for (size_t i = 0; i < len;)
	{
		unsigned char c = (unsigned char) s[i];
		int			n;

		switch (c)
		{
			case '"':
				appendPQExpBufferStr(out, "\\\"");
				i++;
				continue;
			case '\\':
				appendPQExpBufferStr(out, "\\\\");
				i++;
				continue;
			case '\n':
				appendPQExpBufferStr(out, "\\n");
				i++;
				continue;
			case '\t':
				appendPQExpBufferStr(out, "\\t");
				i++;
				continue;
			case '\r':
				appendPQExpBufferStr(out, "\\r");
				i++;
				continue;
			default:
				break;
		}
		if (c < 0x20 || c == 0x7F)
		{
			appendPQExpBuffer(out, "\\u%04x", c);
			i++;
			continue;
		}
		n = utf8_sequence((const unsigned char *) s + i, len - i);
		if (n == 0)
		{
			appendPQExpBufferStr(out, "\\ufffd");
			i++;
			continue;
		}
		appendBinaryPQExpBuffer(out, s + i, n);
		i += n;
	}
	appendPQExpBufferChar(out, '"');
}

static const char *
level_name(enum pg_log_level level)
{
	switch (level)
	{
		case PG_LOG_ERROR:
			return "error";
		case PG_LOG_WARNING:
			return "warning";
		case PG_LOG_INFO:
			return "info";
		case PG_LOG_DEBUG:
			return "debug";
		default:
			return "info";
	}
}

static void
write_json(enum pg_log_level level, enum pg_log_part part, const char *fmt, va_list ap)
{
	char	   *text;
	PQExpBufferData line;
	struct timeval tv;
	struct tm	tm;
	char		stamp[32];
	uint64_t	lsn = __atomic_load_n(&current_lsn, __ATOMIC_RELAXED);
	int			save_errno = errno;

	/* The message, formatted whole (errno restored for %m). */
	{
		size_t		size = 512;

		for (;;)
		{
			va_list		copy;
			int			n;

			text = pg_malloc(size);

			va_copy(copy, ap);
			errno = save_errno;
			n = vsnprintf(text, size, fmt, copy);
			va_end(copy);
			if (n < 0)
			{
				strlcpy(text, fmt, size);
				break;
			}
			if ((size_t) n < size)
				break;
			free(text);
			size = (size_t) n + 1;
		}
	}

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

	initPQExpBuffer(&line);
	appendPQExpBuffer(&line, "{\"time\":\"%s.%03dZ\",\"level\":\"%s\",\"program\":",
					  stamp, (int) (tv.tv_usec / 1000), level_name(level));
	append_json_string(&line, log_program);
	appendPQExpBufferStr(&line, part == PG_LOG_DETAIL ? ",\"detail\":" :
						 part == PG_LOG_HINT ? ",\"hint\":" : ",\"message\":");
	append_json_string(&line, text);
	for (int i = 0; i < ncontext; i++)
	{
		appendPQExpBufferChar(&line, ',');
		append_json_string(&line, context_names[i]);
		appendPQExpBufferChar(&line, ':');
		append_json_string(&line, context_values[i]);
	}
	if (lsn != 0)
		appendPQExpBuffer(&line, ",\"lsn\":\"%X/%X\"", LSN_FORMAT_ARGS(lsn));
	appendPQExpBufferStr(&line, "}\n");

	pthread_mutex_lock(&log_lock);
	{
		const char *p = line.data;
		size_t		left = line.len;

		while (left > 0)
		{
			ssize_t		n = write(STDERR_FILENO, p, left);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			p += n;
			left -= n;
		}
	}
	pthread_mutex_unlock(&log_lock);
	termPQExpBuffer(&line);
	free(text);
	errno = save_errno;
}

void
log_message(enum pg_log_level level, enum pg_log_part part, const char *fmt,...)
{
	va_list		ap;

	if (level < __pg_log_level)
		return;
	va_start(ap, fmt);
	if (log_format == LOG_FORMAT_JSON)
		write_json(level, part, fmt, ap);
	else
		pg_log_generic_v(level, part, fmt, ap);
	va_end(ap);
}
