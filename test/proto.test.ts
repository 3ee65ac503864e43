// Every test vector of the spec (metadata.md §1.2, §1.4, §2.10, §2.11, §4.2, §7.3, §7.4, §9;
// services.md §1.1, §1.2, §2.2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CDC_PROTOCOL,
  DEFAULT_CDC_KEY,
  ErrorCode,
  SHARD_MESSAGES,
  SHARD_PROTOCOL,
  blockEraseCertificate,
  blockEraseProof,
  blockRelativePath,
  blockWriteCertificate,
  blockWriteProof,
  cbcMac,
  crc32c,
  crc32cCombine,
  crc32cZeros,
  crcFromBytes,
  crcToBytes,
  decode,
  decodeRequest,
  decodeResponse,
  encode,
  encodeCdcRequest,
  encodeCdcResponse,
  encodeErrorResponse,
  encodeShardRequest,
  encodeShardResponse,
  errorToErrno,
  fileCookie,
  nameHash,
  v61,
  u64,
  Edge,
  CDC_MESSAGES,
  EncodeError,
  bytes,
} from '../src/proto/index.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const KEY = hex('000102030405060708090a0b0c0d0e0f');
const RID = 0x0102030405060708n;

test('v61 vectors', () => {
  const vectors: [bigint, string][] = [
    [0n, '00'],
    [1n, '08'],
    [31n, 'f8'],
    [32n, '0101'],
    [4096n, '0180'],
    [8191n, 'f9ff'],
    [8192n, '020001'],
    [(1n << 21n) - 1n, 'faffff'],
    [1n << 21n, '03000001'],
    [1n << 60n, '0700000000000080'],
  ];
  for (const [x, h] of vectors) {
    assert.equal(encode(v61, x).toString('hex'), h, `encode ${x}`);
    assert.equal(decode(v61, hex(h)), x, `decode ${h}`);
  }
  assert.throws(() => encode(v61, 1n << 61n), EncodeError);
  for (let i = 0n; i < 61n; i++) {
    const x = (1n << i) + 3n;
    if (x < 1n << 61n) assert.equal(decode(v61, encode(v61, x)), x);
  }
});

test('bytes and list limits', () => {
  assert.throws(() => encode(bytes, Buffer.alloc(256)), EncodeError);
  assert.equal(encode(bytes, Buffer.alloc(255)).length, 256);
  assert.throws(() => decode(u64, hex('0102')), /truncated/);
  assert.throws(() => decode(u64, hex('010203040506070809')), /trailing/);
});

test('CBC-MAC, cookie, certificates and proofs', () => {
  assert.equal(cbcMac(Buffer.from('hello'), KEY).toString('hex'), 'a3a5fcf64804dbb9');
  assert.equal(cbcMac(hex('77 0807060504030201 839206e3 09000000'), KEY).toString('hex'), 'b6c2f8b68ba26c85');
  assert.equal(cbcMac(hex('57 0807060504030201'), KEY).toString('hex'), 'a3ec3cc7247b23dd');
  assert.equal(cbcMac(hex('65 0807060504030201'), KEY).toString('hex'), '417933fb4f57173c');
  assert.equal(cbcMac(hex('45 0807060504030201'), KEY).toString('hex'), 'abd902ecad42c2cb');
  assert.equal(cbcMac(Buffer.alloc(0), KEY).toString('hex'), '0000000000000000');
  assert.equal(fileCookie(0x4000000000000000n, KEY), 0x97154253e0c50522n);
  assert.equal(blockWriteCertificate(KEY, 0x1234n, hex('efbeadde'), 4096).toString('hex'), '6085dcf715bcd1d8');
  assert.equal(blockWriteProof(KEY, 0x1234n).toString('hex'), 'd450825c43f16982');
  assert.equal(blockWriteCertificate(KEY, RID, crcToBytes(0xe3069283), 9).toString('hex'), 'b6c2f8b68ba26c85');
  assert.equal(blockWriteProof(KEY, RID).toString('hex'), 'a3ec3cc7247b23dd');
  assert.equal(blockEraseCertificate(KEY, RID).toString('hex'), '417933fb4f57173c');
  assert.equal(blockEraseProof(KEY, RID).toString('hex'), 'abd902ecad42c2cb');
});

test('CRC32C, combine and zeros', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crcToBytes(crc32c(Buffer.from('123456789'))).toString('hex'), '839206e3');
  assert.equal(crcToBytes(crc32c(Buffer.from('hi'))).toString('hex'), 'c2d99df5');
  assert.equal(crc32c(Buffer.alloc(0)), 0);
  assert.equal(crcFromBytes(hex('839206e3')), 0xe3069283);
  const hw = crc32cCombine(crc32c(Buffer.from('hello ')), crc32c(Buffer.from('world')), 5);
  assert.equal(crcToBytes(hw).toString('hex'), 'aa6594c9');
  assert.equal(crc32cCombine(crc32c(Buffer.from('1234')), crc32c(Buffer.from('56789')), 5), 0xe3069283);
  assert.equal(crc32c(Buffer.from('56789'), crc32c(Buffer.from('1234'))), 0xe3069283, 'continuation');
  assert.equal(crcToBytes(crc32cZeros(100)).toString('hex'), 'f69fcb07');
  for (const n of [0, 1, 65535, 65536, 65537, 200_000, 1 << 20]) {
    assert.equal(crc32cZeros(n), crc32c(Buffer.alloc(n)), `zeros(${n})`);
  }
});

test('name hash', () => {
  assert.equal(nameHash(Buffer.from('')), 0x04b2008fd98c1dd4n);
  assert.equal(nameHash(Buffer.from('a')), 0x28b6f1c0b975c10cn);
  assert.equal(nameHash(Buffer.from('test')), 0x73d32146cd6b8f09n);
  assert.equal(nameHash(Buffer.from('foo')), 0x5cf8c24cdb18bdacn);
});

test('block file layout', () => {
  assert.equal(blockRelativePath(0x03059faf93bfb907n), '07/07b9bf93af9f0503');
});

test('error codes and errno', () => {
  assert.equal(ErrorCode.INTERNAL_ERROR, 10);
  assert.equal(ErrorCode.NAME_NOT_FOUND, 19);
  assert.equal(ErrorCode.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY, 45);
  assert.equal(errorToErrno(ErrorCode.DIRECTORY_NOT_EMPTY), 39);
  assert.equal(errorToErrno(ErrorCode.EDGE_NOT_FOUND), 2);
  assert.equal(errorToErrno(9999), 5);
});

test('wire vectors of metadata.md §9', () => {
  const eq = (a: Buffer, h: string) => assert.equal(a.toString('hex'), hex(h).toString('hex'));
  eq(encodeShardRequest('LOOKUP', 1n, { dirId: 0x2000000000000000n, name: Buffer.from('foo') }), '53484100 0100000000000000 01 0000000000000020 03 666f6f');
  eq(encodeErrorResponse(SHARD_PROTOCOL, 1n, ErrorCode.NAME_NOT_FOUND), '53484100 0100000000000000 00 1300');
  eq(encodeShardResponse('LOOKUP', 1n, { targetId: 0x2000000000000001n, creationTime: 5n }), '53484100 0100000000000000 01 0100000000000020 0500000000000000');
  eq(encodeShardRequest('CONSTRUCT_FILE', RID, { type: 2 }), '53484100 0807060504030201 04 02');
  eq(
    encodeShardRequest('ADD_SPAN_INITIATE', RID, {
      fileId: 0x4000000000000000n, cookie: 0x1122334455667788n, byteOffset: 0n, storageClass: 0, parity: 0,
      crc32: hex('c2d99df5'), size: 2n, bodyBytes: Buffer.from('hi'), bodyBlocks: [],
    }),
    '53484100 0807060504030201 05 0000000000000040 8877665544332211 00 00 00 c2d99df5 10 02 6869 0000',
  );
  eq(
    encodeShardRequest('ADD_SPAN_INITIATE', RID, {
      fileId: 0x4000000000000000n, cookie: 0x1122334455667788n, byteOffset: 4096n, storageClass: 2, parity: 1,
      crc32: hex('01020304'), size: 4096n, bodyBytes: Buffer.alloc(0), bodyBlocks: [{ crc32: hex('01020304'), size: 4096n }],
    }),
    '53484100 0807060504030201 05 0000000000000040 8877665544332211 0180 02 01 01020304 0180 00 0100 01020304 0180',
  );
  eq(
    encodeShardRequest('ADD_SPAN_CERTIFY', RID, { fileId: 0x4000000000000000n, cookie: 0x1122334455667788n, byteOffset: 4096n, proofs: [hex('aaaaaaaaaaaaaaaa')] }),
    '53484100 0807060504030201 06 0000000000000040 8877665544332211 0180 0100 aaaaaaaaaaaaaaaa',
  );
  eq(
    encodeShardRequest('CREATE_LOCKED_CURRENT_EDGE', RID, { dirId: 0x2000000000000000n, name: Buffer.from('d'), targetId: 0x2000000000000001n, creationTime: 0x10n }),
    '53484100 0807060504030201 82 0000000000000020 01 64 0100000000000020 1000000000000000 1ba1bb714f6b1b32',
  );
  eq(
    encodeShardRequest('UNLOCK_CURRENT_EDGE', RID, { dirId: 0x2000000000000000n, name: Buffer.from('d'), targetId: 0x2000000000000001n, wasMoved: true }),
    '53484100 0807060504030201 84 0000000000000020 01 64 0100000000000020 01 8ddc4242a6707d2b',
  );
  eq(
    encodeShardRequest('LOCK_CURRENT_EDGE', 2n, { dirId: 0x2000000000000000n, name: Buffer.from('a'), targetId: 0x2000000000000001n }),
    '53484100 0200000000000000 83 0000000000000020 01 61 0100000000000020 b960d55db79e9fb4',
  );
  eq(
    encodeShardResponse('READ_DIR', RID, {
      nextHash: 0n,
      results: [{ targetId: 0x4000000000000000n, nameHash: nameHash(Buffer.from('test')), name: Buffer.from('test'), creationTime: 0x20n }],
    }),
    '53484100 0807060504030201 03 0000000000000000 0100 0000000000000040 098f6bcd4621d373 04 74657374 2000000000000000',
  );
  eq(
    encodeShardResponse('FILE_SPANS', RID, {
      nextOffset: 0n,
      spans: [
        { byteOffset: 0n, parity: 0, storageClass: 0, crc32: hex('c2d99df5'), size: 2n, bodyBytes: Buffer.from('hi'), bodyBlocks: [] },
        {
          byteOffset: 2n, parity: 1, storageClass: 2, crc32: hex('01020304'), size: 100n, bodyBytes: Buffer.alloc(0),
          bodyBlocks: [{ ip: hex('c0a80001'), port: 8080, blockId: 0x100n, crc32: hex('01020304'), size: 100n, flags: 1 }],
        },
      ],
    }),
    '53484100 0807060504030201 0d 00 0200 00 00 00 c2d99df5 10 02 6869 0000 10 01 02 01020304 2103 00 0100 c0a80001 901f 0001000000000000 01020304 2103 01',
  );
  eq(
    encodeShardResponse('FULL_READ_DIR', RID, {
      finished: true,
      results: [{ targetId: 0xc000000000000000n, nameHash: 1n, name: Buffer.from('x'), creationTime: 2n }],
    }),
    '53484100 0807060504030201 21 01 0100 00000000000000c0 0100000000000000 01 78 0200000000000000',
  );
  eq(encodeCdcRequest('MAKE_DIRECTORY', 3n, { ownerId: 0x2000000000000000n, name: Buffer.from('d') }), '43444300 0300000000000000 01 0000000000000020 01 64');
  eq(encodeCdcResponse('MAKE_DIRECTORY', 3n, { id: 0x2000000000000001n }), '43444300 0300000000000000 01 0100000000000020');
});

test('request decoding: malformed, privileged, trailing bytes', () => {
  const lookup = encodeShardRequest('LOOKUP', 7n, { dirId: 0x2000000000000000n, name: Buffer.from('foo') });
  const ok = decodeRequest(SHARD_PROTOCOL, lookup);
  assert.ok(ok.ok && ok.requestId === 7n && ok.decl === SHARD_MESSAGES.LOOKUP && ok.body.name.toString() === 'foo');
  const trailing = decodeRequest(SHARD_PROTOCOL, Buffer.concat([lookup, Buffer.from([0])]));
  assert.ok(!trailing.ok && trailing.code === ErrorCode.MALFORMED_REQUEST && trailing.requestId === 7n);
  const short = decodeRequest(SHARD_PROTOCOL, lookup.subarray(0, 10));
  assert.ok(!short.ok && short.requestId === undefined);
  const badMagic = decodeRequest(CDC_PROTOCOL, lookup);
  assert.ok(!badMagic.ok && badMagic.requestId === undefined);
  const unknownKind = Buffer.from(lookup);
  unknownKind[12] = 0x08;
  const uk = decodeRequest(SHARD_PROTOCOL, unknownKind);
  assert.ok(!uk.ok && uk.code === ErrorCode.MALFORMED_REQUEST);
  const badType = decodeRequest(SHARD_PROTOCOL, hex('53484100 0807060504030201 04 04'));
  assert.ok(!badType.ok && badType.code === ErrorCode.MALFORMED_REQUEST);
  const lock = encodeShardRequest('LOCK_CURRENT_EDGE', 2n, { dirId: 0x2000000000000000n, name: Buffer.from('a'), targetId: 0x2000000000000001n });
  assert.ok(decodeRequest(SHARD_PROTOCOL, lock).ok);
  const forged = Buffer.from(lock);
  forged[forged.length - 1]! ^= 1;
  const f = decodeRequest(SHARD_PROTOCOL, forged);
  assert.ok(!f.ok && f.code === ErrorCode.NOT_AUTHORISED);
  const noMac = decodeRequest(SHARD_PROTOCOL, lock.subarray(0, lock.length - 8));
  assert.ok(!noMac.ok && noMac.code === ErrorCode.MALFORMED_REQUEST);
  const otherKey = encodeShardRequest('LOCK_CURRENT_EDGE', 2n, { dirId: 1n, name: Buffer.from('a'), targetId: 2n }, KEY);
  const ok2 = decodeRequest(SHARD_PROTOCOL, otherKey, DEFAULT_CDC_KEY);
  assert.ok(!ok2.ok && ok2.code === ErrorCode.NOT_AUTHORISED);
});

test('response decoding', () => {
  const resp = decodeResponse(SHARD_PROTOCOL, encodeErrorResponse(SHARD_PROTOCOL, 9n, ErrorCode.NAME_NOT_FOUND), SHARD_MESSAGES.LOOKUP);
  assert.equal(resp.error, ErrorCode.NAME_NOT_FOUND);
  assert.equal(resp.requestId, 9n);
  const r2 = decodeResponse(CDC_PROTOCOL, encodeCdcResponse('MAKE_DIRECTORY', 3n, { id: 5n }), CDC_MESSAGES.MAKE_DIRECTORY);
  assert.equal(r2.body.id, 5n);
  assert.throws(() => decodeResponse(SHARD_PROTOCOL, encodeShardResponse('STAT', 1n, { mtime: 1n, sizeOrOwner: 2n, opaque: Buffer.alloc(0) }), SHARD_MESSAGES.LOOKUP));
  assert.equal(Edge.size({ targetId: 0n, nameHash: 0n, name: Buffer.from('abc'), creationTime: 0n }), 28);
});
