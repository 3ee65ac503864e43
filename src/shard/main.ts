// `eggsfs shard`: one process hosting any set of shards, each with its own UDP socket (port
// base+shard) and its own SQLite database D/shard_NNN.sqlite. Block services come from shuckle.
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { fetchBlockServices, loadClusterSecret, registerShards, type BlockServiceEntry, type ShuckleClientOptions } from '../client/shuckle.js';
import { SHARD_BASE_PORT } from '../proto/ports.js';
import { UsageError, parseOptions, parseRange } from '../util/args.js';
import { announceReady, logger } from '../util/log.js';
import { type SyncMode } from './schema.js';
import { hostShards, shardDbPath } from './host.js';
import { newCommitCounters, startCheckpointer, type Checkpointer } from './checkpointer.js';
import { countWritable } from './registry.js';
import type { FromWorker, ToWorker } from './worker.js';

export const DEFAULT_SHUCKLE_POLL_MS = 60_000;
/** While shuckle has no block services (cluster starting), ask again this often. */
export const EMPTY_REGISTRY_POLL_MS = 1_000;
export const SHUCKLE_RETRY_MIN_MS = 200;
export const SHUCKLE_RETRY_MAX_MS = 5_000;
export const DEFAULT_REGISTER_MS = 10_000;
/** Worker threads hosting shard groups; more than the cores only adds memory. */
export const MAX_THREADS = 64;

const log = logger('shard');

const USAGE = `usage: eggsfs shard --dir D [options]

  --shards RANGE         shards to host, e.g. 0-255 or 0-3,7 (default 0-255)
  --dir D                directory of the databases D/shard_NNN.sqlite (created if missing)
  --bind ADDR            UDP bind address (default 0.0.0.0)
  --base-port N          shard s listens on N+s (default ${SHARD_BASE_PORT})
  --advertise-host H     address registered with shuckle (default: the bind address, or this
                         machine's first non-loopback IPv4 when binding 0.0.0.0)
  --shuckle URL          shuckle's HTTP address; without it there are no block services
  --secret-file F        cluster secret (hex); EGGSFS_CLUSTER_SECRET takes precedence
  --shuckle-poll-ms N    block-service refresh period (default ${DEFAULT_SHUCKLE_POLL_MS})
  --register-ms N        shard registration period (default ${DEFAULT_REGISTER_MS})
  --threads N            host the shards on N threads (shard s on thread s mod N), each with
                         its own event loop, sockets and databases (default 1)
  --sync normal|full     SQLite synchronous mode (default normal: answered requests survive
                         kill -9; full: they also survive power loss, at one fsync per batch)
`;

interface Options {
  shards: number[];
  dir: string;
  bind: string;
  basePort: number;
  advertiseHost: string | undefined;
  shuckle: string | undefined;
  secretFile: string | undefined;
  pollMs: number;
  registerMs: number;
  sync: SyncMode;
  threads: number;
}

function parseArgs(argv: string[]): Options | 'help' {
  const r = parseOptions(argv, {
    shards: { kind: 'string', default: '0-255' },
    dir: { kind: 'string', default: '' },
    bind: { kind: 'string', default: '0.0.0.0' },
    'base-port': { kind: 'int', min: 0, max: 65535, default: SHARD_BASE_PORT },
    'advertise-host': { kind: 'string' },
    shuckle: { kind: 'string' },
    'secret-file': { kind: 'string' },
    'shuckle-poll-ms': { kind: 'int', min: 10, max: 24 * 3600_000, default: DEFAULT_SHUCKLE_POLL_MS },
    'register-ms': { kind: 'int', min: 10, max: 24 * 3600_000, default: DEFAULT_REGISTER_MS },
    threads: { kind: 'int', min: 1, max: MAX_THREADS, default: 1 },
    sync: { kind: 'string', default: 'normal', choices: ['normal', 'full'] },
  }, { unknown: (a) => `unknown option "${a}"\n\n${USAGE}` });
  if (r.help) return 'help';
  const v = r.values;
  const o: Options = {
    shards: parseRange(v.shards, 0, 255),
    dir: v.dir,
    bind: v.bind,
    basePort: v['base-port'],
    advertiseHost: v['advertise-host'],
    shuckle: v.shuckle,
    secretFile: v['secret-file'],
    pollMs: v['shuckle-poll-ms'],
    registerMs: v['register-ms'],
    sync: v.sync,
    threads: v.threads,
  };
  if (!o.dir) throw new UsageError(`--dir is required\n\n${USAGE}`);
  if (o.basePort + o.shards[o.shards.length - 1]! > 65535) throw new UsageError(`--base-port ${o.basePort} puts shard ports above 65535`);
  return o;
}

function defaultAdvertiseHost(bind: string): string {
  if (bind !== '0.0.0.0') return bind;
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

export async function run(argv: string[]): Promise<number | void> {
  const opts = parseArgs(argv);
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    mkdirSync(opts.dir, { recursive: true });
  } catch (err) {
    log.error(`cannot use --dir ${opts.dir}: ${(err as Error).message}`);
    return 1;
  }
  const secret = await loadClusterSecret(opts.secretFile);
  if (opts.shuckle && !secret) log.warn('no cluster secret (EGGSFS_CLUSTER_SECRET or --secret-file): shuckle will not send block-service keys, so block-backed spans cannot be written');

  let groups: Group[] = [];
  let checkpointer: Checkpointer;
  const commitCounters = newCommitCounters();
  try {
    groups = await startGroups(opts, commitCounters);
    // After the groups: their connections have created the databases and set WAL mode.
    checkpointer = await startCheckpointer(
      opts.shards.map((shard) => ({ shard, path: shardDbPath(opts.dir, shard) })),
      opts.sync,
      commitCounters,
      log,
    );
  } catch (err) {
    log.error((err as Error).message);
    // Shards already serving would keep the process alive with their sockets bound.
    await Promise.all(groups.map((g) => g.stop().catch(() => undefined)));
    return 1;
  }

  let stopping = false;
  const stop = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    const total: Record<string, number> = {};
    // First: its connections must be closed before the shards' own, so that each shard's last
    // connection to close copies the rest of its WAL and removes it.
    const ck = await checkpointer.stop();
    for (const st of await Promise.all(groups.map((g) => g.stop().catch(() => ({}) as Record<string, number>)))) {
      for (const [k, v] of Object.entries(st)) total[k] = (total[k] ?? 0) + v;
    }
    log.info(
      `${sig}: closed ${opts.shards.length} shards; served ${total.received ?? 0} datagrams (${total.dropped ?? 0} dropped for a full queue, ` +
        `${total.internalErrors ?? 0} internal errors), ${total.commits ?? 0} commits of ${((total.committedRequests ?? 0) / Math.max(1, total.commits ?? 0)).toFixed(1)} requests on average; ` +
        `${ck?.checkpoints ?? 0} checkpoints off the request path (${ck?.failures ?? 0} failed, longest ${(ck?.maxCheckpointMs ?? 0).toFixed(1)} ms)`,
    );
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  const advertiseHost = opts.advertiseHost ?? defaultAdvertiseHost(opts.bind);
  if (opts.shuckle) {
    const shuckle = secret ? { url: opts.shuckle, secret } : { url: opts.shuckle };
    void pollBlockServices(shuckle, groups, opts.pollMs, () => stopping);
    void registerLoop(shuckle, opts, advertiseHost, () => stopping);
  }

  announceReady('shard', {
    shards: opts.shards.length,
    first: opts.shards[0],
    last: opts.shards[opts.shards.length - 1],
    threads: groups.length,
    bind: opts.bind,
    basePort: opts.basePort,
    advertiseHost,
    dir: opts.dir,
    sync: opts.sync,
    pid: process.pid,
  });
  await new Promise<void>(() => {
    /* serve until a signal */
  });
}

/** A group of shards on one thread: this one, or a worker. */
interface Group {
  apply(entries: BlockServiceEntry[]): Promise<void>;
  stop(): Promise<Record<string, number>>;
}

async function startGroups(opts: Options, commitCounters: SharedArrayBuffer): Promise<Group[]> {
  const host = (shards: number[]) => ({ shards, dir: opts.dir, bind: opts.bind, basePort: opts.basePort, sync: opts.sync, commitCounters });
  const threads = Math.min(opts.threads, opts.shards.length);
  if (threads <= 1) {
    const h = await hostShards(host(opts.shards), log);
    return [
      {
        apply: async (entries) => h.applyBlockServices(entries),
        stop: async () => {
          const st = h.stats();
          h.close();
          return { ...st };
        },
      },
    ];
  }
  // Shard s goes to thread s mod N, so that load spread over shards is spread over threads.
  const parts: number[][] = Array.from({ length: threads }, () => []);
  opts.shards.forEach((s, i) => parts[i % threads]!.push(s));
  const groups = await Promise.all(
    parts.map(
      (shards) =>
        new Promise<Group>((resolve, reject) => {
          const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: host(shards) });
          let seq = 0;
          const acks = new Map<number, () => void>();
          let onStopped: ((st: Record<string, number>) => void) | undefined;
          w.on('message', (m: FromWorker) => {
            if (m.type === 'ready') resolve(group);
            else if (m.type === 'failed') reject(new Error(m.message));
            else if (m.type === 'applied') acks.get(m.seq)?.();
            else if (m.type === 'stopped') onStopped?.(m.stats);
          });
          w.on('error', (err) => {
            // A shard thread that dies takes the process down: no half-alive shard set.
            log.error(`shard thread for shards ${shards[0]}.. failed: ${err.stack ?? err.message}`);
            process.exit(1);
          });
          const group: Group = {
            apply: (entries) =>
              new Promise<void>((res) => {
                const n = ++seq;
                acks.set(n, () => {
                  acks.delete(n);
                  res();
                });
                w.postMessage({ type: 'blockServices', entries, seq: n } satisfies ToWorker);
              }),
            stop: () =>
              new Promise((res) => {
                onStopped = res;
                w.postMessage({ type: 'stop' } satisfies ToWorker);
              }),
          };
        }),
    ),
  );
  return groups;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/**
 * Block services from shuckle: at start (retrying with backoff until it answers, while requests
 * that need no block service are served), then every pollMs, more often while the list is empty.
 */
async function pollBlockServices(shuckle: ShuckleClientOptions, groups: Group[], pollMs: number, stopped: () => boolean): Promise<void> {
  let lastJson = '';
  let retryMs = SHUCKLE_RETRY_MIN_MS;
  let failures = 0;
  while (!stopped()) {
    let delayMs: number;
    try {
      const entries: BlockServiceEntry[] = await fetchBlockServices(shuckle);
      const json = JSON.stringify(entries);
      if (json !== lastJson && !stopped()) {
        await Promise.all(groups.map((g) => g.apply(entries)));
        log.info(`block services from ${shuckle.url}: ${entries.length} listed, ${countWritable(entries)} writable`);
        lastJson = json;
      }
      if (failures > 0) log.info(`shuckle at ${shuckle.url} answers again`);
      failures = 0;
      retryMs = SHUCKLE_RETRY_MIN_MS;
      delayMs = entries.length === 0 ? Math.min(pollMs, EMPTY_REGISTRY_POLL_MS) : pollMs;
    } catch (err) {
      // Log the first failure and then every tenth, so a missing shuckle does not flood the log.
      if (failures % 10 === 0) log.warn(`cannot fetch block services: ${(err as Error).message}`);
      failures++;
      delayMs = retryMs;
      retryMs = Math.min(retryMs * 2, SHUCKLE_RETRY_MAX_MS);
    }
    await sleep(delayMs);
  }
}

async function registerLoop(shuckle: ShuckleClientOptions, opts: Options, advertiseHost: string, stopped: () => boolean): Promise<void> {
  const shards = opts.shards.map((id) => ({ id, ip: advertiseHost, port: opts.basePort + id }));
  let failures = 0;
  while (!stopped()) {
    try {
      await registerShards(shuckle, shards);
      if (failures > 0) log.info(`registered ${shards.length} shards with shuckle again`);
      failures = 0;
    } catch (err) {
      if (failures % 10 === 0) log.warn(`cannot register shards with shuckle: ${(err as Error).message}`);
      failures++;
    }
    await sleep(failures > 0 ? Math.min(opts.registerMs, SHUCKLE_RETRY_MAX_MS) : opts.registerMs);
  }
}
