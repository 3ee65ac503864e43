// The GF(2^8) Reed-Solomon codec and the span layout: field arithmetic against a bitwise reference,
// the MDS property of the parity matrix, every erasure pattern up to P for each supported shape, and
// the shard's span validation rules (metadata.md §7.4) on what encodeSpan produces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { crc32c, crc32cCombine } from '../src/proto/crc32c.js';
import { GF_EXP, GF_LOG, TsReedSolomon, gfInv, gfInvertMatrix, gfMul, mulAccInto, parityMatrix, xorInto } from '../src/client/rs.js';
import { WasmReedSolomon, wasmKernel } from '../src/client/rs-wasm.js';
import { getRsCodec, rsCodecName } from '../src/client/rs-codec.js';
import {
  SpanLostError,
  blockSizes,
  dataBlockSizes,
  defaultParityFor,
  decodeSpan,
  decodeSpanDetailed,
  encodeSpan,
  formatParity,
  parityByte,
  parseParity,
  parseParityOption,
  spanParityFor,
} from '../src/client/span-layout.js';

/** Carry-less multiply modulo 0x11B, bit by bit: the reference the tables must match. */
function slowMul(a: number, b: number): number {
  let p = 0;
  for (let i = 0; i < 8; i++) {
    if (b & 1) p ^= a;
    b >>= 1;
    a <<= 1;
    if (a & 0x100) a ^= 0x11b;
  }
  return p;
}

function* combinations(n: number, k: number, start = 0, acc: number[] = []): Generator<number[]> {
  if (acc.length === k) {
    yield acc.slice();
    return;
  }
  for (let i = start; i < n; i++) {
    acc.push(i);
    yield* combinations(n, k, i + 1, acc);
    acc.pop();
  }
}

test('GF(2^8) multiply, log/exp and inverse match the bitwise reference', () => {
  for (let a = 0; a < 256; a++) {
    for (let b = 0; b < 256; b++) assert.equal(gfMul(a, b), slowMul(a, b), `${a}·${b}`);
    if (a !== 0) {
      assert.equal(GF_EXP[GF_LOG[a]!], a);
      assert.equal(gfMul(a, gfInv(a)), 1);
    }
  }
  assert.throws(() => gfInv(0), /inverse of zero/);
});

test('parity row 0 is XOR and every D×D submatrix of the generator is invertible (MDS)', () => {
  for (const [D, P] of [[2, 1], [3, 2], [4, 2], [6, 3], [10, 4], [15, 2]] as const) {
    const m = parityMatrix(D, P);
    for (let i = 0; i < D; i++) assert.equal(m[i], 1, `${D}+${P} row 0 col ${i}`);
    let checked = 0;
    for (const rows of combinations(D + P, D)) {
      const sub = new Uint8Array(D * D);
      rows.forEach((b, r) => {
        for (let i = 0; i < D; i++) sub[r * D + i] = b < D ? (b === i ? 1 : 0) : m[(b - D) * D + i]!;
      });
      gfInvertMatrix(sub, D); // throws when singular
      checked++;
      if (checked > 3000) break;
    }
  }
});

test('word-at-a-time kernels equal the byte loop at any alignment and length', () => {
  const src = randomBytes(1000);
  for (const c of [0, 1, 2, 3, 0x53, 0xff]) {
    for (const [oo, io, n] of [[0, 0, 999], [1, 0, 200], [0, 3, 100], [4, 8, 1000 - 8], [2, 2, 65]]) {
      const outA = Buffer.from(randomBytes(1000));
      const outB = Buffer.from(outA);
      mulAccInto(outA.subarray(oo), src.subarray(io), c, n!);
      for (let k = 0; k < n!; k++) outB[oo! + k]! ^= slowMul(c, src[io! + k]!);
      assert.deepEqual(outA, outB, `c=${c} offsets ${oo}/${io} n=${n}`);
    }
  }
  const a = Buffer.from(randomBytes(300));
  const b = randomBytes(300);
  const expect = Buffer.from(a.map((x, i) => x ^ b[i]!));
  xorInto(a, b, 300);
  assert.deepEqual(a, expect);
});

test('codec: every loss pattern of up to P blocks reconstructs the data', () => {
  for (const [D, P] of [[2, 1], [3, 2], [4, 2], [5, 3]] as const) {
    const codec = new TsReedSolomon(D, P);
    const bs = 4096 + 24;
    const sizes = Array.from({ length: D }, (_, i) => (i === D - 1 ? 1001 : bs));
    const data = sizes.map((s) => randomBytes(s));
    const parity = Array.from({ length: P }, () => Buffer.alloc(bs));
    codec.encode(data, parity, bs);
    // Parity 0 is the XOR of the zero-extended data.
    const x = Buffer.alloc(bs);
    for (const d of data) for (let k = 0; k < d.length; k++) x[k]! ^= d[k]!;
    assert.deepEqual(parity[0], x);
    const all = [...data, ...parity];
    for (let lost = 1; lost <= P; lost++) {
      for (const gone of combinations(D + P, lost)) {
        const blocks = all.map((b, i) => (gone.includes(i) ? undefined : b));
        const out = codec.reconstructData(blocks, sizes, bs);
        for (let i = 0; i < D; i++) assert.deepEqual(Buffer.from(out[i]!), data[i], `${D}+${P} lost ${gone} block ${i}`);
      }
    }
    const tooMany = all.map((b, i) => (i <= P ? undefined : b));
    assert.throws(() => codec.reconstructData(tooMany, sizes, bs), /need/);
  }
});

test('parity byte helpers', () => {
  assert.equal(parityByte(1, 0), 0x01);
  assert.equal(parityByte(1, 1), 0x11);
  assert.equal(parityByte(4, 2), 0x24);
  assert.deepEqual(parseParity(0x24), { dataBlocks: 4, parityBlocks: 2 });
  assert.deepEqual(parseParity(0x31), { dataBlocks: 1, parityBlocks: 3 });
  assert.throws(() => parseParity(0x20), /no data blocks/);
  assert.equal(parityByte(4, 0), 0x04); // striping without redundancy: legal on the wire
  assert.throws(() => parityByte(16, 1), /1\.\.15/);
  assert.equal(parseParityOption('4+2'), 0x24);
  assert.equal(parseParityOption('1+2'), 0x21);
  assert.equal(parseParityOption('0x13'), 0x13);
  assert.equal(parseParityOption('1'), 0x01);
  assert.throws(() => parseParityOption('four'), /expected D\+P/);
  assert.equal(formatParity(0x24), '4+2');
  // Small RS spans are mirrored with the same P; mirroring and large spans are left alone.
  assert.equal(spanParityFor(0x24, 100), 0x21);
  assert.equal(spanParityFor(0x24, 8191), 0x21);
  assert.equal(spanParityFor(0x24, 8192), 0x24);
  assert.equal(spanParityFor(0x21, 1), 0x21);
  assert.equal(spanParityFor(0x01, 1), 0x01);
  // The cluster default: 4+2 where there are the services for it and a spare, else one block.
  assert.equal(defaultParityFor(10), 0x24);
  assert.equal(defaultParityFor(7), 0x24);
  assert.equal(defaultParityFor(6), 0x01);
  assert.equal(defaultParityFor(0), 0x01);
});

const MODES = [0x01, 0x11, 0x21, 0x12, 0x13, 0x24, 0x2a, 0x4a, 0x1f];
const SIZES = [1, 2, 7, 8, 9, 63, 4096, 8192 + 5, 100_003, 1 << 20];

test('encodeSpan satisfies the shard span rules (metadata.md §7.4) for every mode and size', () => {
  for (const parity of MODES) {
    const { dataBlocks: D, parityBlocks: P } = parseParity(parity);
    for (const size of SIZES) {
      const data = randomBytes(size);
      const { blocks, blockCrcs, spanCrc } = encodeSpan(data, parity);
      assert.equal(blocks.length, D + P);
      assert.equal(spanCrc, crc32c(data));
      blocks.forEach((b, i) => assert.equal(blockCrcs[i], crc32c(b), `block ${i} crc`));
      assert.deepEqual(blocks.map((b) => b.length), blockSizes(size, parity));
      let sum = 0;
      for (let i = 0; i < D; i++) sum += blocks[i]!.length;
      assert.equal(sum, size, 'span size = sum of the D data block sizes');
      if (D === 1) {
        for (const c of blockCrcs) assert.equal(c, spanCrc, 'mirror CRC = span CRC');
      } else {
        let combined = 0;
        for (let i = 0; i < D; i++) combined = crc32cCombine(combined, blockCrcs[i]!, blocks[i]!.length);
        assert.equal(combined, spanCrc, 'span CRC = combination of the data block CRCs');
        assert.deepEqual(Buffer.concat(blocks.slice(0, D)), data, 'span = concatenation of the data blocks');
      }
    }
  }
});

test('decodeSpan rebuilds from any D blocks, rejects bad CRCs, and names the loss past P', () => {
  for (const parity of MODES) {
    const { dataBlocks: D, parityBlocks: P } = parseParity(parity);
    for (const size of [1, 9, 8192 + 5, 100_003]) {
      const data = randomBytes(size);
      const { blocks, blockCrcs } = encodeSpan(data, parity);
      assert.deepEqual(decodeSpan(blocks, parity, size), data);
      // Lose the first P, the last P, and a middle pattern.
      const patterns = [
        Array.from({ length: P }, (_, i) => i),
        Array.from({ length: P }, (_, i) => D + P - 1 - i),
        Array.from({ length: P }, (_, i) => (i * 2 + 1) % (D + P)),
      ];
      for (const gone of patterns) {
        const partial = blocks.map((b, i) => (gone.includes(i) ? undefined : b));
        assert.deepEqual(decodeSpan(partial, parity, size), data, `${formatParity(parity)} size ${size} lost ${gone}`);
      }
      // Corrupt P blocks (a flipped byte, same size): CRCs catch it and parity fills in.
      const corrupted = blocks.map((b) => Buffer.from(b));
      for (let i = 0; i < P; i++) if (corrupted[i]!.length > 0) corrupted[i]![0]! ^= 0x5a;
      const d = decodeSpanDetailed(corrupted, parity, size, blockCrcs);
      assert.deepEqual(d.data, data);
      if (P > 0) assert.equal(d.degraded, true);
      // One more than P lost: a SpanLostError that says how many were usable.
      const lost = blocks.map((b, i) => (i <= P ? undefined : b));
      assert.throws(
        () => decodeSpan(lost, parity, size),
        (e: unknown) => e instanceof SpanLostError && e.usableBlocks === D - 1 && /unavailable: 0/.test(e.message),
      );
    }
  }
  // A block of the wrong size counts as lost.
  const data = randomBytes(50_000);
  const { blocks } = encodeSpan(data, 0x24);
  const wrong = blocks.slice() as (Buffer | undefined)[];
  wrong[1] = blocks[1]!.subarray(1);
  const r = decodeSpanDetailed(wrong, 0x24, data.length);
  assert.deepEqual(r.data, data);
  assert.deepEqual(r.badBlocks, [1]);
  assert.deepEqual(dataBlockSizes(9, 4), [8, 1, 0, 0]);
});

test('WebAssembly SIMD codec writes byte-identical parity and rebuilds like the TypeScript one', (t) => {
  const kn = wasmKernel();
  if (kn === null) {
    // Only runtimes without WebAssembly SIMD get here; the TypeScript codec is then the one in use.
    assert.equal(rsCodecName(), 'TypeScript');
    t.skip('no WebAssembly SIMD in this runtime');
    return;
  }
  if (process.env['EGGSFS_RS_CODEC'] !== 'ts') assert.ok(getRsCodec(4, 2) instanceof WasmReedSolomon, 'the SIMD codec is the one in use');
  for (const [D, P] of [[2, 1], [4, 2], [3, 3], [10, 4], [15, 15]] as const) {
    const ts = new TsReedSolomon(D, P);
    const wasm = new WasmReedSolomon(D, P, kn);
    // Sizes around the 16-byte vector and the 32 KiB chunk.
    for (const bs of [8, 16, 24, 4096, 32 * 1024, 32 * 1024 + 40, 100_008]) {
      const sizes = Array.from({ length: D }, (_, i) => (i === D - 1 ? Math.max(0, bs - 13) : bs));
      const data = sizes.map((n) => randomBytes(n));
      const pa = Array.from({ length: P }, () => Buffer.alloc(bs));
      const pb = Array.from({ length: P }, () => Buffer.alloc(bs, 0xee));
      ts.encode(data, pa, bs);
      wasm.encode(data, pb, bs);
      assert.deepEqual(pb, pa, `${D}+${P} bs ${bs}: parity`);
      const all = [...data, ...pa];
      const lose = Array.from({ length: Math.min(P, D) }, (_, i) => (i * 3) % D);
      const blocks = all.map((b, i) => (lose.includes(i) ? undefined : b));
      const out = wasm.reconstructData(blocks, sizes, bs);
      for (let i = 0; i < D; i++) assert.deepEqual(Buffer.from(out[i]!), data[i], `${D}+${P} bs ${bs}: block ${i}`);
    }
  }
});
