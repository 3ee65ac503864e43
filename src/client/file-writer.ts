// Writing one file (metadata.md §7.1): CONSTRUCT_FILE, then per span ADD_SPAN_INITIATE → block
// writes → ADD_SPAN_CERTIFY, then LINK_FILE at close. The shard only accepts a span once the
// previous one is certified, so spans are strictly sequential on the wire; what overlaps is the
// filling (and CRC) of the next span with the current span's block writes, and a span's D+P block
// writes with each other. Memory is two span buffers whatever the file size.
import assert from 'node:assert/strict';
import { crc32c, crc32cZeros, crcToBytes } from '../proto/crc32c.js';
import { EggsError, ErrorCode } from '../proto/errors.js';
import { InodeType } from '../proto/ids.js';
import { BlockIoError, writeBlock } from './block-io.js';
import type { ClientCore } from './core.js';
import { encodeSpan, parityForSpan, type EncodedSpan } from './layout.js';
import { nameBytes } from './paths.js';
import type { FetchedSpanT } from '../proto/messages.js';
import { blockSpanData, isSuspect, serviceFault, suspect } from './file-reader.js';
import { logger } from '../util/log.js';

export interface FileWriter {
  readonly written: number;
  write(data: Buffer): Promise<void>;
  /**
   * Lets `read` fill the writer's span buffer directly (at most `maxBytes`), saving a copy of every
   * byte and the caller's own buffers; returns what `read` stored (0 = its end of input).
   */
  writeFrom?(read: (dst: Buffer) => Promise<number>, maxBytes: number): Promise<number>;
  close(): Promise<bigint>;
  abort(): Promise<void>;
}

export const STORAGE_CLASS_INLINE = 0;
export const STORAGE_CLASS_ZERO_FILL = 1;
/** Spans up to this size are stored in the metadata itself (the `bytes` field's u8 length). */
export const INLINE_MAX_BYTES = 255;
const FIRST_BUFFER_BYTES = 64 * 1024;
const BLOCK_WRITE_ATTEMPTS = 2;
const ZERO_CHUNK = Buffer.alloc(64 * 1024);

// ---- redundancy: failing over when a block service does not take a block (issue 7) ------------
// The protocol cannot re-place a span once initiated (a retried ADD_SPAN_INITIATE returns the same
// blocks, and there is no way to drop a dirty span), so a span whose block cannot be written is
// stuck on this transient file. The writer then moves to a new transient file: it copies the spans
// already certified (read back from their blocks, which stay until the abandoned file expires) and
// writes the failed span again. The shard has meanwhile had time to learn from shuckle that the
// service is stale and places the blocks elsewhere. Bounded: FAILOVER_ATTEMPTS, with backoff.
const FAILOVER_ATTEMPTS = 6;
/** Doubling waits (1, 2, 4, 8, 16 s: about 30 s in all) give shuckle and the shard time to mark a dead service stale. */
const FAILOVER_BACKOFF_MS = 1_000;
/**
 * Spans remembered for a failover (about 100 bytes each); a file longer than this (256 GiB of 64 MiB
 * spans, 32 GiB of 8 MiB ones) is too big to copy on a failover anyway, and a failure fails it.
 */
const FAILOVER_MAX_SPANS = 4096;
const log = logger('client');

/** A block span's parity and blocks, computed ahead of its turn on the wire. */
interface PreEncoded {
  parity: number;
  enc: EncodedSpan;
}

/** A block of a span could not be written: the span is stuck on its transient file. */
class SpanPlacementError extends Error {}

/** What a certified span needs to be copied to a new transient file. */
type SpanRecord = { offset: number; size: number } & (
  | { kind: 'inline'; body: Buffer }
  | { kind: 'zero' }
  | { kind: 'blocks'; raw: FetchedSpanT }
);
const TRACE = process.env.EGGSFS_TRACE_SPANS === '1';

function isAllZero(b: Buffer): boolean {
  for (let off = 0; off < b.length; off += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, b.length - off);
    if (ZERO_CHUNK.compare(b, off, off + n, 0, n) !== 0) return false;
  }
  return true;
}

export class EggsFileWriter implements FileWriter {
  private file: Promise<{ id: bigint; cookie: bigint }>;
  private readonly name: Buffer;
  private cur: Buffer | undefined;
  private fill = 0;
  private spare: Buffer | undefined;
  private flushingBuf: Buffer | undefined;
  private inflight: Promise<void> | undefined;
  private nextOffset = 0;
  private failure: Error | undefined;
  private state: 'open' | 'closing' | 'closed' | 'aborted' = 'open';
  private closed: Promise<bigint> | undefined;
  private bytesIn = 0;
  /** Spans written so far, for a failover to a new transient file; null past FAILOVER_MAX_SPANS. */
  private history: SpanRecord[] | null = [];
  /** Parity block memory for the span on the wire and the one encoded ahead (see encodeAhead). */
  private parityScratch: Buffer[][] = [[], []];
  private nextScratch = 0;

  constructor(
    private readonly core: ClientCore,
    private readonly parentId: bigint,
    name: string,
    private readonly parity: number,
  ) {
    this.name = nameBytes(name);
    this.file = core.shard('CONSTRUCT_FILE', parentId, { type: InodeType.FILE });
    this.file.catch(() => {}); // surfaced by the first flush or close
  }

  get written(): number {
    return this.bytesIn;
  }

  /** The current span buffer with room for at least one more byte. */
  private room(): Buffer {
    const spanBytes = this.core.opts.spanBytes;
    if (!this.cur) this.cur = this.spare ?? Buffer.allocUnsafe(Math.min(FIRST_BUFFER_BYTES, spanBytes));
    this.spare = undefined;
    if (this.fill === this.cur.length && this.cur.length < spanBytes) {
      // Grow towards a full span: small files never allocate a whole span.
      const bigger = Buffer.allocUnsafe(Math.min(spanBytes, this.cur.length * 4));
      this.cur.copy(bigger, 0, 0, this.fill);
      this.cur = bigger;
    }
    assert(this.fill < this.cur.length, 'span buffer has room');
    return this.cur;
  }

  async writeFrom(read: (dst: Buffer) => Promise<number>, maxBytes: number): Promise<number> {
    if (this.state !== 'open') throw new EggsError(ErrorCode.MALFORMED_REQUEST, `write after ${this.state}`);
    if (this.failure) throw this.failure;
    assert(maxBytes > 0, 'writeFrom needs room for a byte');
    const buf = this.room();
    const dst = buf.subarray(this.fill, Math.min(buf.length, this.fill + maxBytes));
    const n = await read(dst);
    // An abort while `read` ran dropped the buffer: nothing more goes to this file.
    if (this.state !== 'open' || this.cur !== buf) throw new EggsError(ErrorCode.MALFORMED_REQUEST, `write after ${this.state}`);
    assert(Number.isInteger(n) && n >= 0 && n <= dst.length, 'read stored at most the bytes it was given');
    this.fill += n;
    this.bytesIn += n;
    if (this.fill === this.core.opts.spanBytes) await this.startFlush();
    return n;
  }

  async write(data: Buffer): Promise<void> {
    if (this.state !== 'open') throw new EggsError(ErrorCode.MALFORMED_REQUEST, `write after ${this.state}`);
    if (this.failure) throw this.failure;
    const spanBytes = this.core.opts.spanBytes;
    let off = 0;
    while (off < data.length) {
      const cur = this.room();
      const n = Math.min(cur.length - this.fill, data.length - off);
      data.copy(cur, this.fill, off, off + n);
      this.fill += n;
      off += n;
      this.bytesIn += n;
      if (this.fill === spanBytes) await this.startFlush();
    }
  }

  /** Hands the current buffer to the wire once the previous span is certified. */
  private async startFlush(): Promise<void> {
    // Redundancy (issue 7): encode this span (parity, CRCs) now, while the previous span's blocks are
    // still on the wire, so the codec is off the spans' critical path.
    const full = this.cur!.subarray(0, this.fill);
    const pre = full.length > INLINE_MAX_BYTES && !isAllZero(full) ? this.encodeAhead(full) : undefined;
    if (this.inflight) {
      await this.inflight; // rethrows a failure of the previous span
      this.spare = this.flushingBuf;
    }
    const buf = this.cur!;
    const data = buf.subarray(0, this.fill);
    const offset = this.nextOffset;
    this.nextOffset += this.fill;
    this.flushingBuf = buf;
    this.cur = undefined;
    this.fill = 0;
    const p = this.flushSpanWithFailover(data, offset, pre).catch((err: Error) => {
      this.failure ??= err;
      throw err;
    });
    p.catch(() => {});
    this.inflight = p;
  }

  /**
   * The span handed to the wire next is encoded while the previous one's blocks are still being
   * written (startFlush), and a span after that only once the previous one is certified: two sets
   * of parity buffers, used in turn, are never overwritten while their blocks are on the wire.
   */
  private encodeAhead(data: Buffer): PreEncoded {
    const parity = parityForSpan(this.parity, data.length);
    const scratch = this.parityScratch[this.nextScratch]!;
    this.nextScratch = (this.nextScratch + 1) % this.parityScratch.length;
    return { parity, enc: encodeSpan(data, parity, scratch) };
  }

  private encodeBlocks(data: Buffer): PreEncoded {
    const parity = parityForSpan(this.parity, data.length);
    return { parity, enc: encodeSpan(data, parity) };
  }

  private async flushSpan(data: Buffer, offset: number, pre?: PreEncoded): Promise<void> {
    const { id, cookie } = await this.file;
    const core = this.core;
    const base = { fileId: id, cookie, byteOffset: BigInt(offset), size: BigInt(data.length) };
    if (data.length <= INLINE_MAX_BYTES) {
      const body = Buffer.from(data);
      await core.shard('ADD_SPAN_INITIATE', id, { ...base, storageClass: STORAGE_CLASS_INLINE, parity: 0, crc32: crcToBytes(crc32c(data)), bodyBytes: body, bodyBlocks: [] });
      this.remember({ offset, size: data.length, kind: 'inline', body });
      return;
    }
    if (!pre && isAllZero(data)) {
      await core.shard('ADD_SPAN_INITIATE', id, { ...base, storageClass: STORAGE_CLASS_ZERO_FILL, parity: 0, crc32: crcToBytes(crc32cZeros(data.length)), bodyBytes: Buffer.alloc(0), bodyBlocks: [] });
      this.remember({ offset, size: data.length, kind: 'zero' });
      return;
    }
    const t0 = TRACE ? performance.now() : 0;
    const { parity, enc } = pre ?? this.encodeBlocks(data);
    const resp = await core.shard('ADD_SPAN_INITIATE', id, {
      ...base,
      storageClass: core.opts.storageClass,
      parity,
      crc32: crcToBytes(enc.spanCrc),
      bodyBytes: Buffer.alloc(0),
      bodyBlocks: enc.blocks.map((b, i) => ({ crc32: crcToBytes(enc.blockCrcs[i]!), size: BigInt(b.length) })),
    });
    if (resp.blocks.length !== enc.blocks.length) {
      throw new EggsError(ErrorCode.MALFORMED_RESPONSE, `shard placed ${resp.blocks.length} blocks for a span of ${enc.blocks.length}`);
    }
    const t1 = TRACE ? performance.now() : 0;
    // A block placed on a service that just hung for this client would most likely cost a whole
    // timeout again: fail over at once. (A service refusing connections fails fast: just try it.)
    const bad = resp.blocks.findIndex((bi) => isSuspect(bi, true));
    if (bad >= 0) {
      const bi = resp.blocks[bad]!;
      throw new SpanPlacementError(`block ${bad} of the span at offset ${offset} was placed on ${bi.ip.join('.')}:${bi.port}, which timed out moments ago`);
    }
    const proofs = await Promise.all(
      resp.blocks.map(async (bi, i) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await writeBlock(core.blocks, bi.ip, bi.port, bi.blockId, enc.blockCrcs[i]!, enc.blocks[i]!, bi.certificate);
          } catch (err) {
            if (!(err instanceof BlockIoError)) throw err;
            if (attempt >= BLOCK_WRITE_ATTEMPTS) {
              suspect(bi, serviceFault(err)?.slow ?? false);
              throw new SpanPlacementError(`block ${i} of the span at offset ${offset} (parity ${parity & 0x0f}+${parity >>> 4}) could not be written: ${err.message}`);
            }
          }
        }
      }),
    );
    const t2 = TRACE ? performance.now() : 0;
    await core.shard('ADD_SPAN_CERTIFY', id, { fileId: id, cookie, byteOffset: BigInt(offset), proofs });
    this.remember({
      offset,
      size: data.length,
      kind: 'blocks',
      raw: {
        byteOffset: BigInt(offset),
        parity,
        storageClass: core.opts.storageClass,
        crc32: crcToBytes(enc.spanCrc),
        size: BigInt(data.length),
        bodyBytes: Buffer.alloc(0),
        bodyBlocks: resp.blocks.map((bi, i) => ({ ip: bi.ip, port: bi.port, blockId: bi.blockId, crc32: crcToBytes(enc.blockCrcs[i]!), size: BigInt(enc.blocks[i]!.length), flags: 0 })),
      },
    });
    if (TRACE) process.stderr.write(`span ${offset}: encode+initiate ${(t1 - t0).toFixed(1)} ms, blocks ${(t2 - t1).toFixed(1)} ms, certify ${(performance.now() - t2).toFixed(1)} ms\n`);
  }

  private remember(rec: SpanRecord): void {
    if (this.history !== null && this.history.length >= FAILOVER_MAX_SPANS) this.history = null;
    this.history?.push(rec);
  }

  /** flushSpan, moving the file to a new transient file when a block service does not take its block. */
  private async flushSpanWithFailover(data: Buffer, offset: number, pre?: PreEncoded): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        if (attempt > 1) await this.moveToNewFile();
        await this.flushSpan(data, offset, pre);
        return;
      } catch (err) {
        // Past FAILOVER_MAX_SPANS the spans written are no longer remembered: the file fails.
        if (!(err instanceof SpanPlacementError) || attempt >= FAILOVER_ATTEMPTS || this.history === null) throw err;
        const waitMs = FAILOVER_BACKOFF_MS * 2 ** (attempt - 1);
        log.warn(`writing ${this.name.toString()}: ${err.message}; retrying on a new transient file in ${waitMs} ms (failover ${attempt} of ${FAILOVER_ATTEMPTS - 1})`);
        await new Promise((r) => setTimeout(r, waitMs));
      }
    }
  }

  /** A new transient file holding every span written so far (the old one expires on its shard). */
  private async moveToNewFile(): Promise<void> {
    const old = this.history;
    if (old === null) throw new EggsError(ErrorCode.INTERNAL_ERROR, `${this.name.toString()}: a block write failed and the file is too long (over ${FAILOVER_MAX_SPANS} spans) to move to a new transient file`);
    this.history = [];
    this.file = this.core.shard('CONSTRUCT_FILE', this.parentId, { type: InodeType.FILE });
    this.file.catch(() => {}); // surfaced by flushSpan below
    let copied = 0;
    try {
      for (const rec of old) {
        const data =
          rec.kind === 'inline' ? rec.body : rec.kind === 'zero' ? Buffer.alloc(rec.size) : await blockSpanData(this.core, { offset: rec.offset, size: rec.size, raw: rec.raw });
        await this.flushSpan(data, rec.offset);
        copied++;
      }
    } finally {
      // Spans not yet copied are still readable where they were; keep them for the next attempt.
      if (copied < old.length) this.history = (this.history ?? []).concat(old.slice(copied));
    }
  }

  close(): Promise<bigint> {
    if (this.state === 'aborted') return Promise.reject(new EggsError(ErrorCode.MALFORMED_REQUEST, 'close after abort'));
    this.closed ??= this.doClose();
    return this.closed;
  }

  private async doClose(): Promise<bigint> {
    this.state = 'closing';
    if (this.fill > 0) await this.startFlush();
    if (this.inflight) await this.inflight;
    const { id, cookie } = await this.file;
    await this.core.shard('LINK_FILE', this.parentId, { fileId: id, cookie, ownerId: this.parentId, name: this.name });
    this.state = 'closed';
    this.cur = this.spare = this.flushingBuf = undefined;
    this.parityScratch = [[], []];
    return id;
  }

  /** Stops writing; the transient file is never linked and expires on its shard. */
  async abort(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'aborted';
    await this.inflight?.catch(() => {});
    this.cur = this.spare = this.flushingBuf = undefined;
    this.parityScratch = [[], []];
  }
}
