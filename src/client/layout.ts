// How a span's bytes become blocks and back: the redundancy code of ./span-layout.js (D data + P
// parity blocks, mirrors for D = 1), plus the parity checks the writer needs.
import { crc32c, crc32cCombine } from '../proto/crc32c.js';
import { dataBlockSizes, decodeSpan as decodeWithLayout, encodeSpan as encodeWithLayout, parseParity, spanParityFor, type EncodedSpan } from './span-layout.js';

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

/** `parityScratch`: see span-layout's encodeSpan (memory reused for parity blocks). */
export function encodeSpan(data: Buffer, parity: number, parityScratch?: Buffer[]): EncodedSpan {
  const { dataBlocks: d, parityBlocks: p } = parseParity(parity);
  if (d === 1 || p > 0) return encodeWithLayout(data, parity, parityScratch);
  // Striping without parity (D > 1, P = 0): legal on the wire, no redundancy, D block services
  // written in parallel. Same data-block sizes as the redundancy layout.
  const blocks: Buffer[] = [];
  const blockCrcs: number[] = [];
  let spanCrc = 0;
  let off = 0;
  for (const size of dataBlockSizes(data.length, d)) {
    const b = data.subarray(off, off + size);
    off += size;
    const crc = crc32c(b);
    spanCrc = crc32cCombine(spanCrc, crc, b.length);
    blocks.push(b);
    blockCrcs.push(crc);
  }
  return { blocks, blockCrcs, spanCrc };
}

/** The span from its blocks (undefined = missing or bad); throws when fewer than D are usable. */
export function decodeSpan(blocks: (Buffer | undefined)[], parity: number, spanSizeBytes: number): Buffer {
  const { dataBlocks: d, parityBlocks: p } = parseParity(parity);
  if (d > 1 && p === 0) {
    if (blocks.some((b) => b === undefined)) throw new Error(`a block of a ${d}+0 span is unreadable and there is no parity`);
    return Buffer.concat(blocks as Buffer[], spanSizeBytes);
  }
  return decodeWithLayout(blocks, parity, spanSizeBytes);
}
