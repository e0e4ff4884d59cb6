// De-aggregates Kinesis records with aws-kinesis-agg, the library Lambda and
// other consumers use, verifying every record's MD5 trailer, and checks each
// user record's hash key against the shard it was read from, as KCL does.
//
//   node deagg.js SHARDS.json < records.jsonl > user-records.jsonl
//
// Input: kinesis_tool.py read --raw lines, and kinesis_tool.py shards output.
// Output: one line per user record {shard, seq, sub, pk, data, in_shard,
// aggregated}; the exit status is 1 on a checksum or decoding error.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const readline = require('readline');
const agg = require('aws-kinesis-agg');

const shards = {};
for (const s of JSON.parse(fs.readFileSync(process.argv[2], 'utf8')))
	shards[s.id] = { start: BigInt(s.start), end: BigInt(s.end) };

function hashKey(pk) {
	return BigInt('0x' + crypto.createHash('md5').update(pk, 'utf8').digest('hex'));
}

// One record at a time: a soak reads millions of rows (all of them held
// at once took more than Node's 4 GB heap).
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
let failed = false;
rl.on('line', (l) => {
	if (!l.trim())
		return;
	const r = JSON.parse(l);
	const raw = Buffer.from(r.data_b64, 'base64');
	const aggregated = raw.slice(0, 4).toString('hex') === 'f3899ac2';
	agg.deaggregateSync({ partitionKey: r.pk, sequenceNumber: r.seq, data: r.data_b64 }, true,
		(err, users) => {
			if (err) {
				process.stderr.write(`record ${r.shard}/${r.seq}: ${err}\n`);
				failed = true;
				return;
			}
			const range = shards[r.shard];
			for (const u of users) {
				const h = u.explicitPartitionKey ? BigInt(u.explicitPartitionKey) : hashKey(u.partitionKey);
				process.stdout.write(JSON.stringify({
					shard: r.shard, seq: r.seq, sub: u.subSequenceNumber, pk: u.partitionKey,
					data: Buffer.from(u.data, 'base64').toString('utf8'),
					in_shard: range !== undefined && h >= range.start && h <= range.end,
					aggregated,
				}) + '\n');
			}
		});
});
rl.on('close', () => {
	// Not process.exit(): it would cut off output still queued for a pipe.
	process.exitCode = failed ? 1 : 0;
});
