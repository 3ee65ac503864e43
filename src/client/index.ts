// The EggsFS client library: paths, directories and files as Node streams, over the original
// protocol only (shard and CDC UDP messages, block-service TCP), so it works against any server
// speaking it. Addresses come from shuckle, or default to the original single-host ports.
import { Readable, Writable } from 'node:stream';
import { EggsError, ErrorCode } from '../proto/errors.js';
import { INODE_TYPE_NAMES, InodeType, ROOT_DIR_INODE_ID, inodeType, isDirectory, formatInodeId } from '../proto/ids.js';
import { CDC_PORT, DEFAULT_HOST, DEFAULT_STORAGE_CLASS, SHARD_BASE_PORT } from '../proto/ports.js';
import { AS_OF_NOW } from '../proto/time.js';
import { SHARD_COUNT, shardOf } from '../proto/ids.js';
import type { EdgeT, EdgeWithAttrsT } from '../proto/messages.js';
import { ClientCore, type CoreOptions } from './core.js';
import { EggsFileWriter, type FileWriter } from './file-writer.js';
import { readFileChunks } from './file-reader.js';
import { readDirBatches } from './read-dir.js';
import { checkParity } from './layout.js';
import { defaultParityFor } from './span-layout.js';
import { newBlockClient } from './block-io.js';
import { PathError, joinPath, nameBytes, pathError, splitPath } from './paths.js';
import { fetchBlockServices, fetchCdc, fetchShards } from './shuckle.js';
import { UdpTransport, type Address } from './transport.js';

export { PathError } from './paths.js';
export type { FileWriter } from './file-writer.js';
export { EggsError } from '../proto/errors.js';

export interface ClientOptions {
  shuckleUrl?: string;
  clusterSecret?: string;
  shardHost?: string;
  shardBasePort?: number;
  cdcHost?: string;
  cdcPort?: number;
  timeoutMs?: number;
  attempts?: number;
  /** Default parity byte for writes: D | P << 4 (0x01 = one block, as the original). */
  parity?: number;
  storageClass?: number;
  /** Bytes per span (the unit of metadata round trips and of write memory: three spans). */
  spanBytes?: number;
  /**
   * A file being written gets spans doubling from spanBytes up to this (default: 32 MiB when
   * neither spanBytes nor blockBytes is given, else spanBytes: fixed spans).
   */
  maxSpanBytes?: number;
  /** Largest block wanted: spans are made no longer than blockBytes × D (D = data blocks of the default parity). */
  blockBytes?: number;
  /** Most block spans fetched ahead of a reader (default 16). */
  readAheadSpans?: number;
  /** Bytes of block spans fetched ahead of a reader (default 16 MiB; at least one span). */
  readAheadBytes?: number;
  blockTimeoutMs?: number;
}

export interface Stat {
  id: bigint;
  type: 'directory' | 'file' | 'symlink';
  size: number;
  mtime: bigint;
  ownerId?: bigint;
}

export interface DirEntry {
  name: string;
  id: bigint;
  type: 'directory' | 'file' | 'symlink';
  creationTime: bigint;
}

/** A directory entry with its file's STAT where the listing carried it (READ_DIR_WITH_ATTRS). */
export interface DirEntryWithAttrs extends DirEntry {
  /** Size and mtime (EggsFS time) of a file or symlink; undefined where they take a STAT. */
  attrs?: { size: number; mtime: bigint };
}

export const DEFAULT_SPAN_BYTES = 8 << 20;
export const MAX_SPAN_BYTES = 64 << 20;
/** Streamed files' spans grow to this by default (a block service writes 32 MiB blocks ~1.6x faster than 8 MiB ones). */
export const DEFAULT_MAX_SPAN_BYTES = 32 << 20;
export const DEFAULT_PARITY = 0x01;
export const DEFAULT_READ_AHEAD_SPANS = 16;
export const DEFAULT_READ_AHEAD_BYTES = 16 << 20;
/** CDC transactions take several shard round trips; each attempt gets this much time. */
const DEFAULT_CDC_TIMEOUT_MS = 5_000;

export function typeName(id: bigint): 'directory' | 'file' | 'symlink' {
  const t = inodeType(id);
  if (t === InodeType.RESERVED) throw new EggsError(ErrorCode.MALFORMED_RESPONSE, `inode ${formatInodeId(id)} has the reserved type`);
  return INODE_TYPE_NAMES[t] as 'directory' | 'file' | 'symlink';
}

function dirEntry(e: EdgeT): DirEntry {
  return { name: e.name.toString('utf8'), id: e.targetId, type: typeName(e.targetId), creationTime: e.creationTime };
}

export class EggsClient {
  /** Shards that answered READ_DIR_WITH_ATTRS as an unknown kind (original shards): listed with READ_DIR. */
  private readonly withoutAttrListing = new Set<number>();

  private constructor(
    private readonly core: ClientCore,
    private readonly shuckleUrl: string | undefined,
    private readonly clusterSecret: string | undefined,
  ) {}

  static async connect(opts: ClientOptions = {}): Promise<EggsClient> {
    const shards: Address[] = [];
    let cdc: Address;
    let writableBlockServices = 0;
    if (opts.shuckleUrl) {
      const so = { url: opts.shuckleUrl, secret: opts.clusterSecret, timeoutMs: opts.timeoutMs };
      const [list, c, bs] = await Promise.all([fetchShards(so), fetchCdc(so), fetchBlockServices(so).catch(() => [])]);
      const storageClass = opts.storageClass ?? DEFAULT_STORAGE_CLASS;
      writableBlockServices = bs.filter((b) => !b.is_stale && !b.is_terminal && b.storage_class === storageClass && b.status !== 'drain').length;
      for (const s of list) if (s.id >= 0 && s.id < SHARD_COUNT) shards[s.id] = { host: s.ip, port: s.port };
      if (!c) throw new Error(`no CDC is registered at shuckle ${opts.shuckleUrl} (is the cluster still starting?)`);
      if (list.length === 0) throw new Error(`no shard is registered at shuckle ${opts.shuckleUrl} (is the cluster still starting?)`);
      cdc = { host: c.ip, port: c.port };
    } else {
      const host = opts.shardHost ?? DEFAULT_HOST;
      const base = opts.shardBasePort ?? SHARD_BASE_PORT;
      for (let i = 0; i < SHARD_COUNT; i++) shards[i] = { host, port: base + i };
      cdc = { host: opts.cdcHost ?? DEFAULT_HOST, port: opts.cdcPort ?? CDC_PORT };
    }
    // Without a parity of its own, a writer gets the cluster default (redundancy when the cluster
    // has the block services for it; span-layout.ts defaultParityFor).
    const parity = opts.parity ?? (opts.shuckleUrl ? defaultParityFor(writableBlockServices) : DEFAULT_PARITY);
    checkParity(parity);
    let spanBytes = opts.spanBytes ?? DEFAULT_SPAN_BYTES;
    if (opts.blockBytes !== undefined) spanBytes = Math.max(256, Math.min(spanBytes, opts.blockBytes * (parity & 0x0f)));
    if (!Number.isInteger(spanBytes) || spanBytes < 256 || spanBytes > MAX_SPAN_BYTES) throw new RangeError(`spanBytes must be within 256..${MAX_SPAN_BYTES}`);
    const maxSpanBytes = opts.maxSpanBytes ?? (opts.spanBytes === undefined && opts.blockBytes === undefined ? Math.max(spanBytes, DEFAULT_MAX_SPAN_BYTES) : spanBytes);
    if (!Number.isInteger(maxSpanBytes) || maxSpanBytes < spanBytes || maxSpanBytes > MAX_SPAN_BYTES) throw new RangeError(`maxSpanBytes must be within spanBytes..${MAX_SPAN_BYTES}`);
    const timeoutMs = opts.timeoutMs ?? 2_000;
    const core: CoreOptions = {
      timeoutMs,
      attempts: opts.attempts ?? 3,
      cdcTimeoutMs: Math.max(timeoutMs, DEFAULT_CDC_TIMEOUT_MS),
      parity,
      storageClass: opts.storageClass ?? DEFAULT_STORAGE_CLASS,
      spanBytes,
      maxSpanBytes,
      blockTimeoutMs: opts.blockTimeoutMs ?? 30_000,
      readAheadSpans: opts.readAheadSpans ?? DEFAULT_READ_AHEAD_SPANS,
      readAheadBytes: opts.readAheadBytes ?? DEFAULT_READ_AHEAD_BYTES,
    };
    const transport = new UdpTransport({ defaultTimeoutMs: timeoutMs, defaultAttempts: core.attempts });
    return new EggsClient(new ClientCore(transport, newBlockClient(core.blockTimeoutMs), shards, cdc, core), opts.shuckleUrl, opts.clusterSecret);
  }

  async close(): Promise<void> {
    this.core.transport.close();
    this.core.blocks.close();
  }

  // ---------------------------------------------------------------- path level

  /** The inode id of an absolute path. */
  resolve(path: string): Promise<bigint> {
    return this.walk('resolve', path, splitPath('resolve', path));
  }

  private async walk(op: string, path: string, names: readonly string[]): Promise<bigint> {
    let id = ROOT_DIR_INODE_ID;
    for (let i = 0; i < names.length; i++) {
      const prefix = joinPath(names.slice(0, i));
      if (!isDirectory(id)) throw new PathError(op, path, ErrorCode.TYPE_IS_NOT_DIRECTORY, `${prefix} is not a directory`);
      try {
        id = (await this.lookupAt(id, names[i]!)).id;
      } catch (err) {
        if (err instanceof EggsError && (err.code === ErrorCode.NAME_NOT_FOUND || err.code === ErrorCode.DIRECTORY_NOT_FOUND)) {
          const last = i === names.length - 1;
          throw new PathError(op, path, err.code, last ? 'no such file or directory' : `no such directory ${joinPath(names.slice(0, i + 1))}`, err);
        }
        throw pathError(op, path, err);
      }
    }
    return id;
  }

  /** The directory that holds the last name of `path`, and that name. */
  private async parentOf(op: string, path: string): Promise<{ parentId: bigint; name: string }> {
    const names = splitPath(op, path);
    if (names.length === 0) throw new PathError(op, path, ErrorCode.CANNOT_OVERRIDE_NAME, 'the root directory cannot be changed');
    const parentNames = names.slice(0, -1);
    let parentId: bigint;
    try {
      parentId = await this.walk(op, path, parentNames);
    } catch (err) {
      if (err instanceof PathError && err.reason === 'no such file or directory') {
        throw new PathError(op, path, err.code, `no such directory ${joinPath(parentNames)}`, err.cause);
      }
      throw err;
    }
    if (!isDirectory(parentId)) throw new PathError(op, path, ErrorCode.TYPE_IS_NOT_DIRECTORY, `${joinPath(parentNames)} is not a directory`);
    return { parentId, name: names[names.length - 1]! };
  }

  async stat(path: string): Promise<Stat> {
    const id = await this.walk('stat', path, splitPath('stat', path));
    try {
      return await this.statId(id);
    } catch (err) {
      throw pathError('stat', path, err);
    }
  }

  /** `withAttrs`: entries carry their files' sizes and mtimes where the listing has them (readDirWithAttrs). */
  async *readDir(path: string, opts: { withAttrs?: boolean } = {}): AsyncIterable<DirEntryWithAttrs> {
    const id = await this.walk('ls', path, splitPath('ls', path));
    if (!isDirectory(id)) throw new PathError('ls', path, ErrorCode.TYPE_IS_NOT_DIRECTORY, 'not a directory');
    try {
      yield* opts.withAttrs ? this.readDirWithAttrs(id) : this.readDirId(id);
    } catch (err) {
      throw pathError('ls', path, err);
    }
  }

  async mkdir(path: string): Promise<bigint> {
    const { parentId, name } = await this.parentOf('mkdir', path);
    try {
      return await this.mkdirAt(parentId, name);
    } catch (err) {
      throw pathError('mkdir', path, err);
    }
  }

  async rename(from: string, to: string): Promise<void> {
    const op = 'mv';
    const a = await this.parentOf(op, from);
    const target = await this.walk(op, from, splitPath(op, from));
    const b = await this.parentOf(op, to);
    if (isDirectory(target)) {
      const src = splitPath(op, from);
      const dst = splitPath(op, to);
      if (dst.length > src.length && src.every((n, i) => dst[i] === n)) {
        throw new PathError(op, from, ErrorCode.LOOP_IN_DIRECTORY_RENAME, `cannot move a directory into itself (${to})`);
      }
    }
    try {
      await this.renameKnown(target, a.parentId, a.name, b.parentId, b.name);
    } catch (err) {
      throw pathError(op, `${from} ${to}`, err);
    }
  }

  async unlink(path: string): Promise<void> {
    const { parentId, name } = await this.parentOf('rm', path);
    try {
      await this.unlinkAt(parentId, name);
    } catch (err) {
      throw pathError('rm', path, err);
    }
  }

  async rmdir(path: string): Promise<void> {
    const { parentId, name } = await this.parentOf('rmdir', path);
    try {
      await this.rmdirAt(parentId, name);
    } catch (err) {
      throw pathError('rmdir', path, err);
    }
  }

  /** A writer of the new file `path`, linked at its close (replacing an existing file). */
  async openWriter(path: string, opts: { parity?: number } = {}): Promise<FileWriter> {
    const { parentId, name } = await this.parentOf('write', path);
    try {
      return this.createFile(parentId, name, opts);
    } catch (err) {
      throw pathError('write', path, err);
    }
  }

  /** A Writable that creates `path` and links it when it ends (replacing an existing file). */
  createWriteStream(path: string, opts: { parity?: number } = {}): Writable {
    let writer: FileWriter | undefined;
    const wrap = (err: unknown) => pathError('write', path, err);
    const stream: Writable = new Writable({
      highWaterMark: 1 << 20,
      construct: (cb) => {
        this.parentOf('write', path).then(
          ({ parentId, name }) => {
            try {
              writer = this.createFile(parentId, name, opts);
              cb();
            } catch (err) {
              cb(wrap(err));
            }
          },
          (err) => cb(wrap(err)),
        );
      },
      write: (chunk: Buffer, _enc, cb) => {
        writer!.write(chunk).then(() => cb(), (err) => cb(wrap(err)));
      },
      writev: (chunks, cb) => {
        (async () => {
          for (const c of chunks) await writer!.write(c.chunk as Buffer);
        })().then(() => cb(), (err) => cb(wrap(err)));
      },
      final: (cb) => {
        writer!.close().then(
          (id) => {
            stream.emit('linked', id);
            cb();
          },
          (err) => cb(wrap(err)),
        );
      },
      destroy: (err, cb) => {
        if (writer && !stream.writableFinished) void writer.abort();
        cb(err);
      },
    });
    return stream;
  }

  /** A Readable of the file's bytes; `end` is inclusive, as in fs.createReadStream. */
  createReadStream(path: string, opts: { start?: number; end?: number } = {}): Readable {
    const start = opts.start ?? 0;
    const endExclusive = opts.end === undefined ? Number.MAX_SAFE_INTEGER : opts.end + 1;
    const self = this;
    async function* gen(): AsyncGenerator<Buffer> {
      const id = await self.walk('cat', path, splitPath('cat', path));
      if (isDirectory(id)) throw new PathError('cat', path, ErrorCode.TYPE_IS_DIRECTORY, 'is a directory');
      try {
        yield* readFileChunks(self.core, id, start, endExclusive);
      } catch (err) {
        throw pathError('cat', path, err);
      }
    }
    return Readable.from(gen(), { objectMode: false, highWaterMark: 1 << 20 });
  }

  // ---------------------------------------------------------------- id level

  async lookupAt(dirId: bigint, name: string): Promise<{ id: bigint; creationTime: bigint }> {
    const r = await this.core.shard('LOOKUP', dirId, { dirId, name: nameBytes(name) });
    return { id: r.targetId, creationTime: r.creationTime };
  }

  async statId(id: bigint): Promise<Stat> {
    const r = await this.core.shard('STAT', id, { id });
    const type = typeName(id);
    if (type === 'directory') return { id, type, size: 0, mtime: r.mtime, ownerId: r.sizeOrOwner };
    return { id, type, size: Number(r.sizeOrOwner), mtime: r.mtime };
  }

  /**
   * As readDirId, with each file's size and mtime where its shard can give them in the listing
   * (READ_DIR_WITH_ATTRS, an extension: against shards without it, READ_DIR, and no attributes).
   */
  async *readDirWithAttrs(dirId: bigint): AsyncIterable<DirEntryWithAttrs> {
    const shard = shardOf(dirId);
    if (!this.withoutAttrListing.has(shard)) {
      const page = (startHash: bigint) => this.core.shard('READ_DIR_WITH_ATTRS', dirId, { dirId, startHash, asOfTime: AS_OF_NOW });
      const batches = readDirBatches(page);
      let first: IteratorResult<EdgeWithAttrsT[]> | undefined;
      try {
        first = await batches.next();
      } catch (err) {
        // An original shard does not know the kind (metadata.md §1.5: MALFORMED_REQUEST).
        if (!(err instanceof EggsError && (err.code === ErrorCode.MALFORMED_REQUEST || err.code === ErrorCode.UNRECOGNIZED_REQUEST))) throw err;
        this.withoutAttrListing.add(shard);
      }
      if (first !== undefined) {
        for (let r = first; !r.done; r = await batches.next()) {
          for (const e of r.value) {
            const entry: DirEntryWithAttrs = dirEntry(e);
            if (e.hasAttrs) entry.attrs = { size: Number(e.size), mtime: e.mtime };
            yield entry;
          }
        }
        return;
      }
    }
    yield* this.readDirId(dirId);
  }

  /** The directory's entries in hash order; a large directory is read over several hash ranges at once. */
  async *readDirId(dirId: bigint): AsyncIterable<DirEntry> {
    const page = (startHash: bigint) => this.core.shard('READ_DIR', dirId, { dirId, startHash, asOfTime: AS_OF_NOW });
    for await (const batch of readDirBatches(page)) {
      for (const e of batch) yield dirEntry(e);
    }
  }

  async mkdirAt(parentId: bigint, name: string): Promise<bigint> {
    const nb = nameBytes(name);
    const core = this.core;
    return core.nonIdempotent(
      async () => (await core.cdcOnce('MAKE_DIRECTORY', { ownerId: parentId, name: nb })).id,
      async (err) => {
        // The lost first attempt may have made it: then the name is a directory now.
        if (err.code !== ErrorCode.CANNOT_OVERRIDE_NAME) throw err;
        const e = await this.lookupAt(parentId, name);
        if (!isDirectory(e.id)) throw err;
        return e.id;
      },
    );
  }

  async unlinkAt(parentId: bigint, name: string): Promise<void> {
    const target = (await this.lookupAt(parentId, name)).id;
    if (isDirectory(target)) throw new EggsError(ErrorCode.TYPE_IS_DIRECTORY);
    const nb = nameBytes(name);
    await this.core.nonIdempotent(
      async () => void (await this.core.shardOnce('SOFT_UNLINK_FILE', parentId, { ownerId: parentId, fileId: target, name: nb })),
      async (err) => {
        if (err.code === ErrorCode.NAME_NOT_FOUND) return; // the lost attempt removed it
        throw err;
      },
    );
  }

  /**
   * Unlinks a file whose id the caller already knows (a FUSE node table), saving the LOOKUP round
   * trip. A stale id (the name now points elsewhere) falls back to looking the name up.
   */
  async unlinkKnownAt(parentId: bigint, name: string, target: bigint): Promise<void> {
    if (isDirectory(target)) throw new EggsError(ErrorCode.TYPE_IS_DIRECTORY);
    const nb = nameBytes(name);
    try {
      await this.core.nonIdempotent(
        async () => void (await this.core.shardOnce('SOFT_UNLINK_FILE', parentId, { ownerId: parentId, fileId: target, name: nb })),
        async (err) => {
          if (err.code === ErrorCode.NAME_NOT_FOUND) return; // the lost attempt removed it
          throw err;
        },
      );
    } catch (err) {
      if (err instanceof EggsError && err.code === ErrorCode.MISMATCHING_TARGET) return this.unlinkAt(parentId, name);
      throw err;
    }
  }

  async rmdirAt(parentId: bigint, name: string): Promise<void> {
    const target = (await this.lookupAt(parentId, name)).id;
    if (!isDirectory(target)) throw new EggsError(ErrorCode.TYPE_IS_NOT_DIRECTORY);
    const nb = nameBytes(name);
    await this.core.nonIdempotent(
      async () => void (await this.core.cdcOnce('REMOVE_DIRECTORY', { ownerId: parentId, targetId: target, name: nb })),
      async (err) => {
        if (err.code === ErrorCode.NAME_NOT_FOUND) return;
        throw err;
      },
    );
  }

  async renameAt(oldParentId: bigint, oldName: string, newParentId: bigint, newName: string): Promise<void> {
    const target = (await this.lookupAt(oldParentId, oldName)).id;
    await this.renameKnown(target, oldParentId, oldName, newParentId, newName);
  }

  private async renameKnown(target: bigint, oldParentId: bigint, oldName: string, newParentId: bigint, newName: string): Promise<void> {
    const oldB = nameBytes(oldName);
    const newB = nameBytes(newName);
    if (oldParentId === newParentId && oldName === newName) return; // nothing to do (the original fails here)
    const core = this.core;
    const landed = async (err: EggsError) => {
      // After a lost attempt, success shows as the target sitting under the new name.
      if (err.code !== ErrorCode.NAME_NOT_FOUND && err.code !== ErrorCode.MISMATCHING_TARGET) throw err;
      const e = await this.lookupAt(newParentId, newName).catch(() => undefined);
      if (e?.id !== target) throw err;
    };
    if (oldParentId === newParentId) {
      await core.nonIdempotent(
        async () => void (await core.shardOnce('SAME_DIRECTORY_RENAME', oldParentId, { targetId: target, dirId: oldParentId, oldName: oldB, newName: newB })),
        landed,
      );
      return;
    }
    const body = { targetId: target, oldOwnerId: oldParentId, oldName: oldB, newOwnerId: newParentId, newName: newB };
    await core.nonIdempotent(
      async () => void (isDirectory(target) ? await core.cdcOnce('RENAME_DIRECTORY', body) : await core.cdcOnce('RENAME_FILE', body)),
      landed,
    );
  }

  /**
   * `opts.constructed`: a transient file from `constructFile` in parentId's shard (the FUSE mount
   * constructs them ahead of creates); else the writer constructs one.
   */
  createFile(parentId: bigint, name: string, opts: { parity?: number; constructed?: Promise<{ id: bigint; cookie: bigint }> } = {}): FileWriter {
    const parity = opts.parity ?? this.core.opts.parity;
    checkParity(parity);
    return new EggsFileWriter(this.core, parentId, name, parity, opts.constructed);
  }

  /** A new transient file in the shard of `dirId` (CONSTRUCT_FILE), to hand to createFile later. */
  constructFile(dirId: bigint): Promise<{ id: bigint; cookie: bigint }> {
    return this.core.shard('CONSTRUCT_FILE', dirId, { type: InodeType.FILE });
  }

  /** Up to `length` bytes from `offset`; short at EOF. */
  async readRange(fileId: bigint, offset: number, length: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const b of readFileChunks(this.core, fileId, offset, offset + length)) parts.push(Buffer.from(b));
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** Async iterator over the bytes [start, end) of a file, read ahead span by span. */
  readChunks(fileId: bigint, start = 0, end = Number.MAX_SAFE_INTEGER): AsyncIterable<Buffer> {
    return readFileChunks(this.core, fileId, start, end);
  }

  async statfs(): Promise<{ totalBytes: number; freeBytes: number; blockServices: number }> {
    if (!this.shuckleUrl) return { totalBytes: 0, freeBytes: 0, blockServices: 0 };
    const list = await fetchBlockServices({ url: this.shuckleUrl, secret: this.clusterSecret, timeoutMs: this.core.opts.timeoutMs });
    let used = 0;
    let free = 0;
    // Services sharing a disk report the same free space; count each distinct free figure once.
    const seenFree = new Set<number>();
    for (const b of list) {
      if (b.is_terminal) continue;
      used += b.used_bytes ?? 0;
      if (b.free_bytes !== undefined && !seenFree.has(b.free_bytes)) {
        seenFree.add(b.free_bytes);
        free += b.free_bytes;
      }
    }
    return { totalBytes: used + free, freeBytes: free, blockServices: list.filter((b) => !b.is_terminal).length };
  }

  /** Transient files of one shard, page by page (VISIT_TRANSIENT_FILES). */
  async *transientFiles(shard: number): AsyncIterable<{ id: bigint; deadlineTime: bigint }> {
    let beginId = 0n;
    const about = BigInt(shard);
    for (;;) {
      const r = await this.core.shard('VISIT_TRANSIENT_FILES', about, { beginId });
      yield* r.files;
      if (r.nextId === 0n) return;
      beginId = r.nextId;
    }
  }
}
