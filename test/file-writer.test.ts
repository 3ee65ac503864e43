// The file writer's span sizes against a real cluster: a file that keeps growing gets spans
// doubling from spanBytes to maxSpanBytes, an explicit spanBytes alone keeps spans fixed, and the
// growth of all of a client's writers together stays within SPAN_GROWTH_BUDGET_BYTES (given back
// at close). Every file is read back whole.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EggsClient, type FileWriter } from '../src/client/index.js';
import { SPAN_GROWTH_BUDGET_BYTES, WRITE_QUEUE_SPANS } from '../src/client/file-writer.js';
import { UdpTransport } from '../src/client/transport.js';
import { ROOT_DIR_INODE_ID, shardOf } from '../src/proto/ids.js';
import { startCluster } from './helpers/cluster.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** Writes of an odd size, as a producer (the kernel, a pipe) makes them. */
const WRITE_BYTES = 100_000;

async function writeSome(w: FileWriter, data: Buffer): Promise<void> {
  for (let off = 0; off < data.length; off += WRITE_BYTES) await w.write(data.subarray(off, off + WRITE_BYTES));
}

/** Sizes of the spans `data.length` bytes make when they grow from `first` (doubling) to `max`. */
function grownSizes(total: number, first: number, max: number): number[] {
  const out: number[] = [];
  let size = first;
  for (let off = 0; off < total; off += size, size = Math.min(max, size * 2)) out.push(Math.min(size, total - off));
  return out;
}

test('file writer span sizes', { timeout: 240_000 }, async (t) => {
  const cluster = await startCluster({ blockServices: 3 });
  const transport = new UdpTransport({ defaultTimeoutMs: 2_000, defaultAttempts: 3 });
  const clients: EggsClient[] = [];
  t.after(async () => {
    for (const c of clients) await c.close();
    transport.close();
    await cluster.destroy();
  });
  const connect = async (opts: { spanBytes?: number; maxSpanBytes?: number }) => {
    const c = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl, parity: 0x01, ...opts });
    clients.push(c);
    return c;
  };
  const spanSizes = async (id: bigint): Promise<number[]> => {
    const sizes: number[] = [];
    let off = 0n;
    for (;;) {
      const r = await transport.shardRequest({ host: '127.0.0.1', port: cluster.ports.shardBasePort + shardOf(id) }, 'FILE_SPANS', { fileId: id, byteOffset: off });
      for (const s of r.spans) sizes.push(Number(s.size));
      if (r.nextOffset === 0n) return sizes;
      off = r.nextOffset;
    }
  };
  const readBack = async (c: EggsClient, id: bigint, data: Buffer) => {
    const parts: Buffer[] = [];
    for await (const b of c.readChunks(id, 0, data.length)) parts.push(b);
    assert.ok(Buffer.concat(parts).equals(data), 'the file reads back whole');
  };

  await t.test('spans double from spanBytes up to maxSpanBytes', async () => {
    const c = await connect({ spanBytes: 256 * KiB, maxSpanBytes: MiB });
    const data = randomBytes(4 * MiB + 123);
    const w = c.createFile(ROOT_DIR_INODE_ID, 'grown');
    await writeSome(w, data);
    const id = await w.close();
    assert.deepEqual(await spanSizes(id), [256 * KiB, 512 * KiB, MiB, MiB, MiB, 4 * MiB + 123 - 256 * KiB - 512 * KiB - 3 * MiB]);
    await readBack(c, id, data);
  });

  await t.test('an explicit spanBytes alone keeps spans fixed', async () => {
    const c = await connect({ spanBytes: 256 * KiB });
    const data = randomBytes(MiB + 5);
    const w = c.createFile(ROOT_DIR_INODE_ID, 'fixed');
    await writeSome(w, data);
    const id = await w.close();
    assert.deepEqual(await spanSizes(id), [256 * KiB, 256 * KiB, 256 * KiB, 256 * KiB, 5]);
    await readBack(c, id, data);
  });

  await t.test("writers share the client's growth budget and give it back at close", async () => {
    const first = MiB;
    const max = 64 * MiB;
    const c = await connect({ spanBytes: first, maxSpanBytes: max });
    // A grows to max: it holds (queue + 1) × (max − first) of the budget while open.
    const heldByA = (WRITE_QUEUE_SPANS + 1) * (max - first);
    assert.ok(heldByA < SPAN_GROWTH_BUDGET_BYTES && 2 * heldByA > SPAN_GROWTH_BUDGET_BYTES, 'the test assumes A alone fits the budget and two such writers do not');
    const aData = randomBytes(127 * MiB + 1); // spans of 1, 2, 4, ..., 64 MiB, then one byte
    const a = c.createFile(ROOT_DIR_INODE_ID, 'budget-a');
    await writeSome(a, aData);
    // B, while A is open, grows only while A's share and its own fit the budget.
    let bMax = first;
    while (bMax * 2 <= max && heldByA + (WRITE_QUEUE_SPANS + 1) * (bMax * 2 - first) <= SPAN_GROWTH_BUDGET_BYTES) bMax *= 2;
    assert.ok(bMax < max, 'B cannot grow as far as A');
    const bData = randomBytes(40 * MiB);
    const b = c.createFile(ROOT_DIR_INODE_ID, 'budget-b');
    await writeSome(b, bData);
    const bId = await b.close();
    const aId = await a.close();
    assert.deepEqual(await spanSizes(aId), grownSizes(aData.length, first, max));
    assert.deepEqual(await spanSizes(bId), grownSizes(bData.length, first, bMax));
    // Both closed: a new writer grows as far as A did.
    const dData = randomBytes(127 * MiB + 1);
    const d = c.createFile(ROOT_DIR_INODE_ID, 'budget-d');
    await writeSome(d, dData);
    const dId = await d.close();
    assert.deepEqual(await spanSizes(dId), grownSizes(dData.length, first, max));
    await readBack(c, aId, aData);
    await readBack(c, bId, bData);
    await readBack(c, dId, dData);
  });
});
