// Which transactions may run at the same time.
//
// Every transaction names, before it starts, the in-memory locks it needs (transactions.ts):
// - one key per edge (dir, name) it will lock, create or move: the source and destination edges of
//   renames, the parent edge of mkdir and rmdir;
// - RENAME_DIRECTORY additionally takes one global key, so directory renames run one at a time.
// A transaction starts only when all its keys are free, holds them until it is done, and keys are
// granted in arrival order (a waiting transaction also blocks later arrivals that want its keys),
// so there is no deadlock (all keys are taken at once) and no starvation.
//
// Why this keeps the namespace invariants with transactions running concurrently:
// - Two transactions on the same edge are serialised, so the shard-side edge lock (a holder-less
//   boolean) is only ever held by one transaction at a time, as in the serial prototype.
// - Transactions on different edges interact only through single-shard atomic requests: e.g. an
//   rmdir's SET_DIRECTORY_OWNER(victim, 0) and a mkdir/rename creating an edge inside the victim are
//   both executed in the victim's shard, one before the other, and the loser fails cleanly
//   (DIRECTORY_NOT_EMPTY, or CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY and a rollback).
// - The no-loops check of RENAME_DIRECTORY reads the parent pointers of the new parent's
//   ancestors. Only RENAME_DIRECTORY changes a live directory's parent to another live directory
//   (mkdir sets the parent of a brand-new directory, rmdir sets it to 0, which ends the walk), so
//   with directory renames serialised the ancestor chain cannot change under the walk, and two
//   renames can never each pass the check and together make a cycle (the /a→/b/a, /b→/a/b race).
//   Locking the whole ancestor chain instead would allow parallel directory renames, but the chain
//   is discovered step by step, so the locks could not be taken at once; directory renames are
//   rare next to mkdir and file renames, which stay fully concurrent.
import assert from 'node:assert/strict';

export interface Lockable {
  readonly lockKeys: readonly string[];
}

export class LockScheduler<T extends Lockable> {
  private readonly held = new Map<string, T>();
  private readonly waiting: T[] = [];
  /** How many waiting transactions want each key (they block later arrivals on it). */
  private readonly claims = new Map<string, number>();
  private runningCount = 0;

  constructor(
    readonly maxRunning: number,
    readonly maxQueued: number,
    private readonly onStart: (t: T) => void,
  ) {}

  get running(): number {
    return this.runningCount;
  }
  get queued(): number {
    return this.waiting.length;
  }

  private free(t: T, claimed: ReadonlyMap<string, number>): boolean {
    for (const k of t.lockKeys) if (this.held.has(k) || (claimed.get(k) ?? 0) > 0) return false;
    return true;
  }

  private take(t: T): void {
    for (const k of t.lockKeys) {
      assert(!this.held.has(k), `lock ${k} taken twice`);
      this.held.set(k, t);
    }
    this.runningCount++;
  }

  /** Queue a transaction; false (and nothing queued) when the queue is full. */
  submit(t: T): boolean {
    if (this.runningCount < this.maxRunning && this.free(t, this.claims)) {
      this.take(t);
      this.onStart(t);
      return true;
    }
    if (this.waiting.length >= this.maxQueued) return false;
    this.waiting.push(t);
    for (const k of t.lockKeys) this.claims.set(k, (this.claims.get(k) ?? 0) + 1);
    return true;
  }

  /** A transaction resumed after a restart: it held its locks when the CDC stopped. */
  adopt(t: T): void {
    this.take(t);
  }

  release(t: T): void {
    for (const k of t.lockKeys) {
      assert(this.held.get(k) === t, `lock ${k} released by a transaction that does not hold it`);
      this.held.delete(k);
    }
    this.runningCount--;
    assert(this.runningCount >= 0);
    this.pump();
  }

  private pump(): void {
    if (this.waiting.length === 0) return;
    const claimed = new Map<string, number>();
    const keep: T[] = [];
    const started: T[] = [];
    for (const t of this.waiting) {
      if (this.runningCount < this.maxRunning && this.free(t, claimed)) {
        this.take(t);
        started.push(t);
      } else {
        keep.push(t);
        for (const k of t.lockKeys) claimed.set(k, (claimed.get(k) ?? 0) + 1);
      }
    }
    this.waiting.length = 0;
    this.waiting.push(...keep);
    this.claims.clear();
    for (const [k, n] of claimed) this.claims.set(k, n);
    for (const t of started) this.onStart(t);
  }
}
