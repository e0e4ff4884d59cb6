/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *	  The batcher and dispatcher (see dispatch.h).
 *
 * Kinesis deliveries run on a thread of their own, one batch at a time,
 * with the retry loops of kinesis.c unchanged: the thread owns the batch in
 * flight and the Kinesis target's connections; the main thread owns the
 * batch being filled and the replication connection.  They meet under one
 * mutex: a hand-off (a job) and a result.
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

typedef struct Batch
{
	ShipRecord *recs;
	int			n;
	size_t		bytes;			/* data + partition keys, as Kinesis counts */
	double		first_at;		/* when its first row arrived */
	/* partition keys in the batch: open addressing, indexes into recs */
	int		   *slots;
	int			nslots;
} Batch;

static DispatchTarget target;
static KinesisTarget *kinesis;
static int	capacity;
static size_t max_bytes;
static size_t aggregate_bytes;
static volatile sig_atomic_t *stop_flag;
static bool verbose;
static bool (*wait_fn) (void);

static Batch batches[2];
static Batch *filling = &batches[0];
static Batch *flight = &batches[1];	/* rows held until acknowledged */
static uint64_t rows_shipped = 0;
static uint64_t bytes_shipped = 0;
static double last_delivery = 0;
static KinesisTarget kinesis_stats;	/* counters copied after each delivery, under lock */

/* Shared with the delivery thread, under lock. */
static pthread_t thread;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool job_ready = false;	/* flight handed to the thread */
static bool job_done = false;	/* and delivered (or not: job_result) */
static ShipResult job_result;
static bool in_flight = false;	/* flight holds rows not yet collected */
static int	wake_pipe[2] = {-1, -1};	/* a byte per finished delivery */

static uint32_t
hash_string(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 16777619u;
	return h;
}

static void
batch_alloc(Batch *b, bool keyed)
{
	b->recs = pg_malloc0(sizeof(ShipRecord) * capacity);
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
	for (int i = 0; i < b->n; i++)
	{
		free(b->recs[i].data);
		free(b->recs[i].pkey);
	}
	b->n = 0;
	b->bytes = 0;
	if (b->slots)
		memset(b->slots, -1, sizeof(int) * b->nslots);
}

static ShipResult
deliver(Batch *b)
{
	if (target == DISPATCH_KINESIS_AGGREGATED)
		return kinesis_put_aggregated(kinesis, b->recs, b->n, aggregate_bytes, stop_flag);
	return kinesis_put_records(kinesis, b->recs, b->n, stop_flag);
}

static void *
delivery_main(void *arg)
{
	for (;;)
	{
		ShipResult	r;

		pthread_mutex_lock(&lock);
		while (!job_ready)
			pthread_cond_wait(&cond, &lock);
		job_ready = false;
		pthread_mutex_unlock(&lock);

		r = deliver(flight);

		pthread_mutex_lock(&lock);
		kinesis_stats = *kinesis;
		job_result = r;
		job_done = true;
		pthread_cond_broadcast(&cond);
		pthread_mutex_unlock(&lock);
		/* Wakes the main loop's select(); a full pipe already will. */
		(void) !write(wake_pipe[1], "x", 1);
	}
	return NULL;
}

void
dispatch_init(DispatchTarget t, KinesisTarget *k, int cap, size_t maxb, size_t aggb,
			  volatile sig_atomic_t *stop, bool (*tick) (void), bool verb)
{
	verbose = verb;
	target = t;
	kinesis = k;
	capacity = cap;
	max_bytes = maxb;
	aggregate_bytes = aggb;
	stop_flag = stop;
	wait_fn = tick;
	batch_alloc(&batches[0], t == DISPATCH_KINESIS);
	batch_alloc(&batches[1], t == DISPATCH_KINESIS);
	if (t != DISPATCH_STDOUT)
	{
		sigset_t	all,
					old;
		int			rc;

		if (pipe(wake_pipe) != 0 ||
			fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
			fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0)
		{
			log_error("could not create a pipe: %m");
			exit(1);
		}
		/* Signals are the main thread's: the handlers only set flags. */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		rc = pthread_create(&thread, NULL, delivery_main, NULL);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rc != 0)
		{
			log_error("could not start the delivery thread: %s", strerror(rc));
			exit(1);
		}
	}
}

bool
dispatch_has_key(const char *pkey)
{
	uint32_t	i;

	if (filling->slots == NULL)
		return false;
	i = hash_string(pkey) & (filling->nslots - 1);
	while (filling->slots[i] >= 0)
	{
		if (strcmp(filling->recs[filling->slots[i]].pkey, pkey) == 0)
			return true;
		i = (i + 1) & (filling->nslots - 1);
	}
	return false;
}

bool
dispatch_fits(size_t record_bytes)
{
	return filling->n < capacity && filling->bytes + record_bytes <= max_bytes;
}

void
dispatch_add(const char *row, size_t len, const char *pkey, uint64_t commit_lsn,
			 uint64_t safe_lsn, double commit_time)
{
	Batch	   *b = filling;
	ShipRecord *r = &b->recs[b->n];
	size_t		keylen = strlen(pkey);

	Assert(b->n < capacity);
	r->data = pg_malloc(len + 1);
	memcpy(r->data, row, len);
	r->data[len] = '\n';
	r->len = len + 1;
	r->pkey = pg_malloc(keylen + 1);
	memcpy(r->pkey, pkey, keylen + 1);
	r->commit_lsn = commit_lsn;
	r->safe_lsn = safe_lsn;
	r->commit_time = commit_time;
	if (b->slots != NULL)
	{
		uint32_t	i = hash_string(pkey) & (b->nslots - 1);

		while (b->slots[i] >= 0)
			i = (i + 1) & (b->nslots - 1);
		b->slots[i] = b->n;
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

/* Collects the delivery in flight once it is done; false on failure. */
static bool
collect(ShipResult r)
{
	char		buf[64];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
	in_flight = false;
	if (r != SHIP_OK)
	{
		if (r == SHIP_STOPPED)
			log_warning("stopping with %d rows unacknowledged; they will be shipped again on restart",
						   flight->n + filling->n);
		/* Kept: they bound what may be confirmed; nothing is sent again. */
		return false;
	}
	if (verbose)
		log_info("shipped %d rows (%zu bytes) up to commit %X/%X", flight->n, flight->bytes,
				 (uint32_t) (flight->recs[flight->n - 1].commit_lsn >> 32),
				 (uint32_t) flight->recs[flight->n - 1].commit_lsn);
	rows_shipped += flight->n;
	bytes_shipped += flight->bytes;
	last_delivery = now_seconds();
	batch_clear(flight);
	return true;
}

/*
 * Waits for the delivery in flight; the tick runs at least once a second
 * meanwhile.  The tick's answer (give up) is for the delivery to act on
 * through the stop flag; the wait ends when the delivery does.
 */
static bool
wait_delivery(void)
{
	ShipResult	r;

	if (!in_flight)
		return true;
	pthread_mutex_lock(&lock);
	while (!job_done)
	{
		struct timespec ts;

		pthread_mutex_unlock(&lock);
		if (wait_fn)
			(void) wait_fn();
		pthread_mutex_lock(&lock);
		if (job_done)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000 * 1000 * 1000)
		{
			ts.tv_sec++;
			ts.tv_nsec -= 1000 * 1000 * 1000;
		}
		pthread_cond_timedwait(&cond, &lock, &ts);
	}
	job_done = false;
	r = job_result;
	pthread_mutex_unlock(&lock);
	return collect(r);
}

bool
dispatch_poll(void)
{
	bool		done;
	ShipResult	r;

	if (!in_flight)
		return true;
	pthread_mutex_lock(&lock);
	done = job_done;
	if (done)
		job_done = false;
	r = job_result;
	pthread_mutex_unlock(&lock);
	return done ? collect(r) : true;
}

int
dispatch_wake_fd(void)
{
	return wake_pipe[0];
}

bool
dispatch_busy(void)
{
	return in_flight;
}

static bool
write_stdout(Batch *b)
{
	for (int i = 0; i < b->n; i++)
	{
		if (fwrite(b->recs[i].data, 1, b->recs[i].len, stdout) != b->recs[i].len)
		{
			log_error("could not write to standard output: %m");
			return false;
		}
	}
	if (fflush(stdout) != 0)
	{
		log_error("could not write to standard output: %m");
		return false;
	}
	return true;
}

bool
dispatch_flush(bool wait)
{
	Batch	   *tmp;

	if (!wait_delivery())
		return false;
	/* A delivery that failed before: its rows stay unconfirmed. */
	if (flight->n > 0)
		return false;
	if (filling->n == 0)
		return true;
	if (target == DISPATCH_STDOUT)
	{
		if (!write_stdout(filling))
			return false;
		rows_shipped += filling->n;
		bytes_shipped += filling->bytes;
		last_delivery = now_seconds();
		batch_clear(filling);
		return true;
	}

	/* The filled batch goes in flight; the emptied one fills next. */
	tmp = flight;
	flight = filling;
	filling = tmp;
	in_flight = true;
	pthread_mutex_lock(&lock);
	job_done = false;
	job_ready = true;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	return wait ? wait_delivery() : true;
}

bool
dispatch_oldest_safe_lsn(uint64_t *lsn)
{
	/* The batch in flight (or failed) holds the older rows. */
	if (flight->n > 0)
	{
		*lsn = flight->recs[0].safe_lsn;
		return true;
	}
	if (filling->n > 0)
	{
		*lsn = filling->recs[0].safe_lsn;
		return true;
	}
	return false;
}

int
dispatch_held_rows(void)
{
	return flight->n + filling->n;
}

uint64_t
dispatch_rows_shipped(void)
{
	return rows_shipped;
}

uint64_t
dispatch_held_bytes(void)
{
	return flight->bytes + filling->bytes;
}

double
dispatch_oldest_commit_time(void)
{
	if (flight->n > 0)
		return flight->recs[0].commit_time;
	if (filling->n > 0)
		return filling->recs[0].commit_time;
	return 0;
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
	if (kinesis == NULL)
		return;
	pthread_mutex_lock(&lock);
	*out = kinesis_stats;
	pthread_mutex_unlock(&lock);
}
