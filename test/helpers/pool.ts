/** Runs op(0) … op(n - 1) with at most `concurrency` of them in flight; rejects with the first failure. */
export async function inParallel(n: number, concurrency: number, op: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) await op(i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}
