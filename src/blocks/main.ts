// `eggsfs blocks`: one process serving one block service per directory, each registering with
// shuckle every second (services.md §2.1, §2.7).
import dgram from 'node:dgram';
import path from 'node:path';
import { encodeShuckleRegistration, FAILURE_DOMAIN_BYTES } from '../proto/blockwire.js';
import { BLOCK_BASE_PORT, DEFAULT_STORAGE_CLASS, SHUCKLE_UDP_PORT } from '../proto/ports.js';
import { parseHostPort, parseOptions, UsageError } from '../util/args.js';
import { announceReady, logger } from '../util/log.js';
import { BlockServer, DEFAULT_LIMITS, type BlockServerLimits } from './server.js';
import { ByteBudget } from '../util/exact-reader.js';
import { BlockStore } from './store.js';


const REGISTER_PERIOD_MS = 1_000;

const USAGE = `usage: eggsfs blocks --dir D1 [--dir D2 ...] [options]

  --dir D                 a block service directory (repeat for several services)
  --bind ADDR             listen address (default 127.0.0.1)
  --port P                port of the only service (0 = ephemeral)
  --base-port P           the i-th directory listens on P+i (default ${BLOCK_BASE_PORT})
  --storage-class N       2..255 (default ${DEFAULT_STORAGE_CLASS})
  --failure-domain NAME   up to ${FAILURE_DOMAIN_BYTES} bytes, sent to shuckle with registrations
  --shuckle-udp HOST:PORT where to register (default localhost:${SHUCKLE_UDP_PORT}); "none" to not register
  --max-block-bytes N     largest block accepted (default ${DEFAULT_LIMITS.maxBlockBytes})
  --max-connections N     per service (default ${DEFAULT_LIMITS.maxConnections})
  --idle-timeout-ms N     drop a connection silent this long (default ${DEFAULT_LIMITS.idleTimeoutMs})
  --max-buffer-bytes N    bytes received but not yet on disk, over the whole process (default ${DEFAULT_LIMITS.processBufferBytes})
`;

interface Options {
  dirs: string[];
  bind: string;
  port?: number;
  basePort: number;
  storageClass: number;
  failureDomain: string;
  shuckle: { host: string; port: number } | null;
  limits: BlockServerLimits;
}

function parse(argv: string[]): Options | null {
  const r = parseOptions(argv, {
    dir: { kind: 'repeatable' },
    bind: { kind: 'string', default: '127.0.0.1' },
    port: { kind: 'int', min: 0, max: 65535 },
    'base-port': { kind: 'int', min: 1, max: 65535, default: BLOCK_BASE_PORT },
    'storage-class': { kind: 'int', min: 2, max: 255, default: DEFAULT_STORAGE_CLASS },
    'failure-domain': { kind: 'string', default: '' },
    'shuckle-udp': { kind: 'string' },
    'max-block-bytes': { kind: 'int', min: 0, max: DEFAULT_LIMITS.maxBlockBytes, default: DEFAULT_LIMITS.maxBlockBytes },
    'max-connections': { kind: 'int', min: 1, max: 65536, default: DEFAULT_LIMITS.maxConnections },
    'max-buffer-bytes': { kind: 'int', min: 1 << 16, max: 2 ** 40, default: DEFAULT_LIMITS.processBufferBytes },
    'idle-timeout-ms': { kind: 'int', min: 1, max: 3_600_000, default: DEFAULT_LIMITS.idleTimeoutMs },
  }, { unknown: (a) => `unknown option ${a}\n${USAGE}` });
  if (r.help) return null;
  const v = r.values;
  if (Buffer.byteLength(v['failure-domain']) > FAILURE_DOMAIN_BYTES) throw new UsageError(`--failure-domain is at most ${FAILURE_DOMAIN_BYTES} bytes`);
  const shuckleUdp = v['shuckle-udp'];
  const o: Options = {
    dirs: v.dir.map((d) => path.resolve(d)),
    bind: v.bind,
    port: v.port,
    basePort: v['base-port'],
    storageClass: v['storage-class'],
    failureDomain: v['failure-domain'],
    shuckle: shuckleUdp === undefined ? { host: 'localhost', port: SHUCKLE_UDP_PORT } : shuckleUdp === 'none' ? null : parseHostPort(shuckleUdp, 'localhost'),
    limits: {
      ...DEFAULT_LIMITS,
      maxBlockBytes: v['max-block-bytes'],
      maxConnections: v['max-connections'],
      processBufferBytes: v['max-buffer-bytes'],
      idleTimeoutMs: v['idle-timeout-ms'],
    },
  };
  if (o.dirs.length === 0) throw new UsageError(`at least one --dir is needed\n${USAGE}`);
  if (new Set(o.dirs).size !== o.dirs.length) throw new UsageError('the same --dir is given twice');
  if (o.port !== undefined && o.dirs.length > 1) throw new UsageError('--port is for a single --dir; use --base-port with several');
  if (o.port === undefined && o.basePort + o.dirs.length - 1 > 65535) throw new UsageError('--base-port leaves too few ports for every --dir');
  return o;
}

export async function run(argv: string[]): Promise<number | void> {
  const opts = parse(argv);
  if (!opts) {
    process.stdout.write(USAGE);
    return 0;
  }
  const log = logger('blocks');
  const stores: BlockStore[] = [];
  const servers: BlockServer[] = [];
  const services: { dir: string; ip: string; port: number; storageClass: number; failureDomain: string; datagram: Buffer }[] = [];
  const shutdown = async () => {
    await Promise.all(servers.map((s) => s.close().catch(() => {})));
    await Promise.all(stores.map((s) => s.close()));
  };
  const budget = new ByteBudget(opts.limits.processBufferBytes);
  try {
    for (let i = 0; i < opts.dirs.length; i++) {
      const dir = opts.dirs[i]!;
      const store = await BlockStore.open(dir, log);
      stores.push(store);
      const server = new BlockServer(store, opts.limits, log, budget);
      const wanted = opts.port ?? opts.basePort + i;
      let port: number;
      try {
        port = await server.listen(opts.bind, wanted);
      } catch (err) {
        throw new Error(`${dir}: cannot listen on ${opts.bind}:${wanted}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      servers.push(server);
      const datagram = encodeShuckleRegistration({ secretKey: store.secretKey, port, storageClass: opts.storageClass, failureDomain: opts.failureDomain });
      services.push({ dir, ip: opts.bind, port, storageClass: opts.storageClass, failureDomain: opts.failureDomain, datagram });
      log.info(`${dir}: serving on ${opts.bind}:${port} (storage class ${opts.storageClass}, ${store.usedBlocks} blocks, ${store.usedBytes} bytes)`);
    }
  } catch (err) {
    await shutdown();
    log.error((err as Error).message);
    return 1;
  }

  let udp: dgram.Socket | null = null;
  let timer: NodeJS.Timeout | null = null;
  if (opts.shuckle) {
    const target = opts.shuckle;
    udp = dgram.createSocket(target.host.includes(':') ? 'udp6' : 'udp4');
    udp.on('error', (err) => log.warn(`registration socket: ${err.message}`));
    let warned = false;
    const register = () => {
      for (const s of services) {
        // Fire-and-forget like the original; each datagram is a fresh immutable buffer.
        udp!.send(s.datagram, target.port, target.host, (err) => {
          if (err && !warned) {
            warned = true;
            log.warn(`cannot register with shuckle at ${target.host}:${target.port}: ${err.message}`);
          }
        });
      }
    };
    register();
    timer = setInterval(register, REGISTER_PERIOD_MS);
  }

  announceReady('blocks', {
    services: services.map(({ dir, ip, port, storageClass, failureDomain }) => ({ dir, ip, port, storageClass, failureDomain })),
    ports: services.map((s) => s.port),
  });

  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig}: shutting down`);
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  if (timer) clearInterval(timer);
  udp?.close();
  await shutdown();
  return 0;
}


