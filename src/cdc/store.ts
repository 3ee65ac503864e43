// cdc.sqlite (metadata.md §5.2): the directory-id counter and one row per transaction, holding
// while it runs its next step, its state and the exact in-flight shard request, and once done the
// response it was answered with (kept to answer client retries of the same request id).
//
// Writes are grouped: the server collects the rows changed since the last flush and writes them
// in one SQLite transaction (one fsync with synchronous=FULL), and sends the shard requests and
// client replies those rows describe only after that COMMIT returned.
import Database from 'better-sqlite3';
import path from 'node:path';
import { ROOT_DIR_INODE_ID } from '../proto/ids.js';

export type SyncMode = 'normal' | 'full';

export interface TxnRow {
  id: number;
  /** The row exists already: only the running/response columns are written (not the request). */
  update: boolean;
  clientAddr: string;
  clientRequestId: bigint;
  kind: number;
  body: Buffer;
  done: boolean;
  nextStep: string | null;
  state: string | null;
  shardRequestId: bigint | null;
  shardRequestShard: number | null;
  shardRequestKind: number | null;
  /** The whole datagram (envelope, body and MAC), resent verbatim. */
  shardRequestBody: Buffer | null;
  responseKind: number | null;
  responseBody: Buffer | null;
  startedTime: bigint;
  lastUpdateTime: bigint;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS cdc (
  id INTEGER PRIMARY KEY CHECK (id = 0),
  next_directory_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
  id INTEGER PRIMARY KEY,
  client_addr TEXT NOT NULL,
  request_id INTEGER NOT NULL,
  kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 4),
  body BLOB NOT NULL,
  done INTEGER NOT NULL CHECK (done IN (0, 1)),
  started_time INTEGER NOT NULL,
  last_update_time INTEGER NOT NULL,
  next_step TEXT,
  state TEXT,
  shard_request_id INTEGER,
  shard_request_shard INTEGER,
  shard_request_kind INTEGER,
  shard_request_body BLOB,
  response_kind INTEGER,
  response_body BLOB,
  CHECK (done = 0 OR (response_kind IS NOT NULL AND response_body IS NOT NULL AND next_step IS NULL
                      AND state IS NULL AND shard_request_body IS NULL)),
  CHECK (done = 1 OR (response_kind IS NULL AND next_step IS NOT NULL AND state IS NOT NULL
                      AND shard_request_id IS NOT NULL AND shard_request_body IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS transactions_running ON transactions (id) WHERE done = 0;
`;

// SQLite integers are signed 64-bit; u64 values are stored as their two's-complement image.
const toSql = (v: bigint) => BigInt.asIntN(64, v);
const fromSql = (v: bigint) => BigInt.asUintN(64, v);

export class CdcStore {
  readonly db: Database.Database;
  private readonly upsert: Database.Statement;
  private readonly updateStmt: Database.Statement;
  private readonly setCounter: Database.Statement;
  private readonly pruneStmt: Database.Statement;

  constructor(dir: string, sync: SyncMode) {
    this.db = new Database(path.join(dir, 'cdc.sqlite'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`);
    this.db.defaultSafeIntegers(true);
    this.db.exec(SCHEMA);
    this.db
      .prepare('INSERT OR IGNORE INTO cdc (id, next_directory_id) VALUES (0, ?)')
      .run(toSql(ROOT_DIR_INODE_ID + 1n));
    this.upsert = this.db.prepare(`INSERT OR REPLACE INTO transactions
      (id, client_addr, request_id, kind, body, done, started_time, last_update_time, next_step, state,
       shard_request_id, shard_request_shard, shard_request_kind, shard_request_body, response_kind, response_body)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.updateStmt = this.db.prepare(`UPDATE transactions SET done = ?, last_update_time = ?, next_step = ?, state = ?,
      shard_request_id = ?, shard_request_shard = ?, shard_request_kind = ?, shard_request_body = ?,
      response_kind = ?, response_body = ? WHERE id = ?`);
    this.setCounter = this.db.prepare('UPDATE cdc SET next_directory_id = ? WHERE id = 0');
    this.pruneStmt = this.db.prepare('DELETE FROM transactions WHERE done = 1 AND id < ?');
  }

  nextDirectoryId(): bigint {
    const r = this.db.prepare('SELECT next_directory_id AS n FROM cdc WHERE id = 0').get() as { n: bigint };
    return fromSql(r.n);
  }

  maxTxnId(): number {
    const r = this.db.prepare('SELECT max(id) AS m FROM transactions').get() as { m: bigint | null };
    return r.m === null ? 0 : Number(r.m);
  }

  maxShardRequestId(): bigint {
    const r = this.db.prepare('SELECT max(shard_request_id) AS m FROM transactions').get() as { m: bigint | null };
    return r.m === null ? 0n : fromSql(r.m);
  }

  private static rowOf(r: any): TxnRow {
    return {
      id: Number(r.id),
      update: true,
      clientAddr: r.client_addr,
      clientRequestId: fromSql(r.request_id),
      kind: Number(r.kind),
      body: r.body,
      done: r.done === 1n,
      nextStep: r.next_step,
      state: r.state,
      shardRequestId: r.shard_request_id === null ? null : fromSql(r.shard_request_id),
      shardRequestShard: r.shard_request_shard === null ? null : Number(r.shard_request_shard),
      shardRequestKind: r.shard_request_kind === null ? null : Number(r.shard_request_kind),
      shardRequestBody: r.shard_request_body,
      responseKind: r.response_kind === null ? null : Number(r.response_kind),
      responseBody: r.response_body,
      startedTime: fromSql(r.started_time),
      lastUpdateTime: fromSql(r.last_update_time),
    };
  }

  /** Transactions that were running when the CDC stopped, oldest first. */
  loadRunning(): TxnRow[] {
    return (this.db.prepare('SELECT * FROM transactions WHERE done = 0 ORDER BY id').all() as any[]).map(CdcStore.rowOf);
  }

  /** The most recent completed transactions, oldest first (for answering retries). */
  loadRecentDone(limit: number): TxnRow[] {
    const rows = this.db.prepare('SELECT * FROM transactions WHERE done = 1 ORDER BY id DESC LIMIT ?').all(limit) as any[];
    return rows.reverse().map(CdcStore.rowOf);
  }

  /** One group commit: every row and the counter in one SQLite transaction. */
  write(rows: Iterable<TxnRow>, nextDirectoryId: bigint | undefined): void {
    this.db.transaction(() => {
      for (const t of rows) {
        if (t.update) {
          const r = this.updateStmt.run(
            t.done ? 1 : 0,
            toSql(t.lastUpdateTime),
            t.nextStep,
            t.state,
            t.shardRequestId === null ? null : toSql(t.shardRequestId),
            t.shardRequestShard,
            t.shardRequestKind,
            t.shardRequestBody,
            t.responseKind,
            t.responseBody,
            t.id,
          );
          if (r.changes !== 1) throw new Error(`transaction ${t.id} to update is missing`);
          continue;
        }
        this.upsert.run(
          t.id,
          t.clientAddr,
          toSql(t.clientRequestId),
          t.kind,
          t.body,
          t.done ? 1 : 0,
          toSql(t.startedTime),
          toSql(t.lastUpdateTime),
          t.nextStep,
          t.state,
          t.shardRequestId === null ? null : toSql(t.shardRequestId),
          t.shardRequestShard,
          t.shardRequestKind,
          t.shardRequestBody,
          t.responseKind,
          t.responseBody,
        );
      }
      if (nextDirectoryId !== undefined) this.setCounter.run(toSql(nextDirectoryId));
    })();
  }

  /** Forget completed transactions older than `keepFromId`. */
  prune(keepFromId: number): void {
    this.pruneStmt.run(keepFromId);
  }

  close(): void {
    this.db.close();
  }
}
