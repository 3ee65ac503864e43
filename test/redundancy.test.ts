// Redundancy end to end on a real cluster whose 8 block services are separate processes: for each
// mode (0x01, mirroring 1+1 and 1+2, Reed-Solomon 2+1 and 4+2), files of many sizes written, then up
// to P block services killed with SIGKILL or up to P blocks corrupted on disk, and everything read
// back byte-exact; one loss more than P gives an error naming the file and its bytes; writes go on
// while a block service is down; the CLI's --parity and the cluster default.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { openSync, readSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { EggsClient } from '../src/client/index.js';
import { UdpTransport } from '../src/client/transport.js';
import { blockRelativePath } from '../src/proto/blockwire.js';
import { ROOT_DIR_INODE_ID, shardOf } from '../src/proto/ids.js';
import type { FetchedSpanT } from '../src/proto/messages.js';
import { formatParity, parseParity } from '../src/client/span-layout.js';
import { runEggsfs, tempDir } from './helpers/proc.js';
import { startSplitCluster, type SplitCluster } from './helpers/split-cluster.js';

const BLOCK_SERVICES = 8;
/** Small spans so that "many spans" costs little. */
const SPAN_BYTES = 256 * 1024;
const MODES = [0x01, 0x11, 0x21, 0x12, 0x24];
const SIZES = [0, 1, 255, 256, 5_000, SPAN_BYTES, 3 * SPAN_BYTES + 12_345, 1_000_003];

let cluster: SplitCluster;
let client: EggsClient;
let transport: UdpTransport;
const files = new Map<string, { id: bigint; data: Buffer; parity: number }>();

function pattern(size: number, seed: number): Buffer {
  // Random bytes, but no all-zero spans (those are stored as zero-fill, without blocks).
  const b = randomBytes(size);
  if (size > 0) b[0] = seed | 1;
  return b;
}

async function write(name: string, data: Buffer, parity: number): Promise<bigint> {
  const w = client.createFile(ROOT_DIR_INODE_ID, name, { parity });
  for (let off = 0; off < data.length; off += 100_000) await w.write(data.subarray(off, off + 100_000));
  return w.close();
}

async function spansOf(id: bigint): Promise<FetchedSpanT[]> {
  const out: FetchedSpanT[] = [];
  let off = 0n;
  for (;;) {
    const r = await transport.shardRequest({ host: '127.0.0.1', port: cluster.ports.shardBasePort + shardOf(id) }, 'FILE_SPANS', { fileId: id, byteOffset: off });
    out.push(...r.spans);
    if (r.nextOffset === 0n) return out;
    off = r.nextOffset;
  }
}

function serviceOf(port: number): number {
  const i = port - cluster.ports.blockBasePort;
  assert.ok(i >= 0 && i < BLOCK_SERVICES, `block on unexpected port ${port}`);
  return i;
}

/** Kill the given block services (SIGKILL), run `fn`, start them again. */
async function withDown(services: number[], fn: () => Promise<void>): Promise<void> {
  for (const i of services) await cluster.killBlocks(i);
  try {
    await fn();
  } finally {
    for (const i of services) await cluster.startBlocks(i);
    await cluster.waitLive([...Array(BLOCK_SERVICES).keys()]);
    await cluster.settle();
  }
}

before(async () => {
  cluster = await startSplitCluster({ blockServices: BLOCK_SERVICES });
  client = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl, clusterSecret: cluster.secret, spanBytes: SPAN_BYTES, blockTimeoutMs: 5_000 });
  transport = new UdpTransport({ defaultTimeoutMs: 2_000, defaultAttempts: 3 });
});

after(async () => {
  transport?.close();
  await client?.close();
  await cluster?.stop();
});

test('every mode stores the spans the shard expects: D+P blocks on distinct services', async () => {
  for (const parity of MODES) {
    for (const size of SIZES) {
      const name = `f-${formatParity(parity)}-${size}`;
      const data = pattern(size, size);
      files.set(name, { id: await write(name, data, parity), data, parity });
    }
  }
  for (const { id, data, parity } of files.values()) {
    const spans = await spansOf(id);
    assert.equal(spans.reduce((n, s) => n + Number(s.size), 0), data.length);
    const { dataBlocks: D, parityBlocks: P } = parseParity(parity);
    for (const s of spans) {
      if (s.storageClass < 2) continue; // inline
      const want = Number(s.size) < 8192 && D > 1 ? (parity & 0xf0) | 1 : parity; // small RS spans are mirrored
      assert.equal(s.parity, want, `span at ${s.byteOffset} of a ${formatParity(parity)} file`);
      const total = (want & 0x0f) + (want >>> 4);
      assert.equal(s.bodyBlocks.length, total);
      assert.equal(new Set(s.bodyBlocks.map((b) => b.port)).size, total, 'blocks of one span on distinct services');
      void P;
    }
    assert.deepEqual(await client.readRange(id, 0, data.length + 10), data);
  }
});

test('killing up to P block services (kill -9) loses no file', async () => {
  for (const parity of MODES) {
    const { dataBlocks: D, parityBlocks: P } = parseParity(parity);
    if (P === 0) continue;
    const mine = [...files.values()].filter((f) => f.parity === parity);
    // Kill the services holding the first P blocks (data first) of the largest file's first span,
    // so that span must be rebuilt from mirrors or parity.
    const big = mine.reduce((a, b) => (a.data.length >= b.data.length ? a : b));
    const span = (await spansOf(big.id)).find((s) => s.storageClass >= 2 && (s.parity & 0x0f) === D)!;
    const victims = span.bodyBlocks.slice(0, P).map((b) => serviceOf(b.port));
    await withDown(victims, async () => {
      for (const f of mine) assert.deepEqual(await client.readRange(f.id, 0, f.data.length), f.data, `${formatParity(parity)} ${f.data.length} bytes with services ${victims} down`);
      // A read from the middle of a rebuilt span.
      const mid = Math.floor(big.data.length / 3);
      assert.deepEqual(await client.readRange(big.id, mid, 1000), big.data.subarray(mid, mid + 1000));
    });
  }
});

test('one service lost beyond P gives an error naming the file and its bytes', async () => {
  for (const parity of [0x01, 0x21, 0x12]) {
    const { dataBlocks: D, parityBlocks: P } = parseParity(parity);
    const f = files.get(`f-${formatParity(parity)}-${3 * SPAN_BYTES + 12_345}`)!;
    const span = (await spansOf(f.id)).find((s) => s.storageClass >= 2 && (s.parity & 0x0f) === D)!;
    const victims = span.bodyBlocks.slice(0, P + 1).map((b) => serviceOf(b.port));
    await withDown(victims, async () => {
      const hex = f.id.toString(16).padStart(16, '0');
      const end = Number(span.byteOffset) + Number(span.size);
      await assert.rejects(client.readRange(f.id, 0, f.data.length), (e: Error) => {
        assert.match(e.message, new RegExp(`file 0x${hex} bytes ${span.byteOffset}\\.\\.${end} \\(parity ${D}\\+${P}\\): only ${D - 1} of ${D + P} blocks readable, ${D} needed`));
        return true;
      });
      if (parity === 0x21) {
        // What a person sees: the CLI names the path, the span's offset, the file and the cause.
        const cat = await runEggsfs(['cat', `/f-${formatParity(parity)}-${3 * SPAN_BYTES + 12_345}`], { env: { EGGSFS_SHUCKLE: cluster.shuckleUrl } });
        assert.notEqual(cat.code, 0);
        assert.match(cat.stderr, new RegExp(`cat /f-1\\+2-\\d+: .*cannot read span at offset ${span.byteOffset} of file 0x${hex}.*only 0 of 3 blocks readable`));
      }
    });
  }
});

test('up to P corrupted blocks on disk are caught by their CRCs and rebuilt; P+1 is a clear error', async () => {
  for (const parity of [0x21, 0x24]) {
    const { dataBlocks: D, parityBlocks: P } = parseParity(parity);
    const name = `corrupt-${formatParity(parity)}`;
    const data = pattern(2 * SPAN_BYTES + 999, 7);
    const id = await write(name, data, parity);
    const span = (await spansOf(id))[0]!;
    assert.equal(span.parity, parity);
    const flip = (k: number) => {
      const b = span.bodyBlocks[k]!;
      const file = path.join(cluster.blockDir(serviceOf(b.port)), blockRelativePath(b.blockId));
      const fd = openSync(file, 'r+');
      const one = Buffer.alloc(1);
      readSync(fd, one, 0, 1, 17);
      one[0]! ^= 0xff;
      writeSync(fd, one, 0, 1, 17);
      closeSync(fd);
    };
    for (let k = 0; k < P; k++) flip(k);
    assert.deepEqual(await client.readRange(id, 0, data.length), data, `${formatParity(parity)} with ${P} corrupt blocks`);
    flip(P);
    await assert.rejects(client.readRange(id, 0, data.length), new RegExp(`file 0x${id.toString(16).padStart(16, '0')} bytes 0\\.\\.${span.size} .*only ${D - 1} of ${D + P} blocks readable`));
  }
});

test('a hung block service (SIGSTOP) costs a hedge delay, not the block timeout', async () => {
  // A client whose block timeout (2 min) would dominate if reads waited for the hung service.
  const patient = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl, clusterSecret: cluster.secret, spanBytes: SPAN_BYTES, blockTimeoutMs: 120_000 });
  try {
    for (const parity of [0x24, 0x21]) {
      const f = files.get(`f-${formatParity(parity)}-${3 * SPAN_BYTES + 12_345}`)!;
      const span = (await spansOf(f.id))[0]!;
      const victim = serviceOf(span.bodyBlocks[0]!.port);
      cluster.signalBlocks(victim, 'SIGSTOP');
      try {
        const t0 = Date.now();
        assert.deepEqual(await patient.readRange(f.id, 0, f.data.length), f.data);
        assert.ok(Date.now() - t0 < 60_000, `read took ${Date.now() - t0} ms with a hung service`);
      } finally {
        cluster.signalBlocks(victim, 'SIGCONT');
      }
    }
  } finally {
    await patient.close();
  }
});

test('writes succeed while a block service is down (fail over to a new transient file)', async () => {
  const down = 5;
  await withDown([down], async () => {
    for (const parity of [0x24, 0x21, 0x01]) {
      // Right after the kill the shard still picks the dead service: the writer must fail over.
      const data = pattern(4 * SPAN_BYTES + 77, 3);
      const id = await write(`while-down-${formatParity(parity)}`, data, parity);
      assert.deepEqual(await client.readRange(id, 0, data.length), data);
      for (const s of await spansOf(id)) for (const b of s.bodyBlocks) assert.notEqual(serviceOf(b.port), down, 'no block on the dead service');
    }
  });
});

test('writes go on while a block service hangs (SIGSTOP): time out, fail over, avoid it', async () => {
  const hung = 6;
  cluster.signalBlocks(hung, 'SIGSTOP');
  try {
    const data = pattern(4 * SPAN_BYTES + 1, 5);
    const id = await write('while-hung-4+2', data, 0x24);
    assert.deepEqual(await client.readRange(id, 0, data.length), data);
    for (const s of await spansOf(id)) for (const b of s.bodyBlocks) assert.notEqual(serviceOf(b.port), hung, 'no block on the hung service');
  } finally {
    cluster.signalBlocks(hung, 'SIGCONT');
    await cluster.waitLive([...Array(BLOCK_SERVICES).keys()]);
    await cluster.settle();
  }
});

test('CLI: copy_into --parity D+P, the cluster default (4+2 with 8 services), and cat through a dead service', async () => {
  const tmp = tempDir('redundancy-cli');
  try {
    // Text, so that cat's output can be compared through the test's string capture.
    const data = Buffer.from(randomBytes(3 * SPAN_BYTES).toString('base64').slice(0, 3 * SPAN_BYTES + 5));
    const src = path.join(tmp.path, 'src');
    writeFileSync(src, data);
    const env = { EGGSFS_SHUCKLE: cluster.shuckleUrl, EGGSFS_CLUSTER_SECRET: cluster.secret };
    const cp = await runEggsfs(['copy_into', '--parity', '1+2', '--span-bytes', String(SPAN_BYTES), '/cli-mirror', src], { env });
    assert.equal(cp.code, 0, cp.stderr);
    // The default comes from the services shuckle lists as live when the client connects.
    await cluster.waitLive([...Array(BLOCK_SERVICES).keys()]);
    const cp2 = await runEggsfs(['copy_into', '--span-bytes', String(SPAN_BYTES), '/cli-default', src], { env });
    assert.equal(cp2.code, 0, cp2.stderr);
    const bad = await runEggsfs(['copy_into', '--parity', '4+x', '/cli-bad', src], { env });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /parity/);
    const mirror = await client.resolve('/cli-mirror');
    const def = await client.resolve('/cli-default');
    const blockSpans = async (id: bigint) => (await spansOf(id)).filter((s) => s.storageClass >= 2); // the 5-byte tail is inline
    assert.equal((await blockSpans(mirror)).length, 3);
    for (const s of await blockSpans(mirror)) assert.equal(s.parity, 0x21);
    for (const s of await blockSpans(def)) assert.equal(s.parity, 0x24, 'cluster default');
    const span = (await spansOf(def))[0]!;
    await withDown([serviceOf(span.bodyBlocks[0]!.port)], async () => {
      const cat = await runEggsfs(['cat', '/cli-default'], { env });
      assert.equal(cat.code, 0, cat.stderr);
      assert.equal(cat.stdout, data.toString(), 'cat output byte-exact');
      assert.match(cat.stderr, /degraded read/);
      // Parity written by the WebAssembly codec, rebuilt by the TypeScript fallback: one code.
      const ts = await runEggsfs(['cat', '/cli-default'], { env: { ...env, EGGSFS_RS_CODEC: 'ts' } });
      assert.equal(ts.code, 0, ts.stderr);
      assert.equal(ts.stdout, data.toString(), 'cat with the TypeScript codec byte-exact');
      assert.match(ts.stderr, /data blocks rebuilt from parity/);
    });
  } finally {
    tmp.remove();
  }
});
