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
#include <stdbool.h>

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
typedef bool (*WaitTickFn) (void);
extern void set_wait_tick(WaitTickFn fn);
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
					   const char *problem, volatile sig_atomic_t *stop);

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

/*
 * Calls fn until it is done, backing off after each failure, giving up
 * after timeout_s seconds (0: never), stopping on *stop or the tick.
 */
extern ShipResult retry_call(const char *what, int timeout_s, AttemptFn fn, void *arg,
							 volatile sig_atomic_t *stop);

#endif							/* RETRY_H */
