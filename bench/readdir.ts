// Listing a large directory through the client library, against a real shard process: the
// page-by-page READ_DIR walk the spec describes (the baseline, what the client did before),
// the walk over parallel hash ranges (src/client/read-dir.ts), and READ_DIR_WITH_ATTRS over the
// same ranges (every file's size and mtime in the listing), which replaces a listing plus one
// STAT per name (also timed, 64 STATs in flight).
//
//   node dist/bench/readdir.js [--names 10000] [--reps 5]
import { directoryWithFiles, startShards } from '../test/helpers/shard-proc.js';
import { inParallel } from '../test/helpers/pool.js';
import { readDirBatches, type FetchPage } from '../src/client/read-dir.js';
import type { EdgeT, EdgeWithAttrsT } from '../src/proto/messages.js';
import { AS_OF_NOW } from '../src/proto/time.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[a.length >> 1]! : (a[a.length / 2 - 1]! + a[a.length / 2]!) / 2;
}

async function main(): Promise<void> {
  const names = arg('names', 10_000);
  const reps = arg('reps', 5);
  const fx = await startShards();
  try {
    const dirId = await directoryWithFiles(fx, 4242n, Array.from({ length: names }, (_, i) => `f${String(i).padStart(6, '0')}`));
    const readDir: FetchPage<EdgeT> = (startHash) => fx.req('READ_DIR', { dirId, startHash, asOfTime: AS_OF_NOW });
    const withAttrs: FetchPage<EdgeWithAttrsT> = (startHash) => fx.req('READ_DIR_WITH_ATTRS', { dirId, startHash, asOfTime: AS_OF_NOW });
    const timed = async (fn: () => Promise<number>): Promise<number> => {
      const t0 = process.hrtime.bigint();
      const n = await fn();
      if (n !== names) throw new Error(`listed ${n} of ${names}`);
      return names / (Number(process.hrtime.bigint() - t0) / 1e9);
    };
    const walk = async () => {
      let n = 0;
      for (let h = 0n; ; ) {
        const r = await readDir(h);
        n += r.results.length;
        if (r.nextHash === 0n) return n;
        h = r.nextHash;
      }
    };
    const ranges = async <E extends EdgeT>(page: FetchPage<E>) => {
      let n = 0;
      for await (const b of readDirBatches(page)) n += b.length;
      return n;
    };
    const listThenStat = async () => {
      const ids: bigint[] = [];
      for await (const b of readDirBatches(readDir)) for (const e of b) ids.push(e.targetId);
      await inParallel(ids.length, 64, async (i) => void (await fx.req('STAT', { id: ids[i]! })));
      return ids.length;
    };
    const figures = { walk: [] as number[], ranges: [] as number[], attrs: [] as number[], statEach: [] as number[] };
    for (let r = 0; r < reps; r++) {
      // Alternating, so that each figure sits next to its baseline while the machine's load swings.
      figures.walk.push(await timed(walk));
      figures.ranges.push(await timed(() => ranges(readDir)));
      figures.attrs.push(await timed(() => ranges(withAttrs)));
      figures.statEach.push(await timed(listThenStat));
    }
    const fig = (xs: number[]) => `${Math.round(median(xs)).toLocaleString('en-US')} [${Math.round(Math.min(...xs)).toLocaleString('en-US')}-${Math.round(Math.max(...xs)).toLocaleString('en-US')}]`;
    const ratio = (a: number[], b: number[]) => (median(a) / median(b)).toFixed(2);
    console.log(`listing ${names} names in one directory on one shard, names/s, median [range] of ${reps} alternating runs`);
    console.log(`| listing | names/s | ratio |`);
    console.log(`|---|---|---|`);
    console.log(`| READ_DIR page by page (baseline) | ${fig(figures.walk)} | 1.00 |`);
    console.log(`| READ_DIR over parallel hash ranges | ${fig(figures.ranges)} | ${ratio(figures.ranges, figures.walk)} |`);
    console.log(`| names with sizes: READ_DIR_WITH_ATTRS over ranges | ${fig(figures.attrs)} | ${ratio(figures.attrs, figures.statEach)} of listing + a STAT each |`);
    console.log(`| names with sizes: listing + a STAT each, 64 in flight (baseline) | ${fig(figures.statEach)} | 1.00 |`);
  } finally {
    await fx.stop();
  }
}

await main();
