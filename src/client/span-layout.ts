// How a block-backed span is laid out over its D data + P parity blocks (metadata.md §2.8, §7.4,
// §7.6), and how it is rebuilt from any D of them.
//
// Layout, chosen to satisfy the shard's validation rules exactly:
// * D = 1 (plain or mirrored): every block is the whole span; the P extra blocks are copies, so each
//   block's CRC equals the span CRC.
// * D > 1: the span is the concatenation of its D data blocks (§7.6), so the span CRC is the
//   CRC32C-combination of the data blocks' CRCs and the span size is the sum of their sizes (§7.4).
//   Data blocks are `blockSize = roundUp(ceil(size / D), 8)` bytes, the last ones shorter (the
//   remainder; possibly empty for spans below D·8 bytes). Parity blocks are blockSize bytes: Reed-Solomon
//   (src/client/rs.ts) over the data blocks zero-extended to blockSize; parity block 0 is their XOR.
//   The multiple of 8 keeps every data block at an aligned offset of the span buffer, so the codec's
//   word-at-a-time kernels apply.
// * No stripes or per-cell CRCs (production TernFS has both): with the shard's rule that a span is the
//   concatenation of its data blocks, striping (cells of block i interleaved with those of block i+1)
//   would break the span-CRC check, the block protocol has no ranged fetch to exploit cells anyway,
//   and the per-block CRC recorded in the shard already pins every block a reader fetches.
// * Small spans are better mirrored (spanParityFor): below about (D+P)/(P+1) filesystem pages, P+1
//   copies use no more disk than D+P blocks (every block is a file of at least one 4 KiB page), need
//   fewer round trips, and never produce empty blocks.
import { crc32c, crc32cCombine } from '../proto/crc32c.js';
import { MAX_DATA_BLOCKS, MAX_PARITY_BLOCKS, getRsCodec } from './rs-codec.js';

/** Data blocks start at multiples of this within the span. */
export const BLOCK_ALIGN_BYTES = 8;
/** The page a block file occupies at least on the block service's disk. */
export const DISK_PAGE_BYTES = 4096;

export interface ParityShape {
  dataBlocks: number;
  parityBlocks: number;
}

export function parityByte(dataBlocks: number, parityBlocks: number): number {
  if (!Number.isInteger(dataBlocks) || dataBlocks < 1 || dataBlocks > MAX_DATA_BLOCKS) {
    throw new RangeError(`parity: data blocks must be 1..${MAX_DATA_BLOCKS}, got ${dataBlocks}`);
  }
  if (!Number.isInteger(parityBlocks) || parityBlocks < 0 || parityBlocks > MAX_PARITY_BLOCKS) {
    throw new RangeError(`parity: parity blocks must be 0..${MAX_PARITY_BLOCKS}, got ${parityBlocks}`);
  }
  return (parityBlocks << 4) | dataBlocks;
}

/** Low nibble D, high nibble P (metadata.md §2.8). Parity 0 (block-less spans) is rejected here. */
export function parseParity(parity: number): ParityShape {
  if (!Number.isInteger(parity) || parity < 0 || parity > 0xff) throw new RangeError(`parity byte out of range: ${parity}`);
  const dataBlocks = parity & 0x0f;
  const parityBlocks = parity >>> 4;
  if (dataBlocks === 0) throw new RangeError(`parity 0x${hex(parity)} has no data blocks (block-less spans carry no blocks)`);
  return { dataBlocks, parityBlocks };
}

/** "D+P" for messages and the CLI. */
export function formatParity(parity: number): string {
  const { dataBlocks, parityBlocks } = parseParity(parity);
  return `${dataBlocks}+${parityBlocks}`;
}

/** Accepts "4+2", "1+2", "0x24", "36". */
export function parseParityOption(text: string): number {
  const m = /^\s*(\d{1,2})\s*\+\s*(\d{1,2})\s*$/.exec(text);
  if (m) return parityByte(Number(m[1]), Number(m[2]));
  const n = /^0x[0-9a-f]{1,2}$/i.test(text.trim()) ? parseInt(text.trim(), 16) : /^\d{1,3}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isInteger(n)) throw new RangeError(`parity "${text}": expected D+P (e.g. 4+2) or a parity byte (e.g. 0x24)`);
  const { dataBlocks, parityBlocks } = parseParity(n);
  return parityByte(dataBlocks, parityBlocks);
}

/** Size of every parity block and of all but the trailing data blocks. */
export function blockSizeFor(spanSizeBytes: number, dataBlocks: number): number {
  if (dataBlocks === 1) return spanSizeBytes;
  const per = Math.ceil(spanSizeBytes / dataBlocks);
  return Math.ceil(per / BLOCK_ALIGN_BYTES) * BLOCK_ALIGN_BYTES;
}

/** The D data block sizes; they sum to the span size. */
export function dataBlockSizes(spanSizeBytes: number, dataBlocks: number): number[] {
  const bs = blockSizeFor(spanSizeBytes, dataBlocks);
  const sizes: number[] = [];
  for (let i = 0; i < dataBlocks; i++) sizes.push(Math.max(0, Math.min(bs, spanSizeBytes - i * bs)));
  return sizes;
}

/** Expected size of every block (data then parity) of a span. */
export function blockSizes(spanSizeBytes: number, parity: number): number[] {
  const { dataBlocks, parityBlocks } = parseParity(parity);
  const bs = blockSizeFor(spanSizeBytes, dataBlocks);
  const sizes = dataBlockSizes(spanSizeBytes, dataBlocks);
  for (let j = 0; j < parityBlocks; j++) sizes.push(bs);
  return sizes;
}

/**
 * The parity a span of this size is written with: `parity` itself, except that Reed-Solomon spans
 * smaller than ceil((D+P)/(P+1)) disk pages are mirrored with the same P (same loss tolerance, no
 * more disk, fewer blocks).
 */
export function spanParityFor(parity: number, spanSizeBytes: number): number {
  const { dataBlocks, parityBlocks } = parseParity(parity);
  if (dataBlocks === 1) return parity;
  const mirrorBelowBytes = Math.ceil((dataBlocks + parityBlocks) / (parityBlocks + 1)) * DISK_PAGE_BYTES;
  return spanSizeBytes < mirrorBelowBytes ? parityByte(1, parityBlocks) : parity;
}

export interface EncodedSpan {
  /** D data blocks then P parity blocks. Data blocks are views of the input (mirror copies are the input itself). */
  blocks: Buffer[];
  blockCrcs: number[];
  spanCrc: number;
}

/**
 * `parityScratch`: buffers the parity blocks may be computed into (views of them are returned),
 * grown or filled in as needed, so a writer encoding span after span reuses the same memory
 * instead of allocating (and faulting in) P fresh blocks per span. Undefined: fresh buffers.
 */
export function encodeSpan(data: Buffer, parity: number, parityScratch?: Buffer[]): EncodedSpan {
  const { dataBlocks: D, parityBlocks: P } = parseParity(parity);
  const size = data.length;
  if (D === 1) {
    const crc = crc32c(data);
    const blocks: Buffer[] = [];
    const blockCrcs: number[] = [];
    for (let b = 0; b < 1 + P; b++) {
      blocks.push(data);
      blockCrcs.push(crc);
    }
    return { blocks, blockCrcs, spanCrc: crc };
  }
  const bs = blockSizeFor(size, D);
  const sizes = dataBlockSizes(size, D);
  const blocks: Buffer[] = [];
  const blockCrcs: number[] = [];
  let spanCrc = 0;
  let offset = 0;
  for (let i = 0; i < D; i++) {
    const block = data.subarray(offset, offset + sizes[i]!);
    offset += sizes[i]!;
    const crc = crc32c(block);
    spanCrc = crc32cCombine(spanCrc, crc, block.length);
    blocks.push(block);
    blockCrcs.push(crc);
  }
  if (offset !== size) throw new Error(`span layout: data blocks cover ${offset} of ${size} bytes`);
  const parityBlocks: Buffer[] = [];
  for (let j = 0; j < P; j++) {
    let b = parityScratch?.[j];
    if (b === undefined || b.length < bs) {
      b = Buffer.allocUnsafe(bs);
      if (parityScratch) parityScratch[j] = b;
    }
    parityBlocks.push(b.subarray(0, bs));
  }
  getRsCodec(D, P).encode(blocks, parityBlocks, bs);
  for (const p of parityBlocks) {
    blocks.push(p);
    blockCrcs.push(crc32c(p));
  }
  return { blocks, blockCrcs, spanCrc };
}

/** Fewer than D usable blocks: the span cannot be rebuilt. */
export class SpanLostError extends Error {
  constructor(
    readonly usableBlocks: number,
    readonly neededBlocks: number,
    readonly totalBlocks: number,
    detail: string,
  ) {
    super(`span lost: ${usableBlocks} of ${totalBlocks} blocks usable, ${neededBlocks} needed${detail ? ` (${detail})` : ''}`);
    this.name = 'SpanLostError';
  }
}

export interface DecodedSpan {
  data: Buffer;
  /** Blocks present but rejected: wrong size or (when CRCs were given) wrong CRC. */
  badBlocks: number[];
  /** Whether parity (or a mirror copy other than block 0) had to be used. */
  degraded: boolean;
}

/**
 * Rebuild a span from its blocks (data then parity; undefined = unavailable). Present blocks of the
 * wrong size, or whose CRC differs from `blockCrcs[b]` when given, count as lost.
 */
export function decodeSpanDetailed(
  blocks: readonly (Buffer | undefined)[],
  parity: number,
  spanSizeBytes: number,
  blockCrcs?: readonly number[],
): DecodedSpan {
  const { dataBlocks: D, parityBlocks: P } = parseParity(parity);
  if (blocks.length !== D + P) throw new RangeError(`decodeSpan: parity ${D}+${P} needs ${D + P} block slots, got ${blocks.length}`);
  if (blockCrcs !== undefined && blockCrcs.length !== D + P) throw new RangeError(`decodeSpan: ${blockCrcs.length} CRCs for ${D + P} blocks`);
  const sizes = blockSizes(spanSizeBytes, parity);
  const badBlocks: number[] = [];
  const usable = (b: number): Buffer | undefined => {
    const block = blocks[b];
    if (block === undefined) return undefined;
    if (block.length !== sizes[b] || (blockCrcs !== undefined && crc32c(block) !== blockCrcs[b]! >>> 0)) {
      badBlocks.push(b);
      return undefined;
    }
    return block;
  };
  if (D === 1) {
    // Check copies lazily: the first good one is the span.
    for (let b = 0; b < 1 + P; b++) {
      const block = usable(b);
      if (block !== undefined) return { data: block, badBlocks, degraded: b !== 0 };
    }
    throw new SpanLostError(0, 1, 1 + P, describe(blocks, badBlocks));
  }
  const checked: (Buffer | undefined)[] = new Array(D + P).fill(undefined);
  let present = 0;
  for (let b = 0; b < D + P && present < D; b++) {
    checked[b] = usable(b);
    if (checked[b] !== undefined) present++;
  }
  if (present < D) throw new SpanLostError(present, D, D + P, describe(blocks, badBlocks));
  let degraded = false;
  for (let i = 0; i < D; i++) if (checked[i] === undefined) degraded = true;
  const dataBlocks = degraded
    ? getRsCodec(D, P).reconstructData(checked, sizes.slice(0, D), blockSizeFor(spanSizeBytes, D))
    : (checked.slice(0, D) as Buffer[]);
  const data = Buffer.concat(dataBlocks as Uint8Array[], spanSizeBytes);
  return { data, badBlocks, degraded };
}

export function decodeSpan(blocks: readonly (Buffer | undefined)[], parity: number, spanSizeBytes: number, blockCrcs?: readonly number[]): Buffer {
  return decodeSpanDetailed(blocks, parity, spanSizeBytes, blockCrcs).data;
}

function describe(blocks: readonly (Buffer | undefined)[], badBlocks: readonly number[]): string {
  const missing: number[] = [];
  blocks.forEach((b, i) => {
    if (b === undefined) missing.push(i);
  });
  const parts: string[] = [];
  if (missing.length > 0) parts.push(`unavailable: ${missing.join(',')}`);
  if (badBlocks.length > 0) parts.push(`bad size or CRC: ${badBlocks.join(',')}`);
  return parts.join('; ');
}

function hex(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** The cluster default: 4 data + 2 parity blocks, any 2 services lost, 1.5× the data stored. */
export const CLUSTER_DEFAULT_PARITY = 0x24;
/** Blocks a span of the default spreads over, plus a spare so one dead service still leaves a choice. */
const DEFAULT_PARITY_MIN_SERVICES = 4 + 2 + 1;

/**
 * The parity new files get when the writer names none, from the cluster's writable block services
 * (of the storage class written): 4+2 when there are at least 7 (so `eggsfs run`'s 10 survive any
 * 2 lost services at 1.5× the data), else 0x01 as the original (fewer services cannot place 4+2
 * with a spare; such clusters choose a mode per write, e.g. `--parity 1+2`).
 */
export function defaultParityFor(writableBlockServices: number): number {
  return writableBlockServices >= DEFAULT_PARITY_MIN_SERVICES ? CLUSTER_DEFAULT_PARITY : parityByte(1, 0);
}
