// A tiny in-memory filesystem: the kernel-protocol layer's development and unit-test target (it
// exercises every request kind without a cluster). Not used by `eggsfs mount`.
import { constants as osConstants } from 'node:os';
import {
  type AttrReply,
  type Context,
  type DirFiller,
  type Entry,
  FuseError,
  type FuseFilesystem,
  type OpenResult,
  type SetattrIn,
  type StatfsReply,
  FUSE_ROOT_ID,
  S_IFDIR,
  S_IFREG,
  S_IFLNK,
  SetattrValid,
} from './kernel.js';

const E = osConstants.errno;
const TTL_MS = 1000;

interface MemNode {
  id: bigint;
  mode: number;
  data: Buffer;
  size: number;
  children?: Map<string, bigint>;
  target?: string;
  mtimeNs: bigint;
  nlookup: bigint;
}

export class MemFs implements FuseFilesystem {
  private readonly nodes = new Map<bigint, MemNode>();
  private nextId = 2n;
  /** Forget counts received, for tests. */
  forgets = 0;

  constructor() {
    this.nodes.set(FUSE_ROOT_ID, this.make(FUSE_ROOT_ID, S_IFDIR | 0o755));
  }

  private make(id: bigint, mode: number): MemNode {
    return { id, mode, data: Buffer.alloc(0), size: 0, children: (mode & S_IFDIR) === S_IFDIR ? new Map() : undefined, mtimeNs: BigInt(Date.now()) * 1_000_000n, nlookup: 0n };
  }

  private node(id: bigint): MemNode {
    const n = this.nodes.get(id);
    if (!n) throw new FuseError(E.ENOENT);
    return n;
  }

  private dir(id: bigint): Map<string, bigint> {
    const n = this.node(id);
    if (!n.children) throw new FuseError(E.ENOTDIR);
    return n.children;
  }

  private attr(n: MemNode) {
    return { ino: n.id, size: n.size, mode: n.mode, nlink: 1, uid: 0, gid: 0, mtimeNs: n.mtimeNs, blksize: 4096 };
  }

  /** The entry for n, without counting a kernel reference (readdirplus counts only what it sends). */
  private entryOf(n: MemNode): Entry {
    return { nodeid: n.id, generation: 0n, attr: this.attr(n), entryTtlMs: TTL_MS, attrTtlMs: TTL_MS };
  }

  private entry(n: MemNode): Entry {
    n.nlookup++;
    return this.entryOf(n);
  }

  async lookup(_ctx: Context, parent: bigint, name: string): Promise<Entry> {
    const id = this.dir(parent).get(name);
    if (id === undefined) throw new FuseError(E.ENOENT);
    return this.entry(this.node(id));
  }

  forget(nodeid: bigint, nlookup: bigint): void {
    this.forgets++;
    const n = this.nodes.get(nodeid);
    if (n) n.nlookup -= nlookup;
  }

  async getattr(_ctx: Context, nodeid: bigint): Promise<AttrReply> {
    return { attr: this.attr(this.node(nodeid)), ttlMs: TTL_MS };
  }

  async setattr(_ctx: Context, nodeid: bigint, c: SetattrIn): Promise<AttrReply> {
    const n = this.node(nodeid);
    if (c.valid & SetattrValid.SIZE) {
      const d = Buffer.alloc(c.size);
      n.data.copy(d, 0, 0, Math.min(n.size, c.size));
      n.data = d;
      n.size = c.size;
    }
    if (c.valid & SetattrValid.MODE) n.mode = (n.mode & ~0o7777) | (c.mode & 0o7777);
    return { attr: this.attr(n), ttlMs: TTL_MS };
  }

  async readlink(_ctx: Context, nodeid: bigint): Promise<Buffer> {
    const n = this.node(nodeid);
    if (n.target === undefined) throw new FuseError(E.EINVAL);
    return Buffer.from(n.target);
  }

  async symlink(_ctx: Context, parent: bigint, name: string, target: string): Promise<Entry> {
    const n = this.add(parent, name, S_IFLNK | 0o777);
    n.target = target;
    n.size = Buffer.byteLength(target);
    return this.entry(n);
  }

  private add(parent: bigint, name: string, mode: number): MemNode {
    const d = this.dir(parent);
    if (d.has(name)) throw new FuseError(E.EEXIST);
    const n = this.make(this.nextId++, mode);
    this.nodes.set(n.id, n);
    d.set(name, n.id);
    return n;
  }

  async mkdir(_ctx: Context, parent: bigint, name: string, mode: number): Promise<Entry> {
    return this.entry(this.add(parent, name, S_IFDIR | (mode & 0o7777)));
  }

  async unlink(_ctx: Context, parent: bigint, name: string): Promise<void> {
    const d = this.dir(parent);
    const id = d.get(name);
    if (id === undefined) throw new FuseError(E.ENOENT);
    if (this.node(id).children) throw new FuseError(E.EISDIR);
    d.delete(name);
  }

  async rmdir(_ctx: Context, parent: bigint, name: string): Promise<void> {
    const d = this.dir(parent);
    const id = d.get(name);
    if (id === undefined) throw new FuseError(E.ENOENT);
    const n = this.node(id);
    if (!n.children) throw new FuseError(E.ENOTDIR);
    if (n.children.size > 0) throw new FuseError(E.ENOTEMPTY);
    d.delete(name);
  }

  async rename(_ctx: Context, parent: bigint, name: string, newParent: bigint, newName: string): Promise<void> {
    const from = this.dir(parent);
    const to = this.dir(newParent);
    const id = from.get(name);
    if (id === undefined) throw new FuseError(E.ENOENT);
    from.delete(name);
    to.set(newName, id);
  }

  async open(_ctx: Context, nodeid: bigint): Promise<OpenResult> {
    this.node(nodeid);
    return { fh: nodeid };
  }

  async create(_ctx: Context, parent: bigint, name: string, mode: number): Promise<{ entry: Entry; open: OpenResult }> {
    const n = this.add(parent, name, S_IFREG | (mode & 0o7777));
    return { entry: this.entry(n), open: { fh: n.id } };
  }

  async read(_ctx: Context, nodeid: bigint, _fh: bigint, offset: number, size: number): Promise<Buffer> {
    const n = this.node(nodeid);
    return Buffer.from(n.data.subarray(Math.min(offset, n.size), Math.min(offset + size, n.size)));
  }

  async write(_ctx: Context, nodeid: bigint, _fh: bigint, offset: number, data: Buffer): Promise<number> {
    const n = this.node(nodeid);
    const end = offset + data.length;
    if (end > n.data.length) {
      const d = Buffer.alloc(Math.max(end, n.data.length * 2));
      n.data.copy(d, 0, 0, n.size);
      n.data = d;
    }
    data.copy(n.data, offset);
    n.size = Math.max(n.size, end);
    return data.length;
  }

  async flush(): Promise<void> {}
  async release(): Promise<void> {}
  async fsync(): Promise<void> {}

  async opendir(_ctx: Context, nodeid: bigint): Promise<OpenResult> {
    this.dir(nodeid);
    return { fh: nodeid };
  }

  async readdir(_ctx: Context, nodeid: bigint, _fh: bigint, offset: bigint, out: DirFiller): Promise<void> {
    const items = [
      { name: '.', id: nodeid },
      { name: '..', id: FUSE_ROOT_ID },
      ...[...this.dir(nodeid)].map(([name, id]) => ({ name, id })),
    ];
    for (let i = Number(offset); i < items.length; i++) {
      const it = items[i]!;
      const n = this.node(it.id);
      const dots = it.name === '.' || it.name === '..';
      const entry = out.plus && !dots ? this.entryOf(n) : undefined;
      if (!out.add({ name: it.name, ino: n.id, mode: n.mode, nextOffset: BigInt(i + 1), entry })) break;
      if (entry) n.nlookup++;
    }
  }

  async releasedir(): Promise<void> {}

  async statfs(): Promise<StatfsReply> {
    return { blocks: 1000n, bfree: 500n, bavail: 500n, files: 100n, ffree: 50n, bsize: 4096, namelen: 255, frsize: 4096 };
  }
}
