/*-------------------------------------------------------------------------
 *
 * kpl.h
 *	  KPL record aggregation and the Kinesis shard map (see kpl.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KPL_H
#define KPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef unsigned __int128 uint128_t;

extern const unsigned char kpl_magic[4];

/*
 * An aggregated record being planned: the sizes of its two protobuf
 * sections as rows are added.  The bytes are written once, by kpl_encode,
 * from the rows where they already are.
 */
typedef struct KplAggregate
{
	size_t		keys_len;		/* partition_key_table entries */
	size_t		records_len;	/* records entries */
	uint64_t	nrecords;
} KplAggregate;

/* A row of an aggregate: its partition key and its data. */
typedef struct KplEntry
{
	const char *key;
	size_t		keylen;
	const char *data;
	size_t		datalen;
} KplEntry;

extern void kpl_init(KplAggregate *agg);
extern size_t kpl_added_size(const KplAggregate *agg, size_t keylen, size_t datalen);
extern size_t kpl_size(const KplAggregate *agg);
extern void kpl_add(KplAggregate *agg, size_t keylen, size_t datalen);
extern void kpl_encode(const KplAggregate *agg, const KplEntry *rows, char *out);

/* An open shard: its id and hash key range (inclusive). */
typedef struct KplShard
{
	char	   *id;
	uint128_t	start;
	uint128_t	end;
} KplShard;

typedef struct KplShardMap
{
	KplShard   *shards;			/* sorted by start */
	int			nshards;
} KplShardMap;

/*
 * Hashes partition keys into hash keys, one MD5 context reused for every
 * key (EVP_Digest makes and frees one a call).  One per thread.
 */
typedef struct KplHasher KplHasher;

extern KplHasher *kpl_hasher_create(void);
extern void kpl_hasher_free(KplHasher *h);
extern uint128_t kpl_hash_key(KplHasher *h, const char *pkey, size_t len);
extern bool kpl_parse_hash_key(const char *s, uint128_t *out);
extern void kpl_format_hash_key(uint128_t v, char out[40]);
extern int	kpl_shard_of(const KplShardMap *map, uint128_t hash);
extern void kpl_map_sort(KplShardMap *map);
extern bool kpl_map_check(const KplShardMap *map, char **problem);
extern void kpl_map_free(KplShardMap *map);

#endif							/* KPL_H */
