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

/* Registered once, before any delivery starts. */
static WaitTickFn tick_fn = NULL;
static void *tick_arg = NULL;

void
set_wait_tick(WaitTickFn fn, void *arg)
{
	tick_fn = fn;
	tick_arg = arg;
}

bool
wait_tick(void)
{
	return tick_fn != NULL && tick_fn(tick_arg);
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
backoff_sleep(int attempt, StopFlag *stop)
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
		   const char *problem, StopFlag *stop)
{
	if ((stop && *stop) || wait_tick())
		return RETRY_STOPPED;
	if (deadline > 0 && now_seconds() > deadline)
	{
		log_error("giving up on %s after %d attempts in %d s: %s",
				  what, attempt, timeout_s, problem);
		return RETRY_GIVE_UP;
	}
	{
		char		next[64];

		snprintf(next, sizeof(next), "retrying (attempt %d)", attempt + 1);
		retry_log(attempt, problem, next);
	}
	backoff_sleep(attempt, stop);
	if ((stop && *stop) || wait_tick())
		return RETRY_STOPPED;
	return RETRY_AGAIN;
}

ShipResult
retry_run(const char *what, const RetryPolicy *policy, AttemptFn fn, void *arg, StopFlag *stop)
{
	double		deadline = retry_deadline(policy->timeout_s);
	int			failures = 0;

	for (int attempt = 1;; attempt++)
	{
		char	   *problem = NULL;
		CallOutcome outcome = fn(arg, attempt, &problem);
		int			r;

		if (outcome == CALL_DONE || outcome == CALL_FATAL)
		{
			free(problem);
			return outcome == CALL_DONE ? SHIP_OK : SHIP_FATAL;
		}
		if (policy->max_attempts > 0 && attempt >= policy->max_attempts)
		{
			if (!policy->quiet)
				log_error("giving up on %s after %d attempts: %s", what, attempt,
						  problem ? problem : "");
			free(problem);
			return SHIP_FATAL;
		}
		if (outcome == CALL_AGAIN)
		{
			free(problem);
			continue;
		}
		if (policy->quiet)
		{
			free(problem);
			r = (stop && *stop) || wait_tick() ? RETRY_STOPPED : RETRY_AGAIN;
			if (r == RETRY_AGAIN && deadline > 0 && now_seconds() > deadline)
				return SHIP_FATAL;
			if (r == RETRY_AGAIN)
				backoff_sleep(++failures, stop);
		}
		else
		{
			r = retry_wait(what, ++failures, deadline, policy->timeout_s,
						   problem ? problem : "", stop);
			free(problem);
		}
		if (r == RETRY_AGAIN && (stop && *stop))
			r = RETRY_STOPPED;
		if (r != RETRY_AGAIN)
			return (ShipResult) r;
	}
}

ShipResult
retry_call(const char *what, int timeout_s, AttemptFn fn, void *arg, StopFlag *stop)
{
	RetryPolicy policy = {timeout_s, 0, false};

	return retry_run(what, &policy, fn, arg, stop);
}

void
retry_clock_reset(RetryClock *c)
{
	c->attempts = 0;
	c->failing_since = 0;
	c->not_before = 0;
}

bool
retry_clock_failed(RetryClock *c, double now, int timeout_s)
{
	if (c->failing_since == 0)
		c->failing_since = now;
	c->attempts++;
	c->not_before = now_seconds() + retry_backoff_ms(c->attempts) / 1000.0;
	return timeout_s <= 0 || now - c->failing_since <= timeout_s;
}

bool
retry_sleep_until(double when, StopFlag *stop)
{
	double		now;

	while ((now = now_seconds()) < when)
	{
		if ((stop && *stop) || wait_tick())
			return false;
		usleep(Min(100000, (useconds_t) ((when - now) * 1e6) + 1000));
	}
	return true;
}

void
retry_log(int retries, const char *problem, const char *what_next)
{
	if (retries == 1 || retries % 10 == 0)
		log_warning("%s; %s", problem, what_next);
	else
		log_info("%s; %s", problem, what_next);
}

/* Set by whichever thread met a permanent failure (see retry.h). */
static StopFlag permanent_failure = 0;

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
