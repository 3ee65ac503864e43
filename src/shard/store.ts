// The 21 shard request kinds over one shard's database (metadata.md §3–§4, §7), with the shard
// [bug]s of §8 fixed. A handler either returns the response body or throws a ShardFail; the
// caller (batch.ts) runs each request in its own savepoint, so a failure has no partial effect.
import type Database from 'better-sqlite3';
import assert from 'node:assert';
import { createCipheriv, type Cipher } from 'node:crypto';
import { decode } from '../proto/bincode.js';
import { ErrorCode } from '../proto/errors.js';
import { fileCookie, blockWriteCertificate, blockWriteProof, macEquals } from '../proto/crypto.js';
import { crc32c, crc32cCombine, crc32cZeros, crcFromBytes, crcToBytes } from '../proto/crc32c.js';
import { nameHash, invalidNameReason, HASH_MODE_TRUNC_MD5 } from '../proto/hash.js';
import { EXTRA_BIT, InodeType, MAX_LOCAL_ID, ROOT_DIR_INODE_ID, inodeType, shardOf } from '../proto/ids.js';
import { ONE_HOUR_NS, eggsNow } from '../proto/time.js';
import { UDP_MTU, HEADER_BYTES } from '../proto/envelope.js';
import {
  BLOCK_FLAG_STALE,
  BLOCK_FLAG_TERMINAL,
  FetchedSpan,
  SHARD_MESSAGES,
  type BlockInfoT,
  type EdgeWithOwnershipT,
  type FetchedBlockT,
  type FetchedSpanT,
  type ShardKindName,
  type ShardReq,
  type ShardResp,
} from '../proto/messages.js';
import { Registry, UNKNOWN_IP, UNKNOWN_PORT } from './registry.js';
import { EDGE_LAYOUT, EDGE_MIN_BYTES, EDGE_WITH_ATTRS_LAYOUT, READ_DIR_FETCH, edgeHashHex, edgeHexSql, edgeWithAttrsHexSql, encodeReadDirResponse, readDirPageCount, type EdgeLayout } from './readdir.js';

/**
 * The edges a listing shows (parameters: directory, start hash, as-of time), in (hash, name) order:
 * the tail of a query whose select list reads the edge columns with max(creation_time).
 */
const LISTED_EDGES_SQL = `FROM edges
  WHERE dir_id = ? AND name_hash >= ? AND creation_time <= ?
  GROUP BY name_hash, name HAVING target_id <> 0
  ORDER BY name_hash, name`;

/** A request's definitive error answer. Not an Error: thrown on ordinary paths, so no stack. */
export class ShardFail {
  constructor(
    readonly code: number,
    readonly detail?: string,
  ) {}
}

function fail(code: number, detail?: string): never {
  throw new ShardFail(code, detail);
}

export const STORAGE_INLINE = 0;
export const STORAGE_ZERO_FILL = 1;
export const SPAN_CLEAN = 0;
export const SPAN_DIRTY = 1;
export const DEADLINE_DURATION_NS = ONE_HOUR_NS;
/** SQLite integers are signed: ids and times at or above this cannot exist in the database. */
const SQL_INT_LIMIT = 1n << 63n;
const MAX_I63 = SQL_INT_LIMIT - 1n;
const COUNTER_STEP = 0x100n;

// Page sizes (metadata.md §1.7). The counts are the largest that can fit, plus one to detect more.
const PAGE_BUDGET_BYTES = UDP_MTU - HEADER_BYTES - 10;
const FULL_READ_DIR_BUDGET_BYTES = UDP_MTU - HEADER_BYTES - 3;
const FULL_READ_DIR_FETCH = Math.floor(FULL_READ_DIR_BUDGET_BYTES / EDGE_MIN_BYTES) + 1;
const FETCHED_SPAN_MIN_BYTES = 11;
const FILE_SPANS_FETCH = Math.floor(PAGE_BUDGET_BYTES / FETCHED_SPAN_MIN_BYTES) + 1;
export const VISIT_IDS_PER_PAGE = 181;
export const VISIT_TRANSIENT_PER_PAGE = 90;

/** Stored per block in spans.body of block-backed spans: service u32, block id u64, crc 4, size u32. */
const BLOCK_RECORD_BYTES = 20;

interface StoredBlock {
  serviceId: number;
  blockId: bigint;
  crc: Buffer;
  size: number;
}

function packBlocks(blocks: StoredBlock[]): Buffer {
  const b = Buffer.allocUnsafe(blocks.length * BLOCK_RECORD_BYTES);
  blocks.forEach((x, i) => {
    const o = i * BLOCK_RECORD_BYTES;
    b.writeUInt32LE(x.serviceId, o);
    b.writeBigUInt64LE(x.blockId, o + 4);
    x.crc.copy(b, o + 12);
    b.writeUInt32LE(x.size, o + 16);
  });
  return b;
}

function unpackBlocks(b: Buffer): StoredBlock[] {
  if (b.length % BLOCK_RECORD_BYTES !== 0) throw new Error(`corrupt span body of ${b.length} bytes`);
  const out: StoredBlock[] = [];
  for (let o = 0; o < b.length; o += BLOCK_RECORD_BYTES) {
    out.push({ serviceId: b.readUInt32LE(o), blockId: b.readBigUInt64LE(o + 4), crc: Buffer.from(b.subarray(o + 12, o + 16)), size: b.readUInt32LE(o + 16) });
  }
  return out;
}

interface DirRow {
  id: bigint;
  owner_id: bigint;
  mtime: bigint;
  opaque: Buffer;
}
interface FileRow {
  id: bigint;
  transient: bigint;
  size: bigint;
  mtime: bigint;
  deadline: bigint | null;
  last_span_state: bigint | null;
}
interface EdgeRow {
  name_hash: bigint;
  name: Buffer;
  creation_time: bigint;
  current: bigint;
  target_id: bigint;
  owned: bigint | null;
  locked: bigint | null;
}
interface SpanRow {
  byte_offset: bigint;
  state: bigint;
  storage_class: bigint;
  parity: bigint;
  crc32: bigint;
  size: bigint;
  body: Buffer;
}

type Handler = (req: any) => unknown;

function storable(id: bigint): boolean {
  return id < SQL_INT_LIMIT;
}

function validateNewName(name: Buffer): void {
  const why = invalidNameReason(name);
  if (why !== undefined) fail(ErrorCode.MALFORMED_REQUEST, why);
}

function isDir(id: bigint): boolean {
  return inodeType(id) === InodeType.DIRECTORY;
}

export class ShardStore {
  readonly shard: number;
  readonly registry: Registry;
  private readonly secretKey: Buffer;
  private readonly cookieCipher: Cipher;
  private readonly cookieBlock = Buffer.alloc(16);
  private lastNow = 0n;
  private readonly handlers: (Handler | undefined)[] = new Array(256).fill(undefined);
  private readonly st;

  constructor(
    readonly db: Database.Database,
    shard: number,
  ) {
    this.shard = shard;
    this.registry = new Registry(db);
    const info = db.prepare('SELECT secret_key FROM shard_info WHERE id = 0').get() as { secret_key: Buffer };
    this.secretKey = info.secret_key;
    this.cookieCipher = createCipheriv('aes-128-ecb', this.secretKey, null).setAutoPadding(false);
    assert(this.cookie(0x4000000000000000n) === fileCookie(0x4000000000000000n, this.secretKey), 'cookie cipher agrees with proto/crypto');
    const p = (sql: string) => db.prepare(sql);
    this.st = {
      shardInfo: p('SELECT next_file_id, next_symlink_id, next_block_id FROM shard_info WHERE id = 0'),
      takeFileCounter: p(`UPDATE shard_info SET next_file_id = next_file_id + ${COUNTER_STEP} WHERE id = 0 RETURNING next_file_id - ${COUNTER_STEP} AS counter`),
      takeSymlinkCounter: p(`UPDATE shard_info SET next_symlink_id = next_symlink_id + ${COUNTER_STEP} WHERE id = 0 RETURNING next_symlink_id - ${COUNTER_STEP} AS counter`),
      setBlockCounter: p('UPDATE shard_info SET next_block_id = ? WHERE id = 0'),
      dir: p('SELECT id, owner_id, mtime, opaque FROM directories WHERE id = ?'),
      insertDir: p('INSERT INTO directories (id, owner_id, mtime, hash_mode, opaque) VALUES (?, ?, ?, ?, ?)'),
      updateDir: p('UPDATE directories SET mtime = ?, opaque = ? WHERE id = ?'),
      setDirMtime: p('UPDATE directories SET mtime = max(mtime, ?) WHERE id = ?'),
      setDirOwner: p('UPDATE directories SET owner_id = ? WHERE id = ?'),
      hasCurrentEdges: p('SELECT 1 FROM edges WHERE dir_id = ? AND current = 1 LIMIT 1'),
      file: p('SELECT id, transient, size, mtime, deadline, last_span_state FROM files WHERE id = ?'),
      insertFile: p('INSERT INTO files (id, transient, size, mtime, deadline, last_span_state) VALUES (?, 1, 0, ?, ?, ?)'),
      setDeadline: p('UPDATE files SET deadline = ? WHERE id = ?'),
      appendSpanToFile: p('UPDATE files SET size = size + ?, last_span_state = ?, deadline = ? WHERE id = ?'),
      certifyFile: p('UPDATE files SET last_span_state = ?, mtime = ? WHERE id = ?'),
      linkFile: p('UPDATE files SET transient = 0, mtime = ?, deadline = NULL, last_span_state = NULL WHERE id = ?'),
      makeTransientAgain: p(`UPDATE files SET transient = 1, deadline = 0, last_span_state = ${SPAN_CLEAN} WHERE id = ?`),
      currentEdge: p('SELECT name_hash, name, creation_time, current, target_id, owned, locked FROM edges WHERE dir_id = ? AND name_hash = ? AND name = ? AND current = 1'),
      lookup: p('SELECT target_id, creation_time FROM edges WHERE dir_id = ? AND name_hash = ? AND name = ? AND current = 1').raw(true),
      edgesCurrentOrNewer: p(
        'SELECT name_hash, name, creation_time, current, target_id, owned, locked FROM edges WHERE dir_id = ? AND name_hash = ? AND name = ? AND (current = 1 OR creation_time >= ?)',
      ),
      insertCurrentEdge: p('INSERT INTO edges (dir_id, name_hash, name, creation_time, current, target_id, owned, locked) VALUES (?, ?, ?, ?, 1, ?, NULL, ?)'),
      insertSnapshotEdge: p('INSERT INTO edges (dir_id, name_hash, name, creation_time, current, target_id, owned, locked) VALUES (?, ?, ?, ?, 0, ?, ?, NULL)'),
      edgeToSnapshot: p('UPDATE edges SET current = 0, locked = NULL, owned = ? WHERE dir_id = ? AND name_hash = ? AND name = ? AND creation_time = ?'),
      setEdgeLock: p('UPDATE edges SET locked = ? WHERE dir_id = ? AND name_hash = ? AND name = ? AND creation_time = ?'),
      // One walk of the primary key: per (hash, name) the newest edge at or before asOf (SQLite
      // takes the bare columns of a max() aggregate from the row holding the max); deletion
      // markers (target 0) are then dropped. Each edge comes as one hex string (readdir.ts).
      readDir: p(`SELECT ${edgeHexSql('target_id', 'name_hash', 'name', 'max(creation_time)')} ${LISTED_EDGES_SQL} LIMIT ${READ_DIR_FETCH}`).pluck(true),
      // READ_DIR's edges (the same query), each with its target's row in files when it has one here.
      readDirWithAttrs: p(`SELECT ${edgeWithAttrsHexSql('e.target_id', 'e.name_hash', 'e.name', 'e.ct', 'f')} FROM (
          SELECT target_id, name_hash, name, max(creation_time) AS ct ${LISTED_EDGES_SQL} LIMIT ${EDGE_WITH_ATTRS_LAYOUT.fetch}) AS e
        LEFT JOIN files AS f ON f.id = e.target_id
        ORDER BY e.name_hash, e.name`).pluck(true),
      fullReadDir: p(`SELECT target_id, name_hash, name, creation_time, current, owned FROM edges
        WHERE dir_id = @dir AND (name_hash > @hash OR (name_hash = @hash AND (name > @name OR (name = @name AND creation_time >= @time))))
        ORDER BY name_hash, name, creation_time LIMIT ${FULL_READ_DIR_FETCH}`),
      removeNonOwned: p('DELETE FROM edges WHERE dir_id = ? AND name_hash = ? AND name = ? AND creation_time = ? AND target_id = ? AND current = 0 AND owned = 0'),
      removeOwned: p('DELETE FROM edges WHERE dir_id = ? AND name_hash = ? AND name = ? AND creation_time = ? AND target_id = ? AND current = 0 AND owned = 1'),
      span: p('SELECT byte_offset, state, storage_class, parity, crc32, size, body FROM spans WHERE file_id = ? AND byte_offset = ?'),
      insertSpan: p('INSERT INTO spans (file_id, byte_offset, state, storage_class, parity, crc32, size, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      setSpanState: p('UPDATE spans SET state = ? WHERE file_id = ? AND byte_offset = ?'),
      insertBlockToSpan: p('INSERT INTO block_to_span (block_service_id, block_id, file_id, byte_offset) VALUES (?, ?, ?, ?)'),
      spansFrom: p(`SELECT byte_offset, state, storage_class, parity, crc32, size, body FROM spans
        WHERE file_id = @file AND byte_offset >= coalesce((SELECT max(byte_offset) FROM spans WHERE file_id = @file AND byte_offset <= @offset), 0)
        ORDER BY byte_offset LIMIT ${FILE_SPANS_FETCH}`),
      visitDirs: p(`SELECT id FROM directories WHERE id >= ? ORDER BY id LIMIT ${VISIT_IDS_PER_PAGE + 1}`),
      visitFiles: p(`SELECT id FROM files WHERE id >= ? ORDER BY id LIMIT ${VISIT_IDS_PER_PAGE + 1}`),
      visitTransient: p(`SELECT id, deadline FROM files WHERE transient = 1 AND id >= ? ORDER BY id LIMIT ${VISIT_TRANSIENT_PER_PAGE + 1}`),
    };
    const on = <K extends ShardKindName>(k: K, h: (req: ShardReq<K>) => ShardResp<K>) => {
      this.handlers[SHARD_MESSAGES[k].kind] = h as Handler;
    };
    on('LOOKUP', (r) => this.lookup(r));
    on('STAT', (r) => this.stat(r));
    on('READ_DIR', (r) => this.readDir(r));
    on('CONSTRUCT_FILE', (r) => this.constructFile(r));
    on('ADD_SPAN_INITIATE', (r) => this.addSpanInitiate(r));
    on('ADD_SPAN_CERTIFY', (r) => this.addSpanCertify(r));
    on('LINK_FILE', (r) => this.linkFile(r));
    on('SOFT_UNLINK_FILE', (r) => this.softUnlinkFile(r));
    on('FILE_SPANS', (r) => this.fileSpans(r));
    on('SAME_DIRECTORY_RENAME', (r) => this.sameDirectoryRename(r));
    on('VISIT_DIRECTORIES', (r) => this.visitIds(this.st.visitDirs, r.beginId));
    on('VISIT_FILES', (r) => this.visitIds(this.st.visitFiles, r.beginId));
    on('VISIT_TRANSIENT_FILES', (r) => this.visitTransientFiles(r));
    on('REMOVE_NON_OWNED_EDGE', (r) => this.removeNonOwnedEdge(r));
    on('REMOVE_OWNED_SNAPSHOT_FILE_EDGE', (r) => this.removeOwnedSnapshotFileEdge(r));
    on('FULL_READ_DIR', (r) => this.fullReadDir(r));
    on('READ_DIR_WITH_ATTRS', (r) => this.readDirWithAttrs(r));
    on('CREATE_DIRECTORY_INODE', (r) => this.createDirectoryInode(r));
    on('SET_DIRECTORY_OWNER', (r) => this.setDirectoryOwner(r));
    on('CREATE_LOCKED_CURRENT_EDGE', (r) => this.createLockedCurrentEdge(r));
    on('LOCK_CURRENT_EDGE', (r) => this.lockCurrentEdge(r));
    on('UNLOCK_CURRENT_EDGE', (r) => this.unlockCurrentEdge(r));
    for (const m of Object.values(SHARD_MESSAGES)) if (!this.handlers[m.kind]) throw new Error(`no handler for ${m.name}`);
  }

  /** Execute one decoded request; throws ShardFail for its error answer. */
  execute(kind: number, body: unknown): unknown {
    const h = this.handlers[kind];
    if (!h) fail(ErrorCode.MALFORMED_REQUEST, `unknown kind ${kind}`);
    return h(body);
  }

  /**
   * The shard's clock: wall-clock Eggs time, but strictly increasing within this shard, so that
   * two edges of one name never collide on the same nanosecond and mtimes always move forward.
   */
  now(): bigint {
    let t = eggsNow();
    if (t <= this.lastNow) t = this.lastNow + 1n;
    this.lastNow = t;
    return t;
  }

  /**
   * Cookie (metadata.md §4.2): one AES block, last 8 bytes. One ECB cipher per shard is reused
   * (each update() of 16 bytes is an independent block), instead of a cipher object per call.
   */
  cookie(fileId: bigint): bigint {
    this.cookieBlock.writeBigUInt64LE(fileId, 0);
    const out = this.cookieCipher.update(this.cookieBlock);
    return out.readBigUInt64LE(8);
  }

  // --- shared algorithms (metadata.md §4.2) ---

  private getDirectory(id: bigint): DirRow {
    if (!storable(id)) fail(ErrorCode.DIRECTORY_NOT_FOUND);
    const d = this.st.dir.get(id) as DirRow | undefined;
    if (!d) fail(ErrorCode.DIRECTORY_NOT_FOUND);
    return d;
  }

  private getCurrentEdge(dirId: bigint, name: Buffer, expectedTarget: bigint): EdgeRow {
    this.getDirectory(dirId);
    const e = this.st.currentEdge.get(dirId, nameHash(name), name) as EdgeRow | undefined;
    if (!e) fail(ErrorCode.NAME_NOT_FOUND);
    if (e.target_id !== expectedTarget) fail(ErrorCode.MISMATCHING_TARGET);
    return e;
  }

  private createCurrentEdge(dirId: bigint, name: Buffer, target: bigint, t: bigint, lock: boolean): void {
    validateNewName(name);
    const dir = this.getDirectory(dirId);
    if (dirId !== ROOT_DIR_INODE_ID && dir.owner_id === 0n) fail(ErrorCode.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY);
    const h = nameHash(name);
    const rows = this.st.edgesCurrentOrNewer.all(dirId, h, name, t) as EdgeRow[];
    let current: EdgeRow | undefined;
    for (const r of rows) {
      if (r.current === 0n) fail(ErrorCode.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
      current = r;
    }
    if (!current) {
      this.st.insertCurrentEdge.run(dirId, h, name, t, target, lock ? 1n : 0n);
    } else if (current.locked === 1n) {
      // An idempotent retry by the CDC: same target, same time.
      if (!(lock && current.target_id === target && current.creation_time === t)) fail(ErrorCode.NAME_IS_LOCKED);
    } else {
      if (isDir(target) || isDir(current.target_id)) fail(ErrorCode.CANNOT_OVERRIDE_NAME);
      // §8 item 12: a new current edge must be newer than the one it replaces.
      if (t <= current.creation_time) fail(ErrorCode.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
      // §8 item 11: match the replaced edge on (dir, name, creation time), not on the time alone.
      this.st.edgeToSnapshot.run(current.target_id !== target ? 1n : 0n, dirId, h, name, current.creation_time);
      this.st.insertCurrentEdge.run(dirId, h, name, t, target, lock ? 1n : 0n);
    }
    // max(): the directory mtime never moves backwards (invariant 4 of §3.5 stays true).
    this.st.setDirMtime.run(t, dirId);
  }

  /** Returns the time of the deletion marker written. */
  private softUnlinkCurrentEdge(dirId: bigint, name: Buffer, target: bigint, owned: boolean, now: bigint): bigint {
    const e = this.getCurrentEdge(dirId, name, target);
    if (e.locked === 1n) fail(ErrorCode.NAME_IS_LOCKED);
    const t = this.markerTime(e, now);
    this.st.edgeToSnapshot.run(owned ? 1n : 0n, dirId, e.name_hash, name, e.creation_time);
    this.st.insertSnapshotEdge.run(dirId, e.name_hash, name, t, 0n, 0n);
    this.st.setDirMtime.run(t, dirId);
    return t;
  }

  /** A deletion marker must be newer than the edge it ends, even if that edge came from a CDC clock ahead of ours. */
  private markerTime(e: EdgeRow, now: bigint): bigint {
    return now > e.creation_time ? now : e.creation_time + 1n;
  }

  private getTransientFile(id: bigint, cookie: bigint, now: bigint): FileRow {
    if (!storable(id)) fail(ErrorCode.FILE_NOT_FOUND);
    const f = this.st.file.get(id) as FileRow | undefined;
    if (!f || f.transient !== 1n || f.deadline === null || f.deadline <= now) fail(ErrorCode.FILE_NOT_FOUND);
    if (this.cookie(id) !== cookie) fail(ErrorCode.BAD_COOKIE);
    return f;
  }

  // --- reading ---

  private lookup(r: ShardReq<'LOOKUP'>): ShardResp<'LOOKUP'> {
    if (storable(r.dirId)) {
      const e = this.st.lookup.get(r.dirId, nameHash(r.name), r.name) as [bigint, bigint] | undefined;
      if (e) return { targetId: e[0], creationTime: e[1] };
    }
    this.getDirectory(r.dirId);
    fail(ErrorCode.NAME_NOT_FOUND);
  }

  private stat(r: ShardReq<'STAT'>): ShardResp<'STAT'> {
    if (isDir(r.id)) {
      const d = this.getDirectory(r.id);
      return { mtime: d.mtime, sizeOrOwner: d.owner_id, opaque: d.opaque };
    }
    const f = storable(r.id) ? (this.st.file.get(r.id) as FileRow | undefined) : undefined;
    if (!f) fail(ErrorCode.FILE_NOT_FOUND);
    return { mtime: f.mtime, sizeOrOwner: f.size, opaque: Buffer.alloc(0) };
  }

  /**
   * READ_DIR's whole response datagram: the hottest listing is encoded straight from the rows
   * (readdir.ts), without Edge objects. Throws ShardFail like a handler.
   */
  readDirResponse(requestId: bigint, r: ShardReq<'READ_DIR'>): Buffer {
    return this.readDirPage(requestId, r, this.st.readDir, EDGE_LAYOUT);
  }

  /**
   * READ_DIR_WITH_ATTRS (our extension) likewise: READ_DIR's edges and page rule, each edge with
   * its target's size and mtime where that is a linked file or symlink of this shard.
   */
  readDirWithAttrsResponse(requestId: bigint, r: ShardReq<'READ_DIR_WITH_ATTRS'>): Buffer {
    return this.readDirPage(requestId, r, this.st.readDirWithAttrs, EDGE_WITH_ATTRS_LAYOUT);
  }

  private readDirPage(requestId: bigint, r: ShardReq<'READ_DIR'>, query: Database.Statement, edge: EdgeLayout): Buffer {
    const asOf = r.asOfTime & MAX_I63;
    if (r.startHash > MAX_I63 || !storable(r.dirId)) {
      this.getDirectory(r.dirId);
      return encodeReadDirResponse(requestId, [], 0, edge);
    }
    const edges = query.all(r.dirId, r.startHash, asOf) as string[];
    // Edges exist only in existing directories (foreign key): only an empty answer needs the check.
    if (edges.length === 0) this.getDirectory(r.dirId);
    const count = readDirPageCount(edges, edge.fetch);
    if (count < 0) fail(ErrorCode.INTERNAL_ERROR, `a page of directory entries all share hash 0x${edgeHashHex(edges[0]!)}`);
    return encodeReadDirResponse(requestId, edges, count, edge);
  }

  /** READ_DIR as a response body, for callers of execute(); the server uses readDirResponse. */
  private readDir(r: ShardReq<'READ_DIR'>): ShardResp<'READ_DIR'> {
    return decode(SHARD_MESSAGES.READ_DIR.resp, this.readDirResponse(0n, r).subarray(HEADER_BYTES));
  }

  /** READ_DIR_WITH_ATTRS as a response body, for callers of execute(); the server uses readDirWithAttrsResponse. */
  private readDirWithAttrs(r: ShardReq<'READ_DIR_WITH_ATTRS'>): ShardResp<'READ_DIR_WITH_ATTRS'> {
    return decode(SHARD_MESSAGES.READ_DIR_WITH_ATTRS.resp, this.readDirWithAttrsResponse(0n, r).subarray(HEADER_BYTES));
  }

  private fullReadDir(r: ShardReq<'FULL_READ_DIR'>): ShardResp<'FULL_READ_DIR'> {
    this.getDirectory(r.dirId);
    if (r.startHash > MAX_I63) return { finished: true, results: [] };
    // A start time beyond any storable time only skips the rest of that name.
    const rows = this.st.fullReadDir.all({ dir: r.dirId, hash: r.startHash, name: r.startName, time: r.startTime > MAX_I63 ? MAX_I63 : r.startTime }) as EdgeRow[];
    const results: EdgeWithOwnershipT[] = [];
    let used = HEADER_BYTES + 3;
    let finished = true;
    for (const row of rows) {
      const size = EDGE_MIN_BYTES + row.name.length;
      if (used + size > UDP_MTU) {
        finished = false;
        break;
      }
      used += size;
      const owning = row.current === 1n || row.owned === 1n;
      results.push({ targetId: owning ? row.target_id | EXTRA_BIT : row.target_id, nameHash: row.name_hash, name: row.name, creationTime: row.creation_time });
    }
    return { finished, results };
  }

  private fileSpans(r: ShardReq<'FILE_SPANS'>): ShardResp<'FILE_SPANS'> {
    const f = storable(r.fileId) ? (this.st.file.get(r.fileId) as FileRow | undefined) : undefined;
    if (!f) fail(ErrorCode.FILE_NOT_FOUND);
    if (f.transient === 1n) fail(ErrorCode.FILE_IS_TRANSIENT);
    const rows = this.st.spansFrom.all({ file: r.fileId, offset: r.byteOffset }) as SpanRow[];
    const spans: FetchedSpanT[] = [];
    let budget = PAGE_BUDGET_BYTES;
    let nextOffset = 0n;
    for (const row of rows) {
      const span = this.fetchedSpan(row);
      const size = FetchedSpan.size(span);
      if (size > budget) {
        nextOffset = row.byte_offset;
        if (spans.length === 0) fail(ErrorCode.INTERNAL_ERROR, `span at ${row.byte_offset} of ${size} bytes does not fit a datagram`);
        break;
      }
      budget -= size;
      spans.push(span);
    }
    return { nextOffset, spans };
  }

  private fetchedSpan(row: SpanRow): FetchedSpanT {
    const storageClass = Number(row.storage_class);
    const base = { byteOffset: row.byte_offset, parity: Number(row.parity), storageClass, crc32: crcToBytes(Number(row.crc32)), size: row.size };
    if (storageClass === STORAGE_INLINE) return { ...base, bodyBytes: row.body, bodyBlocks: [] };
    if (storageClass === STORAGE_ZERO_FILL) return { ...base, bodyBytes: Buffer.alloc(0), bodyBlocks: [] };
    const bodyBlocks: FetchedBlockT[] = unpackBlocks(row.body).map((b) => {
      const s = this.registry.get(b.serviceId);
      if (!s || !s.ipBytes) return { ip: UNKNOWN_IP, port: UNKNOWN_PORT, blockId: b.blockId, crc32: b.crc, size: BigInt(b.size), flags: BLOCK_FLAG_STALE };
      // §8 item 29: TERMINAL is reported.
      const flags = (s.terminal ? BLOCK_FLAG_TERMINAL : 0) | (s.stale ? BLOCK_FLAG_STALE : 0);
      return { ip: s.ipBytes, port: s.port, blockId: b.blockId, crc32: b.crc, size: BigInt(b.size), flags };
    });
    return { ...base, bodyBytes: Buffer.alloc(0), bodyBlocks };
  }

  // --- file creation ---

  private constructFile(r: ShardReq<'CONSTRUCT_FILE'>): ShardResp<'CONSTRUCT_FILE'> {
    if (r.type !== InodeType.FILE && r.type !== InodeType.SYMLINK) fail(ErrorCode.TYPE_IS_DIRECTORY, `cannot construct an inode of type ${r.type}`);
    const { counter } = (r.type === InodeType.FILE ? this.st.takeFileCounter : this.st.takeSymlinkCounter).get() as { counter: bigint };
    if (counter > MAX_LOCAL_ID) fail(ErrorCode.INTERNAL_ERROR, `shard ${this.shard} ran out of ${r.type === InodeType.FILE ? 'file' : 'symlink'} ids`);
    // The prototype's id scheme (metadata.md §2.5): the counter is the local id.
    const id = (BigInt(r.type) << 61n) | (counter << 8n) | BigInt(this.shard);
    const now = this.now();
    this.st.insertFile.run(id, now, now + DEADLINE_DURATION_NS, BigInt(SPAN_CLEAN));
    return { id, cookie: this.cookie(id) };
  }

  private allocateBlockId(now: bigint): bigint {
    const info = this.st.shardInfo.get() as { next_block_id: bigint };
    const byTime = BigInt(this.shard) | (now & ~0xffn);
    const prev = info.next_block_id + COUNTER_STEP;
    const id = prev > byTime ? prev : byTime;
    if (id > MAX_I63) fail(ErrorCode.INTERNAL_ERROR, 'block ids exhausted');
    this.st.setBlockCounter.run(id);
    return id;
  }

  private addSpanInitiate(r: ShardReq<'ADD_SPAN_INITIATE'>): ShardResp<'ADD_SPAN_INITIATE'> {
    const now = this.now();
    const f = this.getTransientFile(r.fileId, r.cookie, now);
    const blockBacked = r.storageClass >= 2;
    if (blockBacked && r.parity === 0) fail(ErrorCode.INCONSISTENT_STORAGE_CLASS_PARITY);
    const deadline = now + DEADLINE_DURATION_NS;
    if (r.size === 0n) {
      if (r.storageClass !== STORAGE_ZERO_FILL) fail(ErrorCode.BAD_SPAN_BODY, 'only zero-fill spans may be empty');
      this.st.setDeadline.run(deadline, r.fileId);
      return { blocks: [] };
    }
    const crc = crcFromBytes(r.crc32);
    if (r.byteOffset === f.size) {
      if (f.last_span_state !== BigInt(SPAN_CLEAN)) fail(ErrorCode.LAST_SPAN_STATE_NOT_CLEAN);
      validateSpanBody(r, crc);
      if (!blockBacked) {
        const body = r.storageClass === STORAGE_INLINE ? r.bodyBytes : Buffer.alloc(0);
        this.st.insertSpan.run(r.fileId, r.byteOffset, BigInt(SPAN_CLEAN), BigInt(r.storageClass), 0n, BigInt(crc), r.size, body);
        this.st.appendSpanToFile.run(r.size, BigInt(SPAN_CLEAN), deadline, r.fileId);
        return { blocks: [] };
      }
      const services = this.registry.pick(r.storageClass, r.bodyBlocks.length);
      if (!services) fail(ErrorCode.COULD_NOT_PICK_BLOCK_SERVERS, `need ${r.bodyBlocks.length} distinct services of storage class ${r.storageClass}`);
      const stored: StoredBlock[] = services.map((s, i) => ({
        serviceId: s.id,
        blockId: this.allocateBlockId(now),
        crc: r.bodyBlocks[i]!.crc32,
        size: Number(r.bodyBlocks[i]!.size),
      }));
      this.st.insertSpan.run(r.fileId, r.byteOffset, BigInt(SPAN_DIRTY), BigInt(r.storageClass), BigInt(r.parity), BigInt(crc), r.size, packBlocks(stored));
      for (const b of stored) this.st.insertBlockToSpan.run(BigInt(b.serviceId), b.blockId, r.fileId, r.byteOffset);
      this.st.appendSpanToFile.run(r.size, BigInt(SPAN_DIRTY), deadline, r.fileId);
      return { blocks: this.blockInfos(stored) };
    }
    // A retry of an earlier initiate: it must match the stored span exactly.
    const s = this.st.span.get(r.fileId, r.byteOffset) as SpanRow | undefined;
    if (!s || Number(s.storage_class) !== r.storageClass || s.crc32 !== BigInt(crc) || s.size !== r.size || Number(s.parity) !== r.parity) {
      fail(ErrorCode.SPAN_NOT_FOUND);
    }
    this.st.setDeadline.run(deadline, r.fileId);
    return { blocks: blockBacked ? this.blockInfos(unpackBlocks(s.body)) : [] };
  }

  private blockInfos(blocks: StoredBlock[]): BlockInfoT[] {
    return blocks.map((b) => {
      const s = this.registry.get(b.serviceId);
      if (!s || !s.ipBytes || s.key.length === 0) fail(ErrorCode.BLOCK_SERVER_NOT_FOUND, `block service ${b.serviceId} is not in the registry`);
      return { ip: s.ipBytes, port: s.port, blockId: b.blockId, certificate: blockWriteCertificate(s.key, b.blockId, b.crc, b.size) };
    });
  }

  private addSpanCertify(r: ShardReq<'ADD_SPAN_CERTIFY'>): ShardResp<'ADD_SPAN_CERTIFY'> {
    const now = this.now();
    const f = this.getTransientFile(r.fileId, r.cookie, now);
    const s = this.st.span.get(r.fileId, r.byteOffset) as SpanRow | undefined;
    if (!s) fail(ErrorCode.SPAN_NOT_FOUND);
    if (s.storage_class < 2n) fail(ErrorCode.CANNOT_CERTIFY_BLOCKLESS_SPAN);
    const blocks = unpackBlocks(s.body);
    if (r.proofs.length !== blocks.length) fail(ErrorCode.BAD_NUMBER_OF_BLOCKS_PROOFS, `${r.proofs.length} proofs for ${blocks.length} blocks`);
    blocks.forEach((b, i) => {
      const svc = this.registry.get(b.serviceId);
      if (!svc || svc.key.length === 0) fail(ErrorCode.BLOCK_SERVER_NOT_FOUND);
      if (!macEquals(blockWriteProof(svc.key, b.blockId), r.proofs[i]!)) fail(ErrorCode.BAD_BLOCK_PROOF, `block ${i}`);
    });
    this.st.setSpanState.run(BigInt(SPAN_CLEAN), r.fileId, r.byteOffset);
    if (f.size === r.byteOffset + s.size) this.st.certifyFile.run(BigInt(SPAN_CLEAN), now, r.fileId);
    return {};
  }

  // --- linking, unlinking, renaming ---

  private linkFile(r: ShardReq<'LINK_FILE'>): ShardResp<'LINK_FILE'> {
    if (this.cookie(r.fileId) !== r.cookie) fail(ErrorCode.BAD_COOKIE);
    const f = storable(r.fileId) ? (this.st.file.get(r.fileId) as FileRow | undefined) : undefined;
    if (f && f.transient === 0n) return {}; // retry of a link that succeeded
    const now = this.now();
    // GetTransientFile, with the cookie already checked.
    if (!f || f.deadline === null || f.deadline <= now) fail(ErrorCode.FILE_NOT_FOUND);
    if (f.last_span_state !== BigInt(SPAN_CLEAN)) fail(ErrorCode.LAST_SPAN_STATE_NOT_CLEAN);
    this.createCurrentEdge(r.ownerId, r.name, r.fileId, now, false);
    this.st.linkFile.run(now, r.fileId);
    return {};
  }

  private softUnlinkFile(r: ShardReq<'SOFT_UNLINK_FILE'>): ShardResp<'SOFT_UNLINK_FILE'> {
    if (isDir(r.fileId)) fail(ErrorCode.TYPE_IS_DIRECTORY);
    this.softUnlinkCurrentEdge(r.ownerId, r.name, r.fileId, true, this.now());
    return {};
  }

  private sameDirectoryRename(r: ShardReq<'SAME_DIRECTORY_RENAME'>): ShardResp<'SAME_DIRECTORY_RENAME'> {
    validateNewName(r.newName);
    const t = this.softUnlinkCurrentEdge(r.dirId, r.oldName, r.targetId, false, this.now());
    this.createCurrentEdge(r.dirId, r.newName, r.targetId, t, false);
    return {};
  }

  // --- GC and maintenance ---

  private visitIds(stmt: Database.Statement, beginId: bigint): { nextId: bigint; ids: bigint[] } {
    if (!storable(beginId)) return { nextId: 0n, ids: [] };
    const rows = stmt.all(beginId) as { id: bigint }[];
    const ids = rows.map((x) => x.id);
    const nextId = ids.length > VISIT_IDS_PER_PAGE ? ids.pop()! : 0n;
    return { nextId, ids };
  }

  private visitTransientFiles(r: ShardReq<'VISIT_TRANSIENT_FILES'>): ShardResp<'VISIT_TRANSIENT_FILES'> {
    if (!storable(r.beginId)) return { nextId: 0n, files: [] };
    const rows = this.st.visitTransient.all(r.beginId) as { id: bigint; deadline: bigint }[];
    // §8 item 22: next_id is the first id *not* returned.
    const nextId = rows.length > VISIT_TRANSIENT_PER_PAGE ? rows.pop()!.id : 0n;
    return { nextId, files: rows.map((x) => ({ id: x.id, deadlineTime: x.deadline })) };
  }

  private removeNonOwnedEdge(r: ShardReq<'REMOVE_NON_OWNED_EDGE'>): ShardResp<'REMOVE_NON_OWNED_EDGE'> {
    this.getDirectory(r.dirId);
    if (!storable(r.targetId) || !storable(r.creationTime)) fail(ErrorCode.EDGE_NOT_FOUND);
    const res = this.st.removeNonOwned.run(r.dirId, nameHash(r.name), r.name, r.creationTime, r.targetId);
    if (res.changes === 0) fail(ErrorCode.EDGE_NOT_FOUND);
    return {};
  }

  private removeOwnedSnapshotFileEdge(r: ShardReq<'REMOVE_OWNED_SNAPSHOT_FILE_EDGE'>): ShardResp<'REMOVE_OWNED_SNAPSHOT_FILE_EDGE'> {
    if (isDir(r.targetId)) fail(ErrorCode.TYPE_IS_DIRECTORY);
    this.getDirectory(r.dirId);
    if (!storable(r.targetId) || !storable(r.creationTime)) fail(ErrorCode.EDGE_NOT_FOUND);
    // §4.7 [bug]: the prototype deletes the edge and silently leaks a file of another shard. We
    // refuse instead; the file stays reachable through its history until cross-shard GC exists.
    if (shardOf(r.targetId) !== this.shard) fail(ErrorCode.MALFORMED_REQUEST, `file ${r.targetId} lives in shard ${shardOf(r.targetId)}, cannot free it from shard ${this.shard}`);
    const res = this.st.removeOwned.run(r.dirId, nameHash(r.name), r.name, r.creationTime, r.targetId);
    if (res.changes === 0) fail(ErrorCode.EDGE_NOT_FOUND);
    this.st.makeTransientAgain.run(r.targetId);
    return {};
  }

  // --- CDC-only ---

  private createDirectoryInode(r: ShardReq<'CREATE_DIRECTORY_INODE'>): ShardResp<'CREATE_DIRECTORY_INODE'> {
    if (!isDir(r.id)) fail(ErrorCode.TYPE_IS_NOT_DIRECTORY);
    if (!storable(r.id) || shardOf(r.id) !== this.shard) fail(ErrorCode.MALFORMED_REQUEST, `directory ${r.id} does not belong to shard ${this.shard}`);
    if (r.ownerId !== 0n && (!storable(r.ownerId) || !isDir(r.ownerId))) fail(ErrorCode.TYPE_IS_NOT_DIRECTORY, 'owner is not a directory');
    const now = this.now();
    const d = this.st.dir.get(r.id) as DirRow | undefined;
    if (!d) {
      this.st.insertDir.run(r.id, r.ownerId, now, BigInt(HASH_MODE_TRUNC_MD5), r.opaque);
      return { mtime: now };
    }
    if (d.owner_id !== r.ownerId) fail(ErrorCode.MISMATCHING_OWNER);
    const mtime = now > d.mtime ? now : d.mtime;
    this.st.updateDir.run(mtime, r.opaque, r.id);
    return { mtime };
  }

  private setDirectoryOwner(r: ShardReq<'SET_DIRECTORY_OWNER'>): ShardResp<'SET_DIRECTORY_OWNER'> {
    if (r.ownerId !== 0n && (!storable(r.ownerId) || !isDir(r.ownerId))) fail(ErrorCode.TYPE_IS_NOT_DIRECTORY, 'owner is not a directory');
    this.getDirectory(r.dirId);
    if (r.dirId === ROOT_DIR_INODE_ID && r.ownerId !== 0n) fail(ErrorCode.MALFORMED_REQUEST, 'the root directory has no owner');
    if (r.ownerId === 0n && this.st.hasCurrentEdges.get(r.dirId)) fail(ErrorCode.DIRECTORY_NOT_EMPTY);
    this.st.setDirOwner.run(r.ownerId, r.dirId);
    return {};
  }

  private createLockedCurrentEdge(r: ShardReq<'CREATE_LOCKED_CURRENT_EDGE'>): ShardResp<'CREATE_LOCKED_CURRENT_EDGE'> {
    if (!storable(r.creationTime)) fail(ErrorCode.MALFORMED_REQUEST, 'creation time out of range');
    if (r.targetId === 0n || !storable(r.targetId) || inodeType(r.targetId) === InodeType.RESERVED) fail(ErrorCode.MALFORMED_REQUEST, 'bad target id');
    this.createCurrentEdge(r.dirId, r.name, r.targetId, r.creationTime, true);
    return {};
  }

  private lockCurrentEdge(r: ShardReq<'LOCK_CURRENT_EDGE'>): ShardResp<'LOCK_CURRENT_EDGE'> {
    const e = this.getCurrentEdge(r.dirId, r.name, r.targetId);
    if (e.locked !== 1n) this.st.setEdgeLock.run(1n, r.dirId, e.name_hash, r.name, e.creation_time);
    return {};
  }

  private unlockCurrentEdge(r: ShardReq<'UNLOCK_CURRENT_EDGE'>): ShardResp<'UNLOCK_CURRENT_EDGE'> {
    const e = this.getCurrentEdge(r.dirId, r.name, r.targetId);
    const now = this.now();
    if (r.wasMoved) {
      const t = this.markerTime(e, now);
      this.st.edgeToSnapshot.run(0n, r.dirId, e.name_hash, r.name, e.creation_time);
      this.st.insertSnapshotEdge.run(r.dirId, e.name_hash, r.name, t, 0n, 0n);
      this.st.setDirMtime.run(t, r.dirId);
    } else {
      if (e.locked !== 0n) this.st.setEdgeLock.run(0n, r.dirId, e.name_hash, r.name, e.creation_time);
      this.st.setDirMtime.run(now, r.dirId);
    }
    return {};
  }
}

/** Span body rules (metadata.md §7.4), with the prototype's assertions turned into BAD_SPAN_BODY. */
function validateSpanBody(r: ShardReq<'ADD_SPAN_INITIATE'>, crc: number): void {
  const bad = (why: string): never => fail(ErrorCode.BAD_SPAN_BODY, why);
  if (r.storageClass === STORAGE_ZERO_FILL) {
    if (r.parity !== 0) bad('zero-fill span with parity');
    if (r.bodyBytes.length !== 0 || r.bodyBlocks.length !== 0) bad('zero-fill span with a body');
    if (crc32cZeros(r.size) !== crc) bad('zero-fill crc mismatch');
    return;
  }
  if (r.storageClass === STORAGE_INLINE) {
    if (r.parity !== 0) bad('inline span with parity');
    if (r.bodyBlocks.length !== 0) bad('inline span with blocks');
    if (BigInt(r.bodyBytes.length) !== r.size) bad('inline body length differs from size');
    if (crc32c(r.bodyBytes) !== crc) bad('inline crc mismatch');
    return;
  }
  const d = r.parity & 0x0f;
  const p = r.parity >> 4;
  if (r.bodyBytes.length !== 0) bad('block-backed span with inline bytes');
  if (r.bodyBlocks.length !== d + p) bad(`${r.bodyBlocks.length} blocks for parity ${d}+${p}`);
  let dataBytes = 0n;
  for (const b of r.bodyBlocks) if (b.size > 0xffffffffn) bad('block larger than 4 GiB');
  for (let i = 0; i < d; i++) dataBytes += r.bodyBlocks[i]!.size;
  if (dataBytes !== r.size) bad(`data blocks hold ${dataBytes} bytes, span size is ${r.size}`);
  if (d === 1) {
    for (const b of r.bodyBlocks) if (crcFromBytes(b.crc32) !== crc) bad('mirrored block crc differs from span crc');
  } else {
    let acc = 0;
    for (let i = 0; i < d; i++) acc = crc32cCombine(acc, crcFromBytes(r.bodyBlocks[i]!.crc32), r.bodyBlocks[i]!.size);
    if (acc !== crc) bad('data block crcs do not combine to the span crc');
  }
}
