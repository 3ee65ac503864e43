// Exact-length reads from a TCP stream, with an inactivity timeout and bounded buffering: the
// framing both ends of the block-service protocol need (a short read is an error, never a
// partial message, and a silent peer is dropped instead of held forever).
import type { Socket } from 'node:net';

export class ShortReadError extends Error {
  override readonly name = 'ShortReadError';
}

export class ReadTimeoutError extends Error {
  override readonly name = 'ReadTimeoutError';
}

/**
 * Bytes received but not yet consumed, summed over many readers (e.g. every connection of a
 * process): readers pause their sockets while the total is at the limit.
 */
export class ByteBudget {
  private usedBytes = 0;
  private readonly waiters = new Set<() => void>();
  constructor(readonly limitBytes: number) {
    if (!(limitBytes > 0)) throw new RangeError('byte budget must be positive');
  }
  get used(): number {
    return this.usedBytes;
  }
  get exhausted(): boolean {
    return this.usedBytes >= this.limitBytes;
  }
  take(n: number): void {
    this.usedBytes += n;
  }
  give(n: number): void {
    this.usedBytes -= n;
    if (this.usedBytes < 0) throw new Error('byte budget released more than it held');
    if (this.usedBytes < this.limitBytes && this.waiters.size > 0) {
      const ws = [...this.waiters];
      this.waiters.clear();
      for (const w of ws) w();
    }
  }
  /** Calls `cb` once the budget has room again. */
  whenFree(cb: () => void): void {
    this.waiters.add(cb);
  }
  forget(cb: () => void): void {
    this.waiters.delete(cb);
  }
}

export interface ExactReaderOptions {
  /** Buffered-but-unconsumed bytes above which the socket is paused (backpressure). */
  highWaterBytes: number;
  /** A wait for bytes longer than this fails with ReadTimeoutError. */
  idleTimeoutMs: number;
  /** Shared bound on buffered bytes across readers. */
  budget?: ByteBudget;
  /**
   * The socket was created with `onread` (see ReadSlabs) and its owner passes every chunk to
   * push(); no 'data' listener is added.
   */
  fedByOnread?: boolean;
}

/**
 * Buffers for a socket's `onread` option, carved one after another from large slabs: the kernel
 * hands over up to a slab's remaining bytes per read (megabytes on loopback, instead of Node's
 * 64 KiB), and the chunks given out are views of the slab, never copied or overwritten.
 */
export class ReadSlabs {
  private slab: Buffer | null = null;
  private usedBytes = 0;
  constructor(
    /** Size of each slab. */
    private readonly slabBytes: number,
    /** A slab with less than this left is replaced by a fresh one. */
    private readonly minReadBytes: number,
  ) {
    if (!(minReadBytes > 0 && slabBytes >= minReadBytes)) throw new RangeError('ReadSlabs: need 0 < minReadBytes <= slabBytes');
  }
  /** The buffer the next read goes into (Node calls this before every read). */
  next(): Buffer {
    if (!this.slab || this.slabBytes - this.usedBytes < this.minReadBytes) {
      this.slab = Buffer.allocUnsafe(this.slabBytes);
      this.usedBytes = 0;
    }
    return this.slab.subarray(this.usedBytes);
  }
  /** The read into next()'s buffer got `n` bytes: they now belong to the caller. */
  taken(buf: Buffer, n: number): Buffer {
    this.usedBytes += n;
    return buf.subarray(0, n);
  }
}

export class ExactReader {
  private readonly queue: Buffer[] = [];
  private head = 0; // index of the first unconsumed queue element
  private bufferedBytes = 0;
  private ended = false;
  private failure: Error | null = null;
  private paused = false;
  private wake: (() => void) | null = null;
  /** Bytes of ours counted in the shared budget (all released when the socket closes). */
  private budgetHeld = 0;
  private readonly onBudgetFree = () => this.maybeResume();

  constructor(
    private readonly socket: Socket,
    private readonly opts: ExactReaderOptions,
  ) {
    if (!(opts.highWaterBytes > 0 && opts.idleTimeoutMs > 0)) throw new RangeError('ExactReader: limits must be positive');
    const budget = opts.budget;
    if (!opts.fedByOnread) socket.on('data', (chunk: Buffer) => this.push(chunk));
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', (err) => {
      this.failure ??= err;
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      if (budget) {
        budget.forget(this.onBudgetFree);
        const held = this.budgetHeld;
        this.budgetHeld = 0;
        budget.give(held);
      }
      this.notify();
    });
  }

  /** A chunk received on the socket (called by the 'data' listener, or by the onread owner). */
  push(chunk: Buffer): void {
    const budget = this.opts.budget;
    this.queue.push(chunk);
    this.bufferedBytes += chunk.length;
    if (budget && !this.ended) {
      budget.take(chunk.length);
      this.budgetHeld += chunk.length;
    }
    if (!this.paused && (this.bufferedBytes >= this.opts.highWaterBytes || budget?.exhausted)) {
      this.paused = true;
      this.socket.pause();
      if (budget?.exhausted) budget.whenFree(this.onBudgetFree);
    }
    this.notify();
  }

  get buffered(): number {
    return this.bufferedBytes;
  }

  setIdleTimeout(ms: number): void {
    if (!(ms > 0)) throw new RangeError('idle timeout must be positive');
    this.opts.idleTimeoutMs = ms;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Waits until some bytes are buffered or the stream ended/failed; rejects on inactivity. */
  private waitForData(): Promise<void> {
    if (this.bufferedBytes > 0 || this.ended || this.failure) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wake = null;
        reject(new ReadTimeoutError(`peer sent nothing for ${this.opts.idleTimeoutMs} ms`));
      }, this.opts.idleTimeoutMs);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private takeUpTo(n: number): Buffer {
    const first = this.queue[this.head]!;
    let piece: Buffer;
    if (first.length <= n) {
      piece = first;
      this.queue[this.head] = undefined as unknown as Buffer;
      this.head++;
      if (this.head > 1024 || this.head === this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
    } else {
      piece = first.subarray(0, n);
      this.queue[this.head] = first.subarray(n);
    }
    this.bufferedBytes -= piece.length;
    const budget = this.opts.budget;
    if (budget && this.budgetHeld > 0) {
      const n = Math.min(piece.length, this.budgetHeld);
      this.budgetHeld -= n;
      budget.give(n);
    }
    this.maybeResume();
    return piece;
  }

  private maybeResume(): void {
    if (!this.paused || this.ended || this.bufferedBytes >= this.opts.highWaterBytes) return;
    const budget = this.opts.budget;
    if (budget?.exhausted) {
      budget.whenFree(this.onBudgetFree);
      return;
    }
    this.paused = false;
    this.socket.resume();
  }

  private checkLive(gotBytes: number, wantBytes: number): void {
    if (this.bufferedBytes > 0) return;
    if (this.failure) throw new ShortReadError(`connection failed after ${gotBytes} of ${wantBytes} bytes: ${this.failure.message}`);
    if (this.ended) throw new ShortReadError(`connection closed after ${gotBytes} of ${wantBytes} bytes`);
  }

  /**
   * Exactly `n` bytes. With `eofOk`, a stream that ends cleanly before the first byte gives null
   * (end of a session at a message boundary). Large reads fill one buffer as bytes arrive, so the
   * high-water mark never deadlocks them.
   */
  async read(n: number, eofOk = false): Promise<Buffer | null> {
    if (!(Number.isInteger(n) && n >= 0)) throw new RangeError(`bad read length ${n}`);
    if (n === 0) return Buffer.alloc(0);
    await this.waitForData();
    if (this.bufferedBytes === 0 && eofOk && this.ended && !this.failure) return null;
    this.checkLive(0, n);
    const first = this.takeUpTo(n);
    if (first.length === n) return first;
    const out = Buffer.allocUnsafe(n);
    first.copy(out, 0);
    let got = first.length;
    while (got < n) {
      await this.waitForData();
      this.checkLive(got, n);
      const piece = this.takeUpTo(n - got);
      piece.copy(out, got);
      got += piece.length;
    }
    return out;
  }

  /** Exactly `n` bytes delivered as the socket's own chunks (no copy), for streaming bodies. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let got = 0;
    while (got < n) {
      await this.waitForData();
      this.checkLive(got, n);
      const piece = this.takeUpTo(n - got);
      got += piece.length;
      yield piece;
    }
  }
}

/**
 * Writes `buf`, resolving once the socket accepts more (at most `queueBytes` waiting in user
 * space, so a stream keeps the kernel's buffer full); rejects if the peer stops reading.
 */
export function writeWithDrain(socket: Socket, buf: Uint8Array, stallTimeoutMs: number, queueBytes = 0): Promise<void> {
  if (socket.write(buf)) return Promise.resolve();
  return drained(socket, queueBytes, stallTimeoutMs);
}

/**
 * Resolves once at most `queueBytes` wait in user space (writes already made); rejects if the
 * peer stops reading for `stallTimeoutMs` or the connection closes.
 */
export function drained(socket: Socket, queueBytes: number, stallTimeoutMs: number): Promise<void> {
  if (socket.writableLength <= queueBytes) return Promise.resolve();
  // More than the high-water mark is queued, so a write returned false and 'drain' will come.
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new ShortReadError('connection closed while sending'));
    const timer = setTimeout(() => done(new ReadTimeoutError(`peer read nothing for ${stallTimeoutMs} ms`)), stallTimeoutMs);
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}
