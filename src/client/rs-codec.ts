// Which Reed-Solomon implementation the client uses (chosen by bench/rs.ts), one cached codec per shape.
import { MAX_DATA_BLOCKS, MAX_PARITY_BLOCKS, TsReedSolomon, type RsCodec } from './rs.js';

export { MAX_DATA_BLOCKS, MAX_PARITY_BLOCKS, type RsCodec };

const codecs = new Map<number, RsCodec>();

export function getRsCodec(dataBlocks: number, parityBlocks: number): RsCodec {
  const key = (parityBlocks << 4) | dataBlocks;
  let codec = codecs.get(key);
  if (codec === undefined) {
    codec = new TsReedSolomon(dataBlocks, parityBlocks);
    codecs.set(key, codec);
  }
  return codec;
}
