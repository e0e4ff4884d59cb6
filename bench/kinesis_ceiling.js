// A stand-in's own ceiling: PutRecords calls with pre-built bodies, one
// after another on a kept-alive connection, no signing work per call.
//   node kinesis_ceiling.js PORT STREAM TOTAL_RECORDS RECORDS_PER_CALL BYTES_PER_RECORD
// With AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set, the body is signed
// once (SigV4, a fixed date): the same signature is valid for every call,
// so a stand-in that checks signatures checks a real one each time.
'use strict';
const crypto = require('crypto');
const http = require('http');

const [port, stream, total, perCall, size] = process.argv.slice(2).map((v, i) => (i === 1 ? v : Number(v)));
const row = Buffer.alloc(size, 'x');
row[size - 1] = 10;
const records = [];
for (let i = 0; i < perCall; i++) {
  records.push({ Data: row.toString('base64'), PartitionKey: `fundrecs_schema.orders:{"order_id":${i}}` });
}
const body = JSON.stringify({ StreamName: stream, Records: records });
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const amzDate = '20260101T000000Z';
const target = 'Kinesis_20131202.PutRecords';
const host = `127.0.0.1:${port}`;

function signature() {
  const key = process.env.AWS_ACCESS_KEY_ID;
  const secret = process.env.AWS_SECRET_ACCESS_KEY;
  if (!key || !secret) {
    return ['AKIDBENCH', '0'.repeat(64)];
  }
  const sha = (v) => crypto.createHash('sha256').update(v).digest('hex');
  const hmac = (k, v) => crypto.createHmac('sha256', k).update(v).digest();
  const canonical = ['POST', '/', '', 'content-type:application/x-amz-json-1.1', `host:${host}`,
    `x-amz-date:${amzDate}`, `x-amz-target:${target}`, '', 'content-type;host;x-amz-date;x-amz-target',
    sha(body)].join('\n');
  const scope = '20260101/us-east-1/kinesis/aws4_request';
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha(canonical)].join('\n');
  let k = hmac('AWS4' + secret, '20260101');
  for (const part of ['us-east-1', 'kinesis', 'aws4_request']) k = hmac(k, part);
  return [key, crypto.createHmac('sha256', k).update(toSign).digest('hex')];
}

const [accessKey, sig] = signature();
const headers = {
  'Content-Type': 'application/x-amz-json-1.1',
  'X-Amz-Target': target,
  'X-Amz-Date': amzDate,
  Host: host,
  Authorization: `AWS4-HMAC-SHA256 Credential=${accessKey}/20260101/us-east-1/kinesis/aws4_request, ` +
    `SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=${sig}`,
  'Content-Length': Buffer.byteLength(body),
};

function put() {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/', agent, headers }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}: ${data}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

(async () => {
  const calls = Math.max(1, Math.ceil(total / perCall));
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) await put();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ calls, records: calls * perCall, seconds: secs, rows_per_s: (calls * perCall) / secs }));
  agent.destroy();
})().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
