/*-------------------------------------------------------------------------
 *
 * retry.c
 *	  Exponential backoff with "equal jitter" (half fixed, half random),
 *	  from 100 ms up to 5 s, with an overall deadline per batch.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <sys/time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "log.h"
#include "retry.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000

static WaitTickFn tick_fn = NULL;

void
set_wait_tick(WaitTickFn fn)
{
	tick_fn = fn;
}

bool
wait_tick(void)
{
	return tick_fn != NULL && tick_fn();
}

double
now_seconds(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

double
retry_deadline(int timeout_s)
{
	return timeout_s > 0 ? now_seconds() + timeout_s : 0;
}

long
retry_backoff_ms(int attempt)
{
	long		cap = (long) BACKOFF_BASE_MS << Min(attempt, 16);
	unsigned int r;

	if (cap > BACKOFF_CAP_MS)
		cap = BACKOFF_CAP_MS;
	if (RAND_bytes((unsigned char *) &r, sizeof(r)) != 1)
		r = (unsigned int) random();
	return cap / 2 + (long) (r % (unsigned int) (cap / 2 + 1));
}

/* Sleeps for the attempt's backoff, in slices so a stop is noticed. */
static void
backoff_sleep(int attempt, volatile sig_atomic_t *stop)
{
	long		ms = retry_backoff_ms(attempt);
	while (ms > 0 && !(stop && *stop) && !wait_tick())
	{
		long		slice = Min(ms, 100);

		usleep(slice * 1000);
		ms -= slice;
	}
}

int
retry_wait(const char *what, int attempt, double deadline, int timeout_s,
		   const char *problem, volatile sig_atomic_t *stop)
{
	if ((stop && *stop) || wait_tick())
		return RETRY_STOPPED;
	if (deadline > 0 && now_seconds() > deadline)
	{
		log_error("giving up on %s after %d attempts in %d s: %s",
					 what, attempt, timeout_s, problem);
		return RETRY_GIVE_UP;
	}
	if (attempt == 1 || attempt % 10 == 0)
		log_warning("%s; retrying (attempt %d)", problem, attempt + 1);
	else
		log_info("%s; retrying (attempt %d)", problem, attempt + 1);
	backoff_sleep(attempt, stop);
	if ((stop && *stop) || wait_tick())
		return RETRY_STOPPED;
	return RETRY_AGAIN;
}

ShipResult
retry_call(const char *what, int timeout_s, AttemptFn fn, void *arg,
		   volatile sig_atomic_t *stop)
{
	double		deadline = retry_deadline(timeout_s);
	int			failures = 0;

	for (int attempt = 1;; attempt++)
	{
		char	   *problem = NULL;
		CallOutcome outcome = fn(arg, attempt, &problem);
		int			r;

		switch (outcome)
		{
			case CALL_DONE:
				free(problem);
				return SHIP_OK;
			case CALL_FATAL:
				free(problem);
				return SHIP_FATAL;
			case CALL_AGAIN:
				free(problem);
				continue;
			case CALL_RETRY:
				break;
		}
		r = retry_wait(what, ++failures, deadline, timeout_s, problem ? problem : "", stop);
		free(problem);
		if (r != RETRY_AGAIN)
			return (ShipResult) r;
	}
}

/* Set by whichever thread met a permanent failure (see retry.h). */
static volatile sig_atomic_t permanent_failure = 0;

void
retry_note_permanent(void)
{
	permanent_failure = 1;
}

int
failure_exit_code(void)
{
	return permanent_failure ? EXIT_PERMANENT : 1;
}
