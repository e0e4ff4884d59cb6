/*-------------------------------------------------------------------------
 *
 * test_sigv4.c
 *	  Runs the signer over every case of the AWS SigV4 test suite and
 *	  prints TAP: the canonical request, the string to sign and the
 *	  signature must each equal the suite's file byte for byte.
 *
 *	  test_sigv4 DIRECTORY
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sigv4.h"

static char *
read_file(const char *dir, const char *name, size_t *len)
{
	char		path[4096];
	FILE	   *f;
	char	   *data;
	long		size;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	data = malloc(size + 1);
	if (fread(data, 1, size, f) != (size_t) size)
	{
		fclose(f);
		free(data);
		return NULL;
	}
	data[size] = '\0';
	fclose(f);
	if (len)
		*len = (size_t) size;
	return data;
}

static int	test_number = 0;
static int	failures = 0;

static void
check(bool ok, const char *name, const char *what, const char *got, const char *want)
{
	test_number++;
	printf("%s %d - %s: %s\n", ok ? "ok" : "not ok", test_number, name, what);
	if (!ok)
	{
		failures++;
		printf("# got:\n# %s\n# expected:\n# %s\n", got ? got : "(null)", want ? want : "(null)");
	}
}

static void
run_case(const char *root, const char *name)
{
	char		dir[4096];
	char	   *request;
	char	   *context_text;
	json_t	   *context;
	json_error_t jerr;
	SigV4Header headers[64];
	int			nheaders = 0;
	char	   *line;
	char	   *save = NULL;
	char	   *body = NULL;
	char	   *method;
	char	   *uri;
	char	   *query = NULL;
	char		payload_hash[65];
	char		amz_date[17];
	const char *ts;
	json_t	   *creds;
	const char *token;
	SigV4Request req;
	SigV4Result res;
	char	   *want_creq;
	char	   *want_sts;
	char	   *want_sig;
	char	   *sep;
	char	   *http;

	snprintf(dir, sizeof(dir), "%s/%s", root, name);
	request = read_file(dir, "request.txt", NULL);
	context_text = read_file(dir, "context.json", NULL);
	if (request == NULL || context_text == NULL)
		return;
	context = json_loads(context_text, 0, &jerr);
	if (context == NULL)
	{
		check(false, name, "context.json parses", jerr.text, "valid JSON");
		return;
	}

	/* The body follows the first empty line. */
	sep = strstr(request, "\n\n");
	if (sep)
	{
		*sep = '\0';
		body = sep + 2;
	}
	else
		body = "";

	line = strtok_r(request, "\n", &save);
	method = line;
	uri = strchr(line, ' ');
	*uri++ = '\0';
	http = strstr(uri, " HTTP/");
	if (http)
		*http = '\0';
	if ((sep = strchr(uri, '?')) != NULL)
	{
		*sep = '\0';
		query = sep + 1;
	}

	while ((line = strtok_r(NULL, "\n", &save)) != NULL)
	{
		if ((line[0] == ' ' || line[0] == '\t') && nheaders > 0)
		{
			/* A folded line continues the previous header's value. */
			headers[nheaders - 1].value =
				psprintf("%s %s", headers[nheaders - 1].value, line);
			continue;
		}
		sep = strchr(line, ':');
		if (sep == NULL)
			continue;
		*sep = '\0';
		headers[nheaders].name = line;
		headers[nheaders].value = sep + 1;
		nheaders++;
	}

	ts = json_string_value(json_object_get(context, "timestamp"));
	/* 2015-08-30T12:36:00Z -> 20150830T123600Z */
	snprintf(amz_date, sizeof(amz_date), "%.4s%.2s%.2sT%.2s%.2s%.2sZ",
			 ts, ts + 5, ts + 8, ts + 11, ts + 14, ts + 17);
	headers[nheaders].name = "X-Amz-Date";
	headers[nheaders].value = amz_date;
	nheaders++;

	creds = json_object_get(context, "credentials");
	token = json_string_value(json_object_get(creds, "token"));
	if (token && !json_is_true(json_object_get(context, "omit_session_token")))
	{
		headers[nheaders].name = "X-Amz-Security-Token";
		headers[nheaders].value = token;
		nheaders++;
	}

	sigv4_sha256_hex(body, strlen(body), payload_hash);
	if (json_is_true(json_object_get(context, "sign_body")))
	{
		headers[nheaders].name = "X-Amz-Content-Sha256";
		headers[nheaders].value = payload_hash;
		nheaders++;
	}

	memset(&req, 0, sizeof(req));
	req.method = method;
	req.path = uri;
	req.query = query;
	req.headers = headers;
	req.nheaders = nheaders;
	req.payload_hash = payload_hash;
	req.normalize_path = json_is_true(json_object_get(context, "normalize"));
	req.region = json_string_value(json_object_get(context, "region"));
	req.service = json_string_value(json_object_get(context, "service"));
	req.access_key = json_string_value(json_object_get(creds, "access_key_id"));
	req.secret_key = json_string_value(json_object_get(creds, "secret_access_key"));
	req.amz_date = amz_date;

	if (!sigv4_sign(&req, &res))
	{
		check(false, name, "signs", "out of memory", "a signature");
		return;
	}

	want_creq = read_file(dir, "header-canonical-request.txt", NULL);
	want_sts = read_file(dir, "header-string-to-sign.txt", NULL);
	want_sig = read_file(dir, "header-signature.txt", NULL);
	check(want_creq && strcmp(res.canonical_request, want_creq) == 0, name,
		  "canonical request", res.canonical_request, want_creq);
	check(want_sts && strcmp(res.string_to_sign, want_sts) == 0, name,
		  "string to sign", res.string_to_sign, want_sts);
	check(want_sig && strncmp(res.signature, want_sig, 64) == 0, name,
		  "signature", res.signature, want_sig);

	sigv4_result_free(&res);
	json_decref(context);
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

int
main(int argc, char **argv)
{
	DIR		   *d;
	struct dirent *de;
	char	   *names[256];
	int			n = 0;

	if (argc != 2)
	{
		fprintf(stderr, "usage: %s TEST-SUITE-DIRECTORY\n", argv[0]);
		return 2;
	}
	d = opendir(argv[1]);
	if (d == NULL)
	{
		perror(argv[1]);
		return 2;
	}
	while ((de = readdir(d)) != NULL && n < 256)
	{
		if (de->d_name[0] == '.' || strcmp(de->d_name, "LICENSE") == 0 ||
			strcmp(de->d_name, "NOTICE") == 0)
			continue;
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(char *), cmp_names);

	for (int i = 0; i < n; i++)
		run_case(argv[1], names[i]);

	/* Every case contributes three checks: none may be missing. */
	printf("1..%d\n", test_number);
	if (test_number != 3 * n)
	{
		printf("# only %d of %d cases could be read\n", test_number / 3, n);
		return 1;
	}
	return failures > 0 ? 1 : 0;
}
