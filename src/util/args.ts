// Shared command-line helpers: ranges like "0-255,7", integers with 0x prefixes, usage errors.

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** "0-255", "3", "0-3,10" → sorted unique numbers within [min, max]. */
export function parseRange(spec: string, min: number, max: number): number[] {
  const out = new Set<number>();
  for (const part of spec.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+))?\s*$/.exec(part);
    if (!m) throw new UsageError(`bad range "${part}" (expected N or N-M)`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (a > b || a < min || b > max) throw new UsageError(`range "${part}" outside ${min}-${max}`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

export function parseIntArg(name: string, value: string | undefined, min: number, max: number): number {
  if (value === undefined) throw new UsageError(`--${name} needs a value`);
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}, got "${value}"`);
  return n;
}

/** Accepts decimal or 0x-prefixed u64 values. */
export function parseU64(name: string, value: string): bigint {
  try {
    const v = BigInt(value);
    if (v < 0n || v >= 1n << 64n) throw new Error();
    return v;
  } catch {
    throw new UsageError(`${name} must be a 64-bit unsigned integer, got "${value}"`);
  }
}

/** "host:port" → parts; a bare port means the given default host. */
export function parseHostPort(value: string, defaultHost: string): { host: string; port: number } {
  const i = value.lastIndexOf(':');
  const host = i < 0 ? defaultHost : value.slice(0, i) || defaultHost;
  const port = Number(i < 0 ? value : value.slice(i + 1));
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`bad address "${value}"`);
  return { host, port };
}
