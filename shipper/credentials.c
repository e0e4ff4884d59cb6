/*-------------------------------------------------------------------------
 *
 * credentials.c
 *	  A provider of AWS credentials and its refresh (see credentials.h).
 *
 * A provider holds a source's credentials and refreshes them: ahead of
 * their expiry, in a thread of its own, through the source's fetch
 * function (cred_chain.c chose the source and set it), so that this file
 * knows no source.  Their retries go through retry_run (retry.h), as
 * every AWS call does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "aws_config.h"
#include "credentials_int.h"
#include "log.h"
#include "retry.h"

static const char *const method_names[] = {
	"env", "assume-role", "assume-role-with-web-identity", "shared-credentials-file",
	"custom-process", "config-file", "container-role", "iam-role"
};


static void
schedule(AwsCredentialProvider *p, double now)
{
	double		lifetime;
	double		window;

	if (p->cur.expiration <= 0)
	{
		p->refresh_at = 0;
		return;
	}
	/* The SDKs refresh a few minutes ahead, with jitter; short lives at half. */
	lifetime = p->cur.expiration - now;
	window = 300 + (double) (random() % 60000) / 1000.0;
	if (window > lifetime / 2)
		window = lifetime / 2;
	p->refresh_at = p->cur.expiration - window;
}

/* A provider's first credentials (the chain fetched them): in use from now. */
void
cred_provider_start(AwsCredentialProvider *p, AwsCredentials *c)
{
	p->cur = *c;
	p->have = true;
	p->obtained_at = now_seconds();
	schedule(p, p->obtained_at);
}

/* Set by aws_credentials_shutdown: waits for a refresh end at once. */
static volatile bool shutting_down = false;

/* Keys that may still be used for a while (10 s at least). */
static bool
usable(AwsCredentialProvider *p, double now)
{
	return p->have && !p->invalid && (p->cur.expiration <= 0 || p->cur.expiration - now > 10);
}

/*
 * Fetches credentials (without the lock: the current keys stay usable by
 * every other thread meanwhile) and installs them, or counts the failure.
 * The caller set p->refreshing.
 */
static void
refresh_now(AwsCredentialProvider *p)
{
	AwsCredentials c;
	char	   *err = NULL;
	bool		config_error = false;
	bool		ok;
	double		now;

	memset(&c, 0, sizeof(c));
	ok = p->fetch(p, &c, &err, &config_error);
	now = now_seconds();
	pthread_mutex_lock(&p->lock);
	if (ok)
	{
		char		masked[32];
		char		until[32] = "";

		if (p->verbose)
		{
			aws_mask_key(c.access_key, masked, sizeof(masked));
			if (c.expiration > 0)
				cred_format_time(c.expiration, until, sizeof(until));
			log_info("AWS credentials refreshed from %s: access key %s%s%s",
					 p->description, masked, until[0] ? ", expire at " : "", until);
		}
		aws_credentials_clear(&p->cur);
		p->cur = c;
		p->have = true;
		p->invalid = false;
		p->failures = 0;
		p->next_try = 0;
		p->obtained_at = now;
		schedule(p, now);
	}
	else
	{
		double		wait = Min(60.0, (double) (1 << Min(p->failures, 6)));
		char		until[32];

		p->failures++;
		p->next_try = now + wait;
		if (p->have && p->cur.expiration > now && !p->invalid)
		{
			cred_format_time(p->cur.expiration, until, sizeof(until));
			log_warning("could not refresh AWS credentials from %s: %s; the current ones stay in use until they expire at %s",
						p->description, err, until);
		}
		else
			log_warning("could not refresh AWS credentials from %s: %s; trying again in %.0f s",
						p->description, err, wait);
		free(err);
	}
	p->refreshing = false;
	pthread_cond_broadcast(&p->refreshed);
	pthread_mutex_unlock(&p->lock);
}

static void *
refresh_thread(void *arg)
{
	refresh_now((AwsCredentialProvider *) arg);
	return NULL;
}

/*
 * The credentials to sign with.  A refresh that is due while the current
 * keys are still good runs in a thread of its own, so that a slow or hung
 * source (credential_process, STS, instance metadata) never holds up a
 * delivery; only a caller with no usable keys waits for one, and not past
 * aws_credentials_shutdown().
 */
void
aws_credentials_get(AwsCredentialProvider *p, AwsCredentials *snapshot)
{
	double		now = now_seconds();

	pthread_mutex_lock(&p->lock);
	if (!p->refreshing && now >= p->next_try &&
		(!p->have || p->invalid || (p->refresh_at > 0 && now >= p->refresh_at)))
	{
		bool		in_background;
		pthread_t	thread;
		pthread_attr_t attr;

		/*
		 * Always in a thread of its own: a caller with no usable keys waits
		 * below, where a shutdown can end the wait; the fetch itself (a
		 * credential_process may take a minute) cannot be interrupted.
		 */
		p->refreshing = true;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		in_background = pthread_create(&thread, &attr, refresh_thread, p) == 0;
		pthread_attr_destroy(&attr);
		if (!in_background)
		{
			pthread_mutex_unlock(&p->lock);
			refresh_now(p);
			pthread_mutex_lock(&p->lock);
		}
	}
	while (p->refreshing && !usable(p, now_seconds()) && !shutting_down)
	{
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 200 * 1000 * 1000;
		if (until.tv_nsec >= 1000 * 1000 * 1000)
		{
			until.tv_sec++;
			until.tv_nsec -= 1000 * 1000 * 1000;
		}
		pthread_cond_timedwait(&p->refreshed, &p->lock, &until);
	}
	aws_credentials_clear(snapshot);
	if (p->have)
		cred_copy(&p->cur, snapshot);
	pthread_mutex_unlock(&p->lock);
}

void
aws_credentials_shutdown(void)
{
	shutting_down = true;
}

void
aws_credentials_invalidate(AwsCredentialProvider *p)
{
	pthread_mutex_lock(&p->lock);
	if (!p->invalid)
		p->next_try = 0;
	p->invalid = true;
	pthread_mutex_unlock(&p->lock);
	/* An assumed role's source may be what expired. */
	if (p->source)
		aws_credentials_invalidate(p->source);
}

void
aws_credentials_reload(AwsCredentialProvider *p)
{
	aws_credentials_invalidate(p);
}

const char *
aws_credentials_method(const AwsCredentialProvider *p)
{
	return method_names[p->kind];
}

double
aws_credentials_expiration(AwsCredentialProvider *p, int *failures)
{
	double		expiration;

	pthread_mutex_lock(&p->lock);
	expiration = p->have ? p->cur.expiration : 0;
	*failures = p->failures;
	pthread_mutex_unlock(&p->lock);
	return expiration;
}

bool
aws_credentials_refreshable(const AwsCredentialProvider *p)
{
	return p->kind != SRC_ENV && p->kind != SRC_SHARED_FILE && p->kind != SRC_CONFIG_FILE;
}

const char *
aws_credentials_describe(const AwsCredentialProvider *p)
{
	return p->description;
}
