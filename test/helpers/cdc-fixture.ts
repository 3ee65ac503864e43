// A real metadata cluster for CDC tests: one `eggsfs shard` process serving all 256 shards, an
// optional fault-injection proxy in front of them, and an `eggsfs cdc` process pointed at the
// proxy (or at the shards). Clients talk to the CDC and, for setup and checks, to the shards
// directly (never through the proxy). Everything on free ports and temp dirs.
import assert from 'node:assert/strict';
import { fsck, type FsckReport } from '../../src/client/fsck.js';
import { UdpTransport, type Address } from '../../src/client/transport.js';
import { EggsError, ErrorCode, errorName } from '../../src/proto/errors.js';
import { InodeType, ROOT_DIR_INODE_ID, shardOf } from '../../src/proto/ids.js';
import type { CdcKindName, CdcReq, CdcResp, ShardKindName, ShardReq, ShardResp } from '../../src/proto/messages.js';
import { freeUdpPort, freeUdpRange } from './ports.js';
import { startEggsfs, tempDir, type Service } from './proc.js';
import { UdpFaultProxy } from './udp-fault-proxy.js';

export const ROOT = ROOT_DIR_INODE_ID;
export const SHARDS = 256;

/**
 * Start a process serving many UDP ports; another test on this machine may grab one of them
 * between our check and our bind, so a start that fails is retried (with fresh ports from
 * `ports()` when given).
 */
export async function startWithRetry(makeArgs: () => Promise<string[]> | string[], ready: RegExp, env: NodeJS.ProcessEnv = {}): Promise<Service> {
  const MAX_STARTS = 10;
  for (let attempt = 1; ; attempt++) {
    const p = startEggsfs(await makeArgs(), { env });
    try {
      await p.waitFor(ready, 60_000);
      return p;
    } catch (err) {
      await p.kill('SIGKILL');
      if (attempt >= MAX_STARTS) throw err;
      process.stderr.write(`start ${attempt} failed, retrying: ${(err as Error).message.slice(0, 300)}\n`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

export type Outcome<T = any> = { ok: true; body: T } | { ok: false; code: number };

export interface CdcClusterOptions {
  proxy?: boolean;
  shardTimeoutMs?: number;
  cdcArgs?: string[];
  cdcEnv?: NodeJS.ProcessEnv;
  /** Client → CDC timeout (one attempt). */
  clientTimeoutMs?: number;
}

export class CdcCluster {
  shardProc!: Service;
  cdcProc!: Service;
  proxy: UdpFaultProxy | undefined;
  cdcPort = 0;
  shardBase = 0;
  readonly tr = new UdpTransport({ defaultTimeoutMs: 2_000, defaultAttempts: 3 });
  private readonly shardDir = tempDir('cdc-shards');
  private readonly cdcDir = tempDir('cdc');
  private cdcEnv: NodeJS.ProcessEnv = {};

  private constructor(readonly opts: CdcClusterOptions) {}

  static async start(opts: CdcClusterOptions = {}): Promise<CdcCluster> {
    const c = new CdcCluster(opts);
    try {
      c.shardBase = await freeUdpRange(SHARDS);
      await c.startShards();
      if (opts.proxy) {
        const proxyBase = await freeUdpRange(SHARDS);
        c.proxy = await UdpFaultProxy.start({ basePort: proxyBase, count: SHARDS, upstreamBasePort: c.shardBase });
      }
      c.cdcPort = await freeUdpPort();
      await c.startCdc(opts.cdcEnv ?? {});
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  get cdcAddr(): Address {
    return { host: '127.0.0.1', port: this.cdcPort };
  }

  shardAddr(shard: number): Address {
    return { host: '127.0.0.1', port: this.shardBase + shard };
  }

  /** Start (or restart) the shard process on its fixed ports (retried: see startWithRetry). */
  private async startShards(): Promise<void> {
    this.shardProc = await startWithRetry(
      () => ['shard', '--shards', `0-${SHARDS - 1}`, '--dir', this.shardDir.path, '--bind', '127.0.0.1', '--base-port', String(this.shardBase)],
      /^ready shard /,
    );
  }

  async startCdc(env: NodeJS.ProcessEnv = this.cdcEnv): Promise<void> {
    this.cdcEnv = env;
    const target = this.proxy ? this.proxy.basePort : this.shardBase;
    this.cdcProc = await startWithRetry(
      () => [
        'cdc',
        '--dir',
        this.cdcDir.path,
        '--bind',
        '127.0.0.1',
        '--port',
        String(this.cdcPort),
        '--shard-host',
        '127.0.0.1',
        '--shard-base-port',
        String(target),
        '--shard-timeout-ms',
        String(this.opts.shardTimeoutMs ?? 150),
        ...(this.opts.cdcArgs ?? []),
      ],
      /^ready cdc /,
      env,
    );
  }

  /** kill -9 the CDC (if still running) and start it again, optionally with another environment. */
  async restartCdc(env: NodeJS.ProcessEnv = {}): Promise<void> {
    await this.cdcProc.kill('SIGKILL');
    await this.startCdc(env);
  }

  async killShards(): Promise<void> {
    await this.shardProc.kill('SIGKILL');
  }

  async restartShards(): Promise<void> {
    await this.shardProc.kill('SIGKILL');
    await this.startShards();
  }

  // --- requests ---

  cdc<K extends CdcKindName>(kind: K, body: CdcReq<K>): Promise<CdcResp<K>> {
    return this.tr.cdcRequest(this.cdcAddr, kind, body, { timeoutMs: this.opts.clientTimeoutMs ?? 20_000, attempts: 1 });
  }

  async outcome<K extends CdcKindName>(kind: K, body: CdcReq<K>): Promise<Outcome<CdcResp<K>>> {
    try {
      return { ok: true, body: await this.cdc(kind, body) };
    } catch (err) {
      if (err instanceof EggsError) return { ok: false, code: err.code };
      throw err;
    }
  }

  /** Expect the CDC request to fail with `code`. */
  async cdcErr<K extends CdcKindName>(kind: K, body: CdcReq<K>, code: number): Promise<void> {
    const o = await this.outcome(kind, body);
    assert.equal(o.ok ? 'success' : errorName(o.code), errorName(code), `${kind}: expected ${errorName(code)}`);
  }

  shard<K extends ShardKindName>(kind: K, body: ShardReq<K>, shard: number): Promise<ShardResp<K>> {
    return this.tr.shardRequest(this.shardAddr(shard), kind, body);
  }

  async shardErr<K extends ShardKindName>(kind: K, body: ShardReq<K>, shard: number, code: number): Promise<void> {
    try {
      await this.shard(kind, body, shard);
    } catch (err) {
      if (!(err instanceof EggsError)) throw err;
      assert.equal(errorName(err.code), errorName(code), `${kind}: expected ${errorName(code)}`);
      return;
    }
    assert.fail(`${kind}: expected ${errorName(code)}, got success`);
  }

  async mkdir(parent: bigint, name: string): Promise<bigint> {
    return (await this.cdc('MAKE_DIRECTORY', { ownerId: parent, name: Buffer.from(name) })).id;
  }

  /** A linked file (empty) in `dir`, constructed in dir's shard as the protocol requires. */
  async createFile(dir: bigint, name: string): Promise<bigint> {
    const s = shardOf(dir);
    const f = await this.shard('CONSTRUCT_FILE', { type: InodeType.FILE }, s);
    await this.shard('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: dir, name: Buffer.from(name) }, s);
    return f.id;
  }

  /** Target of the current edge dir/name, or undefined. */
  async lookup(dir: bigint, name: string): Promise<bigint | undefined> {
    try {
      return (await this.shard('LOOKUP', { dirId: dir, name: Buffer.from(name) }, shardOf(dir))).targetId;
    } catch (err) {
      if (err instanceof EggsError && err.code === ErrorCode.NAME_NOT_FOUND) return undefined;
      throw err;
    }
  }

  async owner(dir: bigint): Promise<bigint> {
    return (await this.shard('STAT', { id: dir }, shardOf(dir))).sizeOrOwner;
  }

  async listNames(dir: bigint): Promise<string[]> {
    const out: string[] = [];
    for (let h = 0n; ; ) {
      const r = await this.shard('READ_DIR', { dirId: dir, startHash: h, asOfTime: 0xffffffffffffffffn }, shardOf(dir));
      for (const e of r.results) out.push(e.name.toString('utf8'));
      if (r.nextHash === 0n) break;
      h = r.nextHash;
    }
    return out.sort();
  }

  fsck(): Promise<FsckReport> {
    return fsck({ shardAddress: (s) => this.shardAddr(s), shards: Array.from({ length: SHARDS }, (_, i) => i), timeoutMs: 1_000 });
  }

  async assertFsckClean(what = ''): Promise<FsckReport> {
    const r = await this.fsck();
    assert.deepEqual(
      r.problems.map((p) => `${p.kind}: ${p.message}`),
      [],
      `fsck found problems ${what}\nCDC stderr tail:\n${this.cdcProc.stderr().slice(-3000)}`,
    );
    return r;
  }

  async stop(): Promise<void> {
    this.tr.close();
    await this.cdcProc?.kill('SIGKILL');
    await this.shardProc?.kill('SIGKILL');
    await this.proxy?.close();
    this.shardDir.remove();
    this.cdcDir.remove();
  }
}
