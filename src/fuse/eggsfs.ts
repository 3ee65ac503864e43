// EggsFS as a FUSE filesystem, on the client library. Files are immutable: a file is written once,
// sequentially, through the handle that created it, and appears in its directory when the last
// writer handle is released (not at flush: the shell's `echo x > f` flushes a dup'ed descriptor
// before it writes). Until then only the writing process can see the name; anyone else gets
// ENOENT, or, once the writer has closed it, waits (bounded) for the link to land.
import assert from 'node:assert/strict';
import { constants as osConstants } from 'node:os';
import type { EggsClient, DirEntry } from '../client/index.js';
import type { FileWriter } from '../client/file-writer.js';
import { ROOT_DIR_INODE_ID, isDirectory, inodeType, InodeType } from '../proto/ids.js';
import { EGGS_EPOCH_NS, unixNowNs } from '../proto/time.js';
import { logger } from '../util/log.js';
import {
  type AttrReply,
  type Attr,
  type Context,
  type DirFiller,
  type Entry,
  FuseError,
  type FuseFilesystem,
  type OpenResult,
  type SetattrIn,
  type StatfsReply,
  FUSE_ROOT_ID,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  SetattrValid,
  STATS,
  recordPhase,
} from './kernel.js';
import { ConstructPool } from './construct-pool.js';
import { DirCache } from './dir-cache.js';
import { StatAhead } from './stat-ahead.js';
import { HeldScanner, TgidCache } from './procfs.js';
import { SequentialReader } from './reader.js';

const E = osConstants.errno;
const log = logger('fuse');

/** Names can change under us (other clients): the kernel re-checks them this often. */
export const ENTRY_TTL_MS = 1_000;
/** Directory attributes (mtime) change with their entries. */
export const DIR_ATTR_TTL_MS = 1_000;
/** A linked file never changes: its attributes can be cached for long. */
export const FILE_ATTR_TTL_MS = 3_600_000;
/** How long a lookup/rename/readdir waits for a closed file's link to land. */
export const LINK_WAIT_MS = 10_000;
/** Attributes of linked files kept beyond the kernel's references (they never change). */
const MAX_CACHED_FILE_ATTRS = 65_536;
/** (directory, name) → file id pairs remembered so that unlink skips its LOOKUP round trip. */
const MAX_CACHED_CHILD_IDS = 65_536;
/** statfs asks shuckle at most this often. */
const STATFS_CACHE_MS = 2_000;
/** Stats issued at once to fill one readdirplus reply. */
const READDIRPLUS_BATCH = 32;
/** Entries in one readdirplus reply whose attributes take a STAT, at most. */
const READDIRPLUS_MAX_STATS = 64;
/** Entries from a readdirplus reply's first whose file attributes are fetched ahead (the next replies'). */
const READDIRPLUS_AHEAD = 256;
/** Zeros written per step when a write or truncate leaves a hole. */
const ZERO_STEP_BYTES = 1 << 20;
const ZEROS = Buffer.alloc(ZERO_STEP_BYTES);
/** Synthetic node ids for files still being written: below every real id (type bits 0). */
const FIRST_SYNTHETIC_NODEID = 2n;
const STATFS_BLOCK_BYTES = 4096;
const NAME_MAX_BYTES = 255;
const FILE_MODE = S_IFREG | 0o644;
const DIR_MODE = S_IFDIR | 0o755;
const SYMLINK_MODE = S_IFLNK | 0o777;
const O_ACCMODE = 3;
const O_TRUNC = 0o1000;

type Kind = 'directory' | 'file' | 'symlink';

interface Node {
  readonly nodeid: bigint;
  /** The EggsFS inode id; 0n while a pending file is not linked yet. */
  id: bigint;
  kind: Kind;
  nlookup: bigint;
  size: number;
  mtimeNs: bigint;
  /** When the attributes were fetched (ms, monotonic); files never go stale. */
  fetchedAtMs: number;
  pending?: Pending;
}

interface Pending {
  readonly node: Node;
  parentId: bigint;
  name: string;
  /** Made just after CREATE is answered (see create); every use waits on `chain` first. */
  writer: FileWriter | undefined;
  readonly creatorTgid: number;
  /** Bytes accepted so far (the only offset a write may start at). */
  written: number;
  handles: number;
  /** A close (flush) happened since the last write: the file is probably complete. */
  flushed: boolean;
  unlinked: boolean;
  /** Serialises writes and truncates. */
  chain: Promise<void>;
  failure?: Error;
  /** Set at the last close: resolves once the file is linked (or given up). */
  settled?: Promise<void>;
  linkError?: Error;
  settledResolve: () => void;
  settledPromise: Promise<void>;
}

type Handle =
  | { kind: 'write'; pending: Pending }
  | { kind: 'read'; node: Node; reader: SequentialReader }
  | { kind: 'dir'; dirId: bigint; nodeid: bigint; entries?: DirEntry[] };

const monoMs = () => performance.now();

function kindOf(id: bigint): Kind {
  const t = inodeType(id);
  if (t === InodeType.DIRECTORY) return 'directory';
  if (t === InodeType.SYMLINK) return 'symlink';
  if (t === InodeType.FILE) return 'file';
  throw new FuseError(E.EIO, `inode 0x${id.toString(16)} has the reserved type`);
}

function modeOf(kind: Kind): number {
  return kind === 'directory' ? DIR_MODE : kind === 'symlink' ? SYMLINK_MODE : FILE_MODE;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => resolve(undefined), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

export interface EggsFsOptions {
  uid?: number;
  gid?: number;
  /** Absolute mountpoint: lets a close link the file at once when no descriptor is left. */
  mountpoint?: string;
}

export class EggsFs implements FuseFilesystem {
  private readonly nodes = new Map<bigint, Node>();
  private readonly pendingByName = new Map<string, Pending>();
  /** Pending files per creating process (a close batches its scan when its process writes others). */
  private readonly pendingPerTgid = new Map<number, number>();
  private readonly handles = new Map<bigint, Handle>();
  /** id → attributes of files (immutable), oldest first; bounded. */
  private readonly fileAttrs = new Map<bigint, { size: number; mtimeNs: bigint }>();
  private readonly childIds = new Map<string, bigint>();
  private nextFh = 1n;
  private nextSynthetic = FIRST_SYNTHETIC_NODEID;
  private statfsCache: { atMs: number; value: StatfsReply } | undefined;
  private readonly uid: number;
  private readonly gid: number;
  /** Present with a mountpoint: decides whether a close was the last one (see flush). */
  private readonly heldScanner: HeldScanner | undefined;
  private readonly tgids = new TgidCache();
  /** Whole listings of busy directories: lookups answered without a shard round trip. */
  private readonly dirCache: DirCache;
  /** Transient files constructed ahead, so that a close's link need not wait for one. */
  private readonly constructPool: ConstructPool;
  /** File attributes fetched ahead of a walk through a directory (lookups, readdirplus). */
  private readonly statAhead: StatAhead;

  constructor(
    private readonly client: EggsClient,
    opts: EggsFsOptions = {},
  ) {
    this.uid = opts.uid ?? 0;
    this.gid = opts.gid ?? 0;
    this.heldScanner = opts.mountpoint ? new HeldScanner(opts.mountpoint.replace(/\/+$/, '') + '/') : undefined;
    this.dirCache = new DirCache(ENTRY_TTL_MS, (dirId) => this.listDir(dirId), monoMs, (dirId, err) =>
      log.debug(`lookahead of directory 0x${dirId.toString(16)} failed: ${err.message}`),
    );
    this.constructPool = new ConstructPool((dirId) => this.client.constructFile(dirId), monoMs);
    this.statAhead = new StatAhead(
      async (id) => {
        const st = await this.client.statId(id);
        this.cacheFileAttrs(id, st.size, st.mtime + EGGS_EPOCH_NS);
      },
      (id) => this.fileAttrs.has(id),
    );
    this.nodes.set(FUSE_ROOT_ID, { nodeid: FUSE_ROOT_ID, id: ROOT_DIR_INODE_ID, kind: 'directory', nlookup: 1n, size: 0, mtimeNs: 0n, fetchedAtMs: -Infinity });
  }

  /** Counts, for tests and logs. */
  stats(): { nodes: number; handles: number; pending: number; cachedDirs: number; cachedEntries: number } {
    const d = this.dirCache.stats();
    return { nodes: this.nodes.size, handles: this.handles.size, pending: this.pendingByName.size, cachedDirs: d.dirs, cachedEntries: d.entries };
  }

  // ---- nodes ---------------------------------------------------------------------------------

  private nodeidOf(id: bigint): bigint {
    return id === ROOT_DIR_INODE_ID ? FUSE_ROOT_ID : id;
  }

  private node(nodeid: bigint): Node {
    const n = this.nodes.get(nodeid);
    if (n) return n;
    // Not in the table (should not happen: the kernel only uses ids we gave it); real ids are
    // their own node ids, so serve it anyway.
    if (nodeid >= 1n << 61n) {
      const fresh: Node = { nodeid, id: nodeid, kind: kindOf(nodeid), nlookup: 0n, size: 0, mtimeNs: 0n, fetchedAtMs: -Infinity };
      this.nodes.set(nodeid, fresh);
      return fresh;
    }
    throw new FuseError(E.ESTALE, `unknown node ${nodeid}`);
  }

  /** The EggsFS id of a directory node. */
  private dirId(nodeid: bigint): bigint {
    const n = this.node(nodeid);
    if (n.kind !== 'directory') throw new FuseError(E.ENOTDIR);
    return n.id;
  }

  private attrOf(n: Node): Attr {
    const id = n.id === 0n ? n.nodeid : n.id;
    return { ino: this.nodeidOf(id), size: n.pending && n.id === 0n ? n.pending.written : n.size, mode: modeOf(n.kind), nlink: 1, uid: this.uid, gid: this.gid, mtimeNs: n.mtimeNs, blksize: 1 << 20 };
  }

  private attrTtl(n: Node): number {
    if (n.pending && n.id === 0n) return 0;
    return n.kind === 'directory' ? DIR_ATTR_TTL_MS : FILE_ATTR_TTL_MS;
  }

  /** `entryTtlMs`: less than ENTRY_TTL_MS for a name answered from a listing fetched earlier. */
  private entryOf(n: Node, entryTtlMs = ENTRY_TTL_MS): Entry {
    n.nlookup++;
    const pending = n.pending !== undefined && n.id === 0n;
    return { nodeid: n.nodeid, generation: 0n, attr: this.attrOf(n), entryTtlMs: pending ? 0 : entryTtlMs, attrTtlMs: this.attrTtl(n) };
  }

  /** The node for an EggsFS id, with attributes fresh enough to hand to the kernel. */
  private async known(id: bigint): Promise<Node> {
    const nodeid = this.nodeidOf(id);
    let n = this.nodes.get(nodeid);
    if (!n) {
      n = { nodeid, id, kind: kindOf(id), nlookup: 0n, size: 0, mtimeNs: 0n, fetchedAtMs: -Infinity };
      this.nodes.set(nodeid, n);
    }
    await this.refresh(n);
    return n;
  }

  private async refresh(n: Node): Promise<void> {
    if (n.id === 0n) return; // pending: attributes are ours
    if (this.fresh(n)) return;
    const ahead = n.kind === 'directory' ? undefined : this.statAhead.waitFor(n.id);
    if (ahead) await ahead;
    const cached = n.kind === 'directory' ? undefined : this.fileAttrs.get(n.id);
    if (cached) {
      n.size = cached.size;
      n.mtimeNs = cached.mtimeNs;
    } else {
      const st = await this.client.statId(n.id);
      n.size = st.size;
      n.mtimeNs = st.mtime + EGGS_EPOCH_NS;
      if (n.kind !== 'directory') this.cacheFileAttrs(n.id, n.size, n.mtimeNs);
    }
    n.fetchedAtMs = monoMs();
  }

  /**
   * A directory's entries; the file attributes the listing carries (READ_DIR_WITH_ATTRS) are kept,
   * so that readdirplus and the lookups after a listing need no STAT for them.
   */
  private async *listDir(dirId: bigint): AsyncIterable<DirEntry> {
    for await (const e of this.client.readDirWithAttrs(dirId)) {
      if (e.attrs) this.cacheFileAttrs(e.id, e.attrs.size, e.attrs.mtime + EGGS_EPOCH_NS);
      yield e;
    }
  }

  /** Whether a node's attributes are recent enough to hand out (a file's never change once fetched). */
  private fresh(n: Node): boolean {
    return n.kind === 'directory' ? monoMs() - n.fetchedAtMs < DIR_ATTR_TTL_MS : n.fetchedAtMs > -Infinity;
  }

  /** Whether a node's attributes can be given without a STAT. */
  private attrsAtHand(id: bigint): boolean {
    const n = this.nodes.get(this.nodeidOf(id));
    return (n !== undefined && this.fresh(n)) || (!isDirectory(id) && this.fileAttrs.has(id));
  }

  /** Remembers which file a name pointed at (a hint: a stale one costs a retry, never a wrong unlink). */
  private rememberChild(parentId: bigint, name: string, id: bigint): void {
    if (isDirectory(id)) return;
    this.childIds.set(this.key(parentId, name), id);
    if (this.childIds.size > MAX_CACHED_CHILD_IDS) this.childIds.delete(this.childIds.keys().next().value!);
  }

  private cacheFileAttrs(id: bigint, size: number, mtimeNs: bigint): void {
    this.fileAttrs.set(id, { size, mtimeNs });
    if (this.fileAttrs.size > MAX_CACHED_FILE_ATTRS) this.fileAttrs.delete(this.fileAttrs.keys().next().value!);
  }

  /** Drops a node the kernel holds no reference to (it was only looked at). */
  private dropIfUnreferenced(n: Node): void {
    if (n.nlookup <= 0n && !n.pending && n.nodeid !== FUSE_ROOT_ID) this.nodes.delete(n.nodeid);
  }

  // ---- pending files -------------------------------------------------------------------------

  private key(parentId: bigint, name: string): string {
    return `${parentId.toString(16)}/${name}`;
  }

  private addPending(key: string, p: Pending): void {
    assert(!this.pendingByName.has(key), 'one pending file per name');
    this.pendingByName.set(key, p);
    this.pendingPerTgid.set(p.creatorTgid, (this.pendingPerTgid.get(p.creatorTgid) ?? 0) + 1);
  }

  /** Forgets a pending file under its name, if it is still the one there. */
  private dropPending(key: string, p: Pending): void {
    if (this.pendingByName.get(key) !== p) return;
    this.pendingByName.delete(key);
    const left = (this.pendingPerTgid.get(p.creatorTgid) ?? 0) - 1;
    assert(left >= 0, 'pending files counted per process');
    if (left === 0) this.pendingPerTgid.delete(p.creatorTgid);
    else this.pendingPerTgid.set(p.creatorTgid, left);
  }

  /** Waits (bounded) until a closed pending file has been linked; false if it is still open. */
  private async awaitLinked(p: Pending): Promise<boolean> {
    if (!p.settled && !p.flushed) return false;
    const done = await withTimeout(p.settledPromise.then(() => true), LINK_WAIT_MS);
    return done === true;
  }

  /** Lets closed files in a directory land before the directory is listed. */
  private async settleDir(parentId: bigint): Promise<void> {
    const waits: Promise<boolean>[] = [];
    for (const p of this.pendingByName.values()) if (p.parentId === parentId && (p.flushed || p.settled)) waits.push(this.awaitLinked(p));
    if (waits.length) await Promise.all(waits);
  }

  /** The pending file under a name, as seen by the calling process (undefined: look at the server). */
  private async pendingFor(ctx: Context, parentId: bigint, name: string): Promise<Pending | undefined> {
    const p = this.pendingByName.get(this.key(parentId, name));
    if (!p) return undefined;
    if (!p.settled && this.tgids.of(ctx.pid) === p.creatorTgid) return p;
    if (await this.awaitLinked(p)) return undefined;
    if (this.pendingByName.get(this.key(parentId, name)) !== p) return undefined;
    throw new FuseError(E.ENOENT); // still being written by someone else: not there yet
  }

  private async settle(p: Pending): Promise<void> {
    try {
      await p.chain;
      if (p.unlinked || p.failure) {
        await p.writer?.abort();
        if (p.failure && !p.unlinked) log.warn(`${p.name}: not linked, a write failed: ${p.failure.message}`);
        return;
      }
      const id = await p.writer!.close();
      const n = p.node;
      n.id = id;
      n.size = p.written;
      n.mtimeNs = unixNowNs();
      n.fetchedAtMs = monoMs();
      // Also known under its real id, for lookups that return it.
      this.cacheFileAttrs(id, p.written, n.mtimeNs);
      this.rememberChild(p.parentId, p.name, id);
      if (!p.unlinked) this.dirCache.linked(p.parentId, p.name, id);
    } catch (err) {
      // The link may or may not have landed.
      this.dirCache.invalidate(p.parentId);
      this.constructPool.drop(p.parentId);
      p.linkError = err as Error;
      log.warn(`${p.name}: could not link the file: ${(err as Error).message}`);
    } finally {
      this.dropPending(this.key(p.parentId, p.name), p);
      p.node.pending = undefined;
      if (p.node.nlookup <= 0n) this.nodes.delete(p.node.nodeid);
      p.settledResolve();
    }
  }

  /** Appends zeros up to `offset` (a write past the end, or a truncate that extends). */
  private async padTo(p: Pending, offset: number): Promise<void> {
    while (p.written < offset) {
      const n = Math.min(ZERO_STEP_BYTES, offset - p.written);
      await p.writer!.write(ZEROS.subarray(0, n));
      p.written += n;
    }
  }

  private enqueue(p: Pending, op: () => Promise<void>): Promise<void> {
    const run = p.chain.then(async () => {
      if (p.failure) throw p.failure;
      try {
        await op();
      } catch (err) {
        // A refused request (EROFS for a write out of order) leaves the file as it was; anything
        // else (the cluster failed a span) means the file cannot be completed.
        if (!(err instanceof FuseError)) p.failure = err as Error;
        throw err;
      }
    });
    p.chain = run.catch(() => {});
    return run;
  }

  // ---- FuseFilesystem ------------------------------------------------------------------------

  async lookup(ctx: Context, parent: bigint, name: string): Promise<Entry> {
    if (Buffer.byteLength(name) > NAME_MAX_BYTES) throw new FuseError(E.ENAMETOOLONG);
    const parentId = this.dirId(parent);
    const p = await this.pendingFor(ctx, parentId, name);
    if (p) return this.entryOf(p.node);
    const cached = this.dirCache.probe(parentId, name);
    if (cached) {
      // As stale as the kernel's own entry cache may be: never older than ENTRY_TTL_MS in total.
      if (cached.id === null) throw new FuseError(E.ENOENT);
      this.statAhead.want(cached.ahead);
      this.rememberChild(parentId, name, cached.id);
      return this.entryOf(await this.known(cached.id), cached.ttlMs);
    }
    this.dirCache.shardLookup(parentId);
    const { id } = await this.client.lookupAt(parentId, name);
    this.rememberChild(parentId, name, id);
    return this.entryOf(await this.known(id));
  }

  forget(nodeid: bigint, nlookup: bigint): void {
    if (nodeid === FUSE_ROOT_ID) return;
    const n = this.nodes.get(nodeid);
    if (!n) return;
    n.nlookup -= nlookup;
    if (n.nlookup <= 0n && !n.pending) this.nodes.delete(nodeid);
  }

  async getattr(_ctx: Context, nodeid: bigint): Promise<AttrReply> {
    const n = this.node(nodeid);
    await this.refresh(n);
    return { attr: this.attrOf(n), ttlMs: this.attrTtl(n) };
  }

  async setattr(_ctx: Context, nodeid: bigint, c: SetattrIn): Promise<AttrReply> {
    const n = this.node(nodeid);
    if (c.valid & SetattrValid.SIZE) {
      if (n.kind === 'directory') throw new FuseError(E.EISDIR);
      const p = n.pending;
      if (p && n.id === 0n && !p.settled) {
        await this.enqueue(p, async () => {
          if (c.size < p.written) throw new FuseError(E.EROFS, `cannot shrink a file being written (${p.written} → ${c.size} bytes)`);
          await this.padTo(p, c.size);
        });
      } else {
        await this.refresh(n);
        if (c.size !== n.size) throw new FuseError(E.EROFS, 'files are immutable once written');
      }
    }
    // Mode, owner and times are not stored: accepted without effect, so that cp -p, tar and rsync
    // carry on (the result they check, the data, is right).
    await this.refresh(n);
    return { attr: this.attrOf(n), ttlMs: this.attrTtl(n) };
  }

  async readlink(_ctx: Context, nodeid: bigint): Promise<Buffer> {
    const n = this.node(nodeid);
    if (n.kind !== 'symlink') throw new FuseError(E.EINVAL);
    await this.refresh(n);
    return this.client.readRange(n.id, 0, n.size);
  }

  async mkdir(_ctx: Context, parent: bigint, name: string): Promise<Entry> {
    if (Buffer.byteLength(name) > NAME_MAX_BYTES) throw new FuseError(E.ENAMETOOLONG);
    const parentId = this.dirId(parent);
    if (this.pendingByName.has(this.key(parentId, name))) throw new FuseError(E.EEXIST);
    const id = await this.mutating(parentId, () => this.client.mkdirAt(parentId, name));
    this.dirCache.linked(parentId, name, id);
    const n = await this.known(id);
    return this.entryOf(n);
  }

  async unlink(ctx: Context, parent: bigint, name: string): Promise<void> {
    const parentId = this.dirId(parent);
    const key = this.key(parentId, name);
    const p = this.pendingByName.get(key);
    if (p && !p.settled && !(await this.awaitLinked(p))) {
      // Removed while still being written: it will never be linked.
      p.unlinked = true;
      this.dropPending(key, p);
      return;
    }
    const known = this.childIds.get(key);
    this.childIds.delete(key);
    await this.mutating(parentId, () => (known !== undefined ? this.client.unlinkKnownAt(parentId, name, known) : this.client.unlinkAt(parentId, name)));
    this.dirCache.removed(parentId, name);
  }

  async rmdir(_ctx: Context, parent: bigint, name: string): Promise<void> {
    const parentId = this.dirId(parent);
    await this.mutating(parentId, () => this.client.rmdirAt(parentId, name));
    this.dirCache.removed(parentId, name);
  }

  async rename(_ctx: Context, parent: bigint, name: string, newParent: bigint, newName: string, flags: number): Promise<void> {
    if (flags & RENAME_EXCHANGE) throw new FuseError(E.EINVAL, 'RENAME_EXCHANGE is not supported');
    if (Buffer.byteLength(newName) > NAME_MAX_BYTES) throw new FuseError(E.ENAMETOOLONG);
    const from = this.dirId(parent);
    const to = this.dirId(newParent);
    const p = this.pendingByName.get(this.key(from, name));
    if (p && !(await this.awaitLinked(p)) && this.pendingByName.get(this.key(from, name)) === p) {
      // Still open for writing: the file is not in the directory yet; rename it once linked.
      throw new FuseError(E.EBUSY, `${name} is still being written`);
    }
    if (flags & RENAME_NOREPLACE) {
      const exists = await this.client.lookupAt(to, newName).then(
        () => true,
        () => false,
      );
      if (exists) throw new FuseError(E.EEXIST);
    }
    this.childIds.delete(this.key(from, name));
    this.childIds.delete(this.key(to, newName));
    const moved = this.dirCache.peek(from, name);
    try {
      await this.client.renameAt(from, name, to, newName);
    } catch (err) {
      this.dirCache.invalidate(from);
      this.dirCache.invalidate(to);
      throw err;
    }
    this.dirCache.removed(from, name);
    if (moved !== undefined) this.dirCache.linked(to, newName, moved);
    else this.dirCache.invalidate(to);
  }

  /** Runs a mutation of a directory; a failed one leaves its cached listing unknown. */
  private async mutating<T>(dirId: bigint, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      this.dirCache.invalidate(dirId);
      throw err;
    }
  }

  async open(ctx: Context, nodeid: bigint, flags: number): Promise<OpenResult> {
    const n = this.node(nodeid);
    if (n.kind === 'directory') throw new FuseError(E.EISDIR);
    const p = n.pending;
    if ((flags & O_ACCMODE) !== 0) {
      if (p && n.id === 0n && !p.settled && this.tgids.of(ctx.pid) === p.creatorTgid && !(flags & O_TRUNC && p.written > 0)) {
        p.handles++;
        return this.addHandle({ kind: 'write', pending: p }, { directIo: true });
      }
      throw new FuseError(E.EROFS, 'files are immutable once written');
    }
    if (p && n.id === 0n) {
      if (!(await this.awaitLinked(p)) || n.id === 0n) throw new FuseError(E.EBUSY, 'file is still being written');
    }
    await this.refresh(n);
    return this.addHandle({ kind: 'read', node: n, reader: new SequentialReader(this.client, n.id, n.size) }, { keepCache: true });
  }

  private addHandle(h: Handle, flags: Omit<OpenResult, 'fh'>): OpenResult {
    const fh = this.nextFh++;
    this.handles.set(fh, h);
    return { fh, ...flags };
  }

  async create(ctx: Context, parent: bigint, name: string): Promise<{ entry: Entry; open: OpenResult }> {
    if (Buffer.byteLength(name) > NAME_MAX_BYTES) throw new FuseError(E.ENAMETOOLONG);
    const parentId = this.dirId(parent);
    const key = this.key(parentId, name);
    if (this.pendingByName.has(key)) throw new FuseError(E.EEXIST, `${name} is being written`);
    const node: Node = { nodeid: this.nextSynthetic++, id: 0n, kind: 'file', nlookup: 0n, size: 0, mtimeNs: unixNowNs(), fetchedAtMs: monoMs() };
    let settledResolve!: () => void;
    const settledPromise = new Promise<void>((r) => (settledResolve = r));
    const p: Pending = {
      node,
      parentId,
      name,
      writer: undefined,
      creatorTgid: this.tgids.of(ctx.pid),
      written: 0,
      handles: 1,
      flushed: false,
      unlinked: false,
      chain: Promise.resolve(),
      settledResolve,
      settledPromise,
    };
    // The writer gets a transient file constructed ahead (during the previous create in this
    // shard), and the next one is constructed at once; sending wakes the shard (50-90 µs of this
    // thread here), so it goes out just after the reply: the caller's write or close comes later.
    p.chain = new Promise<void>((resolve) =>
      setImmediate(() => {
        try {
          p.writer = this.client.createFile(parentId, name, { constructed: this.constructPool.take(parentId) });
        } catch (err) {
          p.failure = err as Error;
        }
        resolve();
      }),
    );
    node.pending = p;
    this.nodes.set(node.nodeid, node);
    this.addPending(key, p);
    const entry = this.entryOf(node);
    return { entry, open: this.addHandle({ kind: 'write', pending: p }, { directIo: true }) };
  }

  async read(_ctx: Context, _nodeid: bigint, fh: bigint, offset: number, size: number): Promise<Buffer> {
    const h = this.handles.get(fh);
    if (!h) throw new FuseError(E.EBADF);
    if (h.kind !== 'read') throw new FuseError(h.kind === 'dir' ? E.EISDIR : E.EBADF);
    return h.reader.read(offset, size);
  }

  async write(_ctx: Context, _nodeid: bigint, fh: bigint, offset: number, data: Buffer): Promise<number> {
    const h = this.handles.get(fh);
    if (!h || h.kind !== 'write') throw new FuseError(E.EBADF);
    const p = h.pending;
    if (p.settled) throw new FuseError(E.EROFS, 'the file was closed and is complete');
    await this.enqueue(p, async () => {
      if (offset < p.written) throw new FuseError(E.EROFS, `write at ${offset} but ${p.written} bytes are written: files are written once, in order`);
      await this.padTo(p, offset);
      await p.writer!.write(data);
      p.written += data.length;
      p.flushed = false;
      p.node.mtimeNs = unixNowNs();
    });
    return data.length;
  }

  async flush(ctx: Context, _nodeid: bigint, fh: bigint): Promise<void> {
    const h = this.handles.get(fh);
    if (!h || h.kind !== 'write') return;
    const p = h.pending;
    p.flushed = true;
    await p.chain;
    if (p.failure) throw p.failure; // close() reports the failed write
    // The kernel sends RELEASE (the last close) asynchronously, after close() has returned; so
    // when no descriptor for the file is left, link it now: close() then returns once the file
    // is complete and durable, and reports a failure to link.
    if (p.settled || p.handles !== 1 || !this.heldScanner) return;
    const closer = this.tgids.of(ctx.pid);
    const query = { pids: [closer, p.creatorTgid], name: p.name, nodeid: p.node.nodeid };
    // A process writing several files at once closes them at about the same time: their scans
    // (of that process's descriptors) can share one pass.
    const scanStartMs = STATS ? performance.now() : 0;
    const held = await this.heldScanner.held(query, (this.pendingPerTgid.get(closer) ?? 0) > 1);
    if (STATS) recordPhase('close: descriptor scan', scanStartMs);
    if (held || p.settled || p.handles !== 1) return; // still open, or settled by another close meanwhile
    const settleStartMs = STATS ? performance.now() : 0;
    p.settled = this.settle(p);
    await p.settled;
    if (STATS) recordPhase('close: link (after the scan)', settleStartMs);
    if (p.linkError) throw p.linkError;
  }

  async release(_ctx: Context, _nodeid: bigint, fh: bigint): Promise<void> {
    const h = this.handles.get(fh);
    if (!h) return;
    this.handles.delete(fh);
    if (h.kind === 'read') {
      h.reader.close();
      return;
    }
    if (h.kind !== 'write') return;
    const p = h.pending;
    p.handles--;
    if (p.handles > 0 || p.settled) return;
    p.settled = this.settle(p);
    await p.settled;
  }

  async fsync(_ctx: Context, _nodeid: bigint, fh: bigint): Promise<void> {
    const h = this.handles.get(fh);
    if (!h || h.kind !== 'write') return;
    // Every write is handed to the client before it is acknowledged; the file is durable and
    // visible once linked, at the last close.
    await h.pending.chain;
    if (h.pending.failure) throw h.pending.failure;
  }

  async opendir(_ctx: Context, nodeid: bigint): Promise<OpenResult> {
    const dirId = this.dirId(nodeid);
    return this.addHandle({ kind: 'dir', dirId, nodeid }, {});
  }

  async readdir(_ctx: Context, nodeid: bigint, fh: bigint, offset: bigint, out: DirFiller): Promise<void> {
    let h = this.handles.get(fh);
    if (!h || h.kind !== 'dir') {
      // A handle we do not know (should not happen): list afresh.
      h = { kind: 'dir', dirId: this.dirId(nodeid), nodeid };
    }
    if (!h.entries || offset === 0n) {
      await this.settleDir(h.dirId);
      const list: DirEntry[] = [];
      // The listing is wanted here anyway: it also answers the lookups that usually follow.
      const fill = this.dirCache.beginFill(h.dirId);
      let ids: Map<string, bigint> | undefined;
      try {
        for await (const e of this.listDir(h.dirId)) list.push(e);
        ids = new Map();
        for (const e of list) ids.set(e.name, e.id);
      } finally {
        this.dirCache.endFill(fill, ids);
      }
      h.entries = list;
    }
    const entries = h.entries;
    let i = Number(offset);
    // "." and ".." come first, at offsets 0 and 1.
    for (; i < 2; i++) {
      const ino = i === 0 ? nodeid : FUSE_ROOT_ID;
      if (!out.add({ name: i === 0 ? '.' : '..', ino, mode: DIR_MODE, nextOffset: BigInt(i + 1) })) return;
    }
    // A readdirplus reply stops after READDIRPLUS_MAX_STATS entries whose attributes take a STAT,
    // even where more would fit: the kernel asks again, with readdirplus only if the names were
    // looked up meanwhile (READDIRPLUS_AUTO), so a names-only listing pays for one reply's STATs.
    // Attributes the listing carried cost nothing, and those entries are not counted.
    let statsLeft = READDIRPLUS_MAX_STATS;
    let aheadTo = i - 2;
    while (i - 2 < entries.length) {
      if (out.plus && aheadTo < entries.length) {
        // The STATs of the next batches go out while this one's are awaited.
        const to = Math.min(entries.length, i - 2 + READDIRPLUS_AHEAD);
        const ahead: bigint[] = [];
        for (; aheadTo < to; aheadTo++) ahead.push(entries[aheadTo]!.id);
        this.statAhead.want(ahead);
      }
      let batchEnd = Math.min(entries.length, i - 2 + READDIRPLUS_BATCH);
      if (out.plus) {
        let j = i - 2;
        for (; j < batchEnd; j++) {
          if (this.attrsAtHand(entries[j]!.id)) continue;
          if (statsLeft === 0) break;
          statsLeft--;
        }
        batchEnd = j;
        if (batchEnd === i - 2) return;
      }
      const batch = entries.slice(i - 2, batchEnd);
      const nodes = out.plus ? await Promise.all(batch.map((e) => this.known(e.id).catch(() => undefined))) : [];
      for (let j = 0; j < batch.length; j++, i++) {
        const e = batch[j]!;
        const n = nodes[j];
        this.rememberChild(h.dirId, e.name, e.id);
        const ino = this.nodeidOf(e.id);
        const entry = n ? { nodeid: n.nodeid, generation: 0n, attr: this.attrOf(n), entryTtlMs: ENTRY_TTL_MS, attrTtlMs: this.attrTtl(n) } : undefined;
        if (!out.add({ name: e.name, ino, mode: modeOf(e.type), nextOffset: BigInt(i + 1), entry })) {
          for (const rest of nodes.slice(j)) if (rest) this.dropIfUnreferenced(rest);
          return;
        }
        if (n) n.nlookup++;
      }
    }
  }

  async releasedir(_ctx: Context, _nodeid: bigint, fh: bigint): Promise<void> {
    this.handles.delete(fh);
  }

  async statfs(): Promise<StatfsReply> {
    const now = monoMs();
    if (this.statfsCache && now - this.statfsCache.atMs < STATFS_CACHE_MS) return this.statfsCache.value;
    const s = await this.client.statfs();
    const blocks = BigInt(Math.floor(s.totalBytes / STATFS_BLOCK_BYTES));
    const free = BigInt(Math.floor(s.freeBytes / STATFS_BLOCK_BYTES));
    const value: StatfsReply = { blocks, bfree: free, bavail: free, files: 1n << 40n, ffree: 1n << 40n, bsize: STATFS_BLOCK_BYTES, namelen: NAME_MAX_BYTES, frsize: STATFS_BLOCK_BYTES };
    this.statfsCache = { atMs: now, value };
    return value;
  }

  async access(): Promise<void> {
    // Permissions are not enforced (as the original); everything is accessible.
  }

  destroy(): void {
    for (const h of this.handles.values()) if (h.kind === 'read') h.reader.close();
    this.handles.clear();
  }
}

export { isDirectory };
