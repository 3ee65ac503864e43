// A whole cluster for integration tests: `eggsfs run` on a temp dir with freshly allocated ports
// (never the defaults), the way a user starts one.
import net from 'node:net';
import dgram from 'node:dgram';
import { freeUdpRange } from './ports.js';
import { startEggsfs, tempDir, type Service } from './proc.js';

async function tcpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

async function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => resolve(false));
    s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A base port with base..base+count-1 free for TCP (and UDP too when `udp`). */
export async function freeTcpRange(count: number, udp = false): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20000 + Math.floor(Math.random() * (40000 - count));
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = (await tcpFree(base + i)) && (!udp || (await udpFree(base + i)));
    if (ok) return base;
  }
  throw new Error(`no free TCP range of ${count} ports`);
}

export interface ClusterPorts {
  shucklePort: number;
  cdcPort: number;
  shardBasePort: number;
  blockBasePort: number;
}

export async function allocateClusterPorts(blockServices: number): Promise<ClusterPorts> {
  const shucklePort = await freeTcpRange(1, true);
  let cdcPort = await freeUdpRange(1);
  while (cdcPort === shucklePort) cdcPort = await freeUdpRange(1);
  let shardBasePort: number;
  do shardBasePort = await freeUdpRange(256);
  while ([shucklePort, cdcPort].some((p) => p >= shardBasePort && p < shardBasePort + 256));
  let blockBasePort: number;
  do blockBasePort = await freeTcpRange(blockServices);
  while ([shucklePort].some((p) => p >= blockBasePort && p < blockBasePort + blockServices));
  return { shucklePort, cdcPort, shardBasePort, blockBasePort };
}

export interface TestCluster {
  dir: string;
  ports: ClusterPorts;
  shuckleUrl: string;
  /** Environment for CLI runs against this cluster. */
  env: NodeJS.ProcessEnv;
  service: Service;
  /** SIGTERM and wait; returns the exit status. */
  stop(): Promise<number | string>;
  /** Stop and delete the data directory. */
  destroy(): Promise<void>;
}

export async function startCluster(opts: { blockServices?: number; dir?: string; ports?: ClusterPorts; extraArgs?: string[] } = {}): Promise<TestCluster> {
  const blockServices = opts.blockServices ?? 3;
  const tmp = opts.dir ? undefined : tempDir('cluster');
  const dir = opts.dir ?? tmp!.path;
  const ports = opts.ports ?? (await allocateClusterPorts(blockServices));
  const args = [
    'run',
    dir,
    '--block-services',
    String(blockServices),
    '--shuckle-port',
    String(ports.shucklePort),
    '--cdc-port',
    String(ports.cdcPort),
    '--shard-base-port',
    String(ports.shardBasePort),
    '--block-base-port',
    String(ports.blockBasePort),
    ...(opts.extraArgs ?? []),
  ];
  // Other tests on this machine open ephemeral sockets in the same port range; a port seen free
  // (or ours before a restart) can be taken for a moment. Such a start is retried on the same ports.
  const START_ATTEMPTS = 4;
  let service: Service | undefined;
  for (let attempt = 1; ; attempt++) {
    service = startEggsfs(args);
    try {
      await service.waitFor(/^ready run /, 90_000);
      break;
    } catch (err) {
      await service.kill('SIGTERM'); // run stops its children; SIGKILL would orphan them
      if (attempt < START_ATTEMPTS && /EADDRINUSE/.test(service.stderr())) {
        await new Promise((r) => setTimeout(r, 1_000));
        continue;
      }
      tmp?.remove();
      throw err;
    }
  }
  const shuckleUrl = `http://127.0.0.1:${ports.shucklePort}`;
  const stop = () => service.kill('SIGTERM');
  return {
    dir,
    ports,
    shuckleUrl,
    env: { EGGSFS_SHUCKLE: shuckleUrl },
    service,
    stop,
    async destroy() {
      await stop();
      tmp?.remove();
    },
  };
}
