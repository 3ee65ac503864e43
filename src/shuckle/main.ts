// `eggsfs shuckle`: the registry (services.md §3): UDP registrations verified by MACed stats,
// periodic checks, SQLite persistence, the HTTP API and the web page.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadClusterSecret } from '../client/shuckle.js';
import { SHUCKLE_HTTP_PORT, SHUCKLE_UDP_PORT } from '../proto/ports.js';
import { parseOptions, UsageError } from '../util/args.js';
import { announceReady, logger, type Logger } from '../util/log.js';
import { ShuckleDb } from './db.js';
import { createHttpServer } from './http.js';
import { Registry } from './registry.js';

export const DEFAULT_CHECK_PERIOD_MS = 60_000;
/** MAX_STALE_SECS of the original. */
export const DEFAULT_STALE_MS = 600_000;
export const CLUSTER_SECRET_FILE = 'cluster.secret';
const CLUSTER_SECRET_BYTES = 16;

const USAGE = `usage: eggsfs shuckle --dir D [options]

  --dir D                database directory (shuckle.sqlite, cluster.secret)
  --bind ADDR            HTTP listen address (default 0.0.0.0)
  --http-port P          (default ${SHUCKLE_HTTP_PORT})
  --udp-bind ADDR        registration listen address (default: the --bind address)
  --udp-port P           (default ${SHUCKLE_UDP_PORT})
  --secret-file F        the cluster secret (hex); else EGGSFS_CLUSTER_SECRET, else D/${CLUSTER_SECRET_FILE}
  --check-period-ms N    time between checks of every block service (default ${DEFAULT_CHECK_PERIOD_MS})
  --stale-ms N           a block service unchecked this long is stale (default ${DEFAULT_STALE_MS})
  --service-stale-ms N   a shard or CDC silent this long is stale (default ${DEFAULT_STALE_MS})
`;

interface Options {
  dir: string;
  bind: string;
  httpPort: number;
  udpBind?: string;
  udpPort: number;
  secretFile?: string;
  checkPeriodMs: number;
  staleMs: number;
  serviceStaleMs: number;
}

function parse(argv: string[]): Options | null {
  const r = parseOptions(argv, {
    dir: { kind: 'string' },
    bind: { kind: 'string', default: '0.0.0.0' },
    'http-port': { kind: 'int', min: 0, max: 65535, default: SHUCKLE_HTTP_PORT },
    'udp-bind': { kind: 'string' },
    'udp-port': { kind: 'int', min: 0, max: 65535, default: SHUCKLE_UDP_PORT },
    'secret-file': { kind: 'string' },
    'check-period-ms': { kind: 'int', min: 10, max: 86_400_000, default: DEFAULT_CHECK_PERIOD_MS },
    'stale-ms': { kind: 'int', min: 1, max: 365 * 86_400_000, default: DEFAULT_STALE_MS },
    'service-stale-ms': { kind: 'int', min: 1, max: 365 * 86_400_000, default: DEFAULT_STALE_MS },
  }, { unknown: (a) => `unknown option ${a}\n${USAGE}` });
  if (r.help) return null;
  const v = r.values;
  if (v.dir === undefined) throw new UsageError(`--dir is required\n${USAGE}`);
  return {
    dir: path.resolve(v.dir),
    bind: v.bind,
    httpPort: v['http-port'],
    udpBind: v['udp-bind'],
    udpPort: v['udp-port'],
    secretFile: v['secret-file'],
    checkPeriodMs: v['check-period-ms'],
    staleMs: v['stale-ms'],
    serviceStaleMs: v['service-stale-ms'],
  };
}

/** The cluster secret: env or --secret-file, else one generated once into D/cluster.secret. */
async function clusterSecret(o: Options, log: Logger): Promise<string> {
  let s: string | undefined;
  try {
    s = await loadClusterSecret(o.secretFile);
  } catch (err) {
    throw new Error(`cannot read the cluster secret from ${o.secretFile}: ${(err as Error).message}`);
  }
  if (s === undefined) {
    const p = path.join(o.dir, CLUSTER_SECRET_FILE);
    if (fs.existsSync(p)) {
      s = fs.readFileSync(p, 'utf8').trim();
    } else {
      s = randomBytes(CLUSTER_SECRET_BYTES).toString('hex');
      const tmp = p + '.tmp';
      fs.writeFileSync(tmp, s + '\n', { mode: 0o600 });
      const fd = fs.openSync(tmp, 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(tmp, p);
      log.info(`generated a cluster secret in ${p}`);
    }
    log.info(`cluster secret: ${p} (give it to shards and the CDC with --secret-file or EGGSFS_CLUSTER_SECRET)`);
  }
  s = s.trim().toLowerCase();
  if (!/^[0-9a-f]{8,}$/.test(s)) throw new Error('the cluster secret must be hex (at least 8 digits)');
  return s;
}

function listenHttp(server: import('node:http').Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as import('node:net').AddressInfo).port);
    });
  });
}

export async function run(argv: string[]): Promise<number | void> {
  const o = parse(argv);
  if (!o) {
    process.stdout.write(USAGE);
    return 0;
  }
  const log = logger('shuckle');
  fs.mkdirSync(o.dir, { recursive: true });
  let secretHex: string;
  try {
    secretHex = await clusterSecret(o, log);
  } catch (err) {
    log.error((err as Error).message);
    return 1;
  }
  const db = new ShuckleDb(o.dir);
  const registry = new Registry(db, o.checkPeriodMs, log);
  const server = createHttpServer({ db, staleness: { blockStaleMs: o.staleMs, serviceStaleMs: o.serviceStaleMs }, secretHex, log });
  let httpPort: number;
  let udpPort: number;
  try {
    udpPort = await registry.listen(o.udpBind ?? o.bind, o.udpPort);
    httpPort = await listenHttp(server, o.bind, o.httpPort);
  } catch (err) {
    log.error(`cannot listen: ${(err as Error).message}`);
    registry.close();
    db.close();
    return 1;
  }
  registry.startPeriodic();
  const shownHost = o.bind === '0.0.0.0' || o.bind === '::' ? 'localhost' : o.bind;
  log.info(`serving http://${shownHost}:${httpPort}/ and registrations on udp ${o.udpBind ?? o.bind}:${udpPort}`);
  announceReady('shuckle', { httpPort, udpPort, url: `http://${shownHost}:${httpPort}` });

  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  log.info('shutting down');
  registry.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  db.close();
  return 0;
}
