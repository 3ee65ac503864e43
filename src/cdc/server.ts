// The CDC server: client socket, shard socket, transaction driver and group commit.
//
// Life of a request:
//   client datagram → decode (malformed: MALFORMED_REQUEST answer, or nothing without a request id)
//   → de-duplicate by (client address, request id, request bytes) → queue (locks.ts) → begin →
//   each step returns a shard request: it is persisted (group commit), then sent, then resent with
//   backoff until a definitive answer → the next step runs … → the response is persisted, then
//   sent to the client.
// Every shard request of a transaction is persisted before it is sent, so after kill -9 the
// transaction resumes by resending its persisted request (every CDC shard request is safe to
// repeat, see transactions.ts). Answers are matched to the one outstanding request id of a
// transaction; anything else (late, duplicated, foreign, garbled) is dropped.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Worker } from 'node:worker_threads';
import { DecodeError, decode } from '../proto/bincode.js';
import { DEFAULT_CDC_KEY } from '../proto/crypto.js';
import {
  CDC_PROTOCOL,
  HEADER_BYTES,
  SHARD_PROTOCOL,
  decodeRequest,
  decodeResponse,
  encodeErrorResponse,
  encodeResponseFor,
  encodeShardRequest,
  peekRequestId,
} from '../proto/envelope.js';
import { ErrorCode, errorName } from '../proto/errors.js';
import { CDC_BY_KIND, SHARD_BY_KIND, SHARD_MESSAGES, type CdcKindName, type MessageDecl, type ShardKindName } from '../proto/messages.js';
import { eggsNow } from '../proto/time.js';
import { logger } from '../util/log.js';
import {
  DEDUP_CAPACITY,
  MAX_RESEND_BACKOFF_FACTOR,
  MAX_TXNS_QUEUED,
  MAX_TXNS_RUNNING,
  PRUNE_EVERY_FLUSHES,
  SOCKET_BUFFER_BYTES,
} from './limits.js';
import { LockScheduler, type Lockable } from './locks.js';
import { CdcStore, type SyncMode, type TxnRow } from './store.js';
import type { WorkerReply, WriteBatch } from './store-worker.js';
import { TXNS, type ShardAnswer, type StepResult, type TxnContext, type TxnDef } from './transactions.js';

const log = logger('cdc');

export interface Address {
  host: string;
  port: number;
}

/** Where shard `s` is; undefined while unknown (its requests then wait and are resent later). */
export type ShardAddressBook = (shard: number) => Address | undefined;

export interface CdcServerOptions {
  dir: string;
  bindHost: string;
  port: number;
  shards: ShardAddressBook;
  shardTimeoutMs: number;
  sync: SyncMode;
  cdcKey?: Uint8Array;
  maxRunning?: number;
  maxQueued?: number;
  /** Debug (fault-injection tests): "KIND:step:phase", phase persisted|sent|answered. */
  crashAt?: string;
  /** Log a statistics line this often (0/undefined: never). */
  statsEveryMs?: number;
}

interface InFlight {
  requestId: bigint;
  shard: number;
  kind: ShardKindName;
  datagram: Buffer;
  /** Times sent so far (a resumed request counts as sent once: it may have been). */
  sends: number;
  /** process.hrtime of the first send in this process (for the statistics). */
  firstSentNs: bigint;
  timer: NodeJS.Timeout | undefined;
}

interface Txn extends Lockable {
  id: number;
  clientAddr: string;
  client: Address;
  clientRequestId: bigint;
  kind: number;
  kindName: CdcKindName;
  /** Request body bytes (after the envelope header), persisted and compared for de-duplication. */
  body: Buffer;
  req: any;
  dedupKey: string;
  step: string | null;
  state: any;
  inFlight: InFlight | null;
  done: boolean;
  responseKind: number | null;
  responseBody: Buffer | null;
  startedTime: bigint;
  lockKeys: string[];
  /** Loaded from the database at start-up (debug crash points never fire for these). */
  resumed: boolean;
  /** Its completion is committed: retries may be answered from the stored response. */
  persistedDone: boolean;
  /** Its row has been handed to the writer (later writes are updates without the request). */
  inserted: boolean;
}

type Outgoing = { t: 'shard'; txn: Txn; req: InFlight } | { t: 'reply'; txn: Txn };

// JSON state with bigints (as "123n").
function stateToJson(s: unknown): string {
  return JSON.stringify(s, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v));
}
function stateFromJson(s: string): any {
  return JSON.parse(s, (_k, v) => (typeof v === 'string' && /^\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v));
}

export class CdcServer {
  private readonly store: CdcStore;
  private readonly clientSock = dgram.createSocket({ type: 'udp4' });
  private readonly shardSock = dgram.createSocket({ type: 'udp4' });
  private readonly scheduler: LockScheduler<Txn>;
  /** Outstanding shard request id → its transaction. */
  private readonly inFlight = new Map<bigint, Txn>();
  /** (client address, request id) → running or recently completed transaction. */
  private readonly dedup = new Map<string, Txn>();
  private readonly dirty = new Set<Txn>();
  private outbox: Outgoing[] = [];
  private flushScheduled = false;
  private flushes = 0;
  /** The batch the writer thread is committing (one at a time, in order). */
  private committing: { seq: number; out: Outgoing[]; done: Txn[] } | undefined;
  private writer: Worker | undefined;
  private onIdle: (() => void) | undefined;
  private commitStartNs = 0n;
  /** Since the last statistics line (EGGSFS_CDC_STATS_MS). */
  private statCounters = { txns: 0, commits: 0, committedRows: 0, commitNs: 0n, answers: 0, shardRttNs: 0n, resends: 0 };
  private statsTimer: NodeJS.Timeout | undefined;
  private nextTxnId: number;
  private nextShardRequestId: bigint;
  private nextDirectoryId: bigint;
  private counterDirty = false;
  private closed = false;
  private readonly cdcKey: Uint8Array;
  private readonly ctx: TxnContext;
  private readonly crash: { kind: string; step: string; phase: string } | undefined;
  boundPort = 0;

  constructor(private readonly opts: CdcServerOptions) {
    this.cdcKey = opts.cdcKey ?? DEFAULT_CDC_KEY;
    this.store = new CdcStore(opts.dir, opts.sync);
    this.nextTxnId = this.store.maxTxnId() + 1;
    this.nextDirectoryId = this.store.nextDirectoryId();
    const persistedMax = this.store.maxShardRequestId();
    const now = eggsNow();
    this.nextShardRequestId = persistedMax >= now ? persistedMax + 1n : now;
    this.scheduler = new LockScheduler<Txn>(opts.maxRunning ?? MAX_TXNS_RUNNING, opts.maxQueued ?? MAX_TXNS_QUEUED, (t) => this.begin(t));
    this.ctx = {
      allocateDirectoryId: () => {
        const id = this.nextDirectoryId++;
        this.counterDirty = true;
        return id;
      },
      now: () => eggsNow(),
    };
    if (opts.crashAt) {
      const [kind, step, phase] = opts.crashAt.split(':');
      assert(kind && step && phase && ['persisted', 'sent', 'answered'].includes(phase), `bad crash point ${opts.crashAt}`);
      this.crash = { kind, step, phase };
    }
  }

  get stats(): { running: number; queued: number; inFlight: number } {
    return { running: this.scheduler.running, queued: this.scheduler.queued, inFlight: this.inFlight.size };
  }

  async start(): Promise<void> {
    this.recover();
    // Recovery read the database on this thread; from now on only the writer thread touches it.
    this.store.close();
    this.writer = new Worker(new URL('./store-worker.js', import.meta.url), { workerData: { dir: this.opts.dir, sync: this.opts.sync } });
    this.writer.on('message', (r: WorkerReply) => this.onCommitted(r));
    this.writer.on('error', (err) => {
      log.error(`database writer failed: ${err.message}; exiting`);
      process.exit(1);
    });
    for (const s of [this.clientSock, this.shardSock]) {
      s.on('error', (err) => log.warn(`socket error: ${err.message}`));
    }
    this.clientSock.on('message', (m, r) => this.onClientMessage(m, r));
    this.shardSock.on('message', (m) => this.onShardMessage(m));
    await new Promise<void>((resolve, reject) => {
      this.clientSock.once('error', reject);
      this.clientSock.bind(this.opts.port, this.opts.bindHost, () => {
        this.clientSock.off('error', reject);
        resolve();
      });
    });
    await new Promise<void>((resolve) => this.shardSock.bind(0, resolve));
    for (const s of [this.clientSock, this.shardSock]) {
      try {
        s.setRecvBufferSize(SOCKET_BUFFER_BYTES);
        s.setSendBufferSize(SOCKET_BUFFER_BYTES);
      } catch {
        /* capped by the kernel: still works, drops earlier under bursts */
      }
    }
    this.boundPort = this.clientSock.address().port;
    if (this.opts.statsEveryMs) {
      this.statsTimer = setInterval(() => this.logStats(), this.opts.statsEveryMs);
      this.statsTimer.unref();
    }
    // Resume what was running when the CDC stopped: resend each persisted request.
    for (const t of this.inFlight.values()) this.sendShard(t, t.inFlight!);
  }

  // -------------------------------------------------------------------------------------------
  // Recovery

  private recover(): void {
    for (const row of this.store.loadRecentDone(DEDUP_CAPACITY)) {
      const t = this.txnFromRow(row);
      this.dedup.set(t.dedupKey, t);
    }
    const running = this.store.loadRunning();
    for (const row of running) {
      const t = this.txnFromRow(row);
      const decl = SHARD_BY_KIND[row.shardRequestKind!];
      assert(decl, `transaction ${row.id}: unknown shard request kind ${row.shardRequestKind}`);
      t.inFlight = {
        requestId: row.shardRequestId!,
        shard: row.shardRequestShard!,
        kind: decl.name as ShardKindName,
        datagram: row.shardRequestBody!,
        sends: 1,
        firstSentNs: 0n,
        timer: undefined,
      };
      this.scheduler.adopt(t);
      this.inFlight.set(t.inFlight.requestId, t);
      this.dedup.set(t.dedupKey, t);
    }
    if (running.length > 0) log.info(`resuming ${running.length} transaction(s) interrupted by a restart`);
  }

  private txnFromRow(row: TxnRow): Txn {
    const decl = CDC_BY_KIND[row.kind]!;
    const kindName = decl.name as CdcKindName;
    const req = row.done ? undefined : decode(decl.req, row.body);
    const [host, portStr] = splitAddr(row.clientAddr);
    return {
      id: row.id,
      clientAddr: row.clientAddr,
      client: { host, port: Number(portStr) },
      clientRequestId: row.clientRequestId,
      kind: row.kind,
      kindName,
      body: row.body,
      req,
      dedupKey: `${row.clientAddr}#${row.clientRequestId}`,
      step: row.nextStep,
      state: row.state === null ? null : stateFromJson(row.state),
      inFlight: null,
      done: row.done,
      responseKind: row.responseKind,
      responseBody: row.responseBody,
      startedTime: row.startedTime,
      lockKeys: req ? dedupKeys((TXNS[kindName] as TxnDef<any>).locks(req)) : [],
      resumed: true,
      persistedDone: row.done,
      inserted: true,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Client side

  private onClientMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const d = decodeRequest(CDC_PROTOCOL, msg);
    if (!d.ok) {
      if (d.requestId !== undefined) {
        log.debug(`malformed request from ${rinfo.address}:${rinfo.port}: ${d.reason}`);
        this.clientSock.send(encodeErrorResponse(CDC_PROTOCOL, d.requestId, d.code), rinfo.port, rinfo.address);
      }
      return;
    }
    const clientAddr = `${rinfo.address}:${rinfo.port}`;
    const dedupKey = `${clientAddr}#${d.requestId}`;
    const body = Buffer.from(msg.subarray(HEADER_BYTES));
    const prev = this.dedup.get(dedupKey);
    if (prev && prev.kind === d.decl.kind && prev.body.equals(body)) {
      // A retry of a request we have: answer it again if done, else its answer is still to come.
      if (prev.persistedDone) this.sendReply(prev);
      return;
    }
    const kindName = d.decl.name as CdcKindName;
    const t: Txn = {
      id: 0,
      clientAddr,
      client: { host: rinfo.address, port: rinfo.port },
      clientRequestId: d.requestId,
      kind: d.decl.kind,
      kindName,
      body,
      req: d.body,
      dedupKey,
      step: null,
      state: null,
      inFlight: null,
      done: false,
      responseKind: null,
      responseBody: null,
      startedTime: 0n,
      lockKeys: dedupKeys((TXNS[kindName] as TxnDef<any>).locks(d.body)),
      resumed: false,
      persistedDone: false,
      inserted: false,
    };
    if (!this.scheduler.submit(t)) {
      // Queue full: nothing was done, TIMEOUT tells the client to try again (its transport does).
      this.clientSock.send(encodeErrorResponse(CDC_PROTOCOL, d.requestId, ErrorCode.TIMEOUT), rinfo.port, rinfo.address);
      return;
    }
    this.dedup.set(dedupKey, t);
    this.trimDedup();
  }

  private trimDedup(): void {
    if (this.dedup.size <= DEDUP_CAPACITY) return;
    for (const [k, t] of this.dedup) {
      if (this.dedup.size <= DEDUP_CAPACITY) break;
      if (t.done) this.dedup.delete(k);
    }
  }

  private sendReply(t: Txn): void {
    assert(t.done && t.responseKind !== null && t.responseBody !== null);
    const header = Buffer.allocUnsafe(HEADER_BYTES);
    header.writeUInt32LE(CDC_PROTOCOL.magic, 0);
    header.writeBigUInt64LE(t.clientRequestId, 4);
    header[12] = t.responseKind;
    this.clientSock.send(Buffer.concat([header, t.responseBody]), t.client.port, t.client.host);
  }

  // -------------------------------------------------------------------------------------------
  // Transaction driver

  private logStats(): void {
    const c = this.statCounters;
    if (c.txns === 0 && c.answers === 0) return;
    const ms = (ns: bigint, n: number) => (n === 0 ? '-' : (Number(ns / BigInt(n)) / 1e6).toFixed(2));
    log.info(
      `last ${this.opts.statsEveryMs} ms: ${c.txns} transactions begun, ${c.commits} commits of ${(c.committedRows / Math.max(1, c.commits)).toFixed(1)} rows ` +
        `(${ms(c.commitNs, c.commits)} ms each), ${c.answers} shard answers (${ms(c.shardRttNs, c.answers)} ms after sending), ${c.resends} resends; ` +
        `now ${this.scheduler.running} running, ${this.scheduler.queued} queued`,
    );
    this.statCounters = { txns: 0, commits: 0, committedRows: 0, commitNs: 0n, answers: 0, shardRttNs: 0n, resends: 0 };
  }

  /** Called by the scheduler once the transaction holds its locks. */
  private begin(t: Txn): void {
    this.statCounters.txns++;
    t.id = this.nextTxnId++;
    t.startedTime = eggsNow();
    t.state = {};
    t.step = 'begin';
    this.run(t, (def) => def.begin(t.req, t.state, this.ctx));
  }

  private run(t: Txn, f: (def: TxnDef<any>) => StepResult): void {
    let r: StepResult;
    try {
      r = f(TXNS[t.kindName] as TxnDef<any>);
    } catch (err) {
      log.error(`transaction ${t.id} (${t.kindName}) step ${t.step} crashed: ${(err as Error).stack ?? err}`);
      r = { t: 'error', code: ErrorCode.INTERNAL_ERROR, why: 'step crashed' };
    }
    this.apply(t, r);
  }

  private apply(t: Txn, r: StepResult): void {
    if (r.t === 'shard') {
      let datagram: Buffer;
      const requestId = this.nextShardRequestId++;
      try {
        datagram = encodeShardRequest(r.kind, requestId, r.body, this.cdcKey);
      } catch (err) {
        log.error(`transaction ${t.id} (${t.kindName}): cannot encode ${r.kind}: ${(err as Error).message}`);
        return this.apply(t, { t: 'error', code: ErrorCode.INTERNAL_ERROR, why: 'encoding' });
      }
      t.step = r.step;
      t.inFlight = { requestId, shard: r.shard, kind: r.kind, datagram, sends: 0, firstSentNs: 0n, timer: undefined };
      this.inFlight.set(requestId, t);
      this.markDirty(t);
      this.outbox.push({ t: 'shard', txn: t, req: t.inFlight });
      return;
    }
    const decl = CDC_BY_KIND[t.kind]!;
    let datagram: Buffer;
    if (r.t === 'reply') {
      datagram = encodeResponseFor(CDC_PROTOCOL, decl, t.clientRequestId, r.body);
    } else {
      if (r.code === ErrorCode.FATAL_ERROR || r.code === ErrorCode.INTERNAL_ERROR) {
        log.error(`transaction ${t.id} ${t.kindName} ${describeReq(t)}: ${errorName(r.code)} (${r.why})`);
      } else {
        log.debug(`transaction ${t.id} ${t.kindName}: ${errorName(r.code)} (${r.why})`);
      }
      datagram = encodeErrorResponse(CDC_PROTOCOL, t.clientRequestId, r.code);
    }
    t.done = true;
    t.step = null;
    t.state = null;
    t.inFlight = null;
    t.responseKind = datagram[12]!;
    t.responseBody = Buffer.from(datagram.subarray(HEADER_BYTES));
    this.markDirty(t);
    this.outbox.push({ t: 'reply', txn: t });
    // Locks go now: the next transaction's first request is persisted in this or a later commit,
    // never before this one's completion.
    this.scheduler.release(t);
  }

  private markDirty(t: Txn): void {
    this.dirty.add(t);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /**
   * Group commit: hand every changed transaction to the writer thread in one batch; what the batch
   * describes (shard requests, replies) is sent when it is committed. One batch at a time: changes
   * made meanwhile wait for the next one.
   */
  private flush(): void {
    this.flushScheduled = false;
    if (this.committing || (this.dirty.size === 0 && this.outbox.length === 0)) return;
    const now = eggsNow();
    const rows: TxnRow[] = [];
    const done: Txn[] = [];
    for (const t of this.dirty) {
      rows.push(this.rowOf(t, now));
      if (t.done) done.push(t);
    }
    this.dirty.clear();
    const out = this.outbox;
    this.outbox = [];
    const seq = ++this.flushes;
    const batch: WriteBatch = {
      seq,
      rows,
      nextDirectoryId: this.counterDirty ? this.nextDirectoryId : undefined,
      pruneBelowId: seq % PRUNE_EVERY_FLUSHES === 0 ? this.nextTxnId - DEDUP_CAPACITY : undefined,
    };
    this.counterDirty = false;
    this.committing = { seq, out, done };
    this.writer!.postMessage(batch);
    this.commitStartNs = process.hrtime.bigint();
    this.statCounters.commits++;
    this.statCounters.committedRows += rows.length;
  }

  private onCommitted(r: WorkerReply): void {
    const c = this.committing;
    assert(c && c.seq === r.seq, `commit ${r.seq} answered out of order`);
    if (!r.ok) {
      // Without durable state we must not send anything; stop and let a restart resume.
      log.error(`cannot persist transactions: ${r.message}; exiting`);
      process.exit(1);
    }
    this.committing = undefined;
    this.statCounters.commitNs += process.hrtime.bigint() - this.commitStartNs;
    for (const t of c.done) t.persistedDone = true;
    if (this.crash?.phase === 'persisted' && c.out.some((o) => o.t === 'shard' && this.crashMatches(o.txn))) this.crashNow();
    if (!this.closed) {
      for (const o of c.out) {
        if (o.t === 'reply') this.sendReply(o.txn);
        else if (o.txn.inFlight === o.req) this.sendShard(o.txn, o.req);
      }
    }
    // Whatever changed while this batch was committing goes next.
    this.flush();
    if (!this.committing && this.onIdle) this.onIdle();
  }

  private rowOf(t: Txn, now: bigint): TxnRow {
    const update = t.inserted;
    t.inserted = true;
    return {
      id: t.id,
      update,
      // The request part is written once, with the first row.
      clientAddr: update ? '' : t.clientAddr,
      clientRequestId: t.clientRequestId,
      kind: t.kind,
      body: update ? EMPTY : t.body,
      done: t.done,
      nextStep: t.done ? null : t.step,
      state: t.done ? null : stateToJson(t.state),
      shardRequestId: t.inFlight?.requestId ?? null,
      shardRequestShard: t.inFlight?.shard ?? null,
      shardRequestKind: t.inFlight ? SHARD_MESSAGES[t.inFlight.kind].kind : null,
      shardRequestBody: t.inFlight?.datagram ?? null,
      responseKind: t.responseKind,
      responseBody: t.responseBody,
      startedTime: t.startedTime,
      lastUpdateTime: now,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Shard side

  private sendShard(t: Txn, req: InFlight): void {
    if (this.closed) return;
    req.sends++;
    if (req.firstSentNs === 0n) req.firstSentNs = process.hrtime.bigint();
    if (req.sends > 1) this.statCounters.resends++;
    const backoff = Math.min(2 ** Math.max(0, req.sends - 1), MAX_RESEND_BACKOFF_FACTOR);
    req.timer = setTimeout(() => {
      if (t.inFlight !== req) return;
      log.debug(`transaction ${t.id} ${t.kindName}: no answer to ${req.kind} from shard ${req.shard}, resending`);
      this.sendShard(t, req);
    }, this.opts.shardTimeoutMs * backoff);
    const addr = this.opts.shards(req.shard);
    if (!addr) return; // unknown for now: the timer resends once it is known
    const crashAfterSend = this.crash?.phase === 'sent' && req.sends === 1 && this.crashMatches(t);
    this.shardSock.send(req.datagram, addr.port, addr.host, () => {
      if (crashAfterSend) this.crashNow();
    });
  }

  private onShardMessage(msg: Buffer): void {
    if (this.closed) return;
    const id = peekRequestId(SHARD_PROTOCOL, msg);
    if (id === undefined) return;
    const t = this.inFlight.get(id);
    if (!t || !t.inFlight || t.inFlight.requestId !== id) return; // late, duplicated or foreign
    const req = t.inFlight;
    this.statCounters.answers++;
    this.statCounters.shardRttNs += process.hrtime.bigint() - req.firstSentNs;
    let decoded;
    try {
      decoded = decodeResponse(SHARD_PROTOCOL, msg, SHARD_MESSAGES[req.kind] as MessageDecl);
    } catch (err) {
      log.warn(`garbled answer to ${req.kind} from shard ${req.shard}: ${err instanceof DecodeError ? err.message : err}; will resend`);
      return;
    }
    // A TIMEOUT answer says nothing about the outcome: keep resending.
    if (decoded.error === ErrorCode.TIMEOUT) return;
    if (this.crash?.phase === 'answered' && this.crashMatches(t)) this.crashNow();
    if (req.timer) clearTimeout(req.timer);
    this.inFlight.delete(id);
    t.inFlight = null;
    const ans: ShardAnswer =
      decoded.error === undefined ? { ok: true, body: decoded.body } : { ok: false, code: decoded.error, maybeRepeated: req.sends > 1 };
    if (!ans.ok) log.debug(`transaction ${t.id} ${t.kindName} step ${t.step}: shard ${req.shard} answered ${req.kind} with ${errorName(ans.code)}`);
    const step = t.step!;
    this.run(t, (def) => {
      const f = def.steps[step];
      assert(f, `no step ${step} in ${t.kindName}`);
      return f(t.req, t.state, ans, this.ctx);
    });
  }

  private crashMatches(t: Txn): boolean {
    return this.crash !== undefined && !t.resumed && t.kindName === this.crash.kind && t.step === this.crash.step;
  }

  private crashNow(): never {
    process.stderr.write(`cdc: debug crash point ${this.opts.crashAt} reached, killing myself\n`);
    process.kill(process.pid, 'SIGKILL');
    throw new Error('unreachable');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Persist what is pending; answers not yet sent are resent by clients and resumed on restart.
    this.flush();
    if (this.committing) await new Promise<void>((r) => (this.onIdle = r));
    this.closed = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    for (const t of this.inFlight.values()) if (t.inFlight?.timer) clearTimeout(t.inFlight.timer);
    await Promise.all([
      new Promise<void>((r) => this.clientSock.close(() => r())),
      new Promise<void>((r) => this.shardSock.close(() => r())),
    ]);
    if (this.writer) {
      const w = this.writer;
      await new Promise<void>((r) => {
        w.once('exit', () => r());
        w.postMessage('close');
      });
    }
  }
}

const EMPTY = Buffer.alloc(0);

function dedupKeys(keys: string[]): string[] {
  return [...new Set(keys)];
}

function splitAddr(a: string): [string, string] {
  const i = a.lastIndexOf(':');
  return [a.slice(0, i), a.slice(i + 1)];
}

/** The request in words for logs: ids in hex, names as strings. */
function describeReq(t: Txn): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(t.req ?? {})) {
    if (typeof v === 'bigint') parts.push(`${k}=0x${v.toString(16)}`);
    else if (Buffer.isBuffer(v)) parts.push(`${k}=${JSON.stringify(v.toString('utf8'))}`);
  }
  return `{${parts.join(' ')}}`;
}
