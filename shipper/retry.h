/*-------------------------------------------------------------------------
 *
 * retry.h
 *	  Exponential backoff with jitter, shared by the Kinesis and S3 targets.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RETRY_H
#define RETRY_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

/*
 * A flag that stops waits: set by a signal handler or the main thread and
 * read by the delivery threads too, so a C11 atomic (lock-free, hence
 * async-signal-safe) rather than a volatile sig_atomic_t.
 */
typedef atomic_int StopFlag;

/* How a delivery to a target ended. */
typedef enum ShipResult
{
	SHIP_OK,
	SHIP_FATAL,					/* a non-retryable error, already reported */
	SHIP_STOPPED				/* stop was requested while retrying */
} ShipResult;

/* What retry_wait() tells the caller. */
#define RETRY_AGAIN SHIP_OK
#define RETRY_GIVE_UP SHIP_FATAL
#define RETRY_STOPPED SHIP_STOPPED

extern double now_seconds(void);

/*
 * Exit statuses: 1 a runtime failure (systemd starts the shipper again),
 * 2 a usage or configuration error, 3 a permanent failure that starting
 * again cannot fix and would only repeat (an S3 bucket or Kinesis stream
 * that does not exist, access denied, an invalidated slot): with
 * --target kinesis,s3 each start sent the held rows to Kinesis again.
 * The unit's RestartPreventExitStatus= names 2 and 3.
 */
#define EXIT_PERMANENT 3
extern void retry_note_permanent(void);
extern int	failure_exit_code(void);

/*
 * The tick: called at least once a second during every wait of a delivery
 * (an HTTP request in flight, a backoff sleep).  The shipper uses it to
 * keep its replication connection alive and to decide when a stop aborts
 * what is in flight; it returns true to abort the wait.
 */
typedef bool (*WaitTickFn) (void *arg);
extern void set_wait_tick(WaitTickFn fn, void *arg);
extern bool wait_tick(void);

/* The backoff of an attempt: exponential, equal jitter, 100 ms to 5 s. */
extern long retry_backoff_ms(int attempt);

/* now + timeout, or 0 (no deadline) when timeout_s is 0. */
extern double retry_deadline(int timeout_s);

/*
 * After a retryable failure: past the deadline, reports and returns
 * RETRY_GIVE_UP; else logs the problem and sleeps for attempt's backoff,
 * returning RETRY_STOPPED if a stop was requested meanwhile.
 */
extern int	retry_wait(const char *what, int attempt, double deadline, int timeout_s,
					   const char *problem, StopFlag *stop);

/*
 * The retry driver shared by every AWS call: an attempt function says
 * whether the call is done, failed for good (reported), must be retried
 * after a backoff (with *problem, to log), or may go again at once.
 * attempt counts the calls from 1.
 */
typedef enum CallOutcome
{
	CALL_DONE,
	CALL_RETRY,
	CALL_AGAIN,
	CALL_FATAL
} CallOutcome;

typedef CallOutcome (*AttemptFn) (void *arg, int attempt, char **problem);

/* How long retry_run keeps trying, and whether it says so. */
typedef struct RetryPolicy
{
	int			timeout_s;		/* give up after this long; 0: never */
	int			max_attempts;	/* give up after this many calls; 0: no limit */
	bool		quiet;			/* no line per retry or at the end: the caller
								 * reports */
} RetryPolicy;

/*
 * Calls fn until it is done, backing off after each CALL_RETRY, giving up
 * as the policy says (SHIP_FATAL, logged unless quiet), stopping on *stop
 * or the tick.  The Kinesis and S3 calls retry for --retry-timeout; the
 * credential sources (STS, the metadata endpoints) a few times, quietly,
 * reporting the last problem themselves.
 */
extern ShipResult retry_run(const char *what, const RetryPolicy *policy, AttemptFn fn,
							void *arg, StopFlag *stop);

/*
 * One key's retries when several go on at once, each backing off on its
 * own (the shards of an aggregated delivery): retry_run's backoff and
 * give-up rules, kept per key.
 */
typedef struct RetryClock
{
	int			attempts;		/* failures in a row */
	double		failing_since;	/* when the first of them happened; 0: none */
	double		not_before;		/* the next attempt not before this */
} RetryClock;

/* A success: the clock starts again. */
extern void retry_clock_reset(RetryClock *c);

/*
 * A failure at now: schedules the next attempt after a backoff.  False
 * once timeout_s (0: never) has passed since the first failure in a row.
 */
extern bool retry_clock_failed(RetryClock *c, double now, int timeout_s);

/*
 * Sleeps until when, in slices, the tick running; false when a stop or
 * the tick ended the wait.
 */
extern bool retry_sleep_until(double when, StopFlag *stop);

/* A retried problem, logged as retry_run does: a warning at the first and every tenth. */
extern void retry_log(int retries, const char *problem, const char *what_next);

/* retry_run for timeout_s seconds, logging each retry. */
extern ShipResult retry_call(const char *what, int timeout_s, AttemptFn fn, void *arg,
							 StopFlag *stop);

#endif							/* RETRY_H */
