// The FUSE driver against the cost of FUSE itself on this machine. Same work, same run, on three
// targets: a fresh directory on the local disk, libfuse's own passthrough_ll example (multithreaded
// C, built here from Debian's libfuse3-dev examples) over a fresh local directory, and EggsFS
// mounted with `eggsfs mount` on a cluster started with `eggsfs run` (3 block services, free ports).
//   - dd write (conv=fsync, timed until dd exits, so including the close that links the file) and
//     cold read (caches dropped) of one file of random bytes
//   - create (empty files), stat (caches dropped first), list and remove N files, one at a time and
//     64 in flight (node:fs in a child process with a threadpool big enough for 64)
//   - walking a directory of N files (0-99 bytes) that another client wrote: `ls -f`, `ls -l`,
//     `find -size` and `du -s`, each on cold caches (dropped; for EggsFS also a fresh mount, so the
//     mount has nothing cached either). Local disk and passthrough_ll: files written into the
//     directory underneath.
// Goals (issue 6): large-file write and read ≥ 70 % of passthrough_ll's, create and stat ≥ 50 %.
//
//   node dist/bench/fuse.js [--mib N (default 1024)] [--files N (default 10000)]
// Needs root, /dev/fuse and `apt-get install -y libfuse3-dev fuse3 pkg-config gcc`.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { open, readdir, stat, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Service } from '../test/helpers/proc.js';
import { inParallel } from '../test/helpers/pool.js';
import type { TestCluster } from '../test/helpers/cluster.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}

const EXAMPLES_DIR = '/usr/share/doc/libfuse3-dev/examples';
const IN_FLIGHT = 64;
const SELF = fileURLToPath(import.meta.url);

// ---- metadata workload (runs in a child process: `fuse.js --meta DIR N CONCURRENCY`) ----------

async function metaWorkload(dir: string, n: number, concurrency: number): Promise<void> {
  const name = (i: number) => path.join(dir, `f${String(i).padStart(6, '0')}`);
  const rates: Record<string, number> = {};
  const timed = async (what: string, count: number, fn: () => Promise<void>) => {
    const t0 = process.hrtime.bigint();
    await fn();
    rates[what] = count / (Number(process.hrtime.bigint() - t0) / 1e9);
  };
  await timed('create', n, () =>
    inParallel(n, concurrency, async (i) => {
      const fh = await open(name(i), 'wx');
      await fh.close();
    }),
  );
  dropCaches();
  await timed('stat', n, () =>
    inParallel(n, concurrency, async (i) => {
      const st = await stat(name(i));
      if (!st.isFile()) throw new Error(`${name(i)} is not a file`);
    }),
  );
  await timed('list', n, async () => {
    const names = await readdir(dir);
    if (names.length !== n) throw new Error(`listed ${names.length} of ${n} files in ${dir}`);
  });
  await timed('remove', n, () => inParallel(n, concurrency, (i) => unlink(name(i))));
  process.stdout.write(JSON.stringify(rates) + '\n');
}

function dropCaches(): void {
  try {
    execFileSync('sync');
    execFileSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
  } catch {
    /* not root: caches stay */
  }
}

function runMeta(dir: string, n: number, concurrency: number): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [SELF, '--meta', dir, String(n), String(concurrency)], {
      env: { ...process.env, UV_THREADPOOL_SIZE: String(concurrency + 4) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Record<string, number>) : reject(new Error(`metadata workload on ${dir} exited ${code}`))));
  });
}

// ---- walking a directory another client wrote ----------------------------------------------------

const WALKS: [string, (dir: string) => string[]][] = [
  ['ls -f', (d) => ['ls', '-f', d]],
  ['ls -l', (d) => ['ls', '-l', d]],
  ['find -size', (d) => ['find', d, '-size', '+50c']],
  ['du -s', (d) => ['du', '-s', d]],
];

/** Files of 0-99 bytes, 64 written at once. */
async function writeWalkFiles(write: (name: string, data: Buffer) => Promise<void>, files: number): Promise<void> {
  await inParallel(files, IN_FLIGHT, (i) => write(`w${String(i).padStart(6, '0')}`, Buffer.alloc(i % 100, 0x61)));
}

/** Entries per second of each walk; `view` gives a cold view of the directory for each (and a way to close it). */
async function timeWalks(label: string, files: number, view: () => Promise<{ dir: string; close: () => unknown }>): Promise<Record<string, number>> {
  process.stderr.write(`${label}: walking ${files} files\n`);
  const rates: Record<string, number> = {};
  for (const [name, argv] of WALKS) {
    const v = await view();
    try {
      dropCaches();
      const [cmd, ...args] = argv(v.dir);
      const t0 = process.hrtime.bigint();
      const r = spawnSync(cmd!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      if (r.status !== 0) throw new Error(`${argv(v.dir).join(' ')}: ${r.stderr.toString()}`);
      rates[name] = files / (Number(process.hrtime.bigint() - t0) / 1e9);
    } finally {
      await v.close();
    }
  }
  return rates;
}

// ---- big file ---------------------------------------------------------------------------------

function ddSeconds(args: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('dd', [...args, 'bs=1M', 'status=none']);
  if (r.status !== 0) throw new Error(`dd ${args.join(' ')}: ${r.stderr.toString()}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

interface Figures {
  writeMBs: number;
  readMBs: number;
  meta1: Record<string, number>;
  meta64: Record<string, number>;
  walk?: Record<string, number>;
}

async function measure(label: string, dir: string, source: string, bytes: number, files: number): Promise<Figures> {
  process.stderr.write(`${label}: big file\n`);
  const big = path.join(dir, 'big');
  dropCaches();
  execFileSync('cat', [source], { stdio: ['ignore', 'ignore', 'inherit'] }); // source in the page cache
  const w = ddSeconds([`if=${source}`, `of=${big}`, 'conv=fsync']);
  dropCaches();
  const r = ddSeconds([`if=${big}`, 'of=/dev/null']);
  await unlink(big);
  process.stderr.write(`${label}: ${files} files one at a time\n`);
  mkdirSync(path.join(dir, 'm1'));
  const meta1 = await runMeta(path.join(dir, 'm1'), files, 1);
  process.stderr.write(`${label}: ${files} files, ${IN_FLIGHT} in flight\n`);
  mkdirSync(path.join(dir, 'm64'));
  const meta64 = await runMeta(path.join(dir, 'm64'), files, IN_FLIGHT);
  return { writeMBs: bytes / w / 1e6, readMBs: bytes / r / 1e6, meta1, meta64 };
}

// ---- the same work through the client library (no FUSE): what the cluster itself gives ----------

async function measureClient(shuckleUrl: string, source: string, bytes: number, files: number): Promise<Figures> {
  const { EggsClient } = await import('../src/client/index.js');
  const { ROOT_DIR_INODE_ID } = await import('../src/proto/ids.js');
  const { createReadStream } = await import('node:fs');
  const c = await EggsClient.connect({ shuckleUrl });
  try {
    process.stderr.write('client library: big file\n');
    dropCaches();
    execFileSync('cat', [source], { stdio: ['ignore', 'ignore', 'inherit'] });
    let t0 = process.hrtime.bigint();
    const w = c.createFile(ROOT_DIR_INODE_ID, 'client-big');
    for await (const chunk of createReadStream(source, { highWaterMark: 1 << 20 })) await w.write(chunk as Buffer);
    const id = await w.close();
    const writeS = Number(process.hrtime.bigint() - t0) / 1e9;
    dropCaches();
    t0 = process.hrtime.bigint();
    let got = 0;
    for await (const b of c.readChunks(id, 0, bytes)) got += b.length;
    const readS = Number(process.hrtime.bigint() - t0) / 1e9;
    if (got !== bytes) throw new Error(`client read ${got} of ${bytes} bytes`);
    await c.unlinkAt(ROOT_DIR_INODE_ID, 'client-big');
    const meta = async (concurrency: number): Promise<Record<string, number>> => {
      process.stderr.write(`client library: ${files} files, ${concurrency} in flight\n`);
      const dir = await c.mkdirAt(ROOT_DIR_INODE_ID, `client-m${concurrency}`);
      const name = (i: number) => `f${String(i).padStart(6, '0')}`;
      const rates: Record<string, number> = {};
      const timed = async (what: string, fn: () => Promise<void>) => {
        const s0 = process.hrtime.bigint();
        await fn();
        rates[what] = files / (Number(process.hrtime.bigint() - s0) / 1e9);
      };
      await timed('create', () => inParallel(files, concurrency, async (i) => void (await c.createFile(dir, name(i)).close())));
      await timed('stat', () => inParallel(files, concurrency, async (i) => void (await c.statId((await c.lookupAt(dir, name(i))).id))));
      await timed('list', async () => {
        let n = 0;
        for await (const _ of c.readDirId(dir)) n++;
        if (n !== files) throw new Error(`listed ${n} of ${files}`);
      });
      await timed('remove', () => inParallel(files, concurrency, (i) => c.unlinkAt(dir, name(i))));
      return rates;
    };
    return { writeMBs: bytes / writeS / 1e6, readMBs: bytes / readS / 1e6, meta1: await meta(1), meta64: await meta(IN_FLIGHT) };
  } finally {
    await c.close();
  }
}

// ---- targets ----------------------------------------------------------------------------------

function buildPassthrough(outDir: string): string | undefined {
  const src = path.join(EXAMPLES_DIR, 'passthrough_ll.c');
  if (!existsSync(src)) return undefined;
  const out = path.join(outDir, 'passthrough_ll');
  const flags = execFileSync('pkg-config', ['fuse3', '--cflags', '--libs'], { encoding: 'utf8' }).trim().split(/\s+/);
  execFileSync('gcc', ['-O2', '-w', `-I${EXAMPLES_DIR}`, src, ...flags, '-o', out]);
  return out;
}

function unmount(mnt: string): void {
  spawnSync('umount', ['-l', mnt]);
}

function mounted(mnt: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);
}

async function waitMounted(mnt: string, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!mounted(mnt)) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`${mnt} did not get mounted`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function fmt(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1);
}

async function main(): Promise<void> {
  // Loaded here, not at the top: the metadata child process needs none of it.
  const { startEggsfs, tempDir } = await import('../test/helpers/proc.js');
  const { startCluster } = await import('../test/helpers/cluster.js');
  const mib = arg('mib', 1024);
  const files = arg('files', 10_000);
  const bytes = mib * 1024 * 1024;
  const tmp = tempDir('bench-fuse');
  const cleanups: (() => Promise<void> | void)[] = [];
  let cluster: TestCluster | undefined;
  let mount: Service | undefined;
  try {
    // A random source file: EggsFS stores all-zero spans as holes, so zeros would flatter it.
    const source = path.join(tmp.path, 'source');
    const fd = openSync(source, 'w');
    const chunk = randomBytes(8 << 20);
    for (let off = 0; off < bytes; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - off));
    closeSync(fd);

    const results: Record<string, Figures> = {};
    // Local disk: a fresh directory (ext4 under the temp dir).
    const local = path.join(tmp.path, 'local');
    mkdirSync(local);
    results.local = await measure('local disk', local, source, bytes, files);
    const localWalk = path.join(tmp.path, 'local-walk');
    mkdirSync(localWalk);
    await writeWalkFiles((name, data) => writeFile(path.join(localWalk, name), data), files);
    results.local.walk = await timeWalks('local disk', files, async () => ({ dir: localWalk, close: () => {} }));

    // passthrough_ll over another fresh local directory.
    const pt = buildPassthrough(tmp.path);
    if (pt) {
      const ptSrc = path.join(tmp.path, 'pt-src');
      const ptMnt = path.join(tmp.path, 'pt-mnt');
      mkdirSync(ptSrc);
      mkdirSync(ptMnt);
      const proc = spawn(pt, ['-f', '-o', `source=${ptSrc},allow_other`, ptMnt], { stdio: ['ignore', 'ignore', 'inherit'] });
      cleanups.push(() => {
        unmount(ptMnt);
        proc.kill('SIGTERM');
      });
      await waitMounted(ptMnt, 10_000);
      results.passthrough_ll = await measure('passthrough_ll', ptMnt, source, bytes, files);
      mkdirSync(path.join(ptSrc, 'walk'));
      await writeWalkFiles((name, data) => writeFile(path.join(ptSrc, 'walk', name), data), files);
      results.passthrough_ll.walk = await timeWalks('passthrough_ll', files, async () => ({ dir: path.join(ptMnt, 'walk'), close: () => {} }));
      unmount(ptMnt);
      proc.kill('SIGTERM');
    } else {
      process.stderr.write(`passthrough_ll: ${EXAMPLES_DIR}/passthrough_ll.c not found (apt-get install -y libfuse3-dev pkg-config gcc); skipped\n`);
    }

    // EggsFS.
    cluster = await startCluster({ blockServices: 3 });
    const mnt = path.join(tmp.path, 'eggs-mnt');
    mkdirSync(mnt);
    mount = startEggsfs(['mount', mnt, '--shuckle', cluster.shuckleUrl]);
    await mount.waitFor(/^ready mount /);
    results.eggsfs = await measure('eggsfs', mnt, source, bytes, files);
    results.client = await measureClient(cluster.shuckleUrl, source, bytes, files);
    {
      const { EggsClient } = await import('../src/client/index.js');
      const c = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl });
      try {
        const dirId = await c.mkdir('/walk');
        await writeWalkFiles(async (name, data) => {
          const w = c.createFile(dirId, name);
          await w.write(data);
          await w.close();
        }, files);
      } finally {
        await c.close();
      }
      // A fresh mount for each walk: nothing of the directory is cached in the kernel or the mount.
      const freshMnt = path.join(tmp.path, 'eggs-fresh');
      mkdirSync(freshMnt);
      results.eggsfs.walk = await timeWalks('eggsfs', files, async () => {
        const m = startEggsfs(['mount', freshMnt, '--shuckle', cluster!.shuckleUrl]);
        await m.waitFor(/^ready mount /);
        const close = async () => {
          await m.kill('SIGTERM');
          if (mounted(freshMnt)) unmount(freshMnt);
        };
        return { dir: path.join(freshMnt, 'walk'), close };
      });
    }

    const base = results.passthrough_ll;
    const e = results.eggsfs;
    const l = results.local;
    const rows: [string, (f: Figures) => number, string][] = [
      [`dd write ${mib} MiB, conv=fsync (MB/s)`, (f) => f.writeMBs, 'w'],
      [`dd cold read ${mib} MiB (MB/s)`, (f) => f.readMBs, 'r'],
    ];
    for (const [tag, c] of [
      ['1 at a time', 'meta1'],
      [`${IN_FLIGHT} in flight`, 'meta64'],
    ] as const) {
      for (const op of ['create', 'stat', 'list', 'remove']) rows.push([`${op} ${files} files, ${tag} (/s)`, (f) => f[c][op]!, op]);
    }
    for (const [name] of WALKS) rows.push([`${name}, ${files} files another client wrote, cold (/s)`, (f) => f.walk?.[name] ?? NaN, name]);
    const cl = results.client!;
    const lines = ['', `| work | local disk | passthrough_ll | EggsFS mount | EggsFS / passthrough_ll | client library, no FUSE | mount / client |`, '|---|---|---|---|---|---|---|'];
    for (const [name, get] of rows) {
      const ratio = base ? `${(get(e) / get(base)).toFixed(2)}×` : 'n/a';
      const client = Number.isNaN(get(cl)) ? ['—', '—'] : [fmt(get(cl)), `${(get(e) / get(cl)).toFixed(2)}×`];
      lines.push(`| ${name} | ${fmt(get(l))} | ${base ? fmt(get(base)) : 'n/a'} | ${fmt(get(e))} | ${ratio} | ${client[0]} | ${client[1]} |`);
    }
    lines.push(
      '',
      'Local disk and passthrough_ll source: fresh directories on the ext4 temp dir. EggsFS: `eggsfs run`, 3 block services, default parity;',
      '"client library" is the same work through EggsClient in this process (the cluster\'s own speed, what the mount can at best reach).',
    );
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    if (mount) await mount.kill('SIGTERM');
    for (const c of cleanups) await c();
    if (cluster) await cluster.destroy();
    tmp.remove();
  }
}

if (process.argv[2] === '--meta') {
  await metaWorkload(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5]));
} else {
  await main();
}
