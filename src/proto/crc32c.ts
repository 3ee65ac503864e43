// CRC-32C (Castagnoli). The bulk computation is the SSE4.2 kernel of `fast-crc32c` (its native
// dependency sse4_crc32), chosen by measurement on this machine: 9.07 GiB/s against 5.81 GiB/s for
// @node-rs/crc32 and about 0.4 GiB/s for table-driven JavaScript. fast-crc32c falls back to pure
// JavaScript where the native build is unavailable.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const impl: { calculate(buf: Uint8Array | string, initial?: number): number } = require('fast-crc32c');

/** CRC of `buf`, continuing from `previous` (the CRC of what came before). */
export function crc32c(buf: Uint8Array, previous = 0): number {
  return impl.calculate(buf as Buffer, previous) >>> 0;
}

/** The 4 wire bytes of a CRC: the u32 in little-endian order. */
export function crcToBytes(crc: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(crc >>> 0, 0);
  return b;
}

export function crcFromBytes(b: Uint8Array): number {
  if (b.length !== 4) throw new RangeError(`crc must be 4 bytes, got ${b.length}`);
  return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
}

// zlib-style combination, in the reflected representation where x^0 is 0x80000000.
const POLY = 0x82f63b78;

function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) mod P. */
const X2N: number[] = (() => {
  const t: number[] = [0x40000000];
  for (let k = 1; k < 32; k++) t.push(multModP(t[k - 1]!, t[k - 1]!));
  return t;
})();

/** x^(n * 2^k) mod P, for a non-negative integer n (bigint for sizes above 2^53). */
function x2nModP(n: bigint, k: number): number {
  let p = 0x80000000;
  while (n > 0n) {
    if (n & 1n) p = multModP(X2N[k & 31]!, p);
    n >>= 1n;
    k++;
  }
  return p;
}

/** CRC of A‖B from crc(A), crc(B) and len(B). */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number | bigint): number {
  return (multModP(x2nModP(BigInt(lengthB), 3), crcA >>> 0) ^ (crcB >>> 0)) >>> 0;
}

const ZERO_CHUNK_BYTES = 1 << 16;
const zeroChunk = Buffer.alloc(ZERO_CHUNK_BYTES);
const zeroChunkCrc = crc32c(zeroChunk);

/** CRC of `size` zero bytes in O(log size), so huge zero-fill spans cost nothing. */
export function crc32cZeros(size: number | bigint): number {
  const n = BigInt(size);
  const chunks = n / BigInt(ZERO_CHUNK_BYTES);
  const rest = Number(n % BigInt(ZERO_CHUNK_BYTES));
  // crc(zeros(k*C)) by doubling over chunk counts.
  let acc = 0; // crc of the empty string
  let powCrc = zeroChunkCrc; // crc of zeros(2^i * C)
  let powBytes = BigInt(ZERO_CHUNK_BYTES);
  let c = chunks;
  while (c > 0n) {
    if (c & 1n) {
      acc = crc32cCombine(acc, powCrc, powBytes);
    }
    powCrc = crc32cCombine(powCrc, powCrc, powBytes);
    powBytes *= 2n;
    c >>= 1n;
  }
  return rest === 0 ? acc : crc32c(zeroChunk.subarray(0, rest), acc);
}
