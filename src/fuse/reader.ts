// Reads of one open file. The kernel asks for up to 1 MiB at a time (read-ahead, several at once,
// roughly in order), while the client reads whole spans (8 MiB by default) and reads ahead of its
// consumer. So each open handle keeps one span stream and the chunks around its position: a read
// inside them is a copy, a read a little ahead pulls the stream forward, and anything else
// (a seek backwards or far ahead) restarts the stream at the new offset.
import type { EggsClient } from '../client/index.js';

/** A read this far past the stream's position pulls the stream forward instead of restarting. */
const SKIP_AHEAD_MAX_BYTES = 16 << 20;
/** Chunks kept behind the latest read, for reads the kernel issued in parallel and out of order. */
const KEEP_BEHIND_BYTES = 4 << 20;

interface Chunk {
  start: number;
  data: Buffer;
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
    const first = this.chunks[0]?.start ?? this.streamPos;
    const usable = this.iter && offset >= first && offset <= this.streamPos + SKIP_AHEAD_MAX_BYTES;
    if (!usable) this.restart(offset);
    while (this.streamPos < end) {
      const r = await this.iter!.next();
      if (r.done) break;
      this.chunks.push({ start: this.streamPos, data: r.value });
      this.streamPos += r.value.length;
    }
    const outBytes = Math.max(0, Math.min(end, this.streamPos) - offset);
    // Drop what lies well behind this read.
    while (this.chunks.length > 1 && this.chunks[0]!.start + this.chunks[0]!.data.length < offset - KEEP_BEHIND_BYTES) this.chunks.shift();
    // Usually the whole read lies in one chunk (a span): hand out a view, no copy.
    for (const c of this.chunks) {
      if (c.start <= offset && offset + outBytes <= c.start + c.data.length) return c.data.subarray(offset - c.start, offset - c.start + outBytes);
    }
    const out = Buffer.allocUnsafe(outBytes);
    let filled = 0;
    for (const c of this.chunks) {
      const cEnd = c.start + c.data.length;
      if (cEnd <= offset || c.start >= offset + out.length) continue;
      const from = Math.max(offset, c.start);
      const to = Math.min(offset + out.length, cEnd);
      c.data.copy(out, from - offset, from - c.start, to - c.start);
      filled += to - from;
    }
    if (filled !== out.length) throw new Error(`read of ${out.length} bytes at ${offset} assembled ${filled}`);
    return out;
  }
}
