/*-------------------------------------------------------------------------
 *
 * s3_lake.c
 *	  The lake's policy on top of the S3 client (s3.c): rows are held per
 *	  route and day, gzip-compressed as they arrive, and written at each
 *	  flush as one object per route and day.
 *
 *	  Every change once: object names carry the stream positions of their
 *	  first and last rows (commit LSN and ordinal in the transaction, as
 *	  zero-padded hex, so names sort in stream order), never the run or the
 *	  clock.  The objects of one route and day are written one after the
 *	  other, in order, so the last position among them is where that route
 *	  and day stand; after a crash, the first row of each route and day
 *	  lists that day's objects (ListObjectsV2) and rows at or before that
 *	  position are not written again.  Nothing is assumed across days: a
 *	  server whose clock steps back commits later transactions on earlier
 *	  days.
 *
 *	  A PUT carries its row count (x-amz-meta-fundrecs-rows); the last
 *	  object of each route and day, the only one a crash can have cut, is
 *	  read back before its position is trusted, and deleted when it is
 *	  short: a store that keeps a PUT cut by a crash (s3rver does; S3
 *	  never) loses no row.  The prefix belongs to one slot
 *	  (PREFIX/_fundrecs/owner.json), checked at each flush; an initial load
 *	  that did not finish has its objects deleted before it is done again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <time.h>

#include "log.h"
#include "pqexpbuffer.h"
#include "s3_lake.h"

char *
s3_lake_init(S3Lake *s, AwsCredentialProvider *provider, const char *url,
			 const char *endpoint, const char *region, const char *addressing, bool gzip,
			 const char *ca_file, long timeout_ms, int retry_timeout_s)
{
	memset(s, 0, sizeof(*s));
	s->gzip = gzip;
	return s3_client_init(&s->client, provider, url, endpoint, region, addressing, ca_file,
						  timeout_ms, retry_timeout_s);
}

/* A listing of PREFIX/_fundrecs/, the lake's own folder: an object or two. */
ShipResult
s3_lake_check_bucket(S3Lake *s, StopFlag *stop)
{
	char	   *base = s3_prefix_slash(&s->client);
	char	   *marker = psprintf("%s_fundrecs/", base);
	ShipResult	result = s3_check_bucket(&s->client, marker, stop);

	free(marker);
	free(base);
	return result;
}

bool
s3_lake_has_rows(const S3Lake *s)
{
	return s->nobjects > 0;
}

static void
deflate_into(S3Object *o, const char *data, size_t len, int flush)
{
	unsigned char out[65536];

	o->z.next_in = (unsigned char *) data;
	o->z.avail_in = (uInt) len;
	do
	{
		o->z.next_out = out;
		o->z.avail_out = sizeof(out);
		if (deflate(&o->z, flush) == Z_STREAM_ERROR)
		{
			log_error("could not compress an S3 object");
			exit(1);
		}
		appendBinaryPQExpBuffer(&o->body, (char *) out, sizeof(out) - o->z.avail_out);
	} while (o->z.avail_out == 0 || (flush == Z_FINISH && o->z.avail_in > 0));
}

/* Positions in order: the commit LSN, then the ordinal. */
static int
position_cmp(S3Position a, S3Position b)
{
	if (a.lsn != b.lsn)
		return a.lsn < b.lsn ? -1 : 1;
	return a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0;
}

#define POSITION_HEX 25			/* 16 hex digits, '.', 8 hex digits */

static void
format_position(char *out, S3Position p)
{
	snprintf(out, POSITION_HEX + 1, "%08X%08X.%08X", LSN_FORMAT_ARGS(p.lsn),
			 p.seq);
}

static bool
parse_hex(const char *s, int digits, uint64_t *out)
{
	uint64_t	v = 0;

	for (int i = 0; i < digits; i++)
	{
		char		c = s[i];

		if (c >= '0' && c <= '9')
			v = v * 16 + (c - '0');
		else if (c >= 'A' && c <= 'F')
			v = v * 16 + (c - 'A' + 10);
		else
			return false;
	}
	*out = v;
	return true;
}

/*
 * The positions in an object's name (its last path component):
 * FIRST-LAST.json or FIRST-LAST.json.gz.  Names of other forms (objects of
 * other tools, or of earlier versions that named objects after the run)
 * are not ours to read: false.
 */
static bool
parse_object_name(const char *key, S3Position *first, S3Position *last)
{
	const char *name = strrchr(key, '/');
	uint64_t	v;

	name = name ? name + 1 : key;
	if (strlen(name) < 2 * POSITION_HEX + 1 + 5 || name[16] != '.' || name[POSITION_HEX] != '-' ||
		name[POSITION_HEX + 1 + 16] != '.')
		return false;
	if (strcmp(name + 2 * POSITION_HEX + 1, ".json") != 0 &&
		strcmp(name + 2 * POSITION_HEX + 1, ".json.gz") != 0)
		return false;
	if (!parse_hex(name, 16, &first->lsn) || !parse_hex(name + 17, 8, &v))
		return false;
	first->seq = (uint32_t) v;
	if (!parse_hex(name + POSITION_HEX + 1, 16, &last->lsn) ||
		!parse_hex(name + POSITION_HEX + 1 + 17, 8, &v))
		return false;
	last->seq = (uint32_t) v;
	return true;
}

/* A YYYY-MM-DD day moved by days (today's, with day NULL). */
static void
day_add(const char *day, int days, char out[11])
{
	struct tm	tm;
	time_t		t = time(NULL);

	memset(&tm, 0, sizeof(tm));
	if (day != NULL)
	{
		if (sscanf(day, "%4d-%2d-%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3)
		{
			strlcpy(out, "0000-00-00", 11);
			return;
		}
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		tm.tm_hour = 12;
		t = timegm(&tm);
	}
	t += (time_t) days * 24 * 3600;
	gmtime_r(&t, &tm);
	strftime(out, 11, "%Y-%m-%d", &tm);
}

/* An object of one route and day, as the listing shows it. */
typedef struct DayObject
{
	char	   *key;
	long long	size;
	S3Position	last;
} DayObject;

typedef struct DayListing
{
	DayObject  *objects;
	int			n;
	int			max;
} DayListing;

static void
collect_day_object(const char *key, long long size, void *arg)
{
	DayListing *l = arg;
	S3Position	first;
	S3Position	last;

	if (!parse_object_name(key, &first, &last))
		return;
	if (l->n == l->max)
	{
		l->max = Max(16, l->max * 2);
		l->objects = pg_realloc(l->objects, sizeof(DayObject) * l->max);
	}
	l->objects[l->n].key = pg_strdup(key);
	l->objects[l->n].size = size;
	l->objects[l->n].last = last;
	l->n++;
}

/* The lines of an object's body (gunzipped when its name ends in .gz); -1 when the gzip stream is cut or bad. */
static long long
object_lines(const char *key, const char *body, size_t len, bool *ends_with_newline)
{
	long long	lines = 0;
	char		last = '\0';

	if (strlen(key) > 3 && strcmp(key + strlen(key) - 3, ".gz") == 0)
	{
		z_stream	z;
		unsigned char out[65536];
		int			rc = Z_OK;

		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, 15 + 16) != Z_OK)
			return -1;
		z.next_in = (unsigned char *) body;
		z.avail_in = (uInt) len;
		while (rc == Z_OK)
		{
			z.next_out = out;
			z.avail_out = sizeof(out);
			rc = inflate(&z, Z_NO_FLUSH);
			for (unsigned char *c = out; c < z.next_out; c++)
				lines += (*c == '\n');
			if (z.next_out > out)
				last = (char) z.next_out[-1];
			if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0)
				rc = Z_BUF_ERROR;	/* the input ended before the stream */
		}
		inflateEnd(&z);
		/* Whole: the stream's end, its CRC and length checked, nothing after. */
		if (rc != Z_STREAM_END || z.avail_in != 0)
			return -1;
	}
	else
	{
		for (size_t i = 0; i < len; i++)
			lines += (body[i] == '\n');
		if (len > 0)
			last = body[len - 1];
	}
	*ends_with_newline = last == '\n';
	return lines;
}

/*
 * Is the object whole?  It is read back: not empty, its gzip stream (when
 * compressed) ends where it should, its last row ends with a newline, and
 * it has the rows its x-amz-meta-fundrecs-rows says (objects of versions
 * before 1.6 have no such header).  *why says what is wrong.
 */
static ShipResult
object_is_whole(S3Lake *s, const DayObject *o, bool *whole, char **why, StopFlag *stop)
{
	HttpResponse resp;
	ShipResult	result;

	*whole = true;
	*why = NULL;
	if (o->size == 0)
	{
		*whole = false;
		*why = pg_strdup("it is empty");
		return SHIP_OK;
	}
	http_response_init(&resp);
	result = s3_get(&s->client, o->key, false, &resp, stop);
	if (result == SHIP_OK && resp.status == 404)
	{
		*whole = false;
		*why = pg_strdup("it is listed but cannot be read");
	}
	else if (result == SHIP_OK)
	{
		char	   *meta = http_response_header(&s->client.http, "x-amz-meta-fundrecs-rows");
		bool		newline = false;
		long long	lines = object_lines(o->key, resp.body.data, resp.body.len, &newline);

		if (lines < 0)
			*why = psprintf("its gzip stream is cut short or damaged (%zu bytes)", resp.body.len);
		else if (resp.body.len == 0 || lines == 0)
			*why = pg_strdup("it holds no row");
		else if (!newline)
			*why = psprintf("its last row is cut short (%lld rows and a part)", lines);
		else if (meta != NULL && atoll(meta) != lines)
			*why = psprintf("it holds %lld of its %s rows", lines, meta);
		*whole = *why == NULL;
		free(meta);
	}
	http_response_free(&resp);
	return result;
}

/*
 * Reads where a route stands on one day: the last position among the
 * objects of PREFIX/<route>/dt=<dt>/, after its last object is read back
 * whole (a crash cuts at most the PUT in flight, which is the last of its
 * route and day).  One cut short is deleted, and the one before it read
 * back in turn: its rows come again from the slot.
 */
static ShipResult
read_day_mark(S3Lake *s, S3RouteMark *m, StopFlag *stop)
{
	char	   *base = s3_prefix_slash(&s->client);
	char	   *prefix = psprintf("%s%s/dt=%s/", base, m->route, m->dt);
	DayListing	l;
	ShipResult	result;

	memset(&l, 0, sizeof(l));
	result = s3_list(&s->client, prefix, collect_day_object, &l, stop);
	while (result == SHIP_OK && l.n > 0)
	{
		int			newest = 0;
		bool		whole;
		char	   *why;

		for (int i = 1; i < l.n; i++)
			if (position_cmp(l.objects[i].last, l.objects[newest].last) > 0)
				newest = i;
		result = object_is_whole(s, &l.objects[newest], &whole, &why, stop);
		if (result == SHIP_OK && whole)
		{
			m->found = true;
			m->last = l.objects[newest].last;
			break;
		}
		if (result != SHIP_OK)
			break;
		log_warning("s3://%s/%s was cut short (%s): deleting it; its rows are written again",
					s->client.bucket, l.objects[newest].key, why);
		free(why);
		result = s3_delete(&s->client, l.objects[newest].key, stop);
		if (result == SHIP_OK)
			s->objects_torn++;
		free(l.objects[newest].key);
		l.objects[newest] = l.objects[--l.n];
	}
	for (int i = 0; i < l.n; i++)
		free(l.objects[i].key);
	free(l.objects);
	free(prefix);
	free(base);
	return result;
}

/*
 * Where a route stands in the bucket on one day, listed at the first row of
 * that route and day in a run (read_day_mark), then kept up to date as
 * objects are written.
 */
static S3RouteMark *
route_mark(S3Lake *s, const char *route, const char *dt, StopFlag *stop)
{
	S3RouteMark *m;

	/* Rows come in runs of one route and day: the last one first. */
	if (s->last_mark < s->nmarks && strcmp(s->marks[s->last_mark].dt, dt) == 0 &&
		strcmp(s->marks[s->last_mark].route, route) == 0)
		return &s->marks[s->last_mark];
	for (int i = 0; i < s->nmarks; i++)
		if (strcmp(s->marks[i].dt, dt) == 0 && strcmp(s->marks[i].route, route) == 0)
		{
			s->last_mark = i;
			return &s->marks[i];
		}

	if (s->nmarks == s->maxmarks)
	{
		s->maxmarks = Max(8, s->maxmarks * 2);
		s->marks = pg_realloc(s->marks, sizeof(S3RouteMark) * s->maxmarks);
	}
	m = &s->marks[s->nmarks];
	memset(m, 0, sizeof(*m));
	m->route = pg_strdup(route);
	strlcpy(m->dt, dt, sizeof(m->dt));
	if (read_day_mark(s, m, stop) != SHIP_OK)
	{
		free(m->route);
		return NULL;
	}
	s->last_mark = s->nmarks++;
	if (m->found)
	{
		char		hex[POSITION_HEX + 1];

		format_position(hex, m->last);
		log_info("S3 route \"%s\" has objects of %s up to position %s: rows of that day up to it are not written again",
				 route, dt, hex);
	}
	return m;
}

/*
 * After a flush: the marks of days two days older than the newest one seen
 * are dropped (a row of such a day, after a clock step, lists its day
 * again), so the marks stay few however long the shipper runs.
 */
static void
prune_marks(S3Lake *s)
{
	char		newest[11] = "";
	char		keep_from[11];
	int			n = 0;

	for (int i = 0; i < s->nmarks; i++)
		if (strcmp(s->marks[i].dt, newest) > 0)
			strlcpy(newest, s->marks[i].dt, sizeof(newest));
	if (newest[0] == '\0')
		return;
	day_add(newest, -2, keep_from);
	for (int i = 0; i < s->nmarks; i++)
	{
		if (strcmp(s->marks[i].dt, keep_from) < 0)
			free(s->marks[i].route);
		else
			s->marks[n++] = s->marks[i];
	}
	s->nmarks = n;
	s->last_mark = 0;
}

S3AddResult
s3_lake_add(S3Lake *s, const char *route, const char *dt, const char *row, size_t len,
			S3Position pos, uint64_t safe_lsn, double commit_time, StopFlag *stop)
{
	S3Object   *o = NULL;
	S3RouteMark *m = route_mark(s, route, dt, stop);

	if (m == NULL)
		return S3_FAILED;
	if (m->found && position_cmp(pos, m->last) <= 0)
	{
		s->rows_skipped++;
		return S3_SKIPPED;
	}

	for (int i = 0; i < s->nobjects; i++)
	{
		if (strcmp(s->objects[i].route, route) == 0 && strcmp(s->objects[i].dt, dt) == 0)
		{
			o = &s->objects[i];
			break;
		}
	}
	if (o == NULL)
	{
		if (s->nobjects == s->maxobjects)
		{
			s->maxobjects = Max(8, s->maxobjects * 2);
			s->objects = pg_realloc(s->objects, sizeof(S3Object) * s->maxobjects);
		}
		o = &s->objects[s->nobjects++];
		memset(o, 0, sizeof(*o));
		o->route = pg_strdup(route);
		strlcpy(o->dt, dt, sizeof(o->dt));
		o->first = pos;
		initPQExpBuffer(&o->body);
		/* windowBits 15 + 16: a gzip wrapper */
		if (s->gzip && deflateInit2(&o->z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		{
			log_error("could not start gzip compression");
			exit(1);
		}
	}
	if (s->buffered == 0)
	{
		s->first_at = now_seconds();
		s->safe_lsn = safe_lsn;
		s->oldest_commit = commit_time;
	}
	else if (commit_time > 0 && (s->oldest_commit == 0 || commit_time < s->oldest_commit))
		s->oldest_commit = commit_time;
	o->last = pos;
	o->rows++;
	o->raw_bytes += len + 1;
	if (s->gzip)
	{
		deflate_into(o, row, len, Z_NO_FLUSH);
		deflate_into(o, "\n", 1, Z_NO_FLUSH);
	}
	else
	{
		appendBinaryPQExpBuffer(&o->body, row, len);
		appendPQExpBufferChar(&o->body, '\n');
	}
	s->buffered += len + 1;
	return S3_ADDED;
}

/*
 * PREFIX/<route>/dt=<day>/<first>-<last>.json.gz: the stream positions of
 * the first and last rows (commit LSN and ordinal, zero-padded hex, so
 * names sort in stream order).  A range shipped again gets the same name.
 */
static char *
object_key(S3Lake *s, S3Object *o)
{
	char		first[POSITION_HEX + 1];
	char		last[POSITION_HEX + 1];

	format_position(first, o->first);
	format_position(last, o->last);
	return psprintf("%s%s%s/dt=%s/%s-%s.json%s",
					s->client.prefix, s->client.prefix[0] ? "/" : "", o->route, o->dt,
					first, last, s->gzip ? ".gz" : "");
}

ShipResult
s3_lake_claim_prefix(S3Lake *s, const char *system_id, const char *database, const char *slot,
					 StopFlag *stop)
{
	char	   *base = s3_prefix_slash(&s->client);
	char	   *key = psprintf("%s_fundrecs/owner.json", base);
	char	   *mine = psprintf("{\"system_identifier\":\"%s\",\"database\":\"%s\",\"slot\":\"%s\"}\n",
								system_id, database, slot);
	ShipResult	result = SHIP_OK;

	/* Read it; write it when there is none; read it again (two at once). */
	for (int round = 0; round < 2 && result == SHIP_OK; round++)
	{
		HttpResponse resp;

		http_response_init(&resp);
		result = s3_get(&s->client, key, true, &resp, stop);
		if (result == SHIP_OK && resp.status == 404 && round == 0)
		{
			result = s3_put(&s->client, key, "application/json", mine, strlen(mine), 0, stop);
			if (result == SHIP_OK)
				log_info("claimed s3://%s/%s for slot \"%s\" of database \"%s\"", s->client.bucket, base, slot,
						 database);
			if (result == SHIP_OK && s->owner_doc != NULL)
				log_warning("%s was deleted while this shipper ran: written again", key);
		}
		else if (result == SHIP_OK && resp.status != 404)
		{
			if (strcmp(resp.body.data, mine) != 0)
			{
				log_error("S3 prefix s3://%s/%s belongs to another fundrecs_shipper: %s says %.*s",
						  s->client.bucket, base, key, (int) Min(resp.body.len, 300),
						  resp.body.data);
				log_error_detail("This shipper is slot \"%s\" of database \"%s\" on system %s. Two shippers writing one prefix would each skip rows the other wrote, and the lake would lose them.",
								 slot, database, system_id);
				log_error_hint("Give each slot a prefix of its own (--s3-url). To hand the prefix over for good, delete %s and the objects of the old owner.",
							   key);
				retry_note_permanent();
				result = SHIP_FATAL;
			}
			round = 2;
		}
		else if (result == SHIP_OK)
		{
			log_error("could not read back s3://%s/%s after writing it", s->client.bucket, key);
			result = SHIP_FATAL;
		}
		http_response_free(&resp);
	}
	if (result == SHIP_OK && s->owner_doc == NULL)
	{
		/* Checked again at each flush (s3_lake_check_owner). */
		s->owner_key = key;
		s->owner_doc = mine;
		s->owner_system = pg_strdup(system_id);
		s->owner_database = pg_strdup(database);
		s->owner_slot = pg_strdup(slot);
		key = mine = NULL;
	}
	free(base);
	free(key);
	free(mine);
	return result;
}

ShipResult
s3_lake_check_owner(S3Lake *s, StopFlag *stop)
{
	HttpResponse resp;
	ShipResult	result;

	if (s->owner_key == NULL)
		return SHIP_OK;
	http_response_init(&resp);
	result = s3_get(&s->client, s->owner_key, false, &resp, stop);
	if (result == SHIP_OK && resp.status == 404)
	{
		/*
		 * Deleted (by a lifecycle rule on the prefix, say): claimed again the
		 * way it was at the start, so a second shipper is refused.
		 */
		log_warning("s3://%s/%s, which says which shipper owns the prefix, is gone",
					s->client.bucket, s->owner_key);
		log_warning_hint("Exclude the prefix's _fundrecs/ folder from S3 lifecycle (expiration) rules.");
		result = s3_lake_claim_prefix(s, s->owner_system, s->owner_database, s->owner_slot, stop);
	}
	else if (result == SHIP_OK && strcmp(resp.body.data, s->owner_doc) != 0)
	{
		log_error("this shipper no longer owns S3 prefix s3://%s/%s: %s says %.*s",
				  s->client.bucket, s->client.prefix, s->owner_key, (int) Min(resp.body.len, 300),
				  resp.body.data);
		log_error_detail("Another shipper claimed the prefix while this one ran (was %s deleted, by a lifecycle rule for instance?). Two shippers writing one prefix would each skip rows the other wrote. The rows held are not confirmed: this slot keeps them, and keeps retaining WAL, until it is dropped or given a prefix of its own.",
						 s->owner_key);
		log_error_hint("Give each slot a prefix of its own (--s3-url), and exclude the prefix's _fundrecs/ folder from S3 lifecycle rules.");
		retry_note_permanent();
		result = SHIP_FATAL;
	}
	http_response_free(&resp);
	return result;
}

/*
 * Positions whose objects are void: PREFIX/_fundrecs/void/<16 hex digits>,
 * one per load (or backfill chunk) left unfinished.  A PUT the killed
 * shipper had sent can still land after the next one listed the prefix
 * (the store had the whole body; a proxy or S3 finishes it), so a marker
 * keeps the position void until a load that finished swept again.
 */
typedef struct ForgetState
{
	const char *void_prefix;	/* PREFIX/_fundrecs/void/ */
	uint64_t   *lsns;			/* void positions (markers) */
	int			nlsns;
	int			maxlsns;
	char	  **markers;		/* their keys */
	char	  **keys;			/* objects at a void position */
	int			nkeys;
	int			maxkeys;
} ForgetState;

static void
keep_key(char ***keys, int *n, int *max, const char *key)
{
	if (*n == *max)
	{
		*max = Max(16, *max * 2);
		*keys = pg_realloc(*keys, sizeof(char *) * *max);
	}
	(*keys)[(*n)++] = pg_strdup(key);
}

static void
collect_load_object(const char *key, long long size, void *arg)
{
	ForgetState *f = arg;
	size_t		plen = strlen(f->void_prefix);
	S3Position	first;
	S3Position	last;

	if (strncmp(key, f->void_prefix, plen) == 0)
	{
		uint64_t	lsn;

		if (strlen(key + plen) != 16 || !parse_hex(key + plen, 16, &lsn))
			return;
		if (f->nlsns == f->maxlsns)
		{
			f->maxlsns = Max(16, f->maxlsns * 2);
			f->lsns = pg_realloc(f->lsns, sizeof(uint64_t) * f->maxlsns);
			f->markers = pg_realloc(f->markers, sizeof(char *) * f->maxlsns);
		}
		f->lsns[f->nlsns] = lsn;
		f->markers[f->nlsns++] = pg_strdup(key);
		return;
	}
	/* Rows of a load or chunk all sit at its position. */
	if (parse_object_name(key, &first, &last) && first.lsn == last.lsn)
		keep_key(&f->keys, &f->nkeys, &f->maxkeys, key);
}

static bool
is_void(const ForgetState *f, const char *key)
{
	S3Position	first;
	S3Position	last;

	if (!parse_object_name(key, &first, &last))
		return false;
	for (int i = 0; i < f->nlsns; i++)
		if (f->lsns[i] == first.lsn)
			return true;
	return false;
}

/*
 * Lists the whole prefix (a page of 1,000 per request: this happens only
 * when a load is done again, and once when a load ends) and deletes every
 * object at a void position; with clear, the markers too.
 */
static ShipResult
sweep_void(S3Lake *s, bool clear, StopFlag *stop)
{
	char	   *base = s3_prefix_slash(&s->client);
	char	   *void_prefix = psprintf("%s_fundrecs/void/", base);
	ForgetState f;
	ShipResult	result;

	memset(&f, 0, sizeof(f));
	f.void_prefix = void_prefix;
	result = s3_list(&s->client, base, collect_load_object, &f, stop);
	for (int i = 0; i < f.nkeys && result == SHIP_OK; i++)
	{
		if (!is_void(&f, f.keys[i]))
			continue;
		result = s3_delete(&s->client, f.keys[i], stop);
		if (result == SHIP_OK)
		{
			s->objects_deleted++;
			log_info("deleted s3://%s/%s (%s)", s->client.bucket, f.keys[i],
					 clear ? "written by a shipper killed during a load that did not finish"
					 : "the initial load that did not finish");
		}
	}
	for (int i = 0; i < f.nlsns && result == SHIP_OK && clear; i++)
		result = s3_delete(&s->client, f.markers[i], stop);
	for (int i = 0; i < f.nkeys; i++)
		free(f.keys[i]);
	for (int i = 0; i < f.nlsns; i++)
		free(f.markers[i]);
	free(f.keys);
	free(f.markers);
	free(f.lsns);
	free(void_prefix);
	free(base);
	return result;
}

ShipResult
s3_lake_forget_load(S3Lake *s, uint64_t lsn, StopFlag *stop)
{
	char	   *base = s3_prefix_slash(&s->client);
	char	   *marker = psprintf("%s_fundrecs/void/%08X%08X", base, LSN_FORMAT_ARGS(lsn));
	char	   *body = psprintf("objects at %X/%X are of a load that did not finish: void\n",
								LSN_FORMAT_ARGS(lsn));
	ShipResult	result;

	/* The marker first: a kill from here on leaves the position void. */
	result = s3_put(&s->client, marker, "text/plain", body, strlen(body), 0, stop);
	if (result == SHIP_OK)
		result = sweep_void(s, false, stop);
	free(body);
	free(marker);
	free(base);
	return result;
}

ShipResult
s3_lake_sweep_loads(S3Lake *s, StopFlag *stop)
{
	return sweep_void(s, true, stop);
}

ShipResult
s3_lake_flush(S3Lake *s, StopFlag *stop)
{
	ShipResult	result = SHIP_OK;

	if (s->nobjects == 0)
		return SHIP_OK;

	/* Only the prefix's owner writes (a GET per flush). */
	if ((result = s3_lake_check_owner(s, stop)) != SHIP_OK)
		return result;

	/*
	 * One after the other, in the order of their first rows: the objects of a
	 * route and day in order.
	 */
	for (int i = 0; i < s->nobjects && result == SHIP_OK; i++)
	{
		S3Object   *o = &s->objects[i];
		char	   *key;

		if (s->gzip && o->z.state != NULL)
		{
			deflate_into(o, NULL, 0, Z_FINISH);
			deflateEnd(&o->z);
		}
		key = object_key(s, o);
		result = s3_put(&s->client, key, "application/x-ndjson", o->body.data, o->body.len,
						o->rows, stop);
		if (result == SHIP_OK)
		{
			S3RouteMark *m = NULL;

			s->objects_put++;
			s->bytes_put += o->body.len;
			s->rows_put += o->rows;
			s->row_bytes_put += o->raw_bytes;
			log_info("wrote s3://%s/%s (%llu rows, %zu bytes)", s->client.bucket, key,
					 (unsigned long long) o->rows, o->body.len);
			/* The route and day stand there now. */
			for (int j = 0; j < s->nmarks && m == NULL; j++)
				if (strcmp(s->marks[j].route, o->route) == 0 && strcmp(s->marks[j].dt, o->dt) == 0)
					m = &s->marks[j];
			if (m != NULL && (!m->found || position_cmp(o->last, m->last) > 0))
			{
				m->found = true;
				m->last = o->last;
			}
		}
		free(key);
	}

	if (result != SHIP_OK)
	{
		/*
		 * Objects already written stay; the rest are dropped with the whole
		 * flush unconfirmed: the rows come again after a restart, and the
		 * rows of the objects written are skipped then.
		 */
		return result;
	}
	for (int i = 0; i < s->nobjects; i++)
	{
		free(s->objects[i].route);
		termPQExpBuffer(&s->objects[i].body);
	}
	s->nobjects = 0;
	s->buffered = 0;
	s->oldest_commit = 0;
	s->flushes++;
	s->last_put_at = now_seconds();
	prune_marks(s);
	return SHIP_OK;
}

/*
 * Frees the lake with the rows it holds (not written: they were not
 * confirmed, and come again after a restart).
 */
void
s3_lake_free(S3Lake *s)
{
	for (int i = 0; i < s->nobjects; i++)
	{
		S3Object   *o = &s->objects[i];

		if (s->gzip && o->z.state != NULL)
			deflateEnd(&o->z);
		free(o->route);
		termPQExpBuffer(&o->body);
	}
	free(s->objects);
	for (int i = 0; i < s->nmarks; i++)
		free(s->marks[i].route);
	free(s->marks);
	free(s->owner_key);
	free(s->owner_doc);
	free(s->owner_system);
	free(s->owner_database);
	free(s->owner_slot);
	s3_client_free(&s->client);
	memset(s, 0, sizeof(*s));
}
