// Reading files: FILE_SPANS pages, then each span's bytes from its kind: inline (in the metadata),
// zero-fill (nothing stored) or blocks (fetched over TCP, every block's CRC checked, mirrors and
// parity used when a block is unreadable). Spans are read ahead of the consumer, a bounded number.
import { crc32c, crcFromBytes } from '../proto/crc32c.js';
import { EggsError, ErrorCode } from '../proto/errors.js';
import { BLOCK_FLAG_STALE, BLOCK_FLAG_TERMINAL, type FetchedSpanT } from '../proto/messages.js';
import { BlockIoError, fetchBlockChunks } from './block-io.js';
import type { ClientCore } from './core.js';
import { dataBlocks, decodeSpan } from './layout.js';
import { dataBlockSizes } from './span-layout.js';
import { STORAGE_CLASS_INLINE, STORAGE_CLASS_ZERO_FILL } from './file-writer.js';
import { logger } from '../util/log.js';

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

/**
 * A block's bytes as the socket's chunks, only once its size and whole-block CRC are verified: no
 * byte of a block is handed out before all of it is known good.
 */
async function fetchChecked(core: ClientCore, b: FetchedSpanT['bodyBlocks'][number]): Promise<Buffer[]> {
  const { chunks, crc } = await fetchBlockChunks(core.blocks, b.ip, b.port, b.blockId, Number(b.size));
  const want = crcFromBytes(b.crc32);
  if (crc !== want) throw new CorruptDataError(`block 0x${b.blockId.toString(16)} has CRC ${crc.toString(16)}, expected ${want.toString(16)}`);
  return chunks;
}

function joinChunks(chunks: Buffer[]): Buffer {
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

const usable = (flags: number) => (flags & (BLOCK_FLAG_STALE | BLOCK_FLAG_TERMINAL)) === 0;

// ---- redundancy: reading through lost, slow and corrupt blocks (issue 7) ----------------------
/** A block fetch still outstanding after this long gets a spare (mirror or parity) fetched beside it. */
export const BLOCK_HEDGE_MS = 2_000;
/** Degraded reads are logged, at most one line per this interval (with a count of the others). */
const DEGRADED_LOG_INTERVAL_MS = 2_000;
/** A service whose fetch failed or was hedged around is tried last for this long. */
const SUSPECT_MS = 10_000;
/** Bound on remembered suspects (addresses), so a long-lived client's map cannot grow without end. */
const MAX_SUSPECTS = 1024;
/**
 * "ip:port" → until when (ms) the service is tried last (later spans go straight to spares), and
 * whether it timed out (rather than refusing connections, or being slower than the hedge delay):
 * writers fail over at once from a service that timed out, where an attempt would cost a whole timeout.
 */
const suspects = new Map<string, { untilMs: number; slow: boolean }>();

/** A block service's address as the wire gives it (FetchedBlock or BlockInfo). */
export interface ServiceAddr {
  ip: Buffer;
  port: number;
}

function serviceKey(b: ServiceAddr): string {
  return `${b.ip[0]}.${b.ip[1]}.${b.ip[2]}.${b.ip[3]}:${b.port}`;
}

/** Remember that a service failed or was slow (reads try it last; writes fail over from it). */
export function suspect(b: ServiceAddr, slow: boolean): void {
  if (suspects.size >= MAX_SUSPECTS) suspects.clear();
  const key = serviceKey(b);
  const before = suspects.get(key);
  suspects.set(key, { untilMs: Date.now() + SUSPECT_MS, slow: slow || (before !== undefined && before.slow && before.untilMs > Date.now()) });
}

/** Whether the service failed or was slow for this client recently (`slow`: only if it timed out). */
export function isSuspect(b: ServiceAddr, slow = false): boolean {
  const key = serviceKey(b);
  const s = suspects.get(key);
  if (s === undefined) return false;
  if (s.untilMs <= Date.now()) {
    suspects.delete(key);
    return false;
  }
  return !slow || s.slow;
}

/** A block-service error that says the service is down or hung (not that one block is bad). */
export function serviceFault(err: unknown): { slow: boolean } | undefined {
  if (!(err instanceof BlockIoError)) return undefined;
  if (/^(timed out|could not connect within)/.test(err.reason)) return { slow: true };
  if (/^could not connect/.test(err.reason)) return { slow: false };
  return undefined;
}

const log = logger('client');
let degradedLast = 0;
let degradedQuiet = 0;

function logDegraded(msg: string): void {
  const now = Date.now();
  if (now - degradedLast < DEGRADED_LOG_INTERVAL_MS) {
    degradedQuiet++;
    return;
  }
  const also = degradedQuiet > 0 ? ` (and ${degradedQuiet} more degraded spans since the last report)` : '';
  degradedLast = now;
  degradedQuiet = 0;
  log.warn(`degraded read: ${msg}${also}`);
}

function describeSpan(fileId: bigint | undefined, span: Span): string {
  const file = fileId === undefined ? '' : `file 0x${fileId.toString(16).padStart(16, '0')} `;
  const p = span.raw.parity;
  return `${file}bytes ${span.offset}..${span.offset + span.size} (parity ${p & 0x0f}+${p >>> 4})`;
}

/**
 * The bytes of a block-backed span (its whole size). Fetches D blocks (data blocks first, services
 * flagged stale or terminal last); a fetch that fails, returns a wrong CRC or size, or is still
 * outstanding after BLOCK_HEDGE_MS brings in the next spare (mirror copy or parity block). The
 * first D good blocks decide; fewer than D readable fails with an error naming file and offset.
 */
export async function blockSpanData(core: ClientCore, span: Span, fileId?: bigint): Promise<Buffer> {
  return joinChunks(await blockSpanChunks(core, span, fileId));
}

/**
 * As blockSpanData, the span's bytes as a list of buffers in order: with every data block read
 * (the common case) these are the blocks' own socket chunks, data block 0's first, so the span
 * costs no copy; only a span rebuilt from parity is materialised as one buffer.
 */
export async function blockSpanChunks(core: ClientCore, span: Span, fileId?: bigint): Promise<Buffer[]> {
  const s = span.raw;
  const d = dataBlocks(s.parity);
  const blocks = s.bodyBlocks;
  if (d === 0 || blocks.length < d) throw new EggsError(ErrorCode.MALFORMED_RESPONSE, `${describeSpan(fileId, span)} has ${blocks.length} blocks`);
  const total = blocks.length;
  // Healthy services first (flagged stale or terminal, or recently failed or slow for this client,
  // last), and within each, data before parity.
  const rank = (i: number) => (usable(blocks[i]!.flags) && !isSuspect(blocks[i]!) ? 0 : 2) + (i < d ? 0 : 1);
  const candidates = [...blocks.keys()].sort((a, b) => rank(a) - rank(b) || a - b);
  const got: (Buffer[] | undefined)[] = new Array(total).fill(undefined);
  const errors: string[] = [];
  let good = 0;
  let inflight = 0;
  const outstanding = new Set<number>();
  await new Promise<void>((resolve) => {
    let done = false;
    let hedge: NodeJS.Timeout | undefined;
    const finish = () => {
      if (done) return;
      done = true;
      if (hedge) clearInterval(hedge);
      resolve();
    };
    const startNext = (): boolean => {
      const i = candidates.shift();
      if (i === undefined) return false;
      inflight++;
      outstanding.add(i);
      const b = blocks[i]!;
      fetchChecked(core, b).then(
        (buf) => {
          got[i] = buf;
          good++;
        },
        (err: Error) => {
          // Down or hung services are avoided for a while; a missing or corrupt block is not the
          // service's fault (the others it holds are fine).
          const fault = serviceFault(err);
          if (fault) suspect(b, fault.slow);
          errors.push(`block ${i} on ${serviceKey(b)}: ${err.message}`);
          if (!done) startNext();
        },
      ).finally(() => {
        inflight--;
        outstanding.delete(i);
        if (good >= d || (inflight === 0 && candidates.length === 0)) finish();
      });
      return true;
    };
    for (let k = 0; k < d; k++) startNext();
    if (inflight === 0) finish();
    hedge = setInterval(() => {
      if (done) return;
      // Slow: later spans start elsewhere. Not marked as timed out: a loaded machine is slow too,
      // and writers must not fail over from a service that is merely slow.
      for (const i of outstanding) suspect(blocks[i]!, false);
      if (!startNext()) clearInterval(hedge);
    }, BLOCK_HEDGE_MS);
  });
  if (good < d) {
    throw new EggsError(
      ErrorCode.INTERNAL_ERROR,
      `cannot read span at offset ${span.offset} of ${describeSpan(fileId, span)}: only ${good} of ${total} blocks readable, ${d} needed, more than ${total - d} lost: ${errors.join('; ')}`,
    );
  }
  let data: Buffer[];
  const missingData = [...Array(d).keys()].filter((i) => got[i] === undefined).length;
  if (d === 1) {
    data = got.find((b) => b !== undefined)!;
  } else if (missingData === 0) {
    // The span is the concatenation of its data blocks (span-layout.ts): their verified chunks in
    // order, nothing decoded or copied.
    data = [];
    for (let i = 0; i < d; i++) for (const c of got[i]!) data.push(c);
  } else {
    const whole = decodeSpan(got.map((b) => (b === undefined ? undefined : joinChunks(b))), s.parity, span.size);
    data = [whole];
    // Fetched blocks were CRC-checked, and the shard checked that their CRCs make the span's; a
    // rebuilt data block is checked against the CRC the shard recorded for it.
    let off = 0;
    for (const [i, size] of dataBlockSizes(span.size, d).entries()) {
      if (got[i] === undefined && crc32c(whole.subarray(off, off + size)) !== crcFromBytes(blocks[i]!.crc32)) {
        throw new CorruptDataError(`${describeSpan(fileId, span)}: data block ${i} rebuilt from parity does not match its CRC`);
      }
      off += size;
    }
  }
  if (errors.length > 0 || (d > 1 && missingData > 0)) {
    logDegraded(`${describeSpan(fileId, span)} read from ${good} of ${total} blocks${missingData > 0 && d > 1 ? `, ${missingData} data blocks rebuilt from parity` : ''}${errors.length > 0 ? `: ${errors.join('; ')}` : ''}`);
  }
  return data;
}

function spanKind(span: Span): 'inline' | 'zero' | 'blocks' {
  const sc = span.raw.storageClass;
  return sc === STORAGE_CLASS_INLINE ? 'inline' : sc === STORAGE_CLASS_ZERO_FILL ? 'zero' : 'blocks';
}

/**
 * The bytes [start, end) of a file as a sequence of buffers, reading block spans ahead of the
 * consumer: at least one, then more while they total under readAheadBytes (and number at most
 * readAheadSpans), so memory is bounded in bytes whatever the file's span size. Stops at EOF.
 */
export async function* readFileChunks(core: ClientCore, fileId: bigint, start: number, end: number): AsyncGenerator<Buffer> {
  if (end <= start) return;
  const spans = fileSpans(core, fileId, start);
  const queue: { span: Span; data?: Promise<Buffer[]> }[] = [];
  let exhausted = false;
  const readAhead = Math.max(1, core.opts.readAheadSpans);
  const aheadBytes = () => queue.reduce((sum, q) => sum + (q.data ? q.span.size : 0), 0);
  const aheadSpans = () => queue.filter((q) => q.data).length;
  const refill = async () => {
    while (!exhausted && (aheadSpans() === 0 || (aheadSpans() < readAhead && aheadBytes() < core.opts.readAheadBytes))) {
      const n = await spans.next();
      if (n.done || n.value.offset >= end) {
        exhausted = true;
        break;
      }
      const span = n.value;
      const entry: { span: Span; data?: Promise<Buffer[]> } = { span };
      if (spanKind(span) === 'blocks') {
        entry.data = blockSpanChunks(core, span, fileId);
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
        // The span's chunks, trimmed to [from, to): views, no copy.
        let off = 0;
        for (const c of await entry.data!) {
          const cEnd = off + c.length;
          if (cEnd > from && off < to && c.length > 0) yield c.subarray(Math.max(from, off) - off, Math.min(to, cEnd) - off);
          off = cEnd;
          if (off >= to) break;
        }
      }
    }
  } finally {
    for (const q of queue) q.data?.catch(() => {});
    await spans.return(undefined);
  }
}
