// The namespace checker behind `eggsfs fsck`: reads every shard over the wire and verifies the
// invariants that the CDC and the shards together must keep (issue 3 item 5):
//   - every live directory is reachable from the root exactly once (no cycles, no detached trees);
//   - every live directory's parent pointer names the directory holding its one current edge;
//   - no current edge is locked (meaningful only while the CDC is idle);
//   - no dangling current edge (target missing, transient, or a removed directory), no name with
//     two current edges, no current edge older than a snapshot of its name, no current edge in a
//     removed directory;
//   - every file is owned by at most one edge, and a linked (non-transient) file by exactly one.
//
// Lock state is not part of any read answer, so it is probed with a request that cannot succeed:
// CREATE_LOCKED_CURRENT_EDGE of the same name to an impossible directory id, one nanosecond after
// the current edge. The shard answers NAME_IS_LOCKED for a locked edge and CANNOT_OVERRIDE_NAME
// for an unlocked one (a directory can never replace an entry); an error changes nothing. The
// probe is sent only after LOOKUP confirmed the current edge, and if the name changed in between
// the newer deletion marker makes it fail with MORE_RECENT_SNAPSHOT_ALREADY_EXISTS.
import { EggsError, ErrorCode } from '../proto/errors.js';
import { InodeType, hasExtra, stripExtra, NULL_INODE_ID, ROOT_DIR_INODE_ID, formatInodeId, inodeType, makeInodeId, MAX_LOCAL_ID, shardOf } from '../proto/ids.js';
import { UdpTransport, type Address } from './transport.js';

export interface FsckOptions {
  /** Address of shard `s`. */
  shardAddress(shard: number): Address;
  /** Shards to read; checks that need every shard (reachability, ownership) are complete only with all 256. */
  shards: number[];
  timeoutMs?: number;
  attempts?: number;
  /** Probe lock state of every current edge (default true). */
  checkLocks?: boolean;
  /** Requests in flight at once. */
  parallelism?: number;
}

export type ProblemKind =
  | 'shard-unreachable'
  | 'unreachable-directory'
  | 'parent-mismatch'
  | 'missing-parent'
  | 'locked-edge'
  | 'dangling-edge'
  | 'doubled-edge'
  | 'edge-in-removed-directory'
  | 'snapshot-newer-than-current'
  | 'file-owned-twice'
  | 'file-not-owned'
  | 'edge-to-transient-file'
  | 'probe-failed';

export interface FsckProblem {
  kind: ProblemKind;
  message: string;
}

export interface FsckReport {
  problems: FsckProblem[];
  shardsRead: number;
  directories: number;
  liveDirectories: number;
  files: number;
  transientFiles: number;
  currentEdges: number;
  snapshotEdges: number;
  lockedEdges: number;
}

export const DEFAULT_FSCK_PARALLELISM = 64;
/** A directory id no CDC hands out (local id 2^53-1 on shard 255): the lock probe's target. */
export const LOCK_PROBE_TARGET = makeInodeId(InodeType.DIRECTORY, MAX_LOCAL_ID, 255);

interface EdgeInfo {
  dir: bigint;
  name: Buffer;
  target: bigint;
  owning: boolean;
  creationTime: bigint;
  current: boolean;
}

interface DirInfo {
  id: bigint;
  owner: bigint;
  edges: EdgeInfo[];
}

/** Runs `f` over `items` with at most `limit` promises pending. */
async function pool<T>(items: T[], limit: number, f: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  const worker = async () => {
    while (i < items.length) await f(items[i++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

const nameStr = (n: Buffer) => JSON.stringify(n.toString('utf8'));

export async function fsck(opts: FsckOptions): Promise<FsckReport> {
  const transport = new UdpTransport({ defaultTimeoutMs: opts.timeoutMs ?? 1_000, defaultAttempts: opts.attempts ?? 5 });
  try {
    return await check(transport, opts);
  } finally {
    transport.close();
  }
}

async function check(tr: UdpTransport, opts: FsckOptions): Promise<FsckReport> {
  const par = opts.parallelism ?? DEFAULT_FSCK_PARALLELISM;
  const problems: FsckProblem[] = [];
  const problem = (kind: ProblemKind, message: string) => problems.push({ kind, message });
  const scanned = new Set<number>();
  const dirs = new Map<bigint, DirInfo>();
  const files = new Set<bigint>();
  const transient = new Set<bigint>();
  const addr = (id: bigint) => opts.shardAddress(shardOf(id));

  // 1. Every shard: its directories, files and transient files.
  await pool(opts.shards, Math.max(1, Math.floor(par / 3)), async (s) => {
    const a = opts.shardAddress(s);
    try {
      const dirIds: bigint[] = [];
      for (let begin = 0n; ; ) {
        const r = await tr.shardRequest(a, 'VISIT_DIRECTORIES', { beginId: begin });
        dirIds.push(...r.ids);
        if (r.nextId === 0n) break;
        begin = r.nextId;
      }
      for (let begin = 0n; ; ) {
        const r = await tr.shardRequest(a, 'VISIT_FILES', { beginId: begin });
        for (const id of r.ids) files.add(id);
        if (r.nextId === 0n) break;
        begin = r.nextId;
      }
      for (let begin = 0n; ; ) {
        const r = await tr.shardRequest(a, 'VISIT_TRANSIENT_FILES', { beginId: begin });
        for (const f of r.files) transient.add(f.id);
        if (r.nextId === 0n) break;
        begin = r.nextId;
      }
      for (const id of dirIds) dirs.set(id, { id, owner: NULL_INODE_ID, edges: [] });
      scanned.add(s);
    } catch (err) {
      problem('shard-unreachable', `shard ${s} at ${a.host}:${a.port} could not be read: ${(err as Error).message}`);
    }
  });

  // 2. Every directory: its owner and its whole edge history.
  await pool([...dirs.values()], par, async (d) => {
    try {
      d.owner = (await tr.shardRequest(addr(d.id), 'STAT', { id: d.id })).sizeOrOwner;
      let start: { startHash: bigint; startName: Buffer; startTime: bigint } = { startHash: 0n, startName: Buffer.alloc(0), startTime: 0n };
      for (;;) {
        const r = await tr.shardRequest(addr(d.id), 'FULL_READ_DIR', { dirId: d.id, ...start });
        for (const e of r.results) {
          d.edges.push({
            dir: d.id,
            name: e.name,
            target: stripExtra(e.targetId),
            owning: hasExtra(e.targetId),
            creationTime: e.creationTime,
            current: false,
          });
        }
        if (r.finished || r.results.length === 0) break;
        const last = r.results[r.results.length - 1]!;
        start = { startHash: last.nameHash, startName: last.name, startTime: last.creationTime + 1n };
      }
    } catch (err) {
      problem('shard-unreachable', `directory ${formatInodeId(d.id)} could not be read: ${(err as Error).message}`);
    }
  });

  // 3. Current edges: confirmed with LOOKUP (the history alone cannot tell a current edge from an
  //    owned snapshot), then probed for a lock.
  const byName = new Map<string, EdgeInfo[]>();
  for (const d of dirs.values()) {
    for (const e of d.edges) {
      const k = `${d.id}/${e.name.toString('hex')}`;
      let l = byName.get(k);
      if (!l) byName.set(k, (l = []));
      l.push(e);
    }
  }
  const locked: EdgeInfo[] = [];
  const probeFailures: string[] = [];
  await pool([...byName.values()], par, async (edges) => {
    const { dir, name } = edges[0]!;
    let cur: { targetId: bigint; creationTime: bigint };
    try {
      cur = await tr.shardRequest(addr(dir), 'LOOKUP', { dirId: dir, name });
    } catch (err) {
      if (err instanceof EggsError && err.code === ErrorCode.NAME_NOT_FOUND) return;
      probeFailures.push(`LOOKUP ${formatInodeId(dir)}/${nameStr(name)}: ${(err as Error).message}`);
      return;
    }
    const e = edges.find((x) => x.creationTime === cur.creationTime && x.target === cur.targetId);
    if (!e) {
      probeFailures.push(`LOOKUP ${formatInodeId(dir)}/${nameStr(name)} names an edge missing from the directory's history`);
      return;
    }
    e.current = true;
    if (opts.checkLocks === false) return;
    try {
      await tr.shardRequest(
        addr(dir),
        'CREATE_LOCKED_CURRENT_EDGE',
        { dirId: dir, name, targetId: LOCK_PROBE_TARGET, creationTime: e.creationTime + 1n },
        { attempts: 1 },
      );
      probeFailures.push(`lock probe of ${formatInodeId(dir)}/${nameStr(name)} unexpectedly succeeded`);
    } catch (err) {
      if (err instanceof EggsError && err.code === ErrorCode.NAME_IS_LOCKED) locked.push(e);
      else if (err instanceof EggsError && err.code === ErrorCode.CANNOT_OVERRIDE_NAME) return;
      else probeFailures.push(`lock probe of ${formatInodeId(dir)}/${nameStr(name)}: ${(err as Error).message}`);
    }
  });

  // 4. Reachability from the root over current directory edges, which also names paths.
  const paths = new Map<bigint, string>();
  const incoming = new Map<bigint, EdgeInfo[]>();
  let currentEdges = 0;
  let snapshotEdges = 0;
  for (const d of dirs.values()) {
    for (const e of d.edges) {
      if (!e.current) {
        snapshotEdges++;
        continue;
      }
      currentEdges++;
      let l = incoming.get(e.target);
      if (!l) incoming.set(e.target, (l = []));
      l.push(e);
    }
  }
  const dirName = (id: bigint) => paths.get(id) ?? `<directory ${formatInodeId(id)}>`;
  const edgePath = (e: EdgeInfo) => `${dirName(e.dir) === '/' ? '' : dirName(e.dir)}/${e.name.toString('utf8')}`;
  // Shards answer in any order: sort so that the same namespace always gives the same report.
  const pathList = (edges: EdgeInfo[]) => edges.map(edgePath).sort().join(', ');
  if (scanned.has(shardOf(ROOT_DIR_INODE_ID))) {
    paths.set(ROOT_DIR_INODE_ID, '/');
    const queue = [ROOT_DIR_INODE_ID];
    while (queue.length > 0) {
      const d = dirs.get(queue.shift()!);
      if (!d) continue;
      for (const e of d.edges) {
        if (!e.current || inodeType(e.target) !== InodeType.DIRECTORY) continue;
        const p = edgePath(e);
        // A second way in is reported once below, as a directory with two entries.
        if (paths.has(e.target)) continue;
        paths.set(e.target, p);
        queue.push(e.target);
      }
    }
  }
  const allShards = scanned.size === 256;

  // 5. Directories.
  let live = 0;
  for (const d of dirs.values()) {
    const isRoot = d.id === ROOT_DIR_INODE_ID;
    const edgesTo = incoming.get(d.id) ?? [];
    if (isRoot) {
      live++;
      for (const e of edgesTo) problem('doubled-edge', `${edgePath(e)} points at the root directory`);
      continue;
    }
    if (d.owner === NULL_INODE_ID) {
      // Removed (or never completed) directory: nothing may point at it or live in it.
      for (const e of edgesTo) problem('dangling-edge', `${edgePath(e)} points at removed directory ${formatInodeId(d.id)}`);
      for (const e of d.edges) if (e.current) problem('edge-in-removed-directory', `removed directory ${formatInodeId(d.id)} still has entry ${nameStr(e.name)}`);
      continue;
    }
    live++;
    const where = paths.get(d.id) ?? `directory ${formatInodeId(d.id)}`;
    if (scanned.has(shardOf(d.owner))) {
      const parent = dirs.get(d.owner);
      if (!parent) problem('missing-parent', `${where}: its parent ${formatInodeId(d.owner)} does not exist`);
      else if (parent.owner === NULL_INODE_ID && parent.id !== ROOT_DIR_INODE_ID) {
        problem('missing-parent', `${where}: its parent ${formatInodeId(d.owner)} was removed`);
      }
    }
    if (edgesTo.length > 1) {
      problem('doubled-edge', `directory ${formatInodeId(d.id)} has ${edgesTo.length} entries: ${pathList(edgesTo)}`);
    }
    const fromOwner = edgesTo.filter((e) => e.dir === d.owner);
    if (edgesTo.length > 0 && fromOwner.length === 0) {
      problem(
        'parent-mismatch',
        `${where}: parent pointer says ${dirName(d.owner)} (${formatInodeId(d.owner)}) but its entry is ${pathList(edgesTo)}`,
      );
    }
    if (allShards && !paths.has(d.id)) {
      problem(
        'unreachable-directory',
        edgesTo.length === 0
          ? `directory ${formatInodeId(d.id)} (parent pointer ${formatInodeId(d.owner)}) has no entry anywhere: not reachable from /`
          : `directory ${formatInodeId(d.id)} is not reachable from / (its entries: ${pathList(edgesTo)})`,
      );
    }
  }

  // 6. Edges: targets, history order, locks.
  for (const d of dirs.values()) {
    const newestByName = new Map<string, EdgeInfo>();
    for (const e of d.edges) {
      const k = e.name.toString('hex');
      const n = newestByName.get(k);
      if (!n || e.creationTime > n.creationTime) newestByName.set(k, e);
    }
    for (const e of d.edges) {
      if (!e.current) continue;
      const newest = newestByName.get(e.name.toString('hex'))!;
      if (newest !== e) problem('snapshot-newer-than-current', `${edgePath(e)}: a snapshot edge is newer than the current edge`);
      const t = inodeType(e.target);
      if (!scanned.has(shardOf(e.target))) continue;
      if (t === InodeType.DIRECTORY) {
        if (!dirs.has(e.target)) problem('dangling-edge', `${edgePath(e)} points at directory ${formatInodeId(e.target)}, which does not exist`);
      } else if (!files.has(e.target)) {
        problem('dangling-edge', `${edgePath(e)} points at ${t === InodeType.SYMLINK ? 'symlink' : 'file'} ${formatInodeId(e.target)}, which does not exist`);
      } else if (transient.has(e.target)) {
        problem('edge-to-transient-file', `${edgePath(e)} points at ${formatInodeId(e.target)}, which is still transient`);
      }
    }
  }
  for (const e of locked) problem('locked-edge', `${edgePath(e)} (→ ${formatInodeId(e.target)}) is locked`);
  for (const m of probeFailures) problem('probe-failed', m);

  // 7. File ownership.
  const owners = new Map<bigint, EdgeInfo[]>();
  for (const d of dirs.values()) {
    for (const e of d.edges) {
      if (!e.owning || e.target === NULL_INODE_ID || inodeType(e.target) === InodeType.DIRECTORY) continue;
      let l = owners.get(e.target);
      if (!l) owners.set(e.target, (l = []));
      l.push(e);
    }
  }
  for (const [f, l] of owners) {
    if (l.length > 1) problem('file-owned-twice', `file ${formatInodeId(f)} is owned by ${l.length} edges: ${pathList(l)}`);
  }
  if (allShards) {
    for (const f of files) {
      if (!transient.has(f) && !owners.has(f)) problem('file-not-owned', `file ${formatInodeId(f)} is linked but no edge owns it (leaked)`);
    }
  }

  problems.sort((x, y) => byCodeUnits(formatProblem(x), formatProblem(y)));
  return {
    problems,
    shardsRead: scanned.size,
    directories: dirs.size,
    liveDirectories: live,
    files: files.size,
    transientFiles: transient.size,
    currentEdges,
    snapshotEdges,
    lockedEdges: locked.length,
  };
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function formatProblem(p: FsckProblem): string {
  return `${p.kind}: ${p.message}`;
}
