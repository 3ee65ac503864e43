// Block-service TCP client (services.md §2.3): write, fetch, crc, erase and stats with exact-length
// framing, connect and inactivity timeouts, and a small pool of idle connections per service (a
// connection carries a sequence of requests). The wire has no error responses: a refusal is a
// closed connection, reported here as a BlockServiceError naming the service and the operation.
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { BLOCK_MESSAGES, MAX_BLOCK_BYTES, type BlockResp } from '../proto/blockwire.js';
import { decode, encode } from '../proto/bincode.js';
import { cbcMac, macEquals, MAC_BYTES } from '../proto/crypto.js';
import { crcFromBytes, crcToBytes } from '../proto/crc32c.js';
import { ExactReader, ReadSlabs, ReadTimeoutError, ShortReadError } from '../util/exact-reader.js';

export const BLOCK_CONNECT_TIMEOUT_MS = 5_000;
/** No byte received (or accepted) for this long while a request is in progress: give up. */
export const BLOCK_IO_TIMEOUT_MS = 30_000;
/** Pooled connections idle longer than this are closed (well under the server's idle timeout). */
export const BLOCK_POOL_IDLE_MS = 5_000;
export const BLOCK_POOL_MAX_IDLE_PER_SERVICE = 8;
const READ_HIGH_WATER_BYTES = 4 << 20;
/**
 * Replies are read into slabs of this size (see ReadSlabs): a fetched block arrives in reads of
 * up to megabytes instead of 64 KiB, with no copy. Untouched slab pages cost no memory.
 */
const READ_SLAB_BYTES = 4 << 20;
const READ_MIN_BYTES = 64 << 10;

export interface BlockServiceAddress {
  ip: string;
  port: number;
}

export type BlockOp = 'write' | 'fetch' | 'crc' | 'erase' | 'stats' | 'connect';

export class BlockServiceError extends Error {
  override readonly name = 'BlockServiceError';
  constructor(
    readonly address: string,
    readonly op: BlockOp,
    readonly reason: string,
    readonly blockId?: bigint,
    options?: { cause?: unknown },
  ) {
    const what = blockId === undefined ? op : `${op} of block 0x${blockId.toString(16).padStart(16, '0')}`;
    super(`block service ${address}: ${what} failed: ${reason}`, options);
  }
}

export interface BlockStats {
  token: Buffer;
  usedBytes: bigint;
  freeBytes: bigint;
  usedN: bigint;
  freeN: bigint;
  mac: Buffer;
}

export interface BlockClientOptions {
  connectTimeoutMs?: number;
  ioTimeoutMs?: number;
  poolIdleMs?: number;
  maxIdlePerService?: number;
}

function addrKey(a: BlockServiceAddress): string {
  return a.ip.includes(':') ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

/** A reply body being read straight into a caller's buffer (see Conn.receiveInto). */
interface Sink {
  dest: Buffer;
  filled: number;
  size: number;
  timer: NodeJS.Timeout;
  resolve: () => void;
  reject: (err: Error) => void;
}

class Conn {
  readonly reader: ExactReader;
  idleTimer: NodeJS.Timeout | null = null;
  dead = false;
  /** While set, the socket reads into the sink's buffer instead of the receive slabs. */
  sink: Sink | null = null;
  constructor(
    readonly socket: net.Socket,
    private readonly ioTimeoutMs: number,
  ) {
    this.reader = new ExactReader(socket, { highWaterBytes: READ_HIGH_WATER_BYTES, idleTimeoutMs: ioTimeoutMs, fedByOnread: true });
    socket.on('close', () => {
      this.dead = true;
      this.failSink((at) => new ShortReadError(`connection closed ${at}`));
    });
    socket.on('error', (err) => {
      this.dead = true;
      this.failSink((at) => new ShortReadError(`connection failed ${at}: ${err.message}`));
    });
  }
  destroy(): void {
    this.dead = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.socket.destroy();
  }

  /** Where the next socket read goes: the rest of the sink's body, else a receive slab. */
  readTarget(slabs: ReadSlabs): Buffer {
    const k = this.sink;
    return k ? k.dest.subarray(k.filled, k.size) : slabs.next();
  }

  /** A socket read of `n` bytes into `buf`, the buffer readTarget() gave for it. */
  received(slabs: ReadSlabs, buf: Buffer, n: number): void {
    const k = this.sink;
    if (!k) return this.reader.push(slabs.taken(buf, n)); // pauses the socket at its high-water mark
    if (buf.buffer === k.dest.buffer && buf.byteOffset === k.dest.byteOffset + k.filled) {
      k.filled += n;
    } else {
      // Node asks for the next read's buffer right after each read, so the first read after the
      // sink was set still went into a slab: move its bytes over (any beyond the body stay queued).
      const chunk = slabs.taken(buf, n);
      const take = Math.min(n, k.size - k.filled);
      chunk.copy(k.dest, k.filled, 0, take);
      k.filled += take;
      if (take < n) this.reader.push(chunk.subarray(take));
    }
    if (!(k.filled <= k.size)) throw new Error(`block client: read past the reply body (${k.filled} of ${k.size} bytes)`);
    if (k.filled === k.size) {
      this.sink = null;
      clearTimeout(k.timer);
      k.resolve();
    } else {
      k.timer.refresh();
    }
  }

  /**
   * Reads the next `size` bytes of the stream into dest[0, size): what already arrived (with the
   * reply header) is copied, the rest is read by the kernel straight into `dest`, with no
   * intermediate buffer, so a caller reusing `dest` costs neither copies nor page faults.
   */
  async receiveInto(dest: Buffer, size: number): Promise<void> {
    if (!(size <= dest.length)) throw new RangeError(`receiveInto: ${size} bytes do not fit in ${dest.length}`);
    if (this.sink) throw new Error('receiveInto: a body is already being received');
    let filled = 0;
    // Only bytes already buffered are taken here (each read resolves at once: no socket read
    // can slip in between), so the stream's order is kept when the sink takes over.
    while (filled < size && this.reader.buffered > 0) {
      const piece = (await this.reader.read(Math.min(this.reader.buffered, size - filled)))!;
      piece.copy(dest, filled);
      filled += piece.length;
    }
    if (filled === size) return;
    if (this.dead) throw new ShortReadError(`connection closed after ${filled} of ${size} bytes`);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.failSink((at) => new ReadTimeoutError(`peer sent nothing for ${this.ioTimeoutMs} ms ${at}`)), this.ioTimeoutMs);
      this.sink = { dest, filled, size, timer, resolve, reject };
    });
  }

  /** Ends the body being received with the error `make` builds from where it stopped. */
  private failSink(make: (at: string) => Error): void {
    const k = this.sink;
    if (!k) return;
    this.sink = null;
    clearTimeout(k.timer);
    k.reject(make(`after ${k.filled} of ${k.size} bytes`));
  }
}

/** The MAC a stats reply must carry: over 'S' ‖ token ‖ 4×u64 (41 bytes) with the service key. */
export function statsMacValid(key: Uint8Array, s: BlockStats): boolean {
  const m = Buffer.allocUnsafe(41);
  m[0] = BLOCK_MESSAGES.STATS.respKind;
  s.token.copy(m, 1);
  m.writeBigUInt64LE(s.usedBytes, 9);
  m.writeBigUInt64LE(s.freeBytes, 17);
  m.writeBigUInt64LE(s.usedN, 25);
  m.writeBigUInt64LE(s.freeN, 33);
  return macEquals(cbcMac(m, key), s.mac);
}

export class BlockClient {
  private readonly connectTimeoutMs: number;
  private readonly ioTimeoutMs: number;
  private readonly poolIdleMs: number;
  private readonly maxIdlePerService: number;
  private readonly idle = new Map<string, Conn[]>();
  private closed = false;

  constructor(opts: BlockClientOptions = {}) {
    this.connectTimeoutMs = opts.connectTimeoutMs ?? BLOCK_CONNECT_TIMEOUT_MS;
    this.ioTimeoutMs = opts.ioTimeoutMs ?? BLOCK_IO_TIMEOUT_MS;
    this.poolIdleMs = opts.poolIdleMs ?? BLOCK_POOL_IDLE_MS;
    this.maxIdlePerService = opts.maxIdlePerService ?? BLOCK_POOL_MAX_IDLE_PER_SERVICE;
  }

  /** Stores `data` as block `blockId`; returns the service's 8-byte write proof. */
  async write(addr: BlockServiceAddress, blockId: bigint, crc: Uint8Array | number, data: Uint8Array, certificate: Uint8Array): Promise<Buffer> {
    const crcBytes = typeof crc === 'number' ? crcToBytes(crc) : Buffer.from(crc);
    if (data.length > MAX_BLOCK_BYTES) throw new BlockServiceError(addrKey(addr), 'write', `block of ${data.length} bytes exceeds ${MAX_BLOCK_BYTES}`, blockId);
    const header = Buffer.concat([
      Buffer.of(BLOCK_MESSAGES.WRITE.reqKind),
      encode(BLOCK_MESSAGES.WRITE.req, { blockId, crc32: crcBytes, size: data.length, certificate: Buffer.from(certificate) }),
    ]);
    return this.request(addr, 'write', blockId, async (c) => {
      c.socket.cork();
      c.socket.write(header);
      if (data.length > 0) c.socket.write(data);
      c.socket.uncork();
      const resp = await this.response(c, BLOCK_MESSAGES.WRITE.respKind, 17);
      const r = decode(BLOCK_MESSAGES.WRITE.resp, resp.subarray(1)) as BlockResp<'WRITE'>;
      if (r.blockId !== blockId) throw new Error(`reply names block 0x${r.blockId.toString(16)}`);
      return r.proof;
    });
  }

  /** The whole block. A service that finds the block missing or corrupted closes the connection. */
  async fetch(addr: BlockServiceAddress, blockId: bigint): Promise<Buffer> {
    let out: Buffer | null = null;
    await this.fetchBody(addr, blockId, (size) => (out = Buffer.allocUnsafe(size)));
    return out!;
  }

  /**
   * The whole block read into dest[0, size), returning its size (a block larger than `dest` is an
   * error). The kernel reads it straight into `dest`: a caller that reuses `dest` for block after
   * block pays for no intermediate copy and no page faults on fresh memory. On a rejection `dest`
   * may hold part of a reply (a refused block's prefix): its contents are then meaningless.
   */
  fetchInto(addr: BlockServiceAddress, blockId: bigint, dest: Buffer): Promise<number> {
    return this.fetchBody(addr, blockId, (size) => {
      if (size > dest.length) throw new Error(`reply declares ${size} bytes, more than the ${dest.length} bytes given`);
      return dest;
    });
  }

  /** Sends a fetch request and reads its reply header: the block's size (bounded). */
  private async fetchHeader(c: Conn, blockId: bigint): Promise<number> {
    c.socket.write(Buffer.concat([Buffer.of(BLOCK_MESSAGES.FETCH.reqKind), encode(BLOCK_MESSAGES.FETCH.req, { blockId })]));
    const resp = await this.response(c, BLOCK_MESSAGES.FETCH.respKind, 5);
    const size = resp.readUInt32LE(1);
    if (size > MAX_BLOCK_BYTES) throw new Error(`reply declares ${size} bytes, above ${MAX_BLOCK_BYTES}`);
    return size;
  }

  private fetchBody(addr: BlockServiceAddress, blockId: bigint, destFor: (size: number) => Buffer): Promise<number> {
    return this.request(addr, 'fetch', blockId, async (c) => {
      const size = await this.fetchHeader(c, blockId);
      await c.receiveInto(destFor(size), size);
      return size;
    });
  }

  /**
   * The whole block as the chunks the socket delivered, without copying them into one buffer
   * (for streaming readers; a 100 MB block costs no extra copy or page faults). Complete or an
   * error: a reply cut short never yields partial data.
   */
  async fetchChunks(addr: BlockServiceAddress, blockId: bigint): Promise<Buffer[]> {
    return this.request(addr, 'fetch', blockId, async (c) => {
      const size = await this.fetchHeader(c, blockId);
      const out: Buffer[] = [];
      for await (const chunk of c.reader.chunks(size)) out.push(chunk);
      return out;
    });
  }

  async crc(addr: BlockServiceAddress, blockId: bigint): Promise<{ sizeBytes: number; crc: number }> {
    const req = Buffer.concat([Buffer.of(BLOCK_MESSAGES.CRC.reqKind), encode(BLOCK_MESSAGES.CRC.req, { blockId })]);
    return this.request(addr, 'crc', blockId, async (c) => {
      c.socket.write(req);
      const resp = await this.response(c, BLOCK_MESSAGES.CRC.respKind, 9);
      const r = decode(BLOCK_MESSAGES.CRC.resp, resp.subarray(1)) as BlockResp<'CRC'>;
      return { sizeBytes: r.size, crc: crcFromBytes(r.crc32) };
    });
  }

  /** Erases a block (idempotent); returns the 8-byte erase proof. */
  async erase(addr: BlockServiceAddress, blockId: bigint, certificate: Uint8Array): Promise<Buffer> {
    const req = Buffer.concat([
      Buffer.of(BLOCK_MESSAGES.ERASE.reqKind),
      encode(BLOCK_MESSAGES.ERASE.req, { blockId, certificate: Buffer.from(certificate) }),
    ]);
    return this.request(addr, 'erase', blockId, async (c) => {
      c.socket.write(req);
      const resp = await this.response(c, BLOCK_MESSAGES.ERASE.respKind, 17);
      const r = decode(BLOCK_MESSAGES.ERASE.resp, resp.subarray(1)) as BlockResp<'ERASE'>;
      if (r.blockId !== blockId) throw new Error(`reply names block 0x${r.blockId.toString(16)}`);
      return r.proof;
    });
  }

  /** Usage counters; with `key`, the reply's MAC is checked too (shuckle's verification). */
  async stats(addr: BlockServiceAddress, opts: { token?: Buffer; key?: Uint8Array } = {}): Promise<BlockStats> {
    const token = opts.token ?? randomBytes(MAC_BYTES);
    const req = Buffer.concat([Buffer.of(BLOCK_MESSAGES.STATS.reqKind), encode(BLOCK_MESSAGES.STATS.req, { token })]);
    return this.request(addr, 'stats', undefined, async (c) => {
      c.socket.write(req);
      const resp = await this.response(c, BLOCK_MESSAGES.STATS.respKind, 49);
      const r = decode(BLOCK_MESSAGES.STATS.resp, resp.subarray(1)) as BlockResp<'STATS'>;
      const s: BlockStats = { token: r.token, usedBytes: r.usedBytes, freeBytes: r.freeBytes, usedN: r.usedN, freeN: r.freeN, mac: r.mac };
      if (!macEquals(s.token, token)) throw new Error('reply echoes a different token (replay?)');
      if (opts.key && !statsMacValid(opts.key, s)) throw new Error('reply MAC does not verify with the registered key');
      return s;
    });
  }

  /** Closes every pooled connection; requests in progress finish on their own sockets. */
  close(): void {
    this.closed = true;
    for (const list of this.idle.values()) for (const c of list) c.destroy();
    this.idle.clear();
  }

  private async response(c: Conn, kind: number, bytes: number): Promise<Buffer> {
    const resp = (await c.reader.read(bytes))!;
    if (resp[0] !== kind) throw new Error(`unexpected reply kind 0x${resp[0]!.toString(16)}`);
    return resp;
  }

  private async request<T>(addr: BlockServiceAddress, op: BlockOp, blockId: bigint | undefined, body: (c: Conn) => Promise<T>): Promise<T> {
    const key = addrKey(addr);
    // A pooled connection may have been closed by the server's idle timeout just as we took it.
    // Every operation is idempotent on our services, so such a request is retried once on a
    // fresh connection; a failure on a fresh connection is final.
    for (let attempt = 0; ; attempt++) {
      const pooled = attempt === 0 ? this.takeIdle(key) : null;
      const c = pooled ?? (await this.connect(addr, key, op, blockId));
      try {
        const v = await body(c);
        this.release(key, c);
        return v;
      } catch (err) {
        c.destroy();
        if (pooled && err instanceof ShortReadError) continue;
        throw this.wrap(key, op, blockId, err);
      }
    }
  }

  private wrap(key: string, op: BlockOp, blockId: bigint | undefined, err: unknown): BlockServiceError {
    if (err instanceof BlockServiceError) return err;
    let reason: string;
    if (err instanceof ShortReadError) reason = `the service closed the connection (refused, or block missing or corrupted): ${err.message}`;
    else if (err instanceof ReadTimeoutError) reason = `timed out: ${err.message}`;
    else reason = (err as Error).message ?? String(err);
    return new BlockServiceError(key, op, reason, blockId, { cause: err });
  }

  private takeIdle(key: string): Conn | null {
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const c = list.pop()!;
      if (c.idleTimer) clearTimeout(c.idleTimer);
      c.idleTimer = null;
      if (!c.dead && c.reader.buffered === 0) {
        c.socket.ref();
        return c;
      }
      c.destroy();
    }
    return null;
  }

  private release(key: string, c: Conn): void {
    if (this.closed || c.dead || c.reader.buffered !== 0) return c.destroy();
    let list = this.idle.get(key);
    if (!list) this.idle.set(key, (list = []));
    if (list.length >= this.maxIdlePerService) return c.destroy();
    list.push(c);
    // An idle pooled connection must not keep a finished process (a CLI command) alive.
    c.socket.unref();
    c.idleTimer = setTimeout(() => {
      const i = list!.indexOf(c);
      if (i >= 0) list!.splice(i, 1);
      c.destroy();
    }, this.poolIdleMs);
    c.idleTimer.unref();
  }

  private connect(addr: BlockServiceAddress, key: string, op: BlockOp, blockId: bigint | undefined): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const slabs = new ReadSlabs(READ_SLAB_BYTES, READ_MIN_BYTES);
      let conn: Conn | null = null;
      const socket = net.connect({
        host: addr.ip,
        port: addr.port,
        noDelay: true,
        onread: {
          buffer: () => (conn ? conn.readTarget(slabs) : slabs.next()),
          callback: (n: number, buf: Uint8Array): boolean => {
            // Nothing is requested before the connection is up, so the Conn exists by now.
            if (!conn) throw new Error('block client: bytes before the connection was set up');
            conn.received(slabs, buf as Buffer, n);
            return true;
          },
        },
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new BlockServiceError(key, op, `could not connect within ${this.connectTimeoutMs} ms`, blockId));
      }, this.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeListener('error', onError);
        conn = new Conn(socket, this.ioTimeoutMs);
        resolve(conn);
      });
      const onError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new BlockServiceError(key, op, `could not connect (${err.code ?? err.message})`, blockId, { cause: err }));
      };
      socket.once('error', onError);
    });
  }
}

/** A process-wide client for callers that do not manage their own. */
export const defaultBlockClient = new BlockClient();
