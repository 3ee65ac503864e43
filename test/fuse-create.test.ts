// Creating files through the FUSE mount with transient files constructed ahead
// (src/fuse/construct-pool.ts). First the pool on its own, with a construct function we control
// (one file ahead per shard, handed out once, refreshed when old, failures never handed out nor
// unhandled, bounded); then through a real mount on a real cluster: files created one at a time in
// directories of two shards are all linked, empty or written, and the mount leaves at most one
// constructed file per shard behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';
import { startCluster, type TestCluster } from './helpers/cluster.js';
import { ConstructPool, MAX_AGE_MS, MAX_POOLED_SHARDS, type Constructed } from '../src/fuse/construct-pool.js';
import { EggsClient } from '../src/client/index.js';
import { ROOT_DIR_INODE_ID, SHARD_COUNT, shardOf } from '../src/proto/ids.js';

// ---- the pool alone ---------------------------------------------------------------------------

/** Constructions the test resolves or rejects by hand, in order. */
class FakeShards {
  readonly calls: { dirId: bigint; resolve: (c: Constructed) => void; reject: (e: Error) => void; file: Promise<Constructed> }[] = [];
  private nextId = 100n;
  construct = (dirId: bigint): Promise<Constructed> => {
    let resolve!: (c: Constructed) => void;
    let reject!: (e: Error) => void;
    const file = new Promise<Constructed>((res, rej) => ((resolve = res), (reject = rej)));
    this.calls.push({ dirId, resolve, reject, file });
    return file;
  };
  /** Completes construction `i` with a file in the shard it was sent to. */
  complete(i: number): Constructed {
    const c = { id: (this.nextId++ << 8n) | BigInt(shardOf(this.calls[i]!.dirId)), cookie: BigInt(i) };
    this.calls[i]!.resolve(c);
    return c;
  }
}

const tick = () => new Promise((r) => setImmediate(r));

test('ConstructPool: one file ahead per shard, handed out once, refreshed when old or failed, bounded', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    const fake = new FakeShards();
    let now = 0;
    const pool = new ConstructPool(fake.construct, () => now);
    const dirA = 0x2000_0000_0000_0101n; // shard 1
    const dirB = 0x2000_0000_0000_0201n; // shard 1 too
    const dirC = 0x2000_0000_0000_0102n; // shard 2

    // Nothing ahead at first: the take constructs its own, and one more for next time.
    const first = pool.take(dirA);
    assert.equal(fake.calls.length, 2);
    assert.equal(pool.size, 1);
    const f0 = fake.complete(0);
    assert.deepEqual(await first, f0);
    const f1 = fake.complete(1);
    await tick();

    // Any directory of the same shard gets the file constructed ahead, and starts the next.
    assert.deepEqual(await pool.take(dirB), f1);
    assert.equal(fake.calls.length, 3);
    assert.equal(fake.calls[2]!.dirId, dirB);

    // Another shard has its own.
    const c = pool.take(dirC);
    assert.equal(fake.calls.length, 5, 'shard 2 constructs for itself and ahead');
    assert.equal(pool.size, 2);
    fake.complete(3);
    fake.complete(4);
    await c;

    // Still in flight when taken: handed out all the same (the caller waits for it).
    const inFlight = pool.take(dirA);
    const f2 = fake.complete(2);
    assert.deepEqual(await inFlight, f2);
    fake.complete(5);

    // Too old: not handed out (the shard's deadline is 1 h); a new one is constructed.
    now += MAX_AGE_MS;
    const afterAge = pool.take(dirA);
    assert.equal(fake.calls.length, 8, 'the old one is skipped: one for now, one ahead');
    const f6 = fake.complete(6);
    assert.deepEqual(await afterAge, f6);

    // A failed construction ahead is never handed out, nor left unhandled.
    fake.calls[7]!.reject(new Error('shard down'));
    await tick();
    assert.equal(pool.size, 1, 'the failed one is gone (shard 2 keeps its own)');
    const afterFailure = pool.take(dirA);
    assert.equal(fake.calls[8]!.dirId, dirA, 'constructed afresh');
    const f8 = fake.complete(8);
    assert.deepEqual(await afterFailure, f8);

    // drop: the next take in that shard starts afresh.
    pool.drop(dirA);
    fake.complete(9);
    const afterDrop = pool.take(dirA);
    const f10 = fake.complete(10);
    assert.deepEqual(await afterDrop, f10);

    // Bounded: one per shard, at most MAX_POOLED_SHARDS shards.
    for (let s = 0; s < MAX_POOLED_SHARDS + 10; s++) void pool.take(0x2000_0000_0000_0000n | BigInt(s)).catch(() => {});
    assert.equal(pool.size, MAX_POOLED_SHARDS);
    for (const call of fake.calls) call.reject(new Error('unused'));
    await tick();
    await tick();
    assert.deepEqual(unhandled, [], 'no unhandled rejections');
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

// ---- through a real mount ---------------------------------------------------------------------

const NO_FUSE = !existsSync('/dev/fuse') || process.getuid?.() !== 0 ? 'needs root and /dev/fuse' : false;

function sh(cmd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', cmd], { timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function mounted(mnt: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);
}

async function countTransient(client: EggsClient, shards: number[]): Promise<number> {
  let n = 0;
  for (const s of shards) for await (const _ of client.transientFiles(s)) n++;
  return n;
}

test('files created one at a time through the mount are all linked; one constructed file per shard is left', { timeout: 180_000, skip: NO_FUSE }, async (t) => {
  const dir = tempDir('fuse-create');
  const mnt = path.join(dir.path, 'mnt');
  await mkdir(mnt);
  let cluster: TestCluster | undefined;
  let mount: Service | undefined;
  let client: EggsClient | undefined;
  t.after(async () => {
    if (mount) await mount.kill('SIGTERM');
    if (mounted(mnt)) await sh(`umount -l ${mnt}`);
    await client?.close();
    if (cluster) await cluster.destroy();
    dir.remove();
  });
  cluster = await startCluster({ blockServices: 3 });
  client = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl });
  // Two directories in different shards (directory ids are spread over the shards).
  const dirs: { name: string; shard: number }[] = [];
  for (let i = 0; dirs.length < 2 && i < 64; i++) {
    const id = await client.mkdirAt(ROOT_DIR_INODE_ID, `d${i}`);
    if (!dirs.some((d) => d.shard === shardOf(id))) dirs.push({ name: `d${i}`, shard: shardOf(id) });
  }
  assert.equal(dirs.length, 2, 'two directories in different shards');
  const shards = [...new Set([shardOf(ROOT_DIR_INODE_ID), ...dirs.map((d) => d.shard)])];
  assert.ok(shards.every((s) => s >= 0 && s < SHARD_COUNT));
  const transientBefore = await countTransient(client, shards);

  mount = startEggsfs(['mount', mnt, '--shuckle', cluster.shuckleUrl]);
  await mount.waitFor(/^ready mount /);

  const FILES = 50;
  for (const d of dirs) {
    // Empty files (touch), written ones (echo, whose shell closes a dup'ed descriptor first) and
    // files of a few KiB (head), in turn.
    const r = await sh(
      `cd ${mnt}/${d.name} && for i in $(seq 1 ${FILES}); do case $((i % 3)) in 0) touch e$i ;; 1) echo hello $i > e$i ;; 2) head -c $((i * 100)) /dev/zero > e$i ;; esac; done`,
    );
    assert.equal(r.code, 0, r.stderr);
  }
  // Through the mount and straight from the cluster: every file is there, whole.
  for (const d of dirs) {
    const names = (await readdir(path.join(mnt, d.name))).sort();
    assert.equal(names.length, FILES);
    for (let i = 1; i <= FILES; i++) {
      const p = path.join(mnt, d.name, `e${i}`);
      const want = i % 3 === 0 ? '' : i % 3 === 1 ? `hello ${i}\n` : '\0'.repeat(i * 100);
      assert.equal((await stat(p)).size, Buffer.byteLength(want), p);
      assert.equal(await readFile(p, 'utf8'), want, p);
    }
    const listed: string[] = [];
    for await (const e of client.readDir(`/${d.name}`)) listed.push(e.name);
    assert.equal(listed.length, FILES, `${d.name} as the cluster lists it`);
  }
  // Constructed ahead and not used: at most one per shard the mount created files in.
  const left = (await countTransient(client, shards)) - transientBefore;
  assert.ok(left >= 1 && left <= dirs.length, `${left} transient files left for ${dirs.length} shards`);
});
