/*-------------------------------------------------------------------------
 *
 * jscan.c
 *	  A strict JSON scanner reading in place (see jscan.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <locale.h>
#include <math.h>

#include "jscan.h"

void
jscan_init(JScan *sc, const char *text, size_t len)
{
	sc->p = text;
	sc->end = text +len;
}

static inline void
skip_ws(JScan *sc)
{
	while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\n' || *sc->p == '\r' || *sc->p == '\t'))
		sc->p++;
}

bool
jscan_expect(JScan *sc, char c)
{
	skip_ws(sc);
	if (sc->p < sc->end && *sc->p == c)
	{
		sc->p++;
		return true;
	}
	return false;
}

bool
jscan_peek(JScan *sc, char c)
{
	skip_ws(sc);
	return sc->p < sc->end && *sc->p == c;
}

bool
jscan_at_end(JScan *sc)
{
	skip_ws(sc);
	return sc->p == sc->end;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Four hex digits at p (p + 4 <= end checked by the caller); -1 if not. */
static long
hex4(const char *p)
{
	long		v = 0;

	for (int i = 0; i < 4; i++)
	{
		int			h = hexval(p[i]);

		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/*
 * A \u escape at p (after the backslash and 'u'), with its low surrogate
 * when it is a high one: the code point, and the characters read in *used;
 * -1 when it is not one jansson accepts (no \u0000, no lone surrogate).
 */
static long
unicode_escape(const char *p, const char *end, int *used)
{
	long		cp;
	long		lo;

	if (end - p < 4 || (cp = hex4(p)) < 0 || cp == 0)
		return -1;
	*used = 4;
	if (cp >= 0xDC00 && cp <= 0xDFFF)
		return -1;
	if (cp < 0xD800 || cp > 0xDBFF)
		return cp;
	if (end - p < 10 || p[4] != '\\' || p[5] != 'u' || (lo = hex4(p + 6)) < 0xDC00 || lo > 0xDFFF)
		return -1;
	*used = 10;
	return 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
}

/* The length of a valid UTF-8 sequence at p, else 0. */
static int
utf8_length(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	int			n;
	uint32_t	cp;

	if (c < 0xC2 || c > 0xF4)
		return 0;
	n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
	if (end - p < n)
		return 0;
	cp = c & (0xFF >> (n + 1));
	for (int i = 1; i < n; i++)
	{
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
		(n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return n;
}

/*
 * Are the eight bytes at p all plain (printable ASCII other than '"' and
 * '\\', which a string holds as they are)?  The usual word tricks, exact
 * for "is any byte below n" and "is any byte zero": (x - n * ones) & ~x
 * sets a byte's high bit only if some byte is below n.
 */
static inline bool
plain8(const unsigned char *p)
{
	const uint64_t ones = UINT64_C(0x0101010101010101);
	const uint64_t highs = UINT64_C(0x8080808080808080);
	uint64_t	w;
	uint64_t	quote;
	uint64_t	backslash;

	memcpy(&w, p, 8);
	quote = w ^ (ones * '"');
	backslash = w ^ (ones * '\\');
	return ((((w - ones * 0x20) & ~w) |
			 ((quote - ones) & ~quote) |
			 ((backslash - ones) & ~backslash) |
			 w) & highs) == 0;
}

bool
jscan_string(JScan *sc, JSpan *out)
{
	const unsigned char *p;
	const unsigned char *end = (const unsigned char *) sc->end;

	if (!jscan_expect(sc, '"'))
		return false;
	p = (const unsigned char *) sc->p;
	out->s = sc->p;
	out->escaped = false;
	for (;;)
	{
		unsigned char c;

		while (end - p >= 8 && plain8(p))
			p += 8;
		if (p >= end)
			return false;
		c = *p;
		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\')
		{
			p++;
			continue;
		}
		if (c == '"')
			break;
		if (c < 0x20)
			return false;
		if (c == '\\')
		{
			int			used;

			out->escaped = true;
			if (++p >= end)
				return false;
			if (*p == 'u')
			{
				if (unicode_escape((const char *) p + 1, (const char *) end, &used) < 0)
					return false;
				p += 1 + used;
			}
			else if (strchr("\"\\/bfnrt", *p) != NULL && *p != '\0')
				p++;
			else
				return false;
			continue;
		}
		{
			int			n = utf8_length(p, end);

			if (n == 0)
				return false;
			p += n;
		}
	}
	out->len = (const char *) p - out->s;
	out->set = true;
	sc->p = (const char *) p + 1;
	return true;
}

static bool
digits(JScan *sc)
{
	const char *start = sc->p;

	while (sc->p < sc->end && *sc->p >= '0' && *sc->p <= '9')
		sc->p++;
	return sc->p > start;
}

/*
 * A number, refused where jansson refuses it: an integer beyond 64 bits,
 * a real that overflows a double.
 */
static bool
number(JScan *sc)
{
	const char *start = sc->p;
	bool		real = false;
	char		buf[64];
	char	   *text;
	size_t		len;
	bool		ok;

	if (sc->p < sc->end && *sc->p == '-')
		sc->p++;
	if (sc->p < sc->end && *sc->p == '0')
		sc->p++;
	else if (!digits(sc))
		return false;
	if (sc->p < sc->end && *sc->p == '.')
	{
		real = true;
		sc->p++;
		if (!digits(sc))
			return false;
	}
	if (sc->p < sc->end && (*sc->p == 'e' || *sc->p == 'E'))
	{
		real = true;
		sc->p++;
		if (sc->p < sc->end && (*sc->p == '+' || *sc->p == '-'))
			sc->p++;
		if (!digits(sc))
			return false;
	}
	len = sc->p - start;
	text = len < sizeof(buf) ? buf : pg_malloc(len + 1);

	memcpy(text, start, len);
	text[		len] = '\0';

	errno = 0;
	if (real)
	{
		char	   *dot = strchr(text, '.');
		double		v;

		/* strtod reads the locale's decimal point. */
		if (dot != NULL)
			*dot = localeconv()->decimal_point[0];
		v = strtod(text, NULL);
		ok = !(errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL));
	}
	else
	{
		(void) strtoll(text, NULL, 10);
		ok = errno != ERANGE;
	}
	if (text !=buf)
		free(text);
	return ok;
}

static bool
literal(JScan *sc, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0)
		return false;
	sc->p += n;
	return true;
}

static bool
skip_value(JScan *sc, int depth)
{
	JSpan		ignored;
	char		c;

	skip_ws(sc);
	if (sc->p >= sc->end || depth > JSCAN_MAX_DEPTH)
		return false;
	c = *sc->p;
	if (c == '"')
		return jscan_string(sc, &ignored);
	if (c == '{' || c == '[')
	{
		char		close = c == '{' ? '}' : ']';

		sc->p++;
		if (jscan_expect(sc, close))
			return true;
		do
		{
			if (c == '{' && (!jscan_string(sc, &ignored) || !jscan_expect(sc, ':')))
				return false;
			if (!skip_value(sc, depth + 1))
				return false;
		} while (jscan_expect(sc, ','));
		return jscan_expect(sc, close);
	}
	if (c == 't')
		return literal(sc, "true");
	if (c == 'f')
		return literal(sc, "false");
	if (c == 'n')
		return literal(sc, "null");
	return number(sc);
}

bool
jscan_skip_value(JScan *sc)
{
	return skip_value(sc, 1);
}

bool
jscan_skip_value_at(JScan *sc, int depth)
{
	return skip_value(sc, depth);
}

bool
jscan_key_is(const JSpan *key, const char *name)
{
	size_t		n = strlen(name);
	char		buf[256];
	char	   *out;
	long		len;
	bool		same;

	if (!key->escaped)
		return key->len == n && memcmp(key->s, name, n) == 0;
	/* Written with escapes: compared by value, as a JSON reader would. */
	out = key->len < sizeof(buf) ? buf : pg_malloc(key->len + 1);
	len = jscan_unescape(key, out);
	same = len == (long) n && memcmp(out, name, n) == 0;
	if (out != buf)
		free(out);
	return same;
}

long
jscan_unescape(const JSpan *span, char *out)
{
	const char *p = span->s;
	const char *end = span->s + span->len;
	char	   *o = out;

	while (p < end)
	{
		long		cp;
		int			used;

		if (*p != '\\')
		{
			*o++ = *p++;
			continue;
		}
		p++;
		switch (*p++)
		{
			case '"':
				*o++ = '"';
				continue;
			case '\\':
				*o++ = '\\';
				continue;
			case '/':
				*o++ = '/';
				continue;
			case 'b':
				*o++ = '\b';
				continue;
			case 'f':
				*o++ = '\f';
				continue;
			case 'n':
				*o++ = '\n';
				continue;
			case 'r':
				*o++ = '\r';
				continue;
			case 't':
				*o++ = '\t';
				continue;
			case 'u':
				break;
			default:
				return -1;
		}
		if ((cp = unicode_escape(p, end, &used)) < 0)
			return -1;
		p += used;
		if (cp < 0x80)
			*o++ = (char) cp;
		else if (cp < 0x800)
		{
			*o++ = (char) (0xC0 | (cp >> 6));
			*o++ = (char) (0x80 | (cp & 0x3F));
		}
		else if (cp < 0x10000)
		{
			*o++ = (char) (0xE0 | (cp >> 12));
			*o++ = (char) (0x80 | ((cp >> 6) & 0x3F));
			*o++ = (char) (0x80 | (cp & 0x3F));
		}
		else
		{
			*o++ = (char) (0xF0 | (cp >> 18));
			*o++ = (char) (0x80 | ((cp >> 12) & 0x3F));
			*o++ = (char) (0x80 | ((cp >> 6) & 0x3F));
			*o++ = (char) (0x80 | (cp & 0x3F));
		}
	}
	*o = '\0';
	return o - out;
}

char *
jscan_strdup(const JSpan *span)
{
	char	   *out = pg_malloc(span->len + 1);

	if (jscan_unescape(span, out) < 0)
	{
		free(out);
		return NULL;
	}
	return out;
}
