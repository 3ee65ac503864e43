// How a span's bytes become blocks and back: the redundancy code of ./span-layout.js (D data + P
// parity blocks, mirrors for D = 1), plus the parity checks the writer needs.
import { decodeSpan as decodeWithLayout, encodeSpan as encodeWithLayout, parseParity, spanParityFor, type EncodedSpan } from './span-layout.js';

export type { EncodedSpan } from './span-layout.js';

export function dataBlocks(parity: number): number {
  return parity & 0x0f;
}

/** Throws a RangeError naming the problem unless `parity` is usable for block-backed spans. */
export function checkParity(parity: number): void {
  parseParity(parity);
}

/** The parity a span of this size is written with (small striped spans are mirrored instead). */
export function parityForSpan(parity: number, sizeBytes: number): number {
  return spanParityFor(parity, sizeBytes);
}

export function encodeSpan(data: Buffer, parity: number): EncodedSpan {
  return encodeWithLayout(data, parity);
}

/** The span from its blocks (undefined = missing or bad); throws when fewer than D are usable. */
export function decodeSpan(blocks: (Buffer | undefined)[], parity: number, spanSizeBytes: number): Buffer {
  return decodeWithLayout(blocks, parity, spanSizeBytes);
}
