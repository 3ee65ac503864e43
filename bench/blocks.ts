// Block-service throughput: write and fetch MiB/s for 1, 10 and ~100 MiB blocks with 1 and 8
// concurrent clients, against a real `eggsfs blocks` process on a fresh directory, and in the same
// run the disk's own figures for the same block sizes with dd:
//   write: dd if=/dev/zero of=F bs=S count=K oflag=dsync     (every S-byte block synced: the
//          ratio's baseline, since every block is acknowledged only once durable)
//          and dd ... conv=fdatasync (the same total synced once at the end: the disk's streaming
//          write, shown for reference)
//   fetch: fetchInto with one reused block-sized buffer per client (a streaming consumer with
//          bounded memory, as dd and cat reuse theirs); fetchChunks (fresh receive memory per
//          block) in a second column against the same cat baseline
//   read:  dd if=F of=/dev/null bs=S, with F's page cache dropped first (cold, like our fetch),
//          dd iflag=direct bs=1M (the disk without the page cache's readahead), and `cat` of the
//          very block files our service stored, cold, with as many cat processes as clients (the
//          same files and syscalls as our fetch, without the network: its ceiling)
// Before each fetch phase the blocks' page cache is dropped too (dd oflag=nocache), so fetches
// read the disk rather than memory. "client CPU" is this process's user+system seconds per GiB
// fetched with fetchInto (the service's CPU is not counted).
//
// With 1 client, the same writes and cold fetchInto runs again on one pipelined connection
// (BlockClient.pipeline) with each of `depths` requests in flight (fresh block ids, the fetch
// reusing `depth` buffers), against the same rep's dd dsync and cat baselines; the one-at-a-time
// figures above stay. A service that answers one request at a time makes this no faster; one that
// reads the next request while the previous commits lets transfers overlap commits (ours works
// on up to 4 requests per connection; depth 8 keeps the next ones already at its socket).
//
// Each figure is the median of `reps` alternating runs of ours and the disk's, with the range;
// ratios are of medians.
//
//   node dist/bench/blocks.js [--dir BASE] [--total-mib 256] [--sizes 1,10,max] [--clients 1,8] [--reps 3] [--depths 2,4,8]
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlockClient } from '../src/client/blocks.js';
import { blockRelativePath, MAX_BLOCK_BYTES } from '../src/proto/blockwire.js';
import { blockWriteCertificate } from '../src/proto/crypto.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';
import { eggsNow } from '../src/proto/time.js';

const MiB = 1 << 20;
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

const baseDir = arg('dir', os.tmpdir());
const totalMiB = Number(arg('total-mib', '256'));
// 100 MiB is above the protocol's MAX_BLOCK_BYTES (100,000,000 bytes, the original's
// MAX_OBJECT_SIZE), so the largest case is that limit, 95.4 MiB.
const sizesMiB = arg('sizes', '1,10,max')
  .split(',')
  .map((x) => (x === 'max' ? MAX_BLOCK_BYTES / MiB : Number(x)));
const clientCounts = arg('clients', '1,8').split(',').map(Number);
const reps = Number(arg('reps', '3'));
const depths = arg('depths', '2,4,8')
  .split(',')
  .filter((x) => x !== '')
  .map(Number);

function dropCache(file: string): void {
  spawnSync('dd', [`of=${file}`, 'oflag=nocache', 'conv=notrunc,fdatasync', 'count=0', 'status=none']);
}

/** Runs dd and returns MiB/s from the bytes and seconds it reports. */
function dd(args: string[]): number {
  const r = spawnSync('dd', args, { encoding: 'utf8' });
  const m = /(\d+) bytes .* copied, ([\d.]+) s/.exec(r.stderr);
  if (!m) throw new Error(`dd ${args.join(' ')}: ${r.stderr}`);
  return Number(m[1]) / MiB / Number(m[2]);
}

function diskBaseline(dir: string, sizeBytes: number, count: number): { writeMiBs: number; streamWriteMiBs: number; readMiBs: number; directReadMiBs: number } {
  const f = path.join(dir, `dd-${sizeBytes}`);
  const streamWriteMiBs = dd(['if=/dev/zero', `of=${f}`, `bs=${sizeBytes}`, `count=${count}`, 'conv=fdatasync']);
  fs.rmSync(f);
  const writeMiBs = dd(['if=/dev/zero', `of=${f}`, `bs=${sizeBytes}`, `count=${count}`, 'oflag=dsync']);
  dropCache(f);
  const readMiBs = dd([`if=${f}`, 'of=/dev/null', `bs=${sizeBytes}`]);
  // O_DIRECT needs aligned sizes: 1 MiB requests, the same total.
  const directReadMiBs = dd([`if=${f}`, 'of=/dev/null', `bs=${MiB}`, 'iflag=direct']);
  fs.rmSync(f);
  return { writeMiBs, streamWriteMiBs, readMiBs, directReadMiBs };
}

/** MiB/s of `cat` reading `files` cold, split over `readers` parallel processes. */
function catFiles(files: string[], readers: number, totalBytes: number): number {
  for (const f of files) dropCache(f);
  const per = Math.ceil(files.length / readers);
  const t0 = process.hrtime.bigint();
  const r = spawnSync('sh', ['-c', `xargs -P ${readers} -n ${per} cat > /dev/null`], { input: files.join('\n') });
  if (r.status !== 0) throw new Error(`cat of the block files failed: ${r.stderr}`);
  return totalBytes / MiB / (Number(process.hrtime.bigint() - t0) / 1e9);
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[a.length >> 1]! : (a[a.length / 2 - 1]! + a[a.length / 2]!) / 2;
}

/** "median [min-max]" of MiB/s figures. */
function fig(xs: number[]): string {
  return `${median(xs).toFixed(0)} [${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}]`;
}

async function pool<T>(items: T[], workers: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** As pool, each worker with its own state (a buffer it reuses for every item). */
async function poolWith<T, S>(items: T[], workers: number, state: () => S, fn: (item: T, s: S) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      const s = state();
      while (next < items.length) await fn(items[next++]!, s);
    }),
  );
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(baseDir, 'eggsfs-bench-blocks-'));
  const storeDir = path.join(dir, 'store');
  const port = 20000 + Math.floor(Math.random() * 12000);
  const svc = spawn(process.execPath, [path.join(REPO, 'bin/eggsfs.js'), 'blocks', '--dir', storeDir, '--port', String(port), '--shuckle-udp', 'none'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, EGGSFS_LOG: 'warn' },
  });
  try {
    await new Promise<void>((resolve, reject) => {
      svc.stdout!.setEncoding('utf8').on('data', (d: string) => d.includes('ready blocks') && resolve());
      svc.on('exit', (c) => reject(new Error(`block service exited (${c})`)));
    });
    const key = fs.readFileSync(path.join(storeDir, 'secret.key'));
    const addr = { ip: '127.0.0.1', port };
    const client = new BlockClient();
    console.log(`block service benchmark: fresh directory ${dir} (${os.cpus().length} cores); ${totalMiB} MiB per case (at least one block per client), median [range] of ${reps} alternating runs; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    console.log('size     clients  write MiB/s        dd dsync write     ratio  dd fdatasync       fetchInto MiB/s    dd cold read       ratio  dd direct read     ratio  cat blocks         ratio  fetchChunks MiB/s  ratio  client CPU s/GiB');
    let idSeq = 0n;
    for (const sizeMiB of sizesMiB) {
      const size = Math.min(MAX_BLOCK_BYTES, Math.round(sizeMiB * MiB));
      const data = Buffer.allocUnsafe(size);
      for (let i = 0; i < size; i += 4096) data.writeUInt32LE((i * 2654435761) >>> 0, i);
      const crc = crc32c(data);
      for (const clients of clientCounts) {
        const count = Math.max(clients, Math.ceil(totalMiB / sizeMiB));
        // Alternating runs of ours and the disk's: the machine's load swings, so each baseline
        // is measured right next to the figure it is compared with.
        const w: number[] = [];
        const f: number[] = [];
        const bw: number[] = [];
        const br: number[] = [];
        const bd: number[] = [];
        const bs: number[] = [];
        const bc: number[] = [];
        const fc: number[] = [];
        const cpu: number[] = [];
        // Per pipeline depth (1 client only): write and cold fetchInto MiB/s.
        const pw = depths.map(() => [] as number[]);
        const pf = depths.map(() => [] as number[]);
        // Distinct ids, spread over the shard sub-directories like real ones.
        const newIds = () => Array.from({ length: count }, (_, i) => (((eggsNow() >> 8n) + (idSeq += 1n)) << 8n) | BigInt(i & 0xff));
        const cert = (id: bigint) => blockWriteCertificate(key, id, crcToBytes(crc), size);
        const removeBlocks = (ids: bigint[]) => {
          for (const id of ids) fs.rmSync(path.join(storeDir, blockRelativePath(id)), { force: true });
        };
        for (let rep = 0; rep < reps; rep++) {
          const ids = newIds();
          const t0 = process.hrtime.bigint();
          await pool(ids, clients, async (id) => {
            await client.write(addr, id, crc, data, cert(id));
          });
          const writeS = Number(process.hrtime.bigint() - t0) / 1e9;
          for (const id of ids) dropCache(path.join(storeDir, blockRelativePath(id)));
          // fetchInto, each worker reusing one block-sized buffer: a streaming consumer with
          // bounded memory (as dd and cat reuse theirs); no copy, no page faults on fresh memory.
          const t1 = process.hrtime.bigint();
          const cpu0 = process.cpuUsage();
          await poolWith(ids, clients, () => Buffer.alloc(size), async (id, dest) => {
            if ((await client.fetchInto(addr, id, dest)) !== size) throw new Error('short fetch');
          });
          const fetchS = Number(process.hrtime.bigint() - t1) / 1e9;
          const cpuUsed = process.cpuUsage(cpu0);
          cpu.push((cpuUsed.user + cpuUsed.system) / 1e6 / ((count * size) / 2 ** 30));
          for (const id of ids) dropCache(path.join(storeDir, blockRelativePath(id)));
          // fetchChunks: fresh receive memory for every block (what the file reader used).
          const t2 = process.hrtime.bigint();
          await pool(ids, clients, async (id) => {
            const got = await client.fetchChunks(addr, id);
            if (got.reduce((a, c) => a + c.length, 0) !== size) throw new Error('short fetch');
          });
          const chunksS = Number(process.hrtime.bigint() - t2) / 1e9;
          if (clients === 1) {
            for (const [di, depth] of depths.entries()) {
              const pids = newIds();
              const certs = pids.map(cert);
              const conn = await client.pipeline(addr, { depth });
              const t3 = process.hrtime.bigint();
              await Promise.all(pids.map((id, i) => conn.write(id, crc, data, certs[i]!)));
              pw[di]!.push((count * size) / MiB / (Number(process.hrtime.bigint() - t3) / 1e9));
              for (const id of pids) dropCache(path.join(storeDir, blockRelativePath(id)));
              // Request i reuses request i-depth's buffer: it is sent only once that one is answered.
              const dests = Array.from({ length: depth }, () => Buffer.alloc(size));
              const t4 = process.hrtime.bigint();
              await Promise.all(
                pids.map(async (id, i) => {
                  if ((await conn.fetchInto(id, dests[i % depth]!)) !== size) throw new Error('short fetch');
                }),
              );
              pf[di]!.push((count * size) / MiB / (Number(process.hrtime.bigint() - t4) / 1e9));
              conn.close();
              removeBlocks(pids);
            }
          }
          const files = ids.map((id) => path.join(storeDir, blockRelativePath(id)));
          bc.push(catFiles(files, clients, count * size));
          const base = diskBaseline(dir, size, count);
          w.push((count * size) / MiB / writeS);
          f.push((count * size) / MiB / fetchS);
          fc.push((count * size) / MiB / chunksS);
          bw.push(base.writeMiBs);
          br.push(base.readMiBs);
          bd.push(base.directReadMiBs);
          bs.push(base.streamWriteMiBs);
          // Remove this run's blocks so the directory stays small and fresh.
          removeBlocks(ids);
        }
        const ratio = (a: number[], b: number[]) => (median(a) / median(b)).toFixed(2).padStart(5);
        console.log(
          `${sizeMiB.toFixed(sizeMiB % 1 ? 1 : 0).padStart(4)} MiB ${String(clients).padStart(7)}  ${fig(w).padEnd(17)}  ${fig(bw).padEnd(17)}  ${ratio(w, bw)}  ${fig(bs).padEnd(17)}  ${fig(f).padEnd(17)}  ${fig(br).padEnd(17)}  ${ratio(f, br)}  ${fig(bd).padEnd(17)}  ${ratio(f, bd)}  ${fig(bc).padEnd(17)}  ${ratio(f, bc)}  ${fig(fc).padEnd(17)}  ${ratio(fc, bc)}  ${median(cpu).toFixed(2)} [${Math.min(...cpu).toFixed(2)}-${Math.max(...cpu).toFixed(2)}]`,
        );
        for (const [di, depth] of depths.entries()) {
          if (clients !== 1) break;
          console.log(
            `${''.padStart(8)} 1, depth ${String(depth).padStart(2)}  ${fig(pw[di]!).padEnd(17)}  (vs dd dsync)      ${ratio(pw[di]!, bw)}  (one at a time ${ratio(pw[di]!, w)}x)  fetchInto ${fig(pf[di]!).padEnd(17)}  vs cat ${ratio(pf[di]!, bc)}  (one at a time ${ratio(pf[di]!, f)}x)`,
          );
        }
      }
    }
    console.log(`load average at the end: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    client.close();
  } finally {
    svc.kill('SIGTERM');
    await new Promise((r) => svc.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
