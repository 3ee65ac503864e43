// WAL checkpoints off the request path (checkpoint-worker.ts): under a sustained stream of file
// creations the checkpointer keeps each shard's uncopied WAL small and lets the WAL restart, an
// idle shard's WAL ends up wholly copied, and kill -9 in the middle of the stream (checkpoints
// running) loses no acknowledged creation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { directoryPerShard, startShards, type ShardFixture } from './helpers/shard-proc.js';
import { EggsError } from '../src/proto/errors.js';
import { InodeType } from '../src/proto/ids.js';
import { shardDbPath } from '../src/shard/host.js';
import { CHECKPOINT_WAL_BYTES, INLINE_CHECKPOINT_WAL_BYTES, WAL_SIZE_LIMIT_BYTES } from '../src/shard/schema.js';
import { CHECKPOINT_IDLE_MS } from '../src/shard/checkpoint-worker.js';
import { WAL_INDEX_READ_BYTES, readWalIndexHeader } from '../src/shard/wal-index.js';

const SHARDS = 2;
const IN_FLIGHT = 64;
/** Each shard restarts its WAL this many times (so checkpoints ran) before the kill. */
const RESTARTS_BEFORE_KILL = 3;
const STREAM_TIMEOUT_MS = 120_000;
const SAMPLE_MS = 2;

interface Acked {
  shard: number;
  dir: bigint;
  id: bigint;
}

/** Creations spread over the shards, 64 in flight, until stopped; acknowledged ones recorded. */
function createStream(fx: ShardFixture, dirs: bigint[]) {
  const acked = new Map<string, Acked>();
  let stop = false;
  let n = 0;
  let failures = 0;
  const worker = async () => {
    while (!stop) {
      const i = n++;
      const shard = i % SHARDS;
      const name = `f${i}-${'x'.repeat(100)}`; // longer names: more WAL per creation
      try {
        const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE }, shard);
        await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: dirs[shard]!, name: Buffer.from(name) }, shard);
        acked.set(name, { shard, dir: dirs[shard]!, id: f.id });
      } catch (e) {
        if (!(e instanceof EggsError)) throw e;
        failures++; // unanswered (the kill): its outcome is unknown
      }
    }
  };
  const workers = Array.from({ length: IN_FLIGHT }, worker);
  return {
    acked,
    failures: () => failures,
    stop: async () => {
      stop = true;
      await Promise.all(workers);
    },
  };
}

test('the checkpointer bounds the WAL under sustained writes, and kill -9 mid-stream loses no acknowledged creation', async (t) => {
  // Two threads: the commit counts cross from worker threads to the checkpointer thread.
  const fx = await startShards({ shards: `0-${SHARDS - 1}`, count: SHARDS, extraArgs: ['--threads', '2'] });
  t.after(() => fx.stop());
  const dirs = await directoryPerShard(fx, SHARDS);
  const shm = Array.from({ length: SHARDS }, (_, s) => openSync(`${shardDbPath(fx.dir, s)}-shm`, 'r'));
  t.after(() => shm.forEach((fd) => closeSync(fd)));
  const buf = Buffer.alloc(WAL_INDEX_READ_BYTES);
  const maxPendingBytes = new Array<number>(SHARDS).fill(0);
  const restarts = new Array<number>(SHARDS).fill(0);
  const lastFrames = new Array<number>(SHARDS).fill(0);
  const sample = () => {
    for (let s = 0; s < SHARDS; s++) {
      const h = readWalIndexHeader(shm[s]!, buf);
      if (!h) continue;
      if (h.mxFrame < lastFrames[s]!) restarts[s]!++;
      lastFrames[s] = h.mxFrame;
      if (h.nBackfill <= h.mxFrame) maxPendingBytes[s] = Math.max(maxPendingBytes[s]!, (h.mxFrame - h.nBackfill) * h.pageSizeBytes);
    }
  };

  // 1. Sustained writes: the WAL restarts again and again, and what is not yet copied stays far
  // below the inline bound (without the checkpointer it would reach INLINE_CHECKPOINT_WAL_BYTES).
  const stream = createStream(fx, dirs);
  const startMs = Date.now();
  while (restarts.some((r) => r < RESTARTS_BEFORE_KILL)) {
    assert.ok(Date.now() - startMs < STREAM_TIMEOUT_MS, `WAL restarts ${restarts} after ${stream.acked.size} creations`);
    sample();
    await new Promise((r) => setTimeout(r, SAMPLE_MS));
  }
  t.diagnostic(`${stream.acked.size} creations; WAL restarts ${restarts}; most WAL not yet copied ${maxPendingBytes.map((b) => `${(b / 1024).toFixed(0)} KiB`)}`);
  for (let s = 0; s < SHARDS; s++) {
    assert.ok(maxPendingBytes[s]! < INLINE_CHECKPOINT_WAL_BYTES / 2, `shard ${s}: ${maxPendingBytes[s]} bytes of WAL not copied (checkpointer threshold ${CHECKPOINT_WAL_BYTES})`);
    assert.ok(statSync(`${shardDbPath(fx.dir, s)}-wal`).size <= WAL_SIZE_LIMIT_BYTES + (1 << 20), `shard ${s}: WAL file over its limit`);
  }

  // 2. kill -9 in the middle of the stream, with checkpoints running.
  await fx.proc.kill('SIGKILL');
  await stream.stop();
  assert.ok(stream.failures() > 0, 'the kill happened with requests in flight');
  const acked = [...stream.acked.entries()];
  await fx.restart();
  let checked = 0;
  await Promise.all(
    Array.from({ length: 32 }, async (_, w) => {
      for (const [name, a] of acked.filter((_e, i) => i % 32 === w)) {
        const l = await fx.req('LOOKUP', { dirId: a.dir, name: Buffer.from(name) }, a.shard);
        assert.equal(l.targetId, a.id, name);
        checked++;
      }
    }),
  );
  assert.equal(checked, acked.length);

  // 3. A few more writes, then idle: the restarted process's checkpointer copies the WAL whole.
  for (let s = 0; s < SHARDS; s++) {
    const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE }, s);
    await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: dirs[s]!, name: Buffer.from('after-restart') }, s);
  }
  const shm2 = Array.from({ length: SHARDS }, (_, s) => openSync(`${shardDbPath(fx.dir, s)}-shm`, 'r'));
  t.after(() => shm2.forEach((fd) => closeSync(fd)));
  const idleDeadlineMs = Date.now() + 10 * CHECKPOINT_IDLE_MS;
  for (let s = 0; s < SHARDS; s++) {
    for (;;) {
      const h = readWalIndexHeader(shm2[s]!, buf);
      if (h && h.mxFrame > 0 && h.nBackfill === h.mxFrame) break;
      assert.ok(Date.now() < idleDeadlineMs, `shard ${s}: idle WAL not copied whole: ${JSON.stringify(h)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  // Clean stop: the checkpointer closes first, the shards' last connections remove their WALs.
  await fx.proc.kill('SIGTERM');
  assert.match(fx.proc.stderr(), /checkpoints off the request path \(0 failed/);
  for (let s = 0; s < SHARDS; s++) {
    assert.throws(() => statSync(`${shardDbPath(fx.dir, s)}-wal`), /ENOENT/, `shard ${s}: WAL left after a clean stop`);
    const db = new Database(shardDbPath(fx.dir, s), { readonly: true });
    try {
      assert.deepEqual(db.pragma('integrity_check'), [{ integrity_check: 'ok' }]);
    } finally {
      db.close();
    }
  }
});
