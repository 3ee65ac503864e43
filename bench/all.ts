// `npm run bench`: every benchmark in turn with its default (short) sizes. Each prints its figures,
// the baseline it measured in the same run, and the ratio; pass a name to run only some of them.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCHES = ['rs', 'shard', 'readdir', 'cdc', 'blocks', 'redundancy', 'e2e', 'fuse'] as const;
const here = path.dirname(fileURLToPath(import.meta.url));

const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !(BENCHES as readonly string[]).includes(w));
if (unknown.length) {
  process.stderr.write(`unknown benchmark ${unknown.join(', ')}; choose from ${BENCHES.join(', ')}\n`);
  process.exit(2);
}
let failed = 0;
for (const name of wanted.length ? wanted : BENCHES) {
  process.stdout.write(`\n=== bench/${name}.ts ===\n`);
  const r = spawnSync(process.execPath, [path.join(here, `${name}.js`)], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    process.stdout.write(`bench/${name}.ts exited with ${r.status ?? r.signal}\n`);
  }
}
process.exit(failed ? 1 : 0);
