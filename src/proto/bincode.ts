// Bincode primitives and combinators. Every message in the system is declared once with these
// (see messages.ts); encoders, decoders and size calculations are all derived from that one
// declaration, so a new message is one declaration, not four hand-written functions.

/** Thrown when bytes do not decode as the declared type. Never escapes a server loop. */
export class DecodeError extends Error {
  override readonly name = 'DecodeError';
}

/** Thrown when a value cannot be encoded (too long, out of range). A programming or user error. */
export class EncodeError extends Error {
  override readonly name = 'EncodeError';
}

export class Writer {
  offset = 0;
  constructor(readonly buf: Buffer) {}
  u8(v: number): void {
    this.buf[this.offset++] = v;
  }
  u16(v: number): void {
    this.buf.writeUInt16LE(v, this.offset);
    this.offset += 2;
  }
  u32(v: number): void {
    this.buf.writeUInt32LE(v, this.offset);
    this.offset += 4;
  }
  u64(v: bigint): void {
    this.buf.writeBigUInt64LE(v, this.offset);
    this.offset += 8;
  }
  raw(b: Uint8Array): void {
    this.buf.set(b, this.offset);
    this.offset += b.length;
  }
}

export class Reader {
  offset: number;
  constructor(
    readonly buf: Buffer,
    offset = 0,
    readonly end = buf.length,
  ) {
    this.offset = offset;
  }
  get remaining(): number {
    return this.end - this.offset;
  }
  need(n: number, what: string): void {
    if (this.offset + n > this.end) {
      throw new DecodeError(`truncated ${what}: need ${n} bytes at offset ${this.offset}, have ${this.remaining}`);
    }
  }
  u8(): number {
    this.need(1, 'u8');
    return this.buf[this.offset++]!;
  }
  u16(): number {
    this.need(2, 'u16');
    const v = this.buf.readUInt16LE(this.offset);
    this.offset += 2;
    return v;
  }
  u32(): number {
    this.need(4, 'u32');
    const v = this.buf.readUInt32LE(this.offset);
    this.offset += 4;
    return v;
  }
  u64(): bigint {
    this.need(8, 'u64');
    const v = this.buf.readBigUInt64LE(this.offset);
    this.offset += 8;
    return v;
  }
  /** A copy, so that decoded values never alias a reused receive buffer. */
  raw(n: number, what: string): Buffer {
    this.need(n, what);
    const b = Buffer.from(this.buf.subarray(this.offset, this.offset + n));
    this.offset += n;
    return b;
  }
}

export interface Codec<T> {
  /** Human name, used in error messages and schema dumps. */
  readonly typeName: string;
  size(v: T): number;
  write(w: Writer, v: T): void;
  read(r: Reader): T;
}

export type Infer<C> = C extends Codec<infer T> ? T : never;

function fixedSize<T>(typeName: string, n: number, write: (w: Writer, v: T) => void, read: (r: Reader) => T): Codec<T> {
  return { typeName, size: () => n, write, read };
}

export const u8: Codec<number> = fixedSize(
  'u8',
  1,
  (w, v) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new EncodeError(`u8 out of range: ${v}`);
    w.u8(v);
  },
  (r) => r.u8(),
);

export const u16: Codec<number> = fixedSize(
  'u16',
  2,
  (w, v) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new EncodeError(`u16 out of range: ${v}`);
    w.u16(v);
  },
  (r) => r.u16(),
);

export const u32: Codec<number> = fixedSize(
  'u32',
  4,
  (w, v) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new EncodeError(`u32 out of range: ${v}`);
    w.u32(v);
  },
  (r) => r.u32(),
);

const U64_MAX = (1n << 64n) - 1n;
export const u64: Codec<bigint> = fixedSize(
  'u64',
  8,
  (w, v) => {
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw new EncodeError(`u64 out of range: ${v}`);
    w.u64(v);
  },
  (r) => r.u64(),
);

/** Emit only 0/1; accept only 0/1 (like the Go decoder) so that garbage is refused. */
export const bool: Codec<boolean> = fixedSize(
  'bool',
  1,
  (w, v) => w.u8(v ? 1 : 0),
  (r) => {
    const b = r.u8();
    if (b > 1) throw new DecodeError(`bool must be 0 or 1, got ${b}`);
    return b === 1;
  },
);

/** A u8 that must be below `count` (an enum on the wire). */
export function enumU8(typeName: string, count: number): Codec<number> {
  return fixedSize(
    typeName,
    1,
    (w, v) => {
      if (!Number.isInteger(v) || v < 0 || v >= count) throw new EncodeError(`${typeName} out of range: ${v}`);
      w.u8(v);
    },
    (r) => {
      const v = r.u8();
      if (v >= count) throw new DecodeError(`${typeName} out of range: ${v}`);
      return v;
    },
  );
}

export const V61_LIMIT = 1n << 61n;

export function v61Size(v: bigint): number {
  // Smallest n with v < 2^(8n-3).
  let n = 1;
  while (n < 8 && v >= 1n << BigInt(8 * n - 3)) n++;
  return n;
}

/** The v61 varint: three low bits of the first byte hold (length - 1); zero is one 00 byte. */
export const v61: Codec<bigint> = {
  typeName: 'v61',
  size: (v) => v61Size(v),
  write(w, v) {
    if (typeof v !== 'bigint' || v < 0n || v >= V61_LIMIT) throw new EncodeError(`v61 out of range: ${v}`);
    const n = v61Size(v);
    let x = (v << 3n) | BigInt(n - 1);
    for (let i = 0; i < n; i++) {
      w.u8(Number(x & 0xffn));
      x >>= 8n;
    }
  },
  read(r) {
    r.need(1, 'v61');
    const n = (r.buf[r.offset]! & 7) + 1;
    r.need(n, 'v61');
    let x = 0n;
    for (let i = n - 1; i >= 0; i--) x = (x << 8n) | BigInt(r.buf[r.offset + i]!);
    r.offset += n;
    return x >> 3n;
  },
};

export const MAX_BYTES_LENGTH = 255;

/** u8 length prefix, so at most 255 bytes. */
export const bytes: Codec<Buffer> = {
  typeName: 'bytes',
  size: (v) => 1 + v.length,
  write(w, v) {
    if (v.length > MAX_BYTES_LENGTH) throw new EncodeError(`bytes too long: ${v.length} > ${MAX_BYTES_LENGTH}`);
    w.u8(v.length);
    w.raw(v);
  },
  read(r) {
    const n = r.u8();
    return r.raw(n, 'bytes');
  },
};

export function fixed(n: number): Codec<Buffer> {
  return fixedSize(
    `fixed${n}`,
    n,
    (w, v) => {
      if (v.length !== n) throw new EncodeError(`fixed${n} has ${v.length} bytes`);
      w.raw(v);
    },
    (r) => r.raw(n, `fixed${n}`),
  );
}

export const MAX_LIST_LENGTH = 0xffff;

/** u16 element count followed by the elements. */
export function list<T>(elem: Codec<T>): Codec<T[]> {
  return {
    typeName: `list<${elem.typeName}>`,
    size(v) {
      let s = 2;
      for (const e of v) s += elem.size(e);
      return s;
    },
    write(w, v) {
      if (v.length > MAX_LIST_LENGTH) throw new EncodeError(`list too long: ${v.length}`);
      w.u16(v.length);
      for (const e of v) elem.write(w, e);
    },
    read(r) {
      const n = r.u16();
      const out: T[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = elem.read(r);
      return out;
    },
  };
}

export type Fields = Record<string, Codec<any>>;
export type StructOf<F extends Fields> = { [K in keyof F]: Infer<F[K]> };

export interface StructCodec<F extends Fields> extends Codec<StructOf<F>> {
  readonly fields: F;
}

/** Fields are encoded in declaration order, with no tags and no length prefix. */
export function struct<F extends Fields>(typeName: string, fields: F): StructCodec<F> {
  const entries = Object.entries(fields);
  return {
    typeName,
    fields,
    size(v) {
      let s = 0;
      for (const [k, c] of entries) s += c.size((v as any)[k]);
      return s;
    },
    write(w, v) {
      for (const [k, c] of entries) {
        const fv = (v as any)[k];
        if (fv === undefined) throw new EncodeError(`${typeName}.${k} is missing`);
        c.write(w, fv);
      }
    },
    read(r) {
      const out: any = {};
      for (const [k, c] of entries) out[k] = c.read(r);
      return out;
    },
  };
}

/** Encode a value to a fresh buffer of exactly its size. */
export function encode<T>(codec: Codec<T>, v: T): Buffer {
  const buf = Buffer.allocUnsafe(codec.size(v));
  const w = new Writer(buf);
  codec.write(w, v);
  if (w.offset !== buf.length) throw new EncodeError(`${codec.typeName}: size ${buf.length} but wrote ${w.offset}`);
  return buf;
}

/** Decode a whole buffer; leftover bytes are an error. */
export function decode<T>(codec: Codec<T>, buf: Buffer): T {
  const r = new Reader(buf);
  const v = codec.read(r);
  if (r.remaining !== 0) throw new DecodeError(`${codec.typeName}: ${r.remaining} trailing bytes`);
  return v;
}
