// Inode ids: bit 63 extra, bits 62..61 type, bits 60..8 local id, bits 7..0 shard.

export const InodeType = { RESERVED: 0, DIRECTORY: 1, FILE: 2, SYMLINK: 3 } as const;
export type InodeType = (typeof InodeType)[keyof typeof InodeType];
export const INODE_TYPE_NAMES = ['reserved', 'directory', 'file', 'symlink'] as const;

export const NULL_INODE_ID = 0n;
export const ROOT_DIR_INODE_ID = 0x2000000000000000n;
export const EXTRA_BIT = 1n << 63n;
export const SHARD_COUNT = 256;
export const MAX_LOCAL_ID = (1n << 53n) - 1n;

export function inodeType(id: bigint): InodeType {
  return Number((id >> 61n) & 3n) as InodeType;
}

export function shardOf(id: bigint): number {
  return Number(id & 0xffn);
}

export function makeInodeId(type: InodeType, localId: bigint, shard: number): bigint {
  if (localId < 0n || localId > MAX_LOCAL_ID) throw new RangeError(`local id out of range: ${localId}`);
  if (!Number.isInteger(shard) || shard < 0 || shard >= SHARD_COUNT) throw new RangeError(`bad shard ${shard}`);
  return (BigInt(type) << 61n) | (localId << 8n) | BigInt(shard);
}

export function stripExtra(id: bigint): bigint {
  return id & ~EXTRA_BIT;
}

export function hasExtra(id: bigint): boolean {
  return (id & EXTRA_BIT) !== 0n;
}

export function formatInodeId(id: bigint): string {
  return '0x' + id.toString(16).padStart(16, '0');
}

export function isDirectory(id: bigint): boolean {
  return inodeType(id) === InodeType.DIRECTORY;
}
