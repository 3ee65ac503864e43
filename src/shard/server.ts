// One shard on the network: its UDP socket, its bounded request queue, and group commit. All
// requests that arrived together run in one SQLite transaction, each in its own savepoint (so a
// failing request rolls back alone), and their answers leave only after COMMIT.
import dgram from 'node:dgram';
import type Database from 'better-sqlite3';
import { SHARD_PROTOCOL, UDP_MTU, decodeRequest, encodeErrorResponse, encodeResponseFor } from '../proto/envelope.js';
import { ErrorCode, errorName } from '../proto/errors.js';
import { SHARD_MESSAGES, type ShardKindName } from '../proto/messages.js';
import type { Logger } from '../util/log.js';
import { ShardFail, type ShardStore } from './store.js';

/** Requests per transaction: bounds the latency a batch adds and the size of one WAL append. */
export const MAX_BATCH_REQUESTS = 256;
/** Datagrams waiting per shard; beyond this they are dropped (the client's resend covers it). */
export const MAX_QUEUE_DEPTH = 4096;
/** Kernel receive buffer per socket, for bursts while a batch runs. */
export const SOCKET_RECV_BUFFER_BYTES = 1 << 20;

const MUTATING_KINDS: ReadonlySet<ShardKindName> = new Set<ShardKindName>([
  'CONSTRUCT_FILE',
  'ADD_SPAN_INITIATE',
  'ADD_SPAN_CERTIFY',
  'LINK_FILE',
  'SOFT_UNLINK_FILE',
  'SAME_DIRECTORY_RENAME',
  'REMOVE_NON_OWNED_EDGE',
  'REMOVE_OWNED_SNAPSHOT_FILE_EDGE',
  'CREATE_DIRECTORY_INODE',
  'SET_DIRECTORY_OWNER',
  'CREATE_LOCKED_CURRENT_EDGE',
  'LOCK_CURRENT_EDGE',
  'UNLOCK_CURRENT_EDGE',
]);
const MUTATES: boolean[] = new Array(256).fill(false);
for (const k of MUTATING_KINDS) MUTATES[SHARD_MESSAGES[k].kind] = true;
const READ_DIR_KIND = SHARD_MESSAGES.READ_DIR.kind;
const READ_DIR_WITH_ATTRS_KIND = SHARD_MESSAGES.READ_DIR_WITH_ATTRS.kind;

interface Queued {
  buf: Buffer;
  address: string;
  port: number;
}

export interface ShardStats {
  received: number;
  answered: number;
  dropped: number;
  internalErrors: number;
  batches: number;
  /** Transactions committed, and the requests in them (group commit efficiency). */
  commits: number;
  committedRequests: number;
}

export class ShardServer {
  private readonly socket: dgram.Socket;
  private queue: Queued[] = [];
  private readonly outbox: Queued[] = [];
  private readonly tx;
  readonly stats: ShardStats = { received: 0, answered: 0, dropped: 0, internalErrors: 0, batches: 0, commits: 0, committedRequests: 0 };

  constructor(
    readonly store: ShardStore,
    private readonly db: Database.Database,
    private readonly log: Logger,
    /** Called when the queue goes from empty to non-empty; the host then calls runBatch(). */
    private readonly schedule: (s: ShardServer) => void,
  ) {
    this.tx = {
      begin: db.prepare('BEGIN'),
      commit: db.prepare('COMMIT'),
      rollback: db.prepare('ROLLBACK'),
      savepoint: db.prepare('SAVEPOINT r'),
      release: db.prepare('RELEASE r'),
      rollbackTo: db.prepare('ROLLBACK TO r'),
    };
    this.socket = dgram.createSocket({ type: 'udp4', recvBufferSize: SOCKET_RECV_BUFFER_BYTES, lookup: numericLookup });
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo.address, rinfo.port));
    this.socket.on('error', (err) => this.log.warn(`shard ${store.shard}: socket error: ${err.message}`));
  }

  bind(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`shard ${this.store.shard}: cannot bind UDP ${host}:${port}: ${err.message}`));
      this.socket.once('error', onError);
      this.socket.bind(port, host, () => {
        this.socket.off('error', onError);
        resolve();
      });
    });
  }

  address(): { address: string; port: number } {
    return this.socket.address();
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      /* already closed */
    }
  }

  get pending(): number {
    return this.queue.length;
  }

  private onMessage(buf: Buffer, address: string, port: number): void {
    this.stats.received++;
    if (this.queue.length >= MAX_QUEUE_DEPTH) {
      this.stats.dropped++;
      return;
    }
    this.queue.push({ buf, address, port });
    if (this.queue.length === 1) this.schedule(this);
  }

  /** Run up to MAX_BATCH_REQUESTS queued requests as one transaction. True if more are queued. */
  runBatch(): boolean {
    const items = this.queue.length <= MAX_BATCH_REQUESTS ? this.queue : this.queue.slice(0, MAX_BATCH_REQUESTS);
    this.queue = items === this.queue ? [] : this.queue.slice(MAX_BATCH_REQUESTS);
    this.stats.batches++;
    let inTx = false;
    let wrote = false;
    const outbox = this.outbox;
    for (const it of items) {
      const d = decodeRequest(SHARD_PROTOCOL, it.buf);
      if (!d.ok) {
        // No request id: not a shard request at all, no answer (metadata.md §1.5).
        if (d.requestId !== undefined) this.send(encodeErrorResponse(SHARD_PROTOCOL, d.requestId, d.code), it);
        continue;
      }
      const mutates = MUTATES[d.decl.kind]!;
      let resp: Buffer;
      let savepointOpen = false;
      try {
        // Reads run in the batch transaction too: one WAL snapshot per batch instead of one
        // implicit transaction per statement (about 2 µs each).
        if (!inTx) {
          this.tx.begin.run();
          inTx = true;
        }
        if (mutates) {
          wrote = true;
          this.tx.savepoint.run();
          savepointOpen = true;
        }
        // The listings come encoded from their rows (readdir.ts); the rest through their declarations.
        if (d.decl.kind === READ_DIR_KIND) resp = this.store.readDirResponse(d.requestId, d.body);
        else if (d.decl.kind === READ_DIR_WITH_ATTRS_KIND) resp = this.store.readDirWithAttrsResponse(d.requestId, d.body);
        else resp = encodeResponseFor(SHARD_PROTOCOL, d.decl, d.requestId, this.store.execute(d.decl.kind, d.body));
        if (resp.length > UDP_MTU) throw new ShardFail(ErrorCode.INTERNAL_ERROR, `${d.decl.name} response of ${resp.length} bytes exceeds ${UDP_MTU}`);
        if (mutates) {
          this.tx.release.run();
          savepointOpen = false;
        }
      } catch (err) {
        let code: number;
        if (err instanceof ShardFail) {
          code = err.code;
          if (code === ErrorCode.INTERNAL_ERROR) {
            this.stats.internalErrors++;
            this.log.error(`shard ${this.store.shard}: ${d.decl.name}: ${err.detail ?? 'internal error'}`);
          }
        } else {
          code = ErrorCode.INTERNAL_ERROR;
          this.stats.internalErrors++;
          this.log.error(`shard ${this.store.shard}: ${d.decl.name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        }
        resp = encodeErrorResponse(SHARD_PROTOCOL, d.requestId, code);
        if (inTx) {
          try {
            // SQLite rolls a whole transaction back by itself on some errors (disk full, I/O).
            if (!this.db.inTransaction) throw new Error('transaction was rolled back by SQLite');
            if (savepointOpen) {
              this.tx.rollbackTo.run();
              this.tx.release.run();
            }
          } catch (txErr) {
            // The transaction's state is unknown: abandon it, and with it the earlier successes of
            // this batch, which must not be answered as successes.
            this.abandonTransaction(`${d.decl.name}: ${(txErr as Error).message}`);
            inTx = false;
          }
        }
      }
      // Answers of a transaction wait for its COMMIT: reads in the batch may have seen its writes.
      if (inTx) outbox.push({ buf: resp, address: it.address, port: it.port });
      else this.send(resp, it);
    }
    if (inTx) {
      try {
        this.tx.commit.run();
        if (wrote) {
          this.stats.commits++;
          this.stats.committedRequests += outbox.length;
        }
      } catch (err) {
        this.abandonTransaction(`COMMIT: ${(err as Error).message}`);
      }
      for (const o of outbox) this.send(o.buf, o);
      outbox.length = 0;
    }
    return this.queue.length > 0;
  }

  /** After an exception escaped runBatch (a bug): drop the open transaction, keep serving. */
  recover(err: unknown): void {
    this.abandonTransaction(`unexpected: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  }

  /** Roll the batch's transaction back and answer its requests so far with INTERNAL_ERROR. */
  private abandonTransaction(why: string): void {
    this.log.error(`shard ${this.store.shard}: transaction of ${this.outbox.length} requests abandoned: ${why}`);
    try {
      if (this.db.inTransaction) this.tx.rollback.run();
    } catch (err) {
      this.log.error(`shard ${this.store.shard}: ROLLBACK failed: ${(err as Error).message}`);
    }
    this.stats.internalErrors += this.outbox.length;
    for (const o of this.outbox) this.send(encodeErrorResponse(SHARD_PROTOCOL, o.buf.readBigUInt64LE(4), ErrorCode.INTERNAL_ERROR), o);
    this.outbox.length = 0;
  }

  private send(buf: Buffer, to: { address: string; port: number }): void {
    this.stats.answered++;
    // No callback: a failed send surfaces as a socket 'error' event (logged), and a per-send
    // closure costs more than the send itself at these rates.
    this.socket.send(buf, to.port, to.address);
  }
}

/**
 * Answers go only to the numeric address a request came from (rinfo), which needs no resolving:
 * dgram's default dns.lookup would defer every send to a process.nextTick.
 */
function numericLookup(address: string, _options: unknown, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  callback(null, address, 4);
}

export function describeCode(code: number): string {
  return errorName(code);
}
