// Interoperability in both directions:
// 1. A deliberately naive client written from services.md §5 (a fresh UDP socket per request, one
//    2 s wait, no retries; 4 KiB spans of parity 0x01, storage class 2; one TCP connection per
//    block) runs the original CLI's request flows against our servers, and our client reads what it
//    wrote (and vice versa).
// 2. Our client works through a proxy that forwards only the original protocol's request kinds,
//    i.e. it needs no extension to do everything the original could.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { CDC_PROTOCOL, SHARD_PROTOCOL, decodeResponse, encodeCdcRequest, encodeShardRequest, type Protocol } from '../src/proto/envelope.js';
import { CDC_MESSAGES, SHARD_MESSAGES, type CdcKindName, type ShardKindName, type MessageDecl } from '../src/proto/messages.js';
import { ErrorCode, EggsError } from '../src/proto/errors.js';
import { ROOT_DIR_INODE_ID, shardOf, InodeType, isDirectory } from '../src/proto/ids.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';
import { eggsNow } from '../src/proto/time.js';
import { EggsClient } from '../src/client/index.js';
import { startCluster } from './helpers/cluster.js';
import { startUdpProxy } from './helpers/udp-proxy.js';

// ------------------------------------------------------------------ the naive original client

class OriginalClient {
  constructor(
    private readonly shardBase: number,
    private readonly cdcPort: number,
  ) {}

  private udp(proto: Protocol, port: number, decl: MessageDecl, datagram: Buffer, requestId: bigint): Promise<any> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket('udp4');
      const timer = setTimeout(() => {
        s.close();
        reject(new EggsError(ErrorCode.TIMEOUT));
      }, 2_000);
      s.on('message', (msg) => {
        clearTimeout(timer);
        s.close();
        try {
          const r = decodeResponse(proto, msg, decl);
          assert.equal(r.requestId, requestId, 'response request id must match');
          if (r.error !== undefined) reject(new EggsError(r.error));
          else resolve(r.body);
        } catch (err) {
          reject(err);
        }
      });
      s.send(datagram, port, '127.0.0.1');
    });
  }

  shard<K extends ShardKindName>(kind: K, about: bigint, body: any): Promise<any> {
    const id = eggsNow();
    return this.udp(SHARD_PROTOCOL, this.shardBase + shardOf(about), SHARD_MESSAGES[kind] as MessageDecl, encodeShardRequest(kind, id, body), id);
  }

  cdc<K extends CdcKindName>(kind: K, body: any): Promise<any> {
    const id = eggsNow();
    return this.udp(CDC_PROTOCOL, this.cdcPort, CDC_MESSAGES[kind] as MessageDecl, encodeCdcRequest(kind, id, body), id);
  }

  async resolve(path: string): Promise<bigint> {
    let id = ROOT_DIR_INODE_ID;
    for (const name of path.split('/').filter(Boolean)) id = (await this.shard('LOOKUP', id, { dirId: id, name: Buffer.from(name) })).targetId;
    return id;
  }

  private parent(path: string): { dir: string; name: string } {
    const i = path.lastIndexOf('/');
    return { dir: path.slice(0, i) || '/', name: path.slice(i + 1) };
  }

  async ls(path: string): Promise<string[]> {
    const dirId = await this.resolve(path);
    const names: string[] = [];
    let startHash = 0n;
    do {
      const r = await this.shard('READ_DIR', dirId, { dirId, startHash, asOfTime: 0xffffffffffffffffn });
      for (const e of r.results) names.push(e.name.toString());
      startHash = r.nextHash;
    } while (startHash !== 0n);
    return names;
  }

  /** The fixed mkdir: a missing name is NAME_NOT_FOUND (the original wanted DIRECTORY_NOT_FOUND). */
  async mkdir(path: string): Promise<bigint> {
    const { dir, name } = this.parent(path);
    const owner = await this.resolve(dir);
    await assert.rejects(this.shard('LOOKUP', owner, { dirId: owner, name: Buffer.from(name) }), (e: EggsError) => e.code === ErrorCode.NAME_NOT_FOUND);
    return (await this.cdc('MAKE_DIRECTORY', { ownerId: owner, name: Buffer.from(name) })).id;
  }

  async createFile(path: string, data: Buffer): Promise<void> {
    const { dir, name } = this.parent(path);
    const dirId = await this.resolve(dir);
    const { id, cookie } = await this.shard('CONSTRUCT_FILE', dirId, { type: InodeType.FILE });
    for (let off = 0; off < data.length; off += 4096) {
      const chunk = data.subarray(off, off + 4096);
      const crc = crcToBytes(crc32c(chunk));
      const { blocks } = await this.shard('ADD_SPAN_INITIATE', id, {
        fileId: id,
        cookie,
        byteOffset: BigInt(off),
        storageClass: 2,
        parity: 0x01,
        crc32: crc,
        size: BigInt(chunk.length),
        bodyBytes: Buffer.alloc(0),
        bodyBlocks: [{ crc32: crc, size: BigInt(chunk.length) }],
      });
      assert.equal(blocks.length, 1);
      const b = blocks[0];
      const header = Buffer.alloc(25);
      header[0] = 0x77;
      header.writeBigUInt64LE(b.blockId, 1);
      crc.copy(header, 9);
      header.writeUInt32LE(chunk.length, 13);
      b.certificate.copy(header, 17);
      const resp = await tcpExchange(ipStr(b.ip), b.port, Buffer.concat([header, chunk]), () => 17);
      assert.equal(resp[0], 0x57);
      assert.equal(resp.readBigUInt64LE(1), b.blockId);
      await this.shard('ADD_SPAN_CERTIFY', id, { fileId: id, cookie, byteOffset: BigInt(off), proofs: [resp.subarray(9, 17)] });
    }
    await this.shard('LINK_FILE', dirId, { fileId: id, cookie, ownerId: dirId, name: Buffer.from(name) });
  }

  /** The original `cat`: only parity 0x01, class 2, one-block spans. */
  async cat(path: string): Promise<Buffer> {
    const id = await this.resolve(path);
    const out: Buffer[] = [];
    let off = 0n;
    for (;;) {
      const r = await this.shard('FILE_SPANS', id, { fileId: id, byteOffset: off });
      for (const s of r.spans) {
        assert.equal(s.parity, 0x01);
        assert.equal(s.storageClass, 2);
        assert.equal(s.bodyBlocks.length, 1);
        const b = s.bodyBlocks[0];
        const req = Buffer.alloc(9);
        req[0] = 0x66;
        req.writeBigUInt64LE(b.blockId, 1);
        const resp = await tcpExchange(ipStr(b.ip), b.port, req, (got) => (got.length >= 5 ? 5 + got.readUInt32LE(1) : 5));
        assert.equal(resp[0], 0x46);
        assert.equal(resp.readUInt32LE(1), Number(b.size));
        out.push(resp.subarray(5));
      }
      if (r.nextOffset === 0n) break;
      off = r.nextOffset;
    }
    return Buffer.concat(out);
  }

  async mv(a: string, b: string): Promise<void> {
    const pa = this.parent(a);
    const pb = this.parent(b);
    const ownerA = await this.resolve(pa.dir);
    const target = (await this.shard('LOOKUP', ownerA, { dirId: ownerA, name: Buffer.from(pa.name) })).targetId;
    const ownerB = await this.resolve(pb.dir);
    if (ownerA === ownerB) {
      await this.shard('SAME_DIRECTORY_RENAME', ownerA, { targetId: target, dirId: ownerA, oldName: Buffer.from(pa.name), newName: Buffer.from(pb.name) });
    } else {
      const body = { targetId: target, oldOwnerId: ownerA, oldName: Buffer.from(pa.name), newOwnerId: ownerB, newName: Buffer.from(pb.name) };
      await this.cdc(isDirectory(target) ? 'RENAME_DIRECTORY' : 'RENAME_FILE', body);
    }
  }

  async rmFile(path: string): Promise<void> {
    const { dir, name } = this.parent(path);
    const owner = await this.resolve(dir);
    const id = (await this.shard('LOOKUP', owner, { dirId: owner, name: Buffer.from(name) })).targetId;
    await this.shard('SOFT_UNLINK_FILE', owner, { ownerId: owner, fileId: id, name: Buffer.from(name) });
  }

  async rmDir(path: string): Promise<void> {
    const { dir, name } = this.parent(path);
    const owner = await this.resolve(dir);
    const id = (await this.shard('LOOKUP', owner, { dirId: owner, name: Buffer.from(name) })).targetId;
    await this.cdc('REMOVE_DIRECTORY', { ownerId: owner, targetId: id, name: Buffer.from(name) });
  }
}

function ipStr(ip: Buffer): string {
  return `${ip[0]}.${ip[1]}.${ip[2]}.${ip[3]}`;
}

/** One TCP connection: send `req`, read until `want(bytesSoFar)` bytes arrived. */
function tcpExchange(host: string, port: number, req: Buffer, want: (got: Buffer) => number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('block service timed out'));
    }, 10_000);
    s.on('connect', () => s.write(req));
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= want(got)) {
        clearTimeout(timer);
        s.end();
        resolve(got.subarray(0, want(got)));
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      reject(new Error('block service closed the connection'));
    });
  });
}

// ------------------------------------------------------------------ a proxy of the original protocol

/** Request kinds the original (0d5185ba) clients and GC could send. */
const ORIGINAL_SHARD_KINDS = new Set([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0c, 0x0d, 0x0e, 0x15, 0x16, 0x17, 0x18, 0x20, 0x21]);
const ORIGINAL_CDC_KINDS = new Set([0x01, 0x02, 0x03, 0x04]);

// ------------------------------------------------------------------ the tests

test('interoperability with the original protocol, both directions', { timeout: 180_000 }, async (t) => {
  const cluster = await startCluster({ blockServices: 3 });
  t.after(() => cluster.destroy());
  const { shardBasePort, cdcPort } = cluster.ports;

  await t.test('the original client flows work against our servers', async () => {
    const orig = new OriginalClient(shardBasePort, cdcPort);
    const dirId = await orig.mkdir('/orig');
    assert.ok(isDirectory(dirId));
    await orig.mkdir('/orig/sub');
    const data = randomBytes(10_000); // 4096 + 4096 + 1808, as in services.md §9
    await orig.createFile('/orig/file', data);
    assert.deepEqual(await orig.cat('/orig/file'), data);
    assert.deepEqual((await orig.ls('/orig')).sort(), ['file', 'sub']);
    await orig.mv('/orig/file', '/orig/renamed');
    await orig.mv('/orig/renamed', '/orig/sub/moved');
    await orig.mv('/orig/sub', '/sub2');
    assert.deepEqual(await orig.cat('/sub2/moved'), data);
    const stat = await orig.shard('STAT', await orig.resolve('/sub2/moved'), { id: await orig.resolve('/sub2/moved') });
    assert.equal(stat.sizeOrOwner, 10_000n);
    // Our client reads the original's 4 KiB spans.
    const ours = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl });
    t.after(() => ours.close());
    const chunks: Buffer[] = [];
    for await (const b of ours.createReadStream('/sub2/moved')) chunks.push(b);
    assert.deepEqual(Buffer.concat(chunks), data);
    // And the original `cat` reads a file our client wrote (block spans, parity 0x01, class 2).
    const big = randomBytes(3 << 20);
    const w = ours.createWriteStream('/sub2/ours');
    await new Promise<void>((resolve, reject) => {
      w.on('finish', resolve).on('error', reject);
      w.end(big);
    });
    assert.deepEqual(await orig.cat('/sub2/ours'), big);
    await orig.rmFile('/sub2/moved');
    await orig.rmFile('/sub2/ours');
    await orig.rmDir('/sub2');
    await orig.rmFile('/orig/placeholder').then(
      () => assert.fail('removing a missing file must fail'),
      (e: EggsError) => assert.equal(e.code, ErrorCode.NAME_NOT_FOUND),
    );
    assert.deepEqual(await orig.ls('/orig'), []);
  });

  await t.test('our client needs only the original request kinds', async () => {
    const proxy = await startUdpProxy(shardBasePort, cdcPort, {
      allow: (proto, kind) => (proto === 'shard' ? ORIGINAL_SHARD_KINDS : ORIGINAL_CDC_KINDS).has(kind),
    });
    t.after(() => proxy.close());
    const c = await EggsClient.connect({ shardBasePort: proxy.shardBasePort, cdcPort: proxy.cdcPort, spanBytes: 1 << 20 });
    t.after(() => c.close());
    await c.mkdir('/p');
    await c.mkdir('/p/d');
    const data = randomBytes((5 << 20) + 123);
    const w = c.createWriteStream('/p/f');
    await new Promise<void>((resolve, reject) => {
      w.on('finish', resolve).on('error', reject);
      w.end(data);
    });
    const small = c.createWriteStream('/p/small');
    await new Promise<void>((resolve, reject) => {
      small.on('finish', resolve).on('error', reject);
      small.end(Buffer.from('inline'));
    });
    const got: Buffer[] = [];
    for await (const b of c.createReadStream('/p/f', { start: 1000, end: data.length - 1 })) got.push(b);
    assert.deepEqual(Buffer.concat(got), data.subarray(1000));
    assert.equal((await c.readRange(await c.resolve('/p/small'), 0, 100)).toString(), 'inline');
    assert.equal((await c.stat('/p/f')).size, data.length);
    const names: string[] = [];
    for await (const e of c.readDir('/p')) names.push(e.name);
    assert.deepEqual(names.sort(), ['d', 'f', 'small']);
    await c.rename('/p/f', '/p/g');
    await c.rename('/p/g', '/p/d/g');
    await c.rename('/p/d', '/d2');
    await c.unlink('/d2/g');
    await c.unlink('/p/small');
    await c.rmdir('/d2');
    await c.rmdir('/p');
    for await (const _ of c.transientFiles(0)) void _;
    assert.deepEqual(proxy.refused, [], `extension kinds sent: ${proxy.refused.join(', ')}`);
    for (const k of ['shard:0x1', 'shard:0x2', 'shard:0x3', 'shard:0x4', 'shard:0x5', 'shard:0x6', 'shard:0x7', 'shard:0xc', 'shard:0xd', 'shard:0xe', 'cdc:0x1', 'cdc:0x2', 'cdc:0x3', 'cdc:0x4']) {
      assert.ok(proxy.seen.has(k), `expected the client to use ${k}`);
    }
  });
});
