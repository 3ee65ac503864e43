// Write weights by water-filling (services.md §3.4 [recommend]). Imagine adding 20 % of the total
// capacity and pouring it into the emptiest services first, toward a common fill ratio r:
//   Σ max(0, r·total_i − used_i) = 0.2·T,   w_i = max(0, r·total_i − used_i) / (0.2·T).
// The original solved a degenerate linear program that put every write on one service; this is
// the intent its comment states. Equal empty disks get equal weights; a disk much fuller than the
// others gets none.

export const WATER_FILL_FRACTION = 0.2;

export interface Capacity {
  usedBytes: number;
  freeBytes: number;
}

/** Weights (summing to 1 when any service has capacity) for the given eligible services. */
export function waterFill(services: readonly Capacity[]): number[] {
  const n = services.length;
  if (n === 0) return [];
  const total = services.map((s) => Math.max(0, s.usedBytes) + Math.max(0, s.freeBytes));
  const used = services.map((s) => Math.max(0, s.usedBytes));
  const T = total.reduce((a, b) => a + b, 0);
  // No capacity information at all (every service reports 0): spread writes evenly rather than
  // refusing them; a service with zero capacity among others with some gets nothing.
  if (T <= 0) return services.map(() => 1 / n);
  const water = WATER_FILL_FRACTION * T;
  // Services in order of fill ratio; with the k emptiest filled to a common ratio r,
  // r = (water + Σused) / Σtotal over them; valid while r does not reach the next one's ratio.
  const order = [...Array(n).keys()].filter((i) => total[i]! > 0).sort((a, b) => used[a]! / total[a]! - used[b]! / total[b]!);
  let sumUsed = 0;
  let sumTotal = 0;
  let r = 0;
  for (let k = 0; k < order.length; k++) {
    const i = order[k]!;
    sumUsed += used[i]!;
    sumTotal += total[i]!;
    r = (water + sumUsed) / sumTotal;
    const next = order[k + 1];
    if (next === undefined || r <= used[next]! / total[next]!) break;
  }
  const add = services.map((_, i) => (total[i]! > 0 ? Math.max(0, r * total[i]! - used[i]!) : 0));
  const sum = add.reduce((a, b) => a + b, 0);
  if (!(sum > 0)) return services.map(() => 1 / n);
  return add.map((a) => a / sum);
}
