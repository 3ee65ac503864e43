// The FUSE session: mounts a filesystem on /dev/fuse, negotiates FUSE_INIT, reads requests on the
// event loop (or with reader threads), dispatches them to a `FuseFilesystem` and writes the
// replies. Every request is served as its own async task, so many are in flight at once; whatever a
// filesystem method throws becomes an errno reply (EIO if it names none): no request can take the
// mount down.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, writeSync, writevSync, statSync } from 'node:fs';
import { stat as statAsync, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { Worker } from 'node:worker_threads';
import {
  ATTR_OUT_BYTES,
  type Attr,
  decodeInHeader,
  direntBytes,
  DIRENT_HEADER_BYTES,
  encodeAttrOut,
  encodeEntryOut,
  type Entry,
  ENTRY_OUT_BYTES,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_MINOR_VERSION,
  IN_HEADER_BYTES,
  type InHeader,
  INIT_OUT_BYTES,
  InitFlag,
  Op,
  OP_NAMES,
  OPEN_OUT_BYTES,
  OUT_HEADER_BYTES,
  readCString,
  READ_IN_BYTES,
  STATFS_OUT_BYTES,
  WRITE_IN_BYTES,
  WRITE_OUT_BYTES,
  S_IFMT,
} from './abi.js';
import { logger } from '../util/log.js';
import { startLoopReader, type LoopReader } from './loop-reader.js';

export type { Attr, Entry } from './abi.js';
export { FUSE_ROOT_ID, S_IFDIR, S_IFREG, S_IFLNK, SetattrValid, RENAME_EXCHANGE, RENAME_NOREPLACE } from './abi.js';

const log = logger('fuse');
const E = osConstants.errno;

/** Largest write the kernel may send us: 1 MiB, also the largest read. */
export const MAX_WRITE_BYTES = 1 << 20;
/** A read of /dev/fuse must have room for the largest request: a write plus its headers. */
export const READ_BUFFER_BYTES = MAX_WRITE_BYTES + 64 * 1024;
/**
 * Reader threads of /dev/fuse; 0 (the default): read on the event loop (loop-reader.ts), which
 * saves a thread hop per request (creating an empty file: 0.25 → 0.1 ms for open, 1.2 → 0.95 ms in all).
 */
export const DEFAULT_READERS = 0;
/** Reader threads started instead when this Node cannot read the device on its event loop. */
const FALLBACK_READER_THREADS = 8;
/** Asynchronous requests (reads, releases) the kernel keeps in flight. */
const MAX_BACKGROUND = 64;
const CONGESTION_THRESHOLD = 48;
/** Read-ahead we ask the kernel for (it caps this at its own proposal; see raiseReadAhead). */
const MAX_READAHEAD_BYTES = 8 << 20;
const UNMOUNT_GRACE_MS = 2_000;
/**
 * A request still unanswered after this long gets EIO, so that no bug or lost peer can leave a
 * process stuck in the kernel forever (the client's own timeouts normally answer long before).
 */
export const REQUEST_DEADLINE_MS = 180_000;
const DEADLINE_SWEEP_MS = 5_000;

/**
 * An error with an errno, for a filesystem method to throw. Thrown for every failed lookup, so it
 * captures no stack trace (that capture cost more than serving the request).
 */
export class FuseError extends Error {
  readonly errno: number;
  constructor(errno: number, detail?: string) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(detail ?? `errno ${errno}`);
    Error.stackTraceLimit = limit;
    this.errno = errno;
  }
}
FuseError.prototype.name = 'FuseError';

/** Positive errno for anything thrown by a filesystem method; EIO when it names none. */
export function errnoOf(err: unknown): number {
  for (let e = err as { errno?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.errno === 'number' && e.errno !== 0 && Number.isInteger(e.errno)) return Math.abs(e.errno);
  }
  return E.EIO;
}

export interface Context {
  readonly unique: bigint;
  readonly uid: number;
  readonly gid: number;
  /** Thread id of the caller (the kernel sends the tid, not the tgid). */
  readonly pid: number;
}

export interface OpenResult {
  fh: bigint;
  directIo?: boolean;
  keepCache?: boolean;
  cacheDir?: boolean;
  nonSeekable?: boolean;
}

export interface AttrReply {
  attr: Attr;
  ttlMs: number;
}

export interface SetattrIn {
  valid: number;
  fh: bigint;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  atimeNs: bigint;
  mtimeNs: bigint;
}

export interface StatfsReply {
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  bsize: number;
  namelen: number;
  frsize: number;
}

export interface DirItem {
  name: string;
  /** Inode number shown to readdir (d_ino). */
  ino: bigint;
  /** File type bits (S_IFDIR, ...). */
  mode: number;
  /** The offset the kernel passes back to continue after this entry. */
  nextOffset: bigint;
  /** For readdirplus: the full entry (its lookup count goes up when it is emitted). */
  entry?: Entry;
}

/** Collects directory entries into the reply buffer; `add` is false once the buffer is full. */
export interface DirFiller {
  readonly plus: boolean;
  add(item: DirItem): boolean;
}

/** What a filesystem implements. Missing optional methods answer ENOSYS (or a harmless default). */
export interface FuseFilesystem {
  init?(): void;
  lookup(ctx: Context, parent: bigint, name: string): Promise<Entry>;
  forget(nodeid: bigint, nlookup: bigint): void;
  getattr(ctx: Context, nodeid: bigint, fh: bigint | undefined): Promise<AttrReply>;
  setattr(ctx: Context, nodeid: bigint, changes: SetattrIn): Promise<AttrReply>;
  readlink?(ctx: Context, nodeid: bigint): Promise<Buffer>;
  symlink?(ctx: Context, parent: bigint, name: string, target: string): Promise<Entry>;
  mkdir(ctx: Context, parent: bigint, name: string, mode: number): Promise<Entry>;
  unlink(ctx: Context, parent: bigint, name: string): Promise<void>;
  rmdir(ctx: Context, parent: bigint, name: string): Promise<void>;
  rename(ctx: Context, parent: bigint, name: string, newParent: bigint, newName: string, flags: number): Promise<void>;
  open(ctx: Context, nodeid: bigint, flags: number): Promise<OpenResult>;
  create(ctx: Context, parent: bigint, name: string, mode: number, flags: number): Promise<{ entry: Entry; open: OpenResult }>;
  read(ctx: Context, nodeid: bigint, fh: bigint, offset: number, size: number): Promise<Buffer>;
  write(ctx: Context, nodeid: bigint, fh: bigint, offset: number, data: Buffer): Promise<number>;
  flush(ctx: Context, nodeid: bigint, fh: bigint): Promise<void>;
  release(ctx: Context, nodeid: bigint, fh: bigint, flags: number): Promise<void>;
  fsync(ctx: Context, nodeid: bigint, fh: bigint): Promise<void>;
  opendir(ctx: Context, nodeid: bigint, flags: number): Promise<OpenResult>;
  readdir(ctx: Context, nodeid: bigint, fh: bigint, offset: bigint, out: DirFiller): Promise<void>;
  releasedir(ctx: Context, nodeid: bigint, fh: bigint): Promise<void>;
  statfs(ctx: Context, nodeid: bigint): Promise<StatfsReply>;
  access?(ctx: Context, nodeid: bigint, mask: number): Promise<void>;
  /** Called once the kernel connection is gone (unmounted). */
  destroy?(): void;
}

export interface MountOptions {
  /** Reader threads on /dev/fuse (requests served at once, at least). */
  readers?: number;
  /** Filesystem type shown in /proc/mounts as fuse.<subtype>. */
  subtype?: string;
  fsname?: string;
  /** Kernel read-ahead for the mount, set through /sys/class/bdi (best effort). */
  readAheadBytes?: number;
}

export interface FuseSession {
  readonly mountpoint: string;
  /** Resolves when the kernel connection has ended (unmounted, by us or anyone). */
  readonly closed: Promise<void>;
  /** Lazily unmounts and waits for the connection to end. */
  unmount(): Promise<void>;
  /** Negotiated values, for tests and logs. */
  readonly negotiated: { minor: number; flags: number; maxWrite: number; maxReadahead: number } | undefined;
  /** Threads reading /dev/fuse; 0: the event loop reads it. */
  readonly readerThreads: number;
}

/** Requests answered as soon as the kernel interrupts them: they have no side effects. */
const INTERRUPTIBLE = new Set<number>([Op.LOOKUP, Op.GETATTR, Op.READ, Op.READDIR, Op.READDIRPLUS, Op.STATFS, Op.ACCESS, Op.READLINK]);

/** Opcodes we answer ENOSYS so that the kernel falls back to its own behaviour or remembers. */
const NOT_SUPPORTED = new Set<number>([
  Op.SETXATTR, Op.GETXATTR, Op.LISTXATTR, Op.REMOVEXATTR, Op.GETLK, Op.SETLK, Op.SETLKW, Op.BMAP, Op.IOCTL, Op.POLL,
  Op.FALLOCATE, Op.LSEEK, Op.COPY_FILE_RANGE, Op.SYNCFS, Op.TMPFILE, Op.STATX,
]);

function runQuiet(cmd: string, args: string[], extraFd?: number): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: extraFd === undefined ? ['ignore', 'ignore', 'pipe'] : ['ignore', 'ignore', 'pipe', extraFd] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => resolve({ code: -1, stderr: String(err) }));
    child.on('exit', (code) => resolve({ code, stderr: stderr.trim() }));
  });
}

/** Lazy unmount of `mountpoint` (umount -l, else fusermount3 -u -z). */
export async function lazyUnmount(mountpoint: string): Promise<boolean> {
  const a = await runQuiet('umount', ['-l', mountpoint]);
  if (a.code === 0) return true;
  const b = await runQuiet('fusermount3', ['-u', '-z', mountpoint]);
  if (b.code === 0) return true;
  log.debug(`unmount ${mountpoint}: ${a.stderr}; ${b.stderr}`);
  return false;
}

/** A driver killed with -9 leaves its mount behind ("transport endpoint is not connected"): remove it. */
export async function clearStaleMount(mountpoint: string): Promise<void> {
  try {
    statSync(mountpoint);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') throw err;
    if (!(await lazyUnmount(mountpoint))) throw err;
    log.warn(`${mountpoint}: removed a stale mount left by a dead driver`);
  }
}

/** Mounts `fs` at `mountpoint` and serves it until unmounted. */
export async function mountFuse(mountpoint: string, fs: FuseFilesystem, opts: MountOptions = {}): Promise<FuseSession> {
  await clearStaleMount(mountpoint);
  const st = statSync(mountpoint);
  if (!st.isDirectory()) throw new FuseError(E.ENOTDIR, `mount ${mountpoint}: not a directory`);
  const fd = openSync('/dev/fuse', 'r+');
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const options = [`fd=3`, `rootmode=40000`, `user_id=${uid}`, `group_id=${gid}`, `allow_other`];
  const subtype = opts.subtype ?? 'eggsfs';
  const r = await runQuiet('mount', ['-i', '-t', `fuse.${subtype}`, opts.fsname ?? subtype, mountpoint, '-o', options.join(',')], fd);
  if (r.code !== 0) {
    closeSync(fd);
    throw new FuseError(E.EIO, `mount ${mountpoint}: mount(8) failed (${r.code}): ${r.stderr}`);
  }
  const session = new Session(fd, mountpoint, fs, opts);
  session.start(opts.readers ?? DEFAULT_READERS);
  return session;
}

class Session implements FuseSession {
  negotiated: FuseSession['negotiated'] = undefined;
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly workers: Worker[] = [];
  /** Set when requests are read on the event loop instead of by threads (readers: 0). */
  private loopReader: LoopReader | undefined;
  private liveReaders = 0;
  private readonly inFlight = new Map<bigint, { opcode: number; replied: boolean; startMs: number }>();
  private sweeper: NodeJS.Timeout | undefined;
  private ended = false;
  private connection: { major: number; minor: number } | undefined;
  private destroyed = false;

  constructor(
    private readonly fd: number,
    readonly mountpoint: string,
    private readonly fs: FuseFilesystem,
    private readonly opts: MountOptions,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  get readerThreads(): number {
    return this.workers.length;
  }

  start(readers: number): void {
    if (!(readers >= 0 && readers <= 64)) throw new RangeError(`readers must be 0..64, got ${readers}`);
    this.sweeper = setInterval(() => this.sweepDeadlines(), DEADLINE_SWEEP_MS);
    this.sweeper.unref();
    if (readers === 0) {
      this.loopReader = startLoopReader(this.fd, READ_BUFFER_BYTES, (b) => this.onRequest(b), (why) => this.onReaderEnd(why));
      if (this.loopReader) {
        this.liveReaders = 1;
        return;
      }
      log.debug('no event-loop reader of /dev/fuse in this Node: reading with threads');
      readers = FALLBACK_READER_THREADS;
    }
    const url = new URL('./reader-worker.js', import.meta.url);
    for (let i = 0; i < readers; i++) {
      const w = new Worker(url, { workerData: { fd: this.fd, bufferBytes: READ_BUFFER_BYTES } });
      this.liveReaders++;
      w.on('message', (m: Uint8Array | { end: string }) => {
        if (m instanceof Uint8Array) this.onRequest(Buffer.from(m.buffer, m.byteOffset, m.byteLength));
        else this.onReaderEnd(m.end);
      });
      w.on('error', (err) => {
        log.error(`reader thread failed: ${err.message}`);
        this.onReaderEnd('error');
      });
      this.workers.push(w);
    }
  }

  private sweepDeadlines(): void {
    const now = performance.now();
    for (const [unique, f] of this.inFlight) {
      if (now - f.startMs < REQUEST_DEADLINE_MS) continue;
      log.error(`${OP_NAMES[f.opcode] ?? f.opcode} request ${unique} unanswered after ${REQUEST_DEADLINE_MS} ms: answering EIO`);
      this.replyError(unique, E.EIO);
    }
  }

  private onReaderEnd(why: string): void {
    this.liveReaders--;
    if (why !== 'ENODEV') log.debug(`reader ended: ${why}`);
    if (this.liveReaders > 0 || this.ended) return;
    this.ended = true;
    if (this.loopReader) {
      this.loopReader.stop(); // the loop reader owns the descriptor (and has closed it already)
    } else {
      try {
        closeSync(this.fd);
      } catch {
        /* already closed */
      }
    }
    if (!this.destroyed) {
      this.destroyed = true;
      try {
        this.fs.destroy?.();
      } catch (err) {
        log.warn(`destroy: ${(err as Error).message}`);
      }
    }
    logOpStats();
    clearInterval(this.sweeper);
    this.resolveClosed();
  }

  async unmount(): Promise<void> {
    if (this.ended) return;
    const ok = await lazyUnmount(this.mountpoint);
    if (!ok) log.warn(`could not unmount ${this.mountpoint} (already unmounted?)`);
    // A lazy unmount ends the connection only once no process uses the mount any more; after a
    // grace period, abort it so that the readers see ENODEV and this process can exit.
    const timer = setTimeout(() => void this.abortConnection(), UNMOUNT_GRACE_MS);
    timer.unref();
    await this.closed;
    clearTimeout(timer);
  }

  // ---- replies -------------------------------------------------------------------------------

  private writeReply(unique: bigint, errno: number, parts: Buffer[]): void {
    const f = this.inFlight.get(unique);
    if (f) {
      if (f.replied) return; // already answered EINTR
      f.replied = true;
      this.inFlight.delete(unique);
    }
    let len = OUT_HEADER_BYTES;
    for (const p of parts) len += p.length;
    try {
      if (len <= SMALL_REPLY_BYTES) {
        // One buffer, one plain write: cheaper than gathering for the many small replies.
        const b = Buffer.allocUnsafe(len);
        writeOutHeader(b, len, errno, unique);
        let at = OUT_HEADER_BYTES;
        for (const p of parts) at += p.copy(b, at);
        writeSync(this.fd, b);
      } else {
        const h = Buffer.allocUnsafe(OUT_HEADER_BYTES);
        writeOutHeader(h, len, errno, unique);
        writevSync(this.fd, [h, ...parts]);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the kernel no longer waits for this request (interrupted or aborted).
      if (code !== 'ENOENT' && code !== 'ENODEV' && code !== 'EBADF') log.warn(`reply to request ${unique}: ${(err as Error).message}`);
    }
  }

  private replyError(unique: bigint, errno: number): void {
    if (!(errno > 0 && errno < 4096)) errno = E.EIO;
    this.writeReply(unique, errno, []);
  }

  private replyOk(unique: bigint, payload?: Buffer): void {
    this.writeReply(unique, 0, payload ? [payload] : []);
  }

  // ---- dispatch ------------------------------------------------------------------------------

  private onRequest(buf: Buffer): void {
    if (buf.length < IN_HEADER_BYTES) {
      log.warn(`short request of ${buf.length} bytes ignored`);
      return;
    }
    const h = decodeInHeader(buf);
    const body = buf.subarray(IN_HEADER_BYTES, Math.min(h.len, buf.length));
    switch (h.opcode) {
      case Op.FORGET:
        this.safeForget(h.nodeid, body.readBigUInt64LE(0));
        return;
      case Op.BATCH_FORGET: {
        const count = body.readUInt32LE(0);
        for (let i = 0, at = 8; i < count && at + 16 <= body.length; i++, at += 16) {
          this.safeForget(body.readBigUInt64LE(at), body.readBigUInt64LE(at + 8));
        }
        return;
      }
      case Op.INTERRUPT: {
        const target = body.readBigUInt64LE(0);
        const f = this.inFlight.get(target);
        if (!f) {
          this.replyError(h.unique, E.EAGAIN); // not seen yet (or done): the kernel re-sends if needed
        } else if (INTERRUPTIBLE.has(f.opcode) && !f.replied) {
          this.replyError(target, E.EINTR);
        }
        return;
      }
      case Op.INIT:
        this.init(h, body);
        return;
      case Op.DESTROY:
        if (!this.destroyed) {
          this.destroyed = true;
          try {
            this.fs.destroy?.();
          } catch {
            /* nothing to do */
          }
        }
        this.replyOk(h.unique);
        return;
    }
    this.inFlight.set(h.unique, { opcode: h.opcode, replied: false, startMs: performance.now() });
    const startNs = STATS ? process.hrtime.bigint() : 0n;
    this.serve(h, body).then(
      (payload) => {
        if (payload === NO_REPLY) return;
        this.writeReply(h.unique, 0, payload);
        if (STATS) recordOp(h.opcode, startNs);
      },
      (err: unknown) => {
        const errno = errnoOf(err);
        if (errno === E.EIO) {
          log.warn(`${OP_NAMES[h.opcode] ?? h.opcode} node ${h.nodeid}: ${(err as Error)?.message ?? String(err)}`);
        }
        this.replyError(h.unique, errno);
        if (STATS) recordOp(h.opcode, startNs, true);
      },
    );
  }

  private safeForget(nodeid: bigint, n: bigint): void {
    try {
      this.fs.forget(nodeid, n);
    } catch (err) {
      log.warn(`forget ${nodeid}: ${(err as Error).message}`);
    }
  }

  private init(h: InHeader, body: Buffer): void {
    const major = body.readUInt32LE(0);
    const minor = body.readUInt32LE(4);
    const kernelReadahead = body.readUInt32LE(8);
    const kernelFlags = body.readUInt32LE(12);
    if (major !== FUSE_KERNEL_VERSION || minor < FUSE_MIN_MINOR_VERSION) {
      log.error(`kernel FUSE protocol ${major}.${minor} is not supported (need ${FUSE_KERNEL_VERSION}.${FUSE_MIN_MINOR_VERSION}+)`);
      this.replyError(h.unique, E.EPROTO);
      return;
    }
    const want =
      InitFlag.ASYNC_READ |
      InitFlag.ATOMIC_O_TRUNC |
      InitFlag.BIG_WRITES |
      InitFlag.DO_READDIRPLUS |
      InitFlag.READDIRPLUS_AUTO |
      InitFlag.PARALLEL_DIROPS |
      InitFlag.MAX_PAGES |
      InitFlag.ABORT_ERROR |
      InitFlag.CACHE_SYMLINKS;
    const flags = (want & kernelFlags) >>> 0;
    const ourMinor = Math.min(minor, FUSE_KERNEL_MINOR_VERSION);
    const maxReadahead = Math.min(kernelReadahead, MAX_READAHEAD_BYTES);
    const out = Buffer.alloc(INIT_OUT_BYTES);
    out.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
    out.writeUInt32LE(ourMinor, 4);
    out.writeUInt32LE(maxReadahead, 8);
    out.writeUInt32LE(flags, 12);
    out.writeUInt16LE(MAX_BACKGROUND, 16);
    out.writeUInt16LE(CONGESTION_THRESHOLD, 18);
    out.writeUInt32LE(MAX_WRITE_BYTES, 20);
    out.writeUInt32LE(1, 24); // time_gran: nanoseconds
    out.writeUInt16LE(MAX_WRITE_BYTES / 4096, 28); // max_pages
    this.negotiated = { minor: ourMinor, flags, maxWrite: MAX_WRITE_BYTES, maxReadahead };
    try {
      this.fs.init?.();
    } catch (err) {
      log.warn(`init: ${(err as Error).message}`);
    }
    this.replyOk(h.unique, out);
    log.debug(`negotiated FUSE ${FUSE_KERNEL_VERSION}.${ourMinor} (kernel ${major}.${minor}) flags 0x${flags.toString(16)}`);
    void this.afterInit();
  }

  /**
   * Learns the connection number (the minor of st_dev) and raises the kernel's read-ahead, which
   * it caps at the bdi default (128 KiB) whatever we negotiate; root can raise it in sysfs. The
   * stat goes through our own mount, so it must be asynchronous: a synchronous one would block
   * the very thread that has to answer it.
   */
  private async afterInit(): Promise<void> {
    try {
      const dev = (await statAsync(this.mountpoint)).dev;
      const major = Math.floor(dev / 256) & 0xfff;
      const minor = (dev & 0xff) | (Math.floor(dev / 0x100000) & ~0xff);
      this.connection = { major, minor };
      if (this.opts.readAheadBytes) {
        await writeFile(`/sys/class/bdi/${major}:${minor}/read_ahead_kb`, String(Math.floor(this.opts.readAheadBytes / 1024)));
      }
    } catch (err) {
      log.debug(`after init: ${(err as Error).message}`);
    }
  }

  /** Aborts the kernel connection (fusectl), for when a lazy unmount leaves it open. */
  private async abortConnection(): Promise<void> {
    if (!this.connection) return;
    const dir = '/sys/fs/fuse/connections';
    try {
      if (!existsSync(`${dir}/${this.connection.minor}`)) await runQuiet('mount', ['-t', 'fusectl', 'none', dir]);
      await writeFile(`${dir}/${this.connection.minor}/abort`, '1');
    } catch (err) {
      log.debug(`abort connection ${this.connection.minor}: ${(err as Error).message}`);
    }
  }

  private async serve(h: InHeader, body: Buffer): Promise<Buffer[] | typeof NO_REPLY> {
    const fs = this.fs;
    const ctx: Context = { unique: h.unique, uid: h.uid, gid: h.gid, pid: h.pid };
    const node = h.nodeid;
    switch (h.opcode) {
      case Op.LOOKUP: {
        const [name] = readCString(body, 0);
        return [entryBuf(await fs.lookup(ctx, node, name))];
      }
      case Op.GETATTR: {
        const flags = body.readUInt32LE(0);
        const fh = flags & 1 ? body.readBigUInt64LE(8) : undefined;
        const r = await fs.getattr(ctx, node, fh);
        return [attrBuf(r)];
      }
      case Op.SETATTR: {
        const changes: SetattrIn = {
          valid: body.readUInt32LE(0),
          fh: body.readBigUInt64LE(8),
          size: Number(body.readBigUInt64LE(16)),
          atimeNs: body.readBigUInt64LE(32) * 1_000_000_000n + BigInt(body.readUInt32LE(56)),
          mtimeNs: body.readBigUInt64LE(40) * 1_000_000_000n + BigInt(body.readUInt32LE(60)),
          mode: body.readUInt32LE(68),
          uid: body.readUInt32LE(76),
          gid: body.readUInt32LE(80),
        };
        return [attrBuf(await fs.setattr(ctx, node, changes))];
      }
      case Op.READLINK: {
        if (!fs.readlink) throw new FuseError(E.ENOSYS);
        return [await fs.readlink(ctx, node)];
      }
      case Op.SYMLINK: {
        if (!fs.symlink) throw new FuseError(E.EPERM);
        const [name, at] = readCString(body, 0);
        const [target] = readCString(body, at);
        return [entryBuf(await fs.symlink(ctx, node, name, target))];
      }
      case Op.MKNOD:
      case Op.LINK:
        throw new FuseError(E.EPERM, 'no device nodes or hard links');
      case Op.MKDIR: {
        const mode = body.readUInt32LE(0);
        const [name] = readCString(body, 8);
        return [entryBuf(await fs.mkdir(ctx, node, name, mode))];
      }
      case Op.UNLINK: {
        const [name] = readCString(body, 0);
        await fs.unlink(ctx, node, name);
        return [];
      }
      case Op.RMDIR: {
        const [name] = readCString(body, 0);
        await fs.rmdir(ctx, node, name);
        return [];
      }
      case Op.RENAME:
      case Op.RENAME2: {
        const newParent = body.readBigUInt64LE(0);
        const flags = h.opcode === Op.RENAME2 ? body.readUInt32LE(8) : 0;
        const [oldName, at] = readCString(body, h.opcode === Op.RENAME2 ? 16 : 8);
        const [newName] = readCString(body, at);
        await fs.rename(ctx, node, oldName, newParent, newName, flags);
        return [];
      }
      case Op.OPEN:
        return [openBuf(await fs.open(ctx, node, body.readUInt32LE(0)))];
      case Op.CREATE: {
        const flags = body.readUInt32LE(0);
        const mode = body.readUInt32LE(4);
        const [name] = readCString(body, 16);
        const r = await fs.create(ctx, node, name, mode, flags);
        return [entryBuf(r.entry), openBuf(r.open)];
      }
      case Op.READ: {
        if (body.length < READ_IN_BYTES) throw new FuseError(E.EINVAL);
        const fh = body.readBigUInt64LE(0);
        const offset = Number(body.readBigUInt64LE(8));
        const size = body.readUInt32LE(16);
        const data = await fs.read(ctx, node, fh, offset, size);
        return [data.length > size ? data.subarray(0, size) : data];
      }
      case Op.WRITE: {
        if (body.length < WRITE_IN_BYTES) throw new FuseError(E.EINVAL);
        const fh = body.readBigUInt64LE(0);
        const offset = Number(body.readBigUInt64LE(8));
        const size = body.readUInt32LE(16);
        const data = body.subarray(WRITE_IN_BYTES, WRITE_IN_BYTES + size);
        if (data.length !== size) throw new FuseError(E.EINVAL, `write of ${size} bytes carried ${data.length}`);
        const n = await fs.write(ctx, node, fh, offset, data);
        const out = Buffer.alloc(WRITE_OUT_BYTES);
        out.writeUInt32LE(n, 0);
        return [out];
      }
      case Op.STATFS:
        return [statfsBuf(await fs.statfs(ctx, node))];
      case Op.RELEASE:
        await fs.release(ctx, node, body.readBigUInt64LE(0), body.readUInt32LE(8));
        return [];
      case Op.FSYNC:
        await fs.fsync(ctx, node, body.readBigUInt64LE(0));
        return [];
      case Op.FLUSH:
        await fs.flush(ctx, node, body.readBigUInt64LE(0));
        return [];
      case Op.OPENDIR:
        return [openBuf(await fs.opendir(ctx, node, body.readUInt32LE(0)))];
      case Op.READDIR:
      case Op.READDIRPLUS: {
        const fh = body.readBigUInt64LE(0);
        const offset = body.readBigUInt64LE(8);
        const size = body.readUInt32LE(16);
        const filler = new Filler(size, h.opcode === Op.READDIRPLUS);
        await fs.readdir(ctx, node, fh, offset, filler);
        return [filler.result()];
      }
      case Op.RELEASEDIR:
        await fs.releasedir(ctx, node, body.readBigUInt64LE(0));
        return [];
      case Op.FSYNCDIR:
        return [];
      case Op.ACCESS:
        if (fs.access) await fs.access(ctx, node, body.readUInt32LE(0));
        return [];
      default:
        if (NOT_SUPPORTED.has(h.opcode)) throw new FuseError(E.ENOSYS);
        log.debug(`unknown opcode ${h.opcode}`);
        throw new FuseError(E.ENOSYS);
    }
  }
}

const NO_REPLY = Symbol('no reply');
/** Replies up to this size are copied into one buffer (a read's data is written from where it lies). */
const SMALL_REPLY_BYTES = 8192;

function writeOutHeader(b: Buffer, len: number, errno: number, unique: bigint): void {
  b.writeUInt32LE(len, 0);
  b.writeInt32LE(-errno, 4);
  b.writeBigUInt64LE(unique, 8);
}

/**
 * EGGSFS_FUSE_STATS=1: per-opcode counts and service times (answers and errors apart), and the
 * distribution of named phases of requests (recordPhase: a close's descriptor scan, its link),
 * logged when the session ends.
 */
export const STATS = process.env.EGGSFS_FUSE_STATS === '1';
/** Per opcode, and per opcode + ERROR_STATS_KEY for requests answered with an error. */
const opStats = new Map<number, { count: number; totalUs: number }>();
const ERROR_STATS_KEY = 1 << 16;
/** Samples kept per phase (the first ones). */
const MAX_PHASE_SAMPLES = 100_000;
const phaseUs = new Map<string, number[]>();
/** Records how long a phase took since `startMs` (performance.now()); only with STATS. */
export function recordPhase(name: string, startMs: number): void {
  let a = phaseUs.get(name);
  if (!a) phaseUs.set(name, (a = []));
  if (a.length < MAX_PHASE_SAMPLES) a.push((performance.now() - startMs) * 1000);
}
function recordOp(opcode: number, startNs: bigint, failed = false): void {
  const key = failed ? opcode + ERROR_STATS_KEY : opcode;
  const s = opStats.get(key) ?? { count: 0, totalUs: 0 };
  s.count++;
  s.totalUs += Number(process.hrtime.bigint() - startNs) / 1000;
  opStats.set(key, s);
}
export function logOpStats(): void {
  if (!STATS) return;
  for (const [name, a] of phaseUs) {
    a.sort((x, y) => x - y);
    const at = (q: number) => a[Math.min(a.length - 1, Math.floor(a.length * q))]!.toFixed(1);
    const meanUs = a.reduce((x, y) => x + y, 0) / a.length;
    log.info(`${name}: ${a.length} samples, median ${at(0.5)} us (p10 ${at(0.1)}, p90 ${at(0.9)}, p99 ${at(0.99)}, mean ${meanUs.toFixed(1)})`);
  }
  for (const [key, s] of [...opStats].sort((a, b) => b[1].count - a[1].count)) {
    const op = key % ERROR_STATS_KEY;
    const what = key >= ERROR_STATS_KEY ? ' answered with an error' : '';
    log.info(`${OP_NAMES[op] ?? op}: ${s.count} requests${what}, ${(s.totalUs / s.count).toFixed(1)} us each`);
  }
}

function entryBuf(e: Entry): Buffer {
  const b = Buffer.alloc(ENTRY_OUT_BYTES);
  encodeEntryOut(b, 0, e);
  return b;
}

function attrBuf(r: AttrReply): Buffer {
  const b = Buffer.alloc(ATTR_OUT_BYTES);
  encodeAttrOut(b, 0, r.attr, r.ttlMs);
  return b;
}

function openBuf(o: OpenResult): Buffer {
  const b = Buffer.alloc(OPEN_OUT_BYTES);
  b.writeBigUInt64LE(o.fh, 0);
  let flags = 0;
  if (o.directIo) flags |= 1 << 0;
  if (o.keepCache) flags |= 1 << 1;
  if (o.nonSeekable) flags |= 1 << 2;
  if (o.cacheDir) flags |= 1 << 3;
  b.writeUInt32LE(flags, 8);
  return b;
}

function statfsBuf(s: StatfsReply): Buffer {
  const b = Buffer.alloc(STATFS_OUT_BYTES);
  b.writeBigUInt64LE(s.blocks, 0);
  b.writeBigUInt64LE(s.bfree, 8);
  b.writeBigUInt64LE(s.bavail, 16);
  b.writeBigUInt64LE(s.files, 24);
  b.writeBigUInt64LE(s.ffree, 32);
  b.writeUInt32LE(s.bsize, 40);
  b.writeUInt32LE(s.namelen, 44);
  b.writeUInt32LE(s.frsize, 48);
  return b;
}

class Filler implements DirFiller {
  private readonly buf: Buffer;
  private used = 0;
  constructor(
    private readonly size: number,
    readonly plus: boolean,
  ) {
    this.buf = Buffer.alloc(size);
  }
  add(item: DirItem): boolean {
    const name = Buffer.from(item.name, 'utf8');
    const need = direntBytes(name.length, this.plus);
    if (this.used + need > this.size) return false;
    let at = this.used;
    if (this.plus) {
      if (item.entry) encodeEntryOut(this.buf, at, item.entry);
      // else: all zeros, nodeid 0 = "no attributes for this one", the kernel looks it up later
      at += ENTRY_OUT_BYTES;
    }
    this.buf.writeBigUInt64LE(item.ino, at);
    this.buf.writeBigUInt64LE(item.nextOffset, at + 8);
    this.buf.writeUInt32LE(name.length, at + 16);
    this.buf.writeUInt32LE((item.mode & S_IFMT) >>> 12, at + 20);
    name.copy(this.buf, at + DIRENT_HEADER_BYTES);
    this.used += need;
    return true;
  }
  result(): Buffer {
    return this.buf.subarray(0, this.used);
  }
}
