// The same Reed-Solomon code as rs.ts (same field, same matrix, byte-identical parity), with the
// inner loop in WebAssembly SIMD: GF(2^8) multiplication by a constant as two 16-entry nibble
// tables and i8x16.swizzle (pshufb on x86), 16 bytes per step, all D inputs of an output summed
// in a register. The module is a few hundred bytes assembled below, so there is no toolchain and
// nothing native to build; where WebAssembly SIMD is missing, rs-codec.ts uses rs.ts.
//
// Data moves through the module's memory in chunks (CHUNK_BYTES per block), which bounds memory to
// (D+P) chunks whatever the span size and keeps the working set in cache.
import { MUL_TABLE, checkEncodeArgs, decodePlan, parityMatrix, type RsCodec } from './rs.js';

/** Bytes of each block processed per kernel call. */
const CHUNK_BYTES = 32 * 1024;
/** The kernel's step: two 16-byte vectors. */
const VECTOR_BYTES = 32;
const TABLE_BYTES = 32; // low-nibble and high-nibble tables of one coefficient
const MAX_BLOCKS = 30;
const TABLES_BASE = 0;
const TABLES_LIMIT_BYTES = 16 * 15 * TABLE_BYTES; // rows × D tables, rows ≤ 15 (P or lost data blocks)
const IN_BASE = 8192;
const MEMORY_BYTES = IN_BASE + MAX_BLOCKS * CHUNK_BYTES;
const PAGE_BYTES = 65536;

if (TABLES_BASE + TABLES_LIMIT_BYTES > IN_BASE) throw new Error('rs-wasm: table area overlaps the inputs');

// ---- the module ------------------------------------------------------------------------------

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function name(s: string): number[] {
  return [...uleb(s.length), ...Buffer.from(s, 'ascii')];
}

const I32 = 0x7f;
const V128 = 0x7b;
// Opcodes (WebAssembly core + SIMD).
const LOOP = 0x03, END = 0x0b, BR_IF = 0x0d, VOID = 0x40;
const LOCAL_GET = 0x20, LOCAL_SET = 0x21, LOCAL_TEE = 0x22;
const I32_CONST = 0x41, I32_LT_U = 0x49, I32_ADD = 0x6a, I32_MUL = 0x6c, I32_SHL = 0x74;
const SIMD = 0xfd;
const V128_LOAD = [SIMD, 0x00], V128_STORE = [SIMD, 0x0b], V128_CONST = [SIMD, 0x0c];
const I8X16_SWIZZLE = [SIMD, 0x0e], I8X16_SPLAT = [SIMD, 0x0f];
const V128_AND = [SIMD, 0x4e], V128_XOR = [SIMD, 0x51], I8X16_SHR_U = [SIMD, 0x6d];
const memarg = (offset: number) => [0x00, ...uleb(offset)];

/**
 * matmul(nIn, nOut, nBytes, inBase, outBase, stride): for each output j < nOut and each 16-byte
 * lane k < nBytes: out_j[k] = XOR_i table(j·nIn + i)(in_i[k]), where in_i = inBase + i·stride,
 * out_j = outBase + j·stride and table t sits at 32·t (16 bytes c·x for x < 16, then c·(x<<4)).
 * nIn, nOut ≥ 1; nBytes a positive multiple of 32.
 */
function buildModule(): Uint8Array {
  // params 0..5: nIn, nOut, nBytes, inBase, outBase, stride; locals: j, k, i, inp, tab (i32);
  // acc, v, mask, acc2, v2, tlo, thi (v128). Two vectors per step: independent chains, tables loaded once.
  const [nIn, nOut, nBytes, inBase, outBase, stride] = [0, 1, 2, 3, 4, 5];
  const [j, k, i, inp, tab, acc, v, mask, acc2, v2, tlo, thi] = [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];
  const get = (x: number) => [LOCAL_GET, x];
  const set = (x: number) => [LOCAL_SET, x];
  const c32 = (x: number) => [I32_CONST, x]; // small non-negative constants < 64 only
  const code = [
    ...c32(15), ...I8X16_SPLAT, ...set(mask),
    ...c32(0), ...set(j),
    LOOP, VOID,
    ...c32(0), ...set(k),
    LOOP, VOID,
    ...V128_CONST, ...new Array(16).fill(0), ...set(acc),
    ...V128_CONST, ...new Array(16).fill(0), ...set(acc2),
    ...get(inBase), ...get(k), I32_ADD, ...set(inp),
    ...get(j), ...get(nIn), I32_MUL, ...c32(5), I32_SHL, ...set(tab),
    ...c32(0), ...set(i),
    LOOP, VOID,
    ...get(tab), ...V128_LOAD, ...memarg(0), ...set(tlo),
    ...get(tab), ...V128_LOAD, ...memarg(16), ...set(thi),
    ...get(inp), ...V128_LOAD, ...memarg(0), ...set(v),
    ...get(inp), ...V128_LOAD, ...memarg(16), ...set(v2),
    ...get(acc),
    ...get(tlo), ...get(v), ...get(mask), ...V128_AND, ...I8X16_SWIZZLE, ...V128_XOR,
    ...get(thi), ...get(v), ...c32(4), ...I8X16_SHR_U, ...I8X16_SWIZZLE, ...V128_XOR,
    ...set(acc),
    ...get(acc2),
    ...get(tlo), ...get(v2), ...get(mask), ...V128_AND, ...I8X16_SWIZZLE, ...V128_XOR,
    ...get(thi), ...get(v2), ...c32(4), ...I8X16_SHR_U, ...I8X16_SWIZZLE, ...V128_XOR,
    ...set(acc2),
    ...get(inp), ...get(stride), I32_ADD, ...set(inp),
    ...get(tab), ...c32(32), I32_ADD, ...set(tab),
    ...get(i), ...c32(1), I32_ADD, LOCAL_TEE, i, ...get(nIn), I32_LT_U, BR_IF, 0,
    END,
    ...get(outBase), ...get(j), ...get(stride), I32_MUL, I32_ADD, ...get(k), I32_ADD,
    ...set(inp),
    ...get(inp), ...get(acc), ...V128_STORE, ...memarg(0),
    ...get(inp), ...get(acc2), ...V128_STORE, ...memarg(16),
    ...get(k), ...c32(32), I32_ADD, LOCAL_TEE, k, ...get(nBytes), I32_LT_U, BR_IF, 0,
    END,
    ...get(j), ...c32(1), I32_ADD, LOCAL_TEE, j, ...get(nOut), I32_LT_U, BR_IF, 0,
    END,
    END,
  ];
  const locals = [2, 5, I32, 7, V128];
  const body = [...locals, ...code];
  const pages = Math.ceil(MEMORY_BYTES / PAGE_BYTES);
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 6, I32, I32, I32, I32, I32, I32, 0]),
    ...section(3, [1, 0]),
    ...section(5, [1, 0x00, ...uleb(pages)]),
    ...section(7, [2, ...name('mem'), 0x02, 0, ...name('matmul'), 0x00, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}

interface Kernel {
  mem: Uint8Array;
  matmul(nIn: number, nOut: number, nBytes: number, inBase: number, outBase: number, stride: number): void;
}

let kernel: Kernel | null | undefined;

/** The instantiated module, or null where WebAssembly SIMD is unavailable. */
export function wasmKernel(): Kernel | null {
  if (kernel !== undefined) return kernel;
  try {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(buildModule() as Uint8Array<ArrayBuffer>));
    const memory = instance.exports['mem'] as WebAssembly.Memory;
    const matmul = instance.exports['matmul'] as Kernel['matmul'];
    kernel = { mem: new Uint8Array(memory.buffer), matmul };
  } catch {
    kernel = null;
  }
  return kernel;
}

/** Write the nibble tables of `coeffs` (rows × cols, row-major) at the start of memory. */
function loadTables(mem: Uint8Array, coeffs: Uint8Array): void {
  if (coeffs.length * TABLE_BYTES > TABLES_LIMIT_BYTES) throw new RangeError(`rs-wasm: ${coeffs.length} coefficients exceed the table area`);
  for (let t = 0; t < coeffs.length; t++) {
    const c = coeffs[t]!;
    const base = TABLES_BASE + t * TABLE_BYTES;
    for (let x = 0; x < 16; x++) {
      mem[base + x] = MUL_TABLE[c * 256 + x]!;
      mem[base + 16 + x] = MUL_TABLE[c * 256 + (x << 4)]!;
    }
  }
}

/**
 * outputs[r][0..len) = Σ_i coeffs[r·n + i] · inputs[i] (inputs shorter than len are zero-extended),
 * chunk by chunk through the module's memory.
 */
function matmul(kn: Kernel, coeffs: Uint8Array, inputs: readonly Uint8Array[], outputs: readonly Uint8Array[], len: number): void {
  const nIn = inputs.length;
  const nOut = outputs.length;
  if (nIn + nOut > MAX_BLOCKS) throw new RangeError(`rs-wasm: ${nIn}+${nOut} blocks exceed ${MAX_BLOCKS}`);
  const mem = kn.mem;
  loadTables(mem, coeffs);
  const outBase = IN_BASE + nIn * CHUNK_BYTES;
  for (let off = 0; off < len; off += CHUNK_BYTES) {
    const n = Math.min(CHUNK_BYTES, len - off);
    const padded = Math.ceil(n / VECTOR_BYTES) * VECTOR_BYTES;
    for (let i = 0; i < nIn; i++) {
      const src = inputs[i]!;
      const base = IN_BASE + i * CHUNK_BYTES;
      const have = Math.max(0, Math.min(n, src.length - off));
      if (have > 0) mem.set(src.subarray(off, off + have), base);
      if (have < padded) mem.fill(0, base + have, base + padded);
    }
    kn.matmul(nIn, nOut, padded, IN_BASE, outBase, CHUNK_BYTES);
    for (let r = 0; r < nOut; r++) {
      const base = outBase + r * CHUNK_BYTES;
      outputs[r]!.set(mem.subarray(base, base + n), off);
    }
  }
}

export class WasmReedSolomon implements RsCodec {
  readonly matrix: Uint8Array;

  constructor(
    readonly dataBlocks: number,
    readonly parityBlocks: number,
    private readonly kn: Kernel,
  ) {
    this.matrix = parityMatrix(dataBlocks, parityBlocks);
  }

  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[], blockSizeBytes: number): void {
    const D = this.dataBlocks;
    const P = this.parityBlocks;
    checkEncodeArgs(D, P, data, parity, blockSizeBytes);
    if (P === 0 || blockSizeBytes === 0) return;
    matmul(this.kn, this.matrix, data, parity, blockSizeBytes);
  }

  reconstructData(blocks: readonly (Uint8Array | undefined)[], dataSizes: readonly number[], _blockSizeBytes: number): Uint8Array[] {
    const D = this.dataBlocks;
    const P = this.parityBlocks;
    const plan = decodePlan(this.matrix, D, P, blocks);
    const out = blocks.slice(0, D) as Uint8Array[];
    if (plan.missing.length === 0) return out;
    const rebuilt = plan.missing.map((i) => new Uint8Array(dataSizes[i]!));
    const len = Math.max(0, ...plan.missing.map((i) => dataSizes[i]!));
    if (len > 0) {
      // Outputs shorter than len (a trailing data block) get only their own bytes.
      const outs = rebuilt.map((b) => (b.length === len ? b : new Uint8Array(len)));
      matmul(this.kn, plan.coeffs, plan.rows.map((r) => blocks[r]!), outs, len);
      outs.forEach((o, m) => {
        if (o !== rebuilt[m]) rebuilt[m]!.set(o.subarray(0, rebuilt[m]!.length));
      });
    }
    plan.missing.forEach((i, m) => (out[i] = rebuilt[m]!));
    return out;
  }
}
