/*-------------------------------------------------------------------------
 *
 * notify.h
 *	  systemd's service notification protocol (sd_notify): one datagram per
 *	  message to the socket named by NOTIFY_SOCKET.  Without NOTIFY_SOCKET
 *	  (not started by systemd with Type=notify) every call does nothing.
 *
 *-------------------------------------------------------------------------
 */
#ifndef NOTIFY_H
#define NOTIFY_H

#include <stdbool.h>

/* Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. */
extern void notify_init(void);

/* READY=1, once, with a STATUS= line. */
extern void notify_ready(const char *status);

/* STATUS=..., at most once a second unless it changed meaning (force). */
extern void notify_status(bool force, const char *fmt,...) pg_attribute_printf(2, 3);

/* WATCHDOG=1 when half of WatchdogSec has passed since the last one. */
extern void notify_watchdog(void);

/* STOPPING=1. */
extern void notify_stopping(void);

#endif							/* NOTIFY_H */
