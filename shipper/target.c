/*-------------------------------------------------------------------------
 *
 * target.c
 *	  Setting up the delivery targets from the options, the operations'
 *	  wrappers, and several targets at once (see target.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <time.h>

#include "aws_config.h"
#include "log.h"
#include "options.h"
#include "target.h"

/*
 * The credential chain, resolved once for every target.  Nothing found or
 * a malformed configuration: exit 2; a source that does not answer: exit 1
 * (a service manager may start the shipper again).
 */
static AwsCredentialProvider *
resolve_credentials(const char *region)
{
	AwsCredentialProvider *p;
	bool		config_error;
	char	   *err = aws_credentials_resolve(region, opts.verbosity > 0, &p, &config_error);
	AwsCredentials c;
	char		masked[32];

	if (err != NULL)
	{
		log_error("%s", err);
		if (config_error)
			log_error_hint("See \"AWS credentials\" in the README (/usr/share/doc/postgresql-15-fundrecs/README.md.gz from the package) for the order in which sources are tried.");
		free(err);
		exit(config_error ? 2 : 1);
	}
	if (opts.verbosity <= 0 && !opts.check_credentials)
		return p;

	memset(&c, 0, sizeof(c));
	aws_credentials_get(p, &c);
	aws_mask_key(c.access_key, masked, sizeof(masked));
	if (c.expiration > 0)
	{
		time_t		t = (time_t) c.expiration;
		struct tm	tm;
		char		until[32];

		gmtime_r(&t, &tm);
		strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
		log_info("AWS credentials from %s: access key %s, expire at %s",
				 aws_credentials_describe(p), masked, until);
	}
	else
		log_info("AWS credentials from %s: access key %s",
				 aws_credentials_describe(p), masked);
	if (opts.check_credentials)
	{
		/* For scripts, like aws configure list: no secret. */
		printf("method: %s\naccess_key: %s\n", aws_credentials_method(p), masked);
		if (c.expiration > 0)
			printf("expiration: %.0f\n", c.expiration);
	}
	aws_credentials_clear(&c);
	return p;
}

/* --check-credentials: say where the credentials come from, and exit. */
static void
check_credentials_and_exit(void)
{
	char	   *region = aws_resolve_region(opts.region);

	(void) resolve_credentials(region);
	if (region)
		printf("region: %s\n", region);
	free(region);
	exit(0);
}

/*
 * The registry of target kinds: --target names one, or several AWS ones
 * joined by commas.  Kinesis comes before S3: with both, a row over
 * Kinesis's record size limit is refused before S3 has buffered it, and
 * --endpoint-url is Kinesis's.
 */
static const TargetKind *const target_kinds[] = {
	&target_kind_stdout,
	&target_kind_kinesis,
	&target_kind_s3,
};

#define NKINDS lengthof(target_kinds)

static bool chosen[NKINDS];
static char chosen_names[128];

/* What the targets are given of the command line: read once, kept. */
static TargetConfig config;

static void
config_from_options(TargetConfig *c)
{
	c->batch_records = opts.batch_records;
	c->batch_bytes = opts.batch_bytes;
	c->max_buffer_bytes = opts.max_buffer_bytes;
	c->max_in_flight = opts.max_in_flight;
	c->linger_ms = opts.linger_ms;
	c->ca_file = opts.ca_file;
	c->request_timeout_ms = opts.request_timeout_ms;
	c->retry_timeout_s = opts.retry_timeout;
	c->verbose = opts.verbosity > 0;
	c->endpoint = opts.endpoint;
	c->stream = opts.stream;
	c->stream_arn = opts.stream_arn;
	c->aggregate = opts.aggregate;
	c->aggregate_bytes = opts.aggregate_bytes;
	c->kinesis_cbor = opts.kinesis_cbor;
	c->s3_url = opts.s3_url;
	c->s3_endpoint = opts.s3_endpoint;
	c->s3_addressing = opts.s3_addressing;
	c->gzip = opts.gzip;
	c->flush_bytes = opts.flush_bytes;
	c->flush_seconds = opts.flush_seconds;
}

void
target_check_options(void)
{
	char	   *list = pg_strdup(opts.target);
	char	   *save = NULL;
	int			nchosen = 0;
	bool		alone = false;

	for (char *name = strtok_r(list, ",", &save); name != NULL; name = strtok_r(NULL, ",", &save))
	{
		size_t		k;

		for (k = 0; k < NKINDS; k++)
			if (strcmp(name, target_kinds[k]->name) == 0)
				break;
		if (k == NKINDS)
			usage_error("invalid target \"%s\": use stdout, kinesis or s3 (AWS targets may be joined by commas: kinesis,s3)",
						opts.target);
		if (chosen[k])
			usage_error("invalid target \"%s\": a target is named twice", opts.target);
		chosen[k] = true;
		nchosen++;
		alone |= target_kinds[k]->alone;
	}
	if (nchosen == 0)
		usage_error("invalid target \"%s\": name one", opts.target);
	if (alone && nchosen > 1)
		usage_error("invalid target \"%s\": stdout cannot be combined with other targets", opts.target);
	free(list);
	config_from_options(&config);
	for (size_t k = 0; k < NKINDS; k++)
	{
		const char *problem = target_kinds[k]->check_options ?
		target_kinds[k]->check_options(&config, chosen[k]) : NULL;

		if (problem != NULL)
			usage_error("%s", problem);
		if (chosen[k])
		{
			if (chosen_names[0] != '\0')
				strlcat(chosen_names, ",", sizeof(chosen_names));
			strlcat(chosen_names, target_kinds[k]->name, sizeof(chosen_names));
		}
	}
}

const char *
target_chosen_names(void)
{
	return chosen_names;
}

Target *
target_create(StopFlag *abort, WaitTickFn tick, void *tick_arg,
			  AwsCredentialProvider **provider)
{
	TargetSettings ts;
	Target	   *parts[NKINDS];
	int			nparts = 0;
	char	   *region = NULL;
	bool		aws = false;

	if (opts.check_credentials)
		check_credentials_and_exit();
	memset(&ts, 0, sizeof(ts));
	ts.config = &config;
	ts.abort = abort;
	ts.tick = tick;
	ts.tick_arg = tick_arg;
	*provider = NULL;
	for (size_t k = 0; k < NKINDS; k++)
		aws |= chosen[k] && target_kinds[k]->aws;
	if (aws)
	{
		region = aws_resolve_region(opts.region);
		for (size_t k = 0; k < NKINDS && region == NULL; k++)
			if (chosen[k] && target_kinds[k]->region_hint)
				region = target_kinds[k]->region_hint(&config);
		if (region == NULL)
		{
			log_error("no AWS region specified");
			log_error_hint("Use --region, set AWS_REGION, or set a region in the AWS profile.");
			exit(2);
		}
		ts.region = region;
		ts.provider = *provider = resolve_credentials(region);
		ts.endpoint = config.endpoint;
	}
	for (size_t k = 0; k < NKINDS; k++)
	{
		if (!chosen[k])
			continue;
		parts[nparts++] = target_kinds[k]->create(&ts);
		if (target_kinds[k]->aws)
			ts.endpoint = NULL;
	}
	/* The targets keep copies. */
	free(region);
	return nparts == 1 ? parts[0] : target_multi_create(parts, nparts);
}

/* ----------------------------------------------------------------
 * The operations
 * ----------------------------------------------------------------
 */

const char *
target_name(Target *t)
{
	return t->ops->name;
}

ShipResult
target_check(Target *t, StopFlag *stop)
{
	return t->ops->check ? t->ops->check(t, stop) : SHIP_OK;
}

ShipResult
target_claim(Target *t, const char *system_id, const char *dbname, const char *slot,
			 StopFlag *stop)
{
	return t->ops->claim ? t->ops->claim(t, system_id, dbname, slot, stop) : SHIP_OK;
}

bool
target_keeps_loads(Target *t)
{
	return t->ops->forget_load != NULL;
}

ShipResult
target_forget_load(Target *t, uint64_t lsn, StopFlag *stop)
{
	return t->ops->forget_load ? t->ops->forget_load(t, lsn, stop) : SHIP_OK;
}

ShipResult
target_sweep_loads(Target *t, StopFlag *stop)
{
	return t->ops->sweep_loads ? t->ops->sweep_loads(t, stop) : SHIP_OK;
}

bool
target_add(Target *t, const TargetRow *row)
{
	return t->ops->add(t, row);
}

bool
target_poll(Target *t, double now)
{
	return t->ops->poll ? t->ops->poll(t, now) : true;
}

double
target_next_due(Target *t)
{
	return t->ops->next_due ? t->ops->next_due(t) : 0;
}

int
target_wake_fd(Target *t)
{
	return t->ops->wake_fd ? t->ops->wake_fd(t) : -1;
}

bool
target_flush(Target *t)
{
	return t->ops->flush ? t->ops->flush(t) : true;
}

bool
target_held_lsn(Target *t, uint64_t *lsn)
{
	return t->ops->held_lsn ? t->ops->held_lsn(t, lsn) : false;
}

int
target_held_rows(Target *t)
{
	return t->ops->held_rows ? t->ops->held_rows(t) : 0;
}

void
target_stats(Target *t, MetricsState *m)
{
	if (t->ops->stats)
		t->ops->stats(t, m);
}

void
target_summary(Target *t)
{
	if (t->ops->summary)
		t->ops->summary(t);
}

/* Frees a target and what it holds (at the end of main). */
void
target_destroy(Target *t)
{
	if (t != NULL)
		t->ops->destroy(t);
}

/* ----------------------------------------------------------------
 * Several targets at once (--target kinesis,s3): each row goes to each,
 * in turn; a row is held until every target has delivered it.
 * ----------------------------------------------------------------
 */

typedef struct Multi
{
	Target	  **parts;
	int			nparts;
	char		name[64];
} Multi;

#define FOR_PARTS(m, p) \
	for (Target **p = (m)->parts; p < (m)->parts + (m)->nparts; p++)

static ShipResult
multi_check(Target *t, StopFlag *stop)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
	{
		ShipResult	r = target_check(*p, stop);

		if (r != SHIP_OK)
			return r;
	}
	return SHIP_OK;
}

static ShipResult
multi_claim(Target *t, const char *system_id, const char *dbname, const char *slot,
			StopFlag *stop)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
	{
		ShipResult	r = target_claim(*p, system_id, dbname, slot, stop);

		if (r != SHIP_OK)
			return r;
	}
	return SHIP_OK;
}

static ShipResult
multi_forget_load(Target *t, uint64_t lsn, StopFlag *stop)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
	{
		ShipResult	r = target_forget_load(*p, lsn, stop);

		if (r != SHIP_OK)
			return r;
	}
	return SHIP_OK;
}

static ShipResult
multi_sweep_loads(Target *t, StopFlag *stop)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
	{
		ShipResult	r = target_sweep_loads(*p, stop);

		if (r != SHIP_OK)
			return r;
	}
	return SHIP_OK;
}

static bool
multi_add(Target *t, const TargetRow *row)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
		if (!target_add(*p, row))
		return false;
	return true;
}

static bool
multi_poll(Target *t, double now)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
		if (!target_poll(*p, now))
		return false;
	return true;
}

static double
multi_next_due(Target *t)
{
	Multi	   *m = t->priv;
	double		due = 0;

	FOR_PARTS(m, p)
	{
		double		d = target_next_due(*p);

		if (d > 0 && (due == 0 || d < due))
			due = d;
	}
	return due;
}

static int
multi_wake_fd(Target *t)
{
	Multi	   *m = t->priv;

	/* Only the batching targets deliver on threads of their own. */
	FOR_PARTS(m, p)
	{
		int			fd = target_wake_fd(*p);

		if (fd >= 0)
			return fd;
	}
	return -1;
}

static bool
multi_flush(Target *t)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
		if (!target_flush(*p))
		return false;
	return true;
}

static bool
multi_held_lsn(Target *t, uint64_t *lsn)
{
	Multi	   *m = t->priv;
	bool		found = false;

	FOR_PARTS(m, p)
	{
		uint64_t	l;

		if (target_held_lsn(*p, &l) && (!found || l < *lsn))
		{
			*lsn = l;
			found = true;
		}
	}
	return found;
}

static int
multi_held_rows(Target *t)
{
	Multi	   *m = t->priv;
	int			n = 0;

	FOR_PARTS(m, p)
		n += target_held_rows(*p);
	return n;
}

static void
multi_stats(Target *t, MetricsState *ms)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
		target_stats(*p, ms);
}

static void
multi_summary(Target *t)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
		target_summary(*p);
}

static void
multi_destroy(Target *t)
{
	Multi	   *m = t->priv;

	FOR_PARTS(m, p)
		target_destroy(*p);
	free(m->parts);
	free(m);
	free((TargetOps *) t->ops);
	free(t);
}

Target *
target_multi_create(Target **parts, int nparts)
{
	static const TargetOps ops = {
		.check = multi_check,
		.claim = multi_claim,
		.add = multi_add,
		.poll = multi_poll,
		.next_due = multi_next_due,
		.wake_fd = multi_wake_fd,
		.flush = multi_flush,
		.held_lsn = multi_held_lsn,
		.held_rows = multi_held_rows,
		.stats = multi_stats,
		.summary = multi_summary,
		.destroy = multi_destroy,
	};
	Target	   *t = pg_malloc0(sizeof(Target));
	Multi	   *m = pg_malloc0(sizeof(Multi));
	TargetOps  *o = pg_malloc(sizeof(TargetOps));

	m->parts = pg_malloc(sizeof(Target *) * nparts);
	memcpy(m->parts, parts, sizeof(Target *) * nparts);
	m->nparts = nparts;
	/* The name the logs and /metrics give, as --target spells it: kinesis,s3. */
	for (int i = 0; i < nparts; i++)
	{
		if (m->name[0] != '\0')
			strlcat(m->name, ",", sizeof(m->name));
		strlcat(m->name, target_name(parts[i]), sizeof(m->name));
	}
	*o = ops;
	o->name = m->name;
	/* Only when a part keeps loads is there a load to forget. */
	for (int i = 0; i < nparts; i++)
		if (target_keeps_loads(parts[i]))
		{
			o->forget_load = multi_forget_load;
			o->sweep_loads = multi_sweep_loads;
		}
	t->ops = o;
	t->priv = m;
	return t;
}
