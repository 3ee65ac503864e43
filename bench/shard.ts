// Shard benchmark: requests/s for LOOKUP, STAT, READ_DIR and file creation (CONSTRUCT_FILE +
// LINK_FILE) with many requests in flight, against one shard and spread over all 256, and in the
// same run a bare Node UDP echo server (the transport's ceiling) driven by the same load generator.
//
//   node dist/bench/shard.js [--seconds 1] [--repeats 3] [--in-flight 2048] [--clients 1] [--sync normal|full|both] [--threads N] [--only lookup,stat,readdir,create]
//
// The load generator runs in separate processes (this file with --client), so that the shard
// process has a core to itself on this 2-core machine.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UdpTransport } from '../src/client/transport.js';
import { encodeShardRequest } from '../src/proto/envelope.js';
import { ROOT_DIR_INODE_ID } from '../src/proto/ids.js';
import { AS_OF_NOW } from '../src/proto/time.js';

const HERE = fileURLToPath(import.meta.url);
const REPO = path.resolve(path.dirname(HERE), '../..');
const SHARDS = 256;
const FILES_PER_DIR = 10;
const RESEND_AFTER_MS = 500;

type Scenario = 'echo' | 'lookup' | 'stat' | 'readdir' | 'create';

interface ClientJob {
  scenario: Scenario;
  host: string;
  basePort: number;
  /** Shards to spread over: [0] for one shard, 0..255 for all. */
  shards: number[];
  dirs: string[]; // hex dir id per shard index
  inFlight: number;
  seconds: number;
  warmupSeconds: number;
  clientIndex: number;
}

interface ClientResult {
  done: number;
  errors: number;
  seconds: number;
}

// --- load generator (child process) ---

async function runClient(job: ClientJob): Promise<ClientResult> {
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const dirs = job.dirs.map((h) => BigInt(h));
  const nSlots = job.inFlight;
  const slotShard = new Int32Array(nSlots);
  const slotState = new Uint8Array(nSlots); // create: 0 = constructing, 1 = linking
  const slotSentAt = new Float64Array(nSlots);
  const slotBuf: Buffer[] = new Array(nSlots);
  let seq = 0;
  let counting = false;
  let done = 0;
  let errors = 0;
  let nameCounter = 0;
  const portOf = (shardIdx: number) => (job.scenario === 'echo' ? job.basePort : job.basePort + job.shards[shardIdx]!);

  const readRequest = (shardIdx: number): Buffer => {
    const dir = dirs[shardIdx]!;
    switch (job.scenario) {
      case 'lookup':
      case 'echo':
        return encodeShardRequest('LOOKUP', 0n, { dirId: dir, name: Buffer.from('file-3') });
      case 'stat':
        return encodeShardRequest('STAT', 0n, { id: dir });
      case 'readdir':
        return encodeShardRequest('READ_DIR', 0n, { dirId: dir, startHash: 0n, asOfTime: AS_OF_NOW });
      default:
        return encodeShardRequest('CONSTRUCT_FILE', 0n, { type: 2 });
    }
  };
  // One prepared request per (slot), re-sent with a fresh request id each time.
  const send = (slot: number) => {
    const b = slotBuf[slot]!;
    seq = (seq + 1) >>> 0;
    b.writeUInt32LE(((seq << 16) | slot) >>> 0, 4);
    b.writeUInt32LE(job.clientIndex, 8);
    slotSentAt[slot] = performance.now();
    sock.send(b, portOf(slotShard[slot]!), job.host);
  };
  const nextShard = (slot: number) => {
    slotShard[slot] = (slotShard[slot]! + nSlots) % job.shards.length;
  };
  const constructBuf = encodeShardRequest('CONSTRUCT_FILE', 0n, { type: 2 });
  const startSlot = (slot: number) => {
    if (job.scenario === 'create') {
      slotState[slot] = 0;
      slotBuf[slot] = Buffer.from(constructBuf);
    } else {
      slotBuf[slot] = readRequest(slotShard[slot]!);
    }
    send(slot);
  };
  sock.on('message', (m) => {
    if (m.length < 13) return;
    const slot = m.readUInt32LE(4) & 0xffff;
    if (slot >= nSlots) return;
    if (((m.readUInt32LE(4) >>> 16) & 0xffff) !== (((slotBuf[slot]!.readUInt32LE(4) >>> 16) & 0xffff))) return; // stale answer
    const isErr = m[12] === 0;
    if (job.scenario === 'create' && slotState[slot] === 0 && !isErr) {
      // CONSTRUCT_FILE answered: link it.
      const fileId = m.readBigUInt64LE(13);
      const cookie = m.readBigUInt64LE(21);
      slotState[slot] = 1;
      slotBuf[slot] = encodeShardRequest('LINK_FILE', 0n, { fileId, cookie, ownerId: dirs[slotShard[slot]!]!, name: Buffer.from(`c${job.clientIndex}-${nameCounter++}`) });
      send(slot);
      return;
    }
    if (counting) {
      if (isErr && job.scenario !== 'echo') errors++;
      else done++;
    }
    nextShard(slot);
    startSlot(slot);
  });
  for (let s = 0; s < nSlots; s++) {
    slotShard[s] = s % job.shards.length;
    startSlot(s);
  }
  const resend = setInterval(() => {
    const now = performance.now();
    for (let s = 0; s < nSlots; s++) if (now - slotSentAt[s]! > RESEND_AFTER_MS) send(s);
  }, RESEND_AFTER_MS / 2);
  await new Promise((r) => setTimeout(r, job.warmupSeconds * 1000));
  counting = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, job.seconds * 1000));
  counting = false;
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(resend);
  sock.close();
  return { done, errors, seconds };
}

// --- driver ---

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}

async function freeUdpBase(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 20000);
    const socks: dgram.Socket[] = [];
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      const s = dgram.createSocket('udp4');
      ok = await new Promise<boolean>((r) => {
        s.once('error', () => r(false));
        s.bind(base + i, '127.0.0.1', () => r(true));
      });
      socks.push(s);
    }
    for (const s of socks) s.close();
    if (ok) return base;
  }
  throw new Error('no free UDP port range');
}

function startProcess(args: string[]): Promise<ChildProcess> {
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (/^ready /m.test(out)) resolve(p);
    });
    p.on('exit', (c) => reject(new Error(`${args.join(' ')} exited with ${c}`)));
  });
}

async function runClients(job: Omit<ClientJob, 'clientIndex'>, clients: number): Promise<{ rate: number; errors: number }> {
  const results = await Promise.all(
    Array.from({ length: clients }, (_, i) => {
      const child = fork(HERE, ['--client'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      return new Promise<ClientResult>((resolve, reject) => {
        child.on('message', (m) => resolve(m as ClientResult));
        child.on('exit', (c) => (c === 0 ? undefined : reject(new Error(`client exited with ${c}`))));
        child.send({ ...job, inFlight: Math.max(1, Math.floor(job.inFlight / clients)), clientIndex: i });
      });
    }),
  );
  let rate = 0;
  let errors = 0;
  for (const r of results) {
    rate += r.done / r.seconds;
    errors += r.errors;
  }
  return { rate, errors };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function main(): Promise<void> {
  const seconds = Number(arg('seconds', '1'));
  const repeats = Number(arg('repeats', '3'));
  const inFlight = Number(arg('in-flight', '2048'));
  const clients = Number(arg('clients', '1'));
  const threads = Number(arg('threads', '1'));
  const syncArg = arg('sync', 'both');
  const syncModes = syncArg === 'both' ? ['normal', 'full'] : [syncArg];
  const warmupSeconds = 0.5;
  const rows: string[][] = [];
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

  // Ceiling: a bare Node UDP echo server in its own process, driven by the same load generator.
  // This machine is shared and noisy, so the ceiling is measured again right before every
  // scenario, and each ratio is against that adjacent measurement.
  const echoPort = await freeUdpBase(1);
  const echo = await startProcess([
    '-e',
    `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(m,r.port,r.address));s.bind(${echoPort},'127.0.0.1',()=>console.log('ready echo'))`,
  ]);
  const base = { host: '127.0.0.1', inFlight, seconds, warmupSeconds };
  const echoRates: number[] = [];
  const measureEcho = async () => {
    const r = (await runClients({ ...base, scenario: 'echo', basePort: echoPort, shards: [0], dirs: ['0'] }, clients)).rate;
    echoRates.push(r);
    return r;
  };
  try {
    await runAll();
  } finally {
    echo.kill('SIGTERM');
  }

  async function runAll(): Promise<void> {
  console.log(`UDP echo ceiling (bare Node server, ${inFlight} in flight, ${clients} client process(es)): ${fmt(await measureEcho())} req/s`);

  for (const sync of syncModes) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'eggsfs-bench-shard-'));
    const basePort = await freeUdpBase(SHARDS);
    const shard = await startProcess([...(process.env.EGGSFS_BENCH_SHARD_NODE_ARGS ?? '').split(' ').filter(Boolean), path.join(REPO, 'bin', 'eggsfs.js'), 'shard', '--shards', `0-${SHARDS - 1}`, '--dir', dir, '--bind', '127.0.0.1', '--base-port', String(basePort), '--sync', sync, '--threads', String(threads)]);
    try {
      // One directory per shard (the root for shard 0), each with a few files.
      const t = new UdpTransport({ defaultTimeoutMs: 5000, defaultAttempts: 5, maxInFlight: 256 });
      const dirs: bigint[] = [];
      for (let s = 0; s < SHARDS; s++) dirs.push(s === 0 ? ROOT_DIR_INODE_ID : ROOT_DIR_INODE_ID | (1n << 8n) | BigInt(s));
      const at = (s: number) => ({ host: '127.0.0.1', port: basePort + s });
      await Promise.all(
        dirs.map(async (d, s) => {
          if (s > 0) await t.shardRequest(at(s), 'CREATE_DIRECTORY_INODE', { id: d, ownerId: ROOT_DIR_INODE_ID, opaque: Buffer.alloc(0) });
          for (let i = 0; i < FILES_PER_DIR; i++) {
            const f = await t.shardRequest(at(s), 'CONSTRUCT_FILE', { type: 2 });
            await t.shardRequest(at(s), 'LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: d, name: Buffer.from(`file-${i}`) });
          }
        }),
      );
      t.close();
      const hex = dirs.map((d) => '0x' + d.toString(16));
      const only = arg('only', '');
      const scenarios: Scenario[] = only ? (only.split(',') as Scenario[]) : sync === syncModes[0] ? ['lookup', 'stat', 'readdir', 'create'] : ['create'];
      for (const scenario of scenarios) {
        for (const spread of [1, SHARDS]) {
          const shards = Array.from({ length: spread }, (_, i) => i);
          // Alternate short echo and scenario windows and keep the best of each: other load on
          // the machine only ever lowers a rate, so the maxima are the least disturbed figures.
          let echoRate = 0;
          const r = { rate: 0, errors: 0 };
          // Each window's ratio to the echo window just before it, for medians and ranges.
          const windowRatios: number[] = [];
          const requestsEach = scenario === 'create' ? 2 : 1;
          for (let rep = 0; rep < repeats; rep++) {
            const e = await measureEcho();
            echoRate = Math.max(echoRate, e);
            const x = await runClients({ ...base, scenario, basePort, shards, dirs: hex.slice(0, spread) }, clients);
            r.rate = Math.max(r.rate, x.rate);
            r.errors += x.errors;
            windowRatios.push((requestsEach * x.rate) / e);
          }
          const what = scenario === 'create' ? `file creations (CONSTRUCT_FILE+LINK_FILE), sync=${sync}` : `${scenario.toUpperCase()}`;
          const ratio = (requestsEach * r.rate) / echoRate;
          const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
          const windows = `${pct(median(windowRatios))} (${pct(Math.min(...windowRatios))}–${pct(Math.max(...windowRatios))})`;
          rows.push([what, spread === 1 ? '1 shard' : `${SHARDS} shards`, fmt(r.rate), fmt(echoRate), `${pct(ratio)}${scenario === 'create' ? ' (2 requests each)' : ''}`, windows, String(r.errors)]);
          console.log(rows[rows.length - 1]!.join(' | '));
        }
      }
    } finally {
      shard.kill('SIGTERM');
      await new Promise((r) => shard.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log(`\necho ceiling over the run: min ${fmt(Math.min(...echoRates))}, max ${fmt(Math.max(...echoRates))} req/s`);
  console.log(`\n(best of ${repeats} alternating ${seconds}-s windows per row, and each window against the echo window before it; ${inFlight} requests in flight)`);
  console.log(`\n| operation | target | per second | echo ceiling (same windows) | ratio | ratio per window: median (range) | errors |\n|---|---|---|---|---|---|---|`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  }
}

if (process.argv.includes('--client')) {
  process.once('message', (job) => {
    void runClient(job as ClientJob).then((r) => {
      process.send!(r, () => process.exit(0));
    });
  });
} else {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
