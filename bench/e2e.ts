// End-to-end benchmark of a whole cluster (`eggsfs run`, 10 block services, 256 shards, on free
// ports and a fresh data directory), with the same work done on the local disk in the same run:
//   * a 1 GiB file: `eggsfs copy_into` and `eggsfs cat` (the CLI processes, MiB/s) against a Node
//     copy of the same source into a local file ending in fsync, and a read of that local file;
//     both reads find their data in the page cache (our blocks were just written too);
//   * 10,000 small files through the client library with 64 operations in flight: create (and
//     link), stat, list, remove (operations/s) against fs.promises on a local directory with the
//     same concurrency (local create also fsyncs nothing, so it is the optimistic baseline);
//   * resident memory of the whole cluster (run + its four children) at rest after start, and its
//     peak while the large file is written and read.
//
//   node dist/bench/e2e.js [--bytes 1073741824] [--files 10000] [--block-services 10] [--reps 3] [--dir BASE]
//                          [--no-small] [--compare-bin OTHER/bin/eggsfs.js]
// (with 10 block services the client's default parity is 4+2; 1+0 is the original's single block)
// Each figure is the median of --reps interleaved repetitions (all of them are printed too, with the
// load average: the machine is shared). --compare-bin also runs `copy_into` and `cat` with another build's launcher
// (e.g. a copy of the tree before a change) interleaved with ours, for before/after figures.
// --no-small skips the small-file part.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, createReadStream, createWriteStream, openSync, readFileSync, mkdirSync, rmSync } from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { EggsClient } from '../src/client/index.js';
import { startCluster } from '../test/helpers/cluster.js';
import { EGGSFS_BIN } from '../test/helpers/proc.js';

const MiB = 1 << 20;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

const BYTES = Number(arg('bytes', String(1 << 30)));
const FILES = Number(arg('files', '10000'));
const BLOCK_SERVICES = Number(arg('block-services', '10'));
const BASE = arg('dir', os.tmpdir());
const PARALLEL = 64;
const REPS = Number(arg('reps', '3'));
const SMALL = !process.argv.includes('--no-small');
const COMPARE_BIN = arg('compare-bin', '');

function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function sampler(pids: number[]): { stop(): number } {
  let peak = 0;
  const t = setInterval(() => (peak = Math.max(peak, pids.reduce((s, p) => s + rssBytes(p), 0))), 100);
  return {
    stop() {
      clearInterval(t);
      return peak;
    },
  };
}

/** Runs the CLI with its stdout on /dev/null (a file descriptor, so nothing in between). */
function runCli(args: string[], env: NodeJS.ProcessEnv, bin = EGGSFS_BIN): Promise<number> {
  return new Promise((resolve, reject) => {
    const devnull = openSync('/dev/null', 'w');
    const p = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', devnull, 'inherit'] });
    closeSync(devnull);
    const t0 = performance.now();
    p.on('exit', (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`eggsfs ${args.join(' ')} exited ${code}`))));
  });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function parallel(n: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all([...Array(Math.min(PARALLEL, n))].map(async () => {
    while (next < n) await fn(next++);
  }));
}

const rows: { what: string; ours: string; local: string; ratio: string; reps?: string }[] = [];
const fmt = (x: number, unit: string) => `${x.toFixed(x >= 100 ? 0 : 1)} ${unit}`;
function row(what: string, ours: number, local: number, unit: string, reps?: string): void {
  rows.push({ what, ours: fmt(ours, unit), local: fmt(local, unit), ratio: `${(ours / local).toFixed(2)}×`, reps });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const work = path.join(BASE, `eggsfs-bench-e2e-${process.pid}`);
  mkdirSync(work, { recursive: true });
  const cluster = await startCluster({ blockServices: BLOCK_SERVICES, dir: path.join(work, 'cluster') });
  try {
    const ready = JSON.parse(cluster.service.stdout().split('\n').find((l) => l.startsWith('ready run '))!.slice(10));
    const pids = [cluster.service.proc.pid!, ...(Object.values(ready.pids) as number[])];
    await new Promise((r) => setTimeout(r, 3000)); // let startup settle
    const idleRss = pids.reduce((s, p) => s + rssBytes(p), 0);
    const startupMs = ready.startupMs as number;

    // ---------------------------------------------------------------- large file
    const src = path.join(work, 'source.bin');
    {
      const out = createWriteStream(src);
      const chunk = randomBytes(MiB);
      for (let off = 0; off < BYTES; off += MiB) {
        chunk.writeUInt32LE(off / MiB, 0);
        if (!out.write(Buffer.from(chunk.subarray(0, Math.min(MiB, BYTES - off))))) await new Promise<void>((r) => out.once('drain', () => r()));
      }
      await new Promise<void>((r) => out.end(() => r()));
    }
    const env = cluster.env;
    const dst = path.join(work, 'local-copy.bin');
    // The machine is shared and its figures swing: each measurement is repeated REPS times,
    // ours and the local baseline interleaved, and the median of each is kept.
    const ms = { w: [], r: [], w10: [], r10: [], cr: [], cr10: [], cw: [], cw10: [], lw: [], ld: [], lr: [] } as Record<string, number[]>;
    const load = sampler(pids);
    const loadAvg: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      ms.w!.push(await runCli(['copy_into', `/big-${rep}`, src], env));
      ms.r!.push(await runCli(['cat', `/big-${rep}`], env));
      if (COMPARE_BIN) ms.cr!.push(await runCli(['cat', `/big-${rep}`], env, COMPARE_BIN));
      ms.w10!.push(await runCli(['copy_into', '--parity', '1+0', `/big10-${rep}`, src], env));
      ms.r10!.push(await runCli(['cat', `/big10-${rep}`], env));
      if (COMPARE_BIN) ms.cr10!.push(await runCli(['cat', `/big10-${rep}`], env, COMPARE_BIN));
      await runCli(['rm', `/big-${rep}`], env);
      await runCli(['rm', `/big10-${rep}`], env);
      if (COMPARE_BIN) {
        ms.cw!.push(await runCli(['copy_into', `/cbig-${rep}`, src], env, COMPARE_BIN));
        ms.cw10!.push(await runCli(['copy_into', '--parity', '1+0', `/cbig10-${rep}`, src], env, COMPARE_BIN));
        await runCli(['rm', `/cbig-${rep}`], env);
        await runCli(['rm', `/cbig10-${rep}`], env);
      }
      loadAvg.push(os.loadavg()[0]!);
      // Local: the same copy with Node streams ending in fsync; the disk itself (O_DIRECT, no page
      // cache); and the page cache (where our just-written blocks are too).
      ms.lw!.push(await timed(async () => {
        await pipeline(createReadStream(src, { highWaterMark: MiB }), createWriteStream(dst, { highWaterMark: MiB }));
        const fh = await fsp.open(dst, 'r+');
        await fh.sync();
        await fh.close();
      }));
      ms.ld!.push(await timed(async () => {
        const r = spawnSync('dd', [`if=${dst}`, 'of=/dev/null', 'bs=1M', 'iflag=direct'], { stdio: 'ignore' });
        if (r.status !== 0) throw new Error('dd failed');
      }));
      ms.lr!.push(await timed(() => pipeline(createReadStream(dst, { highWaterMark: MiB }), createWriteStream('/dev/null'))));
      rmSync(dst);
    }
    const loadRss = load.stop();
    const mib = BYTES / MiB;
    const rates = (k: string) => ms[k]!.map((t) => mib / (t / 1000));
    const rate = (k: string) => median(rates(k));
    const all = (k: string) => rates(k).map((r) => r.toFixed(0)).join(' ');
    row(`copy_into ${mib} MiB (default parity) vs Node copy + fsync`, rate('w'), rate('lw'), 'MiB/s', `${all('w')} vs ${all('lw')}`);
    row(`copy_into ${mib} MiB --parity 1+0 vs Node copy + fsync`, rate('w10'), rate('lw'), 'MiB/s', `${all('w10')} vs ${all('lw')}`);
    row(`cat ${mib} MiB (default parity) vs dd iflag=direct`, rate('r'), rate('ld'), 'MiB/s', `${all('r')} vs ${all('ld')}`);
    row(`cat ${mib} MiB (1+0) vs dd iflag=direct`, rate('r10'), rate('ld'), 'MiB/s', `${all('r10')} vs ${all('ld')}`);
    row(`cat ${mib} MiB (1+0) vs Node read (page cache)`, rate('r10'), rate('lr'), 'MiB/s', `${all('r10')} vs ${all('lr')}`);
    if (COMPARE_BIN) {
      row(`copy_into ${mib} MiB (default parity) vs the same with --compare-bin`, rate('w'), rate('cw'), 'MiB/s', `${all('w')} vs ${all('cw')}`);
      row(`copy_into ${mib} MiB (1+0) vs the same with --compare-bin`, rate('w10'), rate('cw10'), 'MiB/s', `${all('w10')} vs ${all('cw10')}`);
      row(`cat ${mib} MiB (default parity) vs the same with --compare-bin`, rate('r'), rate('cr'), 'MiB/s', `${all('r')} vs ${all('cr')}`);
      row(`cat ${mib} MiB (1+0) vs the same with --compare-bin`, rate('r10'), rate('cr10'), 'MiB/s', `${all('r10')} vs ${all('cr10')}`);
    }

    // ---------------------------------------------------------------- small files
    const c = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl });
    await c.mkdir('/small');
    const dirId = await c.resolve('/small');
    const body = randomBytes(100);
    const names = [...Array(FILES).keys()].map((i) => `f${i}`);
    const local = path.join(work, 'small');
    mkdirSync(local);
    const ops: [string, () => Promise<unknown>, () => Promise<unknown>][] = [
      [
        'create',
        () => parallel(FILES, async (i) => {
          const w = c.createFile(dirId, names[i]!);
          await w.write(body);
          await w.close();
        }),
        () => parallel(FILES, (i) => fsp.writeFile(path.join(local, names[i]!), body)),
      ],
      ['stat', () => parallel(FILES, (i) => c.stat(`/small/${names[i]}`)), () => parallel(FILES, (i) => fsp.stat(path.join(local, names[i]!)))],
      [
        'list',
        async () => {
          let n = 0;
          for await (const _ of c.readDir('/small')) n++;
          if (n !== FILES) throw new Error(`listed ${n} of ${FILES}`);
        },
        async () => {
          const n = (await fsp.readdir(local)).length;
          if (n !== FILES) throw new Error(`listed ${n}`);
        },
      ],
      ['remove', () => parallel(FILES, (i) => c.unlink(`/small/${names[i]}`)), () => parallel(FILES, (i) => fsp.unlink(path.join(local, names[i]!)))],
    ];
    for (const [name, ours, theirs] of SMALL ? ops : []) {
      const oursMs = await timed(ours);
      const localMs = await timed(theirs);
      row(`${name} ${FILES} small files`, FILES / (oursMs / 1000), FILES / (localMs / 1000), '/s');
    }
    await c.close();

    const width = Math.max(...rows.map((r) => r.what.length));
    console.log(`\nEnd-to-end, ${BLOCK_SERVICES} block services, 256 shards, data in ${work} (${os.cpus().length} cores)\n`);
    console.log(`${'benchmark'.padEnd(width)}  ${'eggsfs'.padStart(14)}  ${'local disk'.padStart(14)}  ratio`);
    for (const r of rows) console.log(`${r.what.padEnd(width)}  ${r.ours.padStart(14)}  ${r.local.padStart(14)}  ${r.ratio.padEnd(6)}${r.reps ? `  reps: ${r.reps}` : ''}`);
    console.log(`\nmedians of ${REPS} interleaved repetitions; 1-minute load average during them: ${loadAvg.map((l) => l.toFixed(2)).join(' ')} (${os.cpus().length} cores)`);
    console.log(`\ncluster resident memory: ${(idleRss / MiB).toFixed(0)} MiB at rest (goal < 1024 MiB), peak ${(loadRss / MiB).toFixed(0)} MiB while copying in and out; startup ${startupMs} ms`);
    console.log(JSON.stringify({ bench: 'e2e', bytes: BYTES, files: FILES, reps: REPS, loadAvg, rows, idleRssMiB: Math.round(idleRss / MiB), loadRssMiB: Math.round(loadRss / MiB), startupMs }));
  } finally {
    await cluster.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
