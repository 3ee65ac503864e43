// Starting and stopping the checkpointer thread (checkpoint-worker.ts) of a shard process, and the
// commit counts that the serving threads share with it.
import { Worker } from 'node:worker_threads';
import type { Logger } from '../util/log.js';
import type { CheckpointerData, CheckpointerStats, FromCheckpointer, ToCheckpointer } from './checkpoint-worker.js';
import type { SyncMode } from './schema.js';

/** Shard numbers are 0..255: one commit counter each. */
export const SHARD_COUNT = 256;

export function newCommitCounters(): SharedArrayBuffer {
  return new SharedArrayBuffer(SHARD_COUNT * Int32Array.BYTES_PER_ELEMENT);
}

export interface Checkpointer {
  /** Waits for the checkpoint in progress, then closes its connections. Call before closing shards. */
  stop(): Promise<CheckpointerStats | undefined>;
}

export function startCheckpointer(shards: { shard: number; path: string }[], sync: SyncMode, commits: SharedArrayBuffer, log: Logger): Promise<Checkpointer> {
  return new Promise((resolve, reject) => {
    const data: CheckpointerData = { shards, sync, commits };
    const w = new Worker(new URL('./checkpoint-worker.js', import.meta.url), { workerData: data });
    let started = false;
    let exited = false;
    let onStopped: ((st: CheckpointerStats | undefined) => void) | undefined;
    w.on('message', (m: FromCheckpointer) => {
      if (m.type === 'ready') {
        started = true;
        resolve(handle);
      } else if (m.type === 'failed') reject(new Error(`shard checkpointer: ${m.message}`));
      else if (m.type === 'stopped') onStopped?.(m.stats);
    });
    w.on('error', (err) => {
      // Serving goes on: every COMMIT that grows a WAL past INLINE_CHECKPOINT_WAL_BYTES checkpoints it.
      log.error(`shard checkpointer failed, checkpoints now run inline at a larger bound: ${err.stack ?? err.message}`);
      if (!started) reject(err);
    });
    w.on('exit', () => {
      exited = true;
      onStopped?.(undefined);
    });
    const handle: Checkpointer = {
      stop: () =>
        new Promise((res) => {
          if (exited) return res(undefined);
          onStopped = (st) => {
            onStopped = undefined;
            res(st);
          };
          w.postMessage({ type: 'stop' } satisfies ToCheckpointer);
        }),
    };
  });
}
