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

export interface ExactReaderOptions {
  /** Buffered-but-unconsumed bytes above which the socket is paused (backpressure). */
  highWaterBytes: number;
  /** A wait for bytes longer than this fails with ReadTimeoutError. */
  idleTimeoutMs: number;
}

export class ExactReader {
  private readonly queue: Buffer[] = [];
  private head = 0; // index of the first unconsumed queue element
  private bufferedBytes = 0;
  private ended = false;
  private failure: Error | null = null;
  private paused = false;
  private wake: (() => void) | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly opts: ExactReaderOptions,
  ) {
    if (!(opts.highWaterBytes > 0 && opts.idleTimeoutMs > 0)) throw new RangeError('ExactReader: limits must be positive');
    socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      this.bufferedBytes += chunk.length;
      if (this.bufferedBytes >= this.opts.highWaterBytes && !this.paused) {
        this.paused = true;
        socket.pause();
      }
      this.notify();
    });
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
      this.notify();
    });
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
    if (this.paused && this.bufferedBytes < this.opts.highWaterBytes) {
      this.paused = false;
      this.socket.resume();
    }
    return piece;
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
  if (socket.write(buf) || socket.writableLength <= queueBytes) return Promise.resolve();
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
