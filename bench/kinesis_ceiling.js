// The emulator's own ceiling: PutRecords calls with pre-built bodies, one
// after another on a kept-alive connection, no signing work.
//   node kinesis_ceiling.js PORT STREAM TOTAL_RECORDS RECORDS_PER_CALL BYTES_PER_RECORD
'use strict';
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
const headers = {
  'Content-Type': 'application/x-amz-json-1.1',
  'X-Amz-Target': 'Kinesis_20131202.PutRecords',
  'X-Amz-Date': '20260101T000000Z',
  Authorization: 'AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/kinesis/aws4_request, ' +
    'SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=' + '0'.repeat(64),
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
