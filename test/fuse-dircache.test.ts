// The FUSE driver's directory lookahead (src/fuse/dir-cache.ts). First the cache on its own, with a
// listing function we control (when the lookahead starts, single-flight, expiry, our mutations
// during a fetch, limits); then through a real mount on a real cluster: once lookups in a
// directory are answered from its listing, another client's creations and removals still show
// within ENTRY_TTL_MS (plus slack), and the mount's own changes show at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';
import { startCluster, type TestCluster } from './helpers/cluster.js';
import { until } from './helpers/until.js';
import { DirCache, LOOKAHEAD_AFTER_LOOKUPS, MAX_LISTED_ENTRIES, WALK_AHEAD_MAX, WALK_AHEAD_MIN } from '../src/fuse/dir-cache.js';
import { STAT_AHEAD_IN_FLIGHT, STAT_AHEAD_QUEUE, StatAhead } from '../src/fuse/stat-ahead.js';
import { ENTRY_TTL_MS } from '../src/fuse/eggsfs.js';

// ---- the cache alone --------------------------------------------------------------------------

/** A directory listing served page by page, each page released by the test. */
class FakeDirs {
  readonly dirs = new Map<bigint, Map<string, bigint>>();
  calls = 0;
  gate: Promise<void> = Promise.resolve();
  lister = (dirId: bigint) => {
    this.calls++;
    const dirs = this;
    return (async function* () {
      await dirs.gate;
      for (const [name, id] of dirs.dirs.get(dirId) ?? new Map<string, bigint>()) yield { name, id };
    })();
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test('DirCache: lookahead after LOOKAHEAD_AFTER_LOOKUPS shard lookups, single-flight, expiry, mutations', async () => {
  const fake = new FakeDirs();
  fake.dirs.set(1n, new Map([['a', 10n], ['b', 11n]]));
  let now = 1_000;
  const cache = new DirCache(ENTRY_TTL_MS, fake.lister, () => now);
  assert.equal(cache.probe(1n, 'a'), undefined, 'nothing cached at first');
  for (let i = 0; i < LOOKAHEAD_AFTER_LOOKUPS - 1; i++) cache.shardLookup(1n);
  await tick();
  assert.equal(fake.calls, 0, 'not before LOOKAHEAD_AFTER_LOOKUPS lookups');
  let release!: () => void;
  fake.gate = new Promise((r) => (release = r));
  cache.shardLookup(1n);
  cache.shardLookup(1n);
  for (let i = 0; i < 3 * LOOKAHEAD_AFTER_LOOKUPS; i++) cache.shardLookup(1n);
  assert.equal(fake.calls, 1, 'one fetch in flight per directory');
  assert.equal(cache.probe(1n, 'a'), undefined, 'lookups go to the shard while the fetch runs');
  // Our own mutations during the fetch are replayed onto its result.
  cache.linked(1n, 'c', 12n);
  cache.removed(1n, 'b');
  release();
  await until('the listing', async () => cache.probe(1n, 'a') !== undefined);
  assert.deepEqual(cache.probe(1n, 'a'), { id: 10n, ttlMs: ENTRY_TTL_MS, ahead: [] });
  assert.equal(cache.probe(1n, 'b')?.id, null, 'removed during the fetch');
  assert.equal(cache.probe(1n, 'c')?.id, 12n, 'linked during the fetch');
  assert.equal(cache.probe(1n, 'zz')?.id, null, 'a name not listed does not exist');
  now += 400;
  assert.equal(cache.probe(1n, 'a')?.ttlMs, ENTRY_TTL_MS - 400, 'valid for ENTRY_TTL_MS from the start of the fetch');
  cache.linked(1n, 'd', 13n);
  cache.removed(1n, 'a');
  assert.equal(cache.probe(1n, 'd')?.id, 13n);
  assert.equal(cache.probe(1n, 'a')?.id, null);
  now += ENTRY_TTL_MS;
  assert.equal(cache.probe(1n, 'd'), undefined, 'expired');
  // Used and expired: the next shard lookup refreshes it at once.
  fake.dirs.get(1n)!.set('e', 14n);
  cache.shardLookup(1n);
  assert.equal(fake.calls, 2);
  await until('the refreshed listing', async () => cache.probe(1n, 'e') !== undefined);
  assert.equal(cache.probe(1n, 'e')?.id, 14n);
  // A failed mutation, or one with an unknown effect, drops the listing and discards a fetch.
  cache.invalidate(1n);
  assert.equal(cache.probe(1n, 'e'), undefined);
  fake.gate = new Promise((r) => (release = r));
  const fill = cache.beginFill(1n);
  cache.invalidate(1n);
  cache.endFill(fill, new Map([['x', 1n]]));
  assert.equal(cache.probe(1n, 'x'), undefined, 'a fill overtaken by an invalidation is not cached');
  release();
});

test('DirCache: a directory above MAX_LISTED_ENTRIES is not cached; listings are bounded', async () => {
  let now = 0;
  const big = new FakeDirs();
  const names = new Map<string, bigint>();
  for (let i = 0; i <= MAX_LISTED_ENTRIES; i++) names.set(`f${i}`, BigInt(i + 100));
  big.dirs.set(2n, names);
  const cache = new DirCache(ENTRY_TTL_MS, big.lister, () => now);
  for (let i = 0; i < LOOKAHEAD_AFTER_LOOKUPS; i++) cache.shardLookup(2n);
  await until('the fetch to end', async () => cache.stats().fetching === 0);
  assert.equal(cache.probe(2n, 'f1'), undefined, 'too big: not cached');
  for (let i = 0; i < 2 * LOOKAHEAD_AFTER_LOOKUPS; i++) cache.shardLookup(2n);
  assert.equal(big.calls, 1, 'and not fetched again at once');
  // Many small directories: at most MAX_CACHED_DIRS, least recently used dropped.
  for (let d = 0n; d < 100n; d++) {
    const f = cache.beginFill(1000n + d);
    cache.endFill(f, new Map([['n', d]]));
  }
  assert.equal(cache.stats().dirs, 64);
  assert.equal(cache.stats().entries, 64);
  assert.equal(cache.probe(1000n, 'n'), undefined, 'the oldest was dropped');
  assert.equal(cache.probe(1099n, 'n')?.id, 99n);
  now += 1;
});

test('DirCache: lookups walking a listing in order hand out the ids after them, in a growing window', () => {
  const now = 0;
  const cache = new DirCache(ENTRY_TTL_MS, new FakeDirs().lister, () => now);
  const N = 2_000;
  const ids = new Map<string, bigint>();
  for (let i = 0; i < N; i++) ids.set(`n${i}`, 0x4000000000000000n + BigInt(i));
  cache.endFill(cache.beginFill(3n), ids);
  const idAt = (i: number) => 0x4000000000000000n + BigInt(i);
  // A walk from the start: the first lookup hands out WALK_AHEAD_MIN ids, each next one the ids
  // its doubled window adds, never one twice, never more than WALK_AHEAD_MAX past the lookup.
  const handed = new Set<bigint>();
  const first = cache.probe(3n, 'n0')!;
  assert.deepEqual(first.ahead, Array.from({ length: WALK_AHEAD_MIN }, (_, i) => idAt(i + 1)));
  for (const id of first.ahead) handed.add(id);
  for (let i = 1; i < 1_000; i++) {
    const p = cache.probe(3n, `n${i}`)!;
    assert.equal(p.id, idAt(i));
    for (const id of p.ahead) {
      assert.ok(!handed.has(id), `id ${id} handed out twice`);
      assert.ok(id > idAt(i) && id <= idAt(i + WALK_AHEAD_MAX), 'within the window after the lookup');
      handed.add(id);
    }
  }
  assert.equal(handed.size, 999 + WALK_AHEAD_MAX, 'the walk is always a full window ahead');
  // A jump breaks the walk: nothing is handed out until lookups follow each other again.
  assert.deepEqual(cache.probe(3n, 'n1500')!.ahead, []);
  assert.deepEqual(cache.probe(3n, 'n10')!.ahead, [], 'backwards');
  const resumed = cache.probe(3n, 'n11')!.ahead;
  assert.ok(resumed.length === 0, 'ids up to n1511 were handed out already');
  // Removed names are skipped; names looked up that are not there change nothing.
  cache.removed(3n, 'n1513');
  assert.equal(cache.probe(3n, 'absent')!.id, null);
  cache.probe(3n, 'n1501');
  const after = cache.probe(3n, 'n1502')!.ahead;
  assert.ok(after.length > 0 && !after.includes(idAt(1513)) && !after.includes(0n), 'a removed name is not handed out');
});

test('StatAhead: bounded in flight, each id once, directories and known ids skipped, a waited-for id first', async () => {
  const started: bigint[] = [];
  const release = new Map<bigint, (fail: boolean) => void>();
  const known = new Set<bigint>([0x4000000000000007n]);
  const ahead = new StatAhead(
    (id) =>
      new Promise<void>((resolve, reject) => {
        started.push(id);
        release.set(id, (fail) => {
          if (fail) return reject(new Error('gone'));
          known.add(id);
          resolve();
        });
      }),
    (id) => known.has(id),
  );
  const file = (i: number) => 0x4000000000000000n + BigInt(i);
  const ids = Array.from({ length: 200 }, (_, i) => file(i));
  ahead.want([...ids, 0x2000000000000100n, 0n]);
  ahead.want(ids);
  assert.equal(started.length, STAT_AHEAD_IN_FLIGHT, 'no more than STAT_AHEAD_IN_FLIGHT at once');
  assert.ok(!started.includes(file(7)), 'a known id is not fetched');
  assert.deepEqual(ahead.stats(), { inFlight: STAT_AHEAD_IN_FLIGHT, queued: 200 - 1 - STAT_AHEAD_IN_FLIGHT });
  // A lookup waiting for a queued id has it sent now, ahead of the queue.
  const waited = ahead.waitFor(file(150))!;
  assert.equal(started[started.length - 1], file(150));
  assert.equal(ahead.waitFor(file(150)), waited, 'the same fetch, not a second one');
  assert.equal(ahead.waitFor(0x4000000000999999n), undefined, 'never asked for');
  // A failed fetch is only a hint: waiting for it resolves, and queued ones take the room.
  assert.equal(ahead.stats().inFlight, STAT_AHEAD_IN_FLIGHT + 1, 'the waited-for one went past the bound');
  release.get(file(0))!(true);
  release.get(file(150))!(false);
  await waited;
  await new Promise((r) => setImmediate(r));
  assert.equal(ahead.stats().inFlight, STAT_AHEAD_IN_FLIGHT, 'finished fetches make room for queued ones');
  for (;;) {
    const pending = started.filter((id) => !known.has(id) && release.has(id));
    if (pending.length === 0 || started.length >= 199) break;
    for (const id of pending) {
      release.get(id)!(false);
      release.delete(id);
    }
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(new Set(started).size, started.length, 'each id fetched once');
  assert.ok(!started.includes(0x2000000000000100n) && !started.includes(0n), 'directories and 0 skipped');
  // The queue is bounded: wishes past STAT_AHEAD_QUEUE are dropped.
  const flood = new StatAhead(() => new Promise<void>(() => {}), () => false);
  flood.want(Array.from({ length: STAT_AHEAD_QUEUE + STAT_AHEAD_IN_FLIGHT + 100 }, (_, i) => file(100_000 + i)));
  assert.deepEqual(flood.stats(), { inFlight: STAT_AHEAD_IN_FLIGHT, queued: STAT_AHEAD_QUEUE - STAT_AHEAD_IN_FLIGHT });
});

// ---- through a real mount ---------------------------------------------------------------------

const NO_FUSE = !existsSync('/dev/fuse') || process.getuid?.() !== 0 ? 'needs root and /dev/fuse' : false;

function mounted(mnt: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);
}

/** How long another client's change may take to show through the mount: the TTL, plus slack for a busy machine. */
const VISIBLE_WITHIN_MS = ENTRY_TTL_MS + 2_000;

const exists = (p: string) =>
  stat(p).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      return false;
    },
  );

test('directory lookahead through a real mount', { timeout: 300_000, skip: NO_FUSE }, async (t) => {
  const work = tempDir('fuse-dircache');
  const mnt = path.join(work.path, 'mnt');
  await mkdir(mnt);
  let cluster: TestCluster | undefined;
  let mount: Service | undefined;
  const { EggsClient } = await import('../src/client/index.js');
  let client: Awaited<ReturnType<typeof EggsClient.connect>> | undefined;
  t.after(async () => {
    await client?.close();
    if (mount) await mount.kill('SIGTERM');
    if (mounted(mnt)) await new Promise((r) => execFile('umount', ['-l', mnt], r));
    await cluster?.destroy();
    work.remove();
  });
  cluster = await startCluster({ blockServices: 3 });
  mount = startEggsfs(['mount', mnt, '--shuckle', cluster.shuckleUrl, '--timeout-ms', '500']);
  await mount.waitFor(/^ready mount /);
  client = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl });
  const m = (p: string) => path.join(mnt, p);
  const FILES = 4 * LOOKAHEAD_AFTER_LOOKUPS;
  await mkdir(m('d'));
  for (let i = 0; i < FILES; i++) await writeFile(m(`d/f${i}`), `file ${i}\n`);
  /** Lookups of names the kernel has not cached: enough for the lookahead, and to keep it fresh. */
  let probe = 0;
  const lookups = async () => {
    for (let i = 0; i < 2 * LOOKAHEAD_AFTER_LOOKUPS; i++) assert.equal(await exists(m(`d/absent${probe++}`)), false);
  };

  await t.test('a file created by another client shows within ENTRY_TTL_MS', async () => {
    await lookups();
    const w = client!.createFile((await client!.stat('/d')).id, 'other');
    await w.write(Buffer.from('from the other client\n'));
    await w.close();
    const t0 = Date.now();
    await until('the other client\'s file through the mount', async () => {
      await lookups();
      return exists(m('d/other'));
    });
    assert.ok(Date.now() - t0 <= VISIBLE_WITHIN_MS, `visible after ${Date.now() - t0} ms`);
    assert.equal((await stat(m('d/other'))).size, 'from the other client\n'.length);
  });

  await t.test('a file removed by another client disappears within ENTRY_TTL_MS', async () => {
    await lookups();
    assert.equal(await exists(m('d/f3')), true);
    await client!.unlink('/d/f3');
    const t0 = Date.now();
    await until('the removal through the mount', async () => {
      await lookups();
      return !(await exists(m('d/f3')));
    });
    assert.ok(Date.now() - t0 <= VISIBLE_WITHIN_MS, `gone after ${Date.now() - t0} ms`);
  });

  await t.test('changes made through the mount show at once', async () => {
    await lookups();
    await writeFile(m('d/new'), 'new\n');
    assert.equal((await stat(m('d/new'))).size, 4, 'created');
    await unlink(m('d/f4'));
    assert.equal(await exists(m('d/f4')), false, 'unlinked');
    await rename(m('d/f5'), m('d/f5-renamed'));
    assert.equal(await exists(m('d/f5')), false, 'renamed away');
    assert.equal((await stat(m('d/f5-renamed'))).size, 'file 5\n'.length, 'renamed to');
    await rename(m('d/f6'), m('d/f7'));
    assert.equal((await stat(m('d/f7'))).size, 'file 6\n'.length, 'renamed over another file');
    await mkdir(m('d2'));
    await rename(m('d/f8'), m('d2/f8'));
    assert.equal(await exists(m('d/f8')), false, 'moved to another directory');
    assert.equal((await stat(m('d2/f8'))).size, 'file 8\n'.length);
    await mkdir(m('d/sub'));
    assert.ok((await stat(m('d/sub'))).isDirectory(), 'mkdir');
    await rmdir(m('d/sub'));
    assert.equal(await exists(m('d/sub')), false, 'rmdir');
    await lookups();
    // And the server agrees with what the mount shows.
    const names: string[] = [];
    for await (const e of client!.readDir('/d')) names.push(e.name);
    assert.deepEqual(names.sort(), (await readdir(m('d'))).sort());
    assert.ok(names.includes('new') && names.includes('f5-renamed') && !names.includes('f4') && !names.includes('f6'));
  });

  await t.test('find, ls -l and du walking a directory another client wrote see every size right', async () => {
    const walkId = await client!.mkdir('/walk');
    const sizes = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const w = client!.createFile(walkId, `w${i}`);
      await w.write(Buffer.alloc(i * 7 + (i % 3), 0x61));
      await w.close();
      sizes.set(`w${i}`, i * 7 + (i % 3));
    }
    const run = (cmd: string, args: string[]) =>
      new Promise<string>((resolve, reject) => execFile(cmd, args, { maxBuffer: 1 << 24 }, (err, out) => (err ? reject(err) : resolve(out))));
    const found = new Map<string, number>();
    for (const line of (await run('find', [m('walk'), '-type', 'f', '-printf', '%f %s\\n'])).trim().split('\n')) {
      const [name, size] = line.split(' ');
      found.set(name!, Number(size));
    }
    assert.deepEqual(found, sizes, 'find');
    const listed = new Map<string, number>();
    for (const line of (await run('ls', ['-l', '--time-style=+', m('walk')])).trim().split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      listed.set(f[f.length - 1]!, Number(f[4]));
    }
    assert.deepEqual(listed, sizes, 'ls -l');
    const total = [...sizes.values()].reduce((a, b) => a + b, 0);
    assert.equal(Number((await run('du', ['-s', '-b', m('walk')])).split('\t')[0]), total, 'du -b (the directory itself counts 0)');
  });

  await t.test('a directory above MAX_LISTED_ENTRIES is not cached and stays correct', { timeout: 240_000 }, async () => {
    await mkdir(m('big'));
    const bigId = (await client!.stat('/big')).id;
    const n = MAX_LISTED_ENTRIES + 1;
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        for (let i = next++; i < n; i = next++) await client!.createFile(bigId, `f${i}`).close();
      }),
    );
    // Enough lookups for a lookahead (which finds the directory too big), and a little more.
    for (let i = 0; i < 4 * LOOKAHEAD_AFTER_LOOKUPS; i++) assert.equal(await exists(m(`big/f${i * 997}`)), true);
    assert.equal(await exists(m('big/absent')), false);
    await client!.unlink('/big/f5');
    const w = client!.createFile(bigId, 'late');
    await w.close();
    await until('the other client\'s changes in the big directory', async () => {
      for (let i = 0; i < LOOKAHEAD_AFTER_LOOKUPS; i++) await exists(m(`big/f${i * 991}`));
      return (await exists(m('big/late'))) && !(await exists(m('big/f5')));
    });
  });
});
