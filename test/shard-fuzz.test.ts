// Bad input (issue item 5): ≥100,000 random, mutated and structurally valid-but-random datagrams
// at a live shard; then it must still answer correctly, and its database must pass
// PRAGMA integrity_check and foreign_key_check. Every answer must be well formed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { startShards, waitForBlockServices } from './helpers/shard-proc.js';
import { encodeShardRequest, SHARD_MAGIC, UDP_MTU } from '../src/proto/envelope.js';
import { ErrorCode, isKnownErrorCode, errorName } from '../src/proto/errors.js';
import { SHARD_MESSAGES, SHARD_BY_KIND, type ShardKindName } from '../src/proto/messages.js';
import type { Codec, StructCodec, Fields } from '../src/proto/bincode.js';
import { ROOT_DIR_INODE_ID } from '../src/proto/ids.js';

const DATAGRAMS = Number(process.env.EGGSFS_FUZZ_DATAGRAMS ?? 100_000);
const BURST = 256;

// A deterministic PRNG so a failure can be replayed (seed printed on failure).
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test(`fuzz: ${DATAGRAMS} random and mutated datagrams, then correct answers and an intact database`, async (t) => {
  const seed = Number(process.env.EGGSFS_FUZZ_SEED ?? Date.now() % 1_000_000);
  const rnd = prng(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const fx = await startShards({ shards: '0-0', count: 1, blockServices: 8 });
  t.after(() => fx.stop());
  await waitForBlockServices(fx);

  // Pools of plausible values, so random requests hit real rows often.
  const ids: bigint[] = [ROOT_DIR_INODE_ID, 0n, 0x2000000000000100n, 0x2000000000000200n, 0x4000000000000000n, 0x4000000000010000n, 0x6000000000000000n, (1n << 64n) - 1n, 1n << 63n];
  const names = ['', 'a', 'b', 'x'.repeat(255), '.', '..', 'a/b', 'n\0', 'é'].map((s) => Buffer.from(s));
  const pick = <T>(xs: T[]): T => xs[int(xs.length)]!;
  const randomValue = (c: Codec<any>): unknown => {
    switch (c.typeName) {
      case 'u8':
      case 'InodeType':
        return c.typeName === 'InodeType' ? int(4) : int(256);
      case 'u16':
        return int(65536);
      case 'u64':
        return rnd() < 0.7 ? pick(ids) : randomBytes(8).readBigUInt64LE(0);
      case 'v61':
        return pick([0n, 1n, 5n, 100n, 4096n, BigInt(int(1 << 20))]);
      case 'bool':
        return rnd() < 0.5;
      case 'bytes':
        return rnd() < 0.8 ? pick(names) : randomBytes(int(40));
      case 'fixed4':
        return randomBytes(4);
      case 'fixed8':
        return randomBytes(8);
    }
    if (c.typeName.startsWith('list<')) return [];
    const fields = (c as StructCodec<Fields>).fields;
    if (!fields) return undefined;
    const v: Record<string, unknown> = Object.fromEntries(Object.entries(fields).map(([k, fc]) => [k, randomValue(fc)]));
    if ('bodyBlocks' in v) v.bodyBlocks = Array.from({ length: int(5) }, () => ({ crc32: randomBytes(4), size: pick([0n, 1n, 100n, 4096n]) }));
    if ('proofs' in v) v.proofs = Array.from({ length: int(4) }, () => randomBytes(8));
    if ('cookie' in v && rnd() < 0.6) {
      const f = pick(files);
      v.fileId = f.id;
      v.cookie = f.cookie;
    }
    if ('storageClass' in v && rnd() < 0.7) v.storageClass = int(3);
    return v;
  };
  const kinds = Object.keys(SHARD_MESSAGES) as ShardKindName[];
  // Real transient files (with their cookies) and directories, so random requests reach deep paths.
  const files: { id: bigint; cookie: bigint }[] = [];
  for (let i = 0; i < 8; i++) files.push(await fx.req('CONSTRUCT_FILE', { type: 2 + (i % 2) }));
  for (const f of files) ids.push(f.id);
  for (let i = 1; i <= 4; i++) {
    const id = 0x2000000000000000n | (BigInt(i) << 8n);
    await fx.req('CREATE_DIRECTORY_INODE', { id, ownerId: ROOT_DIR_INODE_ID, opaque: Buffer.alloc(0) });
    ids.push(id);
  }
  const structured = (): Buffer => {
    const k = pick(kinds);
    const body = randomValue(SHARD_MESSAGES[k].req);
    return encodeShardRequest(k, BigInt(int(1e9)), body as never);
  };
  const mutate = (buf: Buffer): Buffer => {
    const b = Buffer.from(buf);
    const r = int(5);
    if (r === 0) return b.subarray(0, int(b.length + 1)); // truncate
    if (r === 1) return Buffer.concat([b, randomBytes(1 + int(16))]); // extend
    if (r === 2) {
      b[12] = int(256); // any kind byte
      return b;
    }
    for (let i = 0, n = 1 + int(4); i < n; i++) b[int(b.length)] = int(256); // flip bytes
    return b;
  };
  const noise = (): Buffer => {
    const b = randomBytes(int(1600));
    if (b.length >= 4 && rnd() < 0.7) b.writeUInt32LE(SHARD_MAGIC, 0);
    return b;
  };

  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  let answers = 0;
  const problems: string[] = [];
  const codes = new Map<string, number>();
  sock.on('message', (m) => {
    answers++;
    if (m.length < 13 || m.readUInt32LE(0) !== SHARD_MAGIC || m.length > UDP_MTU) {
      problems.push(`bad answer of ${m.length} bytes`);
      return;
    }
    if (m[12] === 0) {
      const code = m.length === 15 ? m.readUInt16LE(13) : -1;
      if (!isKnownErrorCode(code)) problems.push(`error answer with code ${code}`);
      if (code === ErrorCode.INTERNAL_ERROR) problems.push('INTERNAL_ERROR answered');
      codes.set(errorName(code), (codes.get(errorName(code)) ?? 0) + 1);
    } else if (!SHARD_BY_KIND[m[12]!]) {
      problems.push(`answer of unknown kind ${m[12]}`);
    } else {
      const name = SHARD_BY_KIND[m[12]!]!.name;
      codes.set(`ok ${name}`, (codes.get(`ok ${name}`) ?? 0) + 1);
    }
  });
  // Only a datagram with the magic and a request id gets an answer (metadata.md §1.5).
  let expected = 0;
  let stalls = 0;
  for (let sent = 0; sent < DATAGRAMS; ) {
    for (let i = 0; i < BURST && sent < DATAGRAMS; i++, sent++) {
      const r = rnd();
      const d = r < 0.35 ? structured() : r < 0.85 ? mutate(structured()) : noise();
      if (d.length >= 12 && d.readUInt32LE(0) === SHARD_MAGIC) expected++;
      sock.send(d, fx.basePort, '127.0.0.1');
    }
    // One burst in flight at a time, so the shard's socket buffer is not simply overrun.
    const waitUntil = Date.now() + 1_000;
    while (answers < expected && Date.now() < waitUntil) await new Promise((r) => setTimeout(r, 1));
    if (answers < expected) {
      stalls++;
      expected = answers; // count what was lost once, then carry on
    }
  }
  sock.close();
  t.diagnostic(`seed ${seed}; answers: ${JSON.stringify([...codes].sort())}`);
  assert.ok(stalls < 5, `${stalls} bursts lost answers`);

  // Still alive and answering correctly.
  assert.equal(fx.proc.proc.exitCode, null, `shard exited; seed ${seed}\n${fx.proc.stderr()}`);
  const st = await fx.req('STAT', { id: ROOT_DIR_INODE_ID });
  assert.equal(st.sizeOrOwner, 0n);
  const f = await fx.req('CONSTRUCT_FILE', { type: 2 });
  await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: ROOT_DIR_INODE_ID, name: Buffer.from('after-fuzz') });
  assert.equal((await fx.req('LOOKUP', { dirId: ROOT_DIR_INODE_ID, name: Buffer.from('after-fuzz') })).targetId, f.id);
  assert.deepEqual(problems.slice(0, 10), [], `seed ${seed}; answers by error: ${JSON.stringify([...codes])}\n${fx.proc.stderr().slice(-3000)}`);
  assert.ok((codes.get('MALFORMED_REQUEST') ?? 0) > 0 && (codes.get('NOT_AUTHORISED') ?? 0) > 0, JSON.stringify([...codes]));

  const db = new Database(path.join(fx.dir, 'shard_000.sqlite'), { readonly: true });
  try {
    assert.deepEqual(db.pragma('integrity_check'), [{ integrity_check: 'ok' }]);
    assert.deepEqual(db.pragma('foreign_key_check'), []);
  } finally {
    db.close();
  }
});

test('a database error (locked by another writer) answers INTERNAL_ERROR, rolls back, and the shard keeps serving', async (t) => {
  const fx = await startShards({ shards: '0-0', count: 1, blockServices: 1 });
  t.after(() => fx.stop());
  const f = await fx.req('CONSTRUCT_FILE', { type: 2 });
  const db = new Database(path.join(fx.dir, 'shard_000.sqlite'));
  db.exec('BEGIN IMMEDIATE'); // hold the write lock past the shard's busy timeout
  let answer: unknown;
  try {
    const linking = fx.transport.shardRequest(
      { host: '127.0.0.1', port: fx.basePort },
      'LINK_FILE',
      { fileId: f.id, cookie: f.cookie, ownerId: ROOT_DIR_INODE_ID, name: Buffer.from('locked-out') },
      { timeoutMs: 15_000, attempts: 1 },
    );
    answer = await linking.then(
      () => 'ok',
      (e: Error & { code?: number }) => e.code,
    );
  } finally {
    db.exec('ROLLBACK');
    db.close();
  }
  assert.equal(answer, ErrorCode.INTERNAL_ERROR);
  assert.match(fx.proc.stderr(), /locked|busy/i);
  // Nothing of the failed request stayed; the same request now succeeds.
  await fx.err('LOOKUP', { dirId: ROOT_DIR_INODE_ID, name: Buffer.from('locked-out') }, ErrorCode.NAME_NOT_FOUND);
  await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: ROOT_DIR_INODE_ID, name: Buffer.from('locked-out') });
  assert.equal((await fx.req('LOOKUP', { dirId: ROOT_DIR_INODE_ID, name: Buffer.from('locked-out') })).targetId, f.id);
});
