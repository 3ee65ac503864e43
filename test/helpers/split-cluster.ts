// A cluster whose block services are separate `eggsfs blocks` processes, one per service, so a
// test can kill -9 (or restart) any one of them; shuckle checks them often and the shard refreshes
// its block-service list often, so a dead service becomes stale and unpicked within seconds.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { fetchBlockServices, fetchCdc, fetchShards } from '../../src/client/shuckle.js';
import { SHARD_COUNT } from '../../src/proto/ids.js';
import { allocateClusterPorts, type ClusterPorts } from './cluster.js';
import { startEggsfs, tempDir, type Service } from './proc.js';

const STARTUP_TIMEOUT_MS = 60_000;
const POLL_MS = 100;
/** Shuckle checks every service this often and calls one stale after STALE_MS without a good check. */
const CHECK_PERIOD_MS = 500;
// Above a check pass's worst case (shuckle waits for every check of a pass, and a hung service's
// check takes its 3 s I/O timeout), so a hung service does not make the healthy ones stale.
const STALE_MS = 8_000;
const SHARD_POLL_MS = 500;

export interface SplitCluster {
  dir: string;
  ports: ClusterPorts;
  shuckleUrl: string;
  secret: string;
  blockServices: number;
  blockDir(i: number): string;
  blockPort(i: number): number;
  /** Whether block service i's process is running. */
  alive(i: number): boolean;
  /** Kill block service i (default SIGKILL) and wait for it to exit. */
  killBlocks(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** Send a signal without waiting (SIGSTOP makes a service hang: connections open, no answers). */
  signalBlocks(i: number, signal: NodeJS.Signals): void;
  /** Start block service i again on the same directory and port. */
  startBlocks(i: number): Promise<void>;
  /** Wait until shuckle reports exactly these services (indices) as not stale. */
  waitLive(live: number[], timeoutMs?: number): Promise<void>;
  /** Wait long enough for the shard to have picked up shuckle's view. */
  settle(): Promise<void>;
  stop(): Promise<void>;
}

async function until(what: string, timeoutMs: number, cond: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      if (await cond()) return;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (${last})` : ''}`);
}

/** Ports are probed free, then bound by the services a moment later; another process can take one in between. */
const PORT_RACE_ATTEMPTS = 4;

export async function startSplitCluster(opts: { blockServices: number }): Promise<SplitCluster> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts.blockServices);
    } catch (err) {
      if (attempt >= PORT_RACE_ATTEMPTS || !/EADDRINUSE/.test((err as Error).message)) throw err;
    }
  }
}

async function startOnce(n: number): Promise<SplitCluster> {
  const tmp = tempDir('split');
  const dir = tmp.path;
  const ports = await allocateClusterPorts(n);
  const secret = randomBytes(16).toString('hex');
  const env = { EGGSFS_CLUSTER_SECRET: secret };
  const shuckleUrl = `http://127.0.0.1:${ports.shucklePort}`;
  const so = { url: shuckleUrl, secret };
  const procs: Service[] = [];
  const blocks: (Service | undefined)[] = new Array(n).fill(undefined);
  const blockDir = (i: number) => path.join(dir, `bs_${i}`);
  const blockPort = (i: number) => ports.blockBasePort + i;
  const startBlocks = async (i: number) => {
    mkdirSync(blockDir(i), { recursive: true });
    const p = startEggsfs(['blocks', '--dir', blockDir(i), '--port', String(blockPort(i)), '--bind', '127.0.0.1', '--shuckle-udp', `127.0.0.1:${ports.shucklePort}`], { env });
    blocks[i] = p;
    await p.waitFor(/^ready blocks /, STARTUP_TIMEOUT_MS);
  };
  const stop = async () => {
    // Clients' entry points first, the registry last.
    for (const p of procs.slice(1).reverse()) await p.kill('SIGTERM');
    for (const b of blocks) b?.proc.kill('SIGCONT'); // a stopped service cannot act on SIGTERM
    await Promise.all(blocks.map((b) => b?.kill('SIGTERM')));
    await procs[0]?.kill('SIGTERM');
    tmp.remove();
  };
  try {
    const shuckle = startEggsfs(
      ['shuckle', '--dir', dir, '--bind', '127.0.0.1', '--http-port', String(ports.shucklePort), '--udp-port', String(ports.shucklePort),
        '--check-period-ms', String(CHECK_PERIOD_MS), '--stale-ms', String(STALE_MS)],
      { env },
    );
    procs.push(shuckle);
    await shuckle.waitFor(/^ready shuckle /, STARTUP_TIMEOUT_MS);
    await Promise.all([...Array(n).keys()].map(startBlocks));
    const cluster: SplitCluster = {
      dir,
      ports,
      shuckleUrl,
      secret,
      blockServices: n,
      blockDir,
      blockPort,
      alive: (i) => blocks[i] !== undefined,
      async killBlocks(i, signal = 'SIGKILL') {
        const p = blocks[i];
        blocks[i] = undefined;
        await p?.kill(signal);
      },
      signalBlocks(i, signal) {
        blocks[i]?.proc.kill(signal);
      },
      startBlocks,
      async waitLive(live, timeoutMs = 60_000) {
        const want = new Set(live.map(blockPort));
        await until(`block services ${live.join(',')} to be the live ones`, timeoutMs, async () => {
          const list = await fetchBlockServices(so);
          const liveNow = list.filter((b) => !b.is_stale && b.port >= ports.blockBasePort && b.port < ports.blockBasePort + n).map((b) => b.port);
          return liveNow.length === want.size && liveNow.every((p) => want.has(p));
        });
      },
      settle: () => new Promise((r) => setTimeout(r, SHARD_POLL_MS * 3)),
      stop,
    };
    await cluster.waitLive([...Array(n).keys()], STARTUP_TIMEOUT_MS);
    const shards = startEggsfs(
      ['shard', '--shards', `0-${SHARD_COUNT - 1}`, '--dir', dir, '--bind', '127.0.0.1', '--advertise-host', '127.0.0.1', '--base-port', String(ports.shardBasePort),
        '--shuckle', shuckleUrl, '--shuckle-poll-ms', String(SHARD_POLL_MS)],
      { env },
    );
    procs.push(shards);
    await shards.waitFor(/^ready shard/, STARTUP_TIMEOUT_MS);
    // The CDC learns shard addresses from shuckle: start it once they are all registered.
    await until('shuckle to list every shard', STARTUP_TIMEOUT_MS, async () => (await fetchShards(so)).length >= SHARD_COUNT);
    const cdc = startEggsfs(['cdc', '--dir', dir, '--port', String(ports.cdcPort), '--bind', '127.0.0.1', '--advertise', '127.0.0.1', '--shuckle', shuckleUrl], { env });
    procs.push(cdc);
    await cdc.waitFor(/^ready cdc /, STARTUP_TIMEOUT_MS);
    await until('shuckle to list the CDC', STARTUP_TIMEOUT_MS, async () => (await fetchCdc(so)) !== null);
    return cluster;
  } catch (err) {
    await stop();
    throw err;
  }
}
