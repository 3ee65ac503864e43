// The shard server over real UDP against a real `eggsfs shard` process: every request kind, every
// error of metadata.md §4, the ten ShardTests scenarios of §10, and the §8 [bug]s fixed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { rawUdpRequest, startShards, waitForBlockServices, type ShardFixture } from './helpers/shard-proc.js';
import { ErrorCode } from '../src/proto/errors.js';
import { ROOT_DIR_INODE_ID, EXTRA_BIT, InodeType, inodeType, shardOf } from '../src/proto/ids.js';
import { AS_OF_NOW } from '../src/proto/time.js';
import { crc32c, crc32cCombine, crc32cZeros, crcToBytes } from '../src/proto/crc32c.js';
import { blockWriteCertificate, blockWriteProof, DEFAULT_CDC_KEY } from '../src/proto/crypto.js';
import { nameHash } from '../src/proto/hash.js';
import { encodeShardRequest, SHARD_PROTOCOL, decodeResponse } from '../src/proto/envelope.js';
import { SHARD_MESSAGES, BLOCK_FLAG_STALE, BLOCK_FLAG_TERMINAL, type BlockInfoT } from '../src/proto/messages.js';

const E = ErrorCode;
const ROOT = ROOT_DIR_INODE_ID;
const b = (s: string) => Buffer.from(s);
const crcOf = (data: Buffer) => crcToBytes(crc32c(data));

let fx: ShardFixture;
before(async () => {
  fx = await startShards({ shards: '0-2', count: 3 });
  await waitForBlockServices(fx);
});
after(async () => fx?.stop());

let nextDirLocal = 1n;
/** A directory id of shard `shard` (CDC-style allocation). */
function newDirId(shard = 0): bigint {
  return 0x2000000000000000n | ((nextDirLocal++ + 1000n) << 8n) | BigInt(shard);
}

/** mkdir the way the CDC does it: inode, locked edge, unlock. Parent in shard 0. */
async function mkdir(parent: bigint, name: string, shard = 0): Promise<bigint> {
  const id = newDirId(shard);
  await fx.req('CREATE_DIRECTORY_INODE', { id, ownerId: parent, opaque: Buffer.alloc(0) }, shard);
  const t = (await fx.req('STAT', { id: ROOT })).mtime + 1_000_000n; // newer than anything in root
  await fx.req('CREATE_LOCKED_CURRENT_EDGE', { dirId: parent, name: b(name), targetId: id, creationTime: t > now() ? t : now() }, shardOf(parent));
  await fx.req('UNLOCK_CURRENT_EDGE', { dirId: parent, name: b(name), targetId: id, wasMoved: false }, shardOf(parent));
  return id;
}

function now(): bigint {
  return BigInt(Date.now() - Date.UTC(2020, 0, 1)) * 1_000_000n;
}

async function createFile(dir: bigint, name: string, content = 'hi', shard = shardOf(dir)): Promise<bigint> {
  const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE }, shard);
  if (content.length > 0) await addInline(f, 0n, b(content), shard);
  await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: dir, name: b(name) }, shard);
  return f.id;
}

async function addInline(f: { id: bigint; cookie: bigint }, offset: bigint, data: Buffer, shard = 0) {
  return fx.req(
    'ADD_SPAN_INITIATE',
    { fileId: f.id, cookie: f.cookie, byteOffset: offset, storageClass: 0, parity: 0, crc32: crcOf(data), size: BigInt(data.length), bodyBytes: data, bodyBlocks: [] },
    shard,
  );
}

async function listNames(dir: bigint, asOf = AS_OF_NOW, shard = shardOf(dir)): Promise<string[]> {
  const names: string[] = [];
  let h = 0n;
  for (;;) {
    const r = await fx.req('READ_DIR', { dirId: dir, startHash: h, asOfTime: asOf }, shard);
    for (const e of r.results) names.push(e.name.toString());
    if (r.nextHash === 0n) break;
    h = r.nextHash;
  }
  return names.sort();
}

function keyFor(block: BlockInfoT): Buffer {
  const ip = [...block.ip].join('.');
  const s = fx.shuckle.services.find((x) => x.ip === ip && x.port === block.port);
  assert.ok(s, `block service ${ip}:${block.port} is not in the fixture list`);
  return Buffer.from(s.secret_key, 'hex');
}

// ---------------------------------------------------------------------------------------------
// §10 ShardTests scenarios

test('test_sql_constraints: the schema refuses rows that break the data model', async () => {
  const db = new Database(path.join(fx.dir, 'shard_000.sqlite'));
  db.defaultSafeIntegers(true);
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  const refuses = (sql: string, ...params: unknown[]) => assert.throws(() => db.prepare(sql).run(...params), /constraint|CHECK|UNIQUE|NOT NULL|FOREIGN/i, sql);
  const accepts = (sql: string, ...params: unknown[]) => db.prepare(sql).run(...params);
  db.exec('BEGIN IMMEDIATE');
  try {
    refuses('UPDATE shard_info SET shard = 5');
    refuses('INSERT INTO shard_info (id, shard, secret_key, next_file_id, next_symlink_id, next_block_id, schema_version) VALUES (1, 0, zeroblob(16), 0, 0, 0, 1)');
    const F = 0x4000000000000000n;
    refuses('INSERT INTO files VALUES (?, 0, 0, 0, NULL, NULL)', F | 0x105n); // another shard
    refuses('INSERT INTO files VALUES (?, 0, 0, 0, NULL, NULL)', 0x2000000000000500n); // directory type
    refuses('INSERT INTO files VALUES (?, 1, 0, 0, NULL, NULL)', F | 0x700n); // transient without deadline
    refuses('INSERT INTO files VALUES (?, 1, 0, 0, 5, NULL)', F | 0x700n); // transient without span state
    refuses('INSERT INTO files VALUES (?, 0, 0, 0, 5, 0)', F | 0x700n); // linked with deadline
    accepts('INSERT INTO files VALUES (?, 1, 0, 0, 5, 0)', F | 0x7000n);
    refuses('INSERT INTO directories VALUES (?, 0, 0, 1, x\'\')', 0x2000000000000501n); // another shard
    refuses('INSERT INTO directories VALUES (?, 0, 0, 1, x\'\')', F | 0x500n); // file type
    refuses('INSERT INTO directories VALUES (?, ?, 0, 1, x\'\')', 0x2000000000000500n, F); // file owner
    accepts('INSERT INTO directories VALUES (?, ?, 0, 1, x\'\')', 0x2000000000000600n, 0x2000000000000001n); // cross-shard owner
    const D = 0x2000000000000600n;
    refuses("INSERT INTO edges VALUES (?, 1, x'61', 1, 1, ?, NULL, NULL)", D, F); // current without lock flag
    refuses("INSERT INTO edges VALUES (?, 1, x'61', 1, 1, 0, NULL, 0)", D); // current with target 0
    refuses("INSERT INTO edges VALUES (?, 1, x'61', 1, 1, ?, 1, 0)", D, F); // current with owned
    refuses("INSERT INTO edges VALUES (?, 1, x'61', 1, 0, ?, NULL, NULL)", D, F); // snapshot without owned
    refuses("INSERT INTO edges VALUES (?, 1, x'61', 1, 0, ?, 1, 0)", D, F); // snapshot with lock
    accepts("INSERT INTO edges VALUES (?, 1, x'61', 1, 1, ?, NULL, 0)", D, F);
    refuses("INSERT INTO edges VALUES (?, 1, x'61', 2, 1, ?, NULL, 0)", D, F); // two current edges for one name
    refuses("INSERT INTO edges VALUES (?, 1, x'62', 1, 1, ?, NULL, 0)", 0x2000000000000700n, F); // no such directory
  } finally {
    db.exec('ROLLBACK');
    db.close();
  }
});

test('test_root_dir: STAT of the root succeeds on shard 0', async () => {
  const s = await fx.req('STAT', { id: ROOT });
  assert.equal(s.sizeOrOwner, 0n);
  assert.ok(s.mtime > 0n);
  await fx.err('STAT', { id: ROOT }, E.DIRECTORY_NOT_FOUND, 1);
});

test('test_create_dir: CREATE_DIRECTORY_INODE, STAT, MISMATCHING_OWNER, new opaque', async () => {
  const id = newDirId(1);
  const r = await fx.req('CREATE_DIRECTORY_INODE', { id, ownerId: ROOT, opaque: b('x') }, 1);
  const s = await fx.req('STAT', { id }, 1);
  assert.deepEqual(s, { mtime: r.mtime, sizeOrOwner: ROOT, opaque: b('x') });
  await fx.err('CREATE_DIRECTORY_INODE', { id, ownerId: newDirId(2), opaque: b('x') }, E.MISMATCHING_OWNER, 1);
  const r2 = await fx.req('CREATE_DIRECTORY_INODE', { id, ownerId: ROOT, opaque: b('yz') }, 1);
  assert.ok(r2.mtime >= r.mtime);
  assert.deepEqual((await fx.req('STAT', { id }, 1)).opaque, b('yz'));
  await fx.err('CREATE_DIRECTORY_INODE', { id: 0x4000000000000101n, ownerId: ROOT, opaque: b('') }, E.TYPE_IS_NOT_DIRECTORY, 1);
  // Wrong shard and non-directory owner: clear errors, not INTERNAL_ERROR.
  await fx.err('CREATE_DIRECTORY_INODE', { id: newDirId(2), ownerId: ROOT, opaque: b('') }, E.MALFORMED_REQUEST, 1);
  await fx.err('CREATE_DIRECTORY_INODE', { id: newDirId(1), ownerId: 0x4000000000000000n, opaque: b('') }, E.TYPE_IS_NOT_DIRECTORY, 1);
});

test('test_create_current_edge: locked edge, retry, history, unlock with was_moved', async () => {
  const dir = await mkdir(ROOT, 'cce');
  const target = newDirId(2);
  const t = now() + 10_000_000n;
  await fx.req('CREATE_LOCKED_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target, creationTime: t });
  assert.deepEqual(await listNames(dir), ['d']);
  assert.deepEqual(await listNames(dir, t - 1n), []);
  // Resend: accepted (idempotent retry). Changing target or time: refused.
  await fx.req('CREATE_LOCKED_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target, creationTime: t });
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: newDirId(2), creationTime: t }, E.NAME_IS_LOCKED);
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target, creationTime: t + 1n }, E.NAME_IS_LOCKED);
  // Locked edges are visible to LOOKUP.
  assert.deepEqual(await fx.req('LOOKUP', { dirId: dir, name: b('d') }), { targetId: target, creationTime: t });
  await fx.req('UNLOCK_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target, wasMoved: false });
  await fx.req('UNLOCK_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target, wasMoved: false }); // idempotent
  await fx.req('LOCK_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target });
  await fx.req('LOCK_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target }); // re-entrant
  await fx.req('UNLOCK_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target, wasMoved: true });
  assert.deepEqual(await listNames(dir), []);
  assert.deepEqual(await listNames(dir, t), ['d']);
  await fx.err('UNLOCK_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: target, wasMoved: true }, E.NAME_NOT_FOUND);
  const full = await fx.req('FULL_READ_DIR', { dirId: dir, startHash: 0n, startName: b(''), startTime: 0n });
  assert.equal(full.results.length, 2);
  assert.equal(full.results[0]!.targetId, target, 'moved edge is a non-owned snapshot');
  assert.equal(full.results[1]!.targetId, 0n, 'deletion marker');
});

test('test_construct_file_1: a FILE and a SYMLINK are transient files of the right types', async () => {
  const before = await allTransient(2);
  const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE }, 2);
  const s = await fx.req('CONSTRUCT_FILE', { type: InodeType.SYMLINK }, 2);
  assert.equal(inodeType(f.id), InodeType.FILE);
  assert.equal(inodeType(s.id), InodeType.SYMLINK);
  assert.equal(shardOf(f.id), 2);
  assert.equal(shardOf(s.id), 2);
  const after = await allTransient(2);
  assert.deepEqual(after.filter((x) => !before.includes(x)).sort(), [f.id, s.id].sort());
  const st = await fx.req('STAT', { id: f.id }, 2);
  assert.equal(st.sizeOrOwner, 0n);
  await fx.err('CONSTRUCT_FILE', { type: InodeType.DIRECTORY }, E.TYPE_IS_DIRECTORY, 2);
  await fx.err('CONSTRUCT_FILE', { type: InodeType.RESERVED }, E.TYPE_IS_DIRECTORY, 2);
});

async function allTransient(shard: number): Promise<bigint[]> {
  const ids: bigint[] = [];
  let begin = 0n;
  for (;;) {
    const r = await fx.req('VISIT_TRANSIENT_FILES', { beginId: begin }, shard);
    assert.ok(r.files.length <= 90);
    ids.push(...r.files.map((f) => f.id));
    if (r.nextId === 0n) break;
    begin = r.nextId;
  }
  return ids;
}

test('test_construct_file_2: VISIT_TRANSIENT_FILES pages over 270 then 276 files without repeats', async () => {
  const base = (await allTransient(1)).length;
  const made: bigint[] = [];
  for (let i = base; i < 270; i++) made.push((await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE }, 1)).id);
  // Exactly 3 pages of 90: the prototype repeated the 90th entry (metadata.md §8 item 22).
  let ids = await allTransient(1);
  assert.equal(ids.length, 270);
  assert.equal(new Set(ids).size, 270);
  for (let i = 0; i < 6; i++) made.push((await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE }, 1)).id);
  ids = await allTransient(1);
  assert.equal(ids.length, 276);
  assert.equal(new Set(ids).size, 276);
  for (const id of made) assert.ok(ids.includes(id));
  assert.deepEqual(ids, [...ids].sort((x, y) => (x < y ? -1 : 1)));
  // VISIT_FILES lists them too, 181 per page.
  const first = await fx.req('VISIT_FILES', { beginId: 0n }, 1);
  assert.equal(first.ids.length, 181);
  const second = await fx.req('VISIT_FILES', { beginId: first.nextId }, 1);
  assert.equal(second.nextId, 0n);
  assert.equal(first.ids.length + second.ids.length, 276);
  assert.ok(!first.ids.includes(first.nextId));
});

test('test_spans: inline, zero-fill, block-backed spans, certification, link, FILE_SPANS', async () => {
  const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
  const initiate = (o: Partial<Parameters<typeof fx.req<'ADD_SPAN_INITIATE'>>[1]>) =>
    ({ fileId: f.id, cookie: f.cookie, byteOffset: 0n, storageClass: 0, parity: 0, crc32: crcOf(b('')), size: 0n, bodyBytes: Buffer.alloc(0), bodyBlocks: [], ...o });
  const hello = b('hello');
  // Ahead of EOF.
  await fx.err('ADD_SPAN_INITIATE', initiate({ byteOffset: 10n, crc32: crcOf(hello), size: 5n, bodyBytes: hello }), E.SPAN_NOT_FOUND);
  // Inline with parity, empty inline, bad CRC, wrong length.
  await fx.err('ADD_SPAN_INITIATE', initiate({ parity: 1, crc32: crcOf(hello), size: 5n, bodyBytes: hello }), E.BAD_SPAN_BODY);
  await fx.err('ADD_SPAN_INITIATE', initiate({}), E.BAD_SPAN_BODY);
  await fx.err('ADD_SPAN_INITIATE', initiate({ crc32: crcOf(b('hellO')), size: 5n, bodyBytes: hello }), E.BAD_SPAN_BODY);
  await fx.err('ADD_SPAN_INITIATE', initiate({ crc32: crcOf(hello), size: 4n, bodyBytes: hello }), E.BAD_SPAN_BODY);
  // Inline append, idempotent, extends the deadline.
  const dl0 = (await allTransientWithDeadline(0)).get(f.id)!;
  await fx.req('ADD_SPAN_INITIATE', initiate({ crc32: crcOf(hello), size: 5n, bodyBytes: hello }));
  const dl1 = (await allTransientWithDeadline(0)).get(f.id)!;
  await fx.req('ADD_SPAN_INITIATE', initiate({ crc32: crcOf(hello), size: 5n, bodyBytes: hello }));
  const dl2 = (await allTransientWithDeadline(0)).get(f.id)!;
  assert.ok(dl0 < dl1 && dl1 < dl2, 'every initiate extends the deadline');
  assert.equal((await fx.req('STAT', { id: f.id })).sizeOrOwner, 5n);
  // Empty zero-fill: a no-op at any offset. Zero-fill of 100 bytes.
  await fx.req('ADD_SPAN_INITIATE', initiate({ storageClass: 1, byteOffset: 999n, crc32: crcOf(b('')) }));
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 1, byteOffset: 5n, size: 100n, crc32: crcOf(b('x')) }), E.BAD_SPAN_BODY);
  await fx.req('ADD_SPAN_INITIATE', initiate({ storageClass: 1, byteOffset: 5n, size: 100n, crc32: crcToBytes(crc32cZeros(100)) }));
  assert.equal((await fx.req('STAT', { id: f.id })).sizeOrOwner, 105n);
  // Block-backed: parity 0 is inconsistent; wrong sizes, CRCs and block counts are bad bodies.
  const data = Buffer.alloc(4096, 7);
  const dcrc = crcOf(data);
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0, byteOffset: 105n, crc32: dcrc, size: 4096n, bodyBlocks: [{ crc32: dcrc, size: 4096n }] }), E.INCONSISTENT_STORAGE_CLASS_PARITY);
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0x01, byteOffset: 105n, crc32: dcrc, size: 4096n, bodyBlocks: [{ crc32: dcrc, size: 4095n }] }), E.BAD_SPAN_BODY);
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0x01, byteOffset: 105n, crc32: dcrc, size: 4096n, bodyBlocks: [{ crc32: crcOf(b('x')), size: 4096n }] }), E.BAD_SPAN_BODY);
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0x01, byteOffset: 105n, crc32: dcrc, size: 4096n, bodyBlocks: [] }), E.BAD_SPAN_BODY);
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0x11, byteOffset: 105n, crc32: dcrc, size: 4096n, bodyBlocks: [{ crc32: dcrc, size: 4096n }] }), E.BAD_SPAN_BODY);
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0x01, byteOffset: 105n, crc32: dcrc, size: 4096n, bodyBytes: b('x'), bodyBlocks: [{ crc32: dcrc, size: 4096n }] }), E.BAD_SPAN_BODY);
  // Storage class without services.
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 9, parity: 0x01, byteOffset: 105n, crc32: dcrc, size: 4096n, bodyBlocks: [{ crc32: dcrc, size: 4096n }] }), E.COULD_NOT_PICK_BLOCK_SERVERS);
  // A 1+0 span.
  const s1 = initiate({ storageClass: 2, parity: 0x01, byteOffset: 105n, crc32: dcrc, size: 4096n, bodyBlocks: [{ crc32: dcrc, size: 4096n }] });
  const r1 = await fx.req('ADD_SPAN_INITIATE', s1);
  assert.equal(r1.blocks.length, 1);
  assert.equal(shardOf(r1.blocks[0]!.blockId), 0);
  assert.deepEqual(r1.blocks[0]!.certificate, blockWriteCertificate(keyFor(r1.blocks[0]!), r1.blocks[0]!.blockId, dcrc, 4096));
  assert.deepEqual((await fx.req('ADD_SPAN_INITIATE', s1)).blocks, r1.blocks, 'retry gives the same blocks and certificates');
  // 1+1 at the same offset: no such span. Appending after an uncertified span: not clean.
  await fx.err('ADD_SPAN_INITIATE', { ...s1, parity: 0x11, bodyBlocks: [{ crc32: dcrc, size: 4096n }, { crc32: dcrc, size: 4096n }] }, E.SPAN_NOT_FOUND);
  await fx.err('ADD_SPAN_INITIATE', initiate({ byteOffset: 4201n, crc32: crcOf(hello), size: 5n, bodyBytes: hello }), E.LAST_SPAN_STATE_NOT_CLEAN);
  await fx.err('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: ROOT, name: b('spans') }, E.LAST_SPAN_STATE_NOT_CLEAN);
  // Certify: errors, then success (idempotent).
  const proof1 = blockWriteProof(keyFor(r1.blocks[0]!), r1.blocks[0]!.blockId);
  await fx.err('ADD_SPAN_CERTIFY', { fileId: f.id, cookie: f.cookie, byteOffset: 105n, proofs: [Buffer.alloc(8)] }, E.BAD_BLOCK_PROOF);
  await fx.err('ADD_SPAN_CERTIFY', { fileId: f.id, cookie: f.cookie, byteOffset: 105n, proofs: [proof1, proof1] }, E.BAD_NUMBER_OF_BLOCKS_PROOFS);
  await fx.err('ADD_SPAN_CERTIFY', { fileId: f.id, cookie: f.cookie, byteOffset: 106n, proofs: [proof1] }, E.SPAN_NOT_FOUND);
  await fx.err('ADD_SPAN_CERTIFY', { fileId: f.id, cookie: f.cookie, byteOffset: 0n, proofs: [] }, E.CANNOT_CERTIFY_BLOCKLESS_SPAN);
  await fx.err('ADD_SPAN_CERTIFY', { fileId: f.id, cookie: f.cookie ^ 1n, byteOffset: 105n, proofs: [proof1] }, E.BAD_COOKIE);
  await fx.err('ADD_SPAN_CERTIFY', { fileId: f.id ^ 0x100000n, cookie: f.cookie, byteOffset: 105n, proofs: [proof1] }, E.FILE_NOT_FOUND);
  await fx.req('ADD_SPAN_CERTIFY', { fileId: f.id, cookie: f.cookie, byteOffset: 105n, proofs: [proof1] });
  await fx.req('ADD_SPAN_CERTIFY', { fileId: f.id, cookie: f.cookie, byteOffset: 105n, proofs: [proof1] });
  // Mirrored 1+1 and 3+1 spans, on distinct services, with distinct block ids.
  const certifyAll = async (offset: bigint, blocks: BlockInfoT[]) => {
    const ports = blocks.map((x) => x.port);
    assert.equal(new Set(ports).size, ports.length, 'blocks of one span on distinct services');
    await fx.req('ADD_SPAN_CERTIFY', { fileId: f.id, cookie: f.cookie, byteOffset: offset, proofs: blocks.map((x) => blockWriteProof(keyFor(x), x.blockId)) });
  };
  const r2 = await fx.req('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0x11, byteOffset: 4201n, crc32: dcrc, size: 4096n, bodyBlocks: [{ crc32: dcrc, size: 4096n }, { crc32: dcrc, size: 4096n }] }));
  await certifyAll(4201n, r2.blocks);
  const parts = [Buffer.alloc(1000, 1), Buffer.alloc(1000, 2), Buffer.alloc(500, 3)];
  let acc = 0;
  for (const p of parts) acc = crc32cCombine(acc, crc32c(p), p.length);
  const blocks3 = [...parts.map((p) => ({ crc32: crcOf(p), size: BigInt(p.length) })), { crc32: crcOf(Buffer.alloc(1000)), size: 1000n }];
  await fx.err('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0x13, byteOffset: 8297n, crc32: crcOf(b('x')), size: 2500n, bodyBlocks: blocks3 }), E.BAD_SPAN_BODY);
  const r3 = await fx.req('ADD_SPAN_INITIATE', initiate({ storageClass: 2, parity: 0x13, byteOffset: 8297n, crc32: crcToBytes(acc), size: 2500n, bodyBlocks: blocks3 }));
  assert.equal(r3.blocks.length, 4);
  const allIds = [...r1.blocks, ...r2.blocks, ...r3.blocks].map((x) => x.blockId);
  assert.equal(new Set(allIds).size, allIds.length);
  await fx.err('FILE_SPANS', { fileId: f.id, byteOffset: 0n }, E.FILE_IS_TRANSIENT);
  await certifyAll(8297n, r3.blocks);
  // Link, READ_DIR, STAT, FILE_SPANS.
  await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: ROOT, name: b('spans') });
  assert.ok((await listNames(ROOT)).includes('spans'));
  assert.equal((await fx.req('STAT', { id: f.id })).sizeOrOwner, 10797n);
  const fs = await fx.req('FILE_SPANS', { fileId: f.id, byteOffset: 0n });
  assert.equal(fs.nextOffset, 0n);
  assert.deepEqual(
    fs.spans.map((s) => [s.byteOffset, s.storageClass, s.size, s.bodyBlocks.length]),
    [
      [0n, 0, 5n, 0],
      [5n, 1, 100n, 0],
      [105n, 2, 4096n, 1],
      [4201n, 2, 4096n, 2],
      [8297n, 2, 2500n, 4],
    ],
  );
  assert.deepEqual(fs.spans[0]!.bodyBytes, hello);
  assert.ok(fs.spans.every((s) => s.bodyBlocks.every((x) => x.flags === 0)));
  assert.deepEqual((await fx.req('FILE_SPANS', { fileId: f.id, byteOffset: 1n })).spans, fs.spans);
  assert.deepEqual((await fx.req('FILE_SPANS', { fileId: f.id, byteOffset: 200n })).spans, fs.spans.slice(2));
  assert.deepEqual((await fx.req('FILE_SPANS', { fileId: f.id, byteOffset: 1_000_000n })).spans, fs.spans.slice(4), 'past EOF: the last span');
  await fx.err('FILE_SPANS', { fileId: 0x4000000000ff0000n, byteOffset: 0n }, E.FILE_NOT_FOUND);
  // Linked files are immutable: span operations find no transient file.
  await fx.err('ADD_SPAN_INITIATE', initiate({ byteOffset: 10797n, crc32: crcOf(hello), size: 5n, bodyBytes: hello }), E.FILE_NOT_FOUND);
  // TERMINAL and STALE are reported (§8 item 29) once shuckle says so.
  const p0 = r1.blocks[0]!.port;
  const p1 = r2.blocks[0]!.port;
  fx.shuckle.services = fx.shuckle.services.map((s) => (s.port === p0 ? { ...s, is_terminal: true } : s.port === p1 ? { ...s, is_stale: true } : s));
  const rootBefore = await fx.req('STAT', { id: ROOT });
  await fx.restart(); // the shard polls shuckle at start
  await waitForBlockServices(fx);
  assert.deepEqual(await fx.req('STAT', { id: ROOT }), rootBefore, 'a restart leaves the root mtime alone (§8 item 32)');
  const fs2 = await fx.req('FILE_SPANS', { fileId: f.id, byteOffset: 0n });
  assert.equal(fs2.spans[2]!.bodyBlocks[0]!.flags, BLOCK_FLAG_TERMINAL);
  assert.equal(fs2.spans[3]!.bodyBlocks[0]!.flags, BLOCK_FLAG_STALE);
});

async function allTransientWithDeadline(shard: number): Promise<Map<bigint, bigint>> {
  const m = new Map<bigint, bigint>();
  let begin = 0n;
  for (;;) {
    const r = await fx.req('VISIT_TRANSIENT_FILES', { beginId: begin }, shard);
    for (const f of r.files) m.set(f.id, f.deadlineTime);
    if (r.nextId === 0n) return m;
    begin = r.nextId;
  }
}

test('test_same_dir_renames: overwrite, renames, unlinks, historical listings', async () => {
  const dir = await mkdir(ROOT, 'sdr');
  const a = await createFile(dir, 'a');
  const a2 = await createFile(dir, 'a'); // overwrites: a becomes an owned snapshot
  assert.deepEqual(await fx.req('LOOKUP', { dirId: dir, name: b('a') }).then((r) => r.targetId), a2);
  await fx.err('LOOKUP', { dirId: dir, name: b('b') }, E.NAME_NOT_FOUND);
  await fx.err('SAME_DIRECTORY_RENAME', { targetId: a, dirId: dir, oldName: b('a'), newName: b('b') }, E.MISMATCHING_TARGET);
  await fx.err('SAME_DIRECTORY_RENAME', { targetId: a2, dirId: dir, oldName: b('nope'), newName: b('b') }, E.NAME_NOT_FOUND);
  const t0 = (await fx.req('STAT', { id: dir })).mtime;
  await fx.req('SAME_DIRECTORY_RENAME', { targetId: a2, dirId: dir, oldName: b('a'), newName: b('b') });
  const t1 = (await fx.req('STAT', { id: dir })).mtime;
  await fx.req('SAME_DIRECTORY_RENAME', { targetId: a2, dirId: dir, oldName: b('b'), newName: b('c') });
  const t2 = (await fx.req('STAT', { id: dir })).mtime;
  assert.deepEqual(await listNames(dir, t0), ['a']);
  assert.deepEqual(await listNames(dir, t1), ['b']);
  assert.deepEqual(await listNames(dir, t2), ['c']);
  assert.deepEqual(await listNames(dir), ['c']);
  // Rename onto the same name: the deletion marker just written is as new as the edge.
  await fx.err('SAME_DIRECTORY_RENAME', { targetId: a2, dirId: dir, oldName: b('c'), newName: b('c') }, E.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
  // §8 item 11: rename x → y then link a new file as y (the prototype failed with INTERNAL_ERROR).
  const y2 = await createFile(dir, 'c');
  assert.equal((await fx.req('LOOKUP', { dirId: dir, name: b('c') })).targetId, y2);
  // Unlink errors, then two unlinks and the listings around them.
  await fx.err('SOFT_UNLINK_FILE', { ownerId: dir, fileId: a2, name: b('zzz') }, E.NAME_NOT_FOUND);
  await fx.err('SOFT_UNLINK_FILE', { ownerId: dir, fileId: a2, name: b('c') }, E.MISMATCHING_TARGET);
  const d2 = await createFile(dir, 'd');
  const t3 = (await fx.req('STAT', { id: dir })).mtime;
  await fx.req('SOFT_UNLINK_FILE', { ownerId: dir, fileId: y2, name: b('c') });
  const t4 = (await fx.req('STAT', { id: dir })).mtime;
  await fx.req('SOFT_UNLINK_FILE', { ownerId: dir, fileId: d2, name: b('d') });
  assert.deepEqual(await listNames(dir, t3), ['c', 'd']);
  assert.deepEqual(await listNames(dir, t4), ['d']);
  assert.deepEqual(await listNames(dir), []);
  await fx.err('SOFT_UNLINK_FILE', { ownerId: dir, fileId: d2, name: b('d') }, E.NAME_NOT_FOUND);
  // A locked edge at time 0 after a deletion: a more recent snapshot exists.
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: dir, name: b('d'), targetId: newDirId(1), creationTime: 0n }, E.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
  // Unlinked files stay readable by id.
  assert.equal((await fx.req('STAT', { id: d2 })).sizeOrOwner, 2n);
});

test('test_bad_cookie: LINK_FILE with another file\'s cookie', async () => {
  const f1 = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
  const f2 = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
  await fx.err('LINK_FILE', { fileId: f1.id, cookie: f2.cookie, ownerId: ROOT, name: b('badcookie') }, E.BAD_COOKIE);
  await fx.err('ADD_SPAN_INITIATE', { fileId: f1.id, cookie: f2.cookie, byteOffset: 0n, storageClass: 0, parity: 0, crc32: crcOf(b('x')), size: 1n, bodyBytes: b('x'), bodyBlocks: [] }, E.BAD_COOKIE);
});

test('test_dir_mtimes: mtime strictly increases on link, rename, unlink', async () => {
  const dir = await mkdir(ROOT, 'mt');
  const m0 = (await fx.req('STAT', { id: dir })).mtime;
  const f = await createFile(dir, 'x');
  const m1 = (await fx.req('STAT', { id: dir })).mtime;
  await fx.req('SAME_DIRECTORY_RENAME', { targetId: f, dirId: dir, oldName: b('x'), newName: b('y') });
  const m2 = (await fx.req('STAT', { id: dir })).mtime;
  await fx.req('SOFT_UNLINK_FILE', { ownerId: dir, fileId: f, name: b('y') });
  const m3 = (await fx.req('STAT', { id: dir })).mtime;
  assert.ok(m0 < m1 && m1 < m2 && m2 < m3, `${m0} ${m1} ${m2} ${m3}`);
});

// ---------------------------------------------------------------------------------------------
// Remaining kinds and errors of §4, and the §8 fixes

test('LOOKUP/STAT/READ_DIR/FULL_READ_DIR: not-found errors', async () => {
  const missing = newDirId(0);
  await fx.err('LOOKUP', { dirId: missing, name: b('a') }, E.DIRECTORY_NOT_FOUND);
  await fx.err('LOOKUP', { dirId: ROOT, name: b('a') }, E.DIRECTORY_NOT_FOUND, 1); // root lives in shard 0
  await fx.err('STAT', { id: missing }, E.DIRECTORY_NOT_FOUND);
  await fx.err('STAT', { id: 0x4000000000ff0000n }, E.FILE_NOT_FOUND);
  await fx.err('STAT', { id: 0x1234n }, E.FILE_NOT_FOUND); // RESERVED type
  await fx.err('READ_DIR', { dirId: missing, startHash: 0n, asOfTime: AS_OF_NOW }, E.DIRECTORY_NOT_FOUND);
  await fx.err('FULL_READ_DIR', { dirId: missing, startHash: 0n, startName: b(''), startTime: 0n }, E.DIRECTORY_NOT_FOUND);
  await fx.err('STAT', { id: 0xe000000000000000n }, E.FILE_NOT_FOUND); // bit 63 set
});

test('READ_DIR pages within 1472 bytes without splitting or repeating; FULL_READ_DIR is sorted', async () => {
  const dir = await mkdir(ROOT, 'big');
  const names: string[] = [];
  for (let i = 0; i < 150; i++) names.push(`file-${i}-${'x'.repeat(i % 40)}`);
  await Promise.all(names.map((n) => createFile(dir, n, '')));
  // A few unlinked and overwritten ones, so the history has several edges per name.
  for (const n of names.slice(0, 10)) {
    const id = (await fx.req('LOOKUP', { dirId: dir, name: b(n) })).targetId;
    await fx.req('SOFT_UNLINK_FILE', { ownerId: dir, fileId: id, name: b(n) });
  }
  for (const n of names.slice(10, 20)) await createFile(dir, n, '');
  const seen: string[] = [];
  let h = 0n;
  let pages = 0;
  for (;;) {
    const buf = await rawRequest(encodeShardRequest('READ_DIR', 7n, { dirId: dir, startHash: h, asOfTime: AS_OF_NOW }));
    assert.ok(buf.length <= 1472);
    const r = decodeResponse(SHARD_PROTOCOL, buf, SHARD_MESSAGES.READ_DIR).body as { nextHash: bigint; results: { name: Buffer; nameHash: bigint }[] };
    pages++;
    for (const e of r.results) {
      assert.equal(e.nameHash, nameHash(e.name));
      seen.push(e.name.toString());
    }
    const hashes = r.results.map((e) => e.nameHash);
    assert.deepEqual(hashes, [...hashes].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
    if (r.nextHash === 0n) break;
    assert.ok(!hashes.includes(r.nextHash));
    h = r.nextHash;
  }
  assert.ok(pages >= 3);
  assert.deepEqual(seen.sort(), names.slice(10).sort());
  // FULL_READ_DIR: every edge exactly once, in (hash, name, time) order, continued from the last edge.
  const all: { nameHash: bigint; name: Buffer; creationTime: bigint; targetId: bigint }[] = [];
  let cursor: { startHash: bigint; startName: Buffer; startTime: bigint } = { startHash: 0n, startName: b(''), startTime: 0n };
  for (;;) {
    const buf = await rawRequest(encodeShardRequest('FULL_READ_DIR', 8n, { dirId: dir, ...cursor }));
    assert.ok(buf.length <= 1472);
    const r = decodeResponse(SHARD_PROTOCOL, buf, SHARD_MESSAGES.FULL_READ_DIR).body as { finished: boolean; results: typeof all };
    all.push(...r.results);
    if (r.finished) break;
    const last = r.results[r.results.length - 1]!;
    cursor = { startHash: last.nameHash, startName: last.name, startTime: last.creationTime + 1n };
  }
  assert.equal(all.length, 150 + 10 + 10); // 150 first edges, 10 deletion markers, 10 overwriting edges
  for (let i = 1; i < all.length; i++) {
    const p = all[i - 1]!;
    const c = all[i]!;
    const cmp = p.nameHash !== c.nameHash ? (p.nameHash < c.nameHash ? -1 : 1) : Buffer.compare(p.name, c.name) || (p.creationTime < c.creationTime ? -1 : 1);
    assert.equal(cmp, -1, 'sorted by (hash, name, time)');
  }
  const owning = all.filter((e) => (e.targetId & EXTRA_BIT) !== 0n);
  assert.equal(owning.length, 140 + 10 + 10, 'current edges, unlinked owners and overwritten owners');
});

test('LINK_FILE: errors and idempotent retry', async () => {
  const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
  const link = (o: Partial<{ ownerId: bigint; name: Buffer; cookie: bigint; fileId: bigint }>) => ({ fileId: f.id, cookie: f.cookie, ownerId: ROOT, name: b('lf'), ...o });
  await fx.err('LINK_FILE', link({ ownerId: newDirId(0) }), E.DIRECTORY_NOT_FOUND);
  const dirInShard1 = await mkdir(ROOT, 'inshard1', 1);
  await fx.err('LINK_FILE', link({ ownerId: dirInShard1 }), E.DIRECTORY_NOT_FOUND); // the directory must be in this shard
  const expired = { id: 0x4000000000fe0000n, cookie: 0n };
  await fx.err('LINK_FILE', link({ fileId: expired.id }), E.BAD_COOKIE);
  // Invalid names get MALFORMED_REQUEST.
  for (const n of ['.', '..', 'a/b', 'a\0b']) await fx.err('LINK_FILE', link({ name: b(n) }), E.MALFORMED_REQUEST);
  // A directory name cannot be overridden by a file.
  await mkdir(ROOT, 'adir');
  await fx.err('LINK_FILE', link({ name: b('adir') }), E.CANNOT_OVERRIDE_NAME);
  // Locked name.
  const lockedTarget = await createFile(ROOT, 'locked');
  await fx.req('LOCK_CURRENT_EDGE', { dirId: ROOT, name: b('locked'), targetId: lockedTarget });
  await fx.err('LINK_FILE', link({ name: b('locked') }), E.NAME_IS_LOCKED);
  await fx.err('SOFT_UNLINK_FILE', { ownerId: ROOT, fileId: lockedTarget, name: b('locked') }, E.NAME_IS_LOCKED);
  await fx.err('SAME_DIRECTORY_RENAME', { targetId: lockedTarget, dirId: ROOT, oldName: b('locked'), newName: b('l2') }, E.NAME_IS_LOCKED);
  await fx.req('UNLOCK_CURRENT_EDGE', { dirId: ROOT, name: b('locked'), targetId: lockedTarget, wasMoved: false });
  // A snapshot newer than now under the name: MORE_RECENT_SNAPSHOT_ALREADY_EXISTS.
  const future = now() + 3_600_000_000_000n;
  const fd = newDirId(1);
  await fx.req('CREATE_LOCKED_CURRENT_EDGE', { dirId: ROOT, name: b('future'), targetId: fd, creationTime: future });
  await fx.req('UNLOCK_CURRENT_EDGE', { dirId: ROOT, name: b('future'), targetId: fd, wasMoved: true });
  await fx.err('LINK_FILE', link({ name: b('future') }), E.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
  // Success, then a retry (even naming another place) succeeds.
  await fx.req('LINK_FILE', link({}));
  await fx.req('LINK_FILE', link({ name: b('elsewhere') }));
  assert.equal((await fx.req('LOOKUP', { dirId: ROOT, name: b('lf') })).targetId, f.id);
  await fx.err('LOOKUP', { dirId: ROOT, name: b('elsewhere') }, E.NAME_NOT_FOUND);
  // Rename onto a directory name, and of a directory onto a file name.
  const g = await createFile(ROOT, 'g');
  await fx.err('SAME_DIRECTORY_RENAME', { targetId: g, dirId: ROOT, oldName: b('g'), newName: b('adir') }, E.CANNOT_OVERRIDE_NAME);
  await fx.err('SAME_DIRECTORY_RENAME', { targetId: g, dirId: ROOT, oldName: b('g'), newName: b('..') }, E.MALFORMED_REQUEST);
  await fx.err('SAME_DIRECTORY_RENAME', { targetId: g, dirId: newDirId(0), oldName: b('g'), newName: b('h') }, E.DIRECTORY_NOT_FOUND);
  // SOFT_UNLINK of a directory.
  const adir = (await fx.req('LOOKUP', { dirId: ROOT, name: b('adir') })).targetId;
  await fx.err('SOFT_UNLINK_FILE', { ownerId: ROOT, fileId: adir, name: b('adir') }, E.TYPE_IS_DIRECTORY);
  await fx.err('SOFT_UNLINK_FILE', { ownerId: newDirId(0), fileId: g, name: b('g') }, E.DIRECTORY_NOT_FOUND);
  // The failed requests had no effect: the name g still points at g.
  assert.equal((await fx.req('LOOKUP', { dirId: ROOT, name: b('g') })).targetId, g);
});

test('transient files: expiry of the cookie check order, FILE_NOT_FOUND', async () => {
  // A file that never existed in this shard.
  const bogus = 0x4000000000fd0000n;
  await fx.err('ADD_SPAN_INITIATE', { fileId: bogus, cookie: 1n, byteOffset: 0n, storageClass: 1, parity: 0, crc32: crcOf(b('')), size: 0n, bodyBytes: b(''), bodyBlocks: [] }, E.FILE_NOT_FOUND);
  await fx.err('ADD_SPAN_CERTIFY', { fileId: bogus, cookie: 1n, byteOffset: 0n, proofs: [] }, E.FILE_NOT_FOUND);
});

test('snapshot directories, SET_DIRECTORY_OWNER, CREATE_LOCKED_CURRENT_EDGE errors', async () => {
  const d = await mkdir(ROOT, 'snapdir', 2);
  const sub = await fx.req('CREATE_DIRECTORY_INODE', { id: newDirId(1), ownerId: d, opaque: b('') }, 1);
  assert.ok(sub.mtime > 0n);
  const t = now() + 1_000_000_000n;
  const child = newDirId(1);
  await fx.req('CREATE_LOCKED_CURRENT_EDGE', { dirId: d, name: b('c'), targetId: child, creationTime: t }, 2);
  await fx.err('SET_DIRECTORY_OWNER', { dirId: d, ownerId: 0n }, E.DIRECTORY_NOT_EMPTY, 2);
  await fx.err('SET_DIRECTORY_OWNER', { dirId: newDirId(2), ownerId: 0n }, E.DIRECTORY_NOT_FOUND, 2);
  await fx.req('UNLOCK_CURRENT_EDGE', { dirId: d, name: b('c'), targetId: child, wasMoved: true }, 2);
  await fx.req('SET_DIRECTORY_OWNER', { dirId: d, ownerId: 0n }, 2);
  await fx.req('SET_DIRECTORY_OWNER', { dirId: d, ownerId: 0n }, 2); // idempotent
  assert.equal((await fx.req('STAT', { id: d }, 2)).sizeOrOwner, 0n);
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: d, name: b('n'), targetId: newDirId(1), creationTime: now() + 2_000_000_000n }, E.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY, 2);
  const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE }, 2);
  await fx.err('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: d, name: b('n') }, E.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY, 2);
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: newDirId(2), name: b('n'), targetId: newDirId(1), creationTime: now() }, E.DIRECTORY_NOT_FOUND, 2);
  // Back to a live directory; a locked edge over an unlocked directory name cannot override it.
  await fx.req('SET_DIRECTORY_OWNER', { dirId: d, ownerId: ROOT }, 2);
  const x = newDirId(1);
  await fx.req('CREATE_LOCKED_CURRENT_EDGE', { dirId: d, name: b('x'), targetId: x, creationTime: now() + 3_000_000_000n }, 2);
  await fx.req('UNLOCK_CURRENT_EDGE', { dirId: d, name: b('x'), targetId: x, wasMoved: false }, 2);
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: d, name: b('x'), targetId: newDirId(1), creationTime: now() + 4_000_000_000n }, E.CANNOT_OVERRIDE_NAME, 2);
  // §8 item 12: older than the current edge it would replace.
  const file = await createFile(d, 'ff', 'abc', 2);
  const cur = await fx.req('LOOKUP', { dirId: d, name: b('ff') }, 2);
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: d, name: b('ff'), targetId: file | 0x10000n, creationTime: cur.creationTime - 1n }, E.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS, 2);
  // LOCK/UNLOCK errors.
  for (const kind of ['LOCK_CURRENT_EDGE', 'UNLOCK_CURRENT_EDGE'] as const) {
    const body = (dirId: bigint, name: string, targetId: bigint) => ({ dirId, name: b(name), targetId, wasMoved: false });
    await fx.err(kind, body(newDirId(2), 'ff', file), E.DIRECTORY_NOT_FOUND, 2);
    await fx.err(kind, body(d, 'nope', file), E.NAME_NOT_FOUND, 2);
    await fx.err(kind, body(d, 'ff', file ^ 0x100000n), E.MISMATCHING_TARGET, 2);
  }
  // Out-of-range values in privileged requests.
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: d, name: b('r'), targetId: 0n, creationTime: now() }, E.MALFORMED_REQUEST, 2);
  await fx.err('CREATE_LOCKED_CURRENT_EDGE', { dirId: d, name: b('r'), targetId: x, creationTime: 1n << 63n }, E.MALFORMED_REQUEST, 2);
});

test('GC: REMOVE_NON_OWNED_EDGE and REMOVE_OWNED_SNAPSHOT_FILE_EDGE (test_file_cycle)', async () => {
  const dir = await mkdir(ROOT, 'gc');
  const f1 = await createFile(dir, 'a', 'one');
  const f2 = await createFile(dir, 'a', 'two'); // f1 now an owned snapshot
  const hist = async () => (await fx.req('FULL_READ_DIR', { dirId: dir, startHash: 0n, startName: b(''), startTime: 0n })).results;
  let h = await hist();
  assert.equal(h.length, 2);
  const old = h.find((e) => (e.targetId & ~EXTRA_BIT) === f1)!;
  assert.ok((old.targetId & EXTRA_BIT) !== 0n, 'overwritten file edge owns its file');
  const cur = h.find((e) => (e.targetId & ~EXTRA_BIT) === f2)!;
  const key = (e: typeof old, target: bigint) => ({ dirId: dir, targetId: target, name: e.name, creationTime: e.creationTime });
  // Non-owned removal refuses current and owned edges.
  await fx.err('REMOVE_NON_OWNED_EDGE', key(cur, f2), E.EDGE_NOT_FOUND);
  await fx.err('REMOVE_NON_OWNED_EDGE', key(old, f1), E.EDGE_NOT_FOUND);
  await fx.err('REMOVE_NON_OWNED_EDGE', { ...key(old, f1), dirId: newDirId(0) }, E.DIRECTORY_NOT_FOUND);
  await fx.err('REMOVE_OWNED_SNAPSHOT_FILE_EDGE', key(cur, f2), E.EDGE_NOT_FOUND);
  await fx.err('REMOVE_OWNED_SNAPSHOT_FILE_EDGE', { ...key(old, f1), dirId: newDirId(0) }, E.DIRECTORY_NOT_FOUND);
  await fx.err('REMOVE_OWNED_SNAPSHOT_FILE_EDGE', key(old, dir), E.TYPE_IS_DIRECTORY);
  await fx.req('REMOVE_OWNED_SNAPSHOT_FILE_EDGE', key(old, f1));
  await fx.err('REMOVE_OWNED_SNAPSHOT_FILE_EDGE', key(old, f1), E.EDGE_NOT_FOUND);
  assert.ok((await allTransient(0)).includes(f1), 'the freed file is transient again');
  await fx.err('FILE_SPANS', { fileId: f1, byteOffset: 0n }, E.FILE_IS_TRANSIENT);
  // After a rename: the old non-owned edge and its deletion marker can be removed.
  await fx.req('SAME_DIRECTORY_RENAME', { targetId: f2, dirId: dir, oldName: b('a'), newName: b('b') });
  h = await hist();
  const nonOwned = h.filter((e) => (e.targetId & EXTRA_BIT) === 0n);
  assert.equal(nonOwned.length, 2);
  assert.ok(h.some((e) => e.name.toString() === 'b' && e.targetId === (f2 | EXTRA_BIT)));
  for (const e of nonOwned) await fx.req('REMOVE_NON_OWNED_EDGE', key(e, e.targetId));
  assert.equal((await hist()).length, 1);
});

test('VISIT_DIRECTORIES lists the shard\'s directories', async () => {
  const d = await mkdir(ROOT, 'visitme');
  const r = await fx.req('VISIT_DIRECTORIES', { beginId: 0n });
  assert.ok(r.ids.includes(ROOT));
  assert.ok(r.ids.includes(d));
  assert.deepEqual(await fx.req('VISIT_DIRECTORIES', { beginId: d + 1n }).then((x) => x.ids.includes(d)), false);
});

// ---------------------------------------------------------------------------------------------
// Envelope errors (metadata.md §1.5) over raw datagrams

function rawRequest(datagram: Buffer, shard = 0, timeoutMs = 2_000): Promise<Buffer> {
  return rawUdpRequest(datagram, fx.basePort + shard, timeoutMs);
}

test('envelope: MALFORMED_REQUEST, NOT_AUTHORISED, no answer without a request id', async () => {
  const errCode = (buf: Buffer) => {
    assert.equal(buf.length, 15);
    assert.equal(buf[12], 0);
    return buf.readUInt16LE(13);
  };
  const good = encodeShardRequest('STAT', 42n, { id: ROOT });
  // Trailing byte, truncated body, unknown kind, bad enum.
  assert.equal(errCode(await rawRequest(Buffer.concat([good, Buffer.from([0])]))), E.MALFORMED_REQUEST);
  assert.equal(errCode(await rawRequest(good.subarray(0, good.length - 1))), E.MALFORMED_REQUEST);
  const unknown = Buffer.from(good);
  unknown[12] = 0x09;
  assert.equal(errCode(await rawRequest(unknown)), E.MALFORMED_REQUEST);
  const badType = encodeShardRequest('CONSTRUCT_FILE', 43n, { type: 2 });
  badType[13] = 4;
  assert.equal(errCode(await rawRequest(badType)), E.MALFORMED_REQUEST);
  // Privileged kind: wrong MAC → NOT_AUTHORISED; missing MAC → MALFORMED_REQUEST.
  const priv = encodeShardRequest('SET_DIRECTORY_OWNER', 44n, { dirId: ROOT, ownerId: 0n }, DEFAULT_CDC_KEY);
  const badMac = Buffer.from(priv);
  badMac[badMac.length - 1] ^= 1;
  assert.equal(errCode(await rawRequest(badMac)), E.NOT_AUTHORISED);
  assert.equal(errCode(await rawRequest(priv.subarray(0, priv.length - 8))), E.MALFORMED_REQUEST);
  // A valid MAC is accepted: the request runs (and fails on its merits: the root is not empty).
  const reply = await rawRequest(priv);
  assert.equal(reply.readBigUInt64LE(4), 44n);
  assert.equal(errCode(reply), E.DIRECTORY_NOT_EMPTY);
  // Request id echoed.
  const ok = await rawRequest(good);
  assert.equal(ok.readBigUInt64LE(4), 42n);
  // Bad magic / too short: no answer at all.
  const badMagic = Buffer.from(good);
  badMagic[0] = 0x58;
  await assert.rejects(rawRequest(badMagic, 0, 300), /no answer/);
  await assert.rejects(rawRequest(good.subarray(0, 8), 0, 300), /no answer/);
});
