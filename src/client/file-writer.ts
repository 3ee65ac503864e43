// Writing one file (metadata.md §7.1): CONSTRUCT_FILE, then per span ADD_SPAN_INITIATE → block
// writes → ADD_SPAN_CERTIFY, then LINK_FILE at close. The shard only accepts a span once the
// previous one is certified, so spans are strictly sequential on the wire; what overlaps is the
// filling (and CRC) of the next span with the current span's block writes, and a span's D+P block
// writes with each other. Memory is two span buffers whatever the file size.
import { crc32c, crc32cZeros, crcToBytes } from '../proto/crc32c.js';
import { EggsError, ErrorCode } from '../proto/errors.js';
import { InodeType } from '../proto/ids.js';
import { BlockIoError, writeBlock } from './block-io.js';
import type { ClientCore } from './core.js';
import { encodeSpan, parityForSpan } from './layout.js';
import { nameBytes } from './paths.js';

export interface FileWriter {
  readonly written: number;
  write(data: Buffer): Promise<void>;
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

function isAllZero(b: Buffer): boolean {
  for (let off = 0; off < b.length; off += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, b.length - off);
    if (ZERO_CHUNK.compare(b, off, off + n, 0, n) !== 0) return false;
  }
  return true;
}

export class EggsFileWriter implements FileWriter {
  private readonly file: Promise<{ id: bigint; cookie: bigint }>;
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

  async write(data: Buffer): Promise<void> {
    if (this.state !== 'open') throw new EggsError(ErrorCode.MALFORMED_REQUEST, `write after ${this.state}`);
    if (this.failure) throw this.failure;
    const spanBytes = this.core.opts.spanBytes;
    let off = 0;
    while (off < data.length) {
      if (!this.cur) this.cur = this.spare ?? Buffer.allocUnsafe(Math.min(FIRST_BUFFER_BYTES, spanBytes));
      this.spare = undefined;
      if (this.fill === this.cur.length && this.cur.length < spanBytes) {
        // Grow towards a full span: small files never allocate a whole span.
        const bigger = Buffer.allocUnsafe(Math.min(spanBytes, this.cur.length * 4));
        this.cur.copy(bigger, 0, 0, this.fill);
        this.cur = bigger;
      }
      const n = Math.min(this.cur.length - this.fill, data.length - off);
      data.copy(this.cur, this.fill, off, off + n);
      this.fill += n;
      off += n;
      this.bytesIn += n;
      if (this.fill === spanBytes) await this.startFlush();
    }
  }

  /** Hands the current buffer to the wire once the previous span is certified. */
  private async startFlush(): Promise<void> {
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
    const p = this.flushSpan(data, offset).catch((err: Error) => {
      this.failure ??= err;
      throw err;
    });
    p.catch(() => {});
    this.inflight = p;
  }

  private async flushSpan(data: Buffer, offset: number): Promise<void> {
    const { id, cookie } = await this.file;
    const core = this.core;
    const base = { fileId: id, cookie, byteOffset: BigInt(offset), size: BigInt(data.length) };
    if (data.length <= INLINE_MAX_BYTES) {
      await core.shard('ADD_SPAN_INITIATE', id, { ...base, storageClass: STORAGE_CLASS_INLINE, parity: 0, crc32: crcToBytes(crc32c(data)), bodyBytes: Buffer.from(data), bodyBlocks: [] });
      return;
    }
    if (isAllZero(data)) {
      await core.shard('ADD_SPAN_INITIATE', id, { ...base, storageClass: STORAGE_CLASS_ZERO_FILL, parity: 0, crc32: crcToBytes(crc32cZeros(data.length)), bodyBytes: Buffer.alloc(0), bodyBlocks: [] });
      return;
    }
    const parity = parityForSpan(this.parity, data.length);
    const enc = encodeSpan(data, parity);
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
    const proofs = await Promise.all(
      resp.blocks.map(async (bi, i) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await writeBlock(core.blocks, bi.ip, bi.port, bi.blockId, enc.blockCrcs[i]!, enc.blocks[i]!, bi.certificate);
          } catch (err) {
            if (!(err instanceof BlockIoError) || attempt >= BLOCK_WRITE_ATTEMPTS) throw err;
          }
        }
      }),
    );
    await core.shard('ADD_SPAN_CERTIFY', id, { fileId: id, cookie, byteOffset: BigInt(offset), proofs });
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
    return id;
  }

  /** Stops writing; the transient file is never linked and expires on its shard. */
  async abort(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'aborted';
    await this.inflight?.catch(() => {});
    this.cur = this.spare = this.flushingBuf = undefined;
  }
}
