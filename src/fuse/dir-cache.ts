// Directory lookahead for the FUSE driver: whole listings (name → id) held for at most ttlMs from
// the moment their fetch STARTED, so that one-at-a-time LOOKUPs in a busy directory (stat, ls -l,
// find, du, rsync) are answered without a shard round trip each. The kernel already caches the
// entries we return for the same time, so the mount is no staler for other clients' changes than
// before; our own changes are applied here (or the listing dropped) before their reply.
//
// A directory is fetched once LOOKAHEAD_AFTER_LOOKUPS lookups in it went to the shard within one
// TTL window (single-flight; lookups meanwhile still go to the shard), refetched when it expires
// while it is still being used, and filled by readdir, which lists whole directories anyway.
// Mutations made while a fetch is in flight are journalled and replayed onto its result (the pages
// read before the mutation do not show it); one whose effect is unknown discards the fetch.
//
// A listing also keeps its names' order, so that lookups walking it (in readdir order, as ls -l,
// find, du and rsync do) are seen as a walk, and the ids coming next are handed out for their
// attributes to be fetched ahead (stat-ahead.ts), with a window that grows as the walk goes on,
// as file read-ahead does.
import assert from 'node:assert/strict';

/** Shard lookups in one directory (within one TTL window) before its whole listing is fetched. */
export const LOOKAHEAD_AFTER_LOOKUPS = 8;
/** Listings held at once (least recently used dropped first). */
export const MAX_CACHED_DIRS = 64;
/** Names held over all listings. */
export const MAX_CACHED_ENTRIES = 262_144;
/** A directory with more names is not cached (its listing would cost too much to refresh every TTL). */
export const MAX_LISTED_ENTRIES = 65_536;
/** Directories whose shard lookups are counted (oldest dropped first). */
const MAX_COUNTED_DIRS = 256;
/** A directory found above MAX_LISTED_ENTRIES is not fetched again for this long. */
const TOO_BIG_RECHECK_MS = 60_000;
/** Mutations journalled per fetch in flight; beyond this the fetch is discarded. */
const MAX_JOURNAL_OPS = 4_096;
/** A lookup at most this many places after the previous one continues a walk (names skipped: directories, entries readdirplus already gave the kernel). */
const WALK_MAX_STEP = 32;
/** Ids handed out ahead of a walk: the first window, and the most it grows to (doubling). */
export const WALK_AHEAD_MIN = 16;
export const WALK_AHEAD_MAX = 512;

export type Lister = (dirId: bigint) => AsyncIterable<{ readonly name: string; readonly id: bigint }>;

interface Listing {
  readonly startedAtMs: number;
  /** name → its place in `order`. */
  readonly places: Map<string, number>;
  /** Ids in listing order; 0n where the name was removed since (names linked since go last). */
  readonly order: bigint[];
  /** Lookups answered from it: a used listing is refetched as soon as it expires. */
  hits: number;
  /** The place of the last name looked up, the walk's window (0: no walk) and how far ids were handed out. */
  walkAt: number;
  walkWindow: number;
  aheadTo: number;
}

interface Counter {
  shardLookups: number;
  windowStartMs: number;
  /** No lookahead before this time (the directory was too big). */
  quietUntilMs: number;
}

/** A fetch in flight: what happened to the directory through this mount since it started. */
export interface Fill {
  readonly dirId: bigint;
  readonly startedAtMs: number;
  /** name → id now there, or null: removed. */
  readonly journal: Array<[string, bigint | null]>;
  discarded: boolean;
}

/**
 * A valid listing's answer: the id under the name (null: no such name), how long it stays valid,
 * and ids of the names after it whose attributes are worth fetching now (a walk goes on).
 */
export interface Probe {
  readonly id: bigint | null;
  readonly ttlMs: number;
  readonly ahead: readonly bigint[];
}

const NOTHING_AHEAD: readonly bigint[] = Object.freeze([]);

export class DirCache {
  /** Least recently used first. */
  private readonly listings = new Map<bigint, Listing>();
  private entries = 0;
  private readonly counters = new Map<bigint, Counter>();
  private readonly fills = new Map<bigint, Set<Fill>>();
  /** Directories with a lookahead fetch in flight (single-flight). */
  private readonly fetching = new Set<bigint>();

  constructor(
    private readonly ttlMs: number,
    private readonly list: Lister,
    private readonly nowMs: () => number,
    private readonly onFetchError: (dirId: bigint, err: Error) => void = () => {},
  ) {
    assert(ttlMs > 0);
  }

  stats(): { dirs: number; entries: number; fetching: number } {
    return { dirs: this.listings.size, entries: this.entries, fetching: this.fetching.size };
  }

  /** The answer from a valid listing, or undefined: ask the shard (and call `shardLookup`). */
  probe(dirId: bigint, name: string): Probe | undefined {
    const l = this.listings.get(dirId);
    if (!l) return undefined;
    // Whole milliseconds: the kernel is handed seconds and nanoseconds.
    const ttlMs = Math.floor(l.startedAtMs + this.ttlMs - this.nowMs());
    if (ttlMs <= 0) return undefined;
    l.hits++;
    this.listings.delete(dirId); // most recently used last
    this.listings.set(dirId, l);
    const place = l.places.get(name);
    if (place === undefined) return { id: null, ttlMs, ahead: NOTHING_AHEAD };
    return { id: l.order[place]!, ttlMs, ahead: this.walk(l, place) };
  }

  /** A lookup at `place`: if it continues a walk, the ids to fetch ahead of it (not handed out before). */
  private walk(l: Listing, place: number): readonly bigint[] {
    const step = place - l.walkAt;
    l.walkAt = place;
    if (step <= 0 || step > WALK_MAX_STEP) {
      l.walkWindow = 0;
      return NOTHING_AHEAD;
    }
    l.walkWindow = l.walkWindow === 0 ? WALK_AHEAD_MIN : Math.min(2 * l.walkWindow, WALK_AHEAD_MAX);
    const from = Math.max(place + 1, l.aheadTo);
    const to = Math.min(l.order.length, place + 1 + l.walkWindow);
    if (from >= to) return NOTHING_AHEAD;
    l.aheadTo = to;
    return l.order.slice(from, to).filter((id) => id !== 0n);
  }

  /** A lookup in the directory went to the shard: may start fetching the whole listing. */
  shardLookup(dirId: bigint): void {
    if (this.fetching.has(dirId)) return;
    const now = this.nowMs();
    const l = this.listings.get(dirId);
    if (l && l.hits >= LOOKAHEAD_AFTER_LOOKUPS) {
      // Expired while in use: refresh at once.
      this.startFetch(dirId);
      return;
    }
    let c = this.counters.get(dirId);
    if (!c) {
      c = { shardLookups: 0, windowStartMs: now, quietUntilMs: 0 };
      this.counters.set(dirId, c);
      if (this.counters.size > MAX_COUNTED_DIRS) this.counters.delete(this.counters.keys().next().value!);
    }
    if (now < c.quietUntilMs) return;
    if (now - c.windowStartMs > this.ttlMs) {
      c.shardLookups = 0;
      c.windowStartMs = now;
    }
    if (++c.shardLookups < LOOKAHEAD_AFTER_LOOKUPS) return;
    c.shardLookups = 0;
    c.windowStartMs = now;
    this.startFetch(dirId);
  }

  private startFetch(dirId: bigint): void {
    this.fetching.add(dirId);
    const fill = this.beginFill(dirId);
    void (async () => {
      let ids: Map<string, bigint> | undefined = new Map();
      try {
        for await (const e of this.list(dirId)) {
          if (fill.discarded) break;
          ids.set(e.name, e.id);
          if (ids.size > MAX_LISTED_ENTRIES) {
            const c = this.counters.get(dirId);
            if (c) c.quietUntilMs = this.nowMs() + TOO_BIG_RECHECK_MS;
            ids = undefined;
            break;
          }
        }
      } catch (err) {
        ids = undefined;
        this.onFetchError(dirId, err as Error);
      } finally {
        this.fetching.delete(dirId);
      }
      this.endFill(fill, ids);
    })();
  }

  /** Starts a listing of the directory (readdir's own, or the lookahead's). */
  beginFill(dirId: bigint): Fill {
    const fill: Fill = { dirId, startedAtMs: this.nowMs(), journal: [], discarded: false };
    let set = this.fills.get(dirId);
    if (!set) {
      set = new Set();
      this.fills.set(dirId, set);
    }
    set.add(fill);
    return fill;
  }

  /** Ends a listing: `ids` undefined (failed or too big) caches nothing. Takes ownership of `ids`. */
  endFill(fill: Fill, ids: Map<string, bigint> | undefined): void {
    const set = this.fills.get(fill.dirId);
    assert(set !== undefined && set.has(fill), 'a fill ends once');
    set.delete(fill);
    if (set.size === 0) this.fills.delete(fill.dirId);
    if (!ids || fill.discarded || ids.size > MAX_LISTED_ENTRIES) return;
    if (this.nowMs() - fill.startedAtMs >= this.ttlMs) return; // expired already
    const old = this.listings.get(fill.dirId);
    if (old && old.startedAtMs > fill.startedAtMs) return; // a newer one landed first
    for (const [name, id] of fill.journal) {
      if (id === null) ids.delete(name);
      else ids.set(name, id);
    }
    if (ids.size > MAX_LISTED_ENTRIES) return;
    this.drop(fill.dirId);
    // A Map iterates in insertion order: the listing's, with names linked meanwhile last.
    const places = new Map<string, number>();
    const order: bigint[] = [];
    for (const [name, id] of ids) {
      places.set(name, order.length);
      order.push(id);
    }
    this.listings.set(fill.dirId, { startedAtMs: fill.startedAtMs, places, order, hits: 0, walkAt: -1, walkWindow: 0, aheadTo: 0 });
    this.entries += places.size;
    this.evict();
  }

  // ---- our own mutations: called before they are answered -------------------------------------

  /** `name` in the directory now points at `id` (a file linked, a directory made, a rename's target). */
  linked(dirId: bigint, name: string, id: bigint): void {
    this.apply(dirId, name, id);
  }

  /** `name` is no longer in the directory. */
  removed(dirId: bigint, name: string): void {
    this.apply(dirId, name, null);
  }

  /** The id under a name in a valid listing, for a rename that moves it. */
  peek(dirId: bigint, name: string): bigint | undefined {
    const l = this.listings.get(dirId);
    if (!l || this.nowMs() - l.startedAtMs >= this.ttlMs) return undefined;
    const place = l.places.get(name);
    return place === undefined ? undefined : l.order[place];
  }

  /** The directory's state is unknown (a mutation failed, or its effect is not known here). */
  invalidate(dirId: bigint): void {
    this.drop(dirId);
    const set = this.fills.get(dirId);
    if (set) for (const f of set) f.discarded = true;
  }

  private apply(dirId: bigint, name: string, id: bigint | null): void {
    const l = this.listings.get(dirId);
    if (l) {
      const place = l.places.get(name);
      if (id === null) {
        if (place !== undefined) {
          l.places.delete(name);
          l.order[place] = 0n;
          this.entries--;
        }
      } else if (place !== undefined) {
        l.order[place] = id;
      } else if (l.order.length >= 2 * MAX_LISTED_ENTRIES) {
        // Removed names' places are never reused: a listing churned this much is dropped.
        this.drop(dirId);
      } else {
        l.places.set(name, l.order.length);
        l.order.push(id);
        this.entries++;
        if (l.places.size > MAX_LISTED_ENTRIES) this.drop(dirId);
        else this.evict();
      }
    }
    const set = this.fills.get(dirId);
    if (set) {
      for (const f of set) {
        if (f.journal.length >= MAX_JOURNAL_OPS) f.discarded = true;
        else f.journal.push([name, id]);
      }
    }
  }

  private drop(dirId: bigint): void {
    const l = this.listings.get(dirId);
    if (!l) return;
    this.entries -= l.places.size;
    this.listings.delete(dirId);
    assert(this.entries >= 0, 'entries counted over listings');
  }

  private evict(): void {
    while (this.listings.size > MAX_CACHED_DIRS || this.entries > MAX_CACHED_ENTRIES) {
      this.drop(this.listings.keys().next().value!);
    }
  }
}
