// The shard's copy of the block-service registry (metadata.md §3.2 `block_servers`, §7.2): rows
// keyed by (ip, port) with stable local ids that spans refer to; never deleted. Kept in memory
// too, since every block-backed span needs it.
import type Database from 'better-sqlite3';
import type { BlockServiceEntry } from '../client/shuckle.js';
import { KEY_BYTES } from '../proto/crypto.js';

export interface BlockService {
  readonly id: number;
  readonly ip: string;
  /** Network byte order; undefined when `ip` is not an IPv4 address (then never picked). */
  readonly ipBytes: Buffer | undefined;
  readonly port: number;
  /** Empty when shuckle did not send keys (no cluster secret): never picked. */
  readonly key: Buffer;
  readonly storageClass: number;
  readonly terminal: boolean;
  readonly stale: boolean;
  readonly writeWeight: number;
  readonly active: boolean;
  readonly failureDomain: string | undefined;
}

/** Address reported for a block whose service is unknown (metadata.md §4.3 FILE_SPANS). */
export const UNKNOWN_IP = Buffer.from([255, 255, 255, 255]);
export const UNKNOWN_PORT = 65535;

export function parseIpv4(ip: string): Buffer | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return Buffer.from(parts);
}

function parseKey(hex: unknown): Buffer {
  if (typeof hex !== 'string' || !/^[0-9a-fA-F]{32}$/.test(hex)) return Buffer.alloc(0);
  return Buffer.from(hex, 'hex');
}

interface Row {
  id: bigint;
  ip: string;
  port: bigint;
  secret_key: Buffer;
  storage_class: bigint;
  terminal: bigint;
  stale: bigint;
  write_weight: number;
  active: bigint;
  failure_domain: string | null;
}

export class Registry {
  private byId = new Map<number, BlockService>();
  constructor(private readonly db: Database.Database) {
    this.reload();
  }

  get size(): number {
    return this.byId.size;
  }

  get(id: number): BlockService | undefined {
    return this.byId.get(id);
  }

  /** Number of services a span could be written to right now (any storage class). */
  writableCount(): number {
    let n = 0;
    for (const s of this.byId.values()) if (isWritable(s)) n++;
    return n;
  }

  reload(): void {
    const rows = this.db.prepare('SELECT * FROM block_services').all() as Row[];
    const m = new Map<number, BlockService>();
    for (const r of rows) {
      const id = Number(r.id);
      m.set(id, {
        id,
        ip: r.ip,
        ipBytes: parseIpv4(r.ip),
        port: Number(r.port),
        key: r.secret_key,
        storageClass: Number(r.storage_class),
        terminal: r.terminal === 1n,
        stale: r.stale === 1n,
        writeWeight: r.write_weight,
        active: r.active === 1n,
        failureDomain: r.failure_domain ?? undefined,
      });
    }
    this.byId = m;
  }

  /**
   * Apply one answer of shuckle's /show_me_what_you_got: everything inactive, then upsert every
   * entry by (ip, port). One transaction; the caller runs it between request batches.
   */
  apply(entries: readonly BlockServiceEntry[]): void {
    const deactivate = this.db.prepare('UPDATE block_services SET active = 0');
    const upsert = this.db.prepare(`INSERT INTO block_services (ip, port, secret_key, storage_class, terminal, stale, write_weight, active, failure_domain)
      VALUES (@ip, @port, @key, @sc, @terminal, @stale, @weight, 1, @fd)
      ON CONFLICT (ip, port) DO UPDATE SET secret_key = @key, storage_class = @sc, terminal = @terminal, stale = @stale,
        write_weight = @weight, active = 1, failure_domain = @fd`);
    this.db.transaction(() => {
      deactivate.run();
      for (const e of entries) {
        if (!e || typeof e.ip !== 'string' || !Number.isInteger(e.port) || e.port < 0 || e.port > 65535) continue;
        if (!Number.isInteger(e.storage_class) || e.storage_class < 0 || e.storage_class > 255) continue;
        const weight = typeof e.write_weight === 'number' && Number.isFinite(e.write_weight) && e.write_weight > 0 ? e.write_weight : 0;
        upsert.run({
          ip: e.ip,
          port: BigInt(e.port),
          key: parseKey(e.secret_key),
          sc: BigInt(e.storage_class),
          terminal: e.is_terminal || e.status === 'terminal' ? 1n : 0n,
          stale: e.is_stale ? 1n : 0n,
          weight,
          fd: typeof e.failure_domain === 'string' && e.failure_domain !== '' ? e.failure_domain : null,
        });
      }
    })();
    this.reload();
  }

  /**
   * Pick `count` distinct services of a storage class (metadata.md §7.2, distinct per the
   * [recommend]): weighted random choice without replacement, distinct failure domains first.
   * Stale, terminal, inactive and zero-weight services are avoided; if every candidate has weight
   * 0 the choice is uniform. Undefined when there are not enough services.
   */
  pick(storageClass: number, count: number, random: () => number = Math.random): BlockService[] | undefined {
    const candidates: BlockService[] = [];
    for (const s of this.byId.values()) if (s.storageClass === storageClass && isWritable(s)) candidates.push(s);
    let pool = candidates.filter((s) => s.writeWeight > 0);
    let uniform = false;
    if (pool.length === 0) {
      pool = candidates;
      uniform = true;
    }
    if (pool.length < count) return undefined;
    const chosen: BlockService[] = [];
    const usedDomains = new Set<string>();
    const remaining = pool.slice();
    while (chosen.length < count) {
      let from = remaining.filter((s) => s.failureDomain === undefined || !usedDomains.has(s.failureDomain));
      if (from.length === 0) from = remaining;
      const w = (s: BlockService) => (uniform ? 1 : s.writeWeight);
      let total = 0;
      for (const s of from) total += w(s);
      let x = random() * total;
      let pickIdx = from.length - 1;
      for (let i = 0; i < from.length; i++) {
        x -= w(from[i]!);
        if (x < 0) {
          pickIdx = i;
          break;
        }
      }
      const s = from[pickIdx]!;
      chosen.push(s);
      remaining.splice(remaining.indexOf(s), 1);
      if (s.failureDomain !== undefined) usedDomains.add(s.failureDomain);
    }
    return chosen;
  }
}

function isWritable(s: BlockService): boolean {
  return s.active && !s.terminal && !s.stale && s.key.length === KEY_BYTES && s.ipBytes !== undefined;
}

/** How many entries of a shuckle answer a shard could write to (for logs, before applying). */
export function countWritable(entries: readonly BlockServiceEntry[]): number {
  let n = 0;
  for (const e of entries) {
    if (!e || typeof e.ip !== 'string' || e.is_stale || e.is_terminal || e.status === 'terminal') continue;
    if (parseKey(e.secret_key).length === KEY_BYTES && parseIpv4(e.ip) !== undefined) n++;
  }
  return n;
}
