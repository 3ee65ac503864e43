// The block-service TCP protocol (services.md §2.3–§2.6) for one store. A connection carries a
// sequence of requests processed in order; every refusal closes the connection without a reply,
// because the wire has no error responses. The reason goes to the log.
import net from 'node:net';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { promisify } from 'node:util';
import { BLOCK_MESSAGES, BLOCK_FUTURE_CUTOFF_NS, BLOCK_PAST_CUTOFF_NS, MAX_BLOCK_BYTES } from '../proto/blockwire.js';
import { decode } from '../proto/bincode.js';
import { blockEraseCertificate, blockEraseProof, blockWriteProof, cbcMac, macEquals } from '../proto/crypto.js';
import { crc32c, crcFromBytes, crcToBytes } from '../proto/crc32c.js';
import { eggsNow } from '../proto/time.js';
import { ByteBudget, drained, ExactReader, ReadTimeoutError, ShortReadError, writeWithDrain } from '../util/exact-reader.js';
import type { Logger } from '../util/log.js';
import { Pipeline, type Slot } from './pipeline.js';
import type { BlockInfo, BlockStore } from './store.js';

export interface BlockServerLimits {
  /** Largest block accepted; never above the protocol's MAX_BLOCK_BYTES. */
  maxBlockBytes: number;
  /** Simultaneous connections; further ones are refused by the kernel-side accept drop. */
  maxConnections: number;
  /** Bytes a connection may have received but not yet written to disk (then it is paused). */
  connectionBufferBytes: number;
  /** The same, summed over every connection of every service in the process. */
  processBufferBytes: number;
  /** A connection waiting this long for a client's bytes (or for it to read ours) is closed. */
  idleTimeoutMs: number;
}

export const DEFAULT_LIMITS: BlockServerLimits = {
  maxBlockBytes: MAX_BLOCK_BYTES,
  maxConnections: 256,
  connectionBufferBytes: 8 << 20,
  processBufferBytes: 256 << 20,
  idleTimeoutMs: 30_000,
};

/** Disk writes are gathered into batches of this size (one writev each). */
const WRITE_BATCH_BYTES = 1 << 20;
/** Fetch and crc read the block in chunks of this size. */
const READ_CHUNK_BYTES = 1 << 20;
/** Fetch keeps up to this much queued on the socket so the network never waits for the disk. */
const FETCH_SOCKET_QUEUE_BYTES = 4 << 20;
/** Reads a fetch keeps queued ahead of the network. */
const FETCH_READ_AHEAD_CHUNKS = 4;
/** Idle fetch read buffers kept for reuse, over the whole process (32 MiB). */
const FETCH_POOL_MAX_FREE_BUFFERS = 32;
/**
 * Requests one connection may have in progress (received or being received, not yet answered):
 * a client that pipelines keeps the disk busy with one block while sending the next.
 */
const MAX_PIPELINE_DEPTH = 4;
/** A connection closed after a failure waits at most this long for the peer's side to close too. */
const CLOSE_LINGER_MS = 2_000;
/** During a write, ask the disk to start writing back every this many bytes (see write()). */
const EARLY_SYNC_BYTES = 8 << 20;

const openFd = promisify(fs.open);

/**
 * Fetch read buffers, reused: a fresh buffer costs a page fault per 4 KiB page on every read
 * (measured: the faults cost the read threads more than the copy itself) and garbage to collect.
 */
class ReadBufferPool {
  private readonly free: Buffer[] = [];
  constructor(
    readonly bufferBytes: number,
    /** Idle buffers kept beyond this are left to the garbage collector. */
    readonly maxFree: number,
  ) {}
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.bufferBytes);
  }
  /** Only once nothing (read, socket write) uses `buf` any more. */
  give(buf: Buffer): void {
    if (buf.length !== this.bufferBytes) throw new Error(`read buffer pool: given ${buf.length} bytes, not ${this.bufferBytes}`);
    if (this.free.length < this.maxFree) this.free.push(buf);
  }
}

/** Shared by every service of the process. */
const fetchBuffers = new ReadBufferPool(READ_CHUNK_BYTES, FETCH_POOL_MAX_FREE_BUFFERS);

/** fs.read resolving to the byte count (promisify of fs.read gives an object). */
function readFd(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

class Refusal extends Error {
  override readonly name = 'Refusal';
}

/** One connection's state, shared by its requests. */
interface Conn {
  socket: net.Socket;
  reader: ExactReader;
  pipe: Pipeline;
  /** This connection's writes in progress, by block id: a later fetch of the block waits for them. */
  writing: Map<bigint, Promise<void>>;
}

function hexId(id: bigint): string {
  return '0x' + id.toString(16).padStart(16, '0');
}

export class BlockServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private stopping = false;

  constructor(
    private readonly store: BlockStore,
    private readonly limits: BlockServerLimits,
    private readonly log: Logger,
    /** Shared by every service of the process; bounds the bytes received but not yet on disk. */
    private readonly budget: ByteBudget = new ByteBudget(limits.processBufferBytes),
  ) {
    if (!(limits.maxBlockBytes >= 0 && limits.maxBlockBytes <= MAX_BLOCK_BYTES)) throw new RangeError(`maxBlockBytes must be within 0..${MAX_BLOCK_BYTES}`);
    this.server = net.createServer({ noDelay: true, allowHalfOpen: true }, (s) => this.accept(s));
    this.server.maxConnections = limits.maxConnections;
    this.server.on('drop', (d) => this.log.warn(`refused a connection from ${d?.remoteAddress}:${d?.remotePort}: ${limits.maxConnections} connections already open`));
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port, backlog: 511 }, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  async close(): Promise<void> {
    this.stopping = true;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private accept(socket: net.Socket): void {
    if (this.stopping) return void socket.destroy();
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    let closed = false;
    const close = (err: Error) => {
      if (closed) return;
      closed = true;
      // A peer hanging up or going silent is routine; a refusal is worth a warning; anything
      // else (ENOSPC, EIO, ...) is our problem.
      const level = err instanceof ShortReadError || err instanceof ReadTimeoutError ? 'info' : err instanceof Refusal ? 'warn' : 'error';
      this.log[level](`${this.store.dir}: closing connection from ${peer}: ${err.message}`);
      this.closeAfterResponses(socket);
    };
    const reader = new ExactReader(socket, { highWaterBytes: this.limits.connectionBufferBytes, idleTimeoutMs: this.limits.idleTimeoutMs, budget: this.budget });
    const pipe = new Pipeline({ maxDepth: MAX_PIPELINE_DEPTH, maxHeldBytes: this.limits.connectionBufferBytes }, this.budget, close);
    const conn: Conn = { socket, reader, pipe, writing: new Map() };
    this.session(conn).catch(async (err: Error) => {
      // The requests before the one that could not be read are owed their responses.
      await pipe.allAnswered().catch(() => {});
      close(err);
    });
  }

  /**
   * Closes a connection without writing anything more, but after what earlier requests already
   * wrote: destroy() would drop what is still queued in user space (up to FETCH_SOCKET_QUEUE_BYTES
   * of an earlier fetch), and closing while the peer's bytes are unread resets the connection,
   * which can discard what the kernel has not delivered yet. So end() sends it all, then the FIN,
   * and the socket is destroyed once the peer has closed its side too, or after a bounded wait.
   */
  private closeAfterResponses(socket: net.Socket): void {
    if (socket.destroyed) return;
    // A peer that reads nothing is dropped after the idle timeout.
    let timer = setTimeout(() => socket.destroy(), this.limits.idleTimeoutMs);
    socket.once('close', () => clearTimeout(timer));
    const bothDone = () => {
      if (socket.writableFinished && socket.readableEnded) socket.destroy();
    };
    socket.once('end', bothDone);
    socket.end(() => {
      bothDone();
      clearTimeout(timer);
      timer = setTimeout(() => socket.destroy(), Math.min(CLOSE_LINGER_MS, this.limits.idleTimeoutMs));
    });
  }

  /**
   * Reads requests and starts each as soon as the previous one released the connection (a write
   * once its bytes are in and its commit started, a fetch once its file is open); responses go
   * out in request order (see Pipeline).
   */
  private async session(c: Conn): Promise<void> {
    const { socket, reader, pipe } = c;
    for (;;) {
      await pipe.room();
      await this.bytesOrIdle(c);
      if (pipe.failed) return;
      const kind = await reader.read(1, true);
      if (pipe.failed) return;
      if (kind === null) {
        await pipe.allAnswered();
        socket.end();
        return;
      }
      await pipe.start(this.handler(c, kind[0]!));
    }
  }

  private handler(c: Conn, kind: number): (slot: Slot) => Promise<void> {
    switch (kind) {
      case BLOCK_MESSAGES.WRITE.reqKind:
        return (slot) => this.write(c, slot);
      case BLOCK_MESSAGES.FETCH.reqKind:
        return (slot) => this.fetch(c, slot);
      // These run once every earlier request is answered: an erase or a crc must observe earlier
      // writes of its block, and stats their counts. They are rare enough not to overlap.
      case BLOCK_MESSAGES.CRC.reqKind:
        return this.afterEarlier(c, this.crc);
      case BLOCK_MESSAGES.ERASE.reqKind:
        return this.afterEarlier(c, this.erase);
      case BLOCK_MESSAGES.STATS.reqKind:
        return this.afterEarlier(c, this.stats);
      default:
        return () => Promise.reject(new Refusal(`unknown request kind 0x${kind.toString(16).padStart(2, '0')}`));
    }
  }

  /** A request served whole (read, done, answered) once every earlier request is answered. */
  private afterEarlier(c: Conn, serve: (socket: net.Socket, reader: ExactReader) => Promise<void>): (slot: Slot) => Promise<void> {
    return async (slot) => {
      await slot.turn;
      await serve.call(this, c.socket, c.reader);
    };
  }

  /**
   * Waits until the client sent more or every request in progress is answered. A client may wait
   * for responses before it sends more, so the idle timeout of the next read starts only then.
   */
  private async bytesOrIdle(c: Conn): Promise<void> {
    const { socket, reader, pipe } = c;
    if (reader.buffered > 0 || pipe.idle || pipe.failed || socket.readableEnded || socket.destroyed) return;
    let wake!: () => void;
    const woken = new Promise<void>((r) => (wake = r));
    socket.on('data', wake);
    socket.on('end', wake);
    socket.on('close', wake);
    const cancel = pipe.onIdle(wake);
    try {
      await woken;
    } finally {
      cancel();
      socket.off('data', wake);
      socket.off('end', wake);
      socket.off('close', wake);
    }
  }

  /** Resolves once every earlier response is out (slot.turn) and this one may be written. */
  private async ourTurn(c: Conn, slot: Slot): Promise<void> {
    await slot.turn;
    if (c.socket.destroyed) throw new ShortReadError('connection closed before the response');
  }

  /** Writes a response once every earlier response is out. */
  private async respond(c: Conn, slot: Slot, resp: Buffer): Promise<void> {
    await this.ourTurn(c, slot);
    await writeWithDrain(c.socket, resp, this.limits.idleTimeoutMs);
  }

  private async write(c: Conn, slot: Slot): Promise<void> {
    const reader = c.reader;
    const header = (await reader.read(24))!;
    const req = decode(BLOCK_MESSAGES.WRITE.req, header);
    const id = hexId(req.blockId);
    const signed = Buffer.allocUnsafe(17);
    signed[0] = BLOCK_MESSAGES.WRITE.reqKind;
    header.copy(signed, 1, 0, 16);
    if (!macEquals(cbcMac(signed, this.store.secretKey), req.certificate)) throw new Refusal(`write ${id}: bad certificate`);
    const now = eggsNow();
    if (req.blockId < now - BLOCK_PAST_CUTOFF_NS || req.blockId > now + BLOCK_FUTURE_CUTOFF_NS) {
      throw new Refusal(`write ${id}: block id outside the accepted time window [now - 22 h, now + 2 h]`);
    }
    if (req.size > this.limits.maxBlockBytes) throw new Refusal(`write ${id}: ${req.size} bytes exceeds the limit of ${this.limits.maxBlockBytes}`);
    const wantCrc = crcFromBytes(req.crc32);

    // Registered before the session can read the next request, which may fetch this block.
    let writeSettled!: () => void;
    const settled = new Promise<void>((r) => (writeSettled = r));
    c.writing.set(req.blockId, settled);
    try {
      await this.storeBlock(reader, slot, req, wantCrc);
    } finally {
      writeSettled();
      if (c.writing.get(req.blockId) === settled) c.writing.delete(req.blockId);
    }
    const resp = Buffer.allocUnsafe(17);
    resp[0] = BLOCK_MESSAGES.WRITE.respKind;
    resp.writeBigUInt64LE(req.blockId, 1);
    blockWriteProof(this.store.secretKey, req.blockId).copy(resp, 9);
    // Only now is the block durable: the proof never leaves before.
    await this.respond(c, slot, resp);
  }

  /** Receives a write's body and makes the block durable (or finds it already stored). */
  private async storeBlock(reader: ExactReader, slot: Slot, req: { blockId: bigint; size: number }, wantCrc: number): Promise<void> {
    const id = hexId(req.blockId);
    await this.store.exclusive(req.blockId, async () => {
      const existing = this.store.recorded(req.blockId);
      // Synchronous existence check: a stat of microseconds (see BlockStore.fileSizeSync).
      const onDisk = this.store.fileSizeSync(req.blockId);
      if (onDisk !== null) {
        // A retried write. Accept it (same proof) if it is the block we hold; the certificate
        // binds id, size and CRC, so equal size and CRC means the bytes the shard agreed to.
        const same = existing ? existing.sizeBytes === req.size && existing.crc === wantCrc : onDisk === req.size;
        // A recorded copy that no longer matches its record (damaged on disk) could never be
        // served: the retry stores the block again instead of acknowledging it.
        const intact = same && existing ? await this.storedIntact(req.blockId, existing) : same;
        if (!same || intact) {
          let crc = 0;
          for await (const chunk of reader.chunks(req.size)) crc = crc32c(chunk, crc);
          if (crc !== wantCrc) throw new Refusal(`write ${id}: data CRC ${crc.toString(16)} does not match the header's ${wantCrc.toString(16)}`);
          if (!same) throw new Refusal(`write ${id}: a different block with this id is already stored`);
          this.log.info(`write ${id}: already stored with the same size and CRC; acknowledging again`);
          return;
        }
        this.log.warn(`write ${id}: the stored copy does not match its CRC record (damaged); storing it again`);
      }
      const pending = await this.store.beginWrite(req.blockId, req.size <= WRITE_BATCH_BYTES);
      pending.replacesSizeBytes = onDisk; // checked above, under this block's exclusive slot
      let inFlight: Promise<void> | null = null;
      try {
        let crc = 0;
        let batch: Buffer[] = [];
        let batchBytes = 0;
        let received = 0;
        for await (const chunk of reader.chunks(req.size)) {
          crc = crc32c(chunk, crc);
          batch.push(chunk);
          batchBytes += chunk.length;
          received += chunk.length;
          // The last batch is written by commit(), after the CRC check, together with the record.
          if (batchBytes >= WRITE_BATCH_BYTES && received < req.size) {
            if (inFlight) await inFlight;
            // Start writing back what is already in the page cache while more arrives, so the
            // final sync of a large block has little left to do.
            pending.startWriteback(EARLY_SYNC_BYTES);
            inFlight = pending.append(batch);
            batch = [];
            batchBytes = 0;
          }
        }
        if (inFlight) await inFlight;
        inFlight = null;
        if (crc !== wantCrc) throw new Refusal(`write ${id}: data CRC ${crc.toString(16)} does not match the header's ${wantCrc.toString(16)}`);
        const committed = pending.commit({ sizeBytes: req.size, crc }, batch);
        // Every byte is in and the commit under way: the next request may be received meanwhile.
        slot.release(batchBytes);
        await committed;
      } catch (err) {
        // Never close the file under a write still in flight.
        if (inFlight) await (inFlight as Promise<void>).catch(() => {});
        await pending.abort();
        throw err;
      }
    });
  }

  /** Whether the stored bytes of a recorded block still match its record. */
  private async storedIntact(blockId: bigint, rec: BlockInfo): Promise<boolean> {
    const onDisk = await this.store.diskCrc(blockId, READ_CHUNK_BYTES);
    return onDisk !== null && onDisk.sizeBytes === rec.sizeBytes && onDisk.crc === rec.crc;
  }

  /**
   * Streams the block, checking its CRC as it goes. The last chunk is held back until the CRC
   * matches the one recorded at write time: on a mismatch the connection closes short, so the
   * client sees a truncated reply (an error), never a complete corrupted block.
   */
  private async fetch(c: Conn, slot: Slot): Promise<void> {
    const socket = c.socket;
    const { blockId } = decode(BLOCK_MESSAGES.FETCH.req, (await c.reader.read(8))!);
    const id = hexId(blockId);
    // An earlier write of this block on this connection comes first (requests are in order).
    const writing = c.writing.get(blockId);
    if (writing) await writing;
    let fd: number;
    try {
      fd = await openFd(this.store.blockPath(blockId), 'r');
    } catch (err) {
      throw new Refusal(`fetch ${id}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such block' : (err as Error).message}`);
    }
    try {
      // With a record, its size is the truth (a shorter file fails the read below, a longer one
      // the CRC); without one (a block placed by the original service) the file's size is.
      const rec = this.store.recorded(blockId);
      const size = rec ? rec.sizeBytes : fs.fstatSync(fd).size;
      if (size > MAX_BLOCK_BYTES) throw new Refusal(`fetch ${id}: ${size} bytes on disk, above the protocol limit`);
      // The file is open: what we send no longer depends on later requests (a later write or
      // erase of this block replaces or unlinks the name, not this open file).
      slot.release(0);
      const head = Buffer.allocUnsafe(5);
      head[0] = BLOCK_MESSAGES.FETCH.respKind;
      head.writeUInt32LE(size, 1);
      // The header goes out with the first chunk: one send, and one read for the client.
      let headSent = false;
      let crc = 0;
      let pos = 0;
      // One read per READ_CHUNK_BYTES, the first one too. Measured and not kept (1 MiB blocks,
      // 1 client, cold, fetch/cat, 3 alternating runs each): a 256 KiB first read so that the
      // send starts sooner, 0.50-0.61 vs 0.46-0.60; the first MiB in four 256 KiB reads,
      // 0.39-0.52. Pipelined fetches hide the disk's latency instead.
      const chunkBytesAt = (at: number) => Math.min(READ_CHUNK_BYTES, size - at);
      const readAt = async (at: number): Promise<Buffer> => {
        const len = chunkBytesAt(at);
        const buf = fetchBuffers.take();
        try {
          let got = 0;
          while (got < len) {
            const bytesRead = await readFd(fd, buf, got, len - got, at + got);
            if (bytesRead === 0) throw new Refusal(`fetch ${id}: corrupted: shorter on disk than the ${size} bytes written`);
            got += bytesRead;
          }
        } catch (err) {
          fetchBuffers.give(buf); // no read is using it any more
          throw err;
        }
        return buf;
      };
      // Up to FETCH_READ_AHEAD_CHUNKS reads in flight, so the disk always has work queued; while
      // earlier responses are still being sent, only the first READ_CHUNK_BYTES (bounded memory
      // per connection, and it is what hides the disk's latency).
      const inFlight: Promise<Buffer>[] = [];
      let issued = 0;
      let aheadBytes = READ_CHUNK_BYTES;
      const refill = () => {
        while (inFlight.length < FETCH_READ_AHEAD_CHUNKS && issued < size && issued - pos < aheadBytes) {
          const p = readAt(issued);
          p.catch(() => {}); // awaited below, or settled before the file is closed
          inFlight.push(p);
          issued += chunkBytesAt(issued);
        }
      };
      try {
        refill();
        while (inFlight.length > 0) {
          const buf = await inFlight.shift()!;
          const len = chunkBytesAt(pos);
          const cur = len === buf.length ? buf : buf.subarray(0, len);
          if (!headSent) {
            try {
              await this.ourTurn(c, slot);
            } catch (err) {
              fetchBuffers.give(buf);
              throw err;
            }
            aheadBytes = FETCH_READ_AHEAD_CHUNKS * READ_CHUNK_BYTES;
          }
          pos += len;
          refill();
          crc = crc32c(cur, crc);
          if (pos === size && rec && crc !== rec.crc) {
            fetchBuffers.give(buf);
            throw new Refusal(`fetch ${id}: corrupted: CRC ${crc.toString(16)} on disk, ${rec.crc.toString(16)} written`);
          }
          // The buffer goes back to the pool once the socket has copied it into the kernel.
          const recycle = () => fetchBuffers.give(buf);
          if (headSent) {
            socket.write(cur, recycle);
          } else {
            headSent = true;
            socket.cork();
            socket.write(head);
            socket.write(cur, recycle);
            socket.uncork();
          }
          await drained(socket, FETCH_SOCKET_QUEUE_BYTES, this.limits.idleTimeoutMs);
        }
        if (!headSent) {
          // An empty block.
          if (rec && rec.crc !== 0) throw new Refusal(`fetch ${id}: corrupted: empty on disk`);
          await this.respond(c, slot, head);
        }
      } finally {
        // Reads still in flight after a failure: let them finish before the file is closed,
        // and take their buffers back.
        for (const r of await Promise.allSettled(inFlight)) if (r.status === 'fulfilled') fetchBuffers.give(r.value);
      }
    } finally {
      // No reads are in flight here; the close need not delay the next request.
      fs.close(fd, (err) => err && this.log.warn(`fetch ${id}: closing the block file: ${err.message}`));
    }
  }

  private async crc(socket: net.Socket, reader: ExactReader): Promise<void> {
    const { blockId } = decode(BLOCK_MESSAGES.CRC.req, (await reader.read(8))!);
    const id = hexId(blockId);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.store.blockPath(blockId), 'r');
    } catch (err) {
      throw new Refusal(`crc ${id}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such block' : (err as Error).message}`);
    }
    let crc = 0;
    let size = 0;
    try {
      const buf = Buffer.allocUnsafe(READ_CHUNK_BYTES);
      for (;;) {
        const r = await fh.read(buf, 0, buf.length, size);
        if (r.bytesRead === 0) break;
        crc = crc32c(buf.subarray(0, r.bytesRead), crc);
        size += r.bytesRead;
        if (size > MAX_BLOCK_BYTES) throw new Refusal(`crc ${id}: block above the protocol limit`);
      }
    } finally {
      await fh.close();
    }
    const resp = Buffer.allocUnsafe(9);
    resp[0] = BLOCK_MESSAGES.CRC.respKind;
    resp.writeUInt32LE(size, 1);
    crcToBytes(crc).copy(resp, 5);
    await writeWithDrain(socket, resp, this.limits.idleTimeoutMs);
  }

  /**
   * Erase. The original refused when block_id <= now + 2 h, i.e. every real block ([bug]). We
   * apply its stated intent: refuse while the block's write certificate could still be replayed,
   * that is while block_id >= now - PAST_CUTOFF (22 h), since writes are accepted down to that
   * bound and a replayed write would resurrect the erased block.
   */
  private async erase(socket: net.Socket, reader: ExactReader): Promise<void> {
    const req = decode(BLOCK_MESSAGES.ERASE.req, (await reader.read(16))!);
    const id = hexId(req.blockId);
    if (!macEquals(blockEraseCertificate(this.store.secretKey, req.blockId), req.certificate)) throw new Refusal(`erase ${id}: bad certificate`);
    if (req.blockId >= eggsNow() - BLOCK_PAST_CUTOFF_NS) {
      throw new Refusal(`erase ${id}: block too recent to be erased (its write certificate is valid for 22 h)`);
    }
    await this.store.exclusive(req.blockId, () => this.store.erase(req.blockId));
    const resp = Buffer.allocUnsafe(17);
    resp[0] = BLOCK_MESSAGES.ERASE.respKind;
    resp.writeBigUInt64LE(req.blockId, 1);
    blockEraseProof(this.store.secretKey, req.blockId).copy(resp, 9);
    await writeWithDrain(socket, resp, this.limits.idleTimeoutMs);
  }

  private async stats(socket: net.Socket, reader: ExactReader): Promise<void> {
    const { token } = decode(BLOCK_MESSAGES.STATS.req, (await reader.read(8))!);
    const fsStats = await fsp.statfs(this.store.dir);
    const msg = Buffer.allocUnsafe(49);
    msg[0] = BLOCK_MESSAGES.STATS.respKind;
    token.copy(msg, 1);
    msg.writeBigUInt64LE(BigInt(this.store.usedBytes), 9);
    msg.writeBigUInt64LE(BigInt(fsStats.bavail) * BigInt(fsStats.bsize), 17);
    msg.writeBigUInt64LE(BigInt(this.store.usedBlocks), 25);
    msg.writeBigUInt64LE(BigInt(fsStats.ffree), 33);
    cbcMac(msg.subarray(0, 41), this.store.secretKey).copy(msg, 41);
    await writeWithDrain(socket, msg, this.limits.idleTimeoutMs);
  }
}
