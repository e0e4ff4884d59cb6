/*
 * The KPL encoder, round trip: records cut from the input are aggregated
 * and encoded, then decoded here by an independent reader of the protobuf
 * wire format (generic tag/wire-type parsing, not the encoder's code) and
 * compared with what went in; the MD5 trailer is checked with OpenSSL.
 */
#include "fuzz_common.h"

#include <openssl/evp.h>

#include "kpl.h"
#include "pqexpbuffer.h"

typedef struct Cursor
{
	const unsigned char *p;
	const unsigned char *end;
}			Cursor;

static uint64_t
varint(Cursor * c)
{
	uint64_t	v = 0;

	for (int shift = 0; shift < 64; shift += 7)
	{
		unsigned char b;

		if (c->p >= c->end)
			abort();
		b = *c->p++;
		v |= (uint64_t) (b & 0x7F) << shift;
		if (!(b & 0x80))
			return v;
	}
	abort();
}

/* A length-delimited field's bytes. */
static Cursor
bytes(Cursor * c)
{
	uint64_t	n = varint(c);
	Cursor		r;

	if (n > (uint64_t) (c->end - c->p))
		abort();
	r.p = c->p;
	r.end = c->p + n;
	c->p += n;
	return r;
}

/* Kept from input to input, as a lane keeps it from batch to batch. */
static KplHasher *hasher;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	KplAggregate agg;
	KplEntry	entries[64];
	PQExpBufferData out;
	const char *keys[64];
	size_t		keylens[64];
	const char *datas[64];
	size_t		datalens[64];
	int			n = 0;
	size_t		pos = 0;
	Cursor		c;
	int			nkeys = 0,
				nrecs = 0;
	unsigned char md5[16];
	unsigned int mdlen;

	/* Records: [keylen byte][key][datalen byte][data]... */
	while (pos < size && n < 64)
	{
		size_t		kl = data[pos++] % 64 + 1;
		size_t		dl;

		if (pos + kl > size)
			break;
		keys[n] = (const char *) data + pos;
		keylens[n] = kl;
		pos += kl;
		dl = pos < size ? data[pos++] : 0;
		if (pos + dl > size)
			dl = size - pos;
		datas[n] = (const char *) data + pos;
		datalens[n] = dl;
		pos += dl;
		n++;
	}
	if (n == 0)
		return 0;

	kpl_init(&agg);
	for (int i = 0; i < n; i++)
	{
		size_t		before = kpl_size(&agg);
		size_t		added = kpl_added_size(&agg, keylens[i], datalens[i]);

		kpl_add(&agg, keylens[i], datalens[i]);
		if (kpl_size(&agg) != before + added)
			abort();
		entries[i].key = keys[i];
		entries[i].keylen = keylens[i];
		entries[i].data = datas[i];
		entries[i].datalen = datalens[i];
	}
	/* kpl_encode writes exactly kpl_size() bytes: the rest must stay. */
	initPQExpBuffer(&out);
	if (!enlargePQExpBuffer(&out, kpl_size(&agg) + 64))
		abort();
	memset(out.data, 0xA5, kpl_size(&agg) + 64);
	kpl_encode(&agg, entries, out.data);
	out.len = kpl_size(&agg);
	for (size_t i = out.len; i < out.len + 64; i++)
		if ((unsigned char) out.data[i] != 0xA5)
			abort();

	/* magic, protobuf, MD5(protobuf) */
	if (out.len < 4 + 16 || memcmp(out.data, kpl_magic, 4) != 0)
		abort();
	if (EVP_Digest(out.data + 4, out.len - 20, md5, &mdlen, EVP_md5(), NULL) != 1 ||
		memcmp(md5, out.data + out.len - 16, 16) != 0)
		abort();

	c.p = (const unsigned char *) out.data + 4;
	c.end = (const unsigned char *) out.data + out.len - 16;
	while (c.p < c.end)
	{
		uint64_t	tag = varint(&c);

		if ((tag & 7) != 2)
			abort();
		if ((tag >> 3) == 1)	/* partition_key_table */
		{
			Cursor		k = bytes(&c);

			if (nkeys >= n || (size_t) (k.end - k.p) != keylens[nkeys] ||
				memcmp(k.p, keys[nkeys], keylens[nkeys]) != 0)
				abort();
			nkeys++;
		}
		else if ((tag >> 3) == 3)	/* records */
		{
			Cursor		r = bytes(&c);
			int64_t		index = -1;
			Cursor		d = {NULL, NULL};

			while (r.p < r.end)
			{
				uint64_t	t = varint(&r);

				if (t == ((1 << 3) | 0))
					index = (int64_t) varint(&r);
				else if (t == ((3 << 3) | 2))
					d = bytes(&r);
				else
					abort();
			}
			if (index != nrecs || d.p == NULL || nrecs >= n ||
				(size_t) (d.end - d.p) != datalens[nrecs] ||
				(datalens[nrecs] > 0 && memcmp(d.p, datas[nrecs], datalens[nrecs]) != 0))
				abort();
			nrecs++;
		}
		else
			abort();
	}
	if (nkeys != n || nrecs != n)
		abort();
	termPQExpBuffer(&out);

	/*
	 * Each key's hash key, from the one hasher every input reuses, is its MD5
	 * as a big-endian number, as a digest made afresh says.
	 */
	if (hasher == NULL)
		hasher = kpl_hasher_create();
	for (int i = 0; i < n; i++)
	{
		uint128_t	v = kpl_hash_key(hasher, keys[i], keylens[i]);

		if (EVP_Digest(keys[i], keylens[i], md5, &mdlen, EVP_md5(), NULL) != 1 || mdlen != 16)
			abort();
		for (int b = 15; b >= 0; b--, v >>= 8)
			if ((unsigned char) (v & 0xFF) != md5[b])
				abort();
	}
	return 0;
}
