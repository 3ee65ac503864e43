// What the FUSE driver learns from /proc: which process a thread belongs to (the kernel sends
// thread ids), and whether a pending file is still open in some descriptor of a few processes.
// Both are on the create path (CREATE and the close's FLUSH), so both are cached or batched:
// reading /proc/<tid>/status costs 12-15 µs, and a descriptor scan costs one readdir plus one
// readlink per descriptor (a Node process has about 20; a process creating 64 files at once, 84).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * How long a thread → process pair is trusted without reading /proc again. A thread id is reused
 * only after the thread has died and the kernel has handed out every other id since (pid_max:
 * 32,768 here, 4M on most distributions), which no machine does within a second. (Checking
 * /proc/<tgid>/task/<tid> on every hit cost 13 µs of a 1.4 ms create: not worth it.)
 */
export const TGID_CACHE_MS = 1_000;
export const MAX_CACHED_TGIDS = 4_096;
/** Processes looked at for one close (the closing and creating processes and their children). */
export const MAX_SCANNED_PROCESSES = 64;
/** Closes whose scans are served by one pass over /proc. */
export const MAX_SCAN_BATCH = 256;
/**
 * While the closing process writes other files too, a close's scan waits this long for more
 * closes to share it (with 64 files created at once, each scan reads 84 descriptors). Any other
 * close scans at once.
 */
export const SCAN_BATCH_WINDOW_MS = 2;

/** The thread-group (process) id of a thread id, read from /proc/<tid>/status. */
export function readTgid(tid: number): number {
  try {
    const m = /^Tgid:\s*(\d+)/m.exec(readFileSync(`/proc/${tid}/status`, 'utf8'));
    return m ? Number(m[1]) : tid;
  } catch {
    return tid;
  }
}

export class TgidCache {
  private readonly byTid = new Map<number, { tgid: number; atMs: number }>();

  of(tid: number): number {
    const now = performance.now();
    const c = this.byTid.get(tid);
    if (c && now - c.atMs < TGID_CACHE_MS) return c.tgid;
    const tgid = readTgid(tid);
    this.byTid.delete(tid); // re-inserted last: the oldest entries go first
    this.byTid.set(tid, { tgid, atMs: now });
    if (this.byTid.size > MAX_CACHED_TGIDS) this.byTid.delete(this.byTid.keys().next().value!);
    return tgid;
  }
}

/** One process's descriptors that point into the mount, and its children. */
interface ProcessView {
  fds: { fd: string; link: string }[];
  children: number[];
}

export interface HeldQuery {
  /** Processes whose descriptors (and whose children's) are looked at. */
  readonly pids: readonly number[];
  /** The file's name in its directory (the end of a descriptor's path). */
  readonly name: string;
  /** Our node id, which the kernel shows as the descriptor's inode (fdinfo `ino:`). */
  readonly nodeid: bigint;
}

/**
 * Answers "is this pending file still open in a descriptor of these processes or their children?"
 * for closes. When a process closes many files at once, the queries of a short window share one
 * pass over /proc: its descriptor table is read once instead of once per close.
 * A descriptor's link gives the path, its fdinfo the inode (our node id); neither goes through
 * the mount, so the scan never waits on this driver.
 */
export class HeldScanner {
  private queue: { q: HeldQuery; resolve: (held: boolean) => void }[] = [];
  private scheduled = false;

  constructor(private readonly mountPrefix: string) {
    assert(mountPrefix.endsWith('/'), 'mount prefix ends with a slash');
  }

  /** `concurrent`: the closing process writes other files too, so more closes are likely soon. */
  held(q: HeldQuery, concurrent: boolean): Promise<boolean> {
    // A lone close is answered at once: nothing is likely to share its scan.
    if (!concurrent) return Promise.resolve(this.heldIn(q, new Map()));
    return new Promise((resolve) => {
      this.queue.push({ q, resolve });
      if (this.queue.length >= MAX_SCAN_BATCH) {
        this.scheduled = true; // a timer still set finds nothing to do, or runs the next batch early
        this.run();
      } else if (!this.scheduled) {
        this.scheduled = true;
        setTimeout(() => this.run(), SCAN_BATCH_WINDOW_MS);
      }
    });
  }

  private run(): void {
    if (!this.scheduled) return; // already run: the batch filled up
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    const views = new Map<number, ProcessView>();
    for (const { q, resolve } of batch) resolve(this.heldIn(q, views));
  }

  private view(pid: number, views: Map<number, ProcessView>): ProcessView {
    let v = views.get(pid);
    if (v) return v;
    v = { fds: [], children: [] };
    views.set(pid, v);
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      /* gone or exiting */
    }
    for (const fd of fds) {
      try {
        const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (link.startsWith(this.mountPrefix)) v.fds.push({ fd, link });
      } catch {
        /* closed meanwhile */
      }
    }
    try {
      // Children forked by the main thread (a shell's, a fork()ing program's).
      for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ')) if (c) v.children.push(Number(c));
    } catch {
      /* gone */
    }
    return v;
  }

  private heldIn(q: HeldQuery, views: Map<number, ProcessView>): boolean {
    const suffix = `/${q.name}`;
    const deletedSuffix = `${suffix} (deleted)`;
    // A name that does not decode cleanly cannot be matched by path: check every descriptor's inode.
    const nameCheckable = !q.name.includes('\uFFFD');
    const todo = [...q.pids];
    const seen = new Set<number>();
    while (todo.length > 0 && seen.size < MAX_SCANNED_PROCESSES) {
      const pid = todo.pop()!;
      if (seen.has(pid)) continue;
      seen.add(pid);
      const v = this.view(pid, views);
      for (const { fd, link } of v.fds) {
        // The link names the file: skip reading fdinfo for other files.
        if (nameCheckable && !link.endsWith(suffix) && !link.endsWith(deletedSuffix)) continue;
        try {
          const m = /^ino:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
          if (m && BigInt(m[1]!) === q.nodeid) return true;
        } catch {
          continue;
        }
      }
      todo.push(...v.children);
    }
    return false;
  }
}
