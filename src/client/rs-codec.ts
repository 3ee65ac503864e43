// Which Reed-Solomon implementation the client uses, one cached codec per shape. Chosen by
// bench/rs.ts: our WebAssembly SIMD kernel (rs-wasm.ts) where the runtime has WebAssembly SIMD,
// else the TypeScript codec (rs.ts). Both compute the same code, so blocks written by one are
// read by the other. EGGSFS_RS_CODEC=ts forces the TypeScript codec (tests of the fallback).
import { MAX_DATA_BLOCKS, MAX_PARITY_BLOCKS, TsReedSolomon, type RsCodec } from './rs.js';
import { WasmReedSolomon, wasmKernel } from './rs-wasm.js';

export { MAX_DATA_BLOCKS, MAX_PARITY_BLOCKS, type RsCodec };

const codecs = new Map<number, RsCodec>();

function useWasm(): boolean {
  return process.env['EGGSFS_RS_CODEC'] !== 'ts' && wasmKernel() !== null;
}

export function getRsCodec(dataBlocks: number, parityBlocks: number): RsCodec {
  const key = (parityBlocks << 4) | dataBlocks;
  let codec = codecs.get(key);
  if (codec === undefined) {
    const kn = useWasm() ? wasmKernel() : null;
    codec = kn !== null ? new WasmReedSolomon(dataBlocks, parityBlocks, kn) : new TsReedSolomon(dataBlocks, parityBlocks);
    codecs.set(key, codec);
  }
  return codec;
}

export function rsCodecName(): string {
  return useWasm() ? 'WebAssembly SIMD' : 'TypeScript';
}
