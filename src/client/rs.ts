// Systematic Reed-Solomon over GF(2^8), field polynomial x^8+x^4+x^3+x+1 (0x11B, as production
// TernFS). D data blocks, P parity blocks, any D of the D+P recover the data.
//
// The parity matrix is a Cauchy matrix C[j][i] = 1/(x_j + y_i) (x_j = j, y_i = P + i) with each
// column divided by its first entry. Scaling columns keeps every square submatrix non-singular
// (the Cauchy property), so the code is MDS, and it makes the first parity row all ones: parity
// block 0 is the XOR of the data, as in RAID-5 and production TernFS.
//
// Data blocks may be shorter than the block size (the last data blocks of a span): missing bytes
// count as zeros, which contribute nothing, so no padding copy is ever made.

export const MAX_DATA_BLOCKS = 15;
export const MAX_PARITY_BLOCKS = 15;

const FIELD_POLY = 0x11b;
const GENERATOR = 0x03; // 0x02 is not primitive for 0x11B; 0x03 is.

export const GF_EXP = new Uint8Array(512);
export const GF_LOG = new Uint8Array(256);
(() => {
  let x = 1;
  for (let i = 0; i < 255; i++) {
    GF_EXP[i] = x;
    GF_LOG[x] = i;
    // x *= 3, i.e. x*2 ^ x
    let x2 = x << 1;
    if (x2 & 0x100) x2 ^= FIELD_POLY;
    x = x2 ^ x;
  }
  if (x !== 1) throw new Error('GF(2^8) generator is not primitive');
  for (let i = 255; i < 512; i++) GF_EXP[i] = GF_EXP[i - 255]!;
})();

export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return GF_EXP[GF_LOG[a]! + GF_LOG[b]!]!;
}

export function gfInv(a: number): number {
  if (a === 0) throw new RangeError('GF(2^8): inverse of zero');
  return GF_EXP[255 - GF_LOG[a]!]!;
}

/** MUL_TABLE[c * 256 + x] = c·x: one 256-byte table per coefficient, 64 KiB in all. */
export const MUL_TABLE = new Uint8Array(256 * 256);
for (let c = 0; c < 256; c++) for (let x = 0; x < 256; x++) MUL_TABLE[c * 256 + x] = gfMul(c, x);

/** Invert a square n×n matrix (row-major) by Gauss-Jordan; throws if singular. */
export function gfInvertMatrix(m: Uint8Array, n: number): Uint8Array {
  const a = Uint8Array.from(m);
  const inv = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let col = 0; col < n; col++) {
    let pivot = col;
    while (pivot < n && a[pivot * n + col] === 0) pivot++;
    if (pivot === n) throw new Error('Reed-Solomon: singular decode matrix');
    if (pivot !== col) {
      for (let k = 0; k < n; k++) {
        let t = a[col * n + k]!; a[col * n + k] = a[pivot * n + k]!; a[pivot * n + k] = t;
        t = inv[col * n + k]!; inv[col * n + k] = inv[pivot * n + k]!; inv[pivot * n + k] = t;
      }
    }
    const s = gfInv(a[col * n + col]!);
    for (let k = 0; k < n; k++) {
      a[col * n + k] = gfMul(a[col * n + k]!, s);
      inv[col * n + k] = gfMul(inv[col * n + k]!, s);
    }
    for (let r = 0; r < n; r++) {
      const f = a[r * n + col]!;
      if (r === col || f === 0) continue;
      for (let k = 0; k < n; k++) {
        a[r * n + k]! ^= gfMul(f, a[col * n + k]!);
        inv[r * n + k]! ^= gfMul(f, inv[col * n + k]!);
      }
    }
  }
  return inv;
}

/** The P×D parity matrix (row-major); row 0 is all ones. */
export function parityMatrix(dataBlocks: number, parityBlocks: number): Uint8Array {
  checkShape(dataBlocks, parityBlocks);
  const m = new Uint8Array(parityBlocks * dataBlocks);
  for (let i = 0; i < dataBlocks; i++) {
    const y = parityBlocks + i;
    const first = gfInv(0 ^ y);
    for (let j = 0; j < parityBlocks; j++) m[j * dataBlocks + i] = gfMul(gfInv(j ^ y), gfInv(first));
  }
  return m;
}

function checkShape(dataBlocks: number, parityBlocks: number): void {
  if (!Number.isInteger(dataBlocks) || dataBlocks < 1 || dataBlocks > MAX_DATA_BLOCKS) {
    throw new RangeError(`Reed-Solomon: data blocks must be 1..${MAX_DATA_BLOCKS}, got ${dataBlocks}`);
  }
  if (!Number.isInteger(parityBlocks) || parityBlocks < 0 || parityBlocks > MAX_PARITY_BLOCKS) {
    throw new RangeError(`Reed-Solomon: parity blocks must be 0..${MAX_PARITY_BLOCKS}, got ${parityBlocks}`);
  }
}

// ---- kernels ---------------------------------------------------------------------------------

/** out[0..n) ^= input[0..n). Word-at-a-time when both views are 4-byte aligned. */
export function xorInto(out: Uint8Array, input: Uint8Array, n: number): void {
  let k = 0;
  if (((out.byteOffset | input.byteOffset) & 3) === 0 && n >= 64) {
    const words = n >>> 2;
    const o32 = new Uint32Array(out.buffer, out.byteOffset, words);
    const i32 = new Uint32Array(input.buffer, input.byteOffset, words);
    for (let w = 0; w < words; w++) o32[w]! ^= i32[w]!;
    k = words << 2;
  }
  for (; k < n; k++) out[k]! ^= input[k]!;
}

/** out[0..n) ^= c · input[0..n). */
export function mulAccInto(out: Uint8Array, input: Uint8Array, c: number, n: number): void {
  if (c === 0) return;
  if (c === 1) return xorInto(out, input, n);
  const t = MUL_TABLE.subarray(c * 256, c * 256 + 256);
  let k = 0;
  if (((out.byteOffset | input.byteOffset) & 3) === 0 && n >= 64) {
    // Four table look-ups per 32-bit word: one load and one store instead of four of each.
    const words = n >>> 2;
    const o32 = new Uint32Array(out.buffer, out.byteOffset, words);
    const i32 = new Uint32Array(input.buffer, input.byteOffset, words);
    for (let w = 0; w < words; w++) {
      const v = i32[w]!;
      o32[w]! ^= t[v & 0xff]! | (t[(v >>> 8) & 0xff]! << 8) | (t[(v >>> 16) & 0xff]! << 16) | (t[v >>> 24]! << 24);
    }
    k = words << 2;
  }
  for (; k < n; k++) out[k]! ^= t[input[k]!]!;
}

// ---- codec -------------------------------------------------------------------------------------

/** The codec interface, so a faster implementation can stand in for the TypeScript one. */
export interface RsCodec {
  readonly dataBlocks: number;
  readonly parityBlocks: number;
  /**
   * Fill `parity` (P buffers of exactly blockSizeBytes) from `data` (D buffers of at most
   * blockSizeBytes; shorter ones are zero-extended).
   */
  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[], blockSizeBytes: number): void;
  /**
   * Recompute the missing data blocks. `blocks` has D+P entries (undefined = lost); at least D
   * are present. Present data blocks are `dataSizes[i]` long, parity blocks blockSizeBytes.
   * Returns the D data blocks (present ones as given, rebuilt ones of dataSizes[i] bytes).
   */
  reconstructData(blocks: readonly (Uint8Array | undefined)[], dataSizes: readonly number[], blockSizeBytes: number): Uint8Array[];
}

export class TsReedSolomon implements RsCodec {
  readonly matrix: Uint8Array;

  constructor(
    readonly dataBlocks: number,
    readonly parityBlocks: number,
  ) {
    this.matrix = parityMatrix(dataBlocks, parityBlocks);
  }

  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[], blockSizeBytes: number): void {
    const D = this.dataBlocks;
    const P = this.parityBlocks;
    checkEncodeArgs(D, P, data, parity, blockSizeBytes);
    for (let j = 0; j < P; j++) {
      const out = parity[j]!;
      out.fill(0);
      for (let i = 0; i < D; i++) {
        const input = data[i]!;
        mulAccInto(out, input, this.matrix[j * D + i]!, input.length);
      }
    }
  }

  reconstructData(blocks: readonly (Uint8Array | undefined)[], dataSizes: readonly number[], blockSizeBytes: number): Uint8Array[] {
    const D = this.dataBlocks;
    const P = this.parityBlocks;
    const plan = decodePlan(this.matrix, D, P, blocks);
    if (plan.missing.length === 0) return blocks.slice(0, D) as Uint8Array[];
    const { rows, missing, coeffs } = plan;
    const out = blocks.slice(0, D) as Uint8Array[];
    for (const i of missing) {
      const rebuilt = new Uint8Array(blockSizeBytes);
      const m = missing.indexOf(i);
      for (let r = 0; r < D; r++) {
        const src = blocks[rows[r]!]!;
        mulAccInto(rebuilt, src, coeffs[m * D + r]!, Math.min(src.length, blockSizeBytes));
      }
      out[i] = rebuilt.subarray(0, dataSizes[i]!);
    }
    return out;
  }
}

export interface DecodePlan {
  /** The D present blocks used (indices into data-then-parity). */
  rows: number[];
  /** The lost data blocks, in order. */
  missing: number[];
  /** missing.length × D: lost data block m = Σ_r coeffs[m·D + r] · block rows[r]. */
  coeffs: Uint8Array;
}

/** Every codec's encode checks its buffers here: D data of at most blockSizeBytes, P parity of exactly that. */
export function checkEncodeArgs(D: number, P: number, data: readonly Uint8Array[], parity: readonly Uint8Array[], blockSizeBytes: number): void {
  if (data.length !== D || parity.length !== P) {
    throw new RangeError(`Reed-Solomon ${D}+${P}: got ${data.length} data and ${parity.length} parity buffers`);
  }
  for (let j = 0; j < P; j++) {
    if (parity[j]!.length !== blockSizeBytes) throw new RangeError(`parity block ${j} is ${parity[j]!.length} bytes, want ${blockSizeBytes}`);
  }
  for (let i = 0; i < D; i++) {
    if (data[i]!.length > blockSizeBytes) throw new RangeError(`data block ${i} is ${data[i]!.length} bytes, over ${blockSizeBytes}`);
  }
}

/**
 * Which D present blocks rebuild the lost data blocks, and with which coefficients. `blocks` has
 * the D+P entries every codec's reconstructData takes (undefined = lost).
 */
export function decodePlan(matrix: Uint8Array, D: number, P: number, blocks: readonly (Uint8Array | undefined)[]): DecodePlan {
  if (blocks.length !== D + P) throw new RangeError(`Reed-Solomon ${D}+${P}: got ${blocks.length} blocks`);
  const missing: number[] = [];
  for (let i = 0; i < D; i++) if (blocks[i] === undefined) missing.push(i);
  // The first D present blocks (data first, so as few parity blocks as possible are involved).
  const rows: number[] = [];
  for (let b = 0; b < D + P && rows.length < D; b++) if (blocks[b] !== undefined) rows.push(b);
  if (missing.length === 0) return { rows, missing, coeffs: new Uint8Array(0) };
  if (rows.length < D) throw new RangeError(`Reed-Solomon ${D}+${P}: only ${rows.length} blocks present, need ${D}`);
  const sub = new Uint8Array(D * D);
  for (let r = 0; r < D; r++) {
    const b = rows[r]!;
    for (let i = 0; i < D; i++) sub[r * D + i] = b < D ? (b === i ? 1 : 0) : matrix[(b - D) * D + i]!;
  }
  const inv = gfInvertMatrix(sub, D);
  const coeffs = new Uint8Array(missing.length * D);
  missing.forEach((i, m) => coeffs.set(inv.subarray(i * D, i * D + D), m * D));
  return { rows, missing, coeffs };
}
