// `eggsfs fsck`: check the namespace invariants of every shard (src/client/fsck.ts). Prints each
// problem in words, a summary, and exits 1 when there is any problem, 0 when clean.
import { fetchShards } from '../client/shuckle.js';
import { fsck, formatProblem } from '../client/fsck.js';
import type { Address } from '../client/transport.js';
import { SHARD_COUNT } from '../proto/ids.js';
import { DEFAULT_HOST, DEFAULT_SHUCKLE_URL, SHARD_BASE_PORT } from '../proto/ports.js';
import { UsageError, parseOptions, parseRange } from '../util/args.js';

const USAGE = `usage: eggsfs fsck [--shuckle URL | --shard-host H --shard-base-port P] [--shards 0-255]

Reads every shard and checks: every directory reachable from / exactly once; parent pointers
matching the entries; no locked entries (run it while the CDC is idle); no dangling or doubled
entries; every file owned at most once. Exit code 0 = clean, 1 = problems found.

  --shuckle URL           find the shards through shuckle (default $EGGSFS_SHUCKLE or ${DEFAULT_SHUCKLE_URL})
  --shard-host H          talk to shards directly at H (default ${DEFAULT_HOST}) ...
  --shard-base-port P     ... shard s at port P + s (default ${SHARD_BASE_PORT})
  --shards RANGE          only these shards, e.g. 0-255 or 0,3-5 (default all; a subset skips the
                          whole-namespace checks)
  --timeout-ms MS         wait per request before resending (default 1000)
  --no-lock-check         do not probe edges for locks
`;

export async function run(argv: string[]): Promise<number> {
  const r = parseOptions(argv, {
    shuckle: { kind: 'string' },
    'shard-host': { kind: 'string' },
    'shard-base-port': { kind: 'int', min: 1, max: 65535 - SHARD_COUNT + 1 },
    shards: { kind: 'string', default: `0-${SHARD_COUNT - 1}` },
    'timeout-ms': { kind: 'int', min: 1, max: 600_000, default: 1000 },
    'no-lock-check': { kind: 'flag' },
  }, { unknown: (a) => `unknown option ${a} (see eggsfs fsck --help)` });
  if (r.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const values = r.values;
  const shards = parseRange(values.shards, 0, SHARD_COUNT - 1);
  const timeoutMs = values['timeout-ms'];
  let shardAddress: (s: number) => Address;
  if (values['shard-host'] !== undefined || values['shard-base-port'] !== undefined) {
    if (values.shuckle) throw new UsageError('give either --shuckle or --shard-host/--shard-base-port, not both');
    const host = values['shard-host'] ?? DEFAULT_HOST;
    const base = values['shard-base-port'] ?? SHARD_BASE_PORT;
    shardAddress = (s) => ({ host, port: base + s });
  } else {
    const url = values.shuckle ?? process.env.EGGSFS_SHUCKLE ?? DEFAULT_SHUCKLE_URL;
    const entries = await fetchShards({ url });
    const m = new Map(entries.map((e) => [e.id, { host: e.ip, port: e.port }]));
    const missing = shards.filter((s) => !m.has(s));
    if (missing.length > 0) {
      process.stderr.write(`eggsfs fsck: shuckle at ${url} knows no address for shard(s) ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''}\n`);
      return 1;
    }
    shardAddress = (s) => m.get(s)!;
  }
  const report = await fsck({ shardAddress, shards, timeoutMs, checkLocks: !values['no-lock-check'] });
  for (const p of report.problems) process.stdout.write(formatProblem(p) + '\n');
  const summary =
    `${report.shardsRead}/${shards.length} shards read: ${report.liveDirectories} live directories ` +
    `(${report.directories - report.liveDirectories} removed), ${report.files} files (${report.transientFiles} transient), ` +
    `${report.currentEdges} current and ${report.snapshotEdges} snapshot edges`;
  if (report.problems.length === 0) {
    process.stdout.write(`ok: ${summary}\n`);
    return 0;
  }
  process.stdout.write(`${report.problems.length} problem(s); ${summary}\n`);
  return 1;
}
