// Directory fsyncs, the step that makes a created, renamed or removed name durable (POSIX says
// nothing else does), with group commit so that concurrent callers share one.
import fsp, { type FileHandle } from 'node:fs/promises';

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Group commit for directory fsyncs: callers arriving while a sync runs share the next one, so
 * concurrent writers into one directory pay for about one fsync each round instead of one each.
 */
export class DirSyncer {
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  /** Kept open so a sync costs one call, not open + fsync + close. */
  private handle: FileHandle | null = null;
  constructor(
    private readonly dir: string,
    private readonly keepOpen: boolean,
  ) {}

  private async syncOnce(): Promise<void> {
    if (!this.keepOpen) return fsyncDir(this.dir);
    this.handle ??= await fsp.open(this.dir, 'r');
    await this.handle.sync();
  }

  sync(): Promise<void> {
    if (!this.running) {
      this.running = this.syncOnce().finally(() => (this.running = null));
      return this.running;
    }
    // A sync is in progress and may have started before our change: wait for the next one.
    if (!this.queued) {
      const after = this.running.catch(() => {});
      this.queued = after.then(() => {
        this.queued = null;
        return this.sync();
      });
    }
    return this.queued;
  }

  async close(): Promise<void> {
    if (this.running) await this.running.catch(() => {});
    if (this.queued) await this.queued.catch(() => {});
    await this.handle?.close().catch(() => {});
    this.handle = null;
  }
}
