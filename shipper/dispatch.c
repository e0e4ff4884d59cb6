/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *	  The batcher and dispatcher (see dispatch.h).
 *
 * Kinesis deliveries run on delivery threads ("lanes"), one batch per lane
 * at a time, with the retry loops of kinesis.c unchanged: a lane's thread
 * owns the batch it delivers and its own Kinesis target (connections,
 * shard map, counters); the main thread owns the batch being filled and
 * the replication connection.  They meet under one mutex: a hand-off (a
 * job) and a result per lane.
 *
 * The order rule across lanes: a batch may go only once no lane holds a
 * row with one of its partition keys.  Each row added to the batch being
 * filled is looked up in the lanes' batches; a hit marks that lane as one
 * the batch must wait for (conflicts), cleared when the lane's batch is
 * collected.  So a later version of a key is never in flight beside an
 * earlier one, and an earlier one's retries all end before it goes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "dispatch.h"
#include "retry.h"

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
	/* partition keys in the batch: open addressing, indexes into recs */
	int		   *slots;
	int			nslots;
} Batch;

typedef struct Lane
{
	Batch		batch;			/* the rows it delivers (or failed to) */
	KinesisTarget *k;			/* its own connections and shard map */
	pthread_t	thread;
	/* under lock */
	bool		job_ready;		/* batch handed to the thread */
	bool		job_done;		/* and delivered (or not: result) */
	ShipResult	result;
	KinesisTarget stats;		/* counters copied after each delivery */
	/* the main thread's */
	bool		in_flight;		/* batch holds rows not yet collected */
} Lane;

static DispatchTarget target;
static int	capacity;
static size_t max_bytes;
static size_t aggregate_bytes;
static volatile sig_atomic_t *stop_flag;
static bool verbose;
static bool (*wait_fn) (void);

static Batch filling_batch;
static Batch *filling = &filling_batch;
static uint32_t conflicts = 0;	/* lanes holding a key of the filling batch */
static Lane lanes[DISPATCH_MAX_LANES];
static int	nlanes = 0;
static uint64_t key_waits = 0;	/* batches held back by a lane with a key */
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
	if (target == DISPATCH_KINESIS_AGGREGATED)
		return kinesis_put_aggregated(l->k, l->batch.recs, l->batch.n, aggregate_bytes, stop_flag);
	return kinesis_put_records(l->k, l->batch.recs, l->batch.n, stop_flag);
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
		l->stats = *l->k;
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
dispatch_init(DispatchTarget t, KinesisTarget *k, int nlane, int cap, size_t maxb, size_t aggb,
			  volatile sig_atomic_t *stop, bool (*tick) (void), bool verb)
{
	verbose = verb;
	target = t;
	capacity = cap;
	max_bytes = maxb;
	aggregate_bytes = aggb;
	stop_flag = stop;
	wait_fn = tick;
	batch_alloc(&filling_batch, t != DISPATCH_STDOUT);
	if (t != DISPATCH_STDOUT)
	{
		sigset_t	all,
					old;
		int			calls = k->max_in_flight;

		Assert(nlane >= 1 && nlane <= DISPATCH_MAX_LANES && nlane <= calls);
		if (pipe(wake_pipe) != 0 ||
			fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
			fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0)
		{
			log_error("could not create a pipe: %m");
			exit(1);
		}
		nlanes = nlane;
		for (int i = 0; i < nlanes; i++)
		{
			Lane	   *l = &lanes[i];
			/* --max-in-flight calls in all, shared out between the lanes */
			int			share = calls / nlanes + (i < calls % nlanes ? 1 : 0);
			int			rc;

			batch_alloc(&l->batch, true);
			if (i == 0)
			{
				/* The first lane uses the target itself, with its share of the pool. */
				l->k = k;
				k->max_in_flight = share;
			}
			else
			{
				l->k = pg_malloc(sizeof(KinesisTarget));
				kinesis_clone(l->k, k, share);
			}
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
dispatch_has_key(const char *pkey, uint32_t hash)
{
	return batch_has_key(filling, pkey, hash);
}

bool
dispatch_fits(size_t record_bytes)
{
	return filling->n < capacity && filling->bytes + record_bytes <= max_bytes;
}

void
dispatch_add(const char *row, size_t len, const char *pkey, size_t keylen, uint32_t hash,
			 uint64_t commit_lsn, uint64_t safe_lsn, double commit_time)
{
	Batch	   *b = filling;
	ShipRecord *r = &b->recs[b->n];

	Assert(b->n < capacity);
	/* Standard output needs no key: no room for it. */
	r->data = batch_bytes(b, len + 1 + (b->slots != NULL ? keylen + 1 : 0));
	memcpy(r->data, row, len);
	r->data[len] = '\n';
	r->len = len + 1;
	if (b->slots != NULL)
	{
		r->pkey = r->data + len + 1;
		memcpy(r->pkey, pkey, keylen + 1);
	}
	else
		r->pkey = NULL;
	r->commit_lsn = commit_lsn;
	r->safe_lsn = safe_lsn;
	r->commit_time = commit_time;
	if (b->slots != NULL)
	{
		uint32_t	h = hash;
		uint32_t	i = h & (b->nslots - 1);

		while (b->slots[i] >= 0)
			i = (i + 1) & (b->nslots - 1);
		b->slots[i] = b->n;

		/* An earlier version of the key still held by a lane: wait for it. */
		for (int l = 0; l < nlanes; l++)
		{
			if (!(conflicts & (1u << l)) && batch_has_key(&lanes[l].batch, pkey, h))
			{
				if (conflicts == 0)
					key_waits++;
				conflicts |= 1u << l;
			}
		}
	}
	if (b->n == 0)
		b->first_at = now_seconds();
	b->n++;
	b->bytes += r->len + keylen;
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
	if (verbose)
		log_info("shipped %d rows (%zu bytes) up to commit %X/%X", b->n, b->bytes,
				 (uint32_t) (b->recs[b->n - 1].commit_lsn >> 32),
				 (uint32_t) b->recs[b->n - 1].commit_lsn);
	rows_shipped += b->n;
	bytes_shipped += b->bytes;
	last_delivery = now_seconds();
	batch_clear(b);
	conflicts &= ~(1u << (l - lanes));
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
		if (wait_fn)
			(void) wait_fn();
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

/* Waits for every delivery in flight; false when one failed. */
static bool
wait_all(void)
{
	while (dispatch_busy())
	{
		wait_any(~0u);
		if (!collect_finished())
			return false;
	}
	return true;
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

/* A lane free to take the filling batch now: none busy with its keys. */
static Lane *
free_lane(void)
{
	if (conflicts != 0)
		return NULL;
	for (int i = 0; i < nlanes; i++)
		if (!lanes[i].in_flight && lanes[i].batch.n == 0)
			return &lanes[i];
	return NULL;
}

bool
dispatch_can_send(void)
{
	if (target == DISPATCH_STDOUT)
		return true;
	return free_lane() != NULL;
}

/* Rows per writev() call (Linux's IOV_MAX is 1024). */
#define STDOUT_IOV 512

/*
 * The batch's rows to standard output with writev(), straight from the
 * batch: stdio's buffer is 4 kB on /dev/null or a pipe, which made a
 * copy and a write() per 4 kB.  A short write resumes where it stopped.
 */
static bool
write_stdout(Batch *b)
{
	struct iovec iov[STDOUT_IOV];
	int			i = 0;
	size_t		off = 0;		/* bytes of recs[i] already written */

	/* Whatever stdio holds goes first. */
	if (fflush(stdout) != 0)
	{
		log_error("could not write to standard output: %m");
		return false;
	}
	while (i < b->n)
	{
		int			cnt = 0;
		ssize_t		w;

		for (int j = i; j < b->n && cnt < STDOUT_IOV; j++, cnt++)
		{
			size_t		skip = j == i ? off : 0;

			iov[cnt].iov_base = b->recs[j].data + skip;
			iov[cnt].iov_len = b->recs[j].len - skip;
		}
		w = writev(STDOUT_FILENO, iov, cnt);
		if (w < 0)
		{
			if (errno == EINTR)
				continue;
			log_error("could not write to standard output: %m");
			return false;
		}
		while (w > 0)
		{
			size_t		left = b->recs[i].len - off;

			if ((size_t) w >= left)
			{
				w -= left;
				i++;
				off = 0;
			}
			else
			{
				off += w;
				w = 0;
			}
		}
	}
	return true;
}

bool
dispatch_flush(bool wait)
{
	Lane	   *l;
	Batch		tmp;

	if (target == DISPATCH_STDOUT)
	{
		if (filling->n == 0)
			return true;
		if (!write_stdout(filling))
			return false;
		rows_shipped += filling->n;
		bytes_shipped += filling->bytes;
		last_delivery = now_seconds();
		batch_clear(filling);
		return true;
	}

	if (!collect_finished())
		return false;
	/* A delivery that failed before: its rows stay unconfirmed. */
	for (int i = 0; i < nlanes; i++)
		if (!lanes[i].in_flight && lanes[i].batch.n > 0)
			return false;
	if (filling->n == 0)
		return wait ? wait_all() : true;

	/* The lanes holding its keys finish first, then one must be free. */
	while ((l = free_lane()) == NULL)
	{
		wait_any(conflicts != 0 ? conflicts : ~0u);
		if (!collect_finished())
			return false;
	}

	/* The filled batch goes to the lane; the lane's empty one fills next. */
	tmp = l->batch;
	l->batch = *filling;
	*filling = tmp;
	conflicts = 0;				/* the new batch is empty */
	l->in_flight = true;
	pthread_mutex_lock(&lock);
	l->job_done = false;
	l->job_ready = true;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	return wait ? wait_all() : true;
}

/*
 * The batch holding the oldest unacknowledged row, or NULL: rows come in
 * order, so it is the held batch whose first row is the oldest.
 */
static const Batch *
oldest_batch(void)
{
	const Batch *oldest = filling->n > 0 ? filling : NULL;

	for (int i = 0; i < nlanes; i++)
	{
		const Batch *b = &lanes[i].batch;

		if (b->n > 0 && (oldest == NULL || b->recs[0].safe_lsn < oldest->recs[0].safe_lsn))
			oldest = b;
	}
	return oldest;
}

bool
dispatch_oldest_safe_lsn(uint64_t *lsn)
{
	const Batch *b = oldest_batch();

	if (b == NULL)
		return false;
	*lsn = b->recs[0].safe_lsn;
	return true;
}

int
dispatch_held_rows(void)
{
	int			n = filling->n;

	for (int i = 0; i < nlanes; i++)
		n += lanes[i].batch.n;
	return n;
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
	uint64_t	n = filling->bytes;

	for (int i = 0; i < nlanes; i++)
		n += lanes[i].batch.bytes;
	return n;
}

double
dispatch_oldest_commit_time(void)
{
	const Batch *b = oldest_batch();

	return b != NULL ? b->recs[0].commit_time : 0;
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

void
dispatch_kinesis_stats(KinesisTarget *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nlanes; i++)
	{
		const KinesisTarget *s = &lanes[i].stats;

		out->rows_aggregated += s->rows_aggregated;
		out->aggregates_resent += s->aggregates_resent;
		out->throttled_records += s->throttled_records;
		out->records_sent += s->records_sent;
		out->calls += s->calls;
		out->retried_calls += s->retried_calls;
		out->retried_records += s->retried_records;
	}
	pthread_mutex_unlock(&lock);
}
