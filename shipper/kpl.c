/*-------------------------------------------------------------------------
 *
 * kpl.c
 *	  KPL aggregation: the record format the Kinesis Producer Library
 *	  writes and KCL, Firehose and the aws-kinesis-agg libraries read.
 *
 *	  magic F3 89 9A C2, then a protobuf AggregatedRecord:
 *		repeated string partition_key_table = 1;
 *		repeated string explicit_hash_key_table = 2;
 *		repeated Record records = 3;
 *	  with Record:
 *		required uint64 partition_key_index = 1;
 *		optional uint64 explicit_hash_key_index = 2;
 *		required bytes data = 3;
 *	  then the MD5 of the protobuf bytes.
 *
 *	  The message is small and fixed, so it is written here directly (the
 *	  protobuf wire format: varint keys and lengths); the tests decode it
 *	  with an independent implementation (aws-kinesis-agg from npm).
 *
 *	  Consumers drop a sub-record whose hash key (the MD5 of its partition
 *	  key) is not in the shard they read it from, so an aggregate holds only
 *	  rows of one shard, and it is sent with an ExplicitHashKey inside that
 *	  shard's range.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <pthread.h>

#include <openssl/evp.h>

#include "kpl.h"

const unsigned char kpl_magic[4] = {0xF3, 0x89, 0x9A, 0xC2};

/* A varint written at p (room for 10 bytes); returns its end. */
static char *
varint_at(char *p, uint64_t v)
{
	while (v >= 0x80)
	{
		*p++ = (char) ((v & 0x7F) | 0x80);
		v >>= 7;
	}
	*p++ = (char) v;
	return p;
}

static int
varint_len(uint64_t v)
{
	int			n = 1;

	while (v >= 0x80)
	{
		v >>= 7;
		n++;
	}
	return n;
}

void
kpl_init(KplAggregate *agg)
{
	memset(agg, 0, sizeof(*agg));
}

/* A records entry's size inside its field: partition_key_index and data. */
static size_t
record_body_len(uint64_t index, size_t datalen)
{
	return 1 + varint_len(index) + 1 + varint_len(datalen) + datalen;
}

/* What adding a row would make the encoded aggregate grow by. */
size_t
kpl_added_size(const KplAggregate *agg, size_t keylen, size_t datalen)
{
	size_t		rec = record_body_len(agg->nrecords, datalen);

	return 1 + varint_len(keylen) + keylen + 1 + varint_len(rec) + rec;
}

size_t
kpl_size(const KplAggregate *agg)
{
	return sizeof(kpl_magic) + agg->keys_len + agg->records_len + 16;
}

/*
 * Adds a row's sizes.  Every row gets its own entry in the key table (keys
 * are distinct within a batch, so there is nothing to share).
 */
void
kpl_add(KplAggregate *agg, size_t keylen, size_t datalen)
{
	size_t		rec = record_body_len(agg->nrecords, datalen);

	agg->keys_len += 1 + varint_len(keylen) + keylen;
	agg->records_len += 1 + varint_len(rec) + rec;
	agg->nrecords++;
}

/*
 * MD5, fetched from the provider once: EVP_md5() is looked up again under
 * a lock on every digest (a row's hash key is one), which the lanes'
 * threads then wait on.
 */
static pthread_once_t md5_once = PTHREAD_ONCE_INIT;
static EVP_MD *md5_md;

static void
md5_fetch(void)
{
	md5_md = EVP_MD_fetch(NULL, "MD5", NULL);
}

static const EVP_MD *
md5(void)
{
	pthread_once(&md5_once, md5_fetch);
	if (md5_md == NULL)
	{
		fprintf(stderr, "could not load MD5 from OpenSSL\n");
		exit(1);
	}
	return md5_md;
}

/* OpenSSL failing to digest is out of memory or a broken install: exit. */
static void
md5_failed(void)
{
	fprintf(stderr, "could not compute MD5\n");
	exit(1);
}

static void
md5_update(EVP_MD_CTX *ctx, const char *p, size_t n)
{
	if (EVP_DigestUpdate(ctx, p, n) != 1)
		md5_failed();
}

/* Bytes written and not yet hashed, past which they are hashed. */
#define KPL_MD5_STRIDE 16384

/*
 * magic + protobuf + MD5(protobuf), written at out (kpl_size(agg) bytes):
 * agg->nrecords rows, those that were added.  Each row's data is copied
 * once, and hashed while it is still in the cache.
 */
void
kpl_encode(const KplAggregate *agg, const KplEntry *rows, char *out)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char	   *p = out;
	char	   *hashed;

	if (ctx == NULL || EVP_DigestInit_ex(ctx, md5(), NULL) != 1)
		md5_failed();
	memcpy(p, kpl_magic, sizeof(kpl_magic));
	p += sizeof(kpl_magic);
	hashed = p;

	/* field 1 (length-delimited): the keys */
	for (uint64_t i = 0; i < agg->nrecords; i++)
	{
		*p++ = 0x0A;
		p = varint_at(p, rows[i].keylen);
		memcpy(p, rows[i].key, rows[i].keylen);
		p += rows[i].keylen;
	}

	/* field 3 (length-delimited): partition_key_index and data */
	for (uint64_t i = 0; i < agg->nrecords; i++)
	{
		*p++ = 0x1A;
		p = varint_at(p, record_body_len(i, rows[i].datalen));
		*p++ = 0x08;
		p = varint_at(p, i);
		*p++ = 0x1A;
		p = varint_at(p, rows[i].datalen);
		memcpy(p, rows[i].data, rows[i].datalen);
		p += rows[i].datalen;
		if (p - hashed >= KPL_MD5_STRIDE)
		{
			md5_update(ctx, hashed, p - hashed);
			hashed = p;
		}
	}
	md5_update(ctx, hashed, p - hashed);
	if (EVP_DigestFinal_ex(ctx, digest, &mdlen) != 1 || mdlen != 16)
		md5_failed();
	EVP_MD_CTX_free(ctx);
	memcpy(p, digest, 16);
	p += 16;
	if ((size_t) (p - out) != kpl_size(agg))
	{
		fprintf(stderr, "internal error: KPL aggregate of %zu bytes planned as %zu\n",
				(size_t) (p - out), kpl_size(agg));
		abort();
	}
}

/* ----------------------------------------------------------------
 * Hash keys and the shard map
 * ----------------------------------------------------------------
 */

struct KplHasher
{
	EVP_MD_CTX *ctx;
};

KplHasher *
kpl_hasher_create(void)
{
	KplHasher  *h = pg_malloc(sizeof(KplHasher));

	h->ctx = EVP_MD_CTX_new();
	if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, md5(), NULL) != 1)
		md5_failed();
	return h;
}

void
kpl_hasher_free(KplHasher *h)
{
	if (h == NULL)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

/* The hash key of a partition key: MD5 as a big-endian 128-bit number. */
uint128_t
kpl_hash_key(KplHasher *h, const char *pkey, size_t len)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	uint128_t	v = 0;

	/* NULL: the digest set at creation, its context kept. */
	if (EVP_DigestInit_ex(h->ctx, NULL, NULL) != 1 ||
		EVP_DigestUpdate(h->ctx, pkey, len) != 1 ||
		EVP_DigestFinal_ex(h->ctx, digest, &mdlen) != 1 || mdlen != 16)
		md5_failed();
	for (int i = 0; i < 16; i++)
		v = (v << 8) | digest[i];
	return v;
}

bool
kpl_parse_hash_key(const char *s, uint128_t *out)
{
	uint128_t	v = 0;
	const uint128_t max_div10 = ~(uint128_t) 0 / 10;

	if (*s == '\0')
		return false;
	for (; *s; s++)
	{
		if (*s < '0' || *s > '9')
			return false;
		if (v > max_div10)
			return false;
		v = v * 10;
		if (v > ~(uint128_t) 0 - (uint128_t) (*s - '0'))
			return false;
		v += (uint128_t) (*s - '0');
	}
	*out = v;
	return true;
}

void
kpl_format_hash_key(uint128_t v, char out[40])
{
	char		tmp[40];
	int			n = 0;

	do
	{
		tmp[n++] = (char) ('0' + (int) (v % 10));
		v /= 10;
	} while (v != 0);
	for (int i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
}

/* The open shard whose range holds the hash key, or -1. */
int
kpl_shard_of(const KplShardMap *map, uint128_t hash)
{
	int			lo = 0,
				hi = map->nshards - 1;

	/* Shards are sorted by starting hash key and do not overlap. */
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (hash < map->shards[mid].start)
			hi = mid - 1;
		else if (hash > map->shards[mid].end)
			lo = mid + 1;
		else
			return mid;
	}
	return -1;
}

static int
shard_cmp(const void *a, const void *b)
{
	const KplShard *x = a;
	const KplShard *y = b;

	return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

void
kpl_map_sort(KplShardMap *map)
{
	qsort(map->shards, map->nshards, sizeof(KplShard), shard_cmp);
}

/*
 * Does the sorted map cover the whole 128-bit hash key range, each key in
 * exactly one open shard?  A ListShards answer taken in the middle of a
 * reshard, or cut short, may leave a hole or an overlap: a row placed by
 * such a map could be stored outside its shard's range, where KCL drops it.
 * On failure, *problem says where (malloc'd).
 */
bool
kpl_map_check(const KplShardMap *map, char **problem)
{
	uint128_t	next = 0;
	char		a[40],
				b[40];

	*problem = NULL;
	if (map->nshards == 0)
	{
		*problem = pg_strdup("no open shard");
		return false;
	}
	for (int i = 0; i < map->nshards; i++)
	{
		const KplShard *s = &map->shards[i];

		if (i > 0 && next == 0)
		{
			/* The one before ended at the top of the range. */
			*problem = psprintf("shards %s and %s overlap", map->shards[i - 1].id, s->id);
			return false;
		}
		if (s->start > next)
		{
			kpl_format_hash_key(next, a);
			kpl_format_hash_key(s->start - 1, b);
			*problem = psprintf("no open shard covers hash keys %s to %s", a, b);
			return false;
		}
		if (s->start < next)
		{
			*problem = psprintf("shards %s and %s overlap", map->shards[i - 1].id, s->id);
			return false;
		}
		next = s->end + 1;		/* 0 after the top of the range */
	}
	if (next != 0)
	{
		kpl_format_hash_key(next, a);
		*problem = psprintf("no open shard covers hash keys %s to 340282366920938463463374607431768211455", a);
		return false;
	}
	return true;
}

void
kpl_map_free(KplShardMap *map)
{
	for (int i = 0; i < map->nshards; i++)
		free(map->shards[i].id);
	free(map->shards);
	map->shards = NULL;
	map->nshards = 0;
}
