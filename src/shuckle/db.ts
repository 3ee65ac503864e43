// Shuckle's SQLite state (services.md §3.1): the block_services table of the original (with our
// extension columns), plus the shards and the CDC that register over HTTP.
import Database from 'better-sqlite3';
import path from 'node:path';

export type BlockServiceStatus = 'ok' | 'drain' | 'terminal';

export interface BlockServiceRow {
  id: number;
  secret_key: string;
  status: BlockServiceStatus;
  ip: string;
  port: number;
  storage_class: number;
  failure_domain: string;
  /** Seconds since 2020-01-01 of the last successful check (the original's unit). */
  last_check: number;
  last_check_ms: number;
  used_bytes: number;
  free_bytes: number;
  used_n: number;
  free_n: number;
  /** Another key has since been verified at this address: this service is gone from it. */
  replaced: number;
}

export interface ShardRow {
  id: number;
  ip: string;
  port: number;
  last_seen_ms: number;
}

export interface CdcRow {
  ip: string;
  port: number;
  last_seen_ms: number;
}

export interface CheckResult {
  secretKeyHex: string;
  ip: string;
  port: number;
  storageClass: number;
  failureDomain: string;
  nowMs: number;
  usedBytes: number;
  freeBytes: number;
  usedN: number;
  freeN: number;
}

const EGGS_EPOCH_MS = 1_577_836_800_000;

export class ShuckleDb {
  private readonly db: Database.Database;
  private readonly stmts;

  constructor(dir: string) {
    this.db = new Database(path.join(dir, 'shuckle.sqlite'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(`
      create table if not exists block_services(
        id             integer primary key,
        secret_key     text unique not null,
        status         text not null default 'ok',
        ip_port        text not null,
        ip             text not null,
        port           integer not null,
        storage_class  integer not null,
        failure_domain text not null default '',
        last_check     integer not null,
        last_check_ms  integer not null,
        used_bytes     integer not null,
        free_bytes     integer not null,
        used_n         integer not null,
        free_n         integer not null,
        replaced       integer not null default 0
      );
      create index if not exists block_services_ip_port on block_services(ip_port);
      create table if not exists shards(id integer primary key, ip text not null, port integer not null, last_seen_ms integer not null);
      create table if not exists cdc(one integer primary key check (one = 0), ip text not null, port integer not null, last_seen_ms integer not null);
    `);
    this.stmts = {
      replaceOthers: this.db.prepare(`update block_services set replaced = 1 where ip_port = ? and secret_key <> ? and replaced = 0`),
      upsert: this.db.prepare(`
        insert into block_services(secret_key, ip_port, ip, port, storage_class, failure_domain, last_check, last_check_ms, used_bytes, free_bytes, used_n, free_n)
        values (@key, @ipPort, @ip, @port, @sc, @fd, @lastCheck, @nowMs, @usedBytes, @freeBytes, @usedN, @freeN)
        on conflict(secret_key) do update set ip_port = @ipPort, ip = @ip, port = @port, storage_class = @sc, failure_domain = @fd,
          last_check = @lastCheck, last_check_ms = @nowMs, used_bytes = @usedBytes, free_bytes = @freeBytes, used_n = @usedN, free_n = @freeN, replaced = 0`),
      all: this.db.prepare(`select id, secret_key, status, ip, port, storage_class, failure_domain, last_check, last_check_ms, used_bytes, free_bytes, used_n, free_n, replaced from block_services order by id`),
      drain: this.db.prepare(`update block_services set status = 'drain' where id = ? and status = 'ok'`),
      resume: this.db.prepare(`update block_services set status = 'ok' where id = ? and status = 'drain'`),
      terminate: this.db.prepare(`update block_services set status = 'terminal' where id = ? and last_check_ms <= ?`),
      upsertShard: this.db.prepare(`insert into shards(id, ip, port, last_seen_ms) values (?, ?, ?, ?) on conflict(id) do update set ip = excluded.ip, port = excluded.port, last_seen_ms = excluded.last_seen_ms`),
      shards: this.db.prepare(`select id, ip, port, last_seen_ms from shards order by id`),
      upsertCdc: this.db.prepare(`insert into cdc(one, ip, port, last_seen_ms) values (0, ?, ?, ?) on conflict(one) do update set ip = excluded.ip, port = excluded.port, last_seen_ms = excluded.last_seen_ms`),
      cdc: this.db.prepare(`select ip, port, last_seen_ms from cdc where one = 0`),
    };
  }

  recordCheck(r: CheckResult): void {
    const ipPort = `${r.ip}:${r.port}`;
    this.db.transaction(() => {
      this.stmts.replaceOthers.run(ipPort, r.secretKeyHex);
      this.stmts.upsert.run({
        key: r.secretKeyHex,
        ipPort,
        ip: r.ip,
        port: r.port,
        sc: r.storageClass,
        fd: r.failureDomain,
        lastCheck: Math.floor((r.nowMs - EGGS_EPOCH_MS) / 1000),
        nowMs: r.nowMs,
        usedBytes: r.usedBytes,
        freeBytes: r.freeBytes,
        usedN: r.usedN,
        freeN: r.freeN,
      });
    })();
  }

  blockServices(): BlockServiceRow[] {
    return this.stmts.all.all() as BlockServiceRow[];
  }

  /** Conditional transitions of the original; false when the condition did not hold. */
  changeStatus(action: 'drain' | 'resume' | 'terminate', id: number, staleBeforeMs: number): boolean {
    const r =
      action === 'drain' ? this.stmts.drain.run(id) : action === 'resume' ? this.stmts.resume.run(id) : this.stmts.terminate.run(id, staleBeforeMs);
    return r.changes > 0;
  }

  registerShards(shards: { id: number; ip: string; port: number }[], nowMs: number): void {
    this.db.transaction(() => {
      for (const s of shards) this.stmts.upsertShard.run(s.id, s.ip, s.port, nowMs);
    })();
  }

  shards(): ShardRow[] {
    return this.stmts.shards.all() as ShardRow[];
  }

  registerCdc(ip: string, port: number, nowMs: number): void {
    this.stmts.upsertCdc.run(ip, port, nowMs);
  }

  cdc(): CdcRow | null {
    return (this.stmts.cdc.get() as CdcRow | undefined) ?? null;
  }

  close(): void {
    this.db.close();
  }
}
