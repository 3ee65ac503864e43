// Block service over real TCP: every operation, every refusal, durability across kill -9.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BlockClient, BlockServiceError, statsMacValid } from '../src/client/blocks.js';
import { blockRelativePath } from '../src/proto/blockwire.js';
import { blockEraseCertificate, blockEraseProof, blockWriteCertificate, blockWriteProof } from '../src/proto/crypto.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';
import { eggsNow, ONE_HOUR_NS } from '../src/proto/time.js';
import { freeTcpPort, freeTcpRange } from './helpers/ports.js';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';

const IDLE_TIMEOUT_MS = 1_500;

interface Running {
  svc: Service;
  dir: string;
  port: number;
  key: Buffer;
  addr: { ip: string; port: number };
}

async function startBlocks(dir: string, port?: number, extra: string[] = []): Promise<Running> {
  port ??= await freeTcpPort();
  const svc = startEggsfs(['blocks', '--dir', dir, '--port', String(port), '--shuckle-udp', 'none', '--idle-timeout-ms', String(IDLE_TIMEOUT_MS), ...extra]);
  const line = await svc.waitFor(/^ready blocks /);
  const ready = JSON.parse(line.slice('ready blocks '.length));
  assert.equal(ready.services[0].port, port);
  return { svc, dir, port, key: fs.readFileSync(path.join(dir, 'secret.key')), addr: { ip: '127.0.0.1', port } };
}

let idCounter = 0n;
/** A fresh block id "now" (ids are eggs-time stamps, low byte is the shard). */
function freshId(): bigint {
  idCounter += 0x1000n;
  return ((eggsNow() + idCounter) & ~0xffn) | 0x07n;
}

function payload(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function writeHeader(key: Buffer, id: bigint, data: Buffer, opts: { crc?: number; size?: number; cert?: Buffer } = {}): Buffer {
  const crc = crcToBytes(opts.crc ?? crc32c(data));
  const size = opts.size ?? data.length;
  const h = Buffer.alloc(25);
  h[0] = 0x77;
  h.writeBigUInt64LE(id, 1);
  crc.copy(h, 9);
  h.writeUInt32LE(size, 13);
  (opts.cert ?? blockWriteCertificate(key, id, crc, size)).copy(h, 17);
  return h;
}

/** Sends `bytes` (optionally half-closing), collects everything until the server closes. */
function raw(port: number, bytes: Buffer, opts: { end?: boolean; timeoutMs?: number } = {}): Promise<{ data: Buffer; closedByServer: boolean; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ data: Buffer.concat(chunks), closedByServer: false, ms: Date.now() - t0 });
    }, opts.timeoutMs ?? 5_000);
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks), closedByServer: true, ms: Date.now() - t0 });
    });
    s.on('connect', () => {
      if (bytes.length) s.write(bytes);
      if (opts.end) s.end();
    });
    s.on('timeout', () => reject(new Error('unexpected')));
  });
}

/** Files in the block sub-directories, and spares holding bytes (empty spares come and go). */
function storedFiles(dir: string): string[] {
  const out: string[] = [];
  for (const sub of fs.readdirSync(dir)) {
    const p = path.join(dir, sub);
    if (!fs.statSync(p).isDirectory()) continue;
    for (const f of fs.readdirSync(p)) {
      if (sub === '.spares' && !fs.statSync(path.join(p, f), { throwIfNoEntry: false })?.size) continue;
      out.push(`${sub}/${f}`);
    }
  }
  return out.sort();
}

describe('block service', () => {
  const tmp = tempDir('blocks');
  let bs: Running;
  const client = new BlockClient({ ioTimeoutMs: 10_000 });

  before(async () => {
    bs = await startBlocks(path.join(tmp.path, 'a'));
  });
  after(async () => {
    client.close();
    await bs?.svc.kill();
    tmp.remove();
  });

  test('write, fetch, crc and stats on one connection; layout and proof as the original', async () => {
    const id = freshId();
    const data = payload(300_000, 1);
    const crc = crc32c(data);
    const proof = await client.write(bs.addr, id, crc, data, blockWriteCertificate(bs.key, id, crcToBytes(crc), data.length));
    assert.deepEqual(proof, blockWriteProof(bs.key, id));
    const file = path.join(bs.dir, blockRelativePath(id));
    assert.deepEqual(fs.readFileSync(file), data);
    // Sub-directory is the low byte (the shard), name the LE hex.
    assert.equal(path.basename(path.dirname(file)), '07');
    assert.deepEqual(await client.fetch(bs.addr, id), data);
    assert.deepEqual(await client.crc(bs.addr, id), { sizeBytes: data.length, crc });
    const s = await client.stats(bs.addr, { key: bs.key });
    assert.ok(statsMacValid(bs.key, s));
    assert.ok(s.usedN >= 1n && s.usedBytes >= BigInt(data.length));
    assert.ok(s.freeBytes > 0n);
    // Empty block.
    const id0 = freshId();
    await client.write(bs.addr, id0, 0, Buffer.alloc(0), blockWriteCertificate(bs.key, id0, crcToBytes(0), 0));
    assert.equal((await client.fetch(bs.addr, id0)).length, 0);
  });

  test('the layout example of the spec', () => {
    assert.equal(blockRelativePath(0x03059faf93bfb907n), '07/07b9bf93af9f0503');
  });

  test('several requests pipelined on one raw connection get their replies in order', async () => {
    const id = freshId();
    const data = payload(1000, 2);
    const req = Buffer.concat([writeHeader(bs.key, id, data), data, Buffer.from([0x63]), Buffer.alloc(8), Buffer.from([0x66]), Buffer.alloc(8)]);
    req.writeBigUInt64LE(id, 25 + 1000 + 1);
    req.writeBigUInt64LE(id, 25 + 1000 + 10);
    const r = await raw(bs.port, req, { end: true });
    assert.equal(r.data.length, 17 + 9 + 5 + 1000);
    assert.equal(r.data[0], 0x57);
    assert.equal(r.data[17], 0x43);
    assert.equal(r.data[26], 0x46);
    assert.deepEqual(r.data.subarray(31), data);
  });

  test('a retried write of the same block succeeds with the same proof; a different block under the id is refused', async () => {
    const id = freshId();
    const data = payload(5000, 3);
    const cert = blockWriteCertificate(bs.key, id, crcToBytes(crc32c(data)), data.length);
    const p1 = await client.write(bs.addr, id, crc32c(data), data, cert);
    const p2 = await client.write(bs.addr, id, crc32c(data), data, cert);
    assert.deepEqual(p1, p2);
    const other = payload(5000, 4);
    const cert2 = blockWriteCertificate(bs.key, id, crcToBytes(crc32c(other)), other.length);
    await assert.rejects(client.write(bs.addr, id, crc32c(other), other, cert2), BlockServiceError);
    assert.deepEqual(await client.fetch(bs.addr, id), data);
  });

  test('a retried write of a block whose stored copy is damaged stores it again; the damaged copy is never served', async () => {
    // Damage after the acknowledgement (bad sectors, a half-lost write-back): the retry must not
    // be acknowledged on the strength of the CRC record alone.
    for (const size of [5000, 3 << 20]) {
      const id = freshId();
      const data = payload(size, 9);
      const cert = blockWriteCertificate(bs.key, id, crcToBytes(crc32c(data)), data.length);
      await client.write(bs.addr, id, crc32c(data), data, cert);
      const file = path.join(bs.dir, blockRelativePath(id));
      const torn = Buffer.from(data);
      torn.fill(0, size >> 1); // the second half lost
      fs.writeFileSync(file, torn);
      await assert.rejects(client.fetch(bs.addr, id), BlockServiceError);
      await client.write(bs.addr, id, crc32c(data), data, cert);
      assert.deepEqual(fs.readFileSync(file), data);
      assert.deepEqual(await client.fetch(bs.addr, id), data);
    }
  });

  test('bad certificate, CRC mismatch, wrong size, out-of-window id: refused, nothing stored', async () => {
    const before = storedFiles(bs.dir);
    const data = payload(4096, 5);
    // Bad certificate.
    let id = freshId();
    let r = await raw(bs.port, Buffer.concat([writeHeader(bs.key, id, data, { cert: Buffer.alloc(8, 1) }), data]));
    assert.ok(r.closedByServer);
    assert.equal(r.data.length, 0);
    // Certificate made with another key.
    r = await raw(bs.port, Buffer.concat([writeHeader(Buffer.alloc(16, 9), id, data), data]));
    assert.ok(r.closedByServer && r.data.length === 0);
    // CRC mismatch: header (and certificate) for other bytes.
    id = freshId();
    r = await raw(bs.port, Buffer.concat([writeHeader(bs.key, id, data, { crc: crc32c(data) ^ 1 }), data]));
    assert.ok(r.closedByServer && r.data.length === 0);
    // Declares more bytes than it sends, then closes.
    id = freshId();
    r = await raw(bs.port, Buffer.concat([writeHeader(bs.key, id, data, { size: 8192 }), data]), { end: true });
    assert.ok(r.closedByServer && r.data.length === 0);
    // Block id 23 h in the past (outside the 22 h window) and 3 h in the future.
    for (const off of [-23n * ONE_HOUR_NS, 3n * ONE_HOUR_NS]) {
      id = eggsNow() + off;
      r = await raw(bs.port, Buffer.concat([writeHeader(bs.key, id, data), data]));
      assert.ok(r.closedByServer && r.data.length === 0);
    }
    assert.deepEqual(storedFiles(bs.dir), before);
    // Still serving.
    const ok = freshId();
    await client.write(bs.addr, ok, crc32c(data), data, blockWriteCertificate(bs.key, ok, crcToBytes(crc32c(data)), data.length));
  });

  test('clients vanishing mid-write and mid-fetch of large blocks leave nothing behind and the service up', async () => {
    const before = storedFiles(bs.dir);
    const id = freshId();
    const data = payload(6 << 20, 8);
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect(bs.port, '127.0.0.1', () => {
          s.write(writeHeader(bs.key, id, data));
          s.write(data.subarray(0, (3 << 20) + i * 100_000), () => setTimeout(() => (s.destroy(), resolve()), 50));
        });
        s.on('error', () => {});
      });
    }
    // The unfinished temp files are removed, nothing is published.
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(storedFiles(bs.dir), before);
    // Mid-fetch: store a large block, then read a little of it and hang up.
    await client.write(bs.addr, id, crc32c(data), data, blockWriteCertificate(bs.key, id, crcToBytes(crc32c(data)), data.length));
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect(bs.port, '127.0.0.1', () => {
          const req = Buffer.alloc(9);
          req[0] = 0x66;
          req.writeBigUInt64LE(id, 1);
          s.write(req);
        });
        let got = 0;
        s.on('data', (d) => {
          got += d.length;
          if (got > 100_000) {
            s.destroy();
            resolve();
          }
        });
        s.on('error', () => {});
      });
    }
    assert.equal(bs.svc.proc.exitCode, null, 'service still running');
    assert.deepEqual(await client.fetch(bs.addr, id), data);
  });

  test('huge declared size is refused before any data is read', async () => {
    const id = freshId();
    const h = writeHeader(bs.key, id, Buffer.alloc(0), { size: 0xffffffff, crc: 0 });
    const r = await raw(bs.port, h, { timeoutMs: IDLE_TIMEOUT_MS * 3 });
    assert.ok(r.closedByServer);
    assert.equal(r.data.length, 0);
    // Refused at once, not by the idle timeout.
    assert.ok(r.ms < IDLE_TIMEOUT_MS, `closed after ${r.ms} ms`);
    const h2 = writeHeader(bs.key, id, Buffer.alloc(0), { size: 100_000_001, crc: 0 });
    const r2 = await raw(bs.port, h2, { timeoutMs: IDLE_TIMEOUT_MS * 3 });
    assert.ok(r2.closedByServer && r2.ms < IDLE_TIMEOUT_MS);
  });

  test('short frames and unknown kinds close the connection without a reply', async () => {
    for (const bytes of [Buffer.from('w0123456789'), Buffer.from('f012'), Buffer.from('c0'), Buffer.from('s0123'), Buffer.from('e0123456789')]) {
      const r = await raw(bs.port, bytes, { end: true });
      assert.ok(r.closedByServer, `${bytes}`);
      assert.equal(r.data.length, 0);
    }
    for (const kind of ['x', 'W', 'F', '\0', '\xff']) {
      const r = await raw(bs.port, Buffer.concat([Buffer.from(kind, 'latin1'), Buffer.alloc(40)]));
      assert.ok(r.closedByServer && r.data.length === 0, `kind ${kind.charCodeAt(0)}`);
    }
    // A clean close at a request boundary is fine and answered requests stay answered.
    const r = await raw(bs.port, Buffer.concat([Buffer.from('s'), Buffer.alloc(8, 3), Buffer.from('?')]));
    assert.equal(r.data.length, 49);
  });

  test('a client that connects and says nothing is dropped after the idle timeout', async () => {
    const r = await raw(bs.port, Buffer.alloc(0), { timeoutMs: IDLE_TIMEOUT_MS * 4 });
    assert.ok(r.closedByServer, 'silent connection still open');
    // One that stops mid-frame too.
    const r2 = await raw(bs.port, Buffer.from('f0123'), { timeoutMs: IDLE_TIMEOUT_MS * 4 });
    assert.ok(r2.closedByServer);
  });

  test('fetch of a missing block fails; a corrupted block is never served whole', async () => {
    await assert.rejects(client.fetch(bs.addr, freshId()), /fetch of block .* failed/);
    await assert.rejects(client.crc(bs.addr, freshId()), BlockServiceError);
    for (const size of [1000, 3 << 20]) {
      const id = freshId();
      const data = payload(size, 6);
      await client.write(bs.addr, id, crc32c(data), data, blockWriteCertificate(bs.key, id, crcToBytes(crc32c(data)), data.length));
      const file = path.join(bs.dir, blockRelativePath(id));
      const bad = Buffer.from(data);
      bad[size >> 1] ^= 0x40; // a flipped bit in the middle
      fs.writeFileSync(file, bad);
      await assert.rejects(client.fetch(bs.addr, id), BlockServiceError);
      // `c` reports what is on disk, so a scrubber can see the damage.
      assert.deepEqual(await client.crc(bs.addr, id), { sizeBytes: size, crc: crc32c(bad) });
      // A truncated block too.
      fs.writeFileSync(file, data.subarray(0, size - 1));
      await assert.rejects(client.fetch(bs.addr, id), BlockServiceError);
    }
  });

  test('erase: refused while the write certificate is replayable, allowed after; idempotent; bad certificate refused', async () => {
    const id = freshId();
    const data = payload(100, 7);
    await client.write(bs.addr, id, crc32c(data), data, blockWriteCertificate(bs.key, id, crcToBytes(crc32c(data)), data.length));
    await assert.rejects(client.erase(bs.addr, id, blockEraseCertificate(bs.key, id)), BlockServiceError);
    assert.deepEqual(await client.fetch(bs.addr, id), data);
    // A block written 23 h ago (placed as the original layout would hold it).
    const old = ((eggsNow() - 23n * ONE_HOUR_NS) & ~0xffn) | 0x07n;
    const file = path.join(bs.dir, blockRelativePath(old));
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, data);
    assert.deepEqual(await client.fetch(bs.addr, old), data);
    await assert.rejects(client.erase(bs.addr, old, blockEraseCertificate(Buffer.alloc(16), old)), BlockServiceError);
    assert.ok(fs.existsSync(file));
    const proof = await client.erase(bs.addr, old, blockEraseCertificate(bs.key, old));
    assert.deepEqual(proof, blockEraseProof(bs.key, old));
    assert.ok(!fs.existsSync(file));
    await assert.rejects(client.fetch(bs.addr, old), BlockServiceError);
    assert.deepEqual(await client.erase(bs.addr, old, blockEraseCertificate(bs.key, old)), proof);
  });

  test('an idle pooled connection does not keep a finished client process alive', async () => {
    const { spawn } = await import('node:child_process');
    const { fileURLToPath, pathToFileURL } = await import('node:url');
    const clientModule = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), '../src/client/blocks.js')).href;
    const code = `import { defaultBlockClient } from ${JSON.stringify(clientModule)}; await defaultBlockClient.stats({ ip: '127.0.0.1', port: ${bs.port} }); console.log('ok');`;
    const t0 = Date.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exit = await new Promise<number | null>((r) => child.on('exit', r));
    assert.equal(exit, 0);
    assert.equal(out.trim(), 'ok');
    // The pool keeps idle connections for 5 s; the process must not wait for that.
    assert.ok(Date.now() - t0 < 4_000, `exited after ${Date.now() - t0} ms`);
  });

  test('concurrent clients and many services keep serving while one connection misbehaves', async () => {
    const silent = net.connect(bs.port, '127.0.0.1');
    silent.on('error', () => {});
    try {
      const ids = Array.from({ length: 16 }, () => freshId());
      await Promise.all(
        ids.map((id, i) => {
          const d = payload(20_000 + i, i);
          return client.write(bs.addr, id, crc32c(d), d, blockWriteCertificate(bs.key, id, crcToBytes(crc32c(d)), d.length));
        }),
      );
      const got = await Promise.all(ids.map((id) => client.fetch(bs.addr, id)));
      got.forEach((g, i) => assert.deepEqual(g, payload(20_000 + i, i)));
    } finally {
      silent.destroy();
    }
  });
});

describe('block service durability and process', () => {
  test('kill -9 then restart on the same dir serves every acknowledged block; the directory is locked', async () => {
    const tmp = tempDir('blocks-restart');
    const dir = path.join(tmp.path, 'd');
    const client = new BlockClient();
    let bs = await startBlocks(dir);
    try {
      const blocks = new Map<bigint, Buffer>();
      for (let i = 0; i < 20; i++) {
        const id = freshId();
        const d = payload(1 + i * 7919, i);
        await client.write(bs.addr, id, crc32c(d), d, blockWriteCertificate(bs.key, id, crcToBytes(crc32c(d)), d.length));
        blocks.set(id, d);
      }
      // A second process on the same directory is refused.
      const second = startEggsfs(['blocks', '--dir', dir, '--port', String(await freeTcpPort()), '--shuckle-udp', 'none']);
      assert.equal(await second.exited(), 1);
      assert.match(second.stderr(), /locked by another process/);
      await bs.svc.kill('SIGKILL');
      client.close();
      bs = await startBlocks(dir, bs.port);
      const key2 = fs.readFileSync(path.join(dir, 'secret.key'));
      assert.deepEqual(key2, bs.key);
      const c2 = new BlockClient();
      for (const [id, d] of blocks) assert.deepEqual(await c2.fetch(bs.addr, id), d);
      const s = await c2.stats(bs.addr, { key: bs.key });
      assert.equal(s.usedN, 20n);
      c2.close();
    } finally {
      await bs.svc.kill();
      tmp.remove();
    }
  });

  test('kill -9 in the middle of a write leaves no block and no partial spare; the write then succeeds', async () => {
    const tmp = tempDir('blocks-crash');
    const dir = path.join(tmp.path, 'd');
    let bs = await startBlocks(dir);
    const client = new BlockClient();
    try {
      const id = freshId();
      const data = payload(20 << 20, 3);
      const s = net.connect(bs.port, '127.0.0.1');
      s.on('error', () => {});
      await new Promise<void>((r) => s.once('connect', () => r()));
      s.write(writeHeader(bs.key, id, data));
      await new Promise<void>((r) => s.write(data.subarray(0, 12 << 20), () => r()));
      await new Promise((r) => setTimeout(r, 200));
      // The half-written block is on disk in a spare file now, not under its name.
      const sub = path.dirname(path.join(dir, blockRelativePath(id)));
      const spares = path.join(dir, '.spares');
      const nonEmptySpares = () => fs.readdirSync(spares).filter((n) => fs.statSync(path.join(spares, n)).size > 0);
      assert.equal(nonEmptySpares().length, 1, 'a spare holds the block while it is written');
      assert.deepEqual(fs.readdirSync(sub), []);
      await bs.svc.kill('SIGKILL');
      s.destroy();
      bs = await startBlocks(dir, bs.port);
      assert.deepEqual(nonEmptySpares(), [], 'partial spare removed at start');
      assert.deepEqual(fs.readdirSync(sub), []);
      await assert.rejects(client.fetch(bs.addr, id), BlockServiceError);
      await client.write(bs.addr, id, crc32c(data), data, blockWriteCertificate(bs.key, id, crcToBytes(crc32c(data)), data.length));
      assert.deepEqual(await client.fetch(bs.addr, id), data);
    } finally {
      client.close();
      await bs.svc.kill();
      tmp.remove();
    }
  });

  test('one process serves one service per directory on consecutive ports', async () => {
    const tmp = tempDir('blocks-multi');
    const base = await freeTcpRange(3);
    const dirs = [0, 1, 2].map((i) => path.join(tmp.path, `d${i}`));
    const svc = startEggsfs(['blocks', ...dirs.flatMap((d) => ['--dir', d]), '--base-port', String(base), '--shuckle-udp', 'none']);
    const client = new BlockClient();
    try {
      const ready = JSON.parse((await svc.waitFor(/^ready blocks /)).slice('ready blocks '.length));
      assert.deepEqual(ready.ports, [base, base + 1, base + 2]);
      const keys = dirs.map((d) => fs.readFileSync(path.join(d, 'secret.key')));
      assert.equal(new Set(keys.map((k) => k.toString('hex'))).size, 3);
      for (let i = 0; i < 3; i++) {
        const s = await client.stats({ ip: '127.0.0.1', port: base + i }, { key: keys[i]! });
        assert.equal(s.usedN, 0n);
      }
      // A certificate for one service is refused by another.
      const id = freshId();
      const d = payload(10, 1);
      await assert.rejects(client.write({ ip: '127.0.0.1', port: base + 1 }, id, crc32c(d), d, blockWriteCertificate(keys[0]!, id, crcToBytes(crc32c(d)), 10)));
      // SIGTERM is a clean exit.
      assert.equal(await svc.kill('SIGTERM'), 0);
    } finally {
      client.close();
      await svc.kill();
      tmp.remove();
    }
  });

  test('a tiny process-wide buffer budget slows concurrent writers but never stalls them', async () => {
    const tmp = tempDir('blocks-budget');
    const bs = await startBlocks(path.join(tmp.path, 'd'), undefined, ['--max-buffer-bytes', '65536']);
    const client = new BlockClient();
    try {
      const blocks = Array.from({ length: 8 }, (_, i) => ({ id: freshId(), data: payload((3 << 20) + i, i) }));
      // A connection that stops mid-block holds what it sent; the others must still get through.
      const stalled = net.connect(bs.port, '127.0.0.1');
      stalled.on('error', () => {});
      const sid = freshId();
      const sdata = payload(1 << 20, 99);
      stalled.write(Buffer.concat([writeHeader(bs.key, sid, sdata), sdata.subarray(0, 300_000)]));
      await Promise.all(blocks.map((b) => client.write(bs.addr, b.id, crc32c(b.data), b.data, blockWriteCertificate(bs.key, b.id, crcToBytes(crc32c(b.data)), b.data.length))));
      for (const b of blocks) assert.deepEqual(await client.fetch(bs.addr, b.id), b.data);
      stalled.destroy();
      await assert.rejects(client.fetch(bs.addr, sid), BlockServiceError);
    } finally {
      client.close();
      await bs.svc.kill();
      tmp.remove();
    }
  });

  test('bad options are usage errors', async () => {
    const svc = startEggsfs(['blocks', '--storage-class', '1', '--dir', '/nonexistent-x']);
    assert.equal(await svc.exited(), 2);
    assert.match(svc.stderr(), /storage-class/);
  });
});

describe('block client errors', () => {
  test('a silent service times out and a closed port is refused, each error naming the service and the cause', async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as net.AddressInfo).port;
    const client = new BlockClient({ ioTimeoutMs: 300, connectTimeoutMs: 1_000 });
    try {
      const err = await client.fetch({ ip: '127.0.0.1', port }, 0x1234n).catch((e: unknown) => e);
      assert.ok(err instanceof BlockServiceError);
      assert.equal(err.address, `127.0.0.1:${port}`);
      assert.equal(err.op, 'fetch');
      assert.match(err.message, new RegExp(`block service 127\\.0\\.0\\.1:${port}: fetch of block 0x0000000000001234 failed: timed out`));
      const closedPort = await freeTcpPort();
      const err2 = await client.stats({ ip: '127.0.0.1', port: closedPort }).catch((e: unknown) => e);
      assert.ok(err2 instanceof BlockServiceError);
      assert.match(err2.message, /could not connect \(ECONNREFUSED\)/);
    } finally {
      client.close();
      silent.close();
    }
  });
});
