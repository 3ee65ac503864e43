// A UDP proxy in front of the 256 shards and the CDC, for client tests: it records request kinds,
// can refuse kinds (to prove a client needs only some), and can drop the answer to chosen requests
// (to exercise a client's handling of lost responses to non-idempotent requests).
import dgram from 'node:dgram';
import { freeUdpRange } from './ports.js';

const SHARD_MAGIC = 0x00414853;
const CDC_MAGIC = 0x00434443;
const SHARD_COUNT = 256;

export type ProxiedProtocol = 'shard' | 'cdc';

export interface UdpProxyOptions {
  /** Whether to forward a request of this kind (default: all). Refused ones are dropped and recorded. */
  allow?: (proto: ProxiedProtocol, kind: number) => boolean;
  /** Whether to swallow the server's answer to this request (called once per request datagram). */
  dropAnswer?: (proto: ProxiedProtocol, kind: number) => boolean;
}

export interface UdpProxy {
  shardBasePort: number;
  cdcPort: number;
  /** "shard:0x5" → number of requests forwarded. */
  seen: Map<string, number>;
  refused: string[];
  droppedAnswers: string[];
  close(): void;
}

function bindUdp(port: number): Promise<dgram.Socket | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => {
      s.close();
      resolve(undefined);
    });
    s.bind(port, '127.0.0.1', () => resolve(s));
  });
}

export async function startUdpProxy(realShardBasePort: number, realCdcPort: number, opts: UdpProxyOptions = {}): Promise<UdpProxy> {
  const ports = SHARD_COUNT + 1;
  // Front sockets first, before any ephemeral socket of ours could land in the range; a port seen
  // free may still be taken by someone else by the time we bind, so retry with another range.
  let base = 0;
  let fronts: dgram.Socket[] = [];
  for (let attempt = 0; attempt < 10 && fronts.length < ports; attempt++) {
    base = await freeUdpRange(ports);
    const got = await Promise.all([...Array(ports).keys()].map((i) => bindUdp(base + i)));
    fronts = got.filter((s): s is dgram.Socket => s !== undefined);
    if (fronts.length < ports) {
      for (const s of fronts) s.close();
      fronts = [];
    }
  }
  if (fronts.length < ports) throw new Error('could not bind the proxy ports');
  const seen = new Map<string, number>();
  const refused: string[] = [];
  const droppedAnswers: string[] = [];
  const sockets: dgram.Socket[] = [...fronts];
  const wire = (front: dgram.Socket, target: number, proto: ProxiedProtocol) =>
    new Promise<void>((resolve) => {
      const back = dgram.createSocket('udp4');
      const pending = new Map<bigint, { address: string; port: number; drop: boolean; key: string }>();
      front.on('message', (msg, rinfo) => {
        const magicOk = msg.length >= 13 && msg.readUInt32LE(0) === (proto === 'shard' ? SHARD_MAGIC : CDC_MAGIC);
        const kind = magicOk ? msg[12]! : -1;
        const key = `${proto}:0x${kind.toString(16)}`;
        if (opts.allow && !opts.allow(proto, kind)) {
          refused.push(key);
          return;
        }
        seen.set(key, (seen.get(key) ?? 0) + 1);
        const drop = opts.dropAnswer?.(proto, kind) ?? false;
        pending.set(msg.readBigUInt64LE(4), { address: rinfo.address, port: rinfo.port, drop, key });
        back.send(msg, target, '127.0.0.1');
      });
      back.on('message', (msg) => {
        if (msg.length < 12) return;
        const id = msg.readBigUInt64LE(4);
        const p = pending.get(id);
        if (!p) return;
        pending.delete(id);
        if (p.drop) {
          droppedAnswers.push(p.key);
          return;
        }
        front.send(msg, p.port, p.address);
      });
      sockets.push(back);
      back.bind(0, '127.0.0.1', () => resolve());
    });
  await Promise.all(fronts.slice(0, SHARD_COUNT).map((f, s) => wire(f, realShardBasePort + s, 'shard')));
  await wire(fronts[SHARD_COUNT]!, realCdcPort, 'cdc');
  return { shardBasePort: base, cdcPort: base + SHARD_COUNT, seen, refused, droppedAnswers, close: () => sockets.forEach((s) => s.close()) };
}
