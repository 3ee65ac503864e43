// Polling for a condition in integration tests: a bounded wait that names what it waited for.

export const UNTIL_POLL_MS = 100;

/** Calls `f` every UNTIL_POLL_MS until it returns a truthy value (returned), or fails after timeoutMs. */
export async function until<T>(what: string, f: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, UNTIL_POLL_MS));
  }
}
