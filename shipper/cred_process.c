/*-------------------------------------------------------------------------
 *
 * cred_process.c
 *	  Credentials from a profile's credential_process.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pqexpbuffer.h"
#include "retry.h"

#include "credentials_int.h"
#include "log.h"

/* ----------------------------------------------------------------
 * credential_process
 * ----------------------------------------------------------------
 */

/*
 * Runs the profile's credential_process with /bin/sh -c, reads at most
 * 64 kB of its standard output, kills it (its process group) after the
 * timeout.  Its standard error goes into the message when it fails.
 */
/*
 * The credential_process child running now (the leader of its own process
 * group), killed when the shipper exits: a hung one must not outlive it.
 */
static volatile pid_t process_child = 0;
static pthread_once_t process_child_once = PTHREAD_ONCE_INIT;

static void
kill_process_child(void)
{
	pid_t		pid = process_child;

	if (pid > 0)
	{
		kill(-pid, SIGKILL);
		/* Reaped here: no zombie left for whoever inherits it. */
		(void) waitpid(pid, NULL, 0);
	}
}

static void
register_process_child_cleanup(void)
{
	atexit(kill_process_child);
}

bool
cred_fetch_process(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	int			outp[2],
				errp[2];
	pid_t		pid;
	PQExpBufferData so,
				se;
	double		deadline = now_seconds() + p->process_timeout_s;
	bool		timed_out = false;
	int			status = 0;
	bool		ok = false;

	if (pipe(outp) < 0 || pipe(errp) < 0)
	{
		*err = psprintf("could not create a pipe: %m");
		return false;
	}
	pthread_once(&process_child_once, register_process_child_cleanup);
	pid = fork();
	if (pid < 0)
	{
		*err = psprintf("could not start credential_process: %m");
		return false;
	}
	if (pid > 0)
		process_child = pid;
	if (pid == 0)
	{
		setpgid(0, 0);
		dup2(outp[1], STDOUT_FILENO);
		dup2(errp[1], STDERR_FILENO);
		close(outp[0]);
		close(errp[0]);
		close(outp[1]);
		close(errp[1]);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", p->command, (char *) NULL);
		_exit(127);
	}
	close(outp[1]);
	close(errp[1]);
	initPQExpBuffer(&so);
	initPQExpBuffer(&se);
	{
		struct pollfd fds[2] = {{outp[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
		int			open_fds = 2;

		while (open_fds > 0)
		{
			double		left = deadline - now_seconds();
			int			r;

			if (left <= 0)
			{
				timed_out = true;
				break;
			}
			r = poll(fds, 2, (int) Min(left * 1000 + 1, 1000));
			if (r < 0 && errno != EINTR)
				break;
			for (int i = 0; i < 2; i++)
			{
				if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				{
					char		buf[4096];
					ssize_t		n = read(fds[i].fd, buf, sizeof(buf));
					PQExpBuffer b = i == 0 ? &so : &se;

					if (n <= 0)
					{
						close(fds[i].fd);
						fds[i].fd = -1;
						open_fds--;
					}
					else if (b->len < 65536)
						appendBinaryPQExpBuffer(b, buf, n);
				}
			}
		}
		for (int i = 0; i < 2; i++)
			if (fds[i].fd >= 0)
				close(fds[i].fd);
	}
	if (timed_out)
		kill(-pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	process_child = 0;

	while (se.len > 0 && (se.data[se.len - 1] == '\n' || se.data[se.len - 1] == '\r'))
		se.data[--se.len] = '\0';
	if (timed_out)
		*err = psprintf("credential_process of profile \"%s\" did not finish within %d s and was killed",
						p->profile, p->process_timeout_s);
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		*err = psprintf("credential_process of profile \"%s\" failed (%s %d)%s%.*s", p->profile,
						WIFEXITED(status) ? "exit code" : "signal",
						WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
						se.len ? ": " : "", (int) Min(se.len, 500), se.data);
	else if (aws_parse_credentials_json(so.data, so.len, "SessionToken", true, out, err))
		ok = true;
	else
	{
		char	   *inner = *err;

		*err = strncmp(inner, "not a JSON", 10) == 0 ?
			psprintf("credential_process of profile \"%s\" did not print a JSON object", p->profile) :
			psprintf("credential_process of profile \"%s\": %s", p->profile, inner);
		free(inner);
	}
	explicit_bzero(so.data, so.len);
	termPQExpBuffer(&so);
	termPQExpBuffer(&se);
	return ok;
}
