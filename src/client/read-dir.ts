// Listing a directory with READ_DIR, several pages at once. A page's request needs only the hash
// to start from, and names hash uniformly over 63 bits, so the first page tells how many pages the
// rest of the directory holds. That rest is cut into hash ranges of about PAGES_PER_RANGE pages,
// up to RANGES_IN_FLIGHT of them read at once and handed out in order: the listing is the same
// (hash, name)-ordered sequence a page-by-page walk gives, in a fraction of the round trips, and
// memory stays bounded by the ranges in flight, not by the directory's size.
import { EggsError, ErrorCode } from '../proto/errors.js';

/** What the listing needs of an edge: READ_DIR's Edge and READ_DIR_WITH_ATTRS's EdgeWithAttrs have it. */
export interface HashedEdge {
  readonly nameHash: bigint;
}

/** Names hash to 63 bits (metadata.md, READ_DIR): every hash is below this. */
export const HASH_SPACE = 1n << 63n;
/** Pages one range is planned to hold: fewer means more parallelism but more pages read past a range's end. */
export const PAGES_PER_RANGE = 4;
/** Ranges read at once (each one page request at a time). */
export const RANGES_IN_FLIGHT = 16;
/** Bound on the ranges one listing is cut into (a huge directory gets longer ranges). */
export const MAX_RANGES = 4096;

export interface ReadDirPage<E extends HashedEdge = HashedEdge> {
  nextHash: bigint;
  results: E[];
}

/** One READ_DIR page of the directory, from `startHash` (inclusive). */
export type FetchPage<E extends HashedEdge = HashedEdge> = (startHash: bigint) => Promise<ReadDirPage<E>>;

/**
 * Start hashes of the ranges that cover [nextHash, HASH_SPACE), given that the first page held
 * `firstPageEntries` edges below `nextHash`. Range i is [starts[i], starts[i + 1]); the last one
 * ends at HASH_SPACE.
 */
export function planRanges(firstPageEntries: number, nextHash: bigint): bigint[] {
  if (nextHash <= 0n || nextHash >= HASH_SPACE) throw new RangeError(`planRanges: next hash ${nextHash} outside (0, 2^63)`);
  const rest = HASH_SPACE - nextHash;
  // The first page covered [0, nextHash) of the hash space; the rest holds about rest / nextHash
  // pages as full. A first page cut short by a huge hash bucket (no entries) tells nothing: walk.
  const pages = firstPageEntries > 0 ? rest / nextHash : 0n;
  const wanted = pages / BigInt(PAGES_PER_RANGE);
  const count = wanted < 1n ? 1n : wanted > BigInt(MAX_RANGES) ? BigInt(MAX_RANGES) : wanted;
  const starts: bigint[] = [];
  for (let i = 0n; i < count; i++) starts.push(nextHash + (rest * i) / count);
  return starts;
}

/** The edges with hashes in [start, end), page by page. */
async function readRange<E extends HashedEdge>(fetchPage: FetchPage<E>, start: bigint, end: bigint): Promise<E[]> {
  const out: E[] = [];
  for (let hash = start; ; ) {
    const page = await fetchPage(hash);
    for (const e of page.results) {
      if (e.nameHash >= end) return out;
      out.push(e);
    }
    if (page.nextHash === 0n || page.nextHash >= end) return out;
    if (page.nextHash <= hash) throw new EggsError(ErrorCode.MALFORMED_RESPONSE, `READ_DIR cursor went backwards (${page.nextHash} after ${hash})`);
    hash = page.nextHash;
  }
}

/**
 * The directory's current edges in (hash, name) order, a batch at a time (the first page, then
 * each range in order). Ranges after the one being handed out are read ahead, at most
 * RANGES_IN_FLIGHT in all; a consumer that stops early leaves at most those to finish unread.
 */
export async function* readDirBatches<E extends HashedEdge>(fetchPage: FetchPage<E>): AsyncGenerator<E[]> {
  const first = await fetchPage(0n);
  yield first.results;
  if (first.nextHash === 0n) return;
  const starts = planRanges(first.results.length, first.nextHash);
  const inFlight: Promise<E[]>[] = [];
  let next = 0;
  const launch = () => {
    while (inFlight.length < RANGES_IN_FLIGHT && next < starts.length) {
      const i = next++;
      const p = readRange(fetchPage, starts[i]!, i + 1 < starts.length ? starts[i + 1]! : HASH_SPACE);
      p.catch(() => {}); // awaited in order below; one left behind by an early stop must not be unhandled
      inFlight.push(p);
    }
  };
  launch();
  while (inFlight.length > 0) {
    const batch = await inFlight.shift()!;
    launch();
    yield batch;
  }
}
