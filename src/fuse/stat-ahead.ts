// Attributes fetched ahead of the lookups that will want them. A program walking a directory
// (ls -l, find, du, rsync, tar) stats its names one at a time in listing order, and each stat is
// a shard round trip; the directory's listing says which names come next, so their STATs are sent
// ahead, several at once, and the lookup finds the attributes already there. Only files and
// symlinks: their attributes never change (immutable), so an early answer is never stale.
import { isDirectory } from '../proto/ids.js';

/** STATs sent ahead at once, over the whole mount. */
export const STAT_AHEAD_IN_FLIGHT = 64;
/** Ids waiting for a STAT; past this, further wishes are dropped (they are only hints). */
export const STAT_AHEAD_QUEUE = 4_096;

export class StatAhead {
  /** Started: resolves (never rejects) when the STAT is answered, well or not. */
  private readonly started = new Map<bigint, Promise<void>>();
  /** Not started yet, in the order wished for. */
  private readonly queued = new Set<bigint>();

  constructor(
    /** Fetches the attributes of `id` and keeps them where `has` finds them. */
    private readonly fetch: (id: bigint) => Promise<void>,
    /** Whether the attributes of `id` are already known. */
    private readonly has: (id: bigint) => boolean,
  ) {}

  stats(): { inFlight: number; queued: number } {
    return { inFlight: this.started.size, queued: this.queued.size };
  }

  /** Asks for the attributes of these ids, soon: known, started or directory ids are skipped. */
  want(ids: Iterable<bigint>): void {
    for (const id of ids) {
      if (id === 0n || isDirectory(id) || this.started.has(id) || this.queued.has(id) || this.has(id)) continue;
      if (this.queued.size >= STAT_AHEAD_QUEUE) break;
      this.queued.add(id);
    }
    this.pump();
  }

  /**
   * The STAT of `id` sent ahead, if any, to wait for instead of sending another; one still
   * queued is sent now, ahead of the rest. Undefined: none was asked for.
   */
  waitFor(id: bigint): Promise<void> | undefined {
    const running = this.started.get(id);
    if (running) return running;
    if (!this.queued.delete(id)) return undefined;
    return this.start(id);
  }

  private pump(): void {
    for (const id of this.queued) {
      if (this.started.size >= STAT_AHEAD_IN_FLIGHT) return;
      this.queued.delete(id);
      if (!this.has(id)) this.start(id);
    }
  }

  private start(id: bigint): Promise<void> {
    const p = this.fetch(id)
      .catch(() => {
        // A hint only: the lookup that wants it sends its own STAT and reports that one's error.
      })
      .finally(() => {
        this.started.delete(id);
        this.pump();
      });
    this.started.set(id, p);
    return p;
  }
}
