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

#include "common/hashfn.h"
#include "log.h"
#include "dispatch.h"
#include "retry.h"
#include "target.h"
#include "waitq.h"

typedef struct Lane
{
	struct Dispatcher *d;		/* its dispatcher */
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


#define WAITING_BATCHES 4		/* rows and bytes waiting at most, in batches */
#define LANE_KEY_COUNTS (1 << 16)	/* counters of the lanes' keys, by hash */

struct Dispatcher
{
	DispatchConfig cfg;			/* as dispatch_create was given it */
	int			capacity;
	size_t		max_bytes;

	/* the batch being filled, and the lanes (see the top of the file) */
	Batch		filling_batch;
	Batch	   *filling;
	Lane		lanes[DISPATCH_MAX_LANES];
	int			nlanes;

	/*
	 * How many keys of the lanes' batches have each hash (its low 16 bits): a
	 * key whose counter is 0 is in no lane, found without probing every
	 * lane's batch (most keys, most of the time).  The main thread's.
	 */
	uint32_t   *lane_keys;

	/* rows held back behind an earlier version of their key */
	WaitQueue	waiting;
	int			waiting_max;	/* rows held back at most: then reading waits */

	/* what was delivered */
	uint64_t	rows_shipped;
	uint64_t	bytes_shipped;
	double		last_delivery;
	bool		warned_stop;

	/* where the lanes' threads and the main thread meet */
	bool		quit;			/* under lock: the lanes' threads end */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int			wake_pipe[2];	/* a byte per finished delivery */
	uint32_t	finished;		/* deliveries finished (atomic: the lanes add) */
	uint32_t	finished_seen;	/* the main thread's last look at it */
};

/* PostgreSQL's hash_bytes: twelve bytes a round (FNV-1a took one). */
uint32_t
dispatch_key_hash(const char *pkey, size_t keylen)
{
	return hash_bytes((const unsigned char *) pkey, (int) keylen);
}

static ShipResult
deliver(Dispatcher *d, Lane *l)
{
	return d->cfg.deliver(l->ctx, l->batch.recs, l->batch.n, d->cfg.stop);
}

static void *
delivery_main(void *arg)
{
	Lane	   *l = (Lane *) arg;
	Dispatcher *d = l->d;

	for (;;)
	{
		ShipResult	r;

		pthread_mutex_lock(&d->lock);
		while (!l->job_ready && !d->quit)
			pthread_cond_wait(&d->cond, &d->lock);
		if (!l->job_ready)
		{
			pthread_mutex_unlock(&d->lock);
			break;
		}
		l->job_ready = false;
		pthread_mutex_unlock(&d->lock);

		r = deliver(d, l);

		pthread_mutex_lock(&d->lock);
		l->result = r;
		l->job_done = true;
		pthread_cond_broadcast(&d->cond);
		__atomic_add_fetch(&d->finished, 1, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&d->lock);
		/* Wakes the main loop's select(); a full pipe already will. */
		(void) !write(d->wake_pipe[1], "x", 1);
	}
	return NULL;
}

Dispatcher *
dispatch_create(const DispatchConfig *config)
{
	Dispatcher *d = pg_malloc0(sizeof(Dispatcher));

	d->cfg = *config;
	d->filling = &d->filling_batch;
	d->wake_pipe[0] = d->wake_pipe[1] = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	d->capacity = d->cfg.capacity;
	d->max_bytes = d->cfg.max_bytes;
	d->waiting_max = WAITING_BATCHES * d->capacity;
	batch_alloc(&d->filling_batch, d->capacity, d->cfg.keyed);
	if (d->cfg.lanes > 0 && d->cfg.keyed)
		d->lane_keys = pg_malloc0(sizeof(uint32_t) * LANE_KEY_COUNTS);
	if (d->cfg.lanes > 0)
	{
		sigset_t	all,
					old;

		Assert(d->cfg.lanes <= DISPATCH_MAX_LANES);
		if (pipe(d->wake_pipe) != 0 ||
			fcntl(d->wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
			fcntl(d->wake_pipe[1], F_SETFL, O_NONBLOCK) != 0)
		{
			log_error("could not create a pipe: %m");
			exit(1);
		}
		d->nlanes = d->cfg.lanes;
		for (int i = 0; i < d->nlanes; i++)
		{
			Lane	   *l = &d->lanes[i];
			int			rc;

			batch_alloc(&l->batch, d->capacity, true);
			l->d = d;
			l->ctx = d->cfg.lane_ctx[i];
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
	return d;
}

/*
 * Ends the lanes' threads and frees the dispatcher with the rows it holds
 * (they were not confirmed: they come again after a restart).  A lane
 * still delivering, which only a stop that gave up waiting leaves, cannot
 * be ended: the dispatcher is then left to the process's exit, false.
 */
bool
dispatch_destroy(Dispatcher *d)
{
	bool		busy = false;

	pthread_mutex_lock(&d->lock);
	for (int i = 0; i < d->nlanes; i++)
	{
		Lane	   *l = &d->lanes[i];

		if (l->job_ready || (l->in_flight && !l->job_done))
			busy = true;
	}
	if (!busy)
	{
		d->quit = true;
		pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->lock);
	if (busy)
		return false;
	for (int i = 0; i < d->nlanes; i++)
	{
		pthread_join(d->lanes[i].thread, NULL);
		batch_free(&d->lanes[i].batch);
	}
	batch_free(&d->filling_batch);
	waitq_free(&d->waiting);
	free(d->lane_keys);
	if (d->wake_pipe[0] >= 0)
	{
		close(d->wake_pipe[0]);
		close(d->wake_pipe[1]);
	}
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d);
	return true;
}

bool
dispatch_fits(Dispatcher *d, size_t record_bytes)
{
	return batch_fits(d->filling, record_bytes, d->max_bytes);
}

/* Is an earlier version of the key in a lane's batch (in flight or failed)? */
static bool
key_in_lanes(Dispatcher *d, const char *pkey, uint32_t hash)
{
	if (d->lane_keys != NULL && d->lane_keys[hash & (LANE_KEY_COUNTS - 1)] == 0)
		return false;
	for (int l = 0; l < d->nlanes; l++)
		if (batch_has_key(&d->lanes[l].batch, pkey, hash))
			return true;
	return false;
}

/* A row with this key may not join the batch being filled now. */
static bool
key_blocked(Dispatcher *d, const char *pkey, uint32_t hash)
{
	return key_in_lanes(d, pkey, hash) ||
		(d->cfg.distinct_keys && batch_has_key(d->filling, pkey, hash));
}

static bool
key_blocked_cb(void *arg, const char *pkey, uint32_t hash)
{
	return key_blocked((Dispatcher *) arg, pkey, hash);
}

/* Waiting rows whose keys are free join the batch being filled. */
static void
promote_waiting(Dispatcher *d)
{
	waitq_promote(&d->waiting, d->filling, d->max_bytes, key_blocked_cb, d);
}

void
dispatch_add(Dispatcher *d, const char *row, size_t len, const char *pkey, size_t keylen, uint32_t hash,
			 uint64_t commit_lsn, uint64_t safe_lsn, double commit_time)
{
	/* Behind an earlier version of its key, or behind rows of it that wait. */
	if (d->cfg.keyed &&
		(waitq_has_key(&d->waiting, pkey, keylen, hash) ||
		 key_blocked(d, pkey, hash)))
	{
		waitq_push(&d->waiting, row, len, pkey, keylen, hash, commit_lsn, safe_lsn, commit_time);
		return;
	}
	batch_push(d->filling, row, len, pkey, keylen, hash, commit_lsn, safe_lsn, commit_time,
			   d->filling->n == 0 ? now_seconds() : d->filling->first_at);
}

int
dispatch_filling(Dispatcher *d, double *first_at)
{
	if (first_at)
		*first_at = d->filling->first_at;
	return d->filling->n;
}

/* Collects a lane's finished delivery; false on failure. */
static bool
collect(Dispatcher *d, Lane *l, ShipResult r)
{
	Batch	   *b = &l->batch;

	l->in_flight = false;
	if (r != SHIP_OK)
	{
		if (r == SHIP_STOPPED && !d->warned_stop)
		{
			d->warned_stop = true;
			log_warning("stopping with %d rows unacknowledged; they will be shipped again on restart",
						dispatch_held_rows(d));
		}
		/* Kept: they bound what may be confirmed; nothing is sent again. */
		return false;
	}
	if (d->cfg.verbose)
		log_info("shipped %d rows (%zu bytes) up to commit %X/%X", b->n, b->bytes,
				 LSN_FORMAT_ARGS(b->recs[b->n - 1].commit_lsn));
	d->rows_shipped += b->n;
	d->bytes_shipped += b->bytes;
	d->last_delivery = now_seconds();
	if (d->lane_keys != NULL)
		batch_count_keys(b, d->lane_keys, LANE_KEY_COUNTS - 1, -1);
	batch_clear(b);
	/* Its keys are free: rows waiting for them may go next. */
	promote_waiting(d);
	return true;
}

/*
 * Collects every finished delivery without waiting; false when one failed
 * or was stopped (the others are still collected).
 */
static bool
collect_finished(Dispatcher *d)
{
	bool		ok = true;
	char		buf[64];
	uint32_t	finished;

	/*
	 * Nothing finished since the last look: nothing to collect, without a
	 * system call or the lock (this runs for every row read).  A delivery
	 * counts itself after it marks its lane done, so one counted here is seen
	 * done below.
	 */
	finished = __atomic_load_n(&d->finished, __ATOMIC_ACQUIRE);
	if (finished == d->finished_seen)
		return true;
	d->finished_seen = finished;
	while (d->wake_pipe[0] >= 0 && read(d->wake_pipe[0], buf, sizeof(buf)) > 0)
		;
	for (int i = 0; i < d->nlanes; i++)
	{
		Lane	   *l = &d->lanes[i];
		bool		done;
		ShipResult	r;

		if (!l->in_flight)
			continue;
		pthread_mutex_lock(&d->lock);
		done = l->job_done;
		if (done)
			l->job_done = false;
		r = l->result;
		pthread_mutex_unlock(&d->lock);
		if (done && !collect(d, l, r))
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
wait_any(Dispatcher *d, uint32_t mask)
{
	pthread_mutex_lock(&d->lock);
	for (;;)
	{
		bool		busy = false;
		struct timespec ts;

		for (int i = 0; i < d->nlanes; i++)
		{
			if ((mask & (1u << i)) && d->lanes[i].in_flight)
			{
				if (d->lanes[i].job_done)
				{
					pthread_mutex_unlock(&d->lock);
					return;
				}
				busy = true;
			}
		}
		if (!busy)
			break;
		pthread_mutex_unlock(&d->lock);
		if (d->cfg.tick)
			(void) d->cfg.tick(d->cfg.tick_arg);
		pthread_mutex_lock(&d->lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000 * 1000 * 1000)
		{
			ts.tv_sec++;
			ts.tv_nsec -= 1000 * 1000 * 1000;
		}
		pthread_cond_timedwait(&d->cond, &d->lock, &ts);
	}
	pthread_mutex_unlock(&d->lock);
}

bool
dispatch_poll(Dispatcher *d)
{
	return collect_finished(d);
}

int
dispatch_wake_fd(Dispatcher *d)
{
	return d->wake_pipe[0];
}

bool
dispatch_busy(Dispatcher *d)
{
	for (int i = 0; i < d->nlanes; i++)
		if (d->lanes[i].in_flight)
			return true;
	return false;
}

int
dispatch_in_flight(Dispatcher *d)
{
	int			n = 0;

	for (int i = 0; i < d->nlanes; i++)
		if (d->lanes[i].in_flight)
			n++;
	return n;
}

/* A lane free to take the filling batch now (its keys are in no lane). */
static Lane *
free_lane(Dispatcher *d)
{
	for (int i = 0; i < d->nlanes; i++)
		if (!d->lanes[i].in_flight && d->lanes[i].batch.n == 0)
			return &d->lanes[i];
	return NULL;
}

bool
dispatch_can_send(Dispatcher *d)
{
	if (d->nlanes == 0)
		return true;
	return free_lane(d) != NULL;
}

/* A delivery failed before: its lane keeps the rows, unconfirmed. */
static bool
lane_failed(Dispatcher *d)
{
	for (int i = 0; i < d->nlanes; i++)
		if (!d->lanes[i].in_flight && d->lanes[i].batch.n > 0)
			return true;
	return false;
}

/* Hands the batch being filled to a free lane; the lane's empty one fills next. */
static void
send_filling(Dispatcher *d, Lane *l)
{
	Batch		tmp = l->batch;

	l->batch = *d->filling;
	*d->filling = tmp;
	if (d->lane_keys != NULL)
		batch_count_keys(&l->batch, d->lane_keys, LANE_KEY_COUNTS - 1, 1);
	l->in_flight = true;
	pthread_mutex_lock(&d->lock);
	l->job_done = false;
	l->job_ready = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	/* Rows that waited only for room may fill the new batch at once. */
	promote_waiting(d);
}

/* Without lanes: the batch is delivered on the caller's thread, now. */
static bool
flush_here(Dispatcher *d)
{
	if (d->filling->n == 0)
		return true;
	if (d->cfg.deliver(d->cfg.lane_ctx[0], d->filling->recs, d->filling->n, d->cfg.stop) != SHIP_OK)
		return false;
	d->rows_shipped += d->filling->n;
	d->bytes_shipped += d->filling->bytes;
	d->last_delivery = now_seconds();
	batch_clear(d->filling);
	return true;
}

bool
dispatch_flush(Dispatcher *d, bool wait)
{
	Lane	   *l;

	if (d->nlanes == 0)
		return flush_here(d);

	if (!collect_finished(d) || lane_failed(d))
		return false;
	if (d->filling->n > 0)
	{
		while ((l = free_lane(d)) == NULL)
		{
			wait_any(d, ~0u);
			if (!collect_finished(d) || lane_failed(d))
				return false;
		}
		send_filling(d, l);
	}
	if (!wait)
		return true;

	/*
	 * Everything: the batch being filled, the rows waiting, what is in
	 * flight.
	 */
	while (d->filling->n > 0 || d->waiting.n > 0 || dispatch_busy(d))
	{
		if (d->filling->n > 0 && (l = free_lane(d)) != NULL)
		{
			send_filling(d, l);
			continue;
		}
		if (!dispatch_busy(d))
		{
			/* Nothing in flight holds a key: waiting rows can move. */
			promote_waiting(d);
			Assert(d->filling->n > 0 || d->waiting.n == 0);
			if (d->filling->n == 0)
				break;
			continue;
		}
		wait_any(d, ~0u);
		if (!collect_finished(d) || lane_failed(d))
			return false;
	}
	return true;
}

bool
dispatch_make_room(Dispatcher *d, size_t record_bytes)
{
	Lane	   *l;

	if (d->nlanes == 0)
		return dispatch_fits(d, record_bytes) || flush_here(d);
	for (;;)
	{
		if (!collect_finished(d) || lane_failed(d))
			return false;
		if (dispatch_fits(d, record_bytes) && d->waiting.n < d->waiting_max &&
			d->waiting.bytes + record_bytes <= WAITING_BATCHES * d->max_bytes)
			return true;

		/*
		 * A batch that is full, or rows waiting to the limit: send what can
		 * go.
		 */
		if (d->filling->n > 0 && (l = free_lane(d)) != NULL)
		{
			send_filling(d, l);
			continue;
		}
		if (!dispatch_busy(d))
		{
			promote_waiting(d);
			if (d->filling->n == 0)
				return true;	/* nothing held: the row fits */
			continue;
		}
		wait_any(d, ~0u);
	}
}

/* The oldest unacknowledged row's safe LSN and commit time, if any is held. */
static bool
oldest_held(Dispatcher *d, uint64_t *safe_lsn, double *commit_time)
{
	bool		found = false;

	*safe_lsn = 0;
	*commit_time = 0;
	for (int i = -1; i < d->nlanes; i++)
	{
		const Batch *b = i < 0 ? d->filling : &d->lanes[i].batch;

		if (b->n == 0)
			continue;
		if (!found || b->min_safe_lsn < *safe_lsn)
			*safe_lsn = b->min_safe_lsn;
		if (!found || b->min_commit_time < *commit_time)
			*commit_time = b->min_commit_time;
		found = true;
	}
	/* Waiting rows are in arrival order: the first is the oldest. */
	if (d->waiting.n > 0)
	{
		if (!found || d->waiting.rows[0].safe_lsn < *safe_lsn)
			*safe_lsn = d->waiting.rows[0].safe_lsn;
		if (!found || d->waiting.rows[0].commit_time < *commit_time)
			*commit_time = d->waiting.rows[0].commit_time;
		found = true;
	}
	return found;
}

bool
dispatch_oldest_safe_lsn(Dispatcher *d, uint64_t *lsn)
{
	double		t;

	return oldest_held(d, lsn, &t);
}

int
dispatch_held_rows(Dispatcher *d)
{
	int			n = d->filling->n + d->waiting.n;

	for (int i = 0; i < d->nlanes; i++)
		n += d->lanes[i].batch.n;
	return n;
}

int
dispatch_waiting_rows(Dispatcher *d)
{
	return d->waiting.n;
}

uint64_t
dispatch_key_waits(Dispatcher *d)
{
	return d->waiting.pushed;
}

uint64_t
dispatch_rows_shipped(Dispatcher *d)
{
	return d->rows_shipped;
}

uint64_t
dispatch_held_bytes(Dispatcher *d)
{
	uint64_t	n = d->filling->bytes + d->waiting.bytes;

	for (int i = 0; i < d->nlanes; i++)
		n += d->lanes[i].batch.bytes;
	return n;
}

double
dispatch_oldest_commit_time(Dispatcher *d)
{
	uint64_t	lsn;
	double		t;

	return oldest_held(d, &lsn, &t) ? t : 0;
}

uint64_t
dispatch_bytes_shipped(Dispatcher *d)
{
	return d->bytes_shipped;
}

double
dispatch_last_delivery(Dispatcher *d)
{
	return d->last_delivery;
}


/* ----------------------------------------------------------------
 * What the batching targets (stdout, Kinesis) share: their TargetOps
 * ----------------------------------------------------------------
 */

bool
dispatch_target_poll(Target *t, double now)
{
	Dispatcher *d = t->dispatcher;
	double		first_at;

	/* A delivery that finished: its rows may now be confirmed. */
	if (!dispatch_poll(d))
		return false;

	/*
	 * A partial batch waits no longer than the linger time, unless it cannot
	 * go at once (every lane busy, or one holds an earlier version of one of
	 * its keys): then it keeps filling and goes when it can, so the slower
	 * the calls, the more rows each carries.
	 */
	if (dispatch_filling(d, &first_at) > 0 && dispatch_can_send(d) &&
		now - first_at >= d->cfg.linger_ms / 1000.0)
		return dispatch_flush(d, false);
	return true;
}

double
dispatch_target_next_due(Target *t)
{
	Dispatcher *d = t->dispatcher;
	double		first_at;

	if (dispatch_filling(d, &first_at) > 0 && dispatch_can_send(d))
		return first_at + d->cfg.linger_ms / 1000.0;
	return 0;
}

int
dispatch_target_wake_fd(Target *t)
{
	Dispatcher *d = t->dispatcher;

	return dispatch_busy(d) ? dispatch_wake_fd(d) : -1;
}

bool
dispatch_target_flush(Target *t)
{
	return dispatch_flush(t->dispatcher, true);
}

bool
dispatch_target_held_lsn(Target *t, uint64_t *lsn)
{
	return dispatch_oldest_safe_lsn(t->dispatcher, lsn);
}

int
dispatch_target_held_rows(Target *t)
{
	return dispatch_held_rows(t->dispatcher);
}

void
dispatch_target_stats(Target *t, MetricsState *m)
{
	Dispatcher *d = t->dispatcher;
	TargetMetrics *tm = metrics_target(m, t->ops->name);

	tm->rows = d->rows_shipped;
	tm->bytes = d->bytes_shipped;
	tm->oldest_pending_commit = dispatch_oldest_commit_time(d);
	tm->last_delivery = d->last_delivery;
	tm->held_rows = dispatch_held_rows(d);
	tm->held_bytes = dispatch_held_bytes(d);
	m->deliveries_in_flight += dispatch_in_flight(d);
}

/* A target whose only state is its dispatcher (standard output). */
void
dispatch_target_destroy(Target *t)
{
	if (dispatch_destroy(t->dispatcher))
		free(t);
}
