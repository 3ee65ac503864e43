// Exclusive flock(2) on an open file, held for the life of the process. Node has no flock, so the
// util-linux `flock` command takes it on our own descriptor (shared with the child): a flock
// belongs to the open file description, so it stays held by us after the child exits, and the
// kernel releases it when our descriptor closes (including on kill -9). This is the shell idiom
// `exec 9>file; flock -n 9`.
import { spawnSync } from 'node:child_process';

export class LockBusyError extends Error {
  override readonly name = 'LockBusyError';
}

const FLOCK_BIN = '/usr/bin/flock';
const FLOCK_TIMEOUT_MS = 10_000;

/** Takes a non-blocking exclusive lock on `fd`; throws LockBusyError when another process holds it. */
export function flockExclusive(fd: number, pathForErrors: string): void {
  const r = spawnSync(FLOCK_BIN, ['--nonblock', '--exclusive', '--conflict-exit-code', '75', '3'], {
    stdio: ['ignore', 'ignore', 'pipe', fd],
    timeout: FLOCK_TIMEOUT_MS,
  });
  if (r.error) throw new Error(`cannot lock ${pathForErrors}: ${r.error.message} (is util-linux's flock installed?)`);
  if (r.status === 75) throw new LockBusyError(`${pathForErrors} is locked by another process (another block service owns this directory)`);
  if (r.status !== 0) throw new Error(`cannot lock ${pathForErrors}: flock exited with ${r.status}: ${r.stderr?.toString().trim()}`);
}
