// The four UDP envelopes (metadata.md §1.3): shard/CDC requests and responses, one per datagram.
import { DecodeError, Reader, Writer, decode } from './bincode.js';
import { DEFAULT_CDC_KEY, MAC_BYTES, cbcMac, macEquals } from './crypto.js';
import { ErrorCode } from './errors.js';
import {
  CDC_BY_KIND,
  CDC_MESSAGES,
  SHARD_BY_KIND,
  SHARD_MESSAGES,
  isPrivilegedShardKind,
  type CdcKindName,
  type CdcReq,
  type CdcResp,
  type MessageDecl,
  type ShardKindName,
  type ShardReq,
  type ShardResp,
} from './messages.js';

export const UDP_MTU = 1472;
/** magic (4) + request id (8) + kind (1). */
export const HEADER_BYTES = 13;
export const ERROR_RESPONSE_BYTES = HEADER_BYTES + 2;
export const ERROR_KIND = 0;

export const SHARD_MAGIC = 0x00414853; // "SHA\0" read as a LE u32
export const CDC_MAGIC = 0x00434443; // "CDC\0"

export interface Protocol {
  readonly name: string;
  readonly magic: number;
  readonly byKind: readonly (MessageDecl | undefined)[];
  /** Whether a kind carries a trailing MAC (only privileged shard kinds). */
  readonly isPrivileged: (kind: number) => boolean;
}

export const SHARD_PROTOCOL: Protocol = {
  name: 'shard',
  magic: SHARD_MAGIC,
  byKind: SHARD_BY_KIND,
  isPrivileged: isPrivilegedShardKind,
};

export const CDC_PROTOCOL: Protocol = {
  name: 'cdc',
  magic: CDC_MAGIC,
  byKind: CDC_BY_KIND,
  isPrivileged: () => false,
};

function encodeEnvelope(magic: number, requestId: bigint, kind: number, decl: MessageDecl['req'], body: unknown, macKey?: Uint8Array): Buffer {
  const bodySize = decl.size(body as never);
  const total = HEADER_BYTES + bodySize + (macKey ? MAC_BYTES : 0);
  const buf = Buffer.allocUnsafe(total);
  const w = new Writer(buf);
  w.u32(magic);
  w.u64(requestId);
  w.u8(kind);
  decl.write(w, body as never);
  if (macKey) w.raw(cbcMac(buf.subarray(0, w.offset), macKey));
  return buf;
}

export function encodeShardRequest<K extends ShardKindName>(
  kindName: K,
  requestId: bigint,
  body: ShardReq<K>,
  cdcKey: Uint8Array = DEFAULT_CDC_KEY,
): Buffer {
  const decl = SHARD_MESSAGES[kindName];
  return encodeEnvelope(SHARD_MAGIC, requestId, decl.kind, decl.req, body, isPrivilegedShardKind(decl.kind) ? cdcKey : undefined);
}

export function encodeShardResponse<K extends ShardKindName>(kindName: K, requestId: bigint, body: ShardResp<K>): Buffer {
  const decl = SHARD_MESSAGES[kindName];
  return encodeEnvelope(SHARD_MAGIC, requestId, decl.kind, decl.resp, body);
}

export function encodeCdcRequest<K extends CdcKindName>(kindName: K, requestId: bigint, body: CdcReq<K>): Buffer {
  const decl = CDC_MESSAGES[kindName];
  return encodeEnvelope(CDC_MAGIC, requestId, decl.kind, decl.req, body);
}

export function encodeCdcResponse<K extends CdcKindName>(kindName: K, requestId: bigint, body: CdcResp<K>): Buffer {
  const decl = CDC_MESSAGES[kindName];
  return encodeEnvelope(CDC_MAGIC, requestId, decl.kind, decl.resp, body);
}

/** Encode a response of the declaration's kind (for servers that dispatch by declaration). */
export function encodeResponseFor(proto: Protocol, decl: MessageDecl, requestId: bigint, body: unknown): Buffer {
  return encodeEnvelope(proto.magic, requestId, decl.kind, decl.resp, body);
}

export function encodeErrorResponse(proto: Protocol, requestId: bigint, code: number): Buffer {
  const buf = Buffer.allocUnsafe(ERROR_RESPONSE_BYTES);
  buf.writeUInt32LE(proto.magic, 0);
  buf.writeBigUInt64LE(requestId, 4);
  buf[12] = ERROR_KIND;
  buf.writeUInt16LE(code, 13);
  return buf;
}

export type DecodedRequest =
  | { ok: true; requestId: bigint; decl: MessageDecl; body: any }
  /** requestId undefined: the datagram is not ours at all; send nothing. */
  | { ok: false; requestId: bigint | undefined; code: number; reason: string };

/**
 * Decode a request datagram. Never throws: a bad magic or a datagram too short for the request id
 * gives requestId undefined (no reply); any later problem gives MALFORMED_REQUEST, and a privileged
 * kind whose MAC does not verify gives NOT_AUTHORISED.
 */
export function decodeRequest(proto: Protocol, buf: Buffer, macKey: Uint8Array = DEFAULT_CDC_KEY): DecodedRequest {
  if (buf.length < 12 || buf.readUInt32LE(0) !== proto.magic) {
    return { ok: false, requestId: undefined, code: ErrorCode.MALFORMED_REQUEST, reason: 'bad magic or short datagram' };
  }
  const requestId = buf.readBigUInt64LE(4);
  const malformed = (reason: string): DecodedRequest => ({ ok: false, requestId, code: ErrorCode.MALFORMED_REQUEST, reason });
  if (buf.length < HEADER_BYTES) return malformed('no kind byte');
  const kind = buf[12]!;
  const decl = proto.byKind[kind];
  if (!decl) return malformed(`unknown ${proto.name} kind 0x${kind.toString(16)}`);
  const r = new Reader(buf, HEADER_BYTES);
  let body: unknown;
  try {
    body = decl.req.read(r);
  } catch (err) {
    return malformed(err instanceof DecodeError ? err.message : String(err));
  }
  if (proto.isPrivileged(kind)) {
    if (r.remaining !== MAC_BYTES) return malformed(`privileged request needs an ${MAC_BYTES}-byte MAC, has ${r.remaining} trailing bytes`);
    const expected = cbcMac(buf.subarray(0, r.offset), macKey);
    if (!macEquals(expected, buf.subarray(r.offset))) {
      return { ok: false, requestId, code: ErrorCode.NOT_AUTHORISED, reason: 'bad MAC' };
    }
  } else if (r.remaining !== 0) {
    return malformed(`${r.remaining} trailing bytes`);
  }
  return { ok: true, requestId, decl, body };
}

export type DecodedResponse<T = any> =
  | { requestId: bigint; kind: number; error: undefined; body: T }
  | { requestId: bigint; kind: 0; error: number; body: undefined };

/**
 * Decode a response datagram for a known request kind. Throws DecodeError when the datagram is not
 * a well-formed response of that kind (the caller treats that as MALFORMED_RESPONSE).
 */
export function decodeResponse(proto: Protocol, buf: Buffer, decl: MessageDecl): DecodedResponse {
  if (buf.length < HEADER_BYTES) throw new DecodeError(`${proto.name} response too short (${buf.length} bytes)`);
  if (buf.readUInt32LE(0) !== proto.magic) throw new DecodeError(`${proto.name} response has bad magic`);
  const requestId = buf.readBigUInt64LE(4);
  const kind = buf[12]!;
  if (kind === ERROR_KIND) {
    if (buf.length !== ERROR_RESPONSE_BYTES) throw new DecodeError(`error response of ${buf.length} bytes`);
    return { requestId, kind: 0, error: buf.readUInt16LE(13), body: undefined };
  }
  if (kind !== decl.kind) throw new DecodeError(`response kind 0x${kind.toString(16)} for request kind 0x${decl.kind.toString(16)}`);
  const body = decode(decl.resp, buf.subarray(HEADER_BYTES));
  return { requestId, kind, error: undefined, body };
}

/** Request id of any datagram of this protocol, or undefined. */
export function peekRequestId(proto: Protocol, buf: Buffer): bigint | undefined {
  if (buf.length < 12 || buf.readUInt32LE(0) !== proto.magic) return undefined;
  return buf.readBigUInt64LE(4);
}
