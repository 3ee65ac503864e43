// Reads of one open file. The kernel asks for up to 1 MiB at a time (read-ahead, several at once,
// roughly in order), while the client reads whole spans (8 MiB by default) and reads ahead of its
// consumer. So each open handle keeps one span stream and the chunks around its position: a read
// inside them is a copy, a read a little ahead pulls the stream forward, and anything else
// (a seek backwards or far ahead) restarts the stream at the new offset.
import type { EggsClient } from '../client/index.js';

/** A read this far past the stream's position pulls the stream forward instead of restarting. */
const SKIP_AHEAD_MAX_BYTES = 16 << 20;
/**
 * A chunk is dropped once all its bytes have been read (the kernel reads each page once; its
 * parallel read-ahead requests reach us in any order), or once it lies this far behind a read.
 */
const KEEP_BEHIND_BYTES = 64 << 20;

const TRACE = process.env.EGGSFS_FUSE_TRACE_READS === '1';

interface Chunk {
  start: number;
  data: Buffer;
  /** Bytes of this chunk handed out so far. */
  served: number;
}

export class SequentialReader {
  private iter: AsyncIterator<Buffer> | undefined;
  /** File offset of the next byte the stream yields. */
  private streamPos = 0;
  /** Contiguous chunks ending at streamPos. */
  private chunks: Chunk[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly client: EggsClient,
    private readonly fileId: bigint,
    private readonly fileSize: number,
  ) {}

  read(offset: number, size: number): Promise<Buffer> {
    const run = this.chain.then(() => this.readNow(offset, size));
    this.chain = run.catch(() => {});
    return run;
  }

  close(): void {
    this.closed = true;
    this.restart(undefined);
  }

  private restart(at: number | undefined): void {
    const old = this.iter;
    this.iter = undefined;
    this.chunks = [];
    if (old?.return) void old.return(undefined).catch(() => {});
    if (at === undefined) return;
    this.iter = this.client.readChunks(this.fileId, at, this.fileSize)[Symbol.asyncIterator]();
    this.streamPos = at;
  }

  private async readNow(offset: number, size: number): Promise<Buffer> {
    const end = Math.min(offset + size, this.fileSize);
    if (offset >= end || this.closed) return Buffer.alloc(0);
    // Usable: the offset lies in a chunk we still hold, or at/after the stream's position.
    const held = this.chunks.some((c) => offset >= c.start && offset < c.start + c.data.length);
    const first = this.chunks[0]?.start ?? this.streamPos;
    const usable = this.iter && (held || (offset >= this.streamPos && offset <= this.streamPos + SKIP_AHEAD_MAX_BYTES));
    if (!usable) {
      if (TRACE) process.stderr.write(`reader restart at ${offset} (stream at ${this.streamPos}, first ${first})\n`);
      this.restart(offset);
    }
    while (this.streamPos < end) {
      const t0 = TRACE ? performance.now() : 0;
      const r = await this.iter!.next();
      if (TRACE) process.stderr.write(`reader waited ${(performance.now() - t0).toFixed(1)} ms for ${r.done ? 0 : r.value.length} bytes at ${this.streamPos} (request ${offset})\n`);
      if (r.done) break;
      this.chunks.push({ start: this.streamPos, data: r.value, served: 0 });
      this.streamPos += r.value.length;
    }
    const outBytes = Math.max(0, Math.min(end, this.streamPos) - offset);
    let out: Buffer | undefined;
    let filled = 0;
    for (const c of this.chunks) {
      const cEnd = c.start + c.data.length;
      if (cEnd <= offset || c.start >= offset + outBytes) continue;
      const from = Math.max(offset, c.start);
      const to = Math.min(offset + outBytes, cEnd);
      c.served += to - from;
      if (from === offset && to === offset + outBytes) {
        out = c.data.subarray(from - c.start, to - c.start); // within one chunk (a span): a view, no copy
      } else {
        out ??= Buffer.allocUnsafe(outBytes);
        c.data.copy(out, from - offset, from - c.start, to - c.start);
      }
      filled += to - from;
    }
    if (filled !== outBytes) throw new Error(`read of ${outBytes} bytes at ${offset} assembled ${filled}`);
    // Forget chunks read in full, and anything far behind.
    this.chunks = this.chunks.filter((c) => c.served < c.data.length && c.start + c.data.length >= offset - KEEP_BEHIND_BYTES);
    return out ?? Buffer.alloc(0);
  }
}
