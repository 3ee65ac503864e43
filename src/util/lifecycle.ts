// Process lifecycle shared by every `eggsfs` entry point.

/** Set by `eggsfs run` for its children: stop (gracefully) when the parent is gone. */
export const EXIT_WITH_PARENT_ENV = 'EGGSFS_EXIT_WITH_PARENT';
const PARENT_CHECK_MS = 500;

/**
 * Children of `eggsfs run` live in their own process groups (so a Ctrl-C reaches only run, which
 * stops them in order). If run itself is killed with SIGKILL it cannot stop them, so each child
 * notices it was re-parented and sends itself SIGTERM, taking the same clean path as a normal stop.
 */
export function exitWithParent(): void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid !== parent) {
      clearInterval(timer);
      process.kill(process.pid, 'SIGTERM');
    }
  }, PARENT_CHECK_MS);
  timer.unref();
}
