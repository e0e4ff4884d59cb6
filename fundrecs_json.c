/*-------------------------------------------------------------------------
 *
 * fundrecs_json.c
 *	  Column values as JSON: strings, numbers (one NaN/Infinity rule),
 *	  timestamps, LSNs, bytea, and each value by its kind (see
 *	  fundrecs_relinfo.c, which finds every column's kind once).
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tupconvert.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "fundrecs_compat.h"

/* Returns "str" as a JSON string literal, quotes included. */
char *
fr_json_quote(const char *str)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, str);
	return buf.data;
}

void
fr_json_append_string(StringInfo out, const char *str)
{
	escape_json(out, str);
}

static int
hex32(char *out, uint32 v)
{
	static const char hex[] = "0123456789ABCDEF";

	/* digits: at least one; v | 1 keeps __builtin_clz defined for 0 */
	int			n = (32 - __builtin_clz(v | 1) + 3) / 4;

	for (int i = n - 1; i >= 0; i--)
	{
		out[i] = hex[v & 0xF];
		v >>= 4;
	}
	return n;
}

/* "X/Y" as %X/%X writes it, without the cost of a format string. */
void
fr_json_append_lsn(StringInfo out, XLogRecPtr lsn)
{
	fr_reserve(out, 20);
	out->data[out->len++] = '"';
	out->len += hex32(out->data + out->len, (uint32) (lsn >> 32));
	out->data[out->len++] = '/';
	out->len += hex32(out->data + out->len, (uint32) lsn);
	out->data[out->len++] = '"';
	out->data[out->len] = '\0';
}

void
fr_json_append_uint(StringInfo out, uint64 value)
{
	fr_reserve(out, 21);
	out->len += pg_ulltoa_n(value, out->data + out->len);
	out->data[out->len] = '\0';
}

static inline char *
put_digits(char *p, int value, int width)
{
	for (int i = width - 1; i >= 0; i--)
	{
		p[i] = (char) ('0' + value % 10);
		value /= 10;
	}
	return p + width;
}

/*
 * A timestamp as JsonEncodeDateTime writes it (XSD style), quoted, with
 * "Z" after a timestamptz, written directly: "YYYY-MM-DDTHH:MM:SS", then
 * the microseconds without trailing zeros.  Only for finite values in
 * years 1 to 9999; false for the rest (infinity, BC, five-digit years),
 * which take JsonEncodeDateTime's path.  About three times faster, and a
 * timestamp column is in most rows.  The date part is kept for the day
 * last written: a change's timestamps are mostly of the same day as the
 * previous change's, and j2date is half the cost of the rest.
 */
static bool
append_timestamp_fast(StringInfo out, Timestamp ts, bool zulu)
{
	static int64 cached_day = PG_INT64_MIN;
	static char cached_date[10];	/* "YYYY-MM-DD" of cached_day */
	int64		day;
	int64		time;
	int			hour;
	int			min;
	int			sec;
	int			usec;
	char	   *p;

	if (TIMESTAMP_NOT_FINITE(ts))
		return false;
	/* timestamp2tm's split, without a time zone: floor to whole days */
	day = ts / USECS_PER_DAY;
	time = ts - day * USECS_PER_DAY;
	if (time < 0)
	{
		time += USECS_PER_DAY;
		day--;
	}
	if (day != cached_day)
	{
		int64		julian = day + POSTGRES_EPOCH_JDATE;
		int			year;
		int			month;
		int			mday;

		if (julian < 0 || julian > (int64) PG_INT32_MAX)
			return false;
		j2date((int) julian, &year, &month, &mday);
		if (year < 1 || year > 9999)
			return false;
		put_digits(cached_date, year, 4);
		cached_date[4] = '-';
		put_digits(cached_date + 5, month, 2);
		cached_date[7] = '-';
		put_digits(cached_date + 8, mday, 2);
		cached_day = day;
	}
	hour = (int) (time / USECS_PER_HOUR);
	time -= (int64) hour * USECS_PER_HOUR;
	min = (int) (time / USECS_PER_MINUTE);
	time -= (int64) min * USECS_PER_MINUTE;
	sec = (int) (time / USECS_PER_SEC);
	usec = (int) (time - (int64) sec * USECS_PER_SEC);

	fr_reserve(out, 32);
	p = out->data + out->len;
	*p++ = '"';
	memcpy(p, cached_date, 10);
	p += 10;
	*p++ = 'T';
	p = put_digits(p, hour, 2);
	*p++ = ':';
	p = put_digits(p, min, 2);
	*p++ = ':';
	p = put_digits(p, sec, 2);
	if (usec != 0)
	{
		*p++ = '.';
		p = put_digits(p, usec, 6);
		while (p[-1] == '0')
			p--;
	}
	if (zulu)
		*p++ = 'Z';
	*p++ = '"';
	*p = '\0';
	out->len = p - out->data;
	return true;
}

/* ISO 8601 in UTC with a "Z", microseconds without trailing zeros. */
void
fr_json_append_timestamptz(StringInfo out, TimestampTz ts)
{
	char		buf[MAXDATELEN + 1];
	int			utc = 0;
	size_t		len;

	if (append_timestamp_fast(out, ts, true))
		return;
	JsonEncodeDateTime(buf, TimestampTzGetDatum(ts), TIMESTAMPTZOID, &utc);
	len = strlen(buf);
	fr_append_char(out, '"');
	if (len > 6 && strcmp(buf + len - 6, "+00:00") == 0)
	{
		fr_append_bytes(out, buf, len - 6);
		fr_append_char(out, 'Z');
	}
	else
		fr_append_bytes(out, buf, len);
	fr_append_char(out, '"');
}

/*
 * A text or varchar value as a JSON string: its bytes are its output, so
 * they are copied as they are unless one needs escaping (escape_json's
 * rules: a quote, a backslash, a control character).
 */
static void
append_text(StringInfo out, Datum value)
{
	struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(value));
	const char *p = VARDATA_ANY(v);
	int			len = VARSIZE_ANY_EXHDR(v);
	int			i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) p[i];

		if (c < 0x20 || c == '"' || c == '\\')
			break;
	}
	if (i == len)
	{
		fr_reserve(out, len + 2);
		out->data[out->len++] = '"';
		memcpy(out->data + out->len, p, len);
		out->len += len;
		out->data[out->len++] = '"';
		out->data[out->len] = '\0';
	}
	else
		escape_json(out, text_to_cstring((text *) v));
	if ((Pointer) v != DatumGetPointer(value))
		pfree(v);
}

/*
 * A number's text output as JSON: the one rule for every number the plugin
 * writes (columns, computed totals).  NaN and infinities are not JSON
 * numbers: they are quoted.
 */
void
fr_json_append_number_text(StringInfo out, const char *str)
{
	if (str[0] == 'N' || str[0] == 'I' || (str[0] == '-' && str[1] == 'I'))
		escape_json(out, str);
	else
		appendStringInfoString(out, str);
}

static void
append_json_text(StringInfo out, const char *str)
{
	/*
	 * A json value is valid JSON already; raw newlines can only be whitespace
	 * between tokens (inside strings they are escaped), so turning them into
	 * spaces keeps the row on one line.
	 */
	for (const char *p = str; *p; p++)
	{
		if (*p == '\n' || *p == '\r')
			fr_append_char(out, ' ');
		else
			fr_append_char(out, *p);
	}
}

static void
append_bytea(StringInfo out, Datum value)
{
	static const char hex[] = "0123456789abcdef";
	bytea	   *b = DatumGetByteaPP(value);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(b);
	int			len = VARSIZE_ANY_EXHDR(b);

	fr_reserve(out, 2 * len + 5);
	fr_append_lit(out, "\"\\\\x");
	for (int i = 0; i < len; i++)
	{
		out->data[out->len++] = hex[p[i] >> 4];
		out->data[out->len++] = hex[p[i] & 0x0F];
	}
	out->data[out->len] = '\0';
	fr_append_char(out, '"');
}

void
fr_json_append_value(StringInfo out, FrColumn *col, Datum value)
{
	char		buf[MAXDATELEN + 1];

	switch (col->kind)
	{
		case FR_KIND_INTEGER:
			switch (col->basetypid)
			{
				case INT2OID:
					fr_reserve(out, 8);
					out->len += pg_itoa(DatumGetInt16(value), out->data + out->len);
					break;
				case INT4OID:
					fr_reserve(out, 12);
					out->len += pg_ltoa(DatumGetInt32(value), out->data + out->len);
					break;
				case INT8OID:
					fr_reserve(out, 21);
					out->len += pg_lltoa(DatumGetInt64(value), out->data + out->len);
					break;
				default:
					appendStringInfoString(out, OutputFunctionCall(&col->outfunc, value));
					break;
			}
			break;
		case FR_KIND_NUMERIC:
		case FR_KIND_FLOAT:
			fr_json_append_number_text(out, OutputFunctionCall(&col->outfunc, value));
			break;
		case FR_KIND_BOOL:
			appendStringInfoString(out, DatumGetBool(value) ? "true" : "false");
			break;
		case FR_KIND_JSON:
			append_json_text(out, OutputFunctionCall(&col->outfunc, value));
			break;
		case FR_KIND_JSONB:
			appendStringInfoString(out, OutputFunctionCall(&col->outfunc, value));
			break;
		case FR_KIND_DATETIME:
			if (col->basetypid == TIMESTAMPTZOID)
				fr_json_append_timestamptz(out, DatumGetTimestampTz(value));
			else if (col->basetypid == TIMESTAMPOID &&
					 append_timestamp_fast(out, DatumGetTimestamp(value), false))
				break;
			else
			{
				JsonEncodeDateTime(buf, value, col->basetypid, NULL);
				fr_append_char(out, '"');
				appendStringInfoString(out, buf);
				fr_append_char(out, '"');
			}
			break;
		case FR_KIND_BYTEA:
			append_bytea(out, value);
			break;
		case FR_KIND_TEXT:
			if (col->basetypid == TEXTOID || col->basetypid == VARCHAROID)
				append_text(out, value);
			else
				escape_json(out, OutputFunctionCall(&col->outfunc, value));
			break;
	}
}

/*
 * units / 10^scale times q, exactly, as numeric_mul would print it (the
 * scale of the decimal, an integer's being 0); false on int64 overflow,
 * when nothing is appended.
 */
bool
fr_json_append_scaled_product(StringInfo out, int64 units, int scale, int64 q)
{
	int64		total;
	uint64		abs_total;
	uint64		pow10 = 1;
	char		frac[20];

	if (__builtin_mul_overflow(units, q, &total))
		return false;
	for (int i = 0; i < scale; i++)
		pow10 *= 10;
	abs_total = total < 0 ? (uint64) 0 - (uint64) total : (uint64) total;
	if (total < 0)
		fr_append_char(out, '-');
	fr_json_append_uint(out, abs_total / pow10);
	if (scale > 0)
	{
		uint64		f = abs_total % pow10;

		for (int i = scale - 1; i >= 0; i--)
		{
			frac[i] = '0' + (char) (f % 10);
			f /= 10;
		}
		fr_append_char(out, '.');
		fr_append_bytes(out, frac, scale);
	}
	return true;
}

/*
 * A numeric's output text as an integer number of 10^-scale units, when it
 * is a plain decimal of at most 17 digits (so products with integers can be
 * computed in int64, exactly).
 */
bool
fr_parse_exact_decimal(const char *text, int64 *units, int *scale)
{
	const char *c = text;
	bool		neg = false;
	int64		u = 0;
	int			sc = -1;
	int			digits = 0;

	if (*c == '-')
	{
		neg = true;
		c++;
	}
	for (; *c; c++)
	{
		if (*c == '.' && sc < 0)
		{
			sc = 0;
			continue;
		}
		if (*c < '0' || *c > '9' || ++digits > 17)
			return false;
		u = u * 10 + (*c - '0');
		if (sc >= 0)
			sc++;
	}
	if (digits == 0)
		return false;
	*units = neg ? -u : u;
	*scale = sc < 0 ? 0 : sc;
	return true;
}
