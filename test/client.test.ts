// The client library against a real cluster: every span kind (inline, zero-fill, blocks with
// mirrors, striping and parity), ranges, CRC-checked reads that survive a corrupted copy, the
// FileWriter API, lost answers to non-idempotent requests, and a 2 GiB file through the CLI with
// the client's resident memory measured.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { EggsClient, PathError } from '../src/client/index.js';
import { ErrorCode } from '../src/proto/errors.js';
import { ROOT_DIR_INODE_ID } from '../src/proto/ids.js';
import { startCluster, type TestCluster } from './helpers/cluster.js';
import { EGGSFS_BIN } from './helpers/proc.js';
import { startUdpProxy } from './helpers/udp-proxy.js';

async function writeAll(c: EggsClient, p: string, data: Buffer, opts: { parity?: number } = {}): Promise<void> {
  const w = c.createWriteStream(p, opts);
  await new Promise<void>((resolve, reject) => {
    w.on('finish', resolve).on('error', reject);
    // Several writes of odd sizes, as a real producer would make.
    for (let off = 0; off < data.length; off += 777_777) w.write(data.subarray(off, off + 777_777));
    w.end();
  });
}

async function readAll(c: EggsClient, p: string, opts: { start?: number; end?: number } = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of c.createReadStream(p, opts)) parts.push(b);
  return Buffer.concat(parts);
}

/** Block files of exactly `size` bytes under the cluster's block-service directories. */
function blockFilesOfSize(cluster: TestCluster, size: number): string[] {
  const out: string[] = [];
  for (const bs of readdirSync(cluster.dir).filter((d) => d.startsWith('bs_'))) {
    const root = path.join(cluster.dir, bs);
    for (const sub of readdirSync(root)) {
      const d = path.join(root, sub);
      if (!statSync(d).isDirectory()) continue;
      for (const f of readdirSync(d)) if (!f.startsWith('.') && statSync(path.join(d, f)).size === size) out.push(path.join(d, f));
    }
  }
  return out;
}

test('client library', { timeout: 240_000 }, async (t) => {
  const cluster = await startCluster({ blockServices: 3 });
  t.after(() => cluster.destroy());
  const SPAN = 1 << 20;
  const c = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl, spanBytes: SPAN });
  t.after(() => c.close());

  await t.test('unlinkKnownAt: a known id removes with one request; a stale id falls back to the current entry', async () => {
    await writeAll(c, '/known', Buffer.from('one'));
    const first = await c.resolve('/known');
    await c.unlinkKnownAt(ROOT_DIR_INODE_ID, 'known', first);
    await assert.rejects(c.resolve('/known'), PathError);
    await writeAll(c, '/known', Buffer.from('two'));
    assert.notEqual(await c.resolve('/known'), first);
    await c.unlinkKnownAt(ROOT_DIR_INODE_ID, 'known', first); // stale: the name now holds another file
    await assert.rejects(c.resolve('/known'), PathError);
    await assert.rejects(c.unlinkKnownAt(ROOT_DIR_INODE_ID, 'known', first), (e: { code?: number }) => e.code === ErrorCode.NAME_NOT_FOUND);
  });

  await t.test('every span kind, whole and in ranges', async () => {
    // random span, zero span, random span, then a short (inline) tail
    const data = Buffer.concat([randomBytes(SPAN), Buffer.alloc(SPAN), randomBytes(SPAN), randomBytes(100)]);
    await writeAll(c, '/mixed', data);
    assert.equal((await c.stat('/mixed')).size, data.length);
    assert.ok((await readAll(c, '/mixed')).equals(data));
    for (const [start, end] of [
      [0, 0],
      [1, 10],
      [SPAN - 5, SPAN + 5],
      [SPAN + 3, 2 * SPAN + 7],
      [3 * SPAN - 1, 3 * SPAN + 50],
      [3 * SPAN + 99, 3 * SPAN + 99],
      [12345, data.length - 1],
    ] as const) {
      assert.ok((await readAll(c, '/mixed', { start, end })).equals(data.subarray(start, end + 1)), `range ${start}-${end}`);
    }
    const id = await c.resolve('/mixed');
    assert.ok((await c.readRange(id, data.length - 10, 100)).equals(data.subarray(data.length - 10)), 'short at EOF');
    assert.equal((await c.readRange(id, data.length + 5, 100)).length, 0, 'empty past EOF');
    assert.ok((await c.readRange(id, 2 * SPAN - 1, 2)).equals(data.subarray(2 * SPAN - 1, 2 * SPAN + 1)));
    // Tiny and empty files.
    await writeAll(c, '/tiny', Buffer.from('tiny'));
    assert.equal((await readAll(c, '/tiny')).toString(), 'tiny');
    await writeAll(c, '/empty', Buffer.alloc(0));
    assert.equal((await c.stat('/empty')).size, 0);
    assert.equal((await readAll(c, '/empty')).length, 0);
    // A big hole costs no memory to read.
    await writeAll(c, '/hole', Buffer.alloc(4 * SPAN));
    assert.ok((await readAll(c, '/hole')).equals(Buffer.alloc(4 * SPAN)));
  });

  await t.test('parity: striping, Reed-Solomon and mirrors', async () => {
    for (const parity of [0x02, 0x03, 0x12, 0x21]) {
      const data = randomBytes(2 * SPAN + 4321);
      await writeAll(c, `/parity-${parity}`, data, { parity });
      assert.ok((await readAll(c, `/parity-${parity}`)).equals(data), `parity 0x${parity.toString(16)}`);
    }
    assert.throws(() => c.createFile(0x2000000000000000n, 'bad', { parity: 0x10 }), RangeError);
  });

  await t.test('a corrupted block: mirrors cover it, a lone copy is an error', async () => {
    const SIZE = 300_001; // a size no other test writes
    const data = randomBytes(SIZE);
    await writeAll(c, '/mirrored', data, { parity: 0x21 }); // one data block, two mirrors
    const copies = blockFilesOfSize(cluster, SIZE);
    assert.equal(copies.length, 3);
    const bad = Buffer.from(readFileSync(copies[0]!));
    bad[1000] ^= 0xff;
    writeFileSync(copies[0]!, bad);
    assert.ok((await readAll(c, '/mirrored')).equals(data), 'read from a good mirror');
    const SIZE2 = 300_003;
    await writeAll(c, '/single', randomBytes(SIZE2), { parity: 0x01 });
    const [only] = blockFilesOfSize(cluster, SIZE2);
    const b = Buffer.from(readFileSync(only!));
    b[5] ^= 1;
    writeFileSync(only!, b);
    await assert.rejects(readAll(c, '/single'), (err: Error) => err instanceof PathError && /cannot read span at offset 0/.test(err.message));
  });

  await t.test('FileWriter: close links, abort leaves nothing visible', async () => {
    const root = await c.resolve('/');
    const w = c.createFile(root, 'fw');
    await w.write(Buffer.from('abc'));
    await w.write(randomBytes(3 * SPAN));
    assert.equal(w.written, 3 * SPAN + 3);
    const id = await w.close();
    assert.equal(await c.resolve('/fw'), id);
    assert.equal(await w.close(), id, 'close is idempotent');
    const a = c.createFile(root, 'aborted');
    await a.write(randomBytes(2 * SPAN));
    await a.abort();
    await assert.rejects(c.stat('/aborted'), (e: PathError) => e.code === ErrorCode.NAME_NOT_FOUND);
    await assert.rejects(a.write(Buffer.from('x')));
    // A stream to a missing directory fails with the path in the error.
    const s = c.createWriteStream('/no/such/dir/f');
    const err = await new Promise<Error>((resolve) => s.on('error', resolve));
    assert.equal(err.message, 'write /no/such/dir/f: no such directory /no');
  });

  await t.test('lost answers to non-idempotent requests are recovered', async () => {
    const dropped = new Set<string>();
    const dropOnce = ['shard:0xc', 'shard:0xe', 'cdc:0x1', 'cdc:0x2', 'cdc:0x3', 'cdc:0x4'];
    const proxy = await startUdpProxy(cluster.ports.shardBasePort, cluster.ports.cdcPort, {
      dropAnswer: (proto, kind) => {
        const key = `${proto}:0x${kind.toString(16)}`;
        if (!dropOnce.includes(key) || dropped.has(key)) return false;
        dropped.add(key);
        return true;
      },
    });
    t.after(() => proxy.close());
    const p = await EggsClient.connect({ shardBasePort: proxy.shardBasePort, cdcPort: proxy.cdcPort, timeoutMs: 300, attempts: 4 });
    t.after(() => p.close());
    await p.mkdir('/lost'); // MAKE_DIRECTORY answered CANNOT_OVERRIDE_NAME on the resend
    await p.mkdir('/lost/d');
    await writeAll(p, '/lost/f', Buffer.from('f'));
    await p.rename('/lost/f', '/lost/g'); // SAME_DIRECTORY_RENAME
    await p.rename('/lost/g', '/lost/d/g'); // RENAME_FILE
    await p.rename('/lost/d', '/lost-d'); // RENAME_DIRECTORY
    await p.unlink('/lost-d/g'); // SOFT_UNLINK_FILE
    await p.rmdir('/lost-d'); // REMOVE_DIRECTORY
    assert.deepEqual([...dropped].sort(), [...dropOnce].sort(), 'every kind had an answer lost');
    assert.deepEqual(proxy.droppedAnswers.sort(), [...dropOnce].sort());
    const names: string[] = [];
    for await (const e of p.readDir('/lost')) names.push(e.name);
    assert.deepEqual(names, []);
    await p.rmdir('/lost');
  });
});

/** Deterministic, non-repeating test data: a random MiB with its index stamped in. */
function* bigData(totalBytes: number): Generator<Buffer> {
  const base = randomBytes(1 << 20);
  for (let i = 0; i * (1 << 20) < totalBytes; i++) {
    const b = Buffer.from(base);
    b.writeUInt32LE(i, 0);
    b.writeUInt32LE((i * 2654435761) >>> 0, 4096);
    yield b.subarray(0, Math.min(1 << 20, totalBytes - i * (1 << 20)));
  }
}

/** Peak resident memory of a process (VmHWM), sampled until it exits. */
function watchPeakRss(pid: number): { stop(): number } {
  let peakKiB = 0;
  const sample = () => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
    } catch {
      /* exited */
    }
  };
  const timer = setInterval(sample, 50);
  return {
    stop() {
      clearInterval(timer);
      return peakKiB * 1024;
    },
  };
}

const BIG_BYTES = Number(process.env.EGGSFS_TEST_BIG_BYTES ?? 2 ** 31);
/** Node itself (~50 MiB), two 32 MiB spans in flight or read ahead, and the garbage of freed span buffers not yet collected: a fixed bound, far below the file size. */
const CLIENT_RSS_LIMIT_BYTES = 448 << 20;

test('a 2 GiB file in and out through the CLI, byte-exact, with bounded client memory', { timeout: 600_000 }, async (t) => {
  const cluster = await startCluster({ blockServices: 3 });
  t.after(() => cluster.destroy());
  const env = { ...process.env, ...cluster.env };

  const inHash = createHash('sha256');
  const writer = spawn(process.execPath, [EGGSFS_BIN, 'copy_into', '/big', '-'], { env, stdio: ['pipe', 'ignore', 'pipe'] });
  t.after(() => writer.kill('SIGKILL'));
  const writerPeak = watchPeakRss(writer.pid!);
  let writerErr = '';
  writer.stderr.on('data', (d) => (writerErr += d));
  const writerDone = new Promise<number | null>((r) => writer.on('exit', r));
  for (const chunk of bigData(BIG_BYTES)) {
    inHash.update(chunk);
    if (!writer.stdin.write(chunk)) await new Promise((r) => writer.stdin.once('drain', r));
  }
  writer.stdin.end();
  assert.equal(await writerDone, 0, writerErr);
  const writePeak = writerPeak.stop();

  const reader = spawn(process.execPath, [EGGSFS_BIN, 'cat', '/big'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => reader.kill('SIGKILL'));
  const readerPeak = watchPeakRss(reader.pid!);
  const outHash = createHash('sha256');
  let outBytes = 0;
  let readerErr = '';
  reader.stderr.on('data', (d) => (readerErr += d));
  reader.stdout.on('data', (d: Buffer) => {
    outHash.update(d);
    outBytes += d.length;
  });
  const code = await new Promise<number | null>((r) => reader.on('close', r));
  assert.equal(code, 0, readerErr);
  const readPeak = readerPeak.stop();
  assert.equal(outBytes, BIG_BYTES);
  assert.equal(outHash.digest('hex'), inHash.digest('hex'));
  t.diagnostic(`peak RSS: copy_into ${(writePeak / 2 ** 20).toFixed(0)} MiB, cat ${(readPeak / 2 ** 20).toFixed(0)} MiB for a ${(BIG_BYTES / 2 ** 30).toFixed(1)} GiB file`);
  assert.ok(writePeak > 0 && readPeak > 0, 'RSS was sampled');
  assert.ok(writePeak < CLIENT_RSS_LIMIT_BYTES, `copy_into peak RSS ${writePeak} bytes`);
  assert.ok(readPeak < CLIENT_RSS_LIMIT_BYTES, `cat peak RSS ${readPeak} bytes`);
});
