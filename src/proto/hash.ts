// Directory name hashing (hash mode 1, TRUNC_MD5) and name validation.
import { createHash } from 'node:crypto';

export const HASH_MODE_TRUNC_MD5 = 1;
export const MAX_NAME_BYTES = 255;

/** First 8 bytes of MD5(name) as a u64 LE, bit 63 cleared so it fits a signed SQLite integer. */
export function nameHash(name: Uint8Array): bigint {
  const d = createHash('md5').update(name).digest();
  return d.readBigUInt64LE(0) & 0x7fffffffffffffffn;
}

/** Why a name is not acceptable as a directory entry, or undefined when it is. */
export function invalidNameReason(name: Uint8Array): string | undefined {
  if (name.length > MAX_NAME_BYTES) return `name is ${name.length} bytes, the limit is ${MAX_NAME_BYTES}`;
  if (name.length === 1 && name[0] === 0x2e) return 'name "." is reserved';
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) return 'name ".." is reserved';
  for (const b of name) {
    if (b === 0) return 'name contains a NUL byte';
    if (b === 0x2f) return 'name contains "/"';
  }
  return undefined;
}
