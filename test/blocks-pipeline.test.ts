// Pipelined requests on one block-service connection (services.md §2.3: requests on a connection
// are processed strictly in order, so a client may send the next before the previous response
// arrives): responses in request order and byte-exact, a failure in the middle closes the
// connection after the earlier responses and before any later one, a later request observes the
// earlier ones, and every proof received survives kill -9.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BlockClient } from '../src/client/blocks.js';
import { blockRelativePath } from '../src/proto/blockwire.js';
import { blockEraseCertificate, blockEraseProof, blockWriteCertificate, blockWriteProof } from '../src/proto/crypto.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';
import { eggsNow, ONE_HOUR_NS, NS_PER_MS } from '../src/proto/time.js';
import { freeTcpPort } from './helpers/ports.js';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';

const MiB = 1 << 20;
/** Long enough that no test's pauses trip it (the erase test pauses 1.5 s mid-request). */
const IDLE_TIMEOUT_MS = 10_000;
/** How long a raw connection may take to be answered and closed before the test gives up. */
const RAW_TIMEOUT_MS = 30_000;

interface Running {
  svc: Service;
  dir: string;
  port: number;
  key: Buffer;
}

async function startBlocks(dir: string, port?: number): Promise<Running> {
  port ??= await freeTcpPort();
  const svc = startEggsfs(['blocks', '--dir', dir, '--port', String(port), '--shuckle-udp', 'none', '--idle-timeout-ms', String(IDLE_TIMEOUT_MS)]);
  await svc.waitFor(/^ready blocks /);
  return { svc, dir, port, key: fs.readFileSync(path.join(dir, 'secret.key')) };
}

let idCounter = 0n;
/** A fresh block id "now", spread over the shard sub-directories. */
function freshId(): bigint {
  idCounter += 0x1000n;
  return ((eggsNow() + idCounter) & ~0xffn) | (idCounter >> 12n) % 256n;
}

function payload(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

function writeReq(key: Buffer, id: bigint, data: Buffer, opts: { badCert?: boolean } = {}): Buffer {
  const crc = crcToBytes(crc32c(data));
  const h = Buffer.alloc(25);
  h[0] = 0x77;
  h.writeBigUInt64LE(id, 1);
  crc.copy(h, 9);
  h.writeUInt32LE(data.length, 13);
  const cert = blockWriteCertificate(key, id, crc, data.length);
  if (opts.badCert) cert[0] ^= 1;
  cert.copy(h, 17);
  return Buffer.concat([h, data]);
}

function writeResp(key: Buffer, id: bigint): Buffer {
  const r = Buffer.alloc(17);
  r[0] = 0x57;
  r.writeBigUInt64LE(id, 1);
  blockWriteProof(key, id).copy(r, 9);
  return r;
}

function fetchReq(id: bigint): Buffer {
  const r = Buffer.alloc(9);
  r[0] = 0x66;
  r.writeBigUInt64LE(id, 1);
  return r;
}

function fetchResp(data: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = 0x46;
  h.writeUInt32LE(data.length, 1);
  return Buffer.concat([h, data]);
}

function crcReq(id: bigint): Buffer {
  const r = Buffer.alloc(9);
  r[0] = 0x63;
  r.writeBigUInt64LE(id, 1);
  return r;
}

function crcResp(data: Buffer): Buffer {
  const r = Buffer.alloc(9);
  r[0] = 0x43;
  r.writeUInt32LE(data.length, 1);
  crcToBytes(crc32c(data)).copy(r, 5);
  return r;
}

function eraseReq(key: Buffer, id: bigint): Buffer {
  const r = Buffer.alloc(17);
  r[0] = 0x65;
  r.writeBigUInt64LE(id, 1);
  blockEraseCertificate(key, id).copy(r, 9);
  return r;
}

function eraseResp(key: Buffer, id: bigint): Buffer {
  const r = Buffer.alloc(17);
  r[0] = 0x45;
  r.writeBigUInt64LE(id, 1);
  blockEraseProof(key, id).copy(r, 9);
  return r;
}

/**
 * Sends every piece back to back on one connection without waiting for any response (pausing
 * `pauseMs` before a piece that has one), half-closes, and collects everything the server sends
 * until it closes. `onData` sees the bytes received so far after each arrival. With
 * `readPauseMs`, reading pauses that long after each arrival (a slow client).
 */
function burst(port: number, pieces: { bytes: Buffer; pauseMs?: number }[], onData?: (received: Buffer) => void, readPauseMs = 0): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    if (readPauseMs > 0) {
      s.on('data', () => {
        s.pause();
        setTimeout(() => s.resume(), readPauseMs);
      });
    }
    const chunks: Buffer[] = [];
    let receivedBytes = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no close from the server within ${RAW_TIMEOUT_MS} ms (${receivedBytes} bytes received)`));
    }, RAW_TIMEOUT_MS);
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      receivedBytes += d.length;
      onData?.(Buffer.concat(chunks));
    });
    s.on('error', () => {}); // a reset after a refusal: the close below reports what arrived
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    s.on('connect', async () => {
      for (const p of pieces) {
        if (p.pauseMs) await new Promise((r) => setTimeout(r, p.pauseMs));
        if (s.destroyed) return;
        s.write(p.bytes);
      }
      s.end();
    });
  });
}

/** The first index where a and b differ (for readable failures on megabyte buffers). */
function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function assertBytes(got: Buffer, want: Buffer, what: string): void {
  const at = firstDifference(got, want);
  assert.equal(at, -1, `${what}: ${got.length} bytes received, ${want.length} expected, first difference at byte ${at}`);
}

describe('block service: pipelined requests on one connection', () => {
  let tmp: { path: string; remove(): void };
  let bs: Running;
  const client = new BlockClient();

  before(async () => {
    tmp = tempDir('blocks-pipeline');
    bs = await startBlocks(path.join(tmp.path, 'store'));
  });
  after(async () => {
    client.close();
    await bs.svc.kill();
    tmp.remove();
  });

  test('writes and fetches sent back to back: every response in order, byte-exact', async () => {
    // Sizes around the write batch (1 MiB), an empty block, and blocks large enough to hold
    // several megabytes per connection; more requests than the server keeps in progress.
    const sizes = [100, 0, MiB, MiB + 1, 3 * MiB + 17, 64 << 10, 5 * MiB, 1, MiB - 1, 2 * MiB];
    const blocks = sizes.map((size, i) => ({ id: freshId(), data: payload(size, i) }));
    const pieces: { bytes: Buffer }[] = [];
    const want: Buffer[] = [];
    for (const b of blocks) {
      pieces.push({ bytes: writeReq(bs.key, b.id, b.data) });
      want.push(writeResp(bs.key, b.id));
    }
    // Fetches of every block, in reverse, then a crc of each: all on the same connection.
    for (const b of [...blocks].reverse()) {
      pieces.push({ bytes: fetchReq(b.id) });
      want.push(fetchResp(b.data));
    }
    for (const b of blocks) {
      pieces.push({ bytes: crcReq(b.id) });
      want.push(crcResp(b.data));
    }
    assertBytes(await burst(bs.port, pieces), Buffer.concat(want), 'pipelined writes, fetches and crcs');
    // And the blocks are stored, as a fresh connection sees.
    for (const b of blocks) assert.deepEqual(await client.fetch({ ip: '127.0.0.1', port: bs.port }, b.id), b.data);
  });

  test('a fetch or crc right behind a write of the same block observes the write', async () => {
    const pieces: { bytes: Buffer }[] = [];
    const want: Buffer[] = [];
    for (let i = 0; i < 6; i++) {
      const id = freshId();
      const data = payload(i % 2 ? 3 * MiB + i : 200_000 + i, 40 + i);
      pieces.push({ bytes: writeReq(bs.key, id, data) }, { bytes: fetchReq(id) }, { bytes: crcReq(id) });
      want.push(writeResp(bs.key, id), fetchResp(data), crcResp(data));
    }
    assertBytes(await burst(bs.port, pieces), Buffer.concat(want), 'write, then fetch and crc of the same block');
  });

  test('two pipelined writes of the same block behave as they would one after the other', async () => {
    // The same block twice (a retry): both acknowledged, stored once.
    const id = freshId();
    const data = payload(MiB + 5, 60);
    const got = await burst(bs.port, [{ bytes: writeReq(bs.key, id, data) }, { bytes: writeReq(bs.key, id, data) }, { bytes: fetchReq(id) }]);
    assertBytes(got, Buffer.concat([writeResp(bs.key, id), writeResp(bs.key, id), fetchResp(data)]), 'the same write twice');
    // A different block under the same id right behind: the first is acknowledged, the second
    // refused (the connection closes), and the first stays.
    const id2 = freshId();
    const first = payload(300_000, 61);
    const other = payload(300_000, 62);
    const got2 = await burst(bs.port, [{ bytes: writeReq(bs.key, id2, first) }, { bytes: writeReq(bs.key, id2, other) }, { bytes: fetchReq(id2) }]);
    assertBytes(got2, writeResp(bs.key, id2), 'a different block under an id just written');
    assert.deepEqual(await client.fetch({ ip: '127.0.0.1', port: bs.port }, id2), first);
  });

  test('a bad request in the middle: the earlier responses arrive, nothing for it or after it', async () => {
    const blocks = [0, 1, 2, 3, 4].map((i) => ({ id: freshId(), data: payload(MiB + i * 1000, 70 + i) }));
    // Bad certificate on the third write.
    const pieces = blocks.map((b, i) => ({ bytes: writeReq(bs.key, b.id, b.data, { badCert: i === 2 }) }));
    const got = await burst(bs.port, pieces);
    assertBytes(got, Buffer.concat([writeResp(bs.key, blocks[0]!.id), writeResp(bs.key, blocks[1]!.id)]), 'writes with a bad certificate in the middle');
    const addr = { ip: '127.0.0.1', port: bs.port };
    for (const b of blocks.slice(0, 2)) assert.deepEqual(await client.fetch(addr, b.id), b.data);
    // The refused write and the one behind it (never read) were not stored.
    for (const b of blocks.slice(2)) assert.ok(!fs.existsSync(path.join(bs.dir, blockRelativePath(b.id))), 'a block at or after the refusal is stored');

    // A fetch of a missing block in the middle, with a fetch still streaming before it: that
    // fetch arrives whole, then nothing.
    const big = { id: freshId(), data: payload(4 * MiB + 3, 80) };
    await client.write(addr, big.id, crc32c(big.data), big.data, blockWriteCertificate(bs.key, big.id, crcToBytes(crc32c(big.data)), big.data.length));
    const after = { id: freshId(), data: payload(1000, 81) };
    const got2 = await burst(bs.port, [{ bytes: fetchReq(big.id) }, { bytes: fetchReq(freshId()) }, { bytes: writeReq(bs.key, after.id, after.data) }, { bytes: fetchReq(big.id) }]);
    assertBytes(got2, fetchResp(big.data), 'a fetch of a missing block behind a fetch');
    // The same with a client that reads slowly: the earlier fetch's bytes still queued on the
    // server when the refusal comes are delivered before the connection closes, not dropped.
    const large = { id: freshId(), data: payload(16 * MiB + 5, 82) };
    await client.write(addr, large.id, crc32c(large.data), large.data, blockWriteCertificate(bs.key, large.id, crcToBytes(crc32c(large.data)), large.data.length));
    const got4 = await burst(bs.port, [{ bytes: fetchReq(large.id) }, { bytes: fetchReq(freshId()) }], undefined, 2);
    assertBytes(got4, fetchResp(large.data), 'a fetch of a missing block behind a fetch, read slowly');

    // A refused write's body is not read as requests, even when it holds a valid one (and an
    // earlier write is still committing, so the refusal is not yet reported).
    const before = { id: freshId(), data: payload(2 * MiB, 84) };
    const inner = { id: freshId(), data: payload(2000, 85) };
    const innerReq = writeReq(bs.key, inner.id, inner.data);
    const got5 = await burst(bs.port, [{ bytes: writeReq(bs.key, before.id, before.data) }, { bytes: writeReq(bs.key, freshId(), innerReq, { badCert: true }) }]);
    assertBytes(got5, writeResp(bs.key, before.id), 'a write, then a refused write holding a valid one');
    assert.ok(!fs.existsSync(path.join(bs.dir, blockRelativePath(inner.id))), 'a write inside a refused write\'s body was stored');

    // An unknown kind byte behind two writes.
    const two = [0, 1].map((i) => ({ id: freshId(), data: payload(500_000, 90 + i) }));
    const got3 = await burst(bs.port, [...two.map((b) => ({ bytes: writeReq(bs.key, b.id, b.data) })), { bytes: Buffer.from('?') }, { bytes: fetchReq(two[0]!.id) }]);
    assertBytes(got3, Buffer.concat(two.map((b) => writeResp(bs.key, b.id))), 'an unknown request kind behind two writes');
  });

  test('erase after a pipelined write of the same block observes the write; fetch, erase, fetch in order', async () => {
    // A write is accepted down to now - 22 h and an erase from there on: a block id 1 s above
    // that bound is writable now and erasable a second later. The write's header goes now; its
    // body and the erase right behind it (before the write's response) 1.5 s later, so the erase
    // is checked after the bound has passed. It must find the block the write stored.
    const PAST_CUTOFF_NS = 22n * ONE_HOUR_NS;
    const id = ((eggsNow() - PAST_CUTOFF_NS + 1_000n * NS_PER_MS) & ~0xffn) | 0x11n;
    const data = payload(2 * MiB + 9, 100);
    const w = writeReq(bs.key, id, data);
    const got = await burst(bs.port, [{ bytes: w.subarray(0, 25) }, { bytes: Buffer.concat([w.subarray(25), eraseReq(bs.key, id), fetchReq(id)]), pauseMs: 1_500 }]);
    // The write is proven, the erase too, and the fetch behind them finds no block (closed).
    assertBytes(got, Buffer.concat([writeResp(bs.key, id), eraseResp(bs.key, id)]), 'write, erase, fetch of one block');
    assert.ok(!fs.existsSync(path.join(bs.dir, blockRelativePath(id))), 'the erased block is still on disk');

    // A block from 23 h ago (as the original layout would hold it): fetch, erase, fetch.
    const old = ((eggsNow() - 23n * ONE_HOUR_NS) & ~0xffn) | 0x12n;
    const oldData = payload(3 * MiB, 101);
    const file = path.join(bs.dir, blockRelativePath(old));
    fs.writeFileSync(file, oldData);
    const got2 = await burst(bs.port, [{ bytes: fetchReq(old) }, { bytes: eraseReq(bs.key, old) }, { bytes: fetchReq(old) }]);
    assertBytes(got2, Buffer.concat([fetchResp(oldData), eraseResp(bs.key, old)]), 'fetch, erase, fetch of an old block');
    assert.ok(!fs.existsSync(file));

    // An erase refused (block too recent) behind a write of it: the write's proof arrives first.
    const recent = freshId();
    const recentData = payload(100_000, 102);
    const got3 = await burst(bs.port, [{ bytes: writeReq(bs.key, recent, recentData) }, { bytes: eraseReq(bs.key, recent) }]);
    assertBytes(got3, writeResp(bs.key, recent), 'write, then a refused erase');
    assert.deepEqual(await client.fetch({ ip: '127.0.0.1', port: bs.port }, recent), recentData);
  });

  test('rounds of pipelined writes on one connection, each round waiting for its responses', async () => {
    // Between rounds every request is answered and the service waits for more bytes: the
    // connection stays usable for the next round.
    const s = net.connect(bs.port, '127.0.0.1');
    await new Promise<void>((r) => s.once('connect', () => r()));
    const received: Buffer[] = [];
    let receivedBytes = 0;
    let wake: (() => void) | null = null;
    s.on('data', (d: Buffer) => {
      received.push(d);
      receivedBytes += d.length;
      wake?.();
    });
    const until = async (n: number) => {
      while (receivedBytes < n) await new Promise<void>((r) => (wake = r));
    };
    const want: Buffer[] = [];
    for (let round = 0; round < 3; round++) {
      const bs3 = [0, 1, 2].map((i) => ({ id: freshId(), data: payload(MiB + round * 10 + i, 110 + i) }));
      for (const b of bs3) s.write(writeReq(bs.key, b.id, b.data));
      want.push(...bs3.map((b) => writeResp(bs.key, b.id)));
      await until(want.reduce((a, b) => a + b.length, 0));
    }
    s.end();
    await new Promise<void>((r) => s.once('close', () => r()));
    assertBytes(Buffer.concat(received), Buffer.concat(want), 'three rounds of three pipelined writes');
  });
});

describe('block service: pipelined writes and kill -9', () => {
  test('every block whose proof arrived before kill -9 is served byte-exact after restart', async () => {
    const tmp = tempDir('blocks-pipeline-kill');
    const dir = path.join(tmp.path, 'store');
    let bs = await startBlocks(dir);
    try {
      const COUNT = 24;
      const KILL_AFTER_PROOFS = 12;
      const blocks = Array.from({ length: COUNT }, (_, i) => ({ id: freshId(), data: payload(i % 3 === 0 ? 2 * MiB + i : 300_000 + i, 120 + i) }));
      const proofs = Buffer.concat(blocks.map((b) => writeResp(bs.key, b.id)));
      let proven = 0;
      let killed: Promise<number | string> | null = null;
      const got = await burst(
        bs.port,
        blocks.map((b) => ({ bytes: writeReq(bs.key, b.id, b.data) })),
        (received) => {
          // Whole proofs received so far, each the expected one in order.
          const whole = Math.floor(received.length / 17);
          assertBytes(received.subarray(0, whole * 17), proofs.subarray(0, whole * 17), 'proofs before the kill');
          proven = whole;
          if (!killed && whole >= KILL_AFTER_PROOFS) killed = bs.svc.kill('SIGKILL');
        },
      );
      assert.ok(killed, `only ${got.length} response bytes arrived before the server closed`);
      await killed;
      assert.ok(proven >= KILL_AFTER_PROOFS);
      bs = await startBlocks(dir, bs.port);
      const client = new BlockClient();
      try {
        for (const b of blocks.slice(0, proven)) assert.deepEqual(await client.fetch({ ip: '127.0.0.1', port: bs.port }, b.id), b.data);
      } finally {
        client.close();
      }
    } finally {
      await bs.svc.kill();
      tmp.remove();
    }
  });
});
