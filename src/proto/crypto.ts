// AES-128 CBC-MAC (zero IV, zero padding), the one MAC primitive of the whole system: privileged
// shard requests, file cookies, block write/erase certificates and proofs, block stats replies.
import { createCipheriv, randomBytes } from 'node:crypto';

export const KEY_BYTES = 16;
export const MAC_BYTES = 8;
const ZERO_IV = Buffer.alloc(16);

/** The CDC↔shard key fixed by the original protocol. */
export const DEFAULT_CDC_KEY = Buffer.from('a1111cf0f62bba0225d266e7a69486fe', 'hex');

function assertKey(key: Uint8Array): void {
  if (key.length !== KEY_BYTES) throw new RangeError(`AES-128 key must be ${KEY_BYTES} bytes, got ${key.length}`);
}

/** The full 16-byte final CBC state over `msg` zero-padded to a multiple of 16. */
function cbcMacState(msg: Uint8Array, key: Uint8Array): Buffer {
  assertKey(key);
  if (msg.length === 0) return Buffer.alloc(16);
  const padded = msg.length % 16 === 0 ? msg : Buffer.concat([msg, Buffer.alloc(16 - (msg.length % 16))]);
  const cipher = createCipheriv('aes-128-cbc', key, ZERO_IV);
  cipher.setAutoPadding(false);
  const out = cipher.update(padded);
  cipher.final();
  return out.subarray(out.length - 16);
}

/** compute_mac: the first 8 bytes of the final CBC-MAC block. */
export function cbcMac(msg: Uint8Array, key: Uint8Array): Buffer {
  return Buffer.from(cbcMacState(msg, key).subarray(0, MAC_BYTES));
}

export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/** File cookie: AES of (id LE ‖ 8 zero bytes), reading the *last* 8 bytes as a u64 LE. */
export function fileCookie(fileId: bigint, shardKey: Uint8Array): bigint {
  const block = Buffer.alloc(16);
  block.writeBigUInt64LE(fileId, 0);
  return cbcMacState(block, shardKey).readBigUInt64LE(8);
}

export function newSecretKey(): Buffer {
  return randomBytes(KEY_BYTES);
}

// Block certificates and proofs (block service key).

export function blockWriteCertificate(key: Uint8Array, blockId: bigint, crc: Uint8Array, sizeBytes: number): Buffer {
  const m = Buffer.alloc(17);
  m[0] = 0x77; // 'w'
  m.writeBigUInt64LE(blockId, 1);
  Buffer.from(crc).copy(m, 9);
  m.writeUInt32LE(sizeBytes, 13);
  return cbcMac(m, key);
}

function kindAndId(kind: number, blockId: bigint): Buffer {
  const m = Buffer.alloc(9);
  m[0] = kind;
  m.writeBigUInt64LE(blockId, 1);
  return m;
}

export function blockWriteProof(key: Uint8Array, blockId: bigint): Buffer {
  return cbcMac(kindAndId(0x57 /* W */, blockId), key);
}

export function blockEraseCertificate(key: Uint8Array, blockId: bigint): Buffer {
  return cbcMac(kindAndId(0x65 /* e */, blockId), key);
}

export function blockEraseProof(key: Uint8Array, blockId: bigint): Buffer {
  return cbcMac(kindAndId(0x45 /* E */, blockId), key);
}
