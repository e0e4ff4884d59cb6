/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  sd_notify(3)'s datagram protocol, written out (see notify.h): the
 *	  protocol is a few lines of text over an AF_UNIX datagram socket, and
 *	  stable, so the shipper does not need libsystemd for it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdarg.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"
#include "retry.h"

static int	sock = -1;
static struct sockaddr_un addr;
static socklen_t addrlen;
static double watchdog_every = 0;	/* seconds; 0: no watchdog */
static double last_watchdog = 0;
static double last_status = 0;
static bool ready_sent = false;

static void
send_message(const char *msg)
{
	if (sock < 0)
		return;
	if (sendto(sock, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *) &addr, addrlen) < 0)
		log_debug("could not notify systemd: %m");
}

void
notify_init(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	const char *usec = getenv("WATCHDOG_USEC");
	const char *pid = getenv("WATCHDOG_PID");
	size_t		len;

	if (path == NULL || path[0] == '\0')
		return;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path))
	{
		log_warning("NOTIFY_SOCKET \"%s\" is not a socket path; not notifying systemd", path);
		return;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path, len);
	if (path[0] == '@')
		addr.sun_path[0] = '\0';	/* abstract namespace */
	addrlen = offsetof(struct sockaddr_un, sun_path) + len;
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
	{
		log_warning("could not create a socket to notify systemd: %m");
		return;
	}
	/* The watchdog is ours unless it names another process. */
	if (usec != NULL && (pid == NULL || atol(pid) == (long) getpid()))
	{
		double		secs = strtod(usec, NULL) / 1e6;

		if (secs > 0)
			watchdog_every = secs / 2;
	}
}

void
notify_ready(const char *status)
{
	char		buf[512];

	if (sock < 0 || ready_sent)
		return;
	snprintf(buf, sizeof(buf), "READY=1\nSTATUS=%s", status);
	send_message(buf);
	ready_sent = true;
	last_status = now_seconds();
}

void
notify_status(bool force, const char *fmt,...)
{
	char		buf[512];
	va_list		ap;
	double		now;

	if (sock < 0)
		return;
	now = now_seconds();
	if (!force && now - last_status < 1.0)
		return;
	last_status = now;
	strlcpy(buf, "STATUS=", sizeof(buf));
	va_start(ap, fmt);
	vsnprintf(buf + 7, sizeof(buf) - 7, fmt, ap);
	va_end(ap);
	send_message(buf);
}

void
notify_watchdog(void)
{
	double		now;

	if (sock < 0 || watchdog_every <= 0)
		return;
	now = now_seconds();
	if (now - last_watchdog < watchdog_every)
		return;
	last_watchdog = now;
	send_message("WATCHDOG=1");
}

void
notify_stopping(void)
{
	send_message("STOPPING=1");
}
