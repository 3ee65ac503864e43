// `eggsfs cdc`: serve the cross-directory coordinator.
import { mkdirSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { fetchShards, loadClusterSecret, registerCdc, type ShuckleClientOptions } from '../client/shuckle.js';
import { CDC_PORT, DEFAULT_HOST, SHARD_BASE_PORT } from '../proto/ports.js';
import { SHARD_COUNT } from '../proto/ids.js';
import { UsageError, parseIntArg } from '../util/args.js';
import { announceReady, logger } from '../util/log.js';
import { DEFAULT_SHARD_TIMEOUT_MS, MAX_TXNS_QUEUED, MAX_TXNS_RUNNING, SHUCKLE_MISS_REFRESH_MS, SHUCKLE_REFRESH_MS } from './limits.js';
import { CdcServer, type Address } from './server.js';

const log = logger('cdc');

const USAGE = `usage: eggsfs cdc --dir D [options]

  --dir D                 directory holding cdc.sqlite (created if missing)
  --bind HOST             address to listen on (default ${DEFAULT_HOST})
  --port P                UDP port for clients (default ${CDC_PORT}; 0 = any free port)
  --shard-host H          where the shards are (default ${DEFAULT_HOST})
  --shard-base-port P     shard s listens on P + s (default ${SHARD_BASE_PORT})
  --shuckle URL           take shard addresses from shuckle (GET /api/shards) and register the
                          CDC there; the cluster secret comes from EGGSFS_CLUSTER_SECRET or
  --secret-file F
  --advertise HOST        address registered with shuckle (default: the bind address)
  --shard-timeout-ms MS   resend a shard request after this long without an answer (default ${DEFAULT_SHARD_TIMEOUT_MS})
  --sync full|normal      full (default): fsync every group commit, answers survive power loss;
                          normal: answers survive kill -9 of the CDC only
  --max-running N         transactions executing at once (default ${MAX_TXNS_RUNNING})
  --max-queued N          transactions waiting behind them (default ${MAX_TXNS_QUEUED}); when full,
                          new requests are answered TIMEOUT at once (nothing done, retry later)
  --stats-ms N            log transactions, commits (rows per commit, time) and shard round
                          trips every N ms (default 0: never)
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOrUsage({
    args: argv,
    options: {
      dir: { type: 'string' },
      bind: { type: 'string', default: DEFAULT_HOST },
      port: { type: 'string', default: String(CDC_PORT) },
      'shard-host': { type: 'string', default: DEFAULT_HOST },
      'shard-base-port': { type: 'string', default: String(SHARD_BASE_PORT) },
      shuckle: { type: 'string' },
      'secret-file': { type: 'string' },
      advertise: { type: 'string' },
      'shard-timeout-ms': { type: 'string', default: String(DEFAULT_SHARD_TIMEOUT_MS) },
      sync: { type: 'string', default: 'full' },
      'max-running': { type: 'string', default: String(MAX_TXNS_RUNNING) },
      'max-queued': { type: 'string', default: String(MAX_TXNS_QUEUED) },
      'stats-ms': { type: 'string', default: '0' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  } as const);
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.dir) throw new UsageError('--dir is required\n\n' + USAGE);
  const port = parseIntArg('port', values.port, 0, 65535);
  const shardBasePort = parseIntArg('shard-base-port', values['shard-base-port'], 1, 65535 - SHARD_COUNT + 1);
  const shardTimeoutMs = parseIntArg('shard-timeout-ms', values['shard-timeout-ms'], 1, 600_000);
  const maxRunning = parseIntArg('max-running', values['max-running'], 1, 1 << 20);
  const maxQueued = parseIntArg('max-queued', values['max-queued'], 0, 1 << 24);
  const sync = values.sync;
  if (sync !== 'full' && sync !== 'normal') throw new UsageError(`--sync must be full or normal, got "${sync}"`);
  mkdirSync(values.dir, { recursive: true });

  let book: (s: number) => Address | undefined;
  let shuckle: ShuckleClientOptions | undefined;
  const shuckleShards = new Map<number, Address>();
  let refreshNow: () => void = () => undefined;
  if (values.shuckle) {
    shuckle = { url: values.shuckle, secret: await loadClusterSecret(values['secret-file']) };
    // An unknown shard asks for a refresh (at most one per SHUCKLE_MISS_REFRESH_MS) instead of
    // waiting for the periodic one.
    book = (s) => {
      const a = shuckleShards.get(s);
      if (!a) refreshNow();
      return a;
    };
  } else {
    const host = values['shard-host'];
    book = (s) => ({ host, port: shardBasePort + s });
  }

  const server = new CdcServer({
    dir: values.dir,
    bindHost: values.bind,
    port,
    shards: book,
    shardTimeoutMs,
    sync,
    maxRunning,
    maxQueued,
    crashAt: process.env.EGGSFS_CDC_CRASH_AT || undefined,
    statsEveryMs: parseIntArg('stats-ms', values['stats-ms'], 0, 3_600_000),
  });
  await server.start();

  let refreshTimer: NodeJS.Timeout | undefined;
  if (shuckle) {
    const sh = shuckle;
    const advertise = values.advertise ?? (values.bind === '0.0.0.0' ? DEFAULT_HOST : values.bind);
    const refresh = async () => {
      try {
        for (const e of await fetchShards(sh)) shuckleShards.set(e.id, { host: e.ip, port: e.port });
      } catch (err) {
        log.warn(`cannot fetch shard addresses: ${(err as Error).message}`);
      }
      try {
        await registerCdc(sh, { ip: advertise, port: server.boundPort });
      } catch (err) {
        log.warn(`cannot register with shuckle: ${(err as Error).message}`);
      }
    };
    await refresh();
    refreshTimer = setInterval(() => void refresh(), SHUCKLE_REFRESH_MS);
    let lastMissRefreshMs = 0;
    refreshNow = () => {
      if (Date.now() - lastMissRefreshMs < SHUCKLE_MISS_REFRESH_MS) return;
      lastMissRefreshMs = Date.now();
      void refresh();
    };
  }

  announceReady('cdc', { host: values.bind, port: server.boundPort, dir: values.dir, pid: process.pid });
  log.info(`serving on ${values.bind}:${server.boundPort}, database ${values.dir}/cdc.sqlite`);

  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig}: stopping`);
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  if (refreshTimer) clearInterval(refreshTimer);
  await server.close();
  return 0;
}

/** parseArgs, with unknown or malformed options reported as a usage error (exit code 2). */
function parseOrUsage<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
