// Reading files: FILE_SPANS pages, then each span's bytes from its kind: inline (in the metadata),
// zero-fill (nothing stored) or blocks (fetched over TCP, every block's CRC checked, mirrors and
// parity used when a block is unreadable). Spans are read ahead of the consumer, a bounded number.
import { crc32c, crcFromBytes } from '../proto/crc32c.js';
import { EggsError, ErrorCode } from '../proto/errors.js';
import { BLOCK_FLAG_STALE, BLOCK_FLAG_TERMINAL, type FetchedSpanT } from '../proto/messages.js';
import { fetchBlock } from './block-io.js';
import type { ClientCore } from './core.js';
import { dataBlocks, decodeSpan } from './layout.js';
import { STORAGE_CLASS_INLINE, STORAGE_CLASS_ZERO_FILL } from './file-writer.js';

/** Zero-fill spans are produced in pieces of this size so a huge hole costs no memory. */
const ZERO_PIECE_BYTES = 1 << 20;
const ZERO_PIECE = Buffer.alloc(ZERO_PIECE_BYTES);

export class CorruptDataError extends EggsError {
  constructor(detail: string) {
    super(ErrorCode.INTERNAL_ERROR, detail);
  }
}

export interface Span {
  offset: number;
  size: number;
  raw: FetchedSpanT;
}

/** All spans from the one containing `from`, page by page. */
export async function* fileSpans(core: ClientCore, fileId: bigint, from: number): AsyncGenerator<Span> {
  let off = BigInt(from);
  for (;;) {
    const resp = await core.shard('FILE_SPANS', fileId, { fileId, byteOffset: off });
    for (const s of resp.spans) yield { offset: Number(s.byteOffset), size: Number(s.size), raw: s };
    if (resp.nextOffset === 0n || resp.spans.length === 0) return;
    if (resp.nextOffset <= off) throw new EggsError(ErrorCode.MALFORMED_RESPONSE, `FILE_SPANS went backwards (${resp.nextOffset} after ${off})`);
    off = resp.nextOffset;
  }
}

async function fetchChecked(core: ClientCore, b: FetchedSpanT['bodyBlocks'][number]): Promise<Buffer> {
  const data = await fetchBlock(core.blocks, b.ip, b.port, b.blockId, Number(b.size));
  const want = crcFromBytes(b.crc32);
  const got = crc32c(data);
  if (got !== want) throw new CorruptDataError(`block 0x${b.blockId.toString(16)} has CRC ${got.toString(16)}, expected ${want.toString(16)}`);
  return data;
}

const usable = (flags: number) => (flags & (BLOCK_FLAG_STALE | BLOCK_FLAG_TERMINAL)) === 0;

/** The bytes of a block-backed span (its whole size). */
export async function blockSpanData(core: ClientCore, span: Span): Promise<Buffer> {
  const s = span.raw;
  const d = dataBlocks(s.parity);
  const blocks = s.bodyBlocks;
  if (d === 0 || blocks.length < d) throw new EggsError(ErrorCode.MALFORMED_RESPONSE, `span at ${span.offset} has parity 0x${s.parity.toString(16)} and ${blocks.length} blocks`);
  const errors: string[] = [];
  const got: (Buffer | undefined)[] = new Array(blocks.length).fill(undefined);
  const tryFetch = async (i: number) => {
    try {
      got[i] = await fetchChecked(core, blocks[i]!);
    } catch (err) {
      errors.push((err as Error).message);
    }
  };
  if (d === 1) {
    // Any copy is the span: usable ones first, then the rest.
    const order = [...blocks.keys()].sort((a, b) => Number(!usable(blocks[a]!.flags)) - Number(!usable(blocks[b]!.flags)));
    for (const i of order) {
      await tryFetch(i);
      if (got[i]) return got[i]!;
    }
  } else {
    await Promise.all([...Array(d).keys()].map(tryFetch));
    // Missing data blocks: bring in parity blocks one by one until the span can be rebuilt.
    for (let i = d; i < blocks.length && got.filter(Boolean).length < d; i++) await tryFetch(i);
    if (got.filter(Boolean).length >= d) {
      const data = decodeSpan(got, s.parity, span.size);
      const want = crcFromBytes(s.crc32);
      if (crc32c(data) !== want) throw new CorruptDataError(`span at offset ${span.offset} does not match its CRC after decoding`);
      return data;
    }
  }
  throw new EggsError(ErrorCode.INTERNAL_ERROR, `cannot read span at offset ${span.offset}: ${errors.join('; ')}`);
}

function spanKind(span: Span): 'inline' | 'zero' | 'blocks' {
  const sc = span.raw.storageClass;
  return sc === STORAGE_CLASS_INLINE ? 'inline' : sc === STORAGE_CLASS_ZERO_FILL ? 'zero' : 'blocks';
}

/**
 * The bytes [start, end) of a file as a sequence of buffers, reading up to `readAhead` block spans
 * ahead of the consumer. Stops early at EOF.
 */
export async function* readFileChunks(core: ClientCore, fileId: bigint, start: number, end: number): AsyncGenerator<Buffer> {
  if (end <= start) return;
  const spans = fileSpans(core, fileId, start);
  const queue: { span: Span; data?: Promise<Buffer> }[] = [];
  let exhausted = false;
  const readAhead = Math.max(1, core.opts.readAheadSpans);
  const refill = async () => {
    while (!exhausted && queue.filter((q) => q.data).length < readAhead) {
      const n = await spans.next();
      if (n.done || n.value.offset >= end) {
        exhausted = true;
        break;
      }
      const span = n.value;
      const entry: { span: Span; data?: Promise<Buffer> } = { span };
      if (spanKind(span) === 'blocks') {
        entry.data = blockSpanData(core, span);
        entry.data.catch(() => {}); // surfaced when consumed
      }
      queue.push(entry);
      if (!entry.data) break; // inline/zero spans cost nothing to keep in the queue
    }
  };
  try {
    for (;;) {
      if (queue.length === 0) await refill();
      const entry = queue.shift();
      if (!entry) return;
      await refill();
      const { span } = entry;
      const from = Math.max(start, span.offset) - span.offset;
      const to = Math.min(end, span.offset + span.size) - span.offset;
      if (to <= from) continue;
      const kind = spanKind(span);
      if (kind === 'zero') {
        for (let off = from; off < to; off += ZERO_PIECE_BYTES) yield ZERO_PIECE.subarray(0, Math.min(ZERO_PIECE_BYTES, to - off));
      } else if (kind === 'inline') {
        const body = span.raw.bodyBytes;
        if (body.length !== span.size) throw new CorruptDataError(`inline span at ${span.offset} has ${body.length} bytes, expected ${span.size}`);
        yield body.subarray(from, to);
      } else {
        const data = await entry.data!;
        yield data.subarray(from, to);
      }
    }
  } finally {
    for (const q of queue) q.data?.catch(() => {});
    await spans.return(undefined);
  }
}
