/*-------------------------------------------------------------------------
 *
 * cred_sts.c
 *	  Credentials from STS: AssumeRole (a profile's role_arn) and
 *	  AssumeRoleWithWebIdentity (a token file).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "aws_config.h"
#include "http.h"
#include "retry.h"
#include "aws_request.h"
#include "sigv4.h"

#include "credentials_int.h"
#include "log.h"

/* ----------------------------------------------------------------
 * STS: AssumeRole and AssumeRoleWithWebIdentity
 * ----------------------------------------------------------------
 */

/* Regions where AWS_STS_REGIONAL_ENDPOINTS=legacy means the global endpoint. */
static const char *const legacy_sts_regions[] = {
	"ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "aws-global",
	"ca-central-1", "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3",
	"sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2", NULL
};

/*
 * The STS endpoint as botocore picks it: AWS_ENDPOINT_URL_STS, then
 * AWS_ENDPOINT_URL (unless AWS_IGNORE_CONFIGURED_ENDPOINT_URLS), else
 * regional, except the global endpoint for the legacy regions when
 * AWS_STS_REGIONAL_ENDPOINTS=legacy, or without a region.
 */
void
cred_sts_endpoint(const char *region, char **endpoint, char **signing_region)
{
	const char *e = aws_endpoint_from_env("STS");
	bool		legacy = false;

	*signing_region = pg_strdup(region ? region : "us-east-1");
	if (e != NULL)
	{
		*endpoint = pg_strdup(e);
		return;
	}
	if (region != NULL && cred_env("AWS_STS_REGIONAL_ENDPOINTS") &&
		pg_strcasecmp(cred_env("AWS_STS_REGIONAL_ENDPOINTS"), "legacy") == 0)
	{
		for (int i = 0; legacy_sts_regions[i]; i++)
			if (strcmp(legacy_sts_regions[i], region) == 0)
				legacy = true;
	}
	if (region == NULL || legacy)
	{
		free(*signing_region);
		*signing_region = pg_strdup("us-east-1");
		*endpoint = pg_strdup("https://sts.amazonaws.com");
	}
	else if (strncmp(region, "cn-", 3) == 0)
		*endpoint = psprintf("https://sts.%s.amazonaws.com.cn", region);
	else
		*endpoint = psprintf("https://sts.%s.amazonaws.com", region);
}

bool
aws_parse_sts_credentials(const char *xml, AwsCredentials *out)
{
	char	   *ak = cred_xml_value(xml, "AccessKeyId");
	char	   *sk = cred_xml_value(xml, "SecretAccessKey");
	char	   *tk = cred_xml_value(xml, "SessionToken");
	char	   *ex = cred_xml_value(xml, "Expiration");
	bool		ok = false;

	memset(out, 0, sizeof(*out));
	if (ak != NULL && sk != NULL && tk != NULL && ex != NULL && *ak != '\0' && *sk != '\0' &&
		aws_parse_iso8601(ex, &out->expiration))
	{
		out->access_key = ak;
		out->secret_key = sk;
		out->session_token = tk;
		ok = true;
	}
	else
	{
		free(ak);
		if (sk)
			explicit_bzero(sk, strlen(sk));
		free(sk);
		if (tk)
			explicit_bzero(tk, strlen(tk));
		free(tk);
		out->expiration = 0;
	}
	free(ex);
	return ok;
}

static void
append_form(PQExpBuffer b, const char *name, const char *value)
{
	char	   *enc = sigv4_uri_encode(value, strlen(value), false);

	appendPQExpBuffer(b, "&%s=%s", name, enc);
	free(enc);
}

/* One STS call and what it is about, for retry_run(). */
typedef struct StsCall
{
	AwsCredentialProvider *p;
	const char *action;
	PQExpBuffer form;
	const AwsCredentials *signer;	/* NULL: not signed (web identity) */
	const char *host;
	const char *path;
	HttpClient	http;
	HttpResponse resp;
	AwsCredentials *out;
	char	   *err;			/* the last problem */
} StsCall;

static struct curl_slist *
sts_headers(StsCall *c)
{
	SigV4Header extra[1] = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}};
	AwsRequestSpec spec;
	struct curl_slist *headers;

	if (c->signer == NULL)
	{
		headers = curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded; charset=utf-8");
		return curl_slist_append(headers, "Expect:");
	}
	memset(&spec, 0, sizeof(spec));
	spec.method = "POST";
	spec.host = c->host;
	spec.path = c->path;
	spec.extra = extra;
	spec.nextra = 1;
	spec.body = c->form->data;
	spec.len = c->form->len;
	spec.region = c->p->sts_region;
	spec.service = "sts";
	return aws_signed_headers(&spec, c->signer);
}

static CallOutcome
sts_attempt(void *arg, int attempt, char **problem)
{
	StsCall    *c = arg;
	AwsCredentialProvider *p = c->p;
	struct curl_slist *headers = sts_headers(c);
	bool		reached = http_request(&c->http, "POST", p->sts_endpoint, headers,
									   c->form->data, c->form->len, &c->resp);

	curl_slist_free_all(headers);
	free(c->err);
	c->err = NULL;
	if (reached && c->resp.status == 200)
	{
		bool		ok = aws_parse_sts_credentials(c->resp.body.data, c->out);

		if (!ok)
			c->err = psprintf("malformed %s response from %s (HTTP 200, %zu bytes): no credentials with an expiration",
							  c->action, p->sts_endpoint, c->resp.body.len);
		explicit_bzero(c->resp.body.data, c->resp.body.len);
		return ok ? CALL_DONE : CALL_FATAL;
	}
	if (reached && c->resp.status < 500 && c->resp.status != 429)
	{
		char	   *code = cred_xml_value(c->resp.body.data, "Code");
		char	   *msg = cred_xml_value(c->resp.body.data, "Message");

		c->err = psprintf("STS %s at %s refused: HTTP %ld%s%s%s%s", c->action, p->sts_endpoint,
						  c->resp.status, code ? ": " : "", code ? code : "",
						  msg ? ": " : "", msg ? msg : "");
		free(code);
		free(msg);
		return CALL_FATAL;
	}
	c->err = reached ? psprintf("STS %s at %s: HTTP %ld", c->action, p->sts_endpoint, c->resp.status) :
		psprintf("could not reach STS at %s: %s", p->sts_endpoint, c->resp.error);
	return CALL_RETRY;
}

/*
 * One STS call (form-encoded Query API), signed with signer unless NULL
 * (AssumeRoleWithWebIdentity is not signed), answered with the XML of
 * <action>Response.  Transport failures, 429 and 5xx are tried again, up
 * to three calls in all.
 */
static bool
sts_call(AwsCredentialProvider *p, const char *action, PQExpBuffer form,
		 const AwsCredentials *signer, AwsCredentials *out, char **err)
{
	static const RetryPolicy policy = {0, 3, true};
	StsCall		c;
	char	   *path;
	char	   *herr;
	char	   *host = http_host_header(p->sts_endpoint, &path, &herr);
	ShipResult	r;

	if (host == NULL)
	{
		*err = psprintf("STS endpoint: %s", herr);
		return false;
	}
	memset(&c, 0, sizeof(c));
	c.p = p;
	c.action = action;
	c.form = form;
	c.signer = signer;
	c.host = host;
	c.path = path;
	c.out = out;
	http_client_init(&c.http, NULL, 10000);
	http_response_init(&c.resp);
	r = retry_run(action, &policy, sts_attempt, &c, NULL);
	if (r != SHIP_OK)
		*err = c.err ? c.err : psprintf("STS %s at %s: stopped", action, p->sts_endpoint);
	else
		free(c.err);
	http_response_free(&c.resp);
	http_client_free(&c.http);
	free(host);
	free(path);
	return r == SHIP_OK;
}

bool
cred_fetch_assume_role(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	AwsCredentials src;
	PQExpBufferData form;
	bool		ok;

	memset(&src, 0, sizeof(src));
	aws_credentials_get(p->source, &src);
	if (src.access_key == NULL)
	{
		*err = psprintf("no credentials from the source of role %s", p->role_arn);
		return false;
	}
	initPQExpBuffer(&form);
	appendPQExpBufferStr(&form, "Action=AssumeRole&Version=2011-06-15");
	append_form(&form, "RoleArn", p->role_arn);
	append_form(&form, "RoleSessionName", p->session_name);
	if (p->external_id)
		append_form(&form, "ExternalId", p->external_id);
	if (p->duration_s > 0)
		appendPQExpBuffer(&form, "&DurationSeconds=%d", p->duration_s);
	ok = sts_call(p, "AssumeRole", &form, &src, out, err);
	aws_credentials_clear(&src);
	termPQExpBuffer(&form);
	return ok;
}

bool
cred_fetch_web_identity(AwsCredentialProvider *p, AwsCredentials *out, char **err, bool *config_error)
{
	PQExpBufferData form;
	char	   *token = cred_read_file(p->token_file, err);
	bool		ok;

	if (token == NULL)
		return false;
	initPQExpBuffer(&form);
	appendPQExpBufferStr(&form, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15");
	append_form(&form, "RoleArn", p->role_arn);
	append_form(&form, "RoleSessionName", p->session_name);
	append_form(&form, "WebIdentityToken", token);
	if (p->duration_s > 0)
		appendPQExpBuffer(&form, "&DurationSeconds=%d", p->duration_s);
	ok = sts_call(p, "AssumeRoleWithWebIdentity", &form, NULL, out, err);
	explicit_bzero(token, strlen(token));
	free(token);
	explicit_bzero(form.data, form.len);
	termPQExpBuffer(&form);
	return ok;
}
