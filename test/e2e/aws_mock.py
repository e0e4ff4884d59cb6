#!/usr/bin/env python3
"""Loopback stand-ins of the AWS credential sources, for the tests.

One HTTP server answers, on the paths the SDKs use:

  EC2 instance metadata (IMDSv2)
    PUT  /latest/api/token                       (X-aws-ec2-metadata-token-ttl-seconds)
    GET  /latest/meta-data/iam/security-credentials/[ROLE]
  the container endpoint (ECS task role, EKS Pod Identity)
    GET  /container/credentials                  (Authorization checked)
  STS (Query API, XML answers shaped like AWS's)
    POST /  Action=AssumeRole | AssumeRoleWithWebIdentity
  for the tests
    GET  /__stats                                what was asked, as JSON

Every issued key is written to --keys-file ({"latest": AKID, "keys":
{"AKID": {"secret", "token", "expires"}}}) so that sigcheck_proxy.py
--keys-file accepts exactly the key that is current.  --deterministic derives a key from what was asked
(the same answer for botocore and the shipper, for parity tests);
otherwise every answer is a new key.  --malformed SOURCE answers that
source with a broken document; imds-secret and container-secret answer
with a document that breaks right at a secret key and a session token
(LEAKED_SECRET, LEAKED_TOKEN), which must never reach a log.
"""
import argparse
import hashlib
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A credentials document broken where a JSON parser's message would quote
# the secret key (unquoted) and then the token (the string never closed).
LEAKED_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYLEAKEDSECRET"
LEAKED_TOKEN = "FwoGZXIvYXdzEJr//////////LEAKEDSESSIONTOKEN"
LEAKING_ANSWER = ('{"Code": "Success", "AccessKeyId": "ASIAMOCKLEAKED000001", "SecretAccessKey": %s, '
                  '"Token": "%s' % (LEAKED_SECRET, LEAKED_TOKEN))

LOCK = threading.Lock()
STATS = {"imds_token": 0, "imds_v1": 0, "imds_role": 0, "imds_creds": 0,
         "container": 0, "container_denied": 0, "assume_role": 0,
         "web_identity": 0, "tokens_seen": [], "session_names": [],
         "external_ids": [], "durations": [], "issued": 0}
KEYS = {}
COUNTER = [0]
IMDS_TOKEN = "imds-session-token-1"


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def issue(opts, seed):
    """A new (or, deterministic, a derived) key valid for --lifetime."""
    with LOCK:
        COUNTER[0] += 1
        STATS["issued"] += 1
        if opts.deterministic:
            h = hashlib.sha1(seed.encode()).hexdigest().upper()
            akid = "ASIA" + h[:16]
        else:
            akid = "ASIAMOCK%012d" % COUNTER[0]
        secret = hashlib.sha1((akid + "/secret").encode()).hexdigest()
        token = "FwoGZXIvYXdzE" + hashlib.sha1((akid + "/token").encode()).hexdigest()
        expires = time.time() + opts.lifetime
        KEYS[akid] = {"secret": secret, "token": token, "expires": expires}
        if opts.keys_file:
            tmp = opts.keys_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"latest": akid, "keys": KEYS}, f)
            os.replace(tmp, opts.keys_file)
    # --claimed-lifetime: the answer says a later expiry than the real one
    # (a revoked or early-expired token): only a refusal reveals it.
    if opts.claimed_lifetime:
        expires = time.time() + opts.claimed_lifetime
    return akid, secret, token, expires


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            BaseHTTPRequestHandler.log_message(self, fmt, *args)

    def reply(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def bump(self, key):
        with LOCK:
            STATS[key] += 1

    # --- IMDS ---
    def do_PUT(self):
        opts = self.server.opts
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        if self.path != "/latest/api/token":
            return self.reply(404, "not found", "text/plain")
        self.bump("imds_token")
        if opts.imds_v1_only:
            return self.reply(404, "not found", "text/plain")
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(400, "missing ttl", "text/plain")
        self.reply(200, IMDS_TOKEN, "text/plain")

    def imds_get(self):
        opts = self.server.opts
        token = self.headers.get("X-aws-ec2-metadata-token")
        if token is None:
            self.bump("imds_v1")
            if not opts.imds_v1_only:
                return self.reply(401, "", "text/plain")
        elif token != IMDS_TOKEN:
            return self.reply(401, "", "text/plain")
        base = "/latest/meta-data/iam/security-credentials/"
        rest = self.path[len(base):]
        if rest == "":
            self.bump("imds_role")
            return self.reply(200, opts.role_name, "text/plain")
        if rest != opts.role_name:
            return self.reply(404, "not found", "text/plain")
        self.bump("imds_creds")
        if opts.malformed == "imds":
            return self.reply(200, '{"Code": "Success", "AccessKeyId": ')
        if opts.malformed == "imds-secret":
            return self.reply(200, LEAKING_ANSWER)
        akid, secret, token, expires = issue(opts, "imds/" + opts.role_name)
        self.reply(200, json.dumps({
            "Code": "Success", "LastUpdated": iso(time.time()), "Type": "AWS-HMAC",
            "AccessKeyId": akid, "SecretAccessKey": secret, "Token": token,
            "Expiration": iso(expires)}))

    def do_GET(self):
        opts = self.server.opts
        if self.path == "/__stats":
            with LOCK:
                return self.reply(200, json.dumps(STATS))
        if self.path.startswith("/latest/meta-data/iam/security-credentials/"):
            return self.imds_get()
        if self.path.startswith("/container/"):
            self.bump("container")
            want = opts.expect_auth
            if opts.expect_auth_file:
                with open(opts.expect_auth_file) as f:
                    want = f.read().strip()
            if want is not None and self.headers.get("Authorization") != want:
                self.bump("container_denied")
                return self.reply(403, json.dumps({"message": "bad authorization"}))
            if opts.malformed == "container":
                return self.reply(200, "<html>not json</html>")
            if opts.malformed == "container-secret":
                return self.reply(200, LEAKING_ANSWER)
            akid, secret, token, expires = issue(opts, "container/" + self.path)
            return self.reply(200, json.dumps({
                "AccessKeyId": akid, "SecretAccessKey": secret, "Token": token,
                "Expiration": iso(expires), "RoleArn": "arn:aws:iam::123456789012:role/task"}))
        self.reply(404, "not found", "text/plain")

    # --- STS ---
    def do_POST(self):
        opts = self.server.opts
        n = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        action = form.get("Action", [""])[0]
        role = form.get("RoleArn", [""])[0]
        session = form.get("RoleSessionName", [""])[0]
        with LOCK:
            STATS["session_names"].append(session)
            if "ExternalId" in form:
                STATS["external_ids"].append(form["ExternalId"][0])
            if "DurationSeconds" in form:
                STATS["durations"].append(int(form["DurationSeconds"][0]))
        if action == "AssumeRole":
            self.bump("assume_role")
            if "Authorization" not in self.headers:
                return self.sts_error(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
        elif action == "AssumeRoleWithWebIdentity":
            self.bump("web_identity")
            tok = form.get("WebIdentityToken", [""])[0]
            with LOCK:
                STATS["tokens_seen"].append(tok)
            if not tok or tok.startswith("bad"):
                return self.sts_error(400, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider")
        else:
            return self.sts_error(400, "InvalidAction", "Could not find operation " + action)
        if not role.startswith("arn:aws:iam::"):
            return self.sts_error(400, "ValidationError", "RoleArn is invalid")
        if opts.malformed == "sts":
            return self.reply(200, "<%sResponse><Broken>" % action, "text/xml")
        akid, secret, token, expires = issue(opts, action + "/" + role + "/" + session)
        ns = "https://sts.amazonaws.com/doc/2011-06-15/"
        extra = ""
        if action == "AssumeRoleWithWebIdentity":
            extra = ("<SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>"
                     "<Audience>sts.amazonaws.com</Audience><Provider>oidc.example</Provider>")
        body = ("<%sResponse xmlns=\"%s\"><%sResult>%s"
                "<AssumedRoleUser><AssumedRoleId>AROAMOCK:%s</AssumedRoleId><Arn>%s</Arn></AssumedRoleUser>"
                "<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>"
                "<SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials>"
                "<PackedPolicySize>6</PackedPolicySize></%sResult>"
                "<ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>"
                "</%sResponse>") % (action, ns, action, extra, session, role, akid, secret,
                                    token, iso(expires), action, action)
        self.reply(200, body, "text/xml")

    def sts_error(self, status, code, message):
        body = ("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>"
                "<Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
                "<RequestId>0</RequestId></ErrorResponse>") % (code, message)
        self.reply(status, body, "text/xml")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--keys-file")
    ap.add_argument("--lifetime", type=float, default=3600)
    ap.add_argument("--claimed-lifetime", type=float, default=0)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--role-name", default="fundrecs-instance-role")
    ap.add_argument("--expect-auth")
    ap.add_argument("--expect-auth-file")
    ap.add_argument("--imds-v1-only", action="store_true")
    ap.add_argument("--malformed", choices=["imds", "container", "sts", "imds-secret", "container-secret"])
    ap.add_argument("--verbose", action="store_true")
    opts = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.opts = opts
    tmp = opts.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, opts.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
