// Hosting a group of shards on the current thread's event loop: open their databases, bind their
// sockets, and schedule group-commit rounds. Used directly (one thread) or by worker.ts (one
// group per worker thread).
import path from 'node:path';
import type { BlockServiceEntry } from '../client/shuckle.js';
import type { Logger } from '../util/log.js';
import { openShardDb, type SyncMode } from './schema.js';
import { ShardServer, type ShardStats } from './server.js';
import { ShardStore } from './store.js';

export interface HostOptions {
  shards: number[];
  dir: string;
  bind: string;
  basePort: number;
  sync: SyncMode;
  /** Int32 per shard number, shared with the checkpointer thread: each shard's commit count. */
  commitCounters?: SharedArrayBuffer;
}

export interface ShardHost {
  readonly servers: ShardServer[];
  applyBlockServices(entries: readonly BlockServiceEntry[]): void;
  stats(): ShardStats;
  close(): void;
}

export function shardDbPath(dir: string, shard: number): string {
  return path.join(dir, `shard_${String(shard).padStart(3, '0')}.sqlite`);
}

export async function hostShards(opts: HostOptions, log: Logger): Promise<ShardHost> {
  // Group commit scheduling: every shard with queued requests runs one batch per round; a round
  // starts after the event loop has read everything that arrived (setImmediate).
  const commits = opts.commitCounters ? new Int32Array(opts.commitCounters) : undefined;
  let ready = new Set<ShardServer>();
  let roundScheduled = false;
  const round = () => {
    roundScheduled = false;
    const now = ready;
    ready = new Set();
    for (const s of now) {
      try {
        if (s.runBatch()) ready.add(s);
      } catch (err) {
        s.recover(err);
        if (s.pending > 0) ready.add(s);
      }
      // Tells the checkpointer which WALs grew (wraps, as the checkpointer expects).
      if (commits) Atomics.store(commits, s.store.shard, s.stats.commits | 0);
    }
    if (ready.size > 0) scheduleRound();
  };
  const scheduleRound = () => {
    if (!roundScheduled) {
      roundScheduled = true;
      setImmediate(round);
    }
  };
  const schedule = (s: ShardServer) => {
    ready.add(s);
    scheduleRound();
  };

  const servers: ShardServer[] = [];
  const dbs: { close(): void }[] = [];
  const close = () => {
    for (const s of servers) s.close();
    for (const db of dbs) {
      try {
        db.close();
      } catch {
        /* closing anyway */
      }
    }
  };
  try {
    for (const shard of opts.shards) {
      const db = openShardDb(shardDbPath(opts.dir, shard), shard, opts.sync);
      dbs.push(db);
      const store = new ShardStore(db, shard);
      const server = new ShardServer(store, db, log, schedule);
      servers.push(server);
      await server.bind(opts.basePort + shard, opts.bind);
    }
  } catch (err) {
    close();
    throw err;
  }
  return {
    servers,
    // Runs between batches (batches are synchronous), so never inside a request transaction.
    applyBlockServices(entries) {
      for (const s of servers) s.store.registry.apply(entries);
    },
    stats() {
      const total: ShardStats = { received: 0, answered: 0, dropped: 0, internalErrors: 0, batches: 0, commits: 0, committedRequests: 0 };
      for (const s of servers) for (const k of Object.keys(total) as (keyof ShardStats)[]) total[k] += s.stats[k];
      return total;
    },
    close,
  };
}
