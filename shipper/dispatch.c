/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *	  The batcher and dispatcher (see dispatch.h).
 *
 Deliveries run on delivery threads ("lanes"), one batch per lane at a
 * time, through the target's deliver function (target_kinesis.c: the
 * retry loops of kinesis.c): a lane's thread owns the batch it delivers
 * and the target's state for that lane (for Kinesis its connections, shard
 * map and counters); the main thread owns the batch being filled and the
 * replication connection.  They meet under one mutex: a hand-off (a job)
 * and a result per lane.  A target without lanes (standard output) is
 * delivered on the main thread when the batch is flushed.
 *
 * The order rule: a version of a key goes only once every earlier one is
 * acknowledged, retries included.  A row whose key has an earlier version
 * in a lane's batch (in flight, or held after a failure) or, one record
 * per row, already in the batch being filled, is held back in a queue of
 * waiting rows instead of holding back the whole batch; so does every
 * later row of a key with rows waiting.  When a delivery is collected,
 * waiting rows whose keys are free again move into the batch being
 * filled, in arrival order.  A hot key thus gets one version per round
 * trip (or, aggregated, all its waiting versions in one record), while
 * every other key flows at the rate of the lanes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "dispatch.h"
#include "retry.h"
#include "target.h"

/*
 * A batch's bytes: rows and their partition keys are copied into chunks
 * the batch owns, freed (all but one, kept for the next rows) when it is
 * cleared.  A malloc and a free per row were a tenth of the shipper's
 * time catching up (perf, W1 to stdout).
 */
typedef struct ArenaChunk
{
	struct ArenaChunk *next;
	size_t		size;
	size_t		used;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} ArenaChunk;

#define ARENA_CHUNK_BYTES (256 * 1024)

typedef struct Batch
{
	ShipRecord *recs;
	ArenaChunk *chunks;			/* newest first */
	int			n;
	size_t		bytes;			/* data + partition keys, as Kinesis counts */
	double		first_at;		/* when its first row arrived */
	uint64_t	min_safe_lsn;	/* of its rows (not in arrival order: see */
	double		min_commit_time;	/* promote_waiting) */
	/* partition keys in the batch: open addressing, indexes into recs */
	int		   *slots;
	int			nslots;
} Batch;

typedef struct Lane
{
	Batch		batch;			/* the rows it delivers (or failed to) */
	void	   *ctx;			/* the target's state for this lane */
	pthread_t	thread;
	/* under lock */
	bool		job_ready;		/* batch handed to the thread */
	bool		job_done;		/* and delivered (or not: result) */
	ShipResult	result;
	/* the main thread's */
	bool		in_flight;		/* batch holds rows not yet collected */
} Lane;

static DispatchConfig cfg;		/* as dispatch_init was given it */
static int	capacity;
static size_t max_bytes;

static Batch filling_batch;
static Batch *filling = &filling_batch;
static Lane lanes[DISPATCH_MAX_LANES];
static int	nlanes = 0;
static uint64_t key_waits = 0;	/* rows held back behind an earlier version */

/*
 * Waiting rows (see the top of the file), in arrival order, and the keys
 * they have: a chained hash table with a count of rows per key.
 */
typedef struct WaitKey
{
	struct WaitKey *next;
	uint32_t	hash;
	int			count;			/* rows of the key waiting */
	uint64_t	blocked_in;		/* the promotion pass that found it blocked */
	char		pkey[FLEXIBLE_ARRAY_MEMBER];
} WaitKey;

typedef struct WaitRow
{
	char	   *data;			/* the row (no newline), malloc'd */
	size_t		len;
	WaitKey    *key;
	uint64_t	commit_lsn;
	uint64_t	safe_lsn;
	double		commit_time;
	double		arrived;
} WaitRow;

#define WAIT_BUCKETS 4096
#define WAITING_BATCHES 4		/* rows and bytes waiting at most, in batches */
static WaitKey *wait_keys[WAIT_BUCKETS];
static WaitRow *waiting = NULL;
static int	nwaiting = 0;
static int	waiting_alloc = 0;
static size_t waiting_bytes = 0;
static int	waiting_max;		/* rows held back at most: then reading waits */
static uint64_t promotion_pass = 0;
static uint64_t rows_shipped = 0;
static uint64_t bytes_shipped = 0;
static double last_delivery = 0;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int	wake_pipe[2] = {-1, -1};	/* a byte per finished delivery */

uint32_t
dispatch_key_hash(const char *pkey, size_t keylen)
{
	uint32_t	h = 2166136261u;

	for (size_t i = 0; i < keylen; i++)
		h = (h ^ (unsigned char) pkey[i]) * 16777619u;
	return h;
}

/* n bytes of the batch's arena */
static char *
batch_bytes(Batch *b, size_t n)
{
	ArenaChunk *c = b->chunks;
	char	   *p;

	if (c == NULL || c->size - c->used < n)
	{
		size_t		size = Max(n, ARENA_CHUNK_BYTES);

		c = pg_malloc(offsetof(ArenaChunk, data) + size);
		c->size = size;
		c->used = 0;
		c->next = b->chunks;
		b->chunks = c;
	}
	p = c->data + c->used;
	c->used += n;
	return p;
}

static void
batch_alloc(Batch *b, bool keyed)
{
	b->recs = pg_malloc0(sizeof(ShipRecord) * capacity);
	b->chunks = NULL;
	b->n = 0;
	b->bytes = 0;
	b->slots = NULL;
	b->nslots = 0;
	if (keyed)
	{
		b->nslots = 1;
		while (b->nslots < capacity * 2)
			b->nslots <<= 1;
		b->slots = pg_malloc(sizeof(int) * b->nslots);
		memset(b->slots, -1, sizeof(int) * b->nslots);
	}
}

static void
batch_clear(Batch *b)
{
	ArenaChunk *keep = NULL;

	/* One chunk of the usual size stays for the next rows. */
	while (b->chunks != NULL)
	{
		ArenaChunk *c = b->chunks;

		b->chunks = c->next;
		if (keep == NULL && c->size == ARENA_CHUNK_BYTES)
			keep = c;
		else
			free(c);
	}
	if (keep != NULL)
	{
		keep->used = 0;
		keep->next = NULL;
		b->chunks = keep;
	}
	b->n = 0;
	b->bytes = 0;
	if (b->slots)
		memset(b->slots, -1, sizeof(int) * b->nslots);
}

/* Does the batch hold a row with this key (whose hash is h)? */
static bool
batch_has_key(const Batch *b, const char *pkey, uint32_t h)
{
	uint32_t	i;

	if (b->slots == NULL || b->n == 0)
		return false;
	i = h & (b->nslots - 1);
	while (b->slots[i] >= 0)
	{
		if (strcmp(b->recs[b->slots[i]].pkey, pkey) == 0)
			return true;
		i = (i + 1) & (b->nslots - 1);
	}
	return false;
}

static ShipResult
deliver(Lane *l)
{
	return cfg.deliver(l->ctx, l->batch.recs, l->batch.n, cfg.stop);
}

static void *
delivery_main(void *arg)
{
	Lane	   *l = (Lane *) arg;

	for (;;)
	{
		ShipResult	r;

		pthread_mutex_lock(&lock);
		while (!l->job_ready)
			pthread_cond_wait(&cond, &lock);
		l->job_ready = false;
		pthread_mutex_unlock(&lock);

		r = deliver(l);

		pthread_mutex_lock(&lock);
		l->result = r;
		l->job_done = true;
		pthread_cond_broadcast(&cond);
		pthread_mutex_unlock(&lock);
		/* Wakes the main loop's select(); a full pipe already will. */
		(void) !write(wake_pipe[1], "x", 1);
	}
	return NULL;
}

void
dispatch_init(const DispatchConfig *config)
{
	cfg = *config;
	capacity = cfg.capacity;
	max_bytes = cfg.max_bytes;
	waiting_max = WAITING_BATCHES * capacity;
	batch_alloc(&filling_batch, cfg.keyed);
	if (cfg.lanes > 0)
	{
		sigset_t	all,
					old;

		Assert(cfg.lanes <= DISPATCH_MAX_LANES);
		if (pipe(wake_pipe) != 0 ||
			fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
			fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0)
		{
			log_error("could not create a pipe: %m");
			exit(1);
		}
		nlanes = cfg.lanes;
		for (int i = 0; i < nlanes; i++)
		{
			Lane	   *l = &lanes[i];
			int			rc;

			batch_alloc(&l->batch, true);
			l->ctx = cfg.lane_ctx[i];
			/* Signals are the main thread's: the handlers only set flags. */
			sigfillset(&all);
			pthread_sigmask(SIG_BLOCK, &all, &old);
			rc = pthread_create(&l->thread, NULL, delivery_main, l);
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			if (rc != 0)
			{
				log_error("could not start a delivery thread: %s", strerror(rc));
				exit(1);
			}
		}
	}
}

bool
dispatch_fits(size_t record_bytes)
{
	return filling->n < capacity && filling->bytes + record_bytes <= max_bytes;
}

/* Appends a row to a batch (which has room). */
static void
batch_push(Batch *b, const char *row, size_t len, const char *pkey, size_t keylen,
		   uint32_t hash, uint64_t commit_lsn, uint64_t safe_lsn, double commit_time,
		   double arrived)
{
	ShipRecord *r = &b->recs[b->n];

	Assert(b->n < capacity);
	/* Without keys (standard output), no room for one. */
	r->data = batch_bytes(b, len + 1 + (b->slots != NULL ? keylen + 1 : 0));
	memcpy(r->data, row, len);
	r->data[len] = '\n';
	r->len = len + 1;
	if (b->slots != NULL)
	{
		uint32_t	i = hash & (b->nslots - 1);

		r->pkey = r->data + len + 1;
		memcpy(r->pkey, pkey, keylen + 1);
		while (b->slots[i] >= 0)
			i = (i + 1) & (b->nslots - 1);
		b->slots[i] = b->n;
	}
	else
		r->pkey = NULL;
	r->commit_lsn = commit_lsn;
	r->safe_lsn = safe_lsn;
	r->commit_time = commit_time;
	if (b->n == 0 || safe_lsn < b->min_safe_lsn)
		b->min_safe_lsn = safe_lsn;
	if (b->n == 0 || commit_time < b->min_commit_time)
		b->min_commit_time = commit_time;
	if (b->n == 0)
		b->first_at = arrived;
	b->n++;
	b->bytes += r->len + keylen;
}

/* Is an earlier version of the key in a lane's batch (in flight or failed)? */
static bool
key_in_lanes(const char *pkey, uint32_t hash)
{
	for (int l = 0; l < nlanes; l++)
		if (batch_has_key(&lanes[l].batch, pkey, hash))
			return true;
	return false;
}

/* A row with this key may not join the batch being filled now. */
static bool
key_blocked(const char *pkey, uint32_t hash)
{
	return key_in_lanes(pkey, hash) ||
		(cfg.distinct_keys && batch_has_key(filling, pkey, hash));
}

static WaitKey *
wait_key_find(const char *pkey, size_t keylen, uint32_t hash, bool create)
{
	WaitKey   **head = &wait_keys[hash & (WAIT_BUCKETS - 1)];
	WaitKey    *k;

	for (k = *head; k != NULL; k = k->next)
		if (k->hash == hash && strcmp(k->pkey, pkey) == 0)
			return k;
	if (!create)
		return NULL;
	k = pg_malloc(offsetof(WaitKey, pkey) + keylen + 1);
	k->hash = hash;
	k->count = 0;
	k->blocked_in = 0;
	memcpy(k->pkey, pkey, keylen + 1);
	k->next = *head;
	*head = k;
	return k;
}

static void
wait_key_release(WaitKey *k)
{
	WaitKey   **p = &wait_keys[k->hash & (WAIT_BUCKETS - 1)];

	if (--k->count > 0)
		return;
	while (*p != k)
		p = &(*p)->next;
	*p = k->next;
	free(k);
}

static void
wait_push(const char *row, size_t len, const char *pkey, size_t keylen, uint32_t hash,
		  uint64_t commit_lsn, uint64_t safe_lsn, double commit_time)
{
	WaitRow    *w;

	if (nwaiting == waiting_alloc)
	{
		waiting_alloc = waiting_alloc == 0 ? 256 : waiting_alloc * 2;
		waiting = pg_realloc(waiting, sizeof(WaitRow) * waiting_alloc);
	}
	w = &waiting[nwaiting++];
	w->data = pg_malloc(len);
	memcpy(w->data, row, len);
	w->len = len;
	w->key = wait_key_find(pkey, keylen, hash, true);
	w->key->count++;
	w->commit_lsn = commit_lsn;
	w->safe_lsn = safe_lsn;
	w->commit_time = commit_time;
	w->arrived = now_seconds();
	waiting_bytes += len + keylen;
	key_waits++;
}

/*
 * Moves waiting rows whose keys are free into the batch being filled, in
 * arrival order, while it has room.  A key found blocked keeps all its
 * later rows waiting too (blocked_in marks it for this pass), and once the
 * batch is full every later row waits: each key's rows stay in order.
 */
static void
promote_waiting(void)
{
	int			kept = 0;
	bool		full = false;

	if (nwaiting == 0)
		return;
	promotion_pass++;
	for (int i = 0; i < nwaiting; i++)
	{
		WaitRow    *w = &waiting[i];
		WaitKey    *k = w->key;
		size_t		keylen = strlen(k->pkey);

		if (!full && k->blocked_in != promotion_pass)
		{
			if (key_blocked(k->pkey, k->hash))
				k->blocked_in = promotion_pass;
			else if (filling->n < capacity && filling->bytes + w->len + 1 + keylen <= max_bytes)
			{
				batch_push(filling, w->data, w->len, k->pkey, keylen, k->hash, w->commit_lsn,
						   w->safe_lsn, w->commit_time, w->arrived);
				waiting_bytes -= w->len + keylen;
				free(w->data);
				wait_key_release(k);
				continue;
			}
			else
				full = true;
		}
		waiting[kept++] = *w;
	}
	nwaiting = kept;
}

void
dispatch_add(const char *row, size_t len, const char *pkey, size_t keylen, uint32_t hash,
			 uint64_t commit_lsn, uint64_t safe_lsn, double commit_time)
{
	/* Behind an earlier version of its key, or behind rows of it that wait. */
	if (cfg.keyed &&
		((nwaiting > 0 && wait_key_find(pkey, keylen, hash, false) != NULL) ||
		 key_blocked(pkey, hash)))
	{
		wait_push(row, len, pkey, keylen, hash, commit_lsn, safe_lsn, commit_time);
		return;
	}
	batch_push(filling, row, len, pkey, keylen, hash, commit_lsn, safe_lsn, commit_time,
			   filling->n == 0 ? now_seconds() : filling->first_at);
}

int
dispatch_filling(double *first_at)
{
	if (first_at)
		*first_at = filling->first_at;
	return filling->n;
}

/* Collects a lane's finished delivery; false on failure. */
static bool
collect(Lane *l, ShipResult r)
{
	Batch	   *b = &l->batch;

	l->in_flight = false;
	if (r != SHIP_OK)
	{
		static bool warned = false;

		if (r == SHIP_STOPPED && !warned)
		{
			warned = true;
			log_warning("stopping with %d rows unacknowledged; they will be shipped again on restart",
						dispatch_held_rows());
		}
		/* Kept: they bound what may be confirmed; nothing is sent again. */
		return false;
	}
	if (cfg.verbose)
		log_info("shipped %d rows (%zu bytes) up to commit %X/%X", b->n, b->bytes,
				 LSN_FORMAT_ARGS(b->recs[b->n - 1].commit_lsn));
	rows_shipped += b->n;
	bytes_shipped += b->bytes;
	last_delivery = now_seconds();
	batch_clear(b);
	/* Its keys are free: rows waiting for them may go next. */
	promote_waiting();
	return true;
}

/*
 * Collects every finished delivery without waiting; false when one failed
 * or was stopped (the others are still collected).
 */
static bool
collect_finished(void)
{
	bool		ok = true;
	char		buf[64];

	while (wake_pipe[0] >= 0 && read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
	for (int i = 0; i < nlanes; i++)
	{
		Lane	   *l = &lanes[i];
		bool		done;
		ShipResult	r;

		if (!l->in_flight)
			continue;
		pthread_mutex_lock(&lock);
		done = l->job_done;
		if (done)
			l->job_done = false;
		r = l->result;
		pthread_mutex_unlock(&lock);
		if (done && !collect(l, r))
			ok = false;
	}
	return ok;
}

/*
 * Waits until one of the lanes in mask has finished (all lanes: mask ~0),
 * or none of them is in flight; the tick runs at least once a second
 * meanwhile.  The tick's answer (give up) is for the deliveries to act on
 * through the stop flag; the wait ends when a delivery does.
 */
static void
wait_any(uint32_t mask)
{
	pthread_mutex_lock(&lock);
	for (;;)
	{
		bool		busy = false;
		struct timespec ts;

		for (int i = 0; i < nlanes; i++)
		{
			if ((mask & (1u << i)) && lanes[i].in_flight)
			{
				if (lanes[i].job_done)
				{
					pthread_mutex_unlock(&lock);
					return;
				}
				busy = true;
			}
		}
		if (!busy)
			break;
		pthread_mutex_unlock(&lock);
		if (cfg.tick)
			(void) cfg.tick(cfg.tick_arg);
		pthread_mutex_lock(&lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000 * 1000 * 1000)
		{
			ts.tv_sec++;
			ts.tv_nsec -= 1000 * 1000 * 1000;
		}
		pthread_cond_timedwait(&cond, &lock, &ts);
	}
	pthread_mutex_unlock(&lock);
}

bool
dispatch_poll(void)
{
	return collect_finished();
}

int
dispatch_wake_fd(void)
{
	return wake_pipe[0];
}

bool
dispatch_busy(void)
{
	for (int i = 0; i < nlanes; i++)
		if (lanes[i].in_flight)
			return true;
	return false;
}

int
dispatch_in_flight(void)
{
	int			n = 0;

	for (int i = 0; i < nlanes; i++)
		if (lanes[i].in_flight)
			n++;
	return n;
}

/* A lane free to take the filling batch now (its keys are in no lane). */
static Lane *
free_lane(void)
{
	for (int i = 0; i < nlanes; i++)
		if (!lanes[i].in_flight && lanes[i].batch.n == 0)
			return &lanes[i];
	return NULL;
}

bool
dispatch_can_send(void)
{
	if (nlanes == 0)
		return true;
	return free_lane() != NULL;
}

/* A delivery failed before: its lane keeps the rows, unconfirmed. */
static bool
lane_failed(void)
{
	for (int i = 0; i < nlanes; i++)
		if (!lanes[i].in_flight && lanes[i].batch.n > 0)
			return true;
	return false;
}

/* Hands the batch being filled to a free lane; the lane's empty one fills next. */
static void
send_filling(Lane *l)
{
	Batch		tmp = l->batch;

	l->batch = *filling;
	*filling = tmp;
	l->in_flight = true;
	pthread_mutex_lock(&lock);
	l->job_done = false;
	l->job_ready = true;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	/* Rows that waited only for room may fill the new batch at once. */
	promote_waiting();
}

/* Without lanes: the batch is delivered on the caller's thread, now. */
static bool
flush_here(void)
{
	if (filling->n == 0)
		return true;
	if (cfg.deliver(cfg.lane_ctx[0], filling->recs, filling->n, cfg.stop) != SHIP_OK)
		return false;
	rows_shipped += filling->n;
	bytes_shipped += filling->bytes;
	last_delivery = now_seconds();
	batch_clear(filling);
	return true;
}

bool
dispatch_flush(bool wait)
{
	Lane	   *l;

	if (nlanes == 0)
		return flush_here();

	if (!collect_finished() || lane_failed())
		return false;
	if (filling->n > 0)
	{
		while ((l = free_lane()) == NULL)
		{
			wait_any(~0u);
			if (!collect_finished() || lane_failed())
				return false;
		}
		send_filling(l);
	}
	if (!wait)
		return true;

	/*
	 * Everything: the batch being filled, the rows waiting, what is in
	 * flight.
	 */
	while (filling->n > 0 || nwaiting > 0 || dispatch_busy())
	{
		if (filling->n > 0 && (l = free_lane()) != NULL)
		{
			send_filling(l);
			continue;
		}
		if (!dispatch_busy())
		{
			/* Nothing in flight holds a key: waiting rows can move. */
			promote_waiting();
			Assert(filling->n > 0 || nwaiting == 0);
			if (filling->n == 0)
				break;
			continue;
		}
		wait_any(~0u);
		if (!collect_finished() || lane_failed())
			return false;
	}
	return true;
}

bool
dispatch_make_room(size_t record_bytes)
{
	Lane	   *l;

	if (nlanes == 0)
		return dispatch_fits(record_bytes) || flush_here();
	for (;;)
	{
		if (!collect_finished() || lane_failed())
			return false;
		if (dispatch_fits(record_bytes) && nwaiting < waiting_max &&
			waiting_bytes + record_bytes <= WAITING_BATCHES * max_bytes)
			return true;

		/*
		 * A batch that is full, or rows waiting to the limit: send what can
		 * go.
		 */
		if (filling->n > 0 && (l = free_lane()) != NULL)
		{
			send_filling(l);
			continue;
		}
		if (!dispatch_busy())
		{
			promote_waiting();
			if (filling->n == 0)
				return true;	/* nothing held: the row fits */
			continue;
		}
		wait_any(~0u);
	}
}

/* The oldest unacknowledged row's safe LSN and commit time, if any is held. */
static bool
oldest_held(uint64_t *safe_lsn, double *commit_time)
{
	bool		found = false;

	*safe_lsn = 0;
	*commit_time = 0;
	for (int i = -1; i < nlanes; i++)
	{
		const Batch *b = i < 0 ? filling : &lanes[i].batch;

		if (b->n == 0)
			continue;
		if (!found || b->min_safe_lsn < *safe_lsn)
			*safe_lsn = b->min_safe_lsn;
		if (!found || b->min_commit_time < *commit_time)
			*commit_time = b->min_commit_time;
		found = true;
	}
	/* Waiting rows are in arrival order: the first is the oldest. */
	if (nwaiting > 0)
	{
		if (!found || waiting[0].safe_lsn < *safe_lsn)
			*safe_lsn = waiting[0].safe_lsn;
		if (!found || waiting[0].commit_time < *commit_time)
			*commit_time = waiting[0].commit_time;
		found = true;
	}
	return found;
}

bool
dispatch_oldest_safe_lsn(uint64_t *lsn)
{
	double		t;

	return oldest_held(lsn, &t);
}

int
dispatch_held_rows(void)
{
	int			n = filling->n + nwaiting;

	for (int i = 0; i < nlanes; i++)
		n += lanes[i].batch.n;
	return n;
}

int
dispatch_waiting_rows(void)
{
	return nwaiting;
}

uint64_t
dispatch_key_waits(void)
{
	return key_waits;
}

uint64_t
dispatch_rows_shipped(void)
{
	return rows_shipped;
}

uint64_t
dispatch_held_bytes(void)
{
	uint64_t	n = filling->bytes + waiting_bytes;

	for (int i = 0; i < nlanes; i++)
		n += lanes[i].batch.bytes;
	return n;
}

double
dispatch_oldest_commit_time(void)
{
	uint64_t	lsn;
	double		t;

	return oldest_held(&lsn, &t) ? t : 0;
}

uint64_t
dispatch_bytes_shipped(void)
{
	return bytes_shipped;
}

double
dispatch_last_delivery(void)
{
	return last_delivery;
}


/* ----------------------------------------------------------------
 * What the batching targets (stdout, Kinesis) share: see target.h
 * ----------------------------------------------------------------
 */

bool
dispatch_target_poll(double now, int linger_ms)
{
	double		first_at;

	/* A delivery that finished: its rows may now be confirmed. */
	if (!dispatch_poll())
		return false;

	/*
	 * A partial batch waits no longer than the linger time, unless it cannot
	 * go at once (every lane busy, or one holds an earlier version of one of
	 * its keys): then it keeps filling and goes when it can, so the slower
	 * the calls, the more rows each carries.
	 */
	if (dispatch_filling(&first_at) > 0 && dispatch_can_send() &&
		now - first_at >= linger_ms / 1000.0)
		return dispatch_flush(false);
	return true;
}

double
dispatch_target_next_due(int linger_ms)
{
	double		first_at;

	if (dispatch_filling(&first_at) > 0 && dispatch_can_send())
		return first_at + linger_ms / 1000.0;
	return 0;
}

void
dispatch_target_stats(MetricsState *m, const char *name)
{
	TargetMetrics *tm = metrics_target(m, name);

	tm->rows = rows_shipped;
	tm->bytes = bytes_shipped;
	tm->oldest_pending_commit = dispatch_oldest_commit_time();
	tm->last_delivery = last_delivery;
	tm->held_rows = dispatch_held_rows();
	tm->held_bytes = dispatch_held_bytes();
	m->deliveries_in_flight += dispatch_in_flight();
}
