// The checkpointer thread: copies shards' WALs into their databases with PASSIVE checkpoints on
// its own connections, so that no COMMIT on a serving event loop runs one (a checkpoint there
// stalled every shard of that loop for milliseconds: two fsyncs and the copy). Serving threads
// publish each shard's commit count in a shared array; only shards that committed are looked at,
// and their WAL's size is read from the wal-index header in the -shm file (one pread).
import { closeSync, openSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { logger } from '../util/log.js';
import { CHECKPOINT_WAL_BYTES, openCheckpointDb, type SyncMode } from './schema.js';
import { WAL_INDEX_READ_BYTES, walPendingBytes } from './wal-index.js';

/** How often the commit counts are looked at. Bounds how far past the threshold a WAL grows. */
export const CHECKPOINT_POLL_MS = 5;
/** A shard's -shm is read once it has committed this many times since the last read. */
export const SHM_READ_EVERY_COMMITS = 8;
/** A shard that stopped committing is checkpointed whole after this long (small WAL at rest). */
export const CHECKPOINT_IDLE_MS = 1_000;
/**
 * Passes of one checkpoint: each copies what was committed during the previous one. The WAL
 * restarts (and stops growing) only if a serving transaction begins with every frame copied.
 */
export const CHECKPOINT_MAX_PASSES = 4;
/** Checkpoint failures logged at most this often. */
const FAILURE_LOG_INTERVAL_MS = 10_000;

export interface CheckpointerData {
  shards: { shard: number; path: string }[];
  sync: SyncMode;
  /** Int32 per shard number: its serving thread's commit count (wrapping). */
  commits: SharedArrayBuffer;
}
export type ToCheckpointer = { type: 'stop' };
export interface CheckpointerStats {
  checkpoints: number;
  framesCopied: number;
  failures: number;
  maxCheckpointMs: number;
}
export type FromCheckpointer = { type: 'ready' } | { type: 'stopped'; stats: CheckpointerStats } | { type: 'failed'; message: string };

interface ShardState {
  readonly shard: number;
  readonly path: string;
  db: Database.Database | undefined;
  shmFd: number;
  /** Commit count at the last poll, and when it last changed. */
  seenCommits: number;
  changedAtMs: number;
  /** Commit count at the last -shm read. */
  readCommits: number;
  /** Committed since its last whole checkpoint. */
  dirty: boolean;
}

function main(): void {
  const port = parentPort!;
  const data = workerData as CheckpointerData;
  const log = logger('shard checkpointer');
  const commits = new Int32Array(data.commits);
  const shmBuf = Buffer.alloc(WAL_INDEX_READ_BYTES);
  const stats: CheckpointerStats = { checkpoints: 0, framesCopied: 0, failures: 0, maxCheckpointMs: 0 };
  let lastFailureLogMs = 0;
  const shards: ShardState[] = data.shards.map(({ shard, path }) => {
    const c = Atomics.load(commits, shard);
    return { shard, path, db: undefined, shmFd: -1, seenCommits: c, changedAtMs: 0, readCommits: c, dirty: false };
  });

  const closeDb = (s: ShardState) => {
    try {
      s.db?.close();
    } catch {
      /* closing anyway */
    }
    s.db = undefined;
  };

  /** idle: the shard stopped committing, so its connection is closed after a whole checkpoint. */
  const checkpoint = (s: ShardState, idle: boolean) => {
    const startMs = performance.now();
    try {
      s.db ??= openCheckpointDb(s.path, data.sync);
      let whole = false;
      for (let pass = 0; pass < CHECKPOINT_MAX_PASSES && !whole; pass++) {
        const row = (s.db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[])[0]!;
        stats.framesCopied += Math.max(0, row.checkpointed);
        // Whole when nothing was busy and every frame is in the database.
        whole = row.busy === 0 && row.log === row.checkpointed;
      }
      stats.checkpoints++;
      if (whole) s.dirty = false;
      // Connections are kept only for shards being written: 256 open ones cost ~75 MiB.
      if (whole && idle) closeDb(s);
      else s.changedAtMs = Date.now(); // the idle retry waits another CHECKPOINT_IDLE_MS
    } catch (err) {
      stats.failures++;
      s.changedAtMs = Date.now();
      const nowMs = Date.now();
      if (nowMs - lastFailureLogMs >= FAILURE_LOG_INTERVAL_MS) {
        lastFailureLogMs = nowMs;
        log.warn(`checkpoint of ${s.path} failed (${stats.failures} so far; the COMMIT that grows a WAL past its bound checkpoints instead): ${(err as Error).message}`);
      }
    }
    stats.maxCheckpointMs = Math.max(stats.maxCheckpointMs, performance.now() - startMs);
  };

  const pending = (s: ShardState): number => {
    if (s.shmFd < 0) {
      try {
        s.shmFd = openSync(`${s.path}-shm`, 'r');
      } catch {
        return -1;
      }
    }
    return walPendingBytes(s.shmFd, shmBuf);
  };

  // A WAL left by an earlier run is copied once (at the first poll).
  for (const s of shards) s.dirty = pending(s) !== 0;

  let timer: NodeJS.Timeout | undefined;
  const poll = () => {
    const nowMs = Date.now();
    for (const s of shards) {
      const c = Atomics.load(commits, s.shard);
      if (c !== s.seenCommits) {
        s.seenCommits = c;
        s.changedAtMs = nowMs;
        s.dirty = true;
      }
      if (((c - s.readCommits) | 0) >= SHM_READ_EVERY_COMMITS) {
        s.readCommits = c;
        const bytes = pending(s);
        if (bytes < 0 || bytes >= CHECKPOINT_WAL_BYTES) checkpoint(s, false);
      } else if (s.dirty && nowMs - s.changedAtMs >= CHECKPOINT_IDLE_MS) {
        s.readCommits = c;
        checkpoint(s, true);
      }
    }
    timer = setTimeout(poll, CHECKPOINT_POLL_MS);
  };

  port.on('message', (m: ToCheckpointer) => {
    if (m.type !== 'stop') return;
    // Runs between checkpoints (each is synchronous): no checkpoint is cut short.
    clearTimeout(timer);
    for (const s of shards) {
      closeDb(s);
      if (s.shmFd >= 0) closeSync(s.shmFd);
    }
    port.postMessage({ type: 'stopped', stats } satisfies FromCheckpointer);
    port.close();
  });
  timer = setTimeout(poll, CHECKPOINT_POLL_MS);
  port.postMessage({ type: 'ready' } satisfies FromCheckpointer);
}

// Only as a thread: tests import the limits above.
if (parentPort && workerData) {
  try {
    main();
  } catch (err) {
    parentPort.postMessage({ type: 'failed', message: (err as Error).message } satisfies FromCheckpointer);
  }
}
