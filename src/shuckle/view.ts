// What shuckle shows: the rows as the JSON of §3.3 (with our extension fields) and cluster totals.
// Secret keys appear only when the caller proved it holds the cluster secret.
import type { BlockServiceEntry, CdcEntry, ShardEntry } from '../client/shuckle.js';
import type { BlockServiceRow, ShuckleDb } from './db.js';
import { waterFill } from './weights.js';

export interface Staleness {
  /** A block service is stale when its last successful check is at least this old (600 s). */
  blockStaleMs: number;
  /** A shard or the CDC is stale when it has not registered for this long. */
  serviceStaleMs: number;
}

export interface Overview {
  now_ms: number;
  block_stale_ms: number;
  block_services: BlockServiceEntry[];
  shards: (ShardEntry & { is_stale: boolean })[];
  cdc: (CdcEntry & { is_stale: boolean }) | null;
  totals: {
    block_services: number;
    ok: number;
    drain: number;
    terminal: number;
    stale: number;
    capacity_bytes: number;
    used_bytes: number;
    free_bytes: number;
    blocks: number;
    shards_up: number;
    shards_stale: number;
    shards_missing: number;
  };
}

export function isStale(row: BlockServiceRow, nowMs: number, s: Staleness): boolean {
  return row.last_check_ms <= nowMs - s.blockStaleMs;
}

/** §3.3: one entry per (current) row; weights over ok, non-stale rows, per storage class. */
export function blockServiceEntries(db: ShuckleDb, nowMs: number, s: Staleness, withKeys: boolean): BlockServiceEntry[] {
  const rows = db.blockServices().filter((r) => !r.replaced);
  const weight = new Map<number, number>();
  const byClass = new Map<number, BlockServiceRow[]>();
  for (const r of rows) {
    if (r.status !== 'ok' || isStale(r, nowMs, s)) continue;
    let l = byClass.get(r.storage_class);
    if (!l) byClass.set(r.storage_class, (l = []));
    l.push(r);
  }
  for (const list of byClass.values()) {
    const w = waterFill(list.map((r) => ({ usedBytes: r.used_bytes, freeBytes: r.free_bytes })));
    list.forEach((r, i) => weight.set(r.id, w[i]!));
  }
  return rows.map((r) => ({
    ip: r.ip,
    port: r.port,
    storage_class: r.storage_class,
    is_terminal: r.status === 'terminal',
    is_stale: isStale(r, nowMs, s),
    write_weight: weight.get(r.id) ?? 0,
    secret_key: withKeys ? r.secret_key : '',
    id: r.id,
    failure_domain: r.failure_domain,
    status: r.status,
    used_bytes: r.used_bytes,
    free_bytes: r.free_bytes,
    used_n: r.used_n,
    last_seen_ms: r.last_check_ms,
  }));
}

export function overview(db: ShuckleDb, nowMs: number, s: Staleness): Overview {
  const bs = blockServiceEntries(db, nowMs, s, false);
  const shards = db.shards().map((r) => ({ ...r, is_stale: r.last_seen_ms <= nowMs - s.serviceStaleMs }));
  const c = db.cdc();
  const t: Overview['totals'] = {
    block_services: bs.length,
    ok: 0,
    drain: 0,
    terminal: 0,
    stale: 0,
    capacity_bytes: 0,
    used_bytes: 0,
    free_bytes: 0,
    blocks: 0,
    shards_up: shards.filter((x) => !x.is_stale).length,
    shards_stale: shards.filter((x) => x.is_stale).length,
    shards_missing: 256 - shards.length,
  };
  for (const b of bs) {
    t[b.status!]++;
    if (b.is_stale) t.stale++;
    t.used_bytes += b.used_bytes!;
    t.free_bytes += b.free_bytes!;
    t.capacity_bytes += b.used_bytes! + b.free_bytes!;
    t.blocks += b.used_n!;
  }
  return { now_ms: nowMs, block_stale_ms: s.blockStaleMs, block_services: bs, shards, cdc: c ? { ...c, is_stale: c.last_seen_ms <= nowMs - s.serviceStaleMs } : null, totals: t };
}
