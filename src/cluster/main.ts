// `eggsfs run <data-dir>`: a whole cluster on this machine in four child processes: shuckle, the
// block services (one process serving N directories), all 256 shards (one process) and the CDC.
// Startup order avoids the original's races (shards that fetched an incomplete block-service list,
// a CDC that does not know the shards yet): shuckle; block services until shuckle has verified all
// of them; shards until shuckle lists all 256; the CDC until shuckle lists it; then "ready".
//
// A child that dies while the cluster runs is reported with its exit status and last log lines,
// and `run` then stops the whole cluster and exits with status 1: a partial cluster that looks
// healthy is worse than a clear stop (the data directory is intact; run it again).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BLOCK_BASE_PORT, CDC_PORT, SHARD_BASE_PORT, SHUCKLE_HTTP_PORT, SHUCKLE_UDP_PORT } from '../proto/ports.js';
import { SHARD_COUNT } from '../proto/ids.js';
import { fetchBlockServices, fetchCdc, fetchShards } from '../client/shuckle.js';
import { UsageError, parseOptions } from '../util/args.js';
import { announceReady } from '../util/log.js';
import type { MountHandle } from '../fuse/index.js';
import { EXIT_WITH_PARENT_ENV } from '../util/lifecycle.js';

const EGGSFS_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/eggsfs.js');
const SECRET_FILE = 'cluster.secret';
const SECRET_BYTES = 16;
const STARTUP_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 10_000;
const POLL_MS = 100;
const LOG_TAIL_LINES = 15;
const MAX_BLOCK_SERVICES = 64;
// On one machine a dead block service should leave the write path within seconds, not the
// original's 10 minutes: shuckle checks every service this often and calls one stale after
// STALE_MS without an answer (longer than a check pass with a hung service, ~3 s), and the shards
// re-read the list this often, so writers fail over to live services quickly.
const SHUCKLE_CHECK_PERIOD_MS = 2_000;
const BLOCK_SERVICE_STALE_MS = 10_000;
const SHARD_SHUCKLE_POLL_MS = 2_000;
/** Ports above 1024 that browsers will not load pages from (the fetch standard's "bad ports"). */
const BROWSER_UNSAFE_PORTS = new Set([1719, 1720, 1723, 2049, 3659, 4045, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6697, 10080]);

const USAGE = `usage: eggsfs run DATA_DIR [options]

Starts a whole EggsFS cluster on this machine: shuckle (registry and web page), the CDC, N block
services and all ${SHARD_COUNT} metadata shards, keeping everything in DATA_DIR (created if missing).
Run it again on the same DATA_DIR to serve everything written before. Ctrl-C stops it.

options:
  --block-services N     number of block services (default 10; also --block_services)
  --bind ADDR            address every service listens on (default 127.0.0.1)
  --port-offset K        add K to every default port (shuckle ${SHUCKLE_HTTP_PORT}, CDC ${CDC_PORT},
                         shards ${SHARD_BASE_PORT}+, blocks ${BLOCK_BASE_PORT}+), to run several clusters
  --shuckle-port P       shuckle HTTP port (its registration UDP port is the same number)
  --cdc-port P           CDC UDP port
  --shard-base-port P    shard s listens on UDP P+s
  --block-base-port P    block service i listens on TCP P+i
  --mount MNT            also mount the filesystem at MNT with FUSE (needs root and /dev/fuse)
  -v, --verbose          copy every service's log to stderr (they always go to DATA_DIR/logs/)
  --help                 show this help

If a service dies, run reports it and stops the whole cluster with exit status 1.
`;

interface RunOptions {
  dir: string;
  blockServices: number;
  bind: string;
  shucklePort: number;
  cdcPort: number;
  shardBasePort: number;
  blockBasePort: number;
  verbose: boolean;
  mount: string | undefined;
}

function parse(argv: string[]): RunOptions | null {
  const r = parseOptions(argv, {
    'block-services': { kind: 'int', min: 1, max: MAX_BLOCK_SERVICES, default: 10, aliases: ['--block_services'] },
    bind: { kind: 'string', default: '127.0.0.1' },
    'port-offset': { kind: 'int', min: 0, max: 20_000, default: 0 },
    'shuckle-port': { kind: 'int', min: 1, max: 65535 },
    'cdc-port': { kind: 'int', min: 1, max: 65535 },
    'shard-base-port': { kind: 'int', min: 1, max: 65535 - SHARD_COUNT },
    'block-base-port': { kind: 'int', min: 1, max: 65535 - MAX_BLOCK_SERVICES },
    mount: { kind: 'string' },
    verbose: { kind: 'flag', aliases: ['-v'] },
  }, { positionals: true, unknown: (a) => `unknown option ${a} (see eggsfs run --help)` });
  if (r.help) return null;
  const v = r.values;
  if (r.positionals.length > 1) throw new UsageError(`one data directory only (got ${r.positionals[0]} and ${r.positionals[1]})`);
  const dir = r.positionals[0];
  if (dir === undefined) throw new UsageError('missing DATA_DIR (see eggsfs run --help)');
  const offset = v['port-offset'];
  const blockServices = v['block-services'];
  const o: RunOptions = {
    dir: path.resolve(dir),
    blockServices,
    bind: v.bind,
    shucklePort: v['shuckle-port'] ?? SHUCKLE_HTTP_PORT + offset,
    cdcPort: v['cdc-port'] ?? CDC_PORT + offset,
    shardBasePort: v['shard-base-port'] ?? SHARD_BASE_PORT + offset,
    blockBasePort: v['block-base-port'] ?? BLOCK_BASE_PORT + offset,
    verbose: v.verbose,
    mount: v.mount === undefined ? undefined : path.resolve(v.mount),
  };
  for (const [k, p] of Object.entries({ shuckle: o.shucklePort, cdc: o.cdcPort, shards: o.shardBasePort + SHARD_COUNT - 1, blocks: o.blockBasePort + blockServices - 1 })) {
    if (p > 65535) throw new UsageError(`the ${k} port ${p} is above 65535 (lower --port-offset)`);
  }
  return o;
}

/** The cluster secret kept in DATA_DIR (hex), created on first run. */
function loadOrCreateSecret(dir: string): string {
  const file = path.join(dir, SECRET_FILE);
  if (existsSync(file)) {
    const hex = readFileSync(file, 'utf8').trim();
    if (!/^[0-9a-f]+$/i.test(hex) || hex.length < 2 * SECRET_BYTES) throw new Error(`${file} does not hold a hex secret of at least ${SECRET_BYTES} bytes`);
    return hex;
  }
  const hex = randomBytes(SECRET_BYTES).toString('hex');
  writeFileSync(file, hex + '\n', { mode: 0o600, flag: 'wx' });
  return hex;
}

class Child {
  readonly proc: ChildProcess;
  private readonly tail: string[] = [];
  private readyLine: string | undefined;
  private readyWaiters: ((l: string) => void)[] = [];
  exit: { code: number | null; signal: string | null } | undefined;
  private exitWaiters: (() => void)[] = [];

  constructor(
    readonly name: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    log: WriteStream,
    verbose: boolean,
  ) {
    // Own process group: a Ctrl-C on the terminal reaches only `run`, which then stops the
    // children in order (otherwise they would exit on their own and look like crashes).
    this.proc = spawn(process.execPath, [EGGSFS_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const onLines = (stream: NodeJS.ReadableStream, isStdout: boolean) => {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        const lines = (partial + d).split('\n');
        partial = lines.pop()!;
        for (const line of lines) {
          if (isStdout && this.readyLine === undefined && line.startsWith(`ready `)) {
            this.readyLine = line;
            for (const w of this.readyWaiters.splice(0)) w(line);
          }
          log.write(line + '\n');
          this.tail.push(line);
          if (this.tail.length > LOG_TAIL_LINES) this.tail.shift();
          if (verbose) process.stderr.write(`[${this.name}] ${line}\n`);
        }
      });
    };
    onLines(this.proc.stdout!, true);
    onLines(this.proc.stderr!, false);
    this.proc.on('exit', (code, signal) => {
      this.exit = { code, signal };
      for (const w of this.exitWaiters.splice(0)) w();
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  describeExit(): string {
    const e = this.exit;
    const how = !e ? 'is running' : e.signal ? `was killed by ${e.signal}` : `exited with status ${e.code}`;
    const tail = this.tail.filter((l) => l.trim()).slice(-5);
    return `${this.name} (pid ${this.pid}) ${how}${tail.length ? `; its last log lines:\n    ${tail.join('\n    ')}` : ''}`;
  }

  ready(timeoutMs: number): Promise<string> {
    if (this.readyLine !== undefined) return Promise.resolve(this.readyLine);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not say it was ready within ${timeoutMs} ms`)), timeoutMs);
      this.readyWaiters.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
      this.exited().then(() => {
        clearTimeout(timer);
        reject(new Error(`${this.describeExit()}`));
      });
    });
  }

  exited(): Promise<void> {
    if (this.exit) return Promise.resolve();
    return new Promise((r) => this.exitWaiters.push(r));
  }

  async stop(): Promise<void> {
    if (this.exit) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), STOP_GRACE_MS);
    await this.exited();
    clearTimeout(timer);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what: string, deadline: number, check: () => Promise<boolean>, children: Child[]): Promise<void> {
  let lastErr = '';
  while (Date.now() < deadline) {
    const dead = children.find((c) => c.exit);
    if (dead) throw new Error(dead.describeExit());
    try {
      if (await check()) return;
    } catch (err) {
      lastErr = (err as Error).message;
    }
    await sleep(POLL_MS);
  }
  throw new Error(`timed out waiting for ${what}${lastErr ? ` (${lastErr})` : ''}`);
}

export async function run(argv: string[]): Promise<number> {
  const o = parse(argv);
  if (!o) {
    process.stdout.write(USAGE);
    return 0;
  }
  const t0 = Date.now();
  mkdirSync(o.dir, { recursive: true });
  const logDir = path.join(o.dir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const secret = loadOrCreateSecret(o.dir);
  // Every child (services, and the mount) stops by itself if run is killed with SIGKILL.
  process.env[EXIT_WITH_PARENT_ENV] = '1';
  const env = { ...process.env, EGGSFS_CLUSTER_SECRET: secret };
  const host = o.bind === '0.0.0.0' ? '127.0.0.1' : o.bind;
  const shuckleUrl = `http://${host}:${o.shucklePort}`;
  const children: Child[] = [];
  let stopping = false;
  const logs: WriteStream[] = [];
  const start = (name: string, args: string[]) => {
    const log = createWriteStream(path.join(logDir, `${name}.log`), { flags: 'a' });
    logs.push(log);
    const c = new Child(name, args, env, log, o.verbose);
    children.push(c);
    return c;
  };
  let mount: MountHandle | undefined;
  const stopAll = async () => {
    stopping = true;
    // The mount first: it is a client of everything else.
    if (mount) await mount.unmount().catch((err) => process.stderr.write(`eggsfs run: unmounting ${o.mount}: ${(err as Error).message}\n`));
    // Clients' entry points first, the registry last.
    const order = ['cdc', 'shards', 'blocks', 'shuckle'];
    for (const name of order) await Promise.all(children.filter((c) => c.name === name).map((c) => c.stop()));
    for (const l of logs) l.end();
  };

  let finish: (code: number) => void = () => {};
  const finished = new Promise<number>((r) => (finish = r));
  const onSignal = (sig: string) => {
    if (stopping) return;
    process.stderr.write(`eggsfs run: ${sig}, stopping the cluster\n`);
    void stopAll().then(() => {
      process.stderr.write('eggsfs run: stopped\n');
      finish(0);
    });
  };
  // Whatever way this process ends, no child outlives it (they are in their own process groups).
  process.on('exit', () => {
    for (const c of children) if (!c.exit) c.proc.kill('SIGKILL');
  });
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  const blockDirs = [...Array(o.blockServices).keys()].map((i) => path.join(o.dir, `bs_${i}`));
  try {
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    const shuckle = start('shuckle', [
      'shuckle', '--dir', o.dir, '--http-port', String(o.shucklePort), '--udp-port', String(o.shucklePort), '--bind', o.bind,
      '--check-period-ms', String(SHUCKLE_CHECK_PERIOD_MS), '--stale-ms', String(BLOCK_SERVICE_STALE_MS),
    ]);
    await shuckle.ready(STARTUP_TIMEOUT_MS);
    const blocks = start('blocks', ['blocks', ...blockDirs.flatMap((d) => ['--dir', d]), '--base-port', String(o.blockBasePort), '--bind', o.bind, '--shuckle-udp', `${host}:${o.shucklePort}`]);
    await blocks.ready(STARTUP_TIMEOUT_MS);
    const so = { url: shuckleUrl, secret };
    await waitUntil(`shuckle to verify ${o.blockServices} block services`, deadline, async () => {
      const list = await fetchBlockServices(so);
      const ours = list.filter((b) => b.port >= o.blockBasePort && b.port < o.blockBasePort + o.blockServices && !b.is_stale);
      return ours.length >= o.blockServices;
    }, children);
    const shards = start('shards', ['shard', '--shards', `0-${SHARD_COUNT - 1}`, '--dir', o.dir, '--bind', o.bind, '--advertise-host', host, '--base-port', String(o.shardBasePort), '--shuckle', shuckleUrl, '--shuckle-poll-ms', String(SHARD_SHUCKLE_POLL_MS)]);
    await shards.ready(STARTUP_TIMEOUT_MS);
    // The CDC learns shard addresses from shuckle, so it starts once they are all registered.
    await waitUntil(`shuckle to list all ${SHARD_COUNT} shards`, deadline, async () => (await fetchShards(so)).length >= SHARD_COUNT, children);
    const cdc = start('cdc', ['cdc', '--dir', o.dir, '--port', String(o.cdcPort), '--bind', o.bind, '--advertise', host, '--shuckle', shuckleUrl]);
    await cdc.ready(STARTUP_TIMEOUT_MS);
    await waitUntil('shuckle to list the CDC', deadline, async () => (await fetchCdc(so)) !== null, children);
    if (o.mount) {
      const { mountEggsfs } = await import('../fuse/index.js');
      mount = await mountEggsfs(o.mount, { shuckleUrl });
      // The mount is a client: if it dies the cluster still serves, but the user must know.
      mount.process.on('exit', (code, signal) => {
        if (!stopping) process.stderr.write(`eggsfs run: the FUSE mount at ${o.mount} exited (${signal ?? `status ${code}`}); the cluster keeps serving\n`);
      });
    }
  } catch (err) {
    process.stderr.write(`eggsfs run: the cluster did not start: ${(err as Error).message}\n`);
    await stopAll();
    return 1;
  }
  if (stopping) return finished;

  // From here on, any child exit is unexpected unless we are stopping.
  for (const c of children) {
    void c.exited().then(() => {
      if (stopping) return;
      process.stderr.write(`eggsfs run: ${c.describeExit()}\neggsfs run: a service died, stopping the whole cluster (run it again on ${o.dir} to restart)\n`);
      void stopAll().then(() => finish(1));
    });
  }

  const pid = (n: string) => children.find((c) => c.name === n)?.pid;
  const lastBlockPort = o.blockBasePort + o.blockServices - 1;
  process.stdout.write(
    [
      `EggsFS cluster serving ${o.dir}`,
      `  shuckle     ${shuckleUrl}  (web page; block-service registrations on UDP ${o.shucklePort})  pid ${pid('shuckle')}`,
      `  cdc         UDP ${host}:${o.cdcPort}  pid ${pid('cdc')}`,
      `  shards      ${SHARD_COUNT} shards on UDP ${host}:${o.shardBasePort}-${o.shardBasePort + SHARD_COUNT - 1}  pid ${pid('shards')}`,
      `  blocks      ${o.blockServices} block services on TCP ${host}:${o.blockBasePort}-${lastBlockPort} (${path.join(o.dir, 'bs_N')})  pid ${pid('blocks')}`,
      ...(o.mount ? [`  mount       ${o.mount}  pid ${mount?.process.pid}`] : []),
      `  logs        ${logDir}/`,
      `Web page: ${shuckleUrl}/${BROWSER_UNSAFE_PORTS.has(o.shucklePort) ? `  (browsers refuse port ${o.shucklePort}: choose another --shuckle-port to view it)` : ''}`,
      `Try: EGGSFS_SHUCKLE=${shuckleUrl} eggsfs ls /     (Ctrl-C stops the cluster)`,
      '',
    ].join('\n'),
  );
  announceReady('run', {
    dir: o.dir,
    shuckle: shuckleUrl,
    cdc: `${host}:${o.cdcPort}`,
    shardBasePort: o.shardBasePort,
    blockBasePort: o.blockBasePort,
    blockServices: o.blockServices,
    startupMs: Date.now() - t0,
    mount: o.mount ?? null,
    pids: Object.fromEntries(children.map((c) => [c.name, c.pid])),
  });
  return finished;
}
