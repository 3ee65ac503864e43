// A whole cluster for integration tests: `eggsfs run` on a temp dir with freshly allocated ports
// (never the defaults), the way a user starts one.
import { freeTcpRange, freeUdpRange } from './ports.js';
import { startEggsfs, tempDir, type Service } from './proc.js';

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
  let ports = opts.ports ?? (await allocateClusterPorts(blockServices));
  const argsFor = (p: ClusterPorts) => [
    'run',
    dir,
    '--block-services',
    String(blockServices),
    '--shuckle-port',
    String(p.shucklePort),
    '--cdc-port',
    String(p.cdcPort),
    '--shard-base-port',
    String(p.shardBasePort),
    '--block-base-port',
    String(p.blockBasePort),
    ...(opts.extraArgs ?? []),
  ];
  // A port seen free can still be taken before the service binds it (by another test's service).
  // Such a start is retried: on fresh ports when the caller let us choose them, else on the same
  // ones (a restart of a cluster whose ports were ours a moment ago).
  const START_ATTEMPTS = 4;
  let service: Service | undefined;
  for (let attempt = 1; ; attempt++) {
    service = startEggsfs(argsFor(ports));
    try {
      await service.waitFor(/^ready run /, 90_000);
      break;
    } catch (err) {
      await service.kill('SIGTERM'); // run stops its children; SIGKILL would orphan them
      if (attempt < START_ATTEMPTS && /EADDRINUSE/.test(service.stderr())) {
        await new Promise((r) => setTimeout(r, 1_000));
        if (!opts.ports) ports = await allocateClusterPorts(blockServices);
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
