// `eggsfs mount <mountpoint>`: serves EggsFS at a mountpoint until SIGINT/SIGTERM (or until
// someone unmounts it), then unmounts and exits 0.
import { DEFAULT_SHUCKLE_URL } from '../proto/ports.js';
import { parseParityOption } from '../client/span-layout.js';
import type { ClientOptions } from '../client/index.js';
import { UsageError, parseOptions } from '../util/args.js';
import { announceReady, logger, setLogLevel } from '../util/log.js';
import { DEFAULT_READERS, mountFuse, type FuseSession } from './kernel.js';
import { MemFs } from './memfs.js';
import { serveEggsfs } from './index.js';

const log = logger('mount');

const HELP = `usage: eggsfs mount <mountpoint> [options]

Mounts EggsFS at <mountpoint> (FUSE; needs root or access to /dev/fuse) until SIGINT/SIGTERM.

options:
  --shuckle URL       shuckle of the cluster (default $EGGSFS_SHUCKLE or ${DEFAULT_SHUCKLE_URL})
  --parity D+P        redundancy of new files (default: the cluster default)
  --span-bytes N      bytes per span of new files (default 8 MiB)
  --timeout-ms N      time to wait for each metadata answer before resending (default 2000)
  --read-ahead-spans N  spans a reader fetches ahead of the kernel's reads (default 2)
  --readers N         threads reading /dev/fuse; 0: the event loop reads it (default ${DEFAULT_READERS})
  --debug             log every failed request
`;

export async function run(argv: string[]): Promise<number> {
  const r = parseOptions(argv, {
    shuckle: { kind: 'string', default: process.env.EGGSFS_SHUCKLE ?? DEFAULT_SHUCKLE_URL },
    parity: { kind: 'string' },
    'span-bytes': { kind: 'int', min: 256, max: 64 << 20 },
    'timeout-ms': { kind: 'int', min: 1, max: 600_000 },
    'read-ahead-spans': { kind: 'int', min: 1, max: 64 },
    readers: { kind: 'int', min: 0, max: 64, default: DEFAULT_READERS },
    debug: { kind: 'flag' },
    memfs: { kind: 'flag' }, // the kernel-protocol test's in-memory filesystem
  }, { positionals: true, unknown: (a) => `unknown option ${a}\n\n${HELP}` });
  if (r.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const v = r.values;
  if (r.positionals.length > 1) throw new UsageError(`one mountpoint only (got "${r.positionals[0]}" and "${r.positionals[1]}")`);
  const mountpoint = r.positionals[0];
  if (!mountpoint) throw new UsageError(`missing <mountpoint>\n\n${HELP}`);
  const opts: ClientOptions = { shuckleUrl: v.shuckle };
  if (v.parity !== undefined) {
    try {
      opts.parity = parseParityOption(v.parity);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (v['span-bytes'] !== undefined) opts.spanBytes = v['span-bytes'];
  if (v['timeout-ms'] !== undefined) opts.timeoutMs = v['timeout-ms'];
  if (v['read-ahead-spans'] !== undefined) opts.readAheadSpans = v['read-ahead-spans'];
  if (v.debug) setLogLevel('debug');
  const readers = v.readers;
  const memfs = v.memfs;

  let mounted: { session: FuseSession; unmount(): Promise<void>; client?: { close(): Promise<void> } };
  try {
    if (memfs) {
      const session = await mountFuse(mountpoint, new MemFs(), { readers, subtype: 'memfs', fsname: 'memfs' });
      mounted = { session, unmount: () => session.unmount() };
    } else {
      mounted = await serveEggsfs(mountpoint, opts, { readers });
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such directory (create the mountpoint first)'
      : code === 'ENOTDIR' ? 'not a directory'
      : code === 'EACCES' || code === 'EPERM' ? 'permission denied (mounting needs root, or access to /dev/fuse)'
      : (err as Error).message;
    process.stderr.write(`eggsfs mount ${mountpoint}: ${why}\n`);
    return 1;
  }
  const m = mounted;
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${sig}: unmounting ${mountpoint}`);
    void m.unmount();
  };
  // Whatever goes wrong in the background (a bug, a peer misbehaving), the mount stays up: every
  // request is answered on its own, so log and carry on rather than leave a dead mount behind.
  process.on('uncaughtException', (err) => log.error(`unexpected error (the mount stays up): ${err.stack ?? err.message}`));
  process.on('unhandledRejection', (err) => log.error(`unexpected rejection (the mount stays up): ${(err as Error)?.stack ?? String(err)}`));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  announceReady('mount', { mountpoint, shuckle: opts.shuckleUrl, pid: process.pid, readerThreads: m.session.readerThreads });
  await m.session.closed;
  await m.client?.close();
  log.info(`${mountpoint} unmounted`);
  // The reader (event loop or threads) has ended (ENODEV); nothing else keeps the process.
  process.exit(0);
}
