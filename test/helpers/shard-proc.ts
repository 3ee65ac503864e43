// Shard processes for tests: `eggsfs shard` on free ports with a temp dir, a fixture shuckle, and
// a UdpTransport that signs privileged kinds with the default CDC key.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { UdpTransport } from '../../src/client/transport.js';
import { EggsError, errorName } from '../../src/proto/errors.js';
import { InodeType } from '../../src/proto/ids.js';
import type { ShardKindName, ShardReq, ShardResp } from '../../src/proto/messages.js';
import { freeUdpRange } from './ports.js';
import { startEggsfs, tempDir, type Service } from './proc.js';
import { fakeBlockServices, startFixtureShuckle, type FixtureShuckle } from './fixture-shuckle.js';
import { inParallel } from './pool.js';

export interface ShardFixture {
  readonly basePort: number;
  readonly dir: string;
  readonly shuckle: FixtureShuckle;
  proc: Service;
  readonly transport: UdpTransport;
  /** Send a request to shard `shard` (default 0); resolves with the response body. */
  req<K extends ShardKindName>(kind: K, body: ShardReq<K>, shard?: number): Promise<ShardResp<K>>;
  /** Expect the named error code. */
  err<K extends ShardKindName>(kind: K, body: ShardReq<K>, code: number, shard?: number): Promise<void>;
  restart(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

export async function startShards(
  opts: { shards?: string; count?: number; blockServices?: number; extraArgs?: string[]; keepDir?: string } = {},
): Promise<ShardFixture> {
  const shardsSpec = opts.shards ?? '0-0';
  const count = opts.count ?? 1;
  const shuckle = await startFixtureShuckle(fakeBlockServices(opts.blockServices ?? 50));
  const basePort = await freeUdpRange(count);
  const dir = opts.keepDir ? { path: opts.keepDir, remove: () => undefined } : tempDir('shard');
  const args = ['shard', '--shards', shardsSpec, '--dir', dir.path, '--bind', '127.0.0.1', '--base-port', String(basePort), '--shuckle', shuckle.url, ...(opts.extraArgs ?? [])];
  const env = { EGGSFS_CLUSTER_SECRET: shuckle.secret };
  const start = async () => {
    const p = startEggsfs(args, { env });
    await p.waitFor(/^ready shard /);
    return p;
  };
  const transport = new UdpTransport({ defaultTimeoutMs: 2_000, defaultAttempts: 1 });
  const fx: ShardFixture = {
    basePort,
    dir: dir.path,
    shuckle,
    proc: await start(),
    transport,
    req(kind, body, shard = 0) {
      return transport.shardRequest({ host: '127.0.0.1', port: basePort + shard }, kind, body);
    },
    async err(kind, body, code, shard = 0) {
      try {
        const r = await transport.shardRequest({ host: '127.0.0.1', port: basePort + shard }, kind, body);
        assert.fail(`${kind}: expected ${errorName(code)}, got success ${JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v))}`);
      } catch (e) {
        if (!(e instanceof EggsError)) throw e;
        assert.equal(errorName(e.code), errorName(code), `${kind}: expected ${errorName(code)}, got ${errorName(e.code)}`);
      }
    },
    async restart(signal = 'SIGTERM') {
      await fx.proc.kill(signal);
      fx.proc = await start();
    },
    async stop() {
      transport.close();
      await fx.proc.kill('SIGKILL');
      await shuckle.close();
      dir.remove();
    },
  };
  return fx;
}

/**
 * One directory per shard 0..count-1, created on its shard as the CDC would (CREATE_DIRECTORY_INODE
 * owned by the root), each acknowledged: the ids, in shard order.
 */
export async function directoryPerShard(fx: ShardFixture, count: number): Promise<bigint[]> {
  const dirs: bigint[] = [];
  for (let s = 0; s < count; s++) {
    const id = 0x2000000000000000n | (BigInt(10 + s) << 8n) | BigInt(s);
    await fx.req('CREATE_DIRECTORY_INODE', { id, ownerId: 0x2000000000000000n, opaque: Buffer.from(`d${s}`) }, s);
    dirs.push(id);
  }
  return dirs;
}

/**
 * A directory on shard 0 (owned by the root, as the CDC would make it) with an empty linked file
 * under each name, 64 created at once: its id. `local` picks the id (distinct per directory).
 */
export async function directoryWithFiles(fx: ShardFixture, local: bigint, names: readonly string[]): Promise<bigint> {
  const id = 0x2000000000000000n | (local << 8n);
  await fx.req('CREATE_DIRECTORY_INODE', { id, ownerId: 0x2000000000000000n, opaque: Buffer.alloc(0) });
  await inParallel(names.length, 64, async (i) => {
    const f = await fx.req('CONSTRUCT_FILE', { type: InodeType.FILE });
    await fx.req('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: id, name: Buffer.from(names[i]!) });
  });
  return id;
}

/** Wait until the shard has learnt its block services (polled at start, asynchronously). */
export async function waitForBlockServices(fx: ShardFixture, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = [...fx.proc.stderr().matchAll(/block services from \S+: \d+ listed, (\d+) writable/g)].map((m) => Number(m[1]));
    if (counts.length > 0 && counts[counts.length - 1]! > 0) return;
    if (Date.now() > deadline) throw new Error(`shard never learnt its block services\n${fx.proc.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends one raw datagram to a UDP port and resolves with the first answer (rejects 'no answer'). */
export function rawUdpRequest(datagram: Buffer, port: number, timeoutMs = 2_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(new Error('no answer'));
    }, timeoutMs);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m);
    });
    s.send(datagram, port, '127.0.0.1');
  });
}
