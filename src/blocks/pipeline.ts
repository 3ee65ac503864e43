// Pipelined requests on one block-service connection. services.md §2.3: requests on a connection
// are processed strictly in order and the server reads the next kind byte after a response, so a
// client may send request k+1 before response k arrives. This lets request k+1 be received while
// request k commits (or is sent), with responses still written strictly in request order and a
// failure closing the connection with nothing more written: request k's response goes out only
// after every earlier one, and not at all once an earlier request failed.
//
// A later request may have been stored when an earlier one failed and the connection closed. Its
// proof was never sent, so it is an unacknowledged write, as after a crash: the shard never
// learns of it and the retry (same certificate, same bytes) is acknowledged.
import assert from 'node:assert/strict';
import type { ByteBudget } from '../util/exact-reader.js';

export interface PipelineLimits {
  /** Requests started and not yet answered, per connection. */
  maxDepth: number;
  /** Received bytes held by started requests (not yet on disk) above which no further request starts. */
  maxHeldBytes: number;
}

/** What one request sees of its connection's pipeline. */
export interface Slot {
  /** Resolves once every earlier request's response is written; rejects if an earlier one failed. */
  readonly turn: Promise<void>;
  /**
   * The request no longer needs the connection's incoming bytes: the session may read the next
   * request. `heldBytes` received bytes stay in this request's memory until it finishes; they are
   * counted against the connection's and the process's limits meanwhile. At most once.
   */
  release(heldBytes: number): void;
}

export class Pipeline {
  private depth = 0;
  private heldBytes = 0;
  /** Settles once every request started so far has been answered (or one failed). */
  private answered: Promise<void> = Promise.resolve();
  /**
   * A request failed: nothing more is read from the connection (the bytes after a refused request
   * are not requests). Set at once, while the failure is reported only in request order.
   */
  private stopped = false;
  private failure: Error | null = null;
  /** Woken at every request's end. */
  private waiters: (() => void)[] = [];
  /** Called once no request is in progress, or once one failed. */
  private readonly idleWaiters = new Set<() => void>();

  constructor(
    private readonly limits: PipelineLimits,
    /** The process-wide bound on bytes received but not yet on disk (shared with the readers). */
    private readonly budget: ByteBudget | null,
    /** Called once, with the first request failure, after every earlier response was written. */
    private readonly onFailure: (err: Error) => void,
  ) {
    assert(limits.maxDepth >= 1 && limits.maxHeldBytes > 0, 'pipeline limits must be positive');
  }

  /** A request failed: read no further requests. */
  get failed(): boolean {
    return this.stopped;
  }

  /** No request in progress. */
  get idle(): boolean {
    return this.depth === 0;
  }

  /** Resolves once every request started so far is answered; rejects if one failed. */
  allAnswered(): Promise<void> {
    return this.answered;
  }

  /** Resolves once another request may start (or a request failed). */
  async room(): Promise<void> {
    while (!this.stopped && (this.depth >= this.limits.maxDepth || this.heldBytes >= this.limits.maxHeldBytes)) await this.change();
  }

  /**
   * Calls `cb` once no request is in progress or one failed (not if that is already so);
   * returns the function that cancels it.
   */
  onIdle(cb: () => void): () => void {
    this.idleWaiters.add(cb);
    return () => this.idleWaiters.delete(cb);
  }

  private change(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /**
   * Starts a request; resolves once it released the connection (Slot.release) or finished.
   * `run` writes its response only after awaiting `slot.turn`.
   */
  start(run: (slot: Slot) => Promise<void>): Promise<void> {
    assert(!this.stopped && this.depth < this.limits.maxDepth, 'pipeline: no room for another request');
    const turn = this.answered;
    let held = 0;
    let released = false;
    let resumeSession!: () => void;
    const resumed = new Promise<void>((r) => (resumeSession = r));
    const slot: Slot = {
      turn,
      release: (heldBytes: number) => {
        assert(!released && heldBytes >= 0, 'pipeline: a request released its connection twice');
        released = true;
        held = heldBytes;
        this.heldBytes += heldBytes;
        this.budget?.take(heldBytes);
        resumeSession();
      },
    };
    this.depth++;
    const ran = run(slot);
    const settle = (ok: boolean) => {
      this.depth--;
      this.heldBytes -= held;
      this.budget?.give(held);
      assert(this.depth >= 0 && this.heldBytes >= 0);
      if (!ok) this.stopped = true;
      resumeSession(); // a request that failed (or finished) before releasing
      this.notify();
    };
    ran.then(
      () => settle(true),
      () => settle(false),
    );
    // A failure is reported only after every earlier response is out: those requests succeeded
    // and their clients are owed their responses.
    const done = ran.catch(async (err: Error) => {
      await turn.catch(() => {});
      throw err;
    });
    this.answered = done;
    done.catch((err: Error) => {
      if (this.failure) return; // a consequence of the first failure
      this.failure = err;
      this.notify();
      this.onFailure(err);
    });
    return resumed;
  }

  private notify(): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
    if ((this.depth === 0 || this.stopped) && this.idleWaiters.size > 0) {
      const idle = [...this.idleWaiters];
      this.idleWaiters.clear();
      for (const w of idle) w();
    }
  }
}
