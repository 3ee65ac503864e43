// Block fetch as streamed by the service (read, CRC and send in chunks, read buffers reused): a
// corrupted block never reaches a client whole, at any size and wherever the damage lies, and
// reused buffers never leak one block's bytes into another's reply.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BlockClient, BlockServiceError } from '../src/client/blocks.js';
import { blockRelativePath } from '../src/proto/blockwire.js';
import { blockWriteCertificate } from '../src/proto/crypto.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';
import { eggsNow } from '../src/proto/time.js';
import { freeTcpPort } from './helpers/ports.js';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';

const MiB = 1 << 20;
/** Sizes around the service's 1 MiB read chunk: below, at, just above, several chunks and a tail. */
const SIZES = [1, 1000, MiB - 1, MiB, MiB + 1, 5 * MiB + 123];

let idCounter = 0n;
function freshId(): bigint {
  idCounter += 0x1000n;
  return ((eggsNow() + idCounter) & ~0xffn) | 0x2an;
}

function payload(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 131 + seed * 7 + (i >> 12)) & 0xff;
  return b;
}

/** Sends a fetch request on a fresh connection and collects everything until the service closes or goes quiet. */
function rawFetch(port: number, blockId: bigint, quietMs = 2_000): Promise<{ data: Buffer; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let timer = setTimeout(done, quietMs, false);
    function done(closedByServer: boolean): void {
      clearTimeout(timer);
      s.destroy();
      resolve({ data: Buffer.concat(chunks), closedByServer });
    }
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      clearTimeout(timer);
      timer = setTimeout(done, quietMs, false);
    });
    s.on('error', () => {});
    s.on('close', () => done(true));
    s.on('connect', () => {
      const req = Buffer.alloc(9);
      req[0] = 0x66; // 'f'
      req.writeBigUInt64LE(blockId, 1);
      s.write(req);
    });
  });
}

describe('block fetch streaming', () => {
  const tmp = tempDir('block-fetch');
  let svc: Service;
  let dir: string;
  let key: Buffer;
  let addr: { ip: string; port: number };
  const client = new BlockClient({ ioTimeoutMs: 10_000 });

  before(async () => {
    dir = path.join(tmp.path, 'store');
    const port = await freeTcpPort();
    svc = startEggsfs(['blocks', '--dir', dir, '--port', String(port), '--shuckle-udp', 'none']);
    await svc.waitFor(/^ready blocks /);
    key = fs.readFileSync(path.join(dir, 'secret.key'));
    addr = { ip: '127.0.0.1', port };
  });
  after(async () => {
    client.close();
    await svc.kill();
    tmp.remove();
  });

  async function store(data: Buffer): Promise<bigint> {
    const id = freshId();
    const crc = crc32c(data);
    await client.write(addr, id, crc, data, blockWriteCertificate(key, id, crcToBytes(crc), data.length));
    return id;
  }

  test('a block damaged at its first, middle or last byte is never sent whole, at any size', async () => {
    for (const size of SIZES) {
      for (const where of [0, size >> 1, size - 1]) {
        const data = payload(size, size + where);
        const id = await store(data);
        const bad = Buffer.from(data);
        bad[where] ^= 0x01;
        fs.writeFileSync(path.join(dir, blockRelativePath(id)), bad);
        const r = await rawFetch(addr.port, id);
        assert.ok(r.closedByServer, `size ${size}, damage at ${where}: the service kept the connection open`);
        assert.ok(r.data.length < 5 + size, `size ${size}, damage at ${where}: ${r.data.length} bytes sent, the whole reply`);
        // Whatever was sent before the close is the header and a prefix of the stored bytes.
        if (r.data.length > 0) {
          assert.equal(r.data[0], 0x46); // 'F'
          if (r.data.length >= 5) assert.equal(r.data.readUInt32LE(1), size);
          if (r.data.length > 5) assert.deepEqual(r.data.subarray(5), bad.subarray(0, r.data.length - 5));
        }
        await assert.rejects(client.fetch(addr, id), BlockServiceError);
        // Repaired (the intact bytes put back), it is served again.
        fs.writeFileSync(path.join(dir, blockRelativePath(id)), data);
        assert.deepEqual(await client.fetch(addr, id), data);
      }
    }
  });

  test('concurrent fetches of blocks of every size, with refusals between them, each get their own bytes', async () => {
    const blocks: { id: bigint; data: Buffer; damaged: boolean }[] = [];
    for (let i = 0; i < 24; i++) {
      const data = payload(SIZES[i % SIZES.length]!, 100 + i);
      const id = await store(data);
      const damaged = i % 5 === 3;
      if (damaged) {
        const bad = Buffer.from(data);
        bad[bad.length - 1] ^= 0x80;
        fs.writeFileSync(path.join(dir, blockRelativePath(id)), bad);
      }
      blocks.push({ id, data, damaged });
    }
    for (let round = 0; round < 3; round++) {
      await Promise.all(
        blocks.map(async (b) => {
          if (b.damaged) await assert.rejects(client.fetch(addr, b.id), BlockServiceError);
          else assert.ok((await client.fetch(addr, b.id)).equals(b.data), `block of ${b.data.length} bytes differs`);
        }),
      );
    }
  });

  test('fetchInto reads blocks into one reused buffer; refusals and a too-small buffer are errors', async () => {
    const blocks = await Promise.all(SIZES.map(async (size, i) => ({ data: payload(size, 200 + i), id: await store(payload(size, 200 + i)) })));
    const dest = Buffer.alloc(6 * MiB, 0xee);
    // Twice over, on pooled connections: each reply lands at the start of `dest`, whole.
    for (let round = 0; round < 2; round++) {
      for (const b of blocks) {
        assert.equal(await client.fetchInto(addr, b.id, dest), b.data.length);
        assert.ok(dest.subarray(0, b.data.length).equals(b.data), `block of ${b.data.length} bytes differs`);
        // The connection is still in step: a small request on it gets its own reply.
        assert.equal((await client.crc(addr, b.id)).sizeBytes, b.data.length);
      }
    }
    const big = blocks[blocks.length - 1]!;
    await assert.rejects(client.fetchInto(addr, big.id, Buffer.alloc(MiB)), /more than the 1048576 bytes given/);
    const bad = Buffer.from(big.data);
    bad[bad.length - 1] ^= 0x02;
    fs.writeFileSync(path.join(dir, blockRelativePath(big.id)), bad);
    await assert.rejects(client.fetchInto(addr, big.id, dest), (err: unknown) => err instanceof BlockServiceError && /closed the connection/.test(err.message));
    // Concurrent fetches into their own buffers.
    const dests = blocks.map(() => Buffer.alloc(6 * MiB));
    const sizes = await Promise.all(blocks.slice(0, -1).map((b, i) => client.fetchInto(addr, b.id, dests[i]!)));
    blocks.slice(0, -1).forEach((b, i) => assert.ok(dests[i]!.subarray(0, sizes[i]).equals(b.data)));
  });

  test('a truncated or lengthened block file is refused; the service stays up', async () => {
    for (const size of [1000, MiB + 1, 3 * MiB]) {
      const data = payload(size, 9);
      const id = await store(data);
      const file = path.join(dir, blockRelativePath(id));
      fs.writeFileSync(file, data.subarray(0, size - 1));
      const r = await rawFetch(addr.port, id);
      assert.ok(r.closedByServer && r.data.length < 5 + size);
      // Longer than written: the record's size is served, and only if its CRC holds.
      fs.writeFileSync(file, Buffer.concat([data, Buffer.from('tail')]));
      assert.deepEqual(await client.fetch(addr, id), data);
    }
    assert.equal((await client.fetch(addr, await store(payload(10, 1)))).length, 10);
  });
});
