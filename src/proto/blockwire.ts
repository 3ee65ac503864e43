// The block-service TCP protocol (services.md §2.3) and shuckle's registration datagram (§2.7):
// fixed layouts, declared once like the UDP messages. Each request and response starts with an
// ASCII kind byte; the body after it is the struct declared here.
import { decode, encode, fixed, struct, u16, u32, u64, u8, type Infer } from './bincode.js';

const crc32 = fixed(4);
const mac8 = fixed(8);

export const BLOCK_MESSAGES = {
  WRITE: {
    reqKind: 0x77, // 'w', then `size` data bytes
    respKind: 0x57, // 'W'
    req: struct('BlockWriteReq', { blockId: u64, crc32, size: u32, certificate: mac8 }),
    resp: struct('BlockWriteResp', { blockId: u64, proof: mac8 }),
  },
  FETCH: {
    reqKind: 0x66, // 'f'
    respKind: 0x46, // 'F', then `size` data bytes
    req: struct('BlockFetchReq', { blockId: u64 }),
    resp: struct('BlockFetchResp', { size: u32 }),
  },
  CRC: {
    reqKind: 0x63, // 'c'
    respKind: 0x43, // 'C'
    req: struct('BlockCrcReq', { blockId: u64 }),
    resp: struct('BlockCrcResp', { size: u32, crc32 }),
  },
  ERASE: {
    reqKind: 0x65, // 'e'
    respKind: 0x45, // 'E'
    req: struct('BlockEraseReq', { blockId: u64, certificate: mac8 }),
    resp: struct('BlockEraseResp', { blockId: u64, proof: mac8 }),
  },
  STATS: {
    reqKind: 0x73, // 's'
    respKind: 0x53, // 'S'
    req: struct('BlockStatsReq', { token: mac8 }),
    /** The whole 'S'‖token‖4×u64 is MAC'd with the service key; the MAC follows. */
    resp: struct('BlockStatsResp', { token: mac8, usedBytes: u64, freeBytes: u64, usedN: u64, freeN: u64, mac: mac8 }),
  },
} as const;

export type BlockMessageName = keyof typeof BLOCK_MESSAGES;
export type BlockReq<K extends BlockMessageName> = Infer<(typeof BLOCK_MESSAGES)[K]['req']>;
export type BlockResp<K extends BlockMessageName> = Infer<(typeof BLOCK_MESSAGES)[K]['resp']>;

/** MAX_OBJECT_SIZE of the original: the largest block a service accepts. */
export const MAX_BLOCK_BYTES = 100_000_000;

/** Block ids are shard-stamped Eggs times; writes outside [now - 22 h, now + 2 h] are refused. */
export const BLOCK_PAST_CUTOFF_NS = 22n * 3_600_000_000_000n;
export const BLOCK_FUTURE_CUTOFF_NS = 2n * 3_600_000_000_000n;

/** UDP datagram a block service sends shuckle every second: key ‖ tcp port ‖ storage class. */
export const ShuckleRegistration = struct('ShuckleRegistration', { secretKey: fixed(16), port: u16, storageClass: u8 });
export const SHUCKLE_REGISTRATION_BYTES = 19;

/** On-disk name of a block: hex of the id's 8 LE bytes; the subdirectory is its first 2 digits. */
export function blockRelativePath(blockId: bigint): string {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64LE(blockId);
  const name = b.toString('hex');
  return `${name.slice(0, 2)}/${name}`;
}

/**
 * Extension of the registration datagram: an optional failure-domain name (UTF-8, zero-padded to
 * 16 bytes) after the original 19 bytes. Shuckle accepts both lengths, so original block
 * services keep registering unchanged.
 */
export const FAILURE_DOMAIN_BYTES = 16;
export const SHUCKLE_REGISTRATION_EXT_BYTES = SHUCKLE_REGISTRATION_BYTES + FAILURE_DOMAIN_BYTES;

export interface ShuckleRegistrationInfo {
  secretKey: Buffer;
  port: number;
  storageClass: number;
  failureDomain: string;
}

export function encodeShuckleRegistration(r: ShuckleRegistrationInfo): Buffer {
  const fd = Buffer.from(r.failureDomain, 'utf8');
  if (fd.length > FAILURE_DOMAIN_BYTES) throw new RangeError(`failure domain "${r.failureDomain}" is longer than ${FAILURE_DOMAIN_BYTES} bytes`);
  const base = encode(ShuckleRegistration, { secretKey: r.secretKey, port: r.port, storageClass: r.storageClass });
  if (fd.length === 0) return base;
  const out = Buffer.alloc(SHUCKLE_REGISTRATION_EXT_BYTES);
  base.copy(out, 0);
  fd.copy(out, SHUCKLE_REGISTRATION_BYTES);
  return out;
}

/** The registration in `buf`, or null when it has neither accepted length. */
export function decodeShuckleRegistration(buf: Buffer): ShuckleRegistrationInfo | null {
  if (buf.length !== SHUCKLE_REGISTRATION_BYTES && buf.length !== SHUCKLE_REGISTRATION_EXT_BYTES) return null;
  const r = decode(ShuckleRegistration, buf.subarray(0, SHUCKLE_REGISTRATION_BYTES));
  let failureDomain = '';
  if (buf.length === SHUCKLE_REGISTRATION_EXT_BYTES) {
    const fd = buf.subarray(SHUCKLE_REGISTRATION_BYTES);
    const end = fd.indexOf(0);
    failureDomain = fd.subarray(0, end < 0 ? fd.length : end).toString('utf8');
  }
  return { secretKey: Buffer.from(r.secretKey), port: r.port, storageClass: r.storageClass, failureDomain };
}
