// The CDC's database writer, on its own thread: a group commit (and its fsync) takes from 0.1 ms
// on a quiet machine to several ms on a busy one, and on the main thread it would stop the CDC
// from receiving answers and preparing the next batch meanwhile. The main thread sends one batch
// at a time and sends nothing a batch describes before the worker says it is committed.
import { parentPort, workerData } from 'node:worker_threads';
import { CdcStore, type SyncMode, type TxnRow } from './store.js';

export interface WriteBatch {
  seq: number;
  rows: TxnRow[];
  nextDirectoryId: bigint | undefined;
  pruneBelowId: number | undefined;
}
export type WorkerReply = { seq: number; ok: true } | { seq: number; ok: false; message: string };

const asBuffer = (v: Uint8Array | null): Buffer | null => (v === null ? null : Buffer.from(v.buffer, v.byteOffset, v.byteLength));

const { dir, sync } = workerData as { dir: string; sync: SyncMode };
const store = new CdcStore(dir, sync);
parentPort!.on('message', (b: WriteBatch | 'close') => {
  if (b === 'close') {
    store.close();
    parentPort!.close();
    return;
  }
  try {
    // Structured clone turns Buffers into Uint8Arrays; SQLite binds only Buffers as blobs.
    for (const r of b.rows) {
      r.body = asBuffer(r.body)!;
      r.shardRequestBody = asBuffer(r.shardRequestBody);
      r.responseBody = asBuffer(r.responseBody);
    }
    store.write(b.rows, b.nextDirectoryId);
    if (b.pruneBelowId !== undefined) store.prune(b.pruneBelowId);
    parentPort!.postMessage({ seq: b.seq, ok: true } satisfies WorkerReply);
  } catch (err) {
    parentPort!.postMessage({ seq: b.seq, ok: false, message: (err as Error).message } satisfies WorkerReply);
  }
});
