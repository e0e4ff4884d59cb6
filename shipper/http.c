/*-------------------------------------------------------------------------
 *
 * http.c
 *	  libcurl wrapper: one easy handle per target, so connections are
 *	  kept alive; TLS peer verification on (a CA file can be given);
 *	  connect and whole-request timeouts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdint.h>
#include <time.h>

#include "log.h"
#include "http.h"
#include "retry.h"

/* Runs the shipper's tick while a request waits; non-zero aborts it. */
static int
progress_tick(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			  curl_off_t ultotal, curl_off_t ulnow)
{
	return wait_tick() ? 1 : 0;
}

static const char *user_agent = "fundrecs_shipper";

void
http_global_init(const char *agent)
{
	user_agent = agent;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
	{
		fprintf(stderr, "could not initialize libcurl\n");
		exit(1);
	}
}

void
http_client_init(HttpClient *client, const char *ca_file, long timeout_ms)
{
	client->curl = curl_easy_init();
	if (client->curl == NULL)
	{
		fprintf(stderr, "could not create a libcurl handle\n");
		exit(1);
	}
	client->ca_file = ca_file;
	client->timeout_ms = timeout_ms;
	client->connect_timeout_ms = Min(timeout_ms, 10000);
}

void
http_client_free(HttpClient *client)
{
	if (client->curl != NULL)
		curl_easy_cleanup(client->curl);
	client->curl = NULL;
}

void
http_client_reset_connection(HttpClient *client)
{
	/* A fresh handle drops a connection that may be in a bad state. */
	curl_easy_cleanup(client->curl);
	client->curl = curl_easy_init();
	if (client->curl == NULL)
	{
		fprintf(stderr, "could not create a libcurl handle\n");
		exit(1);
	}
}

void
http_response_init(HttpResponse *resp)
{
	resp->status = 0;
	initPQExpBuffer(&resp->body);
	resp->error[0] = '\0';
}

void
http_response_free(HttpResponse *resp)
{
	termPQExpBuffer(&resp->body);
}

static size_t
write_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	PQExpBuffer buf = (PQExpBuffer) userdata;

	/* Service responses are small; refuse anything absurd. */
	if (buf->len + size * nmemb > 16 * 1024 * 1024)
		return 0;
	appendBinaryPQExpBuffer(buf, ptr, size * nmemb);
	return size * nmemb;
}

/* Sets up the client's handle for one request (the response is reset). */
static void
setup_request(HttpClient *client, const char *method, const char *url,
			  struct curl_slist *headers, const char *body, size_t len,
			  HttpResponse *resp)
{
	CURL	   *c = client->curl;

	resetPQExpBuffer(&resp->body);
	resp->status = 0;
	resp->curl_code = CURLE_OK;
	resp->error[0] = '\0';

	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	if (body != NULL)
	{
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
	}
	else
	{
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	}
	/* HEAD: no body comes back whatever Content-Length says. */
	curl_easy_setopt(c, CURLOPT_NOBODY, strcmp(method, "HEAD") == 0 ? 1L : 0L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp->body);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, resp->error);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, client->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, client->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_tick);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	if (client->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, client->ca_file);
	curl_easy_setopt(c, CURLOPT_USERAGENT, user_agent);
}

/* After a transfer: the transport error, or the HTTP status. */
static bool
finish_request(HttpClient *client, CURLcode rc, HttpResponse *resp)
{
	resp->curl_code = (int) rc;
	if (rc != CURLE_OK)
	{
		if (resp->error[0] == '\0')
			strlcpy(resp->error, curl_easy_strerror(rc), sizeof(resp->error));
		return false;
	}
	curl_easy_getinfo(client->curl, CURLINFO_RESPONSE_CODE, &resp->status);
	return true;
}

char *
http_response_header(HttpClient *client, const char *name)
{
	struct curl_header *h;

	if (curl_easy_header(client->curl, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return NULL;
	return pg_strdup(h->value);
}

bool
http_request(HttpClient *client, const char *method, const char *url,
			 struct curl_slist *headers, const char *body, size_t len,
			 HttpResponse *resp)
{
	setup_request(client, method, url, headers, body, len, resp);
	return finish_request(client, curl_easy_perform(client->curl), resp);
}

void
http_request_many(HttpClient *clients, int n, const char *method, const char *url,
				  struct curl_slist **headers, PQExpBuffer bodies,
				  HttpResponse *resps, bool *reached)
{
	/*
	 * One multi handle per thread for the life of the process: the
	 * connections live in its cache, so the next round reuses them (a multi
	 * handle per round would open, and for https handshake, a connection per
	 * call).  A libcurl handle must not be used by two threads at once, and
	 * each delivery thread has its own calls.
	 */
	static __thread CURLM * multi = NULL;
	int			running;

	if (multi == NULL)
	{
		multi = curl_multi_init();
		if (multi == NULL)
		{
			fprintf(stderr, "could not create a libcurl multi handle\n");
			exit(1);
		}
	}
	for (int i = 0; i < n; i++)
	{
		setup_request(&clients[i], method, url, headers[i], bodies[i].data, bodies[i].len,
					  &resps[i]);
		curl_easy_setopt(clients[i].curl, CURLOPT_PRIVATE, (char *) (intptr_t) i);
		curl_multi_add_handle(multi, clients[i].curl);
	}
	do
	{
		CURLMsg    *msg;
		int			left;

		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		{
			if (msg->msg == CURLMSG_DONE)
			{
				char	   *priv = NULL;
				int			i;

				curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
				i = (int) (intptr_t) priv;
				reached[i] = finish_request(&clients[i], msg->data.result, &resps[i]);
			}
		}
		if (running > 0)
			curl_multi_poll(multi, NULL, 0, 100, NULL);
	} while (running > 0);
	for (int i = 0; i < n; i++)
		curl_multi_remove_handle(multi, clients[i].curl);
}

/*
 * Transport errors that no retry will mend: a certificate that does not
 * verify, a CA file that cannot be read, a URL curl cannot use.
 */
bool
http_error_is_permanent(const HttpResponse *resp)
{
	switch (resp->curl_code)
	{
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
			return true;
		default:
			return false;
	}
}

/*
 * Transport errors that, at start-up, mean the endpoint is wrong rather
 * than down: a host name that does not resolve, a server that does not
 * speak the URL's protocol (http on an https port and the reverse).
 */
bool
http_error_is_wrong_endpoint(const HttpResponse *resp)
{
	switch (resp->curl_code)
	{
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_WEIRD_SERVER_REPLY:
		case CURLE_GOT_NOTHING:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_RECV_ERROR:
			return true;
		default:
			return false;
	}
}

/*
 * After a request that got no response: NULL, reported, when retrying
 * cannot help; else a description of the failure to retry on (and the
 * connection is dropped, in case it is the culprit).
 */
char *
http_transport_failure(HttpClient *client, const char *endpoint, HttpResponse *resp)
{
	if (http_error_is_permanent(resp))
	{
		log_error("could not connect to %s: %s", endpoint, resp->error);
		if (strncmp(endpoint, "https:", 6) == 0)
			log_error_hint("Give the endpoint's CA certificate with --ca-file.");
		return NULL;
	}
	http_client_reset_connection(client);
	return psprintf("could not reach %s: %s", endpoint, resp->error);
}

char *
http_host_header(const char *url, char **path_out, char **errmsg)
{
	CURLU	   *u = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *port = NULL;
	char	   *path = NULL;
	char	   *result = NULL;

	*errmsg = NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
	{
		*errmsg = psprintf("invalid URL \"%s\"", url);
		goto done;
	}
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
	{
		*errmsg = psprintf("invalid URL \"%s\": the scheme must be http or https", url);
		goto done;
	}
	/* Without CURLU_DEFAULT_PORT, the port is there only when explicit. */
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK && port != NULL &&
		!((strcmp(scheme, "http") == 0 && strcmp(port, "80") == 0) ||
		  (strcmp(scheme, "https") == 0 && strcmp(port, "443") == 0)))
		result = psprintf("%s:%s", host, port);
	else
		result = pg_strdup(host);
	if (path_out)
	{
		if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK || path == NULL)
			*path_out = pg_strdup("/");
		else
			*path_out = pg_strdup(path);
	}

done:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return result;
}

void
http_report_wrong_endpoint(const char *endpoint, const HttpResponse *resp)
{
	log_error("could not reach %s: %s", endpoint, resp->error);
	if (resp->curl_code == CURLE_COULDNT_RESOLVE_HOST)
		log_error_hint("Check the endpoint URL: its host name does not resolve.");
	else
		log_error_hint("Check the endpoint URL: its scheme (http or https) must match what the port serves.");
}
