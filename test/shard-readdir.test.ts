// READ_DIR byte for byte against metadata.md §4.3's rules, computed here independently from the
// directory's whole history (FULL_READ_DIR): every instant, every cursor, long names, pages that
// end inside a hash bucket and a bucket larger than a page. The shard encodes READ_DIR straight
// from SQLite's rows (src/shard/readdir.ts), so this checks that path against proto's codecs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { rawUdpRequest, startShards, type ShardFixture } from './helpers/shard-proc.js';
import { ErrorCode } from '../src/proto/errors.js';
import { EXTRA_BIT, InodeType, ROOT_DIR_INODE_ID } from '../src/proto/ids.js';
import { AS_OF_NOW } from '../src/proto/time.js';
import { UDP_MTU, encodeErrorResponse, encodeShardRequest, encodeShardResponse, decodeResponse, SHARD_PROTOCOL } from '../src/proto/envelope.js';
import { SHARD_MESSAGES, type EdgeT } from '../src/proto/messages.js';

const b = (s: string) => Buffer.from(s);
const MAX_I63 = (1n << 63n) - 1n;
const REQUEST_ID = 0x0102030405060708n;

let fx: ShardFixture;
before(async () => {
  fx = await startShards();
});
after(async () => fx?.stop());

let nextDirLocal = 1n;
async function newDir(): Promise<bigint> {
  const id = 0x2000000000000000n | ((nextDirLocal++ + 5000n) << 8n);
  await fx.req('CREATE_DIRECTORY_INODE', { id, ownerId: ROOT_DIR_INODE_ID, opaque: Buffer.alloc(0) });
  return id;
}

async function createFile(dir: bigint, name: Buffer): Promise<bigint> {
  const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
  await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: dir, name });
  return f.id;
}

function rawRequest(datagram: Buffer, timeoutMs = 2_000): Promise<Buffer> {
  return rawUdpRequest(datagram, fx.basePort, timeoutMs);
}

/** Every edge of the directory, through FULL_READ_DIR, without the ownership bit. */
async function history(dir: bigint): Promise<EdgeT[]> {
  const all: EdgeT[] = [];
  let cursor: { startHash: bigint; startName: Buffer; startTime: bigint } = { startHash: 0n, startName: b(''), startTime: 0n };
  for (;;) {
    const r = await fx.req('FULL_READ_DIR', { dirId: dir, ...cursor });
    all.push(...r.results.map((e) => ({ ...e, targetId: e.targetId & ~EXTRA_BIT })));
    if (r.finished) return all;
    const last = r.results[r.results.length - 1]!;
    cursor = { startHash: last.nameHash, startName: last.name, startTime: last.creationTime + 1n };
  }
}

/** The READ_DIR answer the spec's rules give (§4.3 READ_DIR steps 2–4), encoded by proto's codecs. */
function expectedAnswer(edges: readonly EdgeT[], startHash: bigint, asOfTime: bigint): Buffer {
  const asOf = asOfTime & MAX_I63;
  const newest = new Map<string, EdgeT>();
  for (const e of edges) {
    if (e.creationTime > asOf || e.nameHash < startHash) continue;
    const key = `${e.nameHash}/${e.name.toString('hex')}`;
    const seen = newest.get(key);
    if (!seen || seen.creationTime < e.creationTime) newest.set(key, e);
  }
  const listed = [...newest.values()]
    .filter((e) => e.targetId !== 0n)
    .sort((x, y) => (x.nameHash !== y.nameHash ? (x.nameHash < y.nameHash ? -1 : 1) : Buffer.compare(x.name, y.name)));
  const results: EdgeT[] = [];
  let used = 13 + 10;
  let nextHash = 0n;
  for (const e of listed) {
    if (used + 25 + e.name.length > UDP_MTU) {
      nextHash = e.nameHash;
      while (results.length > 0 && results[results.length - 1]!.nameHash === nextHash) results.pop();
      if (results.length === 0) return encodeErrorResponse(SHARD_PROTOCOL, REQUEST_ID, ErrorCode.INTERNAL_ERROR);
      break;
    }
    used += 25 + e.name.length;
    results.push(e);
  }
  return encodeShardResponse('READ_DIR', REQUEST_ID, { nextHash, results });
}

async function checkReadDir(dir: bigint, edges: readonly EdgeT[], startHash: bigint, asOfTime: bigint): Promise<Buffer> {
  const got = await rawRequest(encodeShardRequest('READ_DIR', REQUEST_ID, { dirId: dir, startHash, asOfTime }));
  const want = expectedAnswer(edges, startHash, asOfTime);
  assert.equal(got.toString('hex'), want.toString('hex'), `READ_DIR start 0x${startHash.toString(16)} as of 0x${asOfTime.toString(16)}`);
  return got;
}

test('READ_DIR: exact pages over a directory with history, at every instant and cursor', async () => {
  const dir = await newDir();
  // Names of 1 to 255 bytes, so that pages end at different counts.
  const names = Array.from({ length: 120 }, (_, i) => b(`n${i}-${'y'.repeat((i * 37) % 250)}`.slice(0, 255)));
  const ids = new Map<string, bigint>();
  for (const n of names) ids.set(n.toString(), await createFile(dir, n));
  for (const n of names.slice(0, 15)) await fx.req('SOFT_UNLINK_FILE', { ownerId: dir, fileId: ids.get(n.toString())!, name: n });
  for (const n of names.slice(15, 25)) await createFile(dir, n); // overwrite
  for (const n of names.slice(25, 35)) await fx.req('SAME_DIRECTORY_RENAME', { dirId: dir, targetId: ids.get(n.toString())!, oldName: n, newName: b(`r-${n.toString()}`.slice(0, 255)) });
  for (const n of names.slice(0, 5)) await createFile(dir, n); // back after an unlink

  const edges = await history(dir);
  assert.equal(edges.length, 120 + 15 + 10 + 10 * 2 + 5); // a rename adds a marker and the new name
  const times = [...new Set(edges.map((e) => e.creationTime))].sort((x, y) => (x < y ? -1 : 1));
  const instants = [0n, ...times.flatMap((t) => [t - 1n, t]), AS_OF_NOW, times[40]! | (1n << 63n)];
  let pages = 0;
  for (const asOf of instants) {
    // Walk the listing the way a client does: from 0, then each next_hash.
    let h = 0n;
    for (;;) {
      const got = await checkReadDir(dir, edges, h, asOf);
      pages++;
      const r = decodeResponse(SHARD_PROTOCOL, got, SHARD_MESSAGES.READ_DIR).body as { nextHash: bigint };
      if (r.nextHash === 0n) break;
      assert.ok(r.nextHash > h);
      h = r.nextHash;
    }
  }
  assert.ok(pages > instants.length * 2, 'most instants take several pages');
  // Cursors at, just past and between every hash, and beyond what can be stored.
  const hashes = [...new Set(edges.map((e) => e.nameHash))];
  for (const h of [...hashes.slice(0, 40), ...hashes.slice(0, 40).map((x) => x + 1n), MAX_I63, 1n << 63n, (1n << 64n) - 1n]) {
    await checkReadDir(dir, edges, h, AS_OF_NOW);
  }
  // A missing directory, and one that exists but is empty.
  const empty = await newDir();
  await checkReadDir(empty, [], 0n, AS_OF_NOW);
  await checkReadDir(empty, [], 1n << 63n, AS_OF_NOW);
  await fx.err('READ_DIR', { dirId: empty + 0x100000n, startHash: 0n, asOfTime: AS_OF_NOW }, ErrorCode.DIRECTORY_NOT_FOUND);
  await fx.err('READ_DIR', { dirId: empty + 0x100000n, startHash: 1n << 63n, asOfTime: AS_OF_NOW }, ErrorCode.DIRECTORY_NOT_FOUND);
});

test('READ_DIR: a page never splits a hash bucket; a bucket larger than a page is INTERNAL_ERROR', async () => {
  const dir = await newDir();
  // MD5 collisions cannot be made to order, so the colliding edges are written into the database
  // directly (the shard reads it afresh for every request).
  const db = new Database(path.join(fx.dir, 'shard_000.sqlite'));
  db.defaultSafeIntegers(true);
  db.pragma('busy_timeout = 5000');
  const insert = db.prepare('INSERT INTO edges (dir_id, name_hash, name, creation_time, current, target_id, owned, locked) VALUES (?, ?, ?, ?, 1, ?, NULL, 0)');
  const bucket = (hash: bigint, count: number, nameBytes: number) => {
    for (let i = 0; i < count; i++) insert.run(dir, hash, b(`h${hash}-${i}-`.padEnd(nameBytes, 'z')), 1000n + BigInt(i), 0x4000000000000000n | (BigInt(i + 1) << 8n));
  };
  try {
    bucket(10n, 20, 30); // 20 × 55 bytes fit
    bucket(20n, 10, 30); // the page fills up inside this bucket: all of it moves to the next page
    bucket(30n, 60, 30); // more than a page of one hash
    bucket(40n, 2, 5);
  } finally {
    db.close();
  }
  const edges = await history(dir);
  const first = await checkReadDir(dir, edges, 0n, AS_OF_NOW);
  const r = decodeResponse(SHARD_PROTOCOL, first, SHARD_MESSAGES.READ_DIR).body as { nextHash: bigint; results: EdgeT[] };
  assert.equal(r.results.length, 20);
  assert.equal(r.nextHash, 20n);
  const second = await checkReadDir(dir, edges, 20n, AS_OF_NOW);
  assert.equal((decodeResponse(SHARD_PROTOCOL, second, SHARD_MESSAGES.READ_DIR).body as { nextHash: bigint }).nextHash, 30n);
  const third = await checkReadDir(dir, edges, 30n, AS_OF_NOW);
  assert.equal(third[12], 0, 'an error answer');
  await checkReadDir(dir, edges, 31n, AS_OF_NOW);
  // As of a time inside the big bucket's history, it is small enough again.
  await checkReadDir(dir, edges, 30n, 1010n);
});
