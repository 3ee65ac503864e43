// What the path-level client, the file writer and the file reader share: where every shard and the
// CDC are, the UDP transport, the tunables, and the retry discipline.
import { EggsError, ErrorCode } from '../proto/errors.js';
import { shardOf } from '../proto/ids.js';
import type { CdcKindName, CdcReq, CdcResp, ShardKindName, ShardReq, ShardResp } from '../proto/messages.js';
import type { BlockClient } from './blocks.js';
import type { Address, UdpTransport } from './transport.js';

export interface CoreOptions {
  timeoutMs: number;
  attempts: number;
  /** CDC transactions touch several shards; they get this much more time per attempt. */
  cdcTimeoutMs: number;
  parity: number;
  storageClass: number;
  spanBytes: number;
  /** A file's spans grow (doubling) from spanBytes up to this as it keeps growing; absent: spanBytes. */
  maxSpanBytes?: number;
  blockTimeoutMs: number;
  /** Most spans read ahead of the consumer. */
  readAheadSpans: number;
  /** Spans are read ahead while the ones in flight total less than this (at least one is). */
  readAheadBytes: number;
}

export class ClientCore {
  constructor(
    readonly transport: UdpTransport,
    readonly blocks: BlockClient,
    readonly shards: readonly Address[],
    readonly cdc: Address,
    readonly opts: CoreOptions,
  ) {}

  shardAddr(id: bigint): Address {
    const a = this.shards[shardOf(id)];
    if (!a) throw new EggsError(ErrorCode.TIMEOUT, `shard ${shardOf(id)} has no known address`);
    return a;
  }

  /** An idempotent shard request: resent on timeout. */
  shard<K extends ShardKindName>(kind: K, about: bigint, body: ShardReq<K>): Promise<ShardResp<K>> {
    return this.transport.shardRequest(this.shardAddr(about), kind, body, { timeoutMs: this.opts.timeoutMs, attempts: this.opts.attempts });
  }

  /**
   * A request that is not safe to repeat blindly. It is sent once per attempt; after a timeout the
   * next attempt's error is handed to `afterTimeout`, which decides whether that error means the
   * lost first attempt succeeded (returns the result) or not (rethrows).
   */
  async nonIdempotent<T>(send: () => Promise<T>, afterTimeout: (err: EggsError) => Promise<T>): Promise<T> {
    let timedOut = false;
    for (let attempt = 1; ; attempt++) {
      try {
        return await send();
      } catch (err) {
        if (!(err instanceof EggsError)) throw err;
        if (err.code === ErrorCode.TIMEOUT) {
          if (attempt >= this.opts.attempts) throw err;
          timedOut = true;
          continue;
        }
        if (timedOut) return afterTimeout(err);
        throw err;
      }
    }
  }

  shardOnce<K extends ShardKindName>(kind: K, about: bigint, body: ShardReq<K>): Promise<ShardResp<K>> {
    return this.transport.shardRequest(this.shardAddr(about), kind, body, { timeoutMs: this.opts.timeoutMs, attempts: 1 });
  }

  cdcOnce<K extends CdcKindName>(kind: K, body: CdcReq<K>): Promise<CdcResp<K>> {
    return this.transport.cdcRequest(this.cdc, kind, body, { timeoutMs: this.opts.cdcTimeoutMs, attempts: 1 });
  }
}
