// One UDP socket carrying many shard/CDC requests at once, matched to their answers by request id.
// Timeouts and resends are explicit per request, in-flight requests are bounded, and a late or
// duplicated answer is dropped, never an error.
import dgram from 'node:dgram';
import { DecodeError } from '../proto/bincode.js';
import { DEFAULT_CDC_KEY } from '../proto/crypto.js';
import { CDC_PROTOCOL, SHARD_PROTOCOL, UDP_MTU, decodeResponse, peekRequestId, type Protocol } from '../proto/envelope.js';
import { EggsError, ErrorCode } from '../proto/errors.js';
import { CDC_MESSAGES, SHARD_MESSAGES, type CdcKindName, type CdcReq, type CdcResp, type MessageDecl, type ShardKindName, type ShardReq, type ShardResp } from '../proto/messages.js';
import { encodeCdcRequest, encodeShardRequest } from '../proto/envelope.js';
import { eggsNow } from '../proto/time.js';

export interface Address {
  host: string;
  port: number;
}

export interface RequestOptions {
  /** Time to wait for an answer before resending (or failing on the last attempt). */
  timeoutMs?: number;
  /** Total sends, including the first. 1 for requests that are not safe to repeat. */
  attempts?: number;
}

export interface TransportOptions {
  defaultTimeoutMs?: number;
  defaultAttempts?: number;
  maxInFlight?: number;
  /** Key for privileged shard kinds (only the CDC and tests send them). */
  cdcKey?: Uint8Array;
  socketBufferBytes?: number;
}

export const DEFAULT_TIMEOUT_MS = 2_000;
export const DEFAULT_ATTEMPTS = 3;
export const DEFAULT_MAX_IN_FLIGHT = 1024;
const DEFAULT_SOCKET_BUFFER_BYTES = 8 << 20;

interface Pending {
  proto: Protocol;
  decl: MessageDecl;
  resolve(body: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The error of an error answer, without a stack trace: it would only show this socket callback,
 * not the caller, and capturing it cost ~8 µs per answer (every lookup of a missing name).
 */
function answeredError(code: number): EggsError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new EggsError(code);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export class UdpTransport {
  private readonly socket: dgram.Socket;
  private readonly pending = new Map<bigint, Pending>();
  private nextRequestId: bigint;
  private readonly ready: Promise<void>;
  private inFlight = 0;
  private readonly waitingForSlot: (() => void)[] = [];
  private closed = false;
  readonly opts: Required<TransportOptions>;

  constructor(opts: TransportOptions = {}) {
    this.opts = {
      defaultTimeoutMs: opts.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS,
      defaultAttempts: opts.defaultAttempts ?? DEFAULT_ATTEMPTS,
      maxInFlight: opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT,
      cdcKey: opts.cdcKey ?? DEFAULT_CDC_KEY,
      socketBufferBytes: opts.socketBufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES,
    };
    // Request ids start at the current Eggs time, like the original clients, then count up so that
    // every request of this socket is told apart.
    this.nextRequestId = eggsNow();
    this.socket = dgram.createSocket({ type: 'udp4' });
    this.socket.on('message', (msg) => this.onMessage(msg));
    this.socket.on('error', () => {
      /* ICMP errors surface as timeouts of the affected requests */
    });
    this.ready = new Promise((resolve) => {
      this.socket.bind(0, () => {
        try {
          this.socket.setRecvBufferSize(this.opts.socketBufferBytes);
          this.socket.setSendBufferSize(this.opts.socketBufferBytes);
        } catch {
          /* the kernel caps these; the defaults still work, only with fewer requests in flight */
        }
        resolve();
      });
    });
    this.socket.unref();
  }

  private onMessage(msg: Buffer): void {
    const proto = msg.length >= 4 && msg.readUInt32LE(0) === CDC_PROTOCOL.magic ? CDC_PROTOCOL : SHARD_PROTOCOL;
    const id = peekRequestId(proto, msg);
    if (id === undefined) return;
    const p = this.pending.get(id);
    if (!p || p.proto !== proto) return; // late, duplicated or foreign: drop
    let decoded;
    try {
      decoded = decodeResponse(proto, msg, p.decl);
    } catch (err) {
      this.finish(id, p);
      p.reject(new EggsError(ErrorCode.MALFORMED_RESPONSE, err instanceof DecodeError ? err.message : String(err)));
      return;
    }
    this.finish(id, p);
    if (decoded.error !== undefined) p.reject(answeredError(decoded.error));
    else p.resolve(decoded.body);
  }

  private finish(id: bigint, p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    this.pending.delete(id);
  }

  private async acquireSlot(): Promise<void> {
    if (this.inFlight < this.opts.maxInFlight) {
      this.inFlight++;
      return;
    }
    await new Promise<void>((resolve) => this.waitingForSlot.push(resolve));
    this.inFlight++;
  }

  private releaseSlot(): void {
    this.inFlight--;
    this.waitingForSlot.shift()?.();
  }

  /** Send a prepared request (any protocol) and wait for its decoded answer body. */
  async send(proto: Protocol, decl: MessageDecl, to: Address, makeDatagram: (requestId: bigint) => Buffer, ro: RequestOptions = {}): Promise<any> {
    if (this.closed) throw new Error('transport is closed');
    await this.ready;
    const timeoutMs = ro.timeoutMs ?? this.opts.defaultTimeoutMs;
    const attempts = Math.max(1, ro.attempts ?? this.opts.defaultAttempts);
    await this.acquireSlot();
    try {
      // One request id for every resend: an answer to any of the sends completes the request, and
      // the CDC recognises a resend by its id and answers it from its record instead of running
      // the transaction twice.
      const requestId = this.nextRequestId++;
      const datagram = makeDatagram(requestId);
      if (datagram.length > UDP_MTU) throw new EggsError(ErrorCode.MALFORMED_REQUEST, `request of ${datagram.length} bytes exceeds ${UDP_MTU}`);
      for (let attempt = 1; ; attempt++) {
        try {
          return await new Promise((resolve, reject) => {
            const p: Pending = { proto, decl, resolve, reject, timer: undefined };
            p.timer = setTimeout(() => {
              this.pending.delete(requestId);
              reject(new EggsError(ErrorCode.TIMEOUT, `no answer from ${proto.name} ${to.host}:${to.port} within ${timeoutMs} ms`));
            }, timeoutMs);
            this.pending.set(requestId, p);
            this.socket.send(datagram, to.port, to.host, (err) => {
              if (err && this.pending.get(requestId) === p) {
                this.finish(requestId, p);
                reject(new EggsError(ErrorCode.TIMEOUT, `cannot send to ${to.host}:${to.port}: ${err.message}`));
              }
            });
          });
        } catch (err) {
          if (err instanceof EggsError && err.code === ErrorCode.TIMEOUT && attempt < attempts) continue;
          throw err;
        }
      }
    } finally {
      this.releaseSlot();
    }
  }

  shardRequest<K extends ShardKindName>(to: Address, kind: K, body: ShardReq<K>, ro?: RequestOptions): Promise<ShardResp<K>> {
    const decl = SHARD_MESSAGES[kind] as MessageDecl;
    return this.send(SHARD_PROTOCOL, decl, to, (id) => encodeShardRequest(kind, id, body, this.opts.cdcKey), ro);
  }

  cdcRequest<K extends CdcKindName>(to: Address, kind: K, body: CdcReq<K>, ro?: RequestOptions): Promise<CdcResp<K>> {
    const decl = CDC_MESSAGES[kind] as MessageDecl;
    return this.send(CDC_PROTOCOL, decl, to, (id) => encodeCdcRequest(kind, id, body), ro);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.pending) {
      this.finish(id, p);
      p.reject(new Error('transport closed'));
    }
    this.socket.close();
  }
}
