// Eggs time: nanoseconds since 2020-01-01T00:00:00Z, as an unsigned 64-bit bigint.

export const EGGS_EPOCH_NS = 1_577_836_800_000_000_000n;
export const NS_PER_MS = 1_000_000n;
export const NS_PER_SEC = 1_000_000_000n;
export const ONE_HOUR_NS = 3_600n * NS_PER_SEC;
/** READ_DIR's "as of now". */
export const AS_OF_NOW = 0xffffffffffffffffn;

const startWallNs = BigInt(Date.now()) * NS_PER_MS;
const startHr = process.hrtime.bigint();

/**
 * Wall-clock time with nanosecond resolution: Date.now() has only millisecond resolution, and
 * edge creation times and ids must differ between requests made within one millisecond.
 */
export function unixNowNs(): bigint {
  return startWallNs + (process.hrtime.bigint() - startHr);
}

export function eggsNow(): bigint {
  return unixNowNs() - EGGS_EPOCH_NS;
}


/** ISO-8601 with nanoseconds, e.g. 2026-11-25T08:45:16.123456789Z. */
export function formatEggsTime(t: bigint): string {
  const unixNs = t + EGGS_EPOCH_NS;
  const iso = new Date(Number(unixNs / NS_PER_MS)).toISOString();
  const ns = (unixNs % NS_PER_SEC).toString().padStart(9, '0');
  return iso.slice(0, 19) + '.' + ns + 'Z';
}
