// Listing a directory over several hash ranges at once (src/client/read-dir.ts) against a real
// shard: for directories from empty to thousands of names (short and long), the listing is the
// very sequence a page-by-page walk gives, a large one is read with many pages in flight and few
// pages read twice, a small one costs one request, and errors and malformed cursors surface.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { directoryWithFiles, startShards, type ShardFixture } from './helpers/shard-proc.js';
import { UdpFaultProxy } from './helpers/udp-fault-proxy.js';
import { freeUdpRange } from './helpers/ports.js';
import { EggsClient, type DirEntryWithAttrs } from '../src/client/index.js';
import { HASH_SPACE, MAX_RANGES, PAGES_PER_RANGE, RANGES_IN_FLIGHT, planRanges, readDirBatches, type FetchPage, type ReadDirPage } from '../src/client/read-dir.js';
import { EggsError, ErrorCode } from '../src/proto/errors.js';
import { InodeType } from '../src/proto/ids.js';
import type { EdgeT, EdgeWithAttrsT } from '../src/proto/messages.js';
import { UDP_MTU } from '../src/proto/envelope.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';
import { STORAGE_CLASS_INLINE } from '../src/client/file-writer.js';
import { AS_OF_NOW } from '../src/proto/time.js';

let fx: ShardFixture;
before(async () => {
  fx = await startShards();
});
after(async () => fx?.stop());

let nextDirLocal = 9001n;
const dirWith = (names: string[]) => directoryWithFiles(fx, nextDirLocal++, names);

/** A page fetcher for `dir` that counts requests and the most ever in flight. */
function counted(dir: bigint): { fetch: FetchPage<EdgeT>; stats: { requests: number; inFlight: number; maxInFlight: number } } {
  const stats = { requests: 0, inFlight: 0, maxInFlight: 0 };
  const fetch: FetchPage<EdgeT> = async (startHash) => {
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
async function walk(dir: bigint): Promise<{ edges: EdgeT[]; pages: number; firstPage: ReadDirPage<EdgeT> }> {
  const edges: EdgeT[] = [];
  let pages = 0;
  let firstPage: ReadDirPage<EdgeT> | undefined;
  for (let h = 0n; ; ) {
    const r = await fx.req('READ_DIR', { dirId: dir, startHash: h, asOfTime: AS_OF_NOW });
    firstPage ??= r;
    pages++;
    edges.push(...r.results);
    if (r.nextHash === 0n) return { edges, pages, firstPage };
    h = r.nextHash;
  }
}

async function listAll<E extends EdgeT>(fetch: FetchPage<E>): Promise<E[]> {
  const out: E[] = [];
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
  const backwards: FetchPage<EdgeT> = async (startHash) => {
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
  // Bounded by the transport's 2 s timeout: a request in flight ends by then, answered or not.
  for (let i = 0; i < 300 && stats.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(stats.inFlight, 0);
  const pagesPerRangeBound = 2 * PAGES_PER_RANGE + 2;
  assert.ok(stats.requests <= 1 + RANGES_IN_FLIGHT * pagesPerRangeBound, `${stats.requests} requests (${atStop} when stopped)`);
});

test('READ_DIR_WITH_ATTRS (extension): READ_DIR\'s edges and pages, with the sizes and mtimes of this shard\'s linked files', async () => {
  const names = Array.from({ length: 700 }, (_, i) => (i % 7 === 0 ? `${'long-'.repeat(40)}${i}` : `a${i}`));
  const dir = await dirWith(names);
  // Entries without attributes: a directory, a file of another shard, a file still transient.
  const sub = 0x2000000000000000n | (77777n << 8n);
  await fx.req('CREATE_DIRECTORY_INODE', { id: sub, ownerId: dir, opaque: Buffer.alloc(0) });
  const link = async (name: string, target: bigint) => {
    await fx.req('CREATE_LOCKED_CURRENT_EDGE', { dirId: dir, name: Buffer.from(name), targetId: target, creationTime: 0n });
    await fx.req('UNLOCK_CURRENT_EDGE', { dirId: dir, name: Buffer.from(name), targetId: target, wasMoved: false });
  };
  await link('sub', sub);
  await link('elsewhere', 0x4000000000000101n);
  const transient = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
  await link('transient', transient.id);
  // One file with bytes, so that sizes are not all zero.
  const sized = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
  const abc = Buffer.from('abc');
  await fx.req('ADD_SPAN_INITIATE', { fileId: sized.id, cookie: sized.cookie, byteOffset: 0n, storageClass: STORAGE_CLASS_INLINE, parity: 0, crc32: crcToBytes(crc32c(abc)), size: 3n, bodyBytes: abc, bodyBlocks: [] });
  await fx.req('LINK_FILE', { fileId: sized.id, cookie: sized.cookie, ownerId: dir, name: Buffer.from('sized') });

  const pageBytes: number[] = [];
  const withAttrs: FetchPage<EdgeWithAttrsT> = async (startHash) => {
    const page = await fx.req('READ_DIR_WITH_ATTRS', { dirId: dir, startHash, asOfTime: AS_OF_NOW });
    pageBytes.push(13 + 10 + page.results.reduce((n, e) => n + 42 + e.name.length, 0));
    return page;
  };
  const got = await listAll(withAttrs);
  const seq = await walk(dir);
  assert.deepEqual(summary(got), summary(seq.edges), 'the same edges as READ_DIR, in the same order');
  assert.ok(Math.max(...pageBytes) <= UDP_MTU, `pages fit a datagram: ${Math.max(...pageBytes)} bytes`);
  assert.ok(pageBytes.length > 20, `${pageBytes.length} pages`);
  for (const e of got) {
    const name = e.name.toString();
    if (name === 'sub' || name === 'elsewhere' || name === 'transient') {
      assert.equal(e.hasAttrs, false, name);
      assert.equal(e.size, 0n);
      continue;
    }
    assert.equal(e.hasAttrs, true, name);
    const st = await fx.req('STAT', { id: e.targetId });
    assert.equal(e.size, st.sizeOrOwner, `${name}: size as STAT gives it`);
    assert.equal(e.mtime, st.mtime, `${name}: mtime as STAT gives it`);
  }
  assert.equal(got.find((e) => e.name.toString() === 'sized')?.size, 3n);
  // Pages from any start hash agree with READ_DIR's from the same hash.
  for (const start of [0n, seq.edges[100]!.nameHash, seq.edges[100]!.nameHash + 1n, HASH_SPACE - 1n, HASH_SPACE, 0xffffffffffffffffn]) {
    const a = await fx.req('READ_DIR_WITH_ATTRS', { dirId: dir, startHash: start, asOfTime: AS_OF_NOW });
    const b = await fx.req('READ_DIR', { dirId: dir, startHash: start, asOfTime: AS_OF_NOW });
    assert.deepEqual(summary(a.results), summary(b.results).slice(0, a.results.length), `from ${start}`);
    if (a.nextHash !== 0n) assert.ok(!a.results.some((e) => e.nameHash === a.nextHash), 'a hash bucket is not split');
  }
  await fx.err('READ_DIR_WITH_ATTRS', { dirId: 0x2000000000000000n | (99999n << 8n), startHash: 0n, asOfTime: AS_OF_NOW }, ErrorCode.DIRECTORY_NOT_FOUND);
});

test('the client lists with attributes, and with READ_DIR from a shard without the extension (an original one answers MALFORMED_REQUEST)', async () => {
  const names = Array.from({ length: 150 }, (_, i) => `o${i}`);
  const dir = await dirWith(names);
  const direct = await EggsClient.connect({ shardHost: '127.0.0.1', shardBasePort: fx.basePort });
  const proxy = await UdpFaultProxy.start({ basePort: await freeUdpRange(1), count: 1, upstreamBasePort: fx.basePort });
  const refused = proxy.addRule({ kind: 'READ_DIR_WITH_ATTRS', times: 1_000, action: { t: 'error', code: ErrorCode.MALFORMED_REQUEST } });
  const old = await EggsClient.connect({ shardHost: '127.0.0.1', shardBasePort: proxy.basePort });
  try {
    const list = async (c: EggsClient) => {
      const out: DirEntryWithAttrs[] = [];
      for await (const e of c.readDirWithAttrs(dir)) out.push(e);
      return out;
    };
    const withAttrs = await list(direct);
    assert.deepEqual(withAttrs.map((e) => e.name).sort(), [...names].sort());
    assert.ok(withAttrs.every((e) => e.attrs !== undefined && e.attrs.size === 0), 'every (empty) file with its attributes');
    const fallback = await list(old);
    assert.deepEqual(fallback.map((e) => e.name), withAttrs.map((e) => e.name), 'the same entries, in the same order');
    assert.ok(fallback.every((e) => e.attrs === undefined), 'no attributes from READ_DIR');
    assert.equal(refused.fired, 1);
    await list(old);
    assert.equal(refused.fired, 1, 'the shard is remembered as without the extension');
  } finally {
    await old.close();
    await direct.close();
    await proxy.close();
  }
});
