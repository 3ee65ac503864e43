// Durability (issue item 6): kill -9 a shard process in the middle of a stream of file creations
// spread over several shards; after a restart every acknowledged creation must be there, with
// its content, and the databases must be intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { directoryPerShard, startShards } from './helpers/shard-proc.js';
import { EggsError } from '../src/proto/errors.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';
import { InodeType } from '../src/proto/ids.js';

const SHARDS = 4;
const IN_FLIGHT = 64;

test('kill -9 during a stream of creates loses no acknowledged change', async (t) => {
  // Two threads: the kill also hits a process whose shards live in worker threads.
  const fx = await startShards({ shards: `0-${SHARDS - 1}`, count: SHARDS, extraArgs: ['--threads', '2'] });
  t.after(() => fx.stop());
  const dirs = await directoryPerShard(fx, SHARDS);
  const acked = new Map<string, { shard: number; dir: bigint; id: bigint; content: Buffer }>();
  let stop = false;
  let n = 0;
  let failures = 0;
  const worker = async () => {
    while (!stop) {
      const i = n++;
      const shard = i % SHARDS;
      const name = `f${i}`;
      const content = Buffer.from(`content of file ${i}`);
      try {
        const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE }, shard);
        await fx.req(
          'ADD_SPAN_INITIATE',
          { fileId: f.id, cookie: f.cookie, byteOffset: 0n, storageClass: 0, parity: 0, crc32: crcToBytes(crc32c(content)), size: BigInt(content.length), bodyBytes: content, bodyBlocks: [] },
          shard,
        );
        await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: dirs[shard]!, name: Buffer.from(name) }, shard);
        acked.set(name, { shard, dir: dirs[shard]!, id: f.id, content });
      } catch (e) {
        if (!(e instanceof EggsError)) throw e;
        failures++; // unanswered: its outcome is unknown, nothing to check
      }
    }
  };
  const workers = Array.from({ length: IN_FLIGHT }, worker);
  // Let the stream run, then kill -9 while requests are in flight.
  while (acked.size < 2_000) await new Promise((r) => setTimeout(r, 10));
  await fx.proc.kill('SIGKILL');
  stop = true;
  await Promise.all(workers);
  assert.ok(failures > 0, 'the kill happened with requests in flight');
  const ackedCount = acked.size;
  t.diagnostic(`${ackedCount} acknowledged creations, ${failures} unanswered at the kill`);

  await fx.restart();
  let checked = 0;
  await Promise.all(
    Array.from({ length: 32 }, async (_, w) => {
      const entries = [...acked.entries()].filter((_e, i) => i % 32 === w);
      for (const [name, a] of entries) {
        const l = await fx.req('LOOKUP', { dirId: a.dir, name: Buffer.from(name) }, a.shard);
        assert.equal(l.targetId, a.id, name);
        const spans = await fx.req('FILE_SPANS', { fileId: a.id, byteOffset: 0n }, a.shard);
        assert.deepEqual(spans.spans[0]!.bodyBytes, a.content, name);
        checked++;
      }
    }),
  );
  assert.equal(checked, ackedCount);
  for (let s = 0; s < SHARDS; s++) assert.deepEqual((await fx.req('STAT', { id: dirs[s]! }, s)).opaque, Buffer.from(`d${s}`));
  await fx.proc.kill('SIGTERM');
  for (let s = 0; s < SHARDS; s++) {
    const db = new Database(path.join(fx.dir, `shard_${String(s).padStart(3, '0')}.sqlite`), { readonly: true });
    try {
      assert.deepEqual(db.pragma('integrity_check'), [{ integrity_check: 'ok' }]);
    } finally {
      db.close();
    }
  }
});
