// One block service's directory (services.md §2.2): secret.key (flock'ed while we run), and one file
// per block at XX/<hex of the id's LE bytes>, raw bytes only, as the original lays it out.
//
// Additions, invisible to the original layout:
//  - block-records.log (record-log.ts) records (id, size, crc) for every stored block, so that
//    fetch can re-check a block against the CRC it was written with. A block file without a
//    record (placed by the original service) is served unchecked. Erase appends a tombstone.
//  - .spares/ holds empty files created ahead of need, their names made durable in batches
//    (spares.ts). A write fills a spare (O_DSYNC, or fdatasync for a large block) while its record
//    "block X, size, crc, is in spare S" is appended (O_DSYNC), both at once: once both are
//    durable the block is, so the spare is renamed to XX/<name> and the proof sent without
//    waiting for a directory fsync (the renames' directories are fsynced lazily, in batches).
//    One disk trip per write instead of three in series (data, record, directory).
//  - Recovery at open: a record whose spare still exists and matches its size and CRC was
//    possibly acknowledged and its rename lost: the rename is redone. A spare that does not match
//    was never acknowledged (its record is dropped unless the block file exists); other spares
//    are reused when empty and removed otherwise.
import fs from 'node:fs';
import fsp, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { blockRelativePath } from '../proto/blockwire.js';
import { KEY_BYTES, newSecretKey } from '../proto/crypto.js';
import { crc32c } from '../proto/crc32c.js';
import { flockExclusive } from './lock.js';
import { DirSyncer, fsyncDir } from './dir-sync.js';
import { encodeCompacted, OLD_CRC_LOG_FILE, parseOldCrcLog, parseRecordLog, RECORD_BYTES, RECORD_LOG_FILE, RECORD_LOG_OPEN_FLAGS, RecordLog, TOMBSTONE_SIZE, type LogRecord } from './record-log.js';
import { parseSpareName, SparePool, SPARES_DIR, type Spare } from './spares.js';
import type { Logger } from '../util/log.js';

export const SECRET_KEY_FILE = 'secret.key';
export { RECORD_LOG_FILE, OLD_CRC_LOG_FILE, SPARES_DIR };
/** Temp files of the previous version's write path (XX/.tmp-*), removed at startup. */
const TMP_PREFIX = '.tmp-';
/** Rewrite the record log at startup when it holds this many more records than live blocks. */
const CRC_LOG_COMPACT_SLACK = 4096;
/** Renamed blocks' directories are fsynced this long after the first rename of a batch. */
const LAZY_DIR_SYNC_MS = 500;
/** Reads of a spare checked at recovery, in pieces of this size. */
const RECOVERY_READ_BYTES = 1 << 20;

export interface BlockInfo {
  sizeBytes: number;
  crc: number;
}

export class StoreError extends Error {
  override readonly name = 'StoreError';
}

const writevAt = promisify(fs.writev);
const fdatasync = promisify(fs.fdatasync);
const closeFd = promisify(fs.close);

/** Directory handles kept open per store (the 256 shard sub-directories, the root, .spares). */
const MAX_OPEN_DIR_HANDLES = 258;

async function readIfExists(p: string): Promise<Buffer | null> {
  try {
    return await fsp.readFile(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function statIfExists(p: string): Promise<fs.Stats | null> {
  try {
    return await fsp.stat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Size and CRC of a whole file, read `chunkBytes` at a time. */
async function fileCrc(p: string, chunkBytes = RECOVERY_READ_BYTES): Promise<BlockInfo> {
  const fh = await fsp.open(p, 'r');
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

/** Writes `data` as `target` atomically and durably (temp file, fsync, rename, directory fsync). */
async function replaceFile(dir: string, target: string, data: Buffer): Promise<void> {
  const tmp = target + '.compact';
  const fh = await fsp.open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, target);
  await fsyncDir(dir);
}

/** A block being received: bytes go to a spare file, which becomes the block on commit. */
export class PendingBlock {
  /** Size of the block this one replaces, when the caller knows (null: none). */
  replacesSizeBytes: number | null | undefined = undefined;
  private position = 0;
  private writtenBack = 0;
  private writeback: Promise<void> | null = null;
  private writebackError: Error | null = null;
  private closed = false;
  constructor(
    private readonly store: BlockStore,
    readonly blockId: bigint,
    readonly spare: Spare,
    readonly finalPath: string,
    /** A raw descriptor, not a FileHandle: opened synchronously (see beginWrite). */
    private readonly fd: number,
    /** Opened with O_DSYNC: every append is durable when it returns. */
    readonly dsync: boolean,
  ) {}

  get sparePath(): string {
    return this.spare.path;
  }

  /**
   * Writes `chunks` after what is written. The caller may await the result only later (the server
   * overlaps a write with receiving the next bytes): a failure (ENOSPC, EIO) is marked handled
   * here so that it is not an unhandled rejection, which would end the process, and is still
   * thrown to whoever awaits it.
   */
  append(chunks: Buffer[]): Promise<void> {
    const p = this.appendNow(chunks);
    p.catch(() => {});
    return p;
  }

  private async appendNow(chunks: Buffer[]): Promise<void> {
    let n = 0;
    for (const c of chunks) n += c.length;
    // writev may write short; loop until everything is on its way to disk.
    let written = 0;
    while (written < n) {
      const r = await writevAt(this.fd, written === 0 ? chunks : sliceChunks(chunks, written), this.position + written);
      if (r.bytesWritten <= 0) throw new StoreError(`${this.sparePath}: write made no progress`);
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
    // Kept for commit: the kernel reports a writeback error to one fdatasync of a file description
    // only, so the final fdatasync would succeed after this one failed.
    void p
      .catch((err: Error) => {
        this.writebackError ??= err;
      })
      .finally(() => {
        if (this.writeback === p) this.writeback = null;
      });
  }

  private async settleWriteback(): Promise<void> {
    if (this.writeback) await this.writeback.catch(() => {});
    this.writeback = null;
  }

  /**
   * Writes the last bytes and makes them, the record naming the spare and the spare's name
   * durable, all at once (one disk trip each, in parallel); then renames the spare into place.
   * With O_DSYNC (a block written in one batch) the write itself is the data sync.
   */
  async commit(info: BlockInfo, last: Buffer[]): Promise<void> {
    let lastBytes = 0;
    for (const c of last) lastBytes += c.length;
    if (info.sizeBytes !== this.position + lastBytes) throw new StoreError(`${this.sparePath}: committing ${info.sizeBytes} bytes but wrote ${this.position + lastBytes}`);
    // The last bytes are written, and synced, while an early writeback may still run: the final
    // fdatasync starts after every write and so covers them all.
    const data = async () => {
      if (lastBytes > 0) await this.append(last);
      if (!this.dsync) await fdatasync(this.fd);
    };
    // A record whose spare never got its bytes (crash, or a failure here) is harmless: recovery
    // finds the spare short or wrong and drops the record; a retried write stores the block afresh.
    const results = await Promise.allSettled([data(), this.store.record(this.blockId, info, this.spare.id), this.spare.durable, this.settleWriteback()]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    if (this.writebackError) throw this.writebackError;
    // The bytes are durable and the rename works on the path: the close need not delay the
    // proof (one thread-pool round trip less on every write's path).
    this.closed = true;
    fs.close(this.fd, (err) => err && this.store.warn(`${this.sparePath}: closing: ${err.message}`));
    this.store.publish(this, info);
  }

  async abort(): Promise<void> {
    await this.settleWriteback();
    if (!this.closed) await closeFd(this.fd).catch(() => {});
    this.closed = true;
    await fsp.unlink(this.sparePath).catch(() => {});
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
  private readonly spares: SparePool;
  /** Directories holding renames not yet known durable (fsynced by syncDirtyDirs). */
  private readonly dirtyDirs = new Set<string>();
  private lazySyncTimer: NodeJS.Timeout | null = null;
  private lazySyncRunning: Promise<void> | null = null;
  private closing = false;

  private constructor(
    readonly dir: string,
    readonly secretKey: Buffer,
    private readonly keyFd: number,
    private readonly recordLog: RecordLog,
    private readonly log: Logger,
  ) {
    const sparesDir = path.join(dir, SPARES_DIR);
    this.spares = new SparePool(sparesDir, () => this.dirSyncer(sparesDir).sync(), log);
  }

  static async open(dir: string, log: Logger): Promise<BlockStore> {
    await fsp.mkdir(dir, { recursive: true });
    const keyPath = path.join(dir, SECRET_KEY_FILE);
    const keyFd = fs.openSync(keyPath, 'a+');
    let recordLog: RecordLog | null = null;
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
      const live = new Map<bigint, LogRecord>();
      const logPath = path.join(dir, RECORD_LOG_FILE);
      const oldPath = path.join(dir, OLD_CRC_LOG_FILE);
      let records = 0;
      let migrating = false;
      /** Where the next record goes, and the log file's size (zeros written ahead in between). */
      let logEndBytes = 0;
      let logSizeBytes = 0;
      const buf = await readIfExists(logPath);
      if (buf) {
        const parsed = parseRecordLog(buf, live);
        records = parsed.records;
        logEndBytes = parsed.endBytes;
        logSizeBytes = buf.length - parsed.tornBytes;
        if (parsed.bad > 0) log.warn(`${logPath}: skipped ${parsed.bad} damaged records`);
        if (parsed.tornBytes > 0) {
          log.warn(`${logPath}: dropping a torn trailing record (${parsed.tornBytes} bytes)`);
          await fsp.truncate(logPath, logSizeBytes);
        }
        // A migration finished (the new log is renamed in whole) before the old log was removed.
        if (await statIfExists(oldPath)) {
          await fsp.unlink(oldPath);
          await fsyncDir(dir);
        }
      } else {
        const old = await readIfExists(oldPath);
        if (old) {
          records = parseOldCrcLog(old, live);
          migrating = true;
        }
      }
      const sparesDir = path.join(dir, SPARES_DIR);
      const adopt = await BlockStore.recover(dir, sparesDir, live, log);
      if (migrating || records > live.size + CRC_LOG_COMPACT_SLACK) {
        // Every live record's name is durable now (recover), so spares can be cleared.
        await replaceFile(dir, logPath, encodeCompacted(live.values(), live.size));
        logEndBytes = logSizeBytes = live.size * RECORD_BYTES;
        if (migrating) {
          await fsp.unlink(oldPath);
          await fsyncDir(dir);
          log.info(`${dir}: moved ${live.size} records from ${OLD_CRC_LOG_FILE} to ${RECORD_LOG_FILE}`);
        } else log.info(`${logPath}: compacted ${records} records to ${live.size}`);
      }
      recordLog = new RecordLog(await fsp.open(logPath, RECORD_LOG_OPEN_FLAGS, 0o666), logEndBytes, logSizeBytes);
      if (logSizeBytes === 0) await fsyncDir(dir); // a new log: its name must be durable too
      await recordLog.prepare();
      const store = new BlockStore(dir, key, keyFd, recordLog, log);
      for (const [id, r] of live) store.crcs.set(id, { sizeBytes: r.sizeBytes, crc: r.crc });
      await store.scan(log);
      store.spares.adopt(adopt);
      await store.spares.fill();
      return store;
    } catch (err) {
      await recordLog?.close().catch(() => {});
      fs.closeSync(keyFd);
      throw err;
    }
  }

  /**
   * Finishes what a crash interrupted, before anything is served: every live record naming a
   * spare ends with its block under the real name (the rename redone from a matching spare) or
   * is dropped (never acknowledged: no matching spare and no block file). Makes all of it
   * durable. Returns the empty spares left, to be reused.
   */
  private static async recover(dir: string, sparesDir: string, live: Map<bigint, LogRecord>, log: Logger): Promise<bigint[]> {
    await fsp.mkdir(sparesDir, { recursive: true });
    const spareFiles = new Set<bigint>();
    for (const name of await fsp.readdir(sparesDir)) {
      const id = parseSpareName(name);
      if (id !== null) spareFiles.add(id);
    }
    const sparePath = (id: bigint) => path.join(sparesDir, id.toString(16).padStart(16, '0'));
    // Directories whose entries a previous process may have changed without fsyncing them.
    const toSync = new Set<string>([dir, sparesDir]);
    let redone = 0;
    let dropped = 0;
    for (const r of [...live.values()]) {
      if (r.spare === 0n) continue;
      const finalPath = path.join(dir, blockRelativePath(r.blockId));
      toSync.add(path.dirname(finalPath));
      if (spareFiles.delete(r.spare)) {
        const sp = sparePath(r.spare);
        const [spSt, realSt] = await Promise.all([fsp.stat(sp), statIfExists(finalPath)]);
        if (realSt && realSt.ino === spSt.ino && realSt.dev === spSt.dev) {
          await fsp.unlink(sp); // both names of one file: the rename half done
          continue;
        }
        const got = spSt.size === r.sizeBytes ? await fileCrc(sp) : null;
        if (got && got.sizeBytes === r.sizeBytes && got.crc === r.crc) {
          await fsp.mkdir(path.dirname(finalPath), { recursive: true });
          await fsp.rename(sp, finalPath);
          redone++;
          continue;
        }
        await fsp.unlink(sp); // never acknowledged: its bytes did not all reach the disk
      }
      // Without a spare the block file is the truth: there (settled), or never acknowledged.
      if (!(await statIfExists(finalPath))) {
        live.delete(r.blockId);
        dropped++;
      }
    }
    const adopt: bigint[] = [];
    let removed = 0;
    for (const id of spareFiles) {
      const sp = sparePath(id);
      const st = await statIfExists(sp);
      if (st && st.isFile() && st.size === 0) adopt.push(id);
      else if (st) {
        await fsp.rm(sp, { force: true, recursive: true });
        removed++;
      }
    }
    for (const d of toSync) {
      try {
        await fsyncDir(d);
      } catch (err) {
        // The sub-directory of a dropped record may never have been made.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    if (redone + dropped + removed > 0) {
      log.warn(`${dir}: recovered after a crash: ${redone} block renames redone, ${dropped} unacknowledged writes dropped, ${removed} partial spares removed`);
    }
    return adopt;
  }

  /** Counts stored blocks and removes temp files left by a crash of the previous version. */
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
    try {
      return await fileCrc(this.blockPath(blockId), chunkBytes);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
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
    if (this.closing) throw new StoreError(`${this.dir}: store is closing`);
    const rel = blockRelativePath(blockId);
    await this.ensureSubdir(rel.slice(0, 2));
    const spare = this.spares.take();
    const flags = fs.constants.O_WRONLY | (dsync ? fs.constants.O_DSYNC : 0);
    // Synchronous: opening a file in a cached directory takes microseconds, less than the
    // wake-ups of a trip through the thread pool (milliseconds each when the machine is busy).
    let fd: number;
    try {
      fd = fs.openSync(spare.path, flags);
    } catch (err) {
      await fsp.unlink(spare.path).catch(() => {});
      throw err;
    }
    return new PendingBlock(this, blockId, spare, path.join(this.dir, rel), fd, dsync);
  }

  warn(message: string): void {
    this.log.warn(message);
  }

  /** Called by PendingBlock.commit before publish, so that every visible block has a record. */
  record(blockId: bigint, info: BlockInfo, spare: bigint): Promise<void> {
    return this.recordLog.append({ blockId, sizeBytes: info.sizeBytes, crc: info.crc, spare });
  }

  private dirSyncer(dir: string): DirSyncer {
    let s = this.dirSyncers.get(dir);
    if (!s) this.dirSyncers.set(dir, (s = new DirSyncer(dir, this.dirSyncers.size < MAX_OPEN_DIR_HANDLES)));
    return s;
  }

  /**
   * Renames the durable spare into place. The rename need not be durable before the proof goes
   * out: recovery redoes it from the record and the spare. Its directories are fsynced lazily.
   */
  publish(p: PendingBlock, info: BlockInfo): void {
    // Writers hold the block's exclusive() slot, so the caller's check that no block existed
    // still holds; a block that appeared anyway (placed by hand) is accounted for here.
    const previous = p.replacesSizeBytes === undefined ? this.fileSizeSync(p.blockId) : p.replacesSizeBytes;
    // Synchronous: a metadata call of microseconds that would otherwise cost a trip through the
    // thread pool (milliseconds when the machine is busy).
    fs.renameSync(p.sparePath, p.finalPath);
    this.crcs.set(p.blockId, info);
    if (previous === null) this.usedBlocksCount++;
    this.usedBytesCount += info.sizeBytes - (previous ?? 0);
    this.markDirty(path.dirname(p.finalPath));
    this.markDirty(this.spares.dir);
  }

  private markDirty(dir: string): void {
    this.dirtyDirs.add(dir);
    if (this.lazySyncTimer || this.closing) return;
    this.lazySyncTimer = setTimeout(() => {
      this.lazySyncTimer = null;
      void this.syncDirtyDirs();
    }, LAZY_DIR_SYNC_MS);
    this.lazySyncTimer.unref();
  }

  /** Fsyncs the directories of recent renames, one at a time (the thread pool stays free for writes). */
  private syncDirtyDirs(): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.lazySyncRunning) await this.lazySyncRunning;
      const dirs = [...this.dirtyDirs];
      this.dirtyDirs.clear();
      for (const d of dirs) {
        // A failure loses nothing: recovery redoes renames from the record log and the spares.
        await this.dirSyncer(d)
          .sync()
          .catch((err: Error) => this.log.warn(`${d}: directory fsync failed: ${err.message}`));
      }
    };
    const p = run().finally(() => {
      if (this.lazySyncRunning === p) this.lazySyncRunning = null;
    });
    this.lazySyncRunning = p;
    return p;
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
      await this.recordLog.append({ blockId, sizeBytes: TOMBSTONE_SIZE, crc: 0, spare: 0n });
      this.crcs.delete(blockId);
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.lazySyncTimer) clearTimeout(this.lazySyncTimer);
    this.lazySyncTimer = null;
    await this.spares.close();
    await this.syncDirtyDirs();
    await Promise.all([...this.dirSyncers.values()].map((d) => d.close()));
    await this.recordLog.close().catch(() => {});
    try {
      fs.closeSync(this.keyFd); // releases the flock
    } catch {
      /* already closed */
    }
  }
}
