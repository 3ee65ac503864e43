// A pool of empty spare files in <store>/.spares, created ahead of need and made durable in
// batches (one directory fsync per batch, in the background). A block is written into a spare
// whose name is already durable, so fdatasync'ing its bytes (O_DSYNC) makes bytes, size and a
// name durable in one disk trip; the spare is then renamed to the block's name without waiting
// for that rename to be durable (recovery redoes it from the record log, see store.ts).
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../util/log.js';

export const SPARES_DIR = '.spares';
/** Refill when fewer durable spares than this are ready. */
const SPARE_POOL_LOW = 128;
/** A refill tops the pool up to this many (8 clients of 1 MiB blocks use ~1,000 a second). */
const SPARE_POOL_TARGET = 256;
/** Spares a refill creates per event-loop turn, so that receiving never waits long. */
const SPARE_CREATE_PER_TURN = 16;

export interface Spare {
  id: bigint;
  path: string;
  /** Resolves once the spare's name is durable (already resolved for a spare from the pool). */
  durable: Promise<void>;
}

const RESOLVED: Promise<void> = Promise.resolve();

export function spareName(id: bigint): string {
  return id.toString(16).padStart(16, '0');
}

/** The spare id a file name in .spares stands for, or null for anything else. */
export function parseSpareName(name: string): bigint | null {
  if (!/^[0-9a-f]{16}$/.test(name)) return null;
  const id = BigInt('0x' + name);
  return id === 0n ? null : id;
}

function newSpareId(): bigint {
  for (;;) {
    const id = randomBytes(8).readBigUInt64LE(0);
    if (id !== 0n) return id;
  }
}

/**
 * Synchronous: creating a file in a cached directory takes tens of microseconds, while a trip
 * through the thread pool waits behind the block writes queued there (measured: with 8 writers a
 * refill through the thread pool came too late for 1 write in 5, which then paid a directory
 * fsync of its own).
 */
function createEmptySync(p: string): void {
  fs.closeSync(fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o666));
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

export class SparePool {
  private readonly ready: bigint[] = [];
  private refilling = false;
  private closed = false;
  private refillDone: Promise<void> = RESOLVED;

  constructor(
    readonly dir: string,
    /** Group-committed fsync of `dir`. */
    private readonly syncDir: () => Promise<void>,
    private readonly log: Logger,
  ) {}

  /** Empty spares found at startup, made durable by the caller's directory sync. */
  adopt(ids: bigint[]): void {
    this.ready.push(...ids);
  }

  get readyCount(): number {
    return this.ready.length;
  }

  path(id: bigint): string {
    return path.join(this.dir, spareName(id));
  }

  /** A spare to write one block into. Never blocks on the disk's flush: see Spare.durable. */
  take(): Spare {
    const id = this.ready.pop();
    if (this.ready.length < SPARE_POOL_LOW) this.refill();
    if (id !== undefined) return { id, path: this.path(id), durable: RESOLVED };
    // The pool ran dry (a burst of writes): a fresh spare, whose name becomes durable with the
    // next directory sync, in parallel with receiving the block.
    const fresh = newSpareId();
    const p = this.path(fresh);
    createEmptySync(p);
    const durable = this.syncDir();
    // Awaited by the write's commit; a write aborted before it must not leave an unhandled rejection.
    durable.catch(() => {});
    return { id: fresh, path: p, durable };
  }

  /** Starts topping the pool up in the background (no-op while a refill runs). */
  refill(): void {
    if (this.refilling || this.closed) return;
    this.refilling = true;
    this.refillDone = this.refillLoop().finally(() => (this.refilling = false));
  }

  /** Fills the pool and waits (startup). */
  async fill(): Promise<void> {
    this.refill();
    await this.refillDone;
  }

  private async refillLoop(): Promise<void> {
    try {
      while (!this.closed && this.ready.length < SPARE_POOL_LOW) {
        const ids = Array.from({ length: SPARE_POOL_TARGET - this.ready.length }, newSpareId);
        for (let i = 0; i < ids.length; i++) {
          if (i > 0 && i % SPARE_CREATE_PER_TURN === 0) await nextTurn();
          createEmptySync(this.path(ids[i]!));
        }
        await this.syncDir();
        this.ready.push(...ids);
      }
    } catch (err) {
      // ENOSPC and the like: writes fall back to fresh spares (and fail there if the disk is full).
      this.log.warn(`${this.dir}: could not create spare files: ${(err as Error).message}`);
    }
  }

  /** Stops refilling; the remaining empty spares stay for the next start. */
  async close(): Promise<void> {
    this.closed = true;
    await this.refillDone.catch(() => {});
  }
}
