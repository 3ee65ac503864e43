// READ_DIR's answer (metadata.md §4.3 READ_DIR, §1.7), encoded straight from the rows SQLite
// prints; and READ_DIR_WITH_ATTRS's (our extension), whose edges carry three fields more. Measured:
// better-sqlite3 spends about 2 µs creating each Buffer and about 0.5 µs per BigInt, so a 10-entry
// page read as 40 values (3 BigInts and a name Buffer per edge) cost 16 µs of query; read as one
// hex string per edge it costs 7 µs. Each string is already the edge in wire order; only its u64s
// need their bytes reversed (SQLite prints them big-endian).
import assert from 'node:assert';
import { HEADER_BYTES, SHARD_MAGIC, UDP_MTU } from '../proto/envelope.js';
import { SHARD_MESSAGES } from '../proto/messages.js';

/** Header, next_hash u64 and the list's u16 length: the bytes of an empty page. */
export const READ_DIR_EMPTY_BYTES = HEADER_BYTES + 8 + 2;
/** target_id u64, name_hash u64, name length u8, creation_time u64. */
export const EDGE_MIN_BYTES = 25;
/** EdgeWithAttrs beyond an Edge: has_attrs u8, size u64, mtime u64. */
const EDGE_ATTRS_BYTES = 17;

/** Where an edge kind's fields sit, as far as paging and byte order need. */
export interface EdgeLayout {
  readonly kind: number;
  /** Bytes of an edge besides its name. */
  readonly fixedBytes: number;
  /** Offsets from the end of the name of the u64s after it. */
  readonly u64sAfterName: readonly number[];
  /** Edges a query fetches: the most that can fit, plus one to see where the page ends. */
  readonly fetch: number;
}

function layout(kind: number, fixedBytes: number, u64sAfterName: number[]): EdgeLayout {
  return { kind, fixedBytes, u64sAfterName, fetch: Math.floor((UDP_MTU - READ_DIR_EMPTY_BYTES) / fixedBytes) + 1 };
}

/** READ_DIR's Edge: creation_time after the name. */
export const EDGE_LAYOUT = layout(SHARD_MESSAGES.READ_DIR.kind, EDGE_MIN_BYTES, [0]);
/** READ_DIR_WITH_ATTRS's EdgeWithAttrs: creation_time, has_attrs u8, size, mtime after the name. */
export const EDGE_WITH_ATTRS_LAYOUT = layout(SHARD_MESSAGES.READ_DIR_WITH_ATTRS.kind, EDGE_MIN_BYTES + EDGE_ATTRS_BYTES, [0, 9, 17]);
export const READ_DIR_FETCH = EDGE_LAYOUT.fetch;

const U64_BYTES = 8;
const HASH_OFFSET = 8; // within an Edge
const NAME_LENGTH_OFFSET = 16;
const HASH_HEX_START = 2 * HASH_OFFSET;
const HASH_HEX_END = HASH_HEX_START + 2 * U64_BYTES;

/**
 * SQL expression of one Edge as hex, fields in wire order, integers big-endian and zero-padded:
 * target (16 digits), hash (16), name length (2), name (2 per byte), creation time (16). The
 * arguments are SQL expressions; the values must be non-negative (all stored ones are).
 */
export function edgeHexSql(targetId: string, nameHash: string, name: string, creationTime: string): string {
  return `printf('%016x%016x%02x%s%016x', ${targetId}, ${nameHash}, length(${name}), hex(${name}), ${creationTime})`;
}

/**
 * edgeHexSql followed by the attributes of EdgeWithAttrs: has_attrs (1 where the target is a
 * linked file of this shard: its row in files, `f`, is there with transient = 0), size, mtime.
 */
export function edgeWithAttrsHexSql(targetId: string, nameHash: string, name: string, creationTime: string, f: string): string {
  const linked = `coalesce(${f}.transient = 0, 0)`;
  return `printf('%016x%016x%02x%s%016x%02x%016x%016x', ${targetId}, ${nameHash}, length(${name}), hex(${name}), ${creationTime}, ${linked}, CASE WHEN ${linked} THEN ${f}.size ELSE 0 END, CASE WHEN ${linked} THEN ${f}.mtime ELSE 0 END)`;
}

/**
 * How many of `edges` (edgeHexSql strings in (hash, name) order, at most READ_DIR_FETCH) go on
 * the page: edges are appended while they fit in UDP_MTU; at the first that does not, every edge
 * of its hash is taken off the end again, so that a hash bucket is never split across pages. When
 * the count is below edges.length, the page's next_hash is the hash of edges[count]. -1 when
 * a whole page of edges shares one hash (no page can be made).
 */
export function readDirPageCount(edges: readonly string[], fetch = READ_DIR_FETCH): number {
  let usedBytes = READ_DIR_EMPTY_BYTES;
  for (let i = 0; i < edges.length; i++) {
    usedBytes += edges[i]!.length >> 1;
    if (usedBytes > UDP_MTU) {
      let count = i;
      while (count > 0 && sameHash(edges[count - 1]!, edges[i]!)) count--;
      return count > 0 ? count : -1;
    }
  }
  // Only a short result may fit whole: a full fetch never fits, so its last edge marks the end.
  assert(edges.length < fetch, 'a full fetch of edges fits one page');
  return edges.length;
}

/** The name hash of an edgeHexSql string, as 16 big-endian hex digits. */
export function edgeHashHex(edge: string): string {
  return edge.slice(HASH_HEX_START, HASH_HEX_END);
}

function sameHash(a: string, b: string): boolean {
  for (let c = HASH_HEX_START; c < HASH_HEX_END; c++) if (a.charCodeAt(c) !== b.charCodeAt(c)) return false;
  return true;
}

/** The READ_DIR (or, by `edge`, READ_DIR_WITH_ATTRS) response datagram with the first `count` edges (see readDirPageCount). */
export function encodeReadDirResponse(requestId: bigint, edges: readonly string[], count: number, edge: EdgeLayout = EDGE_LAYOUT): Buffer {
  assert(count >= 0 && count <= edges.length);
  let sizeBytes = READ_DIR_EMPTY_BYTES;
  for (let i = 0; i < count; i++) sizeBytes += edges[i]!.length >> 1;
  assert(sizeBytes <= UDP_MTU);
  const buf = Buffer.allocUnsafe(sizeBytes);
  buf.writeUInt32LE(SHARD_MAGIC, 0);
  buf.writeBigUInt64LE(requestId, 4);
  buf[12] = edge.kind;
  const nextHashAt = HEADER_BYTES;
  if (count < edges.length) {
    const written = buf.write(edgeHashHex(edges[count]!), nextHashAt, 'hex');
    assert(written === U64_BYTES, 'edge hash is 16 hex digits');
    reverse64(buf, nextHashAt);
  } else {
    buf.fill(0, nextHashAt, nextHashAt + U64_BYTES);
  }
  buf.writeUInt16LE(count, nextHashAt + U64_BYTES);
  // One hex write for the whole page (a native call per edge cost more than the edges' bytes).
  const pageHex = count === edges.length ? edges.join('') : edges.slice(0, count).join('');
  const written = buf.write(pageHex, READ_DIR_EMPTY_BYTES, 'hex');
  assert(written === sizeBytes - READ_DIR_EMPTY_BYTES, 'edges are hex');
  let offset = READ_DIR_EMPTY_BYTES;
  for (let i = 0; i < count; i++) {
    const nameBytes = buf[offset + NAME_LENGTH_OFFSET]!;
    const edgeBytes = edge.fixedBytes + nameBytes;
    // A length byte that disagrees would mean the SQL printed something else than this layout.
    assert(edgeBytes * 2 === edges[i]!.length, 'edge hex has the layout');
    reverse64(buf, offset);
    reverse64(buf, offset + HASH_OFFSET);
    const afterName = offset + NAME_LENGTH_OFFSET + 1 + nameBytes;
    for (const at of edge.u64sAfterName) reverse64(buf, afterName + at);
    offset += edgeBytes;
  }
  assert(offset === sizeBytes);
  return buf;
}

/** Big-endian u64 at `at` to little-endian, in place. */
function reverse64(buf: Buffer, at: number): void {
  for (let lo = at, hi = at + U64_BYTES - 1; lo < hi; lo++, hi--) {
    const t = buf[lo]!;
    buf[lo] = buf[hi]!;
    buf[hi] = t;
  }
}
