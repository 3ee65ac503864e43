// CDC benchmark: durable directory creations per second and cross-directory file renames per
// second with several clients, next to the shard file-creation rate (CONSTRUCT_FILE + LINK_FILE,
// no CDC involved) measured in the same run, and the same mkdirs from one client at a time (what
// the serial original could do at best).
//
//   node dist/bench/cdc.js [--clients 32] [--seconds 4] [--cdc-sync full|normal] [--shard-sync normal|full] [--cdc-stats]
//
// Starts one `eggsfs shard` process (256 shards) and one `eggsfs cdc` in a fresh temp dir on free
// ports; the load generator runs in this process.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { UdpTransport, type Address } from '../src/client/transport.js';
import { InodeType, ROOT_DIR_INODE_ID, shardOf } from '../src/proto/ids.js';

const HERE = fileURLToPath(import.meta.url);
const BIN = path.resolve(path.dirname(HERE), '../../bin/eggsfs.js');
const TRANSPORTS = 4;

function start(args: string[]): Promise<{ proc: ChildProcess; line: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith('ready '));
      if (line) resolve({ proc, line });
    });
    proc.on('exit', (code) => reject(new Error(`eggsfs ${args[0]} exited with ${code}`)));
  });
}

async function freePortBase(count: number): Promise<number> {
  const dgram = await import('node:dgram');
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * (40000 - count));
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      ok = await new Promise<boolean>((r) => {
        const s = dgram.createSocket('udp4');
        s.once('error', () => r(false));
        s.bind(base + i, '127.0.0.1', () => s.close(() => r(true)));
      });
    }
    if (ok) return base;
  }
}

/** Run `op(client, i)` in a loop on every client for `seconds`; returns completed ops per second. */
async function rate(clients: number, seconds: number, op: (client: number, i: number) => Promise<void>): Promise<{ perSec: number; errors: number }> {
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  let errors = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; Date.now() < deadline; i++) {
        try {
          await op(c, i);
          done++;
        } catch {
          errors++;
        }
      }
    }),
  );
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  return { perSec: done / secs, errors };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      clients: { type: 'string', default: '32' },
      seconds: { type: 'string', default: '4' },
      'cdc-sync': { type: 'string', default: 'full' },
      'shard-sync': { type: 'string', default: 'normal' },
      'cdc-stats': { type: 'boolean', default: false },
    },
  });
  const clients = Number(values.clients);
  const seconds = Number(values.seconds);
  const dir = mkdtempSync(path.join(process.env.EGGSFS_BENCH_TMP ?? os.tmpdir(), 'eggsfs-bench-cdc-'));
  const shardBase = await freePortBase(256);
  const shard = await start(['shard', '--shards', '0-255', '--dir', path.join(dir, 'shards'), '--bind', '127.0.0.1', '--base-port', String(shardBase), '--sync', values['shard-sync']!]);
  const cdcPort = await freePortBase(1);
  const cdc = await start([
    'cdc', '--dir', path.join(dir, 'cdc'), '--bind', '127.0.0.1', '--port', String(cdcPort),
    '--shard-host', '127.0.0.1', '--shard-base-port', String(shardBase), '--sync', values['cdc-sync']!,
    ...(values['cdc-stats'] ? ['--stats-ms', '1000'] : []),
  ]);
  const trs = Array.from({ length: TRANSPORTS }, () => new UdpTransport({ defaultTimeoutMs: 5_000, defaultAttempts: 3 }));
  const tr = (c: number) => trs[c % TRANSPORTS]!;
  const cdcAddr: Address = { host: '127.0.0.1', port: cdcPort };
  const shardAddr = (s: number): Address => ({ host: '127.0.0.1', port: shardBase + s });
  const B = (s: string) => Buffer.from(s);
  try {
    // Two directories per client, on different shards: files are made in `a` and moved to `b`.
    const dirsA: bigint[] = [];
    const dirsB: bigint[] = [];
    for (let c = 0; c < clients; c++) {
      dirsA.push((await tr(c).cdcRequest(cdcAddr, 'MAKE_DIRECTORY', { ownerId: ROOT_DIR_INODE_ID, name: B(`a${c}`) })).id);
      dirsB.push((await tr(c).cdcRequest(cdcAddr, 'MAKE_DIRECTORY', { ownerId: ROOT_DIR_INODE_ID, name: B(`b${c}`) })).id);
    }
    const files: bigint[][] = Array.from({ length: clients }, () => []);
    const createFile = async (c: number, i: number) => {
      const d = dirsA[c]!;
      const f = await tr(c).shardRequest(shardAddr(shardOf(d)), 'CONSTRUCT_FILE', { type: InodeType.FILE });
      await tr(c).shardRequest(shardAddr(shardOf(d)), 'LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: d, name: B(`f${i}`) });
      files[c]!.push(f.id);
    };
    const mkdir = async (c: number, i: number) => {
      await tr(c).cdcRequest(cdcAddr, 'MAKE_DIRECTORY', { ownerId: dirsA[c]!, name: B(`d${i}`) });
    };
    const serialMkdir = async (_c: number, i: number) => {
      await tr(0).cdcRequest(cdcAddr, 'MAKE_DIRECTORY', { ownerId: dirsB[0]!, name: B(`s${i}`) });
    };
    const rename = async (c: number, i: number) => {
      const f = files[c]![i];
      if (f === undefined) throw new Error('out of files');
      await tr(c).cdcRequest(cdcAddr, 'RENAME_FILE', { targetId: f, oldOwnerId: dirsA[c]!, oldName: B(`f${i}`), newOwnerId: dirsB[c]!, newName: B(`f${i}`) });
    };

    const fileRate = await rate(clients, seconds, createFile);
    const mkdirRate = await rate(clients, seconds, mkdir);
    const renameRate = await rate(clients, seconds, rename);
    const serialRate = await rate(1, Math.min(seconds, 2), serialMkdir);
    const fmt = (x: number) => x.toFixed(0).padStart(7);
    const ratio = (x: number) => `${(x / fileRate.perSec).toFixed(2)}×`;
    process.stdout.write(
      `CDC benchmark, ${clients} clients, ${seconds} s per phase, CDC sync=${values['cdc-sync']}, shard sync=${values['shard-sync']}, ${os.cpus().length} cores\n` +
        `  baseline: shard file creations (CONSTRUCT_FILE+LINK_FILE)  ${fmt(fileRate.perSec)} /s\n` +
        `  CDC mkdir (MAKE_DIRECTORY, 3 shard steps)                 ${fmt(mkdirRate.perSec)} /s   ${ratio(mkdirRate.perSec)} of baseline\n` +
        `  CDC cross-directory file rename (RENAME_FILE, 4 steps)    ${fmt(renameRate.perSec)} /s   ${ratio(renameRate.perSec)} of baseline\n` +
        `  CDC mkdir from one client at a time (serial)              ${fmt(serialRate.perSec)} /s   ${ratio(serialRate.perSec)} of baseline\n` +
        `  errors: files ${fileRate.errors}, mkdir ${mkdirRate.errors}, rename ${renameRate.errors}, serial ${serialRate.errors}\n`,
    );
  } finally {
    for (const t of trs) t.close();
    cdc.proc.kill('SIGTERM');
    shard.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
