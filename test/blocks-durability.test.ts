// Block-service durability across kill -9 and its on-disk formats: a stream of writes killed
// mid-way, recovery of states a crash leaves (a filled spare whose rename was lost, a spare that
// never got its bytes, torn and damaged records), and a data directory of the previous version
// (16-byte records in block-crcs.log). Real processes, sockets and disks.
import { test, describe } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { BlockClient, BlockServiceError } from '../src/client/blocks.js';
import { blockRelativePath } from '../src/proto/blockwire.js';
import { blockWriteCertificate } from '../src/proto/crypto.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';
import { eggsNow } from '../src/proto/time.js';
import { freeTcpPort } from './helpers/ports.js';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';

interface Running {
  svc: Service;
  key: Buffer;
  addr: { ip: string; port: number };
}

async function startBlocks(dir: string, port?: number): Promise<Running> {
  port ??= await freeTcpPort();
  const svc = startEggsfs(['blocks', '--dir', dir, '--port', String(port), '--shuckle-udp', 'none']);
  await svc.waitFor(/^ready blocks /);
  return { svc, key: fs.readFileSync(path.join(dir, 'secret.key')), addr: { ip: '127.0.0.1', port } };
}

let idCounter = 0n;
function freshId(shard: number): bigint {
  idCounter += 0x1000n;
  return ((eggsNow() + idCounter) & ~0xffn) | BigInt(shard & 0xff);
}

function payload(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 131 + seed * 7 + (i >> 12)) & 0xff;
  return b;
}

/** A record of block-records.log, encoded here from the format's description, not our encoder. */
function record(id: bigint, size: number, crc: number, spare: bigint): Buffer {
  const r = Buffer.alloc(32);
  r.writeBigUInt64LE(id, 0);
  r.writeUInt32LE(size >>> 0, 8);
  r.writeUInt32LE(crc >>> 0, 12);
  r.writeBigUInt64LE(spare, 16);
  r.write('EGSR', 24, 'latin1');
  r.writeUInt32LE(crc32c(r.subarray(0, 28)) >>> 0, 28);
  return r;
}

/** The previous version's 16-byte (id, size, crc) record of block-crcs.log. */
function oldRecord(id: bigint, size: number, crc: number): Buffer {
  const r = Buffer.alloc(16);
  r.writeBigUInt64LE(id, 0);
  r.writeUInt32LE(size >>> 0, 8);
  r.writeUInt32LE(crc >>> 0, 12);
  return r;
}

/** Records in a record log: 32-byte slots that are not all zeros (the log is extended with zeros ahead). */
function usedRecordSlots(file: string): number {
  const b = fs.readFileSync(file);
  let n = 0;
  for (let o = 0; o + 32 <= b.length; o += 32) if (b.subarray(o, o + 32).some((x) => x !== 0)) n++;
  return n;
}

function spareFile(dir: string, spare: bigint): string {
  return path.join(dir, '.spares', spare.toString(16).padStart(16, '0'));
}

/** A data directory with a secret key and nothing else, as a fresh service would find it. */
function newDataDir(root: string): { dir: string; key: Buffer } {
  const dir = path.join(root, 'd');
  fs.mkdirSync(path.join(dir, '.spares'), { recursive: true });
  const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  fs.writeFileSync(path.join(dir, 'secret.key'), key);
  return { dir, key };
}

function placeBlock(dir: string, id: bigint, data: Buffer): string {
  const p = path.join(dir, blockRelativePath(id));
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, data);
  return p;
}

describe('block service crash recovery', () => {
  test('kill -9 in the middle of a stream of writes: every acknowledged block is served byte-exact after restart', async () => {
    const tmp = tempDir('blocks-stream-kill');
    const dir = path.join(tmp.path, 'd');
    let bs = await startBlocks(dir);
    const acked = new Map<bigint, Buffer>();
    const client = new BlockClient({ ioTimeoutMs: 10_000 });
    try {
      // 4 writers of blocks from 4 KiB to 3 MiB (both write paths: one O_DSYNC write, and
      // streamed writes with a final fdatasync), killed while writes are in flight.
      let stop = false;
      let seq = 0;
      const writers = Array.from({ length: 4 }, async (_, w) => {
        while (!stop) {
          const n = seq++;
          const d = payload([4096, 1 << 20, 3 << 20, 100_000][n % 4]!, n);
          const id = freshId(n);
          const crc = crc32c(d);
          try {
            await client.write(bs.addr, id, crc, d, blockWriteCertificate(bs.key, id, crcToBytes(crc), d.length));
            acked.set(id, d);
          } catch (err) {
            if (!(err instanceof BlockServiceError)) throw err;
            if (!stop) throw new Error(`writer ${w}: a write failed before the kill: ${(err as Error).message}`);
          }
        }
      });
      while (acked.size < 40) await new Promise((r) => setTimeout(r, 5));
      stop = true;
      await bs.svc.kill('SIGKILL');
      await Promise.all(writers);
      client.close();
      bs = await startBlocks(dir, bs.addr.port);
      const c2 = new BlockClient();
      for (const [id, d] of acked) assert.ok((await c2.fetch(bs.addr, id)).equals(d), `block ${id.toString(16)} served byte-exact`);
      // Nothing but empty spares is left in .spares, and every block counted is acknowledged or not.
      const spares = path.join(dir, '.spares');
      for (const n of fs.readdirSync(spares)) assert.equal(fs.statSync(path.join(spares, n)).size, 0, `spare ${n} is empty`);
      const s = await c2.stats(bs.addr, { key: bs.key });
      assert.ok(s.usedN >= BigInt(acked.size));
      // More writes after the restart land after the records already in the log (which is
      // extended with zeros ahead): another kill -9 and restart keeps them all.
      for (let i = 0; i < 10; i++) {
        const d = payload(50_000 + i, 1000 + i);
        const id = freshId(0x80 + i);
        await c2.write(bs.addr, id, crc32c(d), d, blockWriteCertificate(bs.key, id, crcToBytes(crc32c(d)), d.length));
        acked.set(id, d);
      }
      c2.close();
      await bs.svc.kill('SIGKILL');
      bs = await startBlocks(dir, bs.addr.port);
      const c3 = new BlockClient();
      for (const [id, d] of acked) assert.ok((await c3.fetch(bs.addr, id)).equals(d), `block ${id.toString(16)} served byte-exact after the second restart`);
      assert.ok(usedRecordSlots(path.join(dir, 'block-records.log')) >= acked.size);
      c3.close();
    } finally {
      client.close();
      await bs.svc.kill();
      tmp.remove();
    }
  });

  test('a zero slot under a later record (two record flushes in flight, the earlier lost in a crash) is skipped; new records go after the last', async () => {
    const tmp = tempDir('blocks-record-hole');
    try {
      const { dir } = newDataDir(tmp.path);
      // A: acknowledged, rename lost (the spare holds the bytes).
      const a = payload(100_000, 11);
      const idA = freshId(0x31);
      fs.writeFileSync(spareFile(dir, 0xa2n), a);
      // X: its record's flush never reached the disk (a zero slot), its spare holds the bytes:
      // never acknowledged.
      const idX = freshId(0x32);
      fs.writeFileSync(spareFile(dir, 0xb2n), payload(70_000, 12));
      // D: settled, its record written by the later flush.
      const d = payload(9000, 13);
      const idD = freshId(0x33);
      placeBlock(dir, idD, d);
      const log = path.join(dir, 'block-records.log');
      fs.writeFileSync(log, Buffer.concat([record(idA, a.length, crc32c(a), 0xa2n), Buffer.alloc(32), record(idD, d.length, crc32c(d), 0xd2n), Buffer.alloc(4 * 32)]));

      let bs = await startBlocks(dir);
      const client = new BlockClient();
      try {
        assert.ok((await client.fetch(bs.addr, idA)).equals(a), 'A recovered from its spare');
        assert.ok((await client.fetch(bs.addr, idD)).equals(d));
        await assert.rejects(client.fetch(bs.addr, idX), BlockServiceError);
        assert.ok(!fs.existsSync(spareFile(dir, 0xb2n)), "X's spare removed");
        // A new write's record goes after D's, not into the hole; it survives kill -9.
        const n = payload(20_000, 14);
        const idN = freshId(0x34);
        await client.write(bs.addr, idN, crc32c(n), n, blockWriteCertificate(bs.key, idN, crcToBytes(crc32c(n)), n.length));
        const slots = fs.readFileSync(log);
        assert.ok(slots.subarray(32, 64).every((x) => x === 0), 'the hole stays unused');
        assert.equal(slots.readBigUInt64LE(3 * 32), idN, "the new record follows D's");
        await bs.svc.kill('SIGKILL');
        bs = await startBlocks(dir, bs.addr.port);
        for (const [id, data] of [[idA, a], [idD, d], [idN, n]] as const) assert.ok((await client.fetch(bs.addr, id)).equals(data));
      } finally {
        client.close();
        await bs.svc.kill();
      }
    } finally {
      tmp.remove();
    }
  });

  test('a filled spare whose rename was lost is renamed at startup; unmatched spares and records are dropped', async () => {
    const tmp = tempDir('blocks-recover');
    try {
      const { dir } = newDataDir(tmp.path);
      const recs: Buffer[] = [];
      // A: acknowledged, rename lost (the spare holds the bytes, the real name is absent).
      const a = payload(300_000, 1);
      const idA = freshId(0x21);
      fs.writeFileSync(spareFile(dir, 0xa1n), a);
      recs.push(record(idA, a.length, crc32c(a), 0xa1n));
      // B: record durable, bytes not all on disk (short spare): never acknowledged.
      const b = payload(200_000, 2);
      const idB = freshId(0x22);
      fs.writeFileSync(spareFile(dir, 0xb1n), b.subarray(0, 150_000));
      recs.push(record(idB, b.length, crc32c(b), 0xb1n));
      // C: record durable, the spare's bytes are wrong (same size): never acknowledged.
      const c = payload(4096, 3);
      const idC = freshId(0x23);
      fs.writeFileSync(spareFile(dir, 0xc1n), payload(4096, 4));
      recs.push(record(idC, c.length, crc32c(c), 0xc1n));
      // D: settled (renamed, spare gone).
      const d = payload(5000, 5);
      const idD = freshId(0x24);
      placeBlock(dir, idD, d);
      recs.push(record(idD, d.length, crc32c(d), 0xd1n));
      // A spare with bytes and no record (crash mid-receive), and an empty one (reusable).
      fs.writeFileSync(spareFile(dir, 0xe1n), payload(1000, 6));
      fs.writeFileSync(spareFile(dir, 0xf1n), Buffer.alloc(0));
      // A damaged record in the middle and a torn one at the end are skipped.
      const damaged = record(freshId(0x25), 10, 0, 0n);
      damaged[3] ^= 0xff;
      recs.push(damaged);
      recs.push(record(freshId(0x26), 10, 0, 0x99n).subarray(0, 20));
      fs.writeFileSync(path.join(dir, 'block-records.log'), Buffer.concat(recs));

      const bs = await startBlocks(dir);
      const client = new BlockClient();
      try {
        assert.ok((await client.fetch(bs.addr, idA)).equals(a), 'A recovered from its spare');
        assert.ok(fs.existsSync(path.join(dir, blockRelativePath(idA))));
        assert.ok(!fs.existsSync(spareFile(dir, 0xa1n)));
        await assert.rejects(client.fetch(bs.addr, idB), BlockServiceError);
        await assert.rejects(client.fetch(bs.addr, idC), BlockServiceError);
        assert.ok((await client.fetch(bs.addr, idD)).equals(d));
        for (const s of [0xb1n, 0xc1n, 0xe1n]) assert.ok(!fs.existsSync(spareFile(dir, s)), `spare ${s.toString(16)} removed`);
        assert.ok(fs.existsSync(spareFile(dir, 0xf1n)), 'the empty spare is kept for reuse');
        assert.equal(fs.statSync(path.join(dir, 'block-records.log')).size % 32, 0, 'torn record cut');
        // B and C can now be written for real.
        const crcB = crc32c(b);
        await client.write(bs.addr, idB, crcB, b, blockWriteCertificate(bs.key, idB, crcToBytes(crcB), b.length));
        assert.ok((await client.fetch(bs.addr, idB)).equals(b));
        const s = await client.stats(bs.addr, { key: bs.key });
        assert.equal(s.usedN, 3n); // A, B, D
      } finally {
        client.close();
        await bs.svc.kill();
      }
      // The recovered state is stable across another (clean) restart.
      const bs2 = await startBlocks(dir);
      const c2 = new BlockClient();
      try {
        assert.ok((await c2.fetch(bs2.addr, idA)).equals(a));
        assert.ok((await c2.fetch(bs2.addr, idB)).equals(b));
        await assert.rejects(c2.fetch(bs2.addr, idC), BlockServiceError);
      } finally {
        c2.close();
        await bs2.svc.kill();
      }
    } finally {
      tmp.remove();
    }
  });

  test('a rewrite of a damaged block whose bytes never reached the spare keeps the damaged copy unservable', async () => {
    const tmp = tempDir('blocks-recover-rewrite');
    try {
      const { dir } = newDataDir(tmp.path);
      const data = payload(64 << 10, 9);
      const id = freshId(0x31);
      const bad = Buffer.from(data);
      bad[100] ^= 1;
      placeBlock(dir, id, bad);
      fs.writeFileSync(spareFile(dir, 0x31n), data.subarray(0, 1000));
      fs.writeFileSync(path.join(dir, 'block-records.log'), Buffer.concat([record(id, data.length, crc32c(data), 0n), record(id, data.length, crc32c(data), 0x31n)]));
      const bs = await startBlocks(dir);
      const client = new BlockClient();
      try {
        await assert.rejects(client.fetch(bs.addr, id), BlockServiceError, 'the damaged copy is not served');
        const crc = crc32c(data);
        await client.write(bs.addr, id, crc, data, blockWriteCertificate(bs.key, id, crcToBytes(crc), data.length));
        assert.ok((await client.fetch(bs.addr, id)).equals(data));
      } finally {
        client.close();
        await bs.svc.kill();
      }
    } finally {
      tmp.remove();
    }
  });

  test('a data directory of the previous version (block-crcs.log, 16-byte records) opens and keeps its records', async () => {
    const tmp = tempDir('blocks-old-format');
    try {
      const { dir, key } = newDataDir(tmp.path);
      fs.rmdirSync(path.join(dir, '.spares'));
      const a = payload(70_000, 11);
      const idA = freshId(0x41);
      placeBlock(dir, idA, a);
      // B's file does not match its record: the record must be honoured (never served).
      const b = payload(9000, 12);
      const idB = freshId(0x42);
      const bBad = Buffer.from(b);
      bBad[5] ^= 0x10;
      placeBlock(dir, idB, bBad);
      // C was placed by the original service: no record, served as it is.
      const c = payload(3000, 13);
      const idC = freshId(0x43);
      placeBlock(dir, idC, c);
      // D was erased (a tombstone after its record).
      const idD = freshId(0x44);
      fs.writeFileSync(
        path.join(dir, 'block-crcs.log'),
        Buffer.concat([oldRecord(idA, a.length, crc32c(a)), oldRecord(idB, b.length, crc32c(b)), oldRecord(idD, 10, 1), oldRecord(idD, 0xffffffff, 0)]),
      );
      // And a temp file the previous version's write path left in a crash.
      fs.writeFileSync(path.join(dir, '41', `.tmp-${'41'.padEnd(16, '0')}-0badf00d`), payload(100, 1));
      for (let round = 0; round < 2; round++) {
        const bs = await startBlocks(dir);
        assert.deepEqual(bs.key, key);
        const client = new BlockClient();
        try {
          assert.ok((await client.fetch(bs.addr, idA)).equals(a));
          await assert.rejects(client.fetch(bs.addr, idB), BlockServiceError, 'the record of the old log is checked');
          assert.ok((await client.fetch(bs.addr, idC)).equals(c));
          assert.ok(!fs.existsSync(path.join(dir, 'block-crcs.log')), 'old log migrated');
          if (round === 0) assert.equal(usedRecordSlots(path.join(dir, 'block-records.log')), 2, 'two live records migrated');
          assert.deepEqual(fs.readdirSync(path.join(dir, '41')), [path.basename(blockRelativePath(idA))]);
          // New writes land next to the migrated blocks.
          const e = payload(2 << 20, 14 + round);
          const idE = freshId(0x45);
          const crc = crc32c(e);
          await client.write(bs.addr, idE, crc, e, blockWriteCertificate(bs.key, idE, crcToBytes(crc), e.length));
          assert.ok((await client.fetch(bs.addr, idE)).equals(e));
          fs.rmSync(path.join(dir, blockRelativePath(idE)));
        } finally {
          client.close();
          await bs.svc.kill('SIGKILL');
        }
      }
    } finally {
      tmp.remove();
    }
  });

  test('a full disk: a write that cannot be stored gets no proof; every proven block is served; writes work again once there is room', async (t) => {
    const tmp = tempDir('blocks-enospc');
    const mnt = path.join(tmp.path, 'mnt');
    fs.mkdirSync(mnt);
    // A small tmpfs is a disk that fills up (needs root, as the FUSE tests do).
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', mnt]);
    if (m.status !== 0) {
      tmp.remove();
      t.skip(`cannot mount a tmpfs: ${m.stderr}`);
      return;
    }
    const dir = path.join(mnt, 'd');
    let bs: Running | null = null;
    const client = new BlockClient();
    try {
      bs = await startBlocks(dir);
      const proven = new Map<bigint, Buffer>();
      let refused = 0;
      for (let i = 0; i < 12; i++) {
        const d = payload(i % 3 === 2 ? 1_500_000 : 700_000, 40 + i);
        const id = freshId(0x50 + i);
        const crc = crc32c(d);
        try {
          await client.write(bs.addr, id, crc, d, blockWriteCertificate(bs.key, id, crcToBytes(crc), d.length));
          proven.set(id, d);
        } catch (err) {
          assert.ok(err instanceof BlockServiceError, String(err));
          refused++;
          await assert.rejects(client.fetch(bs.addr, id), BlockServiceError, 'a refused write left no block');
        }
      }
      assert.ok(refused > 0, 'the disk filled up');
      assert.ok(proven.size > 0);
      for (const [id, d] of proven) assert.ok((await client.fetch(bs.addr, id)).equals(d));
      // Make room (as an operator would), then a write succeeds again and restarts keep everything.
      const victim = [...proven.keys()][0]!;
      fs.rmSync(path.join(dir, blockRelativePath(victim)));
      proven.delete(victim);
      const d = payload(100_000, 99);
      const id = freshId(0x5f);
      const crc = crc32c(d);
      await client.write(bs.addr, id, crc, d, blockWriteCertificate(bs.key, id, crcToBytes(crc), d.length));
      proven.set(id, d);
      await bs.svc.kill('SIGKILL');
      client.close();
      bs = await startBlocks(dir, bs.addr.port);
      const c2 = new BlockClient();
      for (const [pid, pd] of proven) assert.ok((await c2.fetch(bs.addr, pid)).equals(pd));
      c2.close();
    } finally {
      client.close();
      await bs?.svc.kill();
      spawnSync('umount', [mnt]);
      tmp.remove();
    }
  });
});
