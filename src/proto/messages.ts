// The one declaration of every shard and CDC message (metadata.md §4). Codecs, sizes, kind tables
// and TypeScript types are all derived from what is written here.
import { bool, bytes, enumU8, fixed, list, struct, u16, u64, u8, v61, type Infer, type StructCodec, type Fields } from './bincode.js';

export const crc32 = fixed(4);
export const ip4 = fixed(4);
export const mac8 = fixed(8);

// Shared structures (§4.1).
export const Edge = struct('Edge', { targetId: u64, nameHash: u64, name: bytes, creationTime: u64 });
/** target_id bit 63 set = the edge owns its target. */
export const EdgeWithOwnership = struct('EdgeWithOwnership', {
  targetId: u64,
  nameHash: u64,
  name: bytes,
  creationTime: u64,
});
/**
 * Extension (READ_DIR_WITH_ATTRS): an Edge and, where `hasAttrs`, its target's STAT (size and
 * mtime of a linked file or symlink stored on the answering shard); zeros otherwise.
 */
export const EdgeWithAttrs = struct('EdgeWithAttrs', {
  targetId: u64,
  nameHash: u64,
  name: bytes,
  creationTime: u64,
  hasAttrs: bool,
  size: u64,
  mtime: u64,
});
export const TransientFile = struct('TransientFile', { id: u64, deadlineTime: u64 });
export const NewBlockInfo = struct('NewBlockInfo', { crc32, size: v61 });
export const BlockInfo = struct('BlockInfo', { ip: ip4, port: u16, blockId: u64, certificate: mac8 });
export const FetchedBlock = struct('FetchedBlock', {
  ip: ip4,
  port: u16,
  blockId: u64,
  crc32,
  size: v61,
  flags: u8,
});
export const FetchedSpan = struct('FetchedSpan', {
  byteOffset: v61,
  parity: u8,
  storageClass: u8,
  crc32,
  size: v61,
  bodyBytes: bytes,
  bodyBlocks: list(FetchedBlock),
});

export const BLOCK_FLAG_STALE = 1;
export const BLOCK_FLAG_TERMINAL = 2;

/** ConstructFileReq.type: an inode type (0..3); the shard refuses the non-file ones. */
const inodeTypeU8 = enumU8('InodeType', 4);

export interface MessageDecl<Req extends Fields = Fields, Resp extends Fields = Fields> {
  readonly kind: number;
  readonly name: string;
  readonly req: StructCodec<Req>;
  readonly resp: StructCodec<Resp>;
}

function msg<Req extends Fields, Resp extends Fields>(kind: number, name: string, req: Req, resp: Resp): MessageDecl<Req, Resp> {
  const base = name
    .toLowerCase()
    .split('_')
    .map((p) => p[0]!.toUpperCase() + p.slice(1))
    .join('');
  return { kind, name, req: struct(`${base}Req`, req), resp: struct(`${base}Resp`, resp) };
}

const edgeKey = { dirId: u64, targetId: u64, name: bytes, creationTime: u64 };

export const SHARD_MESSAGES = {
  LOOKUP: msg(0x01, 'LOOKUP', { dirId: u64, name: bytes }, { targetId: u64, creationTime: u64 }),
  STAT: msg(0x02, 'STAT', { id: u64 }, { mtime: u64, sizeOrOwner: u64, opaque: bytes }),
  READ_DIR: msg(0x03, 'READ_DIR', { dirId: u64, startHash: u64, asOfTime: u64 }, { nextHash: u64, results: list(Edge) }),
  CONSTRUCT_FILE: msg(0x04, 'CONSTRUCT_FILE', { type: inodeTypeU8 }, { id: u64, cookie: u64 }),
  ADD_SPAN_INITIATE: msg(
    0x05,
    'ADD_SPAN_INITIATE',
    {
      fileId: u64,
      cookie: u64,
      byteOffset: v61,
      storageClass: u8,
      parity: u8,
      crc32,
      size: v61,
      bodyBytes: bytes,
      bodyBlocks: list(NewBlockInfo),
    },
    { blocks: list(BlockInfo) },
  ),
  ADD_SPAN_CERTIFY: msg(0x06, 'ADD_SPAN_CERTIFY', { fileId: u64, cookie: u64, byteOffset: v61, proofs: list(mac8) }, {}),
  LINK_FILE: msg(0x07, 'LINK_FILE', { fileId: u64, cookie: u64, ownerId: u64, name: bytes }, {}),
  SOFT_UNLINK_FILE: msg(0x0c, 'SOFT_UNLINK_FILE', { ownerId: u64, fileId: u64, name: bytes }, {}),
  FILE_SPANS: msg(0x0d, 'FILE_SPANS', { fileId: u64, byteOffset: v61 }, { nextOffset: v61, spans: list(FetchedSpan) }),
  SAME_DIRECTORY_RENAME: msg(
    0x0e,
    'SAME_DIRECTORY_RENAME',
    { targetId: u64, dirId: u64, oldName: bytes, newName: bytes },
    {},
  ),
  VISIT_DIRECTORIES: msg(0x15, 'VISIT_DIRECTORIES', { beginId: u64 }, { nextId: u64, ids: list(u64) }),
  VISIT_TRANSIENT_FILES: msg(0x16, 'VISIT_TRANSIENT_FILES', { beginId: u64 }, { nextId: u64, files: list(TransientFile) }),
  REMOVE_NON_OWNED_EDGE: msg(0x17, 'REMOVE_NON_OWNED_EDGE', edgeKey, {}),
  REMOVE_OWNED_SNAPSHOT_FILE_EDGE: msg(0x18, 'REMOVE_OWNED_SNAPSHOT_FILE_EDGE', edgeKey, {}),
  VISIT_FILES: msg(0x20, 'VISIT_FILES', { beginId: u64 }, { nextId: u64, ids: list(u64) }),
  FULL_READ_DIR: msg(
    0x21,
    'FULL_READ_DIR',
    { dirId: u64, startHash: u64, startName: bytes, startTime: u64 },
    { finished: bool, results: list(EdgeWithOwnership) },
  ),
  // Extension, not in the original protocol (an original shard answers MALFORMED_REQUEST): READ_DIR
  // whose edges carry their files' attributes, so that listing with sizes (ls -l, find, du,
  // rsync, the mount's readdirplus) costs a page per ~30 names instead of a STAT per name.
  READ_DIR_WITH_ATTRS: msg(
    0x40,
    'READ_DIR_WITH_ATTRS',
    { dirId: u64, startHash: u64, asOfTime: u64 },
    { nextHash: u64, results: list(EdgeWithAttrs) },
  ),
  // Privileged (CDC-only, MAC'd with the CDC key).
  CREATE_DIRECTORY_INODE: msg(0x80, 'CREATE_DIRECTORY_INODE', { id: u64, ownerId: u64, opaque: bytes }, { mtime: u64 }),
  SET_DIRECTORY_OWNER: msg(0x81, 'SET_DIRECTORY_OWNER', { dirId: u64, ownerId: u64 }, {}),
  CREATE_LOCKED_CURRENT_EDGE: msg(
    0x82,
    'CREATE_LOCKED_CURRENT_EDGE',
    { dirId: u64, name: bytes, targetId: u64, creationTime: u64 },
    {},
  ),
  LOCK_CURRENT_EDGE: msg(0x83, 'LOCK_CURRENT_EDGE', { dirId: u64, name: bytes, targetId: u64 }, {}),
  UNLOCK_CURRENT_EDGE: msg(0x84, 'UNLOCK_CURRENT_EDGE', { dirId: u64, name: bytes, targetId: u64, wasMoved: bool }, {}),
} as const;

export const CDC_MESSAGES = {
  MAKE_DIRECTORY: msg(0x01, 'MAKE_DIRECTORY', { ownerId: u64, name: bytes }, { id: u64 }),
  RENAME_FILE: msg(
    0x02,
    'RENAME_FILE',
    { targetId: u64, oldOwnerId: u64, oldName: bytes, newOwnerId: u64, newName: bytes },
    {},
  ),
  REMOVE_DIRECTORY: msg(0x03, 'REMOVE_DIRECTORY', { ownerId: u64, targetId: u64, name: bytes }, {}),
  RENAME_DIRECTORY: msg(
    0x04,
    'RENAME_DIRECTORY',
    { targetId: u64, oldOwnerId: u64, oldName: bytes, newOwnerId: u64, newName: bytes },
    {},
  ),
} as const;

export type ShardKindName = keyof typeof SHARD_MESSAGES;
export type CdcKindName = keyof typeof CDC_MESSAGES;
export type ShardReq<K extends ShardKindName> = Infer<(typeof SHARD_MESSAGES)[K]['req']>;
export type ShardResp<K extends ShardKindName> = Infer<(typeof SHARD_MESSAGES)[K]['resp']>;
export type CdcReq<K extends CdcKindName> = Infer<(typeof CDC_MESSAGES)[K]['req']>;
export type CdcResp<K extends CdcKindName> = Infer<(typeof CDC_MESSAGES)[K]['resp']>;

export const ShardKind = Object.fromEntries(Object.entries(SHARD_MESSAGES).map(([k, m]) => [k, m.kind])) as {
  readonly [K in ShardKindName]: (typeof SHARD_MESSAGES)[K]['kind'];
};
export const CdcKind = Object.fromEntries(Object.entries(CDC_MESSAGES).map(([k, m]) => [k, m.kind])) as {
  readonly [K in CdcKindName]: (typeof CDC_MESSAGES)[K]['kind'];
};

function byKind(table: Record<string, MessageDecl>): (MessageDecl | undefined)[] {
  const out: (MessageDecl | undefined)[] = new Array(256).fill(undefined);
  for (const m of Object.values(table)) {
    if (out[m.kind]) throw new Error(`duplicate kind 0x${m.kind.toString(16)}`);
    out[m.kind] = m;
  }
  return out;
}

export const SHARD_BY_KIND = byKind(SHARD_MESSAGES);
export const CDC_BY_KIND = byKind(CDC_MESSAGES);

export function isPrivilegedShardKind(kind: number): boolean {
  return (kind & 0x80) !== 0;
}

export type EdgeT = Infer<typeof Edge>;
export type EdgeWithOwnershipT = Infer<typeof EdgeWithOwnership>;
export type EdgeWithAttrsT = Infer<typeof EdgeWithAttrs>;
export type FetchedSpanT = Infer<typeof FetchedSpan>;
export type FetchedBlockT = Infer<typeof FetchedBlock>;
export type BlockInfoT = Infer<typeof BlockInfo>;
export type NewBlockInfoT = Infer<typeof NewBlockInfo>;
export type TransientFileT = Infer<typeof TransientFile>;
