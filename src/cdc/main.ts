// `eggsfs cdc`: serve the cross-directory coordinator.
import { mkdirSync } from 'node:fs';
import { fetchShards, loadClusterSecret, registerCdc, type ShuckleClientOptions } from '../client/shuckle.js';
import { CDC_PORT, DEFAULT_HOST, SHARD_BASE_PORT } from '../proto/ports.js';
import { SHARD_COUNT } from '../proto/ids.js';
import { UsageError, parseOptions } from '../util/args.js';
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
  const r = parseOptions(argv, {
    dir: { kind: 'string' },
    bind: { kind: 'string', default: DEFAULT_HOST },
    port: { kind: 'int', min: 0, max: 65535, default: CDC_PORT },
    'shard-host': { kind: 'string', default: DEFAULT_HOST },
    'shard-base-port': { kind: 'int', min: 1, max: 65535 - SHARD_COUNT + 1, default: SHARD_BASE_PORT },
    shuckle: { kind: 'string' },
    'secret-file': { kind: 'string' },
    advertise: { kind: 'string' },
    'shard-timeout-ms': { kind: 'int', min: 1, max: 600_000, default: DEFAULT_SHARD_TIMEOUT_MS },
    sync: { kind: 'string', default: 'full', choices: ['full', 'normal'] },
    'max-running': { kind: 'int', min: 1, max: 1 << 20, default: MAX_TXNS_RUNNING },
    'max-queued': { kind: 'int', min: 0, max: 1 << 24, default: MAX_TXNS_QUEUED },
    'stats-ms': { kind: 'int', min: 0, max: 3_600_000, default: 0 },
  }, { unknown: (a) => `unknown option ${a}\n\n${USAGE}` });
  if (r.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const values = r.values;
  if (!values.dir) throw new UsageError('--dir is required\n\n' + USAGE);
  const port = values.port;
  const shardBasePort = values['shard-base-port'];
  const shardTimeoutMs = values['shard-timeout-ms'];
  const maxRunning = values['max-running'];
  const maxQueued = values['max-queued'];
  const sync = values.sync;
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
    statsEveryMs: values['stats-ms'],
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
