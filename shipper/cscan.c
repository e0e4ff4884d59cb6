/*-------------------------------------------------------------------------
 *
 * cscan.c
 *	  A CBOR scanner reading in place, on libcbor's streaming decoder
 *	  (see cscan.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <cbor.h>

#include "cscan.h"
#include "mb/pg_wchar.h"

void
cscan_init(CScan *sc, const void *doc, size_t len)
{
	sc->p = doc;
	sc->end = sc->p + len;
	sc->owned = NULL;
	sc->nowned = 0;
	sc->maxowned = 0;
}

void
cscan_free(CScan *sc)
{
	for (int i = 0; i < sc->nowned; i++)
		free(sc->owned[i]);
	free(sc->owned);
	sc->owned = NULL;
	sc->nowned = sc->maxowned = 0;
}

bool
cscan_at_end(const CScan *sc)
{
	return sc->p == sc->end;
}

/* libcbor's callbacks: each fills the CItem it is given. */
#define ITEM(ctx) ((CItem *) (ctx))

static void
on_uint8(void *ctx, uint8_t v)
{
	ITEM		(ctx)->kind = CK_UINT;
	ITEM		(ctx)->n = v;
}

static void
on_uint16(void *ctx, uint16_t v)
{
	ITEM		(ctx)->kind = CK_UINT;
	ITEM		(ctx)->n = v;
}

static void
on_uint32(void *ctx, uint32_t v)
{
	ITEM		(ctx)->kind = CK_UINT;
	ITEM		(ctx)->n = v;
}

static void
on_uint64(void *ctx, uint64_t v)
{
	ITEM		(ctx)->kind = CK_UINT;
	ITEM		(ctx)->n = v;
}

static void
on_negint8(void *ctx, uint8_t v)
{
	ITEM		(ctx)->kind = CK_NEGINT;
	ITEM		(ctx)->n = v;
}

static void
on_negint16(void *ctx, uint16_t v)
{
	ITEM		(ctx)->kind = CK_NEGINT;
	ITEM		(ctx)->n = v;
}

static void
on_negint32(void *ctx, uint32_t v)
{
	ITEM		(ctx)->kind = CK_NEGINT;
	ITEM		(ctx)->n = v;
}

static void
on_negint64(void *ctx, uint64_t v)
{
	ITEM		(ctx)->kind = CK_NEGINT;
	ITEM		(ctx)->n = v;
}

static void
on_bytes(void *ctx, cbor_data data, size_t len)
{
	ITEM		(ctx)->kind = CK_BYTES;
	ITEM		(ctx)->s = (const char *) data;
	ITEM		(ctx)->len = len;
}

static void
on_bytes_start(void *ctx)
{
	ITEM		(ctx)->kind = CK_BYTES_CHUNKED;
}

static void
on_text(void *ctx, cbor_data data, size_t len)
{
	ITEM		(ctx)->kind = CK_TEXT;
	ITEM		(ctx)->s = (const char *) data;
	ITEM		(ctx)->len = len;
}

static void
on_text_start(void *ctx)
{
	ITEM		(ctx)->kind = CK_TEXT_CHUNKED;
}

static void
on_array(void *ctx, size_t n)
{
	ITEM		(ctx)->kind = CK_ARRAY;
	ITEM		(ctx)->n = n;
}

static void
on_array_indef(void *ctx)
{
	ITEM		(ctx)->kind = CK_ARRAY_INDEF;
}

static void
on_map(void *ctx, size_t n)
{
	ITEM		(ctx)->kind = CK_MAP;
	ITEM		(ctx)->n = n;
}

static void
on_map_indef(void *ctx)
{
	ITEM		(ctx)->kind = CK_MAP_INDEF;
}

static void
on_tag(void *ctx, uint64_t v)
{
	ITEM		(ctx)->kind = CK_TAG;
	ITEM		(ctx)->n = v;
}

static void
on_float(void *ctx, float v)
{
	ITEM		(ctx)->kind = CK_SIMPLE;
}

static void
on_double(void *ctx, double v)
{
	ITEM		(ctx)->kind = CK_SIMPLE;
}

static void
on_simple(void *ctx)
{
	ITEM		(ctx)->kind = CK_SIMPLE;
}

static void
on_bool(void *ctx, bool v)
{
	ITEM		(ctx)->kind = CK_SIMPLE;
}

static void
on_break(void *ctx)
{
	ITEM		(ctx)->kind = CK_BREAK;
}

static const struct cbor_callbacks item_callbacks = {
	.uint8 = on_uint8,
	.uint16 = on_uint16,
	.uint32 = on_uint32,
	.uint64 = on_uint64,
	.negint8 = on_negint8,
	.negint16 = on_negint16,
	.negint32 = on_negint32,
	.negint64 = on_negint64,
	.byte_string = on_bytes,
	.byte_string_start = on_bytes_start,
	.string = on_text,
	.string_start = on_text_start,
	.array_start = on_array,
	.indef_array_start = on_array_indef,
	.map_start = on_map,
	.indef_map_start = on_map_indef,
	.tag = on_tag,
	.float2 = on_float,
	.float4 = on_float,
	.float8 = on_double,
	.undefined = on_simple,
	.null = on_simple,
	.boolean = on_bool,
	.indef_break = on_break,
};

/* Text is UTF-8 (RFC 8949, 3.1; cbor_load() refuses it otherwise). */
static bool
utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;

	while (p < end)
	{
		int			l;

		if (*p < 0x80)
		{
			p++;
			continue;
		}
		l = pg_utf_mblen(p);
		if (l > end - p || !pg_utf8_islegal(p, l))
			return false;
		p += l;
	}
	return true;
}

bool
cscan_next(CScan *sc, CItem *it)
{
	struct cbor_decoder_result r;

	if (sc->p >= sc->end)
		return false;
	it->n = 0;
	it->s = NULL;
	it->len = 0;
	r = cbor_stream_decode(sc->p, sc->end - sc->p, &item_callbacks, it);
	if (r.status != CBOR_DECODER_FINISHED || r.read == 0)
		return false;
	if (it->kind == CK_TEXT && !utf8_valid(it->s, it->len))
		return false;
	sc->p += r.read;
	return true;
}

/* The chunks of a chunked string, up to the break, each of kind chunk. */
static bool
join_chunks(CScan *sc, CKind chunk, CSpan *out)
{
	char	   *joined = NULL;
	size_t		len = 0;
	size_t		size = 0;
	CItem		it;

	for (;;)
	{
		if (!cscan_next(sc, &it) || (it.kind != chunk && it.kind != CK_BREAK))
		{
			free(joined);
			return false;
		}
		if (it.kind == CK_BREAK)
			break;
		if (out == NULL)
			continue;
		if (len + it.len + 1 > size)
		{
			/* Chunks lie in the document: the sum is bounded by its size. */
			size = Max(len + it.len + 1, 2 * size);
			joined = pg_realloc(joined, size);
		}
		memcpy(joined + len, it.s, it.len);
		len += it.len;
	}
	if (out == NULL)
		return true;
	if (joined == NULL)
		joined = pg_malloc(1);
	joined[len] = '\0';
	if (sc->nowned == sc->maxowned)
	{
		sc->maxowned = Max(8, 2 * sc->maxowned);
		sc->owned = pg_realloc(sc->owned, sizeof(char *) * sc->maxowned);
	}
	sc->owned[sc->nowned++] = joined;
	out->s = joined;
	out->len = len;
	out->set = true;
	return true;
}

bool
cscan_skip_rest(CScan *sc, const CItem *it, int depth)
{
	CItem		sub;

	if (depth > CSCAN_MAX_DEPTH)
		return false;
	switch (it->kind)
	{
		case CK_BYTES_CHUNKED:
			return join_chunks(sc, CK_BYTES, NULL);
		case CK_TEXT_CHUNKED:
			return join_chunks(sc, CK_TEXT, NULL);
		case CK_ARRAY:
		case CK_MAP:
			{
				/*
				 * Each item takes at least a byte: a size past them fails
				 * early.
				 */
				uint64_t	items = it->n;

				if (it->kind == CK_MAP && items > (uint64_t) (sc->end - sc->p) / 2)
					return false;
				if (it->kind == CK_MAP)
					items *= 2;
				if (items > (uint64_t) (sc->end - sc->p))
					return false;
				for (uint64_t i = 0; i < items; i++)
					if (!cscan_skip_value(sc, depth + 1))
						return false;
				return true;
			}
		case CK_ARRAY_INDEF:
		case CK_MAP_INDEF:
			for (uint64_t i = 0;; i++)
			{
				if (!cscan_next(sc, &sub))
					return false;
				if (sub.kind == CK_BREAK)
					/* A map's pairs are whole. */
					return it->kind == CK_ARRAY_INDEF || i % 2 == 0;
				if (!cscan_skip_rest(sc, &sub, depth + 1))
					return false;
			}
		case CK_TAG:
			return cscan_skip_value(sc, depth + 1);
		case CK_BREAK:
			/* A break outside an indefinite item. */
			return false;
		default:
			return true;
	}
}

bool
cscan_skip_value(CScan *sc, int depth)
{
	CItem		it;

	return cscan_next(sc, &it) && cscan_skip_rest(sc, &it, depth);
}

bool
cscan_string_rest(CScan *sc, const CItem *it, bool text, CSpan *out, int depth)
{
	CKind		whole = text ? CK_TEXT : CK_BYTES;
	CKind		chunked = text ? CK_TEXT_CHUNKED : CK_BYTES_CHUNKED;

	if (it->kind == whole)
	{
		out->s = it->s;
		out->len = it->len;
		out->set = true;
		return true;
	}
	if (it->kind == chunked)
		return join_chunks(sc, whole, out);
	/* Another kind: as if absent (a later duplicate wins). */
	out->set = false;
	return cscan_skip_rest(sc, it, depth);
}

bool
cscan_string(CScan *sc, bool text, CSpan *out, int depth)
{
	CItem		it;

	return cscan_next(sc, &it) && cscan_string_rest(sc, &it, text, out, depth);
}

bool
cscan_span_is(const CSpan *span, const char *name)
{
	size_t		len = strlen(name);

	return span->set && span->len == len && memcmp(span->s, name, len) == 0;
}

char *
cscan_strdup(const CSpan *span)
{
	char	   *out = pg_malloc(span->len + 1);

	memcpy(out, span->s, span->len);
	out[span->len] = '\0';
	return out;
}
