// End-to-end cost of redundancy: `eggsfs copy_into` and `eggsfs cat` of one file with no
// redundancy (1+0, the baseline of the same run), mirroring (1+2) and the cluster default
// Reed-Solomon (4+2), plus a cat of the 4+2 file with P = 2 block services killed. A cluster of
// 10 block services, each its own process (test/helpers/split-cluster.ts), on this machine.
// Goals (issue 7): 4+2 write ≥ 70 % and degraded read ≥ 50 % of the 1+0 figure.
//
//   node dist/bench/redundancy.js [--mib N (default 256; 1024 for the 1 GiB)] [--span-mib N] [--reps N]
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { EggsClient } from '../src/client/index.js';
import { UdpTransport } from '../src/client/transport.js';
import { shardOf } from '../src/proto/ids.js';
import { EGGSFS_BIN, tempDir } from '../test/helpers/proc.js';
import { startSplitCluster } from '../test/helpers/split-cluster.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}

const FILE_BYTES = arg('mib', 256) * 1024 * 1024;
const SPAN_BYTES = arg('span-mib', 8) * 1024 * 1024;
const BLOCK_SERVICES = 10;
const WRITE_CHUNK_BYTES = 8 << 20;
const REPS = arg('reps', 3);

/** Run `eggsfs args`; stdout is hashed (sha256) and counted, not kept. Resolves with seconds. */
function timed(args: string[], env: NodeJS.ProcessEnv): Promise<{ seconds: number; outBytes: number; sha256: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(process.execPath, [EGGSFS_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const h = createHash('sha256');
    let outBytes = 0;
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      outBytes += d.length;
      h.update(d);
    });
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('exit', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code !== 0) reject(new Error(`eggsfs ${args.join(' ')} exited ${code}: ${stderr.slice(-2000)}`));
      else resolve({ seconds, outBytes, sha256: h.digest('hex'), stderr });
    });
  });
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function main(): Promise<void> {
  const tmp = tempDir('bench-redundancy');
  const src = path.join(tmp.path, 'src');
  const fd = openSync(src, 'w');
  for (let off = 0; off < FILE_BYTES; off += WRITE_CHUNK_BYTES) writeSync(fd, randomBytes(Math.min(WRITE_CHUNK_BYTES, FILE_BYTES - off)));
  closeSync(fd);
  const want = await sha256File(src);
  const cluster = await startSplitCluster({ blockServices: BLOCK_SERVICES });
  const env = { EGGSFS_SHUCKLE: cluster.shuckleUrl, EGGSFS_CLUSTER_SECRET: cluster.secret };
  const mib = FILE_BYTES / (1 << 20);
  const samples = new Map<string, number[]>();
  const add = (what: string, seconds: number) => {
    const l = samples.get(what) ?? [];
    l.push(mib / seconds);
    samples.set(what, l);
  };
  const modes = [
    { name: '1+0', label: 'no redundancy (baseline)' },
    { name: '1+2', label: 'mirroring, 3 copies' },
    { name: '4+2', label: 'Reed-Solomon 4+2 (cluster default)' },
  ];
  const degradedLabel = `read  Reed-Solomon 4+2, 2 of ${BLOCK_SERVICES} services killed`;
  try {
    console.log(`redundancy: ${mib} MiB file, ${SPAN_BYTES >> 20} MiB spans, ${BLOCK_SERVICES} block services (one process each), CLI copy_into / cat, median of ${REPS} interleaved runs`);
    // Interleaved rounds, so that disk write-back and other load on the machine hit every mode
    // alike; each round ends with the degraded read of its 4+2 file.
    for (let rep = 0; rep < REPS; rep++) {
      for (const m of modes) {
        const dest = `/bench-${m.name.replace('+', '-')}-${rep}`;
        const w = await timed(['copy_into', '--no-progress', '--parity', m.name, '--span-bytes', String(SPAN_BYTES), dest, src], env);
        add(`write ${m.label}`, w.seconds);
        const r = await timed(['cat', dest], env);
        if (r.sha256 !== want) throw new Error(`cat ${dest}: content differs (${r.outBytes} bytes)`);
        add(`read  ${m.label}`, r.seconds);
      }
      // Kill the services of the first two data blocks of the first span (so at least that span is
      // rebuilt from parity; with 10 services about 2/3 of all spans lose a block), read, restart.
      const client = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl, clusterSecret: cluster.secret });
      const id = await client.resolve(`/bench-4-2-${rep}`);
      await client.close();
      const t = new UdpTransport({ defaultTimeoutMs: 2_000, defaultAttempts: 3 });
      const spans = await t.shardRequest({ host: '127.0.0.1', port: cluster.ports.shardBasePort + shardOf(id) }, 'FILE_SPANS', { fileId: id, byteOffset: 0n });
      t.close();
      const victims = spans.spans[0]!.bodyBlocks.slice(0, 2).map((b) => b.port - cluster.ports.blockBasePort);
      for (const i of victims) await cluster.killBlocks(i);
      const d = await timed(['cat', `/bench-4-2-${rep}`], env);
      if (d.sha256 !== want) throw new Error('degraded cat: content differs');
      if (!/degraded read/.test(d.stderr)) throw new Error('degraded cat did not report a degraded read');
      add(degradedLabel, d.seconds);
      for (const i of victims) await cluster.startBlocks(i);
      await cluster.waitLive([...Array(BLOCK_SERVICES).keys()]);
      await cluster.settle();
    }
  } finally {
    await cluster.stop();
    tmp.remove();
  }
  const median = (l: number[]) => [...l].sort((a, b) => a - b)[Math.floor(l.length / 2)]!;
  const baseW = median(samples.get(`write ${modes[0]!.label}`)!);
  const baseR = median(samples.get(`read  ${modes[0]!.label}`)!);
  for (const [what, l] of samples) {
    const base = what.startsWith('write') ? baseW : baseR;
    const v = median(l);
    console.log(`  ${what.padEnd(52)} ${v.toFixed(0).padStart(5)} MiB/s  ${(v / base).toFixed(2)}× of 1+0   (runs: ${l.map((x) => x.toFixed(0)).join(', ')})`);
  }
  const rsW = median(samples.get(`write ${modes[2]!.label}`)!) / baseW;
  const deg = median(samples.get(degradedLabel)!) / baseR;
  console.log(`goals: 4+2 write ${(rsW * 100).toFixed(0)} % of 1+0 (goal ≥ 70 %), degraded read ${(deg * 100).toFixed(0)} % of 1+0 (goal ≥ 50 %)`);
}

await main();
