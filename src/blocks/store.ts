// One block service's directory (services.md §2.2): secret.key (flock'ed while we run), and one file
// per block at XX/<hex of the id's LE bytes>, raw bytes only, as the original lays it out.
//
// Additions, invisible to the original layout:
//  - Writes go to XX/.tmp-<name>-<rand>, are fsynced, then renamed into place and the directory is
//    fsynced, so a crash never leaves a short block under the real name.
//  - block-crcs.log records (id, size, crc) for every stored block (16-byte records, fsynced with
//    group commit before the rename), so that fetch can re-check a block against the CRC it was
//    written with. A block file without a record (placed by the original service) is served
//    unchecked. Erase appends a tombstone.
import fs from 'node:fs';
import fsp, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { blockRelativePath } from '../proto/blockwire.js';
import { KEY_BYTES, newSecretKey } from '../proto/crypto.js';
import { crc32c } from '../proto/crc32c.js';
import { flockExclusive } from './lock.js';
import type { Logger } from '../util/log.js';

export const SECRET_KEY_FILE = 'secret.key';
export const CRC_LOG_FILE = 'block-crcs.log';
const CRC_RECORD_BYTES = 16;
const TOMBSTONE_SIZE = 0xffffffff;
const TMP_PREFIX = '.tmp-';
/** Rewrite the CRC log at startup when it holds this many more records than live blocks. */
const CRC_LOG_COMPACT_SLACK = 4096;

export interface BlockInfo {
  sizeBytes: number;
  crc: number;
}

export class StoreError extends Error {
  override readonly name = 'StoreError';
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Group commit for directory fsyncs: callers arriving while a sync runs share the next one, so
 * concurrent writers into one directory pay for about one fsync each round instead of one each.
 */
class DirSyncer {
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  /** Kept open so a sync costs one call, not open + fsync + close. */
  private handle: FileHandle | null = null;
  constructor(
    private readonly dir: string,
    private readonly keepOpen: boolean,
  ) {}

  private async syncOnce(): Promise<void> {
    if (!this.keepOpen) return fsyncDir(this.dir);
    this.handle ??= await fsp.open(this.dir, 'r');
    await this.handle.sync();
  }

  sync(): Promise<void> {
    if (!this.running) {
      this.running = this.syncOnce().finally(() => (this.running = null));
      return this.running;
    }
    // A sync is in progress and may have started before our rename: wait for the next one.
    if (!this.queued) {
      const after = this.running.catch(() => {});
      this.queued = after.then(() => {
        this.queued = null;
        return this.sync();
      });
    }
    return this.queued;
  }

  async close(): Promise<void> {
    if (this.running) await this.running.catch(() => {});
    await this.handle?.close().catch(() => {});
    this.handle = null;
  }
}

const writevAt = promisify(fs.writev);
const fdatasync = promisify(fs.fdatasync);
const closeFd = promisify(fs.close);

/** Directory handles kept open per store (the 256 shard sub-directories and the root). */
const MAX_OPEN_DIR_HANDLES = 257;

/** Append-only (id, size, crc) log with group commit: concurrent appends share one fdatasync. */
class CrcLog {
  private pending: { rec: Buffer; resolve: () => void; reject: (e: Error) => void }[] = [];
  private flushing = false;
  constructor(private readonly fh: FileHandle) {}

  append(blockId: bigint, info: BlockInfo | null): Promise<void> {
    const rec = Buffer.allocUnsafe(CRC_RECORD_BYTES);
    rec.writeBigUInt64LE(blockId, 0);
    rec.writeUInt32LE(info ? info.sizeBytes : TOMBSTONE_SIZE, 8);
    rec.writeUInt32LE(info ? info.crc >>> 0 : 0, 12);
    return new Promise((resolve, reject) => {
      this.pending.push({ rec, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      try {
        // O_APPEND|O_DSYNC: appended at the end and durable when the call returns (one trip).
        await this.fh.writev(batch.map((b) => b.rec));
        for (const b of batch) b.resolve();
      } catch (err) {
        for (const b of batch) b.reject(err as Error);
      }
    }
    this.flushing = false;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

function parseCrcLog(buf: Buffer, into: Map<bigint, BlockInfo>): number {
  const records = Math.floor(buf.length / CRC_RECORD_BYTES);
  for (let i = 0; i < records; i++) {
    const o = i * CRC_RECORD_BYTES;
    const id = buf.readBigUInt64LE(o);
    const size = buf.readUInt32LE(o + 8);
    if (size === TOMBSTONE_SIZE) into.delete(id);
    else into.set(id, { sizeBytes: size, crc: buf.readUInt32LE(o + 12) });
  }
  return records;
}

/** A block being received: bytes go to a temp file, which becomes the block on commit. */
export class PendingBlock {
  /** Size of the block this one replaces, when the caller knows (null: none). */
  replacesSizeBytes: number | null | undefined = undefined;
  private position = 0;
  private writtenBack = 0;
  private writeback: Promise<void> | null = null;
  private closed = false;
  constructor(
    private readonly store: BlockStore,
    readonly blockId: bigint,
    readonly tmpPath: string,
    readonly finalPath: string,
    /** A raw descriptor, not a FileHandle: opened synchronously (see beginWrite). */
    private readonly fd: number,
    /** Opened with O_DSYNC: every append is durable when it returns. */
    readonly dsync: boolean,
  ) {}

  async append(chunks: Buffer[]): Promise<void> {
    let n = 0;
    for (const c of chunks) n += c.length;
    // writev may write short; loop until everything is on its way to disk.
    let written = 0;
    while (written < n) {
      const r = await writevAt(this.fd, written === 0 ? chunks : sliceChunks(chunks, written), this.position + written);
      if (r.bytesWritten <= 0) throw new StoreError(`${this.tmpPath}: write made no progress`);
      written += r.bytesWritten;
    }
    this.position += n;
  }

  get sizeBytes(): number {
    return this.position;
  }

  /**
   * Starts an fdatasync of what is written so far when at least `everyBytes` are not yet synced
   * and none is running. It overlaps the disk's writeback with receiving the rest of the block.
   */
  startWriteback(everyBytes: number): void {
    if (this.writeback || this.position - this.writtenBack < everyBytes) return;
    const at = this.position;
    const p = fdatasync(this.fd).then(() => {
      this.writtenBack = at;
    });
    this.writeback = p;
    // A failure here shows up again in the final fsync.
    void p
      .catch(() => {})
      .finally(() => {
        if (this.writeback === p) this.writeback = null;
      });
  }

  private async settleWriteback(): Promise<void> {
    if (this.writeback) await this.writeback.catch(() => {});
    this.writeback = null;
  }

  /**
   * Writes the last bytes, makes the data and its CRC record durable (in parallel), renames into
   * place and fsyncs the directory. With O_DSYNC (a block written in one batch) the write itself
   * is the data sync: one disk round trip instead of a write, then an fsync.
   */
  async commit(info: BlockInfo, last: Buffer[]): Promise<void> {
    let lastBytes = 0;
    for (const c of last) lastBytes += c.length;
    if (info.sizeBytes !== this.position + lastBytes) throw new StoreError(`${this.tmpPath}: committing ${info.sizeBytes} bytes but wrote ${this.position + lastBytes}`);
    await this.settleWriteback();
    const data = async () => {
      if (lastBytes > 0) await this.append(last);
      if (!this.dsync) await fdatasync(this.fd);
    };
    // Both durable before the rename; a record without its block (crash before the rename) is
    // harmless: fetch finds no file, and a retried write stores the block afresh.
    const results = await Promise.allSettled([data(), this.store.record(this.blockId, info)]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    // The rename works on the path: close in parallel with it and the directory sync.
    const closed = closeFd(this.fd);
    this.closed = true;
    try {
      await this.store.publish(this, info);
    } finally {
      await closed;
    }
  }

  async abort(): Promise<void> {
    await this.settleWriteback();
    if (!this.closed) await closeFd(this.fd).catch(() => {});
    await fsp.unlink(this.tmpPath).catch(() => {});
  }
}

function sliceChunks(chunks: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const c of chunks) {
    if (skip >= c.length) {
      skip -= c.length;
      continue;
    }
    out.push(skip > 0 ? c.subarray(skip) : c);
    skip = 0;
  }
  return out;
}

export class BlockStore {
  private readonly crcs = new Map<bigint, BlockInfo>();
  private readonly subdirsMade = new Set<string>();
  private usedBytesCount = 0;
  private usedBlocksCount = 0;
  /** Serialises operations on the same block id (a retried write racing its original, erase). */
  private readonly busy = new Map<bigint, Promise<unknown>>();
  private readonly dirSyncers = new Map<string, DirSyncer>();

  private constructor(
    readonly dir: string,
    readonly secretKey: Buffer,
    private readonly keyFd: number,
    private readonly crcLog: CrcLog,
  ) {}

  static async open(dir: string, log: Logger): Promise<BlockStore> {
    await fsp.mkdir(dir, { recursive: true });
    const keyPath = path.join(dir, SECRET_KEY_FILE);
    const keyFd = fs.openSync(keyPath, 'a+');
    try {
      flockExclusive(keyFd, keyPath);
      let key: Buffer = Buffer.alloc(0);
      const st = fs.fstatSync(keyFd);
      if (st.size === 0) {
        key = Buffer.from(newSecretKey());
        fs.writeSync(keyFd, key);
        fs.fsyncSync(keyFd);
        await fsyncDir(dir);
        log.info(`${dir}: generated a new secret key`);
      } else if (st.size !== KEY_BYTES) {
        throw new StoreError(`${keyPath} holds ${st.size} bytes, expected exactly ${KEY_BYTES}`);
      } else {
        key = Buffer.alloc(KEY_BYTES);
        fs.readSync(keyFd, key, 0, KEY_BYTES, 0);
      }
      const crcPath = path.join(dir, CRC_LOG_FILE);
      const crcs = new Map<bigint, BlockInfo>();
      let records = 0;
      try {
        const buf = await fsp.readFile(crcPath);
        records = parseCrcLog(buf, crcs);
        if (buf.length % CRC_RECORD_BYTES !== 0) {
          log.warn(`${crcPath}: dropping a torn trailing record (${buf.length % CRC_RECORD_BYTES} bytes)`);
          await fsp.truncate(crcPath, records * CRC_RECORD_BYTES);
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      if (records > crcs.size + CRC_LOG_COMPACT_SLACK) {
        const tmp = crcPath + '.compact';
        const out = Buffer.allocUnsafe(crcs.size * CRC_RECORD_BYTES);
        let o = 0;
        for (const [id, info] of crcs) {
          out.writeBigUInt64LE(id, o);
          out.writeUInt32LE(info.sizeBytes, o + 8);
          out.writeUInt32LE(info.crc, o + 12);
          o += CRC_RECORD_BYTES;
        }
        const fh = await fsp.open(tmp, 'w');
        await fh.writeFile(out);
        await fh.sync();
        await fh.close();
        await fsp.rename(tmp, crcPath);
        await fsyncDir(dir);
        log.info(`${crcPath}: compacted ${records} records to ${crcs.size}`);
      }
      const crcFh = await fsp.open(crcPath, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_DSYNC, 0o666);
      const store = new BlockStore(dir, key, keyFd, new CrcLog(crcFh));
      for (const [id, info] of crcs) store.crcs.set(id, info);
      await store.scan(log);
      return store;
    } catch (err) {
      fs.closeSync(keyFd);
      throw err;
    }
  }

  /** Counts stored blocks and removes temp files left by a crash mid-write. */
  private async scan(log: Logger): Promise<void> {
    let tmpRemoved = 0;
    for (let i = 0; i < 256; i++) {
      const sub = i.toString(16).padStart(2, '0');
      const subPath = path.join(this.dir, sub);
      let names: string[];
      try {
        names = await fsp.readdir(subPath);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      this.subdirsMade.add(sub);
      for (const name of names) {
        const p = path.join(subPath, name);
        if (name.startsWith(TMP_PREFIX)) {
          await fsp.unlink(p).catch(() => {});
          tmpRemoved++;
          continue;
        }
        const st = await fsp.stat(p).catch(() => null);
        if (!st || !st.isFile()) continue;
        this.usedBytesCount += st.size;
        this.usedBlocksCount++;
      }
    }
    if (tmpRemoved > 0) log.warn(`${this.dir}: removed ${tmpRemoved} unfinished block writes left by a crash`);
    // All 256 sub-directories up front (one directory fsync for all), so that no write pays for
    // a mkdir and an fsync of the root on its path.
    let made = 0;
    for (let i = 0; i < 256; i++) {
      const sub = i.toString(16).padStart(2, '0');
      if (this.subdirsMade.has(sub)) continue;
      try {
        await fsp.mkdir(path.join(this.dir, sub));
        made++;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      this.subdirsMade.add(sub);
    }
    if (made > 0) await fsyncDir(this.dir);
  }

  get usedBytes(): number {
    return this.usedBytesCount;
  }
  get usedBlocks(): number {
    return this.usedBlocksCount;
  }

  blockPath(blockId: bigint): string {
    return path.join(this.dir, blockRelativePath(blockId));
  }

  /** The CRC and size the block was written with, if we wrote it. */
  recorded(blockId: bigint): BlockInfo | undefined {
    return this.crcs.get(blockId);
  }

  /** Runs `fn` with no other exclusive operation on the same block id in progress. */
  async exclusive<T>(blockId: bigint, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const prev = this.busy.get(blockId);
      if (!prev) break;
      await prev.catch(() => {});
    }
    const p = fn();
    this.busy.set(blockId, p);
    try {
      return await p;
    } finally {
      if (this.busy.get(blockId) === p) this.busy.delete(blockId);
    }
  }

  async fileSize(blockId: bigint): Promise<number | null> {
    try {
      return (await fsp.stat(this.blockPath(blockId))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** Size and CRC of the bytes on disk (null: no such block). Reads the whole file. */
  async diskCrc(blockId: bigint, chunkBytes: number): Promise<BlockInfo | null> {
    let fh: FileHandle;
    try {
      fh = await fsp.open(this.blockPath(blockId), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      const buf = Buffer.allocUnsafe(chunkBytes);
      let crc = 0;
      let size = 0;
      for (;;) {
        const r = await fh.read(buf, 0, buf.length, size);
        if (r.bytesRead === 0) return { sizeBytes: size, crc };
        crc = crc32c(buf.subarray(0, r.bytesRead), crc);
        size += r.bytesRead;
      }
    } finally {
      await fh.close();
    }
  }

  /** fileSize, synchronously: a stat of a cached dentry, cheaper than a thread-pool trip. */
  fileSizeSync(blockId: bigint): number | null {
    const st = fs.statSync(this.blockPath(blockId), { throwIfNoEntry: false });
    return st ? st.size : null;
  }

  private async ensureSubdir(sub: string): Promise<void> {
    if (this.subdirsMade.has(sub)) return;
    try {
      await fsp.mkdir(path.join(this.dir, sub));
      await fsyncDir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    this.subdirsMade.add(sub);
  }

  /** `dsync`: the block will be written in one append, which should be durable on return. */
  async beginWrite(blockId: bigint, dsync: boolean): Promise<PendingBlock> {
    const rel = blockRelativePath(blockId);
    const sub = rel.slice(0, 2);
    await this.ensureSubdir(sub);
    const finalPath = path.join(this.dir, rel);
    const tmpPath = path.join(this.dir, sub, `${TMP_PREFIX}${rel.slice(3)}-${randomBytes(4).toString('hex')}`);
    const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | (dsync ? fs.constants.O_DSYNC : 0);
    // Synchronous: creating a file in a cached directory takes tens of microseconds, less than the
    // wake-ups of a trip through the thread pool (milliseconds each when the machine is busy).
    const fd = fs.openSync(tmpPath, flags, 0o666);
    return new PendingBlock(this, blockId, tmpPath, finalPath, fd, dsync);
  }

  /** Called by PendingBlock.commit before publish, so that every visible block has a record. */
  record(blockId: bigint, info: BlockInfo): Promise<void> {
    return this.crcLog.append(blockId, info);
  }

  private dirSyncer(dir: string): DirSyncer {
    let s = this.dirSyncers.get(dir);
    if (!s) this.dirSyncers.set(dir, (s = new DirSyncer(dir, this.dirSyncers.size < MAX_OPEN_DIR_HANDLES)));
    return s;
  }

  /** Renames the synced temp file into place and makes the rename durable. */
  async publish(p: PendingBlock, info: BlockInfo): Promise<void> {
    // Writers hold the block's exclusive() slot, so the caller's check that no block existed
    // still holds; a block that appeared anyway (placed by hand) is accounted for here.
    const previous = p.replacesSizeBytes === undefined ? await this.fileSize(p.blockId) : p.replacesSizeBytes;
    // Synchronous: a metadata call of microseconds that would otherwise cost a trip through the
    // thread pool (milliseconds when the machine is busy).
    fs.renameSync(p.tmpPath, p.finalPath);
    await this.dirSyncer(path.dirname(p.finalPath)).sync();
    this.crcs.set(p.blockId, info);
    if (previous === null) this.usedBlocksCount++;
    this.usedBytesCount += info.sizeBytes - (previous ?? 0);
  }

  /** Removes a block; a missing block is fine (erase is idempotent). */
  async erase(blockId: bigint): Promise<void> {
    const p = this.blockPath(blockId);
    const size = await this.fileSize(blockId);
    if (size !== null) {
      await fsp.unlink(p);
      await this.dirSyncer(path.dirname(p)).sync();
      this.usedBlocksCount--;
      this.usedBytesCount -= size;
    }
    if (this.crcs.has(blockId)) {
      await this.crcLog.append(blockId, null);
      this.crcs.delete(blockId);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.dirSyncers.values()].map((d) => d.close()));
    await this.crcLog.close().catch(() => {});
    try {
      fs.closeSync(this.keyFd); // releases the flock
    } catch {
      /* already closed */
    }
  }
}
