/*-------------------------------------------------------------------------
 *
 * fundrecs_products.c
 *	  The products' helpers: the route of a category (category_slug, which
 *	  every route goes through), and the product file reader of
 *	  load_products_file().
 *
 * The orders are joined with fundrecs.product_details by the built-in
 * enrichment rule (fundrecs_ruleset.c), looked up and cached as every
 * rule's lookups are (fundrecs_enrich.c).
 *
 *-------------------------------------------------------------------------
 */
#include "fundrecs.h"

#include <ctype.h>

#include "catalog/pg_authid.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"

/*
 * Latin letters with diacritics, U+00C0 to U+017F (Latin-1 Supplement and
 * Latin Extended-A), as lower-case ASCII; NULL for the two signs (U+00D7,
 * U+00F7), which separate words.
 */
static const char *const latin_ascii[0x180 - 0xC0] = {
	"a", "a", "a", "a", "a", "a", "ae", "c",	/* U+00C0 */
	"e", "e", "e", "e", "i", "i", "i", "i", /* U+00C8 */
	"d", "n", "o", "o", "o", "o", "o", NULL,	/* U+00D0 */
	"o", "u", "u", "u", "u", "y", "th", "ss",	/* U+00D8 */
	"a", "a", "a", "a", "a", "a", "ae", "c",	/* U+00E0 */
	"e", "e", "e", "e", "i", "i", "i", "i", /* U+00E8 */
	"d", "n", "o", "o", "o", "o", "o", NULL,	/* U+00F0 */
	"o", "u", "u", "u", "u", "y", "th", "y",	/* U+00F8 */
	"a", "a", "a", "a", "a", "a", "c", "c", /* U+0100 */
	"c", "c", "c", "c", "c", "c", "d", "d", /* U+0108 */
	"d", "d", "e", "e", "e", "e", "e", "e", /* U+0110 */
	"e", "e", "e", "e", "g", "g", "g", "g", /* U+0118 */
	"g", "g", "g", "g", "h", "h", "h", "h", /* U+0120 */
	"i", "i", "i", "i", "i", "i", "i", "i", /* U+0128 */
	"i", "i", "ij", "ij", "j", "j", "k", "k",	/* U+0130 */
	"k", "l", "l", "l", "l", "l", "l", "l", /* U+0138 */
	"l", "l", "l", "n", "n", "n", "n", "n", /* U+0140 */
	"n", "n", "n", "n", "o", "o", "o", "o", /* U+0148 */
	"o", "o", "oe", "oe", "r", "r", "r", "r",	/* U+0150 */
	"r", "r", "s", "s", "s", "s", "s", "s", /* U+0158 */
	"s", "s", "t", "t", "t", "t", "t", "t", /* U+0160 */
	"u", "u", "u", "u", "u", "u", "u", "u", /* U+0168 */
	"u", "u", "u", "u", "w", "w", "y", "y", /* U+0170 */
	"y", "z", "z", "z", "z", "z", "z", "s", /* U+0178 */
};

/* The next code point of valid UTF-8 (the server encoding), advancing *p. */
static pg_wchar
next_code_point(const unsigned char **p)
{
	const unsigned char *s = *p;
	int			len = pg_utf_mblen(s);
	pg_wchar	cp = utf8_to_unicode(s);

	*p = s + len;
	return cp;
}

/* Separators among non-ASCII code points: spaces, punctuation, symbols. */
static bool
is_separator(pg_wchar cp)
{
	return (cp >= 0x80 && cp < 0xC0) || /* Latin-1 punctuation, symbols */
		cp == 0xD7 || cp == 0xF7 ||
		(cp >= 0x2000 && cp < 0x2C00) ||	/* punctuation, symbols, arrows... */
		(cp >= 0x3000 && cp < 0x3040) ||	/* CJK punctuation */
		(cp >= 0xFE00 && cp < 0xFE70) ||	/* variation selectors, small
											 * forms */
		(cp >= 0xFF00 && cp < 0xFF10) ||	/* full-width punctuation */
		cp >= 0x1F000;			/* emoji and other symbols */
}

/*
 * The route of a category, safe as an S3 key part and a Hive partition
 * value whatever the category: lower-case ASCII letters and digits; Latin
 * letters with diacritics transliterated (latin_ascii); letters of other
 * scripts as "u" and their code point in hex, each set apart by an
 * underscore; every run of anything else one underscore, none at either
 * end.  Empty result: "uncategorized".
 */
char *
fr_category_slug(const char *category)
{
	StringInfoData out;
	bool		pending_sep = false;
	bool		last_was_cp = false;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	const unsigned char *p = (const unsigned char *) category;

	initStringInfo(&out);
	while (*p)
	{
		char		ascii[12];
		const char *piece = NULL;
		bool		is_cp = false;	/* a code point written in hex */

		if (*p < 0x80)
		{
			if (isalnum(*p))
			{
				ascii[0] = (char) tolower(*p);
				ascii[1] = '\0';
				piece = ascii;
			}
			p++;
		}
		else if (!utf8)
			p++;				/* other encodings: non-ASCII separates */
		else
		{
			pg_wchar	cp = next_code_point(&p);

			if (cp >= 0xC0 && cp < 0x180)
				piece = latin_ascii[cp - 0xC0];
			else if (!is_separator(cp))
			{
				snprintf(ascii, sizeof(ascii), "u%x", (unsigned int) cp);
				piece = ascii;
				is_cp = true;
			}
		}

		if (piece == NULL)
		{
			pending_sep = true;
			continue;
		}
		/* A code point in hex stands apart, so the slug reads back. */
		if (out.len > 0 && (pending_sep || is_cp || last_was_cp))
			appendStringInfoChar(&out, '_');
		pending_sep = false;
		last_was_cp = is_cp;
		appendStringInfoString(&out, piece);
	}

	if (out.len == 0)
	{
		pfree(out.data);
		return pstrdup(FR_ROUTE_UNCATEGORIZED);
	}
	return out.data;
}

PG_FUNCTION_INFO_V1(fundrecs_category_slug);

Datum
fundrecs_category_slug(PG_FUNCTION_ARGS)
{
	text	   *category = PG_GETARG_TEXT_PP(0);

	PG_RETURN_TEXT_P(cstring_to_text(fr_category_slug(text_to_cstring(category))));
}

/*
 * fundrecs.read_product_file(path text) returns text: the contents of a
 * server-side file, for load_products_file().  Reading server files is
 * for superusers and members of pg_read_server_files only.
 */
PG_FUNCTION_INFO_V1(fundrecs_read_product_file);

#define FR_MAX_PRODUCT_FILE (256 * 1024 * 1024)

Datum
fundrecs_read_product_file(PG_FUNCTION_ARGS)
{
	char	   *path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	FILE	   *file;
	StringInfoData buf;
	char		chunk[65536];
	size_t		n;

	if (!superuser() && !has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to read product file \"%s\"", path),
				 errdetail("Only superusers and members of pg_read_server_files may read server files."),
				 errhint("Use fundrecs.load_products(jsonb) to load products from the client.")));

	file = AllocateFile(path, PG_BINARY_R);
	if (file == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open product file \"%s\": %m", path)));

	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), file)) > 0)
	{
		if ((size_t) buf.len + n > FR_MAX_PRODUCT_FILE)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("product file \"%s\" is too large", path),
					 errdetail("The limit is %d bytes.", FR_MAX_PRODUCT_FILE)));
		appendBinaryStringInfo(&buf, chunk, n);
	}
	if (ferror(file))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read product file \"%s\": %m", path)));
	FreeFile(file);

	pg_verifymbstr(buf.data, buf.len, false);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
