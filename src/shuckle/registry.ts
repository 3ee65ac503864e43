// Block-service registration and verification (services.md §3.2). A datagram announces
// (key, port, class[, failure domain]); the address is the datagram's source. A new or changed
// registration is verified by connecting back and asking for MACed stats: only a service that
// holds the key can answer. Periodic checks refresh every known service. Unlike the original,
// every check has connect and read timeouts and runs off the listener, with bounded concurrency.
import dgram from 'node:dgram';
import { BlockClient } from '../client/blocks.js';
import { decodeShuckleRegistration } from '../proto/blockwire.js';
import type { Logger } from '../util/log.js';
import type { ShuckleDb } from './db.js';

export const CHECK_CONNECT_TIMEOUT_MS = 2_000;
export const CHECK_IO_TIMEOUT_MS = 3_000;
/** Checks running at once; further registrations wait for the next datagram (1 s later). */
export const MAX_CHECKS_IN_FLIGHT = 16;
/** A service failing checks is logged at most this often. */
const FAILURE_LOG_INTERVAL_MS = 60_000;

interface Known {
  ip: string;
  port: number;
  storageClass: number;
  failureDomain: string;
}

function sameRegistration(a: Known, b: Known): boolean {
  return a.ip === b.ip && a.port === b.port && a.storageClass === b.storageClass && a.failureDomain === b.failureDomain;
}

export class Registry {
  private readonly known = new Map<string, Known>();
  private readonly inFlight = new Set<string>();
  private readonly lastFailureLogMs = new Map<string, number>();
  private readonly client = new BlockClient({ connectTimeoutMs: CHECK_CONNECT_TIMEOUT_MS, ioTimeoutMs: CHECK_IO_TIMEOUT_MS, maxIdlePerService: 0 });
  private socket: dgram.Socket | null = null;
  private periodicTimer: NodeJS.Timeout | null = null;
  private badDatagrams = 0;
  private stopped = false;

  constructor(
    private readonly db: ShuckleDb,
    private readonly checkPeriodMs: number,
    private readonly log: Logger,
  ) {
    // Services verified before a restart are re-checked by the periodic pass; until then their
    // registrations are taken as unchanged, as the original's in-memory state would after a pass.
    for (const r of db.blockServices()) {
      if (!r.replaced) this.known.set(r.secret_key, { ip: r.ip, port: r.port, storageClass: r.storage_class, failureDomain: r.failure_domain });
    }
  }

  listen(host: string, port: number): Promise<number> {
    const socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 1 << 20 });
    this.socket = socket;
    socket.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo.address));
    socket.on('error', (err) => this.log.warn(`registration socket: ${err.message}`));
    return new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, host, () => {
        socket.off('error', reject);
        resolve(socket.address().port);
      });
    });
  }

  startPeriodic(): void {
    const pass = async () => {
      if (this.stopped) return;
      const rows = this.db.blockServices().filter((r) => !r.replaced);
      // At most MAX_CHECKS_IN_FLIGHT at once; each check is bounded by its timeouts.
      let next = 0;
      const worker = async () => {
        while (next < rows.length && !this.stopped) {
          const r = rows[next++]!;
          await this.check(r.secret_key, { ip: r.ip, port: r.port, storageClass: r.storage_class, failureDomain: r.failure_domain });
        }
      };
      await Promise.all(Array.from({ length: Math.min(MAX_CHECKS_IN_FLIGHT, rows.length) }, worker));
      if (!this.stopped) this.periodicTimer = setTimeout(() => void pass(), this.checkPeriodMs);
    };
    void pass();
  }

  close(): void {
    this.stopped = true;
    if (this.periodicTimer) clearTimeout(this.periodicTimer);
    this.socket?.close();
    this.client.close();
  }

  private onDatagram(msg: Buffer, sourceIp: string): void {
    const reg = decodeShuckleRegistration(msg);
    if (!reg) {
      if (this.badDatagrams++ % 1000 === 0) this.log.warn(`ignoring a ${msg.length}-byte registration datagram from ${sourceIp} (expected 19 or 35 bytes)`);
      return;
    }
    if (reg.port === 0 || reg.storageClass < 2) {
      if (this.badDatagrams++ % 1000 === 0) this.log.warn(`ignoring a registration from ${sourceIp} with port ${reg.port} and storage class ${reg.storageClass}`);
      return;
    }
    const ip = sourceIp.startsWith('::ffff:') ? sourceIp.slice(7) : sourceIp;
    const keyHex = reg.secretKey.toString('hex');
    const announced: Known = { ip, port: reg.port, storageClass: reg.storageClass, failureDomain: reg.failureDomain };
    const known = this.known.get(keyHex);
    // Repeats of an unchanged registration change nothing (only checks refresh last_check).
    if (known && sameRegistration(known, announced)) return;
    if (this.inFlight.size >= MAX_CHECKS_IN_FLIGHT) return;
    void this.check(keyHex, announced);
  }

  /** Verifies one service by a MACed stats request and records the result. */
  async check(keyHex: string, reg: Known): Promise<boolean> {
    if (this.inFlight.has(keyHex)) return false;
    this.inFlight.add(keyHex);
    try {
      const s = await this.client.stats({ ip: reg.ip, port: reg.port }, { key: Buffer.from(keyHex, 'hex') });
      if (this.stopped) return false;
      this.db.recordCheck({
        secretKeyHex: keyHex,
        ip: reg.ip,
        port: reg.port,
        storageClass: reg.storageClass,
        failureDomain: reg.failureDomain,
        nowMs: Date.now(),
        usedBytes: Number(s.usedBytes),
        freeBytes: Number(s.freeBytes),
        usedN: Number(s.usedN),
        freeN: Number(s.freeN),
      });
      const before = this.known.get(keyHex);
      if (!before || !sameRegistration(before, reg)) this.log.info(`block service ${reg.ip}:${reg.port} (class ${reg.storageClass}${reg.failureDomain ? `, domain ${reg.failureDomain}` : ''}) verified`);
      this.known.set(keyHex, reg);
      // Another key that claimed this address is gone from it.
      for (const [k, v] of this.known) if (k !== keyHex && v.ip === reg.ip && v.port === reg.port) this.known.delete(k);
      this.lastFailureLogMs.delete(keyHex);
      return true;
    } catch (err) {
      const now = Date.now();
      const last = this.lastFailureLogMs.get(keyHex) ?? 0;
      if (now - last >= FAILURE_LOG_INTERVAL_MS) {
        this.lastFailureLogMs.set(keyHex, now);
        this.log.warn(`check of block service ${reg.ip}:${reg.port} failed: ${(err as Error).message}`);
      }
      return false;
    } finally {
      this.inFlight.delete(keyHex);
    }
  }
}
