// Writing one file (metadata.md §7.1): CONSTRUCT_FILE, then per span ADD_SPAN_INITIATE → block
// writes → ADD_SPAN_CERTIFY, then LINK_FILE at close. The shard only accepts a span once the
// previous one is certified, so spans are strictly sequential on the wire; what overlaps is the
// filling (and CRC) of the next spans with the current span's block writes, and a span's D+P block
// writes with each other. Full spans queue for the wire (WRITE_QUEUE_SPANS) so that a slow block
// write and a slow fill do not stall each other. Memory is WRITE_QUEUE_SPANS + 1 span buffers
// whatever the file size. A file that keeps growing gets longer spans (core.opts.maxSpanBytes):
// a block service writes a big block at close to the disk's streaming speed, a small one pays
// its fixed costs (fsyncs, round trips) more often.
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
/**
 * Full spans handed to the wire and not yet certified (one being written, the others encoded and
 * waiting). Two buffers (one filling, one on the wire) made the writer stall whenever a fill was
 * faster than the block write before it and the next fill slower; a third absorbs that jitter.
 */
export const WRITE_QUEUE_SPANS = 2;
/**
 * Span buffer bytes that a client's writers together may hold beyond their first span size
 * (spans grown towards maxSpanBytes): many large files streamed at once keep the first span
 * size rather than each taking (WRITE_QUEUE_SPANS + 1) × maxSpanBytes.
 */
export const SPAN_GROWTH_BUDGET_BYTES = 256 << 20;
/** Growth bytes held per client (a client's writers share its budget). */
const growthHeld = new WeakMap<ClientCore, { bytes: number }>();
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
const TRACE_T0 = performance.now();

function freshScratch(): Buffer[][] {
  return Array.from({ length: WRITE_QUEUE_SPANS + 1 }, () => []);
}

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
  /** Span buffers whose spans are certified, for reuse (at most WRITE_QUEUE_SPANS + 1 exist). */
  private spares: Buffer[] = [];
  /** Spans handed to the wire, not yet certified, in file order. */
  private queued: { buf: Buffer; done: Promise<void> }[] = [];
  /** The last span handed to the wire (each waits for the one before it). */
  private wireTail: Promise<void> | undefined;
  private nextOffset = 0;
  private failure: Error | undefined;
  private state: 'open' | 'closing' | 'closed' | 'aborted' = 'open';
  private closed: Promise<bigint> | undefined;
  private bytesIn = 0;
  /** Spans written so far, for a failover to a new transient file; null past FAILOVER_MAX_SPANS. */
  private history: SpanRecord[] | null = [];
  /** Parity block memory for the span on the wire and the one encoded ahead (see encodeAhead). */
  private parityScratch: Buffer[][] = freshScratch();
  private nextScratch = 0;
  /** This file's current span size: core.opts.spanBytes, doubled per full span up to maxSpanBytes. */
  private spanBytes: number;
  /** Bytes of SPAN_GROWTH_BUDGET_BYTES this writer holds: (WRITE_QUEUE_SPANS + 1) × (spanBytes − first). */
  private growthBytes = 0;

  constructor(
    private readonly core: ClientCore,
    private readonly parentId: bigint,
    name: string,
    private readonly parity: number,
    /** A transient file constructed ahead (in parentId's shard), else one is constructed now. */
    constructed?: Promise<{ id: bigint; cookie: bigint }>,
  ) {
    this.name = nameBytes(name);
    this.spanBytes = core.opts.spanBytes;
    this.file = constructed ?? core.shard('CONSTRUCT_FILE', parentId, { type: InodeType.FILE });
    this.file.catch(() => {}); // surfaced by the first flush or close
  }

  get written(): number {
    return this.bytesIn;
  }

  /** The current span buffer with room for at least one more byte. */
  private room(): Buffer {
    const spanBytes = this.spanBytes;
    if (!this.cur) {
      const spare = this.spares.pop();
      // A spare from before the spans grew is dropped: a streamed file fills a whole span at once.
      if (spare !== undefined && spare.length === spanBytes) this.cur = spare;
      else this.cur = Buffer.allocUnsafe(this.nextOffset > 0 ? spanBytes : Math.min(FIRST_BUFFER_BYTES, spanBytes));
    }
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
    if (this.fill === this.spanBytes) await this.startFlush();
    return n;
  }

  async write(data: Buffer): Promise<void> {
    if (this.state !== 'open') throw new EggsError(ErrorCode.MALFORMED_REQUEST, `write after ${this.state}`);
    if (this.failure) throw this.failure;
    let off = 0;
    while (off < data.length) {
      const cur = this.room();
      const n = Math.min(cur.length - this.fill, data.length - off);
      data.copy(cur, this.fill, off, off + n);
      this.fill += n;
      off += n;
      this.bytesIn += n;
      if (this.fill === this.spanBytes) await this.startFlush();
    }
  }

  /** Queues the current buffer for the wire, once fewer than WRITE_QUEUE_SPANS spans are uncertified. */
  private async startFlush(): Promise<void> {
    // Redundancy (issue 7): encode this span (parity, CRCs) now, while the previous spans' blocks are
    // still on the wire, so the codec is off the spans' critical path.
    const full = this.cur!.subarray(0, this.fill);
    const pre = full.length > INLINE_MAX_BYTES && !isAllZero(full) ? this.encodeAhead(full) : undefined;
    const w0 = TRACE ? performance.now() : 0;
    while (this.queued.length >= WRITE_QUEUE_SPANS) await this.queued[0]!.done; // rethrows a failure
    if (TRACE) process.stderr.write(`writer ${(w0 - TRACE_T0).toFixed(1)}: waited ${(performance.now() - w0).toFixed(1)} ms for room on the wire\n`);
    const buf = this.cur!;
    const data = buf.subarray(0, this.fill);
    const offset = this.nextOffset;
    this.nextOffset += this.fill;
    this.cur = undefined;
    this.fill = 0;
    const prev = this.wireTail;
    const p = (async () => {
      if (prev) await prev; // the shard takes a span only once the previous one is certified
      await this.flushSpanWithFailover(data, offset, pre);
    })().catch((err: Error) => {
      this.failure ??= err;
      throw err;
    });
    p.catch(() => {});
    const entry = { buf, done: p };
    this.queued.push(entry);
    this.wireTail = p;
    // Registered before anyone awaits `p`, so the queue has shrunk when they resume.
    void p.then(() => {
      assert(this.queued[0] === entry, 'spans are certified in file order');
      this.queued.shift();
      if (this.state === 'open') this.spares.push(buf);
    }, () => {});
    if (this.state === 'open' && data.length === this.spanBytes) this.growSpans();
  }

  /** The file keeps growing: its next spans are twice as long, if the client's budget allows. */
  private growSpans(): void {
    const first = this.core.opts.spanBytes;
    const max = Math.max(first, this.core.opts.maxSpanBytes ?? first);
    const next = Math.min(max, this.spanBytes * 2);
    if (next === this.spanBytes) return;
    const want = (WRITE_QUEUE_SPANS + 1) * (next - first);
    let held = growthHeld.get(this.core);
    if (!held) growthHeld.set(this.core, (held = { bytes: 0 }));
    if (held.bytes - this.growthBytes + want > SPAN_GROWTH_BUDGET_BYTES) return;
    held.bytes += want - this.growthBytes;
    this.growthBytes = want;
    this.spanBytes = next;
  }

  /**
   * A span is encoded while at most WRITE_QUEUE_SPANS spans before it are uncertified (startFlush),
   * so WRITE_QUEUE_SPANS + 1 sets of parity buffers, used in turn, are never overwritten while
   * their blocks are queued or on the wire.
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
    if (TRACE) process.stderr.write(`span ${offset} at ${(t0 - TRACE_T0).toFixed(1)}: encode+initiate ${(t1 - t0).toFixed(1)} ms, blocks ${(t2 - t1).toFixed(1)} ms, certify ${(performance.now() - t2).toFixed(1)} ms\n`);
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
    if (this.wireTail) await this.wireTail;
    const { id, cookie } = await this.file;
    await this.core.shard('LINK_FILE', this.parentId, { fileId: id, cookie, ownerId: this.parentId, name: this.name });
    this.state = 'closed';
    this.releaseBuffers();
    return id;
  }

  /** Stops writing; the transient file is never linked and expires on its shard. */
  async abort(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'aborted';
    await this.wireTail?.catch(() => {});
    this.releaseBuffers();
  }

  private releaseBuffers(): void {
    this.cur = undefined;
    this.spares = [];
    this.parityScratch = freshScratch();
    const held = growthHeld.get(this.core);
    if (held) {
      held.bytes -= this.growthBytes;
      assert(held.bytes >= 0, 'span growth budget accounting');
    }
    this.growthBytes = 0;
  }
}
