// The kernel FUSE wire format (linux/fuse.h, protocol 7.x), declared once: opcodes, flags, the
// sizes of the fixed structs, and the encoders/decoders the session uses. Little-endian, as on
// every machine we run on (x86-64).

export const FUSE_KERNEL_VERSION = 7;
/** The newest minor whose struct layouts this file knows (fuse.h of Debian 12 / kernel 6.1). */
export const FUSE_KERNEL_MINOR_VERSION = 38;
/** Oldest minor we accept: 7.31 (Linux 5.4) has max_pages, parallel dirops and readdirplus. */
export const FUSE_MIN_MINOR_VERSION = 31;
export const FUSE_ROOT_ID = 1n;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const;

export const OP_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Op).map(([k, v]) => [v, k]));

/** FUSE_INIT flags (the low 32 bits; bits 32.. go in flags2 when FUSE_INIT_EXT is set). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  ATOMIC_O_TRUNC: 1 << 3,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  PARALLEL_DIROPS: 1 << 18,
  ABORT_ERROR: 1 << 21,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  INIT_EXT: 1 << 30,
} as const;

export const OpenOutFlag = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  NOFLUSH: 1 << 5,
} as const;

export const SetattrValid = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
} as const;

export const GETATTR_FH = 1 << 0;
export const RENAME_NOREPLACE = 1 << 0;
export const RENAME_EXCHANGE = 1 << 1;

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

// Fixed struct sizes (bytes).
export const IN_HEADER_BYTES = 40;
export const OUT_HEADER_BYTES = 16;
export const ATTR_BYTES = 88;
export const ENTRY_OUT_BYTES = 40 + ATTR_BYTES; // 128
export const ATTR_OUT_BYTES = 16 + ATTR_BYTES; // 104
export const OPEN_OUT_BYTES = 16;
export const INIT_OUT_BYTES = 64;
export const STATFS_OUT_BYTES = 80;
export const WRITE_OUT_BYTES = 8;
export const READ_IN_BYTES = 40;
export const WRITE_IN_BYTES = 40;
export const DIRENT_HEADER_BYTES = 24;

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

export function decodeInHeader(b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: b.readBigUInt64LE(8),
    nodeid: b.readBigUInt64LE(16),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
  };
}

/** What a filesystem says about an inode; encoded into struct fuse_attr. */
export interface Attr {
  ino: bigint;
  size: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Nanoseconds since the Unix epoch. */
  mtimeNs: bigint;
  blksize: number;
}

const NS_PER_S = 1_000_000_000n;

export function encodeAttr(b: Buffer, at: number, a: Attr): void {
  const sec = a.mtimeNs / NS_PER_S;
  const nsec = Number(a.mtimeNs % NS_PER_S);
  b.writeBigUInt64LE(a.ino, at);
  b.writeBigUInt64LE(BigInt(a.size), at + 8);
  b.writeBigUInt64LE(BigInt(Math.ceil(a.size / 512)), at + 16); // blocks of 512 bytes, for du
  b.writeBigUInt64LE(sec, at + 24); // atime = mtime: we do not track access
  b.writeBigUInt64LE(sec, at + 32);
  b.writeBigUInt64LE(sec, at + 40);
  b.writeUInt32LE(nsec, at + 48);
  b.writeUInt32LE(nsec, at + 52);
  b.writeUInt32LE(nsec, at + 56);
  b.writeUInt32LE(a.mode, at + 60);
  b.writeUInt32LE(a.nlink, at + 64);
  b.writeUInt32LE(a.uid, at + 68);
  b.writeUInt32LE(a.gid, at + 72);
  b.writeUInt32LE(0, at + 76); // rdev
  b.writeUInt32LE(a.blksize, at + 80);
  b.writeUInt32LE(0, at + 84); // flags
}

/** Splits a timeout in milliseconds into the (seconds, nanoseconds) pair the kernel wants. */
export function ttlParts(ttlMs: number): [bigint, number] {
  const s = Math.floor(ttlMs / 1000);
  return [BigInt(s), Math.round((ttlMs - s * 1000) * 1e6)];
}

export interface Entry {
  /** 0 means a negative entry (cached ENOENT) or "no attributes" in readdirplus. */
  nodeid: bigint;
  generation: bigint;
  attr: Attr;
  entryTtlMs: number;
  attrTtlMs: number;
}

export function encodeEntryOut(b: Buffer, at: number, e: Entry): void {
  const [es, ens] = ttlParts(e.entryTtlMs);
  const [as, ans] = ttlParts(e.attrTtlMs);
  b.writeBigUInt64LE(e.nodeid, at);
  b.writeBigUInt64LE(e.generation, at + 8);
  b.writeBigUInt64LE(es, at + 16);
  b.writeBigUInt64LE(as, at + 24);
  b.writeUInt32LE(ens, at + 32);
  b.writeUInt32LE(ans, at + 36);
  encodeAttr(b, at + 40, e.attr);
}

export function encodeAttrOut(b: Buffer, at: number, attr: Attr, ttlMs: number): void {
  const [s, ns] = ttlParts(ttlMs);
  b.writeBigUInt64LE(s, at);
  b.writeUInt32LE(ns, at + 8);
  b.writeUInt32LE(0, at + 12);
  encodeAttr(b, at + 16, attr);
}

export function direntBytes(nameBytes: number, plus: boolean): number {
  const raw = (plus ? ENTRY_OUT_BYTES : 0) + DIRENT_HEADER_BYTES + nameBytes;
  return (raw + 7) & ~7;
}

/** Reads a NUL-terminated name starting at `at`; returns the name and the offset after the NUL. */
export function readCString(b: Buffer, at: number): [string, number] {
  let end = b.indexOf(0, at);
  if (end < 0) end = b.length;
  return [b.toString('utf8', at, end), end + 1];
}
