// `eggsfs run --mount MNT`: the cluster and a FUSE mount in one command; what is written through
// the mount is there for the CLI, and stopping run unmounts before the services stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { startCluster } from './helpers/cluster.js';
import { runEggsfs, tempDir } from './helpers/proc.js';

const NO_FUSE = !existsSync('/dev/fuse') || process.getuid?.() !== 0 ? 'needs root and /dev/fuse' : false;

function mounted(mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === mnt);
}

test('run --mount serves the cluster through FUSE and unmounts on SIGTERM', { timeout: 180_000, skip: NO_FUSE }, async (t) => {
  const tmp = tempDir('run-mount');
  const mnt = path.join(tmp.path, 'mnt');
  mkdirSync(mnt);
  const cluster = await startCluster({ dir: path.join(tmp.path, 'data'), blockServices: 3, extraArgs: ['--mount', mnt] });
  t.after(async () => {
    await cluster.stop();
    if (mounted(mnt)) execFileSync('umount', ['-l', mnt]);
    tmp.remove();
  });
  assert.ok(mounted(mnt), 'mounted once run says ready');
  assert.match(cluster.service.stdout(), new RegExp(`mount +${mnt.replace(/[/.]/g, '\\$&')}`));

  mkdirSync(path.join(mnt, 'dir'));
  writeFileSync(path.join(mnt, 'dir', 'hello.txt'), 'hello through the mount\n');
  const cat = await runEggsfs(['cat', '/dir/hello.txt'], { env: cluster.env });
  assert.equal(cat.code, 0, cat.stderr);
  assert.equal(cat.stdout, 'hello through the mount\n');

  const echo = await runEggsfs(['echo_into', '/from-cli', 'written by the CLI'], { env: cluster.env });
  assert.equal(echo.code, 0, echo.stderr);
  assert.equal(readFileSync(path.join(mnt, 'from-cli'), 'utf8'), 'written by the CLI\n');

  assert.equal(await cluster.stop(), 0);
  assert.ok(!mounted(mnt), 'unmounted when run stopped');
});
