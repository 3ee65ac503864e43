#!/usr/bin/env node
// Thin launcher: the CLI itself is compiled TypeScript under dist/.
import('../dist/src/cli/main.js').then((m) => m.main(process.argv.slice(2))).catch((err) => {
  process.stderr.write(`eggsfs: ${err && err.message ? err.message : String(err)}\n`);
  process.exit(1);
});
