// Listing a directory over several hash ranges at once (src/client/read-dir.ts) against a real
// shard: for directories from empty to thousands of names (short and long), the listing is the
// very sequence a page-by-page walk gives, a large one is read with many pages in flight and few
// pages read twice, a small one costs one request, and errors and malformed cursors surface.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startShards, type ShardFixture } from './helpers/shard-proc.js';
import { HASH_SPACE, MAX_RANGES, PAGES_PER_RANGE, RANGES_IN_FLIGHT, planRanges, readDirBatches, type FetchPage, type ReadDirPage } from '../src/client/read-dir.js';
import { EggsError, ErrorCode } from '../src/proto/errors.js';
import { InodeType, ROOT_DIR_INODE_ID } from '../src/proto/ids.js';
import type { EdgeT } from '../src/proto/messages.js';
import { AS_OF_NOW } from '../src/proto/time.js';

let fx: ShardFixture;
before(async () => {
  fx = await startShards();
});
after(async () => fx?.stop());

let nextDirLocal = 1n;
async function dirWith(names: string[]): Promise<bigint> {
  const id = 0x2000000000000000n | ((nextDirLocal++ + 9000n) << 8n);
  await fx.req('CREATE_DIRECTORY_INODE', { id, ownerId: ROOT_DIR_INODE_ID, opaque: Buffer.alloc(0) });
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < names.length; i = next++) {
      const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
      await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: id, name: Buffer.from(names[i]!) });
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  return id;
}

/** A page fetcher for `dir` that counts requests and the most ever in flight. */
function counted(dir: bigint): { fetch: FetchPage; stats: { requests: number; inFlight: number; maxInFlight: number } } {
  const stats = { requests: 0, inFlight: 0, maxInFlight: 0 };
  const fetch: FetchPage = async (startHash) => {
    stats.requests++;
    stats.maxInFlight = Math.max(stats.maxInFlight, ++stats.inFlight);
    try {
      return await fx.req('READ_DIR', { dirId: dir, startHash, asOfTime: AS_OF_NOW });
    } finally {
      stats.inFlight--;
    }
  };
  return { fetch, stats };
}

/** The page-by-page walk the spec describes, and how many pages it took. */
async function walk(dir: bigint): Promise<{ edges: EdgeT[]; pages: number; firstPage: ReadDirPage }> {
  const edges: EdgeT[] = [];
  let pages = 0;
  let firstPage: ReadDirPage | undefined;
  for (let h = 0n; ; ) {
    const r = await fx.req('READ_DIR', { dirId: dir, startHash: h, asOfTime: AS_OF_NOW });
    firstPage ??= r;
    pages++;
    edges.push(...r.results);
    if (r.nextHash === 0n) return { edges, pages, firstPage };
    h = r.nextHash;
  }
}

async function listAll(fetch: FetchPage): Promise<EdgeT[]> {
  const out: EdgeT[] = [];
  for await (const batch of readDirBatches(fetch)) out.push(...batch);
  return out;
}

const summary = (edges: EdgeT[]) => edges.map((e) => `${e.nameHash.toString(16)} ${e.name.toString('hex')} ${e.targetId.toString(16)} ${e.creationTime}`);

test('planRanges: ranges follow the first page\'s density, in order, bounded', () => {
  // A first page that covered half the hash space: one page left, one range.
  assert.deepEqual(planRanges(40, HASH_SPACE / 2n), [HASH_SPACE / 2n]);
  // 1/1000 of the space: about 999 pages left, in ranges of PAGES_PER_RANGE pages.
  const starts = planRanges(40, HASH_SPACE / 1000n);
  assert.equal(starts.length, Math.floor(999 / PAGES_PER_RANGE));
  assert.equal(starts[0], HASH_SPACE / 1000n);
  for (let i = 1; i < starts.length; i++) assert.ok(starts[i]! > starts[i - 1]!, 'ascending');
  assert.ok(starts[starts.length - 1]! < HASH_SPACE);
  // A huge directory is cut into at most MAX_RANGES ranges.
  assert.equal(planRanges(40, 1000n).length, MAX_RANGES);
  // A first page with no entries (one huge hash bucket) says nothing about density: one range.
  assert.deepEqual(planRanges(0, 1000n), [1000n]);
  assert.throws(() => planRanges(1, 0n), RangeError);
  assert.throws(() => planRanges(1, HASH_SPACE), RangeError);
});

test('a listing is exactly the page-by-page walk, for directories of every size', async () => {
  const cases: Array<[string, string[]]> = [
    ['empty', []],
    ['one name', ['only']],
    ['about a page', Array.from({ length: 45 }, (_, i) => `f${String(i).padStart(6, '0')}`)],
    ['a few pages', Array.from({ length: 200 }, (_, i) => `g${i}`)],
    ['long names', Array.from({ length: 300 }, (_, i) => `${'x'.repeat(200)}${i}`)],
    ['thousands', Array.from({ length: 5000 }, (_, i) => `file-${i}.dat`)],
  ];
  for (const [what, names] of cases) {
    const dir = await dirWith(names);
    const { fetch, stats } = counted(dir);
    const got = await listAll(fetch);
    const seq = await walk(dir);
    assert.equal(got.length, names.length, what);
    assert.deepEqual(summary(got), summary(seq.edges), `${what}: same sequence as the walk`);
    assert.deepEqual(got.map((e) => e.name.toString()).sort(), [...names].sort(), `${what}: every name once`);
    if (seq.pages === 1) assert.equal(stats.requests, 1, `${what}: a one-page directory costs one request`);
    if (names.length === 5000) {
      assert.ok(seq.pages > 100, `the walk took ${seq.pages} pages`);
      assert.ok(stats.maxInFlight > 1 && stats.maxInFlight <= RANGES_IN_FLIGHT, `pages in flight: ${stats.maxInFlight}`);
      // Each range reads at most one page more than the walk does over the same hashes.
      const ranges = planRanges(seq.firstPage.results.length, seq.firstPage.nextHash).length;
      assert.ok(ranges > 1, `${ranges} ranges`);
      assert.ok(stats.requests <= seq.pages + ranges, `${stats.requests} requests for ${seq.pages} pages in ${ranges} ranges`);
    }
  }
});

test('a missing directory fails the listing with its error', async () => {
  const { fetch } = counted(0x2000000000000000n | (123456n << 8n));
  await assert.rejects(listAll(fetch), (err: unknown) => err instanceof EggsError && err.code === ErrorCode.DIRECTORY_NOT_FOUND);
});

test('a cursor that goes backwards is a malformed response, not an endless loop', async () => {
  const dir = await dirWith(Array.from({ length: 400 }, (_, i) => `h${i}`));
  const { fetch } = counted(dir);
  let calls = 0;
  const backwards: FetchPage = async (startHash) => {
    const page = await fetch(startHash);
    // After the first page, every page claims to continue where it started.
    return ++calls > 1 && page.nextHash !== 0n ? { ...page, nextHash: startHash } : page;
  };
  await assert.rejects(listAll(backwards), (err: unknown) => err instanceof EggsError && err.code === ErrorCode.MALFORMED_RESPONSE);
});

test('a consumer that stops early leaves no failure behind', async () => {
  const dir = await dirWith(Array.from({ length: 2000 }, (_, i) => `e${i}`));
  const { fetch, stats } = counted(dir);
  let batches = 0;
  for await (const _batch of readDirBatches(fetch)) {
    // The first batch is the first page alone: stopping there costs one request.
    if (++batches === 1) assert.equal(stats.requests, 1);
    if (batches === 2) break;
  }
  // The ranges already in flight finish on their own (their results dropped); no more start.
  const atStop = stats.requests;
  for (let i = 0; i < 100 && stats.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(stats.inFlight, 0);
  const pagesPerRangeBound = 2 * PAGES_PER_RANGE + 2;
  assert.ok(stats.requests <= 1 + RANGES_IN_FLIGHT * pagesPerRangeBound, `${stats.requests} requests (${atStop} when stopped)`);
});
