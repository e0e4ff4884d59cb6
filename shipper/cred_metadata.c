/*-------------------------------------------------------------------------
 *
 * cred_metadata.c
 *	  Credentials from metadata endpoints: the container's (ECS task role,
 *	  EKS Pod Identity) and the EC2 instance's (IMDSv2, IMDSv1 as the SDKs
 *	  fall back).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "http.h"
#include "retry.h"

#include "credentials_int.h"
#include "log.h"

/* ----------------------------------------------------------------
 * Container credentials (ECS task role, EKS Pod Identity)
 * ----------------------------------------------------------------
 */

/* One metadata request, for retry_run(): what it asks and its answer. */
typedef struct MetadataGet
{
	const char *what;			/* "instance metadata": "WHAT URL answered
								 * HTTP 404" */
	const char *unreachable;	/* "could not reach ...", before ": the error" */
	const char *method;
	const char *url;
	struct curl_slist *headers;
	HttpClient	http;
	HttpResponse resp;
	bool		again_at_once;	/* retry without backing off (IMDS, as the
								 * SDKs) */
	char	   *err;			/* the last problem */
} MetadataGet;

static CallOutcome
metadata_attempt(void *arg, int attempt, char **problem)
{
	MetadataGet *g = arg;
	bool		reached = http_request(&g->http, g->method, g->url, g->headers,
									   strcmp(g->method, "PUT") == 0 ? "" : NULL, 0, &g->resp);

	free(g->err);
	g->err = NULL;
	if (reached && g->resp.status == 200)
		return CALL_DONE;
	g->err = reached ? psprintf("%s %s answered HTTP %ld", g->what, g->url, g->resp.status) :
		psprintf("%s: %s", g->unreachable, g->resp.error);
	/* An answer other than a server error will not change. */
	if (reached && g->resp.status < 500)
		return CALL_FATAL;
	return g->again_at_once ? CALL_AGAIN : CALL_RETRY;
}

/*
 * Up to attempts requests, through the retry driver; true on HTTP 200.
 * Else *err (replacing what it held) says what the last one met.
 */
static bool
metadata_request(MetadataGet *g, int attempts, char **err)
{
	RetryPolicy policy = {0, attempts, true};
	ShipResult	r = retry_run(g->what, &policy, metadata_attempt, g, NULL);

	free(*err);
	*err = NULL;
	if (r == SHIP_OK)
	{
		free(g->err);
		g->err = NULL;
		return true;
	}
	*err = g->err ? g->err : psprintf("%s: stopped", g->what);
	g->err = NULL;
	return false;
}

/*
 * Plain http only to the hosts the SDKs allow: loopback, the ECS and EKS
 * link-local addresses.  Returns NULL if allowed, else why not.
 */
char *
cred_container_url_problem(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *problem = NULL;

	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		problem = psprintf("AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\" is not a URL", url);
	else if (strcmp(scheme, "https") == 0)
		;
	else if (strcmp(scheme, "http") != 0)
		problem = psprintf("AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\": the scheme must be http or https", url);
	else if (!(strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0 ||
			   strcmp(host, "[::1]") == 0 || strcmp(host, "169.254.170.2") == 0 ||
			   strcmp(host, "169.254.170.23") == 0 || strcmp(host, "[fd00:ec2::23]") == 0))
		problem = psprintf("AWS_CONTAINER_CREDENTIALS_FULL_URI \"%s\": plain http is allowed only to loopback, 169.254.170.2, 169.254.170.23 and fd00:ec2::23", url);
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return problem;
}

bool
cred_fetch_container(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	MetadataGet g;
	char	   *unreachable;
	struct curl_slist *headers = NULL;
	char	   *token = NULL;
	const char *tfile = cred_env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	bool		ok = false;

	/* The token file first (EKS Pod Identity rotates it), read every time. */
	if (tfile != NULL)
	{
		if ((token = cred_read_file(tfile, err)) == NULL)
			return false;
	}
	else if (cred_env("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
		token = pg_strdup(cred_env("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
	if (token != NULL)
	{
		char	   *line;

		if (strpbrk(token, "\r\n") != NULL)
		{
			*config_error = true;
			*err = pg_strdup("the container authorization token holds a line break");
			explicit_bzero(token, strlen(token));
			free(token);
			return false;
		}
		line = psprintf("Authorization: %s", token);
		headers = curl_slist_append(headers, line);
		explicit_bzero(line, strlen(line));
		explicit_bzero(token, strlen(token));
		free(line);
		free(token);
	}
	headers = curl_slist_append(headers, "Accept: application/json");
	memset(&g, 0, sizeof(g));
	g.url = p->container_url;
	g.method = "GET";
	g.headers = headers;
	g.what = "container credentials endpoint";
	g.unreachable = unreachable = psprintf("could not reach the container credentials endpoint %s",
										   p->container_url);
	http_client_init(&g.http, NULL, 2000);
	http_response_init(&g.resp);
	if (metadata_request(&g, 3, err))
	{
		if (aws_parse_credentials_json(g.resp.body.data, g.resp.body.len, "Token", false, out, err))
			ok = true;
		else
		{
			char	   *inner = *err;

			*err = psprintf("malformed answer from the container credentials endpoint %s: %s",
							p->container_url, inner);
			free(inner);
		}
		explicit_bzero(g.resp.body.data, g.resp.body.len);
	}
	/* The Authorization line is in the list. */
	for (struct curl_slist *h = headers; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(headers);
	http_response_free(&g.resp);
	http_client_free(&g.http);
	free(unreachable);
	return ok;
}

/* ----------------------------------------------------------------
 * EC2 instance metadata (IMDSv2, IMDSv1 only as the SDKs fall back)
 * ----------------------------------------------------------------
 */

/* A GET of the instance metadata, with the session token when there is one. */
static bool
imds_get(AwsCredentialProvider *p, MetadataGet *g, const char *path, const char *token,
		 char **err)
{
	char	   *url = psprintf("%s%s", p->imds_endpoint, path);
	bool		ok;

	g->headers = NULL;
	if (token)
	{
		char	   *line = psprintf("X-aws-ec2-metadata-token: %s", token);

		g->headers = curl_slist_append(NULL, line);
		free(line);
	}
	g->method = "GET";
	g->url = url;
	ok = metadata_request(g, p->imds_attempts, err);
	curl_slist_free_all(g->headers);
	g->headers = NULL;
	free(url);
	return ok;
}

/*
 * IMDSv2's session token, or none: *v1 when the service wants IMDSv1 (403,
 * 404, 405, a timeout: as the SDKs fall back).  False on a refusal.
 */
static bool
imds_token(AwsCredentialProvider *p, MetadataGet *g, char **token, bool *v1, char **err)
{
	char	   *url = psprintf("%s/latest/api/token", p->imds_endpoint);
	bool		ok;

	g->method = "PUT";
	g->url = url;
	g->headers = curl_slist_append(NULL, "X-aws-ec2-metadata-token-ttl-seconds: 21600");
	ok = metadata_request(g, p->imds_attempts, err);
	curl_slist_free_all(g->headers);
	g->headers = NULL;
	free(url);
	*token = NULL;
	*v1 = false;
	if (ok && g->resp.body.len > 0)
	{
		free(*err);
		*err = NULL;
		*token = pg_strdup(g->resp.body.data);
		return true;
	}
	free(*err);
	*err = NULL;
	if (g->resp.status == 400)
	{
		*err = psprintf("the instance metadata service at %s refused the token request (HTTP 400)",
						p->imds_endpoint);
		return false;
	}
	*v1 = true;
	return true;
}

/* The role's credentials, once the role is known. */
static bool
imds_role_credentials(AwsCredentialProvider *p, MetadataGet *g, const char *role,
					  const char *token, AwsCredentials *out, char **err)
{
	char	   *path = psprintf("/latest/meta-data/iam/security-credentials/%s", role);
	bool		ok = false;

	if (imds_get(p, g, path, token, err))
	{
		if (aws_parse_credentials_json(g->resp.body.data, g->resp.body.len, "Token", false, out, err))
			ok = true;
		else
		{
			char	   *inner = *err;

			*err = psprintf("malformed instance metadata credentials for role %s: %s", role, inner);
			free(inner);
		}
		explicit_bzero(g->resp.body.data, g->resp.body.len);
	}
	free(path);
	return ok;
}

bool
cred_fetch_imds(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	MetadataGet g;
	char	   *token = NULL;
	char	   *role = NULL;
	bool		ok = false;
	bool		v1_fallback = false;

	*err = NULL;
	memset(&g, 0, sizeof(g));
	g.what = "instance metadata";
	g.unreachable = psprintf("could not reach the instance metadata service at %s", p->imds_endpoint);
	g.again_at_once = true;
	http_client_init(&g.http, NULL, p->imds_timeout_ms);
	g.http.connect_timeout_ms = p->imds_timeout_ms;
	http_response_init(&g.resp);

	if (!imds_token(p, &g, &token, &v1_fallback, err))
		goto done;
	if (v1_fallback && p->imds_v1_disabled)
	{
		p->imds_unreachable = g.resp.status == 0;
		*err = psprintf("could not get an IMDSv2 token from %s (%s), and AWS_EC2_METADATA_V1_DISABLED forbids IMDSv1",
						p->imds_endpoint, g.resp.status ? "an HTTP error" : g.resp.error);
		goto done;
	}
	if (!imds_get(p, &g, "/latest/meta-data/iam/security-credentials/", token, err))
	{
		p->imds_unreachable = g.resp.status == 0;
		goto done;
	}
	role = pnstrdup(g.resp.body.data, strcspn(g.resp.body.data, "\r\n"));
	if (*role == '\0' || strchr(role, '/') != NULL)
	{
		*err = psprintf("the instance metadata service at %s names no IAM role (is an instance profile attached?)",
						p->imds_endpoint);
		goto done;
	}
	ok = imds_role_credentials(p, &g, role, token, out, err);
	if (ok && p->imds_role == NULL)
		p->imds_role = psprintf("%s, %s", role, v1_fallback ? "IMDSv1" : "IMDSv2");

done:
	if (token)
		explicit_bzero(token, strlen(token));
	free(token);
	free(role);
	free((char *) g.unreachable);
	http_response_free(&g.resp);
	http_client_free(&g.http);
	return ok;
}
