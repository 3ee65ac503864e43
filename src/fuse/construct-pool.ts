// Transient files constructed ahead of creates, one per shard that creates went to recently: a
// create takes the ready one (constructed during the previous create) and starts the next, so a
// close that links a file no longer waits for its CONSTRUCT_FILE round trip.
//
// A file must live in its directory's shard, so the pool is per shard (any directory of a shard
// routes its CONSTRUCT_FILE there). A constructed file left unused expires on its shard (its
// deadline is 1 h); one older than MAX_AGE_MS is not handed out, so a file taken from the pool always
// has most of that hour ahead of it (as many as MAX_POOLED_SHARDS can be left behind at unmount).
import assert from 'node:assert/strict';
import { shardOf } from '../proto/ids.js';

export interface Constructed {
  id: bigint;
  cookie: bigint;
}

/** Constructed files held at once (one per shard); the least recently used shard is dropped. */
export const MAX_POOLED_SHARDS = 32;
/** A constructed file older than this is not handed out (the shard's deadline is 1 h). */
export const MAX_AGE_MS = 60_000;

interface Ready {
  readonly file: Promise<Constructed>;
  readonly atMs: number;
  /** Set when the construction failed: the entry is not handed out. */
  failed: boolean;
}

export class ConstructPool {
  /** shard → its next file; least recently used first. */
  private readonly ready = new Map<number, Ready>();

  constructor(
    private readonly construct: (dirId: bigint) => Promise<Constructed>,
    private readonly nowMs: () => number,
  ) {}

  /** Files held (constructed or on their way), for tests and logs. */
  get size(): number {
    return this.ready.size;
  }

  /**
   * A transient file in the shard of `dirId`: the one constructed ahead, if fresh, else a new one
   * constructed now. Either way, the next one for this shard is constructed at once, so call this
   * once the caller's own reply is out of the way (the send costs this thread 50-90 µs).
   */
  take(dirId: bigint): Promise<Constructed> {
    const shard = shardOf(dirId);
    const r = this.ready.get(shard);
    this.ready.delete(shard);
    const fresh = r !== undefined && !r.failed && this.nowMs() - r.atMs < MAX_AGE_MS;
    const file = fresh ? r.file : this.construct(dirId);
    this.refill(shard, dirId);
    return file;
  }

  /** Forgets the shard's file (a create there failed: the next one starts afresh). */
  drop(dirId: bigint): void {
    this.ready.delete(shardOf(dirId));
  }

  private refill(shard: number, dirId: bigint): void {
    let file: Promise<Constructed>;
    try {
      file = this.construct(dirId);
    } catch {
      return; // no address for the shard: the next take constructs (and reports) itself
    }
    const r: Ready = { file, atMs: this.nowMs(), failed: false };
    // A failure is reported to whoever takes the entry, if anyone does; never unhandled.
    file.catch(() => {
      r.failed = true;
      if (this.ready.get(shard) === r) this.ready.delete(shard);
    });
    this.ready.set(shard, r);
    while (this.ready.size > MAX_POOLED_SHARDS) this.ready.delete(this.ready.keys().next().value!);
    assert(this.ready.size <= MAX_POOLED_SHARDS);
  }
}
