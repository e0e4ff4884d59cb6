#!/usr/bin/python3
"""A local endpoint in front of an AWS service emulator.

Every request's SigV4 signature is computed again with botocore (Debian's
python3-botocore) from the headers the request says it signed; a mismatch,
a wrong access key or a wrong service/region scope is answered with 403
InvalidSignatureException and counted.  The emulators do not check
signatures, this does.

It can also inject faults into a chosen share of calls: HTTP 500 and 503,
throttling (400 ProvisionedThroughputExceededException / 503 SlowDown),
per-record failures in PutRecords, dropped connections before or after
the call reached the emulator, and malformed success responses.

    sigcheck_proxy.py --listen PORT --upstream http://127.0.0.1:4567 \
        --access-key AK --secret-key SK --region us-east-1 \
        [--fault-rate 0.2] [--faults 500,503,throttle,records,drop,drop-after,garbage,denied] \
        [--list-shards-hole N] \
        [--seed N] [--port-file FILE] [--strip-auth] [--delay-puts SECONDS]
        [--shard-limits]

--keys-file FILE (written by aws_mock.py) replaces the fixed key: a request
is accepted only with the latest key issued, its session token, before its
expiry; an expired key is answered 400 ExpiredTokenException (S3:
ExpiredToken), an unknown one 403 UnrecognizedClientException (S3:
InvalidAccessKeyId).  The keys seen are counted in the stats.

GET /__stats (unsigned) returns the counters as JSON; GET /__delay/SECONDS
changes the delay of data calls (PutRecords, S3 writes) while running.

Faults of a store and of a crash, set while running with GET
/__faults?outage=1&hang=REGEX&tear=REGEX&fraction=F&newline=1 (every
parameter left out is turned off):
  outage    every signed request is answered 503 ServiceUnavailable;
  hang      an S3 PUT whose path matches REGEX is never answered nor
            forwarded (the shipper is killed while it waits);
  tear      an S3 PUT whose path matches REGEX reaches the store cut to
            the first F (default 0.5) of its body, without its
            Content-MD5 (newline=1: cut after the last newline before F),
            and is never answered: what a store that keeps a PUT cut by a
            crash holds;
  hold      an S3 PUT whose path matches REGEX waits, unanswered, until
            GET /__release (the oldest held one; ?all=1 every one), then
            reaches the store whether its client is still there or not:
            a write that lands after the shipper that sent it was killed.
            /__release answers once the released PUT is in the store.

--track-keys watches the order rule across concurrent PutRecords calls:
each call's partition keys (for a KPL aggregated record, its
sub-records' keys) are held while the call is in flight, and a call that
carries another version of a key (other data under the same key) while
an earlier call with that key is still in flight counts as a
version_overlap (the first few in overlap_examples).  A retry of the
same version is not an overlap.

--shard-limits enforces Kinesis's per-shard write limits on PutRecords, as
AWS does: 1,000 records and 1 MiB (data + partition key) per second per
shard; records over them fail with ProvisionedThroughputExceededException
and the rest are stored.  A record's shard is the open shard whose hash key
range holds its ExplicitHashKey, or the MD5 of its partition key.
"""

import argparse
import base64
import calendar
import hashlib
import http.client
import socket
import json
import random
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

try:
    import cbor2  # python3-cbor2: Kinesis's CBOR protocol (--kinesis-protocol cbor)
except ImportError:
    cbor2 = None

AMZ_CBOR = "application/x-amz-cbor-1.1"

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$")

STATS_LOCK = threading.Lock()
# PUTs held by the hold fault, oldest first: {"go": Event, "done": Event}.
HELD = []
HELD_LOCK = threading.Lock()
STATS = {"requests": 0, "verified": 0, "mismatches": 0, "cut": 0, "unsigned": 0,
         "forwarded": 0, "faults": {}, "mismatch_examples": [], "delayed": 0,
         "throttled_records": 0, "in_flight": 0, "max_in_flight": 0,
         "expired": 0, "unknown_keys": 0, "keys_seen": {},
         "version_overlaps": 0, "overlap_examples": [], "keys_tracked": 0, "cbor_calls": 0,
         "outage": 0, "hung": 0, "torn": 0, "skewed": 0, "held": 0, "held_written": 0}

KPL_MAGIC = b"\xf3\x89\x9a\xc2"
INFLIGHT_KEYS = {}  # partition key -> {data digest: calls in flight}


def _varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def _fields(buf):
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        wt = tag & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("unexpected wire type %d" % wt)
        yield tag >> 3, v


def record_data(r):
    """A record's Data: bytes in the CBOR protocol, base64 text in the JSON one."""
    return r["Data"] if isinstance(r["Data"], bytes) else base64.b64decode(r["Data"])


def record_versions(doc):
    """(partition key, digest of its data) of every user record of a PutRecords request."""
    out = []
    for r in doc.get("Records", []):
        data = record_data(r)
        if data[:4] == KPL_MAGIC:
            keys, subs = [], []
            for f, v in _fields(data[4:-16]):
                if f == 1:
                    keys.append(v.decode())
                elif f == 3:
                    sub = dict(_fields(v))
                    subs.append((sub.get(1, 0), sub.get(3, b"")))
            out.extend((keys[i], hashlib.md5(d).hexdigest()) for i, d in subs)
        else:
            out.append((r["PartitionKey"], hashlib.md5(data).hexdigest()))
    return out

LIMIT_RECORDS = 1000.0
LIMIT_BYTES = 1024.0 * 1024.0


class ShardLimits:
    """Token buckets per shard, refilled continuously, one second deep."""

    def __init__(self):
        self.lock = threading.Lock()
        self.buckets = {}
        self.maps = {}

    def shard_map(self, handler, stream):
        with self.lock:
            if stream in self.maps and time.time() - self.maps[stream][0] < 1.0:
                return self.maps[stream][1]
        conn = http.client.HTTPConnection(handler.server.opts.upstream_host,
                                          handler.server.opts.upstream_port, timeout=30)
        body = json.dumps({"StreamName": stream}).encode()
        conn.request("POST", "/", body=body, headers={
            "X-Amz-Target": "Kinesis_20131202.ListShards",
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Date": "20200101T000000Z",
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20200101/us-east-1/kinesis/aws4_request, "
                             "SignedHeaders=host, Signature=0"})
        shards = json.loads(conn.getresponse().read())["Shards"]
        conn.close()
        ranges = [(int(sh["HashKeyRange"]["StartingHashKey"]), int(sh["HashKeyRange"]["EndingHashKey"]),
                   sh["ShardId"]) for sh in shards
                  if "EndingSequenceNumber" not in sh["SequenceNumberRange"]]
        with self.lock:
            self.maps[stream] = (time.time(), ranges)
        return ranges

    def admit(self, shard, nbytes):
        now = time.time()
        with self.lock:
            recs, byts, last = self.buckets.get(shard, (LIMIT_RECORDS, LIMIT_BYTES, now))
            recs = min(LIMIT_RECORDS, recs + (now - last) * LIMIT_RECORDS)
            byts = min(LIMIT_BYTES, byts + (now - last) * LIMIT_BYTES)
            ok = recs >= 1 and byts >= nbytes
            if ok:
                recs -= 1
                byts -= nbytes
            self.buckets[shard] = (recs, byts, now)
            return ok


SHARD_LIMITS = ShardLimits()


def bump(key, sub=None):
    with STATS_LOCK:
        if sub is None:
            STATS[key] += 1
        else:
            STATS[key][sub] = STATS[key].get(sub, 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sigcheck"

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY,
        # Nagle's algorithm and the client's delayed ACK hold every answer
        # for up to 40 ms, a stall no AWS endpoint has.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        if self.server.opts.verbose:
            sys.stderr.write("sigcheck: " + (fmt % args) + "\n")

    # --- helpers -------------------------------------------------------
    def cbor(self):
        """The call is in Kinesis's CBOR protocol (and is answered in it)."""
        return (self.headers.get("Content-Type") or "").startswith(AMZ_CBOR)

    def load_doc(self, body):
        if self.cbor():
            if cbor2 is None:
                raise ValueError("a CBOR call, and python3-cbor2 is not installed")
            return cbor2.loads(body)
        return json.loads(body)

    def dump_doc(self, doc):
        return cbor2.dumps(doc) if self.cbor() else json.dumps(doc).encode()

    def reply_doc(self, status, doc):
        self.reply(status, self.dump_doc(doc), content_type=AMZ_CBOR if self.cbor() else
                   "application/x-amz-json-1.1")

    def reply(self, status, body, headers=None, content_type="application/x-amz-json-1.1"):
        # The call ends for --track-keys before the client can see the
        # answer (and send the next version of a key).
        self.untrack()
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def aws_error(self, status, code, message):
        if self.is_s3:
            body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code>"
                    "<Message>%s</Message></Error>" % (code, message))
            self.reply(status, body, content_type="application/xml")
        elif self.cbor() and cbor2 is not None:
            self.reply_doc(status, {"__type": code, "message": message})
        else:
            self.reply(status, json.dumps({"__type": code, "message": message}))

    def drop(self):
        self.untrack()
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def check_signature(self, body):
        opts = self.server.opts
        auth = self.headers.get("Authorization")
        if auth is None:
            bump("unsigned")
            return "request is not signed"
        m = AUTH_RE.match(auth)
        if not m:
            return "malformed Authorization header: %r" % auth[:60]
        access_key, date, region, service, signed, signature = m.groups()
        secret_key = opts.secret_key
        if opts.keys_file:
            try:
                with open(opts.keys_file) as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                doc = {"latest": None, "keys": {}}
            entry = doc["keys"].get(access_key)
            if entry is None:
                bump("unknown_keys")
                return ("unknown", "unknown access key %s" % access_key)
            # Only the current key: one replaced by a newer one is expired.
            if entry["expires"] <= time.time() or access_key != doc["latest"]:
                bump("expired")
                return ("expired", "The security token included in the request is expired")
            if self.headers.get("X-Amz-Security-Token") != entry["token"]:
                bump("unknown_keys")
                return ("unknown", "session token does not belong to access key %s" % access_key)
            secret_key = entry["secret"]
            bump("keys_seen", access_key)
        elif access_key != opts.access_key:
            return "unknown access key %s" % access_key
        if region != opts.region:
            return "credential scope region %s, expected %s" % (region, opts.region)
        amz_date = self.headers.get("X-Amz-Date", "")
        if not amz_date.startswith(date):
            return "X-Amz-Date %s does not match the scope date %s" % (amz_date, date)
        # As AWS: a request signed too far from the service's clock (S3: 15
        # minutes, others 5) is refused; the answer's Date tells the time.
        try:
            signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return "malformed X-Amz-Date %r" % amz_date
        if abs(signed_at - time.time()) > (900 if service == "s3" else 300):
            bump("skewed")
            return ("skew", amz_date)
        names = signed.split(";")
        if names != sorted(names) or "host" not in names:
            return "SignedHeaders must be sorted and include host: %s" % signed
        headers = {}
        for name in names:
            values = self.headers.get_all(name)
            if values is None:
                return "signed header %s is missing" % name
            headers[name] = ",".join(values)
        url = "http://" + self.headers["Host"] + self.path
        req = AWSRequest(method=self.command, url=url, data=body, headers=headers)
        req.context["timestamp"] = amz_date
        creds = Credentials(access_key, secret_key,
                            self.headers.get("X-Amz-Security-Token"))
        signer = (S3SigV4Auth if service == "s3" else SigV4Auth)(creds, service, region)
        if service == "s3":
            req.context["payload_signing_enabled"] = True
            want_hash = self.headers.get("X-Amz-Content-SHA256")
            import hashlib
            if want_hash not in ("UNSIGNED-PAYLOAD", hashlib.sha256(body).hexdigest()):
                return "x-amz-content-sha256 does not match the body"
        canonical = signer.canonical_request(req)
        expected = signer.signature(signer.string_to_sign(req, canonical), req)
        if expected != signature:
            with STATS_LOCK:
                if len(STATS["mismatch_examples"]) < 5:
                    STATS["mismatch_examples"].append(canonical)
            return "signature mismatch; botocore's canonical request:\n" + canonical
        return None

    def forward(self, body, override_body=None):
        opts = self.server.opts
        conn = getattr(self.server.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(opts.upstream_host, opts.upstream_port, timeout=60)
            self.server.local.conn = conn
        drop = {"content-length", "connection", "host"}
        if opts.strip_auth:
            # The signature was checked here; the emulator has keys of its own.
            drop |= {"authorization", "x-amz-security-token"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
        headers["Host"] = self.headers.get("Host", "")
        data = body if override_body is None else override_body
        try:
            conn.request(self.command, self.path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.server.local.conn = None
            raise
        bump("forwarded")
        return resp.status, dict(resp.getheaders()), payload

    def relay(self, status, headers, payload):
        keep = {k: v for k, v in headers.items()
                if k.lower() in ("etag", "x-amz-request-id", "x-amzn-requestid", "last-modified",
                                 "x-amz-version-id") or k.lower().startswith("x-amz-meta-")}
        ctype = headers.get("Content-Type") or headers.get("content-type") or "application/json"
        self.reply(status, payload, keep, content_type=ctype)

    # --- request handling ----------------------------------------------
    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.is_s3 = "X-Amz-Target" not in self.headers
        if len(body) < length:
            # The client went away mid-body (a test's kill -9): no request
            # to check or answer, and no signature to count as wrong.
            bump("cut")
            sys.stderr.write("sigcheck: %s %s cut after %d of %d bytes\n"
                             % (self.command, self.path, len(body), length))
            self.close_connection = True
            return

        if self.command == "GET" and self.path == "/__stats":
            with STATS_LOCK:
                self.reply(200, json.dumps(STATS), content_type="application/json")
            return

        if self.command == "GET" and self.path.startswith("/__faults"):
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            o = self.server.opts
            o.outage = q.get("outage", ["0"])[0] == "1"
            o.hang = re.compile(q["hang"][0]) if "hang" in q else None
            o.tear = re.compile(q["tear"][0]) if "tear" in q else None
            o.tear_fraction = float(q.get("fraction", ["0.5"])[0])
            o.tear_newline = q.get("newline", ["0"])[0] == "1"
            o.hold = re.compile(q["hold"][0]) if "hold" in q else None
            self.reply(200, "{}", content_type="application/json")
            return

        if self.command == "GET" and self.path.startswith("/__release"):
            every = "all=1" in self.path
            released = []
            with HELD_LOCK:
                while HELD and (every or not released):
                    released.append(HELD.pop(0))
            for ev in released:
                ev["go"].set()
            for ev in released:
                ev["done"].wait(60)
            self.reply(200, json.dumps({"released": len(released)}), content_type="application/json")
            return

        if self.command == "GET" and self.path.startswith("/__delay/"):
            self.server.opts.delay_puts = float(self.path[len("/__delay/"):])
            self.reply(200, "{}", content_type="application/json")
            return

        if self.server.opts.track_keys and self.headers.get("X-Amz-Target", "").endswith(".PutRecords"):
            self.track(body)

        bump("requests")
        if not self.is_s3 and self.cbor():
            bump("cbor_calls")
        problem = self.check_signature(body)
        if isinstance(problem, tuple):
            kind, message = problem
            sys.stderr.write("sigcheck: refused %s %s: %s\n" % (self.command, self.path, message))
            if kind == "skew":
                now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                if self.is_s3:
                    self.aws_error(403, "RequestTimeTooSkewed",
                                   "The difference between the request time and the current time is too large.")
                else:
                    self.aws_error(400, "InvalidSignatureException",
                                   "Signature expired: %s is now earlier than %s (%s - 5 min.)" % (message, now, now))
            elif kind == "expired":
                self.aws_error(400, "ExpiredToken" if self.is_s3 else "ExpiredTokenException", message)
            else:
                self.aws_error(403, "InvalidAccessKeyId" if self.is_s3 else "UnrecognizedClientException",
                               "The security token included in the request is invalid.")
            return
        if problem is not None:
            bump("mismatches")
            sys.stderr.write("sigcheck: rejected %s %s: %s\n" % (self.command, self.path, problem))
            self.aws_error(403, "InvalidSignatureException" if not self.is_s3 else "SignatureDoesNotMatch",
                           problem.splitlines()[0])
            return
        bump("verified")

        opts = self.server.opts
        if opts.outage:
            bump("outage")
            self.aws_error(503, "ServiceUnavailable", "injected outage")
            return
        if self.is_s3 and self.command == "PUT" and opts.hang and opts.hang.search(self.path):
            bump("hung")
            time.sleep(3600)
            return
        if self.is_s3 and self.command == "PUT" and opts.hold and opts.hold.search(self.path):
            ev = {"go": threading.Event(), "done": threading.Event()}
            with HELD_LOCK:
                HELD.append(ev)
            bump("held")
            ev["go"].wait()
            try:
                status, headers, payload = self.forward(body)
                bump("held_written")
            finally:
                ev["done"].set()
            try:
                self.relay(status, headers, payload)
            except OSError:
                pass  # the client is gone: the write landed all the same
            return
        if self.is_s3 and self.command == "PUT" and opts.tear and opts.tear.search(self.path):
            cut = int(len(body) * opts.tear_fraction)
            if opts.tear_newline:
                cut = body.rfind(b"\n", 0, cut) + 1
            saved = {k: self.headers[k] for k in ("Content-MD5",) if k in self.headers}
            for k in saved:
                del self.headers[k]
            self.forward(body, override_body=body[:cut])
            bump("torn")
            time.sleep(3600)
            return
        target = self.headers.get("X-Amz-Target", "")
        fault = None
        # Only calls that carry data get faults; set-up calls pass.
        faultable = target.endswith(".PutRecords") or (self.is_s3 and self.command in ("PUT", "POST", "DELETE"))
        if faultable and opts.fault_rate > 0 and self.server.rng.random() < opts.fault_rate:
            fault = self.server.rng.choice(opts.faults)
            if fault in ("records", "garbage") and self.is_s3:
                fault = "500"
        if fault:
            bump("faults", fault)
        if faultable and opts.delay_puts > 0:
            # A slow (or, with a long delay, hung) service.
            bump("delayed")
            time.sleep(opts.delay_puts)

        if fault == "500":
            self.aws_error(500, "InternalFailure" if not self.is_s3 else "InternalError", "injected fault")
            return
        if fault == "503":
            self.aws_error(503, "ServiceUnavailable", "injected fault")
            return
        if fault == "throttle":
            if self.is_s3:
                self.aws_error(503, "SlowDown", "injected throttling")
            else:
                self.aws_error(400, "ProvisionedThroughputExceededException", "injected throttling")
            return
        if fault == "denied":
            # A permanent refusal: the IAM policy does not allow it.
            self.aws_error(403, "AccessDenied" if self.is_s3 else "AccessDeniedException",
                           "injected: not authorized")
            return
        if fault == "drop":
            self.drop()
            return
        if fault == "garbage":
            # A malformed success: nothing was stored, the client must retry.
            if self.cbor():
                self.reply(200, self.dump_doc({"FailedRecordCount": 0, "Records": []})[:-1] + b"\x9f",
                           content_type=AMZ_CBOR)
            else:
                self.reply(200, b'{"FailedRecordCount": 0, "Records": [')
            return

        if fault is None and opts.shard_limits and target.endswith(".PutRecords"):
            doc = self.load_doc(body)
            ranges = SHARD_LIMITS.shard_map(self, doc.get("StreamName") or doc["StreamARN"].split("/")[-1])
            failing = set()
            for i, r in enumerate(doc["Records"]):
                if "ExplicitHashKey" in r:
                    h = int(r["ExplicitHashKey"])
                else:
                    h = int(hashlib.md5(r["PartitionKey"].encode()).hexdigest(), 16)
                shard = next((sid for lo, hi, sid in ranges if lo <= h <= hi), "?")
                size = len(record_data(r)) + len(r["PartitionKey"].encode())
                if not SHARD_LIMITS.admit(shard, size):
                    failing.add(i)
            if failing:
                with STATS_LOCK:
                    STATS["throttled_records"] += len(failing)
                fault = "limits"

        if fault == "records" or fault == "limits":
            doc = self.load_doc(body)
            records = doc["Records"]
            if fault == "records":
                failing = set(i for i in range(len(records)) if self.server.rng.random() < 0.3)
                if not failing:
                    failing = {self.server.rng.randrange(len(records))}
            kept = [r for i, r in enumerate(records) if i not in failing]
            if kept:
                doc["Records"] = kept
                status, headers, payload = self.forward(body, self.dump_doc(doc))
                if status != 200:
                    self.relay(status, headers, payload)
                    return
                results = iter(self.load_doc(payload)["Records"])
            else:
                results = iter(())
            merged = []
            failed = 0
            for i in range(len(records)):
                if i in failing:
                    failed += 1
                    merged.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                   "ErrorMessage": "Rate exceeded for shard" if fault == "limits"
                                   else "injected per-record failure"})
                else:
                    r = next(results)
                    if r.get("ErrorCode"):  # kinesis-mock writes null on success
                        failed += 1
                    merged.append(r)
            self.reply_doc(200, {"FailedRecordCount": failed, "Records": merged})
            return

        try:
            status, headers, payload = self.forward(body)
        except (OSError, http.client.HTTPException) as e:
            self.aws_error(502, "ServiceUnavailable", "upstream failed: %s" % e)
            return
        if fault == "drop-after":
            self.drop()
            return
        if target.endswith(".ListShards") and status == 200 and opts.list_shards_hole > 0:
            # A shard map with a hole: one open shard left out of the answer
            # (as a page lost, or a reshard caught half-way, would).
            doc = json.loads(payload)
            open_shards = [sh for sh in doc.get("Shards", [])
                           if "EndingSequenceNumber" not in sh.get("SequenceNumberRange", {})]
            if len(open_shards) > 1:
                with STATS_LOCK:
                    if opts.list_shards_hole > 0:
                        opts.list_shards_hole -= 1
                        STATS["faults"]["list-shards-hole"] = STATS["faults"].get("list-shards-hole", 0) + 1
                        victim = open_shards[len(open_shards) // 2]
                        doc["Shards"] = [sh for sh in doc["Shards"] if sh is not victim]
                        payload = json.dumps(doc).encode()
        self.relay(status, headers, payload)

    def track(self, body):
        """Holds the call's key versions while it is in flight (--track-keys)."""
        try:
            versions = record_versions(self.load_doc(body))
        except (ValueError, KeyError, IndexError, UnicodeDecodeError, TypeError, EOFError):
            return
        # Versions of one key within one call are in order (one KPL record
        # per shard per call); only other calls' versions can overlap.
        mine = {}
        for key, digest in versions:
            mine.setdefault(key, set()).add(digest)
        with STATS_LOCK:
            for key, digests in mine.items():
                held = INFLIGHT_KEYS.get(key)
                if held and set(held) != digests:
                    STATS["version_overlaps"] += 1
                    if len(STATS["overlap_examples"]) < 5:
                        STATS["overlap_examples"].append(key)
            for key, digest in versions:
                held = INFLIGHT_KEYS.setdefault(key, {})
                held[digest] = held.get(digest, 0) + 1
            STATS["keys_tracked"] += len(versions)
        self.tracked = versions

    def untrack(self):
        versions, self.tracked = getattr(self, "tracked", None), None
        if not versions:
            return
        with STATS_LOCK:
            for key, digest in versions:
                held = INFLIGHT_KEYS[key]
                held[digest] -= 1
                if held[digest] == 0:
                    del held[digest]
                if not held:
                    del INFLIGHT_KEYS[key]

    def handle_counted(self):
        """Counts the data calls in flight at once (max_in_flight)."""
        data_call = self.headers.get("X-Amz-Target", "").endswith(".PutRecords")
        if data_call:
            with STATS_LOCK:
                STATS["in_flight"] += 1
                STATS["max_in_flight"] = max(STATS["max_in_flight"], STATS["in_flight"])
        try:
            self.handle_any()
        finally:
            self.untrack()
            if data_call:
                with STATS_LOCK:
                    STATS["in_flight"] -= 1

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_counted


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--access-key", default="")
    ap.add_argument("--secret-key", default="")
    ap.add_argument("--keys-file")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--faults", default="500,503,throttle,records,drop,drop-after,garbage")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--port-file")
    ap.add_argument("--shard-limits", action="store_true",
                    help="enforce Kinesis's per-shard write limits on PutRecords")
    ap.add_argument("--delay-puts", type=float, default=0.0,
                    help="delay every data call by this many seconds before answering")
    ap.add_argument("--track-keys", action="store_true",
                    help="count versions of a key in flight in two PutRecords calls at once")
    ap.add_argument("--list-shards-hole", type=int, default=0,
                    help="leave one open shard out of the first N ListShards answers")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--strip-auth", action="store_true",
                    help="forward requests without their signature (s3rver checks its own keys)")
    opts = ap.parse_args()
    opts.outage, opts.hang, opts.tear, opts.hold = False, None, None, None
    opts.tear_fraction, opts.tear_newline = 0.5, False
    opts.faults = [f for f in opts.faults.split(",") if f]
    up = urllib.parse.urlsplit(opts.upstream)
    opts.upstream_host, opts.upstream_port = up.hostname, up.port or 80

    server = ThreadingHTTPServer(("127.0.0.1", opts.listen), Handler)
    server.daemon_threads = True
    server.opts = opts
    server.local = threading.local()
    server.rng = random.Random(opts.seed)
    port = server.server_address[1]
    if opts.port_file:
        with open(opts.port_file + ".tmp", "w") as f:
            f.write(str(port))
        import os
        os.rename(opts.port_file + ".tmp", opts.port_file)
    sys.stderr.write("sigcheck: listening on 127.0.0.1:%d, upstream %s\n" % (port, opts.upstream))
    server.serve_forever()


if __name__ == "__main__":
    main()
