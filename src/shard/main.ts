// `eggsfs shard`: one process hosting any set of shards, each with its own UDP socket (port
// base+shard) and its own SQLite database D/shard_NNN.sqlite. Block services come from shuckle.
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fetchBlockServices, loadClusterSecret, registerShards, type BlockServiceEntry } from '../client/shuckle.js';
import { SHARD_BASE_PORT } from '../proto/ports.js';
import { UsageError, parseIntArg, parseRange } from '../util/args.js';
import { announceReady, logger } from '../util/log.js';
import { openShardDb, type SyncMode } from './schema.js';
import { ShardServer } from './server.js';
import { ShardStore } from './store.js';

export const DEFAULT_SHUCKLE_POLL_MS = 60_000;
/** While shuckle has no block services (cluster starting), ask again this often. */
export const EMPTY_REGISTRY_POLL_MS = 1_000;
export const SHUCKLE_RETRY_MIN_MS = 200;
export const SHUCKLE_RETRY_MAX_MS = 5_000;
export const DEFAULT_REGISTER_MS = 10_000;

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
}

function parseArgs(argv: string[]): Options | 'help' {
  const o: Options = {
    shards: parseRange('0-255', 0, 255),
    dir: '',
    bind: '0.0.0.0',
    basePort: SHARD_BASE_PORT,
    advertiseHost: undefined,
    shuckle: undefined,
    secretFile: undefined,
    pollMs: DEFAULT_SHUCKLE_POLL_MS,
    registerMs: DEFAULT_REGISTER_MS,
    sync: 'normal',
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]!;
    let v: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const val = () => {
      if (v !== undefined) return v;
      const n = argv[++i];
      if (n === undefined) throw new UsageError(`${a} needs a value`);
      return n;
    };
    switch (a) {
      case '--help':
      case '-h':
        return 'help';
      case '--shards':
        o.shards = parseRange(val(), 0, 255);
        break;
      case '--dir':
        o.dir = val();
        break;
      case '--bind':
        o.bind = val();
        break;
      case '--base-port':
        o.basePort = parseIntArg('base-port', val(), 0, 65535);
        break;
      case '--advertise-host':
        o.advertiseHost = val();
        break;
      case '--shuckle':
        o.shuckle = val();
        break;
      case '--secret-file':
        o.secretFile = val();
        break;
      case '--shuckle-poll-ms':
        o.pollMs = parseIntArg('shuckle-poll-ms', val(), 10, 24 * 3600_000);
        break;
      case '--register-ms':
        o.registerMs = parseIntArg('register-ms', val(), 10, 24 * 3600_000);
        break;
      case '--sync': {
        const s = val();
        if (s !== 'normal' && s !== 'full') throw new UsageError(`--sync must be normal or full, got "${s}"`);
        o.sync = s;
        break;
      }
      default:
        throw new UsageError(`unknown option "${a}"\n\n${USAGE}`);
    }
  }
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
  mkdirSync(opts.dir, { recursive: true });
  const secret = await loadClusterSecret(opts.secretFile);
  if (opts.shuckle && !secret) log.warn('no cluster secret (EGGSFS_CLUSTER_SECRET or --secret-file): shuckle will not send block-service keys, so block-backed spans cannot be written');

  // Group commit scheduling: every shard with queued requests runs one batch per round; a round
  // starts after the event loop has read everything that arrived (setImmediate).
  const ready = new Set<ShardServer>();
  let roundScheduled = false;
  const round = () => {
    roundScheduled = false;
    const now = [...ready];
    ready.clear();
    for (const s of now) if (s.runBatch()) ready.add(s);
    if (ready.size > 0) scheduleRound();
  };
  const scheduleRound = () => {
    if (!roundScheduled) {
      roundScheduled = true;
      setImmediate(round);
    }
  };
  const schedule = (s: ShardServer) => {
    ready.add(s);
    scheduleRound();
  };

  const servers: ShardServer[] = [];
  const dbs: { close(): void }[] = [];
  const shutdown = (code: number) => {
    for (const s of servers) s.close();
    for (const db of dbs) {
      try {
        db.close();
      } catch {
        /* closing anyway */
      }
    }
    process.exit(code);
  };
  try {
    for (const shard of opts.shards) {
      const file = path.join(opts.dir, `shard_${String(shard).padStart(3, '0')}.sqlite`);
      const db = openShardDb(file, shard, opts.sync);
      dbs.push(db);
      const store = new ShardStore(db, shard);
      const server = new ShardServer(store, db, log, schedule);
      servers.push(server);
      await server.bind(opts.basePort + shard, opts.bind);
    }
  } catch (err) {
    log.error((err as Error).message);
    shutdown(1);
    return 1;
  }

  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    const total = { received: 0, dropped: 0, internalErrors: 0, commits: 0, committedRequests: 0 };
    for (const s of servers) for (const k of Object.keys(total) as (keyof typeof total)[]) total[k] += s.stats[k];
    log.info(
      `${sig}: closing ${servers.length} shards; served ${total.received} datagrams (${total.dropped} dropped for a full queue, ` +
        `${total.internalErrors} internal errors), ${total.commits} commits of ${(total.committedRequests / Math.max(1, total.commits)).toFixed(1)} requests on average`,
    );
    // Batches run synchronously, so no transaction is open here.
    shutdown(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  const advertiseHost = opts.advertiseHost ?? defaultAdvertiseHost(opts.bind);
  if (opts.shuckle) {
    const shuckle = { url: opts.shuckle, secret };
    void pollBlockServices(shuckle, servers, opts.pollMs, () => stopping);
    void registerLoop(shuckle, servers, opts, advertiseHost, () => stopping);
  }

  announceReady('shard', {
    shards: opts.shards.length,
    first: opts.shards[0],
    last: opts.shards[opts.shards.length - 1],
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/**
 * Block services from shuckle: at start (retrying with backoff until it answers, while requests
 * that need no block service are served), then every pollMs, more often while the list is empty.
 */
async function pollBlockServices(shuckle: { url: string; secret?: string | undefined }, servers: ShardServer[], pollMs: number, stopped: () => boolean): Promise<void> {
  let lastJson = '';
  let retryMs = SHUCKLE_RETRY_MIN_MS;
  let failures = 0;
  while (!stopped()) {
    let delayMs: number;
    try {
      const entries: BlockServiceEntry[] = await fetchBlockServices(shuckle.secret ? { url: shuckle.url, secret: shuckle.secret } : { url: shuckle.url });
      const json = JSON.stringify(entries);
      if (json !== lastJson && !stopped()) {
        for (const s of servers) s.store.registry.apply(entries);
        const writable = servers[0]?.store.registry.writableCount() ?? 0;
        log.info(`block services from ${shuckle.url}: ${entries.length} listed, ${writable} writable`);
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

async function registerLoop(
  shuckle: { url: string; secret?: string | undefined },
  servers: ShardServer[],
  opts: Options,
  advertiseHost: string,
  stopped: () => boolean,
): Promise<void> {
  const shards = servers.map((s) => ({ id: s.store.shard, ip: advertiseHost, port: s.address().port }));
  let failures = 0;
  while (!stopped()) {
    try {
      await registerShards(shuckle.secret ? { url: shuckle.url, secret: shuckle.secret } : { url: shuckle.url }, shards);
      if (failures > 0) log.info(`registered ${shards.length} shards with shuckle again`);
      failures = 0;
    } catch (err) {
      if (failures % 10 === 0) log.warn(`cannot register shards with shuckle: ${(err as Error).message}`);
      failures++;
    }
    await sleep(failures > 0 ? Math.min(opts.registerMs, SHUCKLE_RETRY_MAX_MS) : opts.registerMs);
  }
}
