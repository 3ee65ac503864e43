// The fault-injection driver's network half: a UDP proxy standing between the CDC and the real
// shards (the CDC is pointed at the proxy's ports, proxy port base+s forwards to shard port
// upstreamBase+s). Every request is decoded; rules pick requests by shard request kind and body
// and make them fail in each way that matters: dropped, delayed (past the CDC's timeout, so the
// original arrives after a resend), duplicated, executed but with the answer lost, answered with
// an error instead of being executed, held until released, or handed to a callback (which may
// kill -9 and restart the shard process).
import dgram from 'node:dgram';
import { SHARD_PROTOCOL, decodeRequest, encodeErrorResponse, peekRequestId } from '../../src/proto/envelope.js';
import type { ShardKindName } from '../../src/proto/messages.js';

export type FaultAction =
  | { t: 'drop' }
  | { t: 'delay'; ms: number }
  | { t: 'duplicate' }
  /** Forward twice; the first answer is lost, so the sender only sees the second execution's. */
  | { t: 'duplicate-lose-first-answer' }
  /** Forward, let the shard execute it, lose the answer. */
  | { t: 'drop-reply' }
  | { t: 'error'; code: number }
  | { t: 'hold' }
  /** Run `f` (e.g. kill and restart the shard); then forward unless it returns 'drop'. */
  | { t: 'call'; f: () => Promise<'drop' | 'forward'> | 'drop' | 'forward' };

export interface FaultRule {
  kind: ShardKindName;
  match?: (body: any) => boolean;
  /** Skip this many matching requests before acting (default 0). */
  skip?: number;
  /** Act on this many matching requests (default 1). */
  times?: number;
  action: FaultAction;
}

export interface RuleHandle {
  /** Matching requests acted upon so far. */
  readonly fired: number;
  /** Resolves when the rule acted for the first time. */
  readonly firedOnce: Promise<void>;
}

export interface SeenRequest {
  shard: number;
  kind: string;
  body: any;
  requestId: bigint;
}

interface ActiveRule {
  rule: FaultRule;
  seen: number;
  fired: number;
  resolve: () => void;
  handle: RuleHandle;
}

export class UdpFaultProxy {
  private readonly listeners: dgram.Socket[] = [];
  private readonly upstream = dgram.createSocket('udp4');
  /** request id → where to send its answers. */
  private readonly routes = new Map<bigint, { shard: number; port: number; address: string }>();
  private readonly dropReplies = new Set<bigint>();
  private rules: ActiveRule[] = [];
  private held: (() => void)[] = [];
  private timers = new Set<NodeJS.Timeout>();
  readonly log: SeenRequest[] = [];
  /** Failures of 'call' actions (a test should assert there are none). */
  readonly errors: Error[] = [];
  /** Stop forwarding everything (a crashed network); requests are dropped. */
  blackhole = false;

  private constructor(
    readonly basePort: number,
    readonly count: number,
    readonly upstreamHost: string,
    readonly upstreamBasePort: number,
  ) {}

  static async start(opts: { basePort: number; count: number; upstreamBasePort: number; upstreamHost?: string }): Promise<UdpFaultProxy> {
    const p = new UdpFaultProxy(opts.basePort, opts.count, opts.upstreamHost ?? '127.0.0.1', opts.upstreamBasePort);
    await p.bind();
    return p;
  }

  private async bind(): Promise<void> {
    this.upstream.on('message', (m) => this.onReply(m));
    this.upstream.on('error', () => undefined);
    await new Promise<void>((r) => this.upstream.bind(0, '127.0.0.1', r));
    for (let s = 0; s < this.count; s++) {
      const sock = dgram.createSocket('udp4');
      sock.on('error', () => undefined);
      sock.on('message', (m, rinfo) => this.onRequest(s, m, rinfo));
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(this.basePort + s, '127.0.0.1', () => resolve());
      });
      this.listeners.push(sock);
    }
  }

  addRule(rule: FaultRule): RuleHandle {
    let resolve!: () => void;
    const firedOnce = new Promise<void>((r) => (resolve = r));
    const a: ActiveRule = {
      rule,
      seen: 0,
      fired: 0,
      resolve,
      handle: {
        get fired() {
          return a.fired;
        },
        firedOnce,
      },
    };
    this.rules.push(a);
    return a.handle;
  }

  clearRules(): void {
    this.rules = [];
  }

  /** Forward every held request now. */
  releaseHeld(): void {
    const h = this.held;
    this.held = [];
    for (const f of h) f();
  }

  /** Forget held requests without forwarding them. */
  dropHeld(): void {
    this.held = [];
  }

  get heldCount(): number {
    return this.held.length;
  }

  private forward(shard: number, m: Buffer): void {
    this.upstream.send(m, this.upstreamBasePort + shard, this.upstreamHost);
  }

  private onRequest(shard: number, m: Buffer, rinfo: dgram.RemoteInfo): void {
    const id = peekRequestId(SHARD_PROTOCOL, m);
    if (id === undefined) return;
    this.routes.set(id, { shard, port: rinfo.port, address: rinfo.address });
    if (this.blackhole) return;
    const d = decodeRequest(SHARD_PROTOCOL, m);
    if (d.ok) this.log.push({ shard, kind: d.decl.name, body: d.body, requestId: id });
    const rule = d.ok ? this.pick(d.decl.name, d.body) : undefined;
    if (!rule) return this.forward(shard, m);
    const a = rule.action;
    switch (a.t) {
      case 'drop':
        return;
      case 'delay': {
        const t = setTimeout(() => {
          this.timers.delete(t);
          this.forward(shard, m);
        }, a.ms);
        this.timers.add(t);
        return;
      }
      case 'duplicate':
        this.forward(shard, m);
        this.forward(shard, m);
        return;
      case 'duplicate-lose-first-answer':
        this.dropReplies.add(id);
        this.forward(shard, m);
        this.forward(shard, m);
        return;
      case 'drop-reply':
        this.dropReplies.add(id);
        this.forward(shard, m);
        return;
      case 'error':
        this.listeners[shard]!.send(encodeErrorResponse(SHARD_PROTOCOL, id, a.code), rinfo.port, rinfo.address);
        return;
      case 'hold':
        this.held.push(() => this.forward(shard, m));
        return;
      case 'call':
        void Promise.resolve()
          .then(() => a.f())
          .then(
            (what) => {
              if (what === 'forward') this.forward(shard, m);
            },
            (err: Error) => {
              process.stderr.write(`fault proxy: call action failed: ${err.stack ?? err}\n`);
              this.errors.push(err);
            },
          );
        return;
    }
  }

  private pick(kind: string, body: any): FaultRule | undefined {
    for (const a of this.rules) {
      if (a.rule.kind !== kind) continue;
      if (a.rule.match && !a.rule.match(body)) continue;
      a.seen++;
      if (a.seen <= (a.rule.skip ?? 0)) continue;
      if (a.fired >= (a.rule.times ?? 1)) continue;
      a.fired++;
      a.resolve();
      return a.rule;
    }
    return undefined;
  }

  private onReply(m: Buffer): void {
    const id = peekRequestId(SHARD_PROTOCOL, m);
    if (id === undefined) return;
    const route = this.routes.get(id);
    if (!route) return;
    if (this.dropReplies.delete(id)) return;
    this.listeners[route.shard]!.send(m, route.port, route.address);
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.held = [];
    await Promise.all([this.upstream, ...this.listeners].map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
