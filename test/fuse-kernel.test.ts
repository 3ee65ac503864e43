// The FUSE kernel-protocol layer, mounted for real on /dev/fuse over the tiny in-memory filesystem
// (`eggsfs mount --memfs`): every request kind the kernel sends for ordinary shell commands, big
// reads and writes, directories larger than one readdir buffer, many requests at once, and a clean
// unmount on SIGTERM; with the device read on the event loop (the default) and by reader threads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile, readdir, stat, mkdir, rename, unlink, rmdir, readlink, symlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';

function sh(cmd: string, timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', cmd], { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Mounting needs root and /dev/fuse (CI has both). */
const NO_FUSE = !existsSync('/dev/fuse') || process.getuid?.() !== 0 ? 'needs root and /dev/fuse' : false;

function mounted(mnt: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);
}

const READER_MODES: [string, string[], number][] = [
  ['event-loop reader', [], 0],
  ['4 reader threads', ['--readers', '4'], 4],
];

for (const [mode, readerArgs, readerThreads] of READER_MODES) test(`kernel protocol over an in-memory filesystem (${mode})`, { timeout: 120_000, skip: NO_FUSE }, async (t) => {
  const dir = tempDir('fuse-kernel');
  const mnt = path.join(dir.path, 'mnt');
  await mkdir(mnt);
  let svc: Service | undefined;
  t.after(async () => {
    if (svc) await svc.kill('SIGTERM');
    if (mounted(mnt)) await sh(`umount -l ${mnt}`);
    dir.remove();
  });
  svc = startEggsfs(['mount', mnt, '--memfs', ...readerArgs]);
  const ready = await svc.waitFor(/^ready mount /);
  assert.ok(mounted(mnt), 'mounted');
  assert.equal((JSON.parse(ready.replace(/^ready mount /, '')) as { readerThreads: number }).readerThreads, readerThreads, ready);

  await t.test('files: create, write, read, stat', async () => {
    const r = await sh(`cd ${mnt} && echo hello > a && cat a && stat -c '%s %F' a`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello\n6 regular file\n');
  });

  await t.test('big write and read are byte-exact (1 MiB requests)', async () => {
    const data = randomBytes(9 * 1024 * 1024 + 123);
    await writeFile(path.join(mnt, 'big'), data);
    const back = await readFile(path.join(mnt, 'big'));
    assert.equal(back.length, data.length);
    assert.ok(back.equals(data));
    const r = await sh(`dd if=${mnt}/big bs=1M 2>/dev/null | md5sum`);
    const { createHash } = await import('node:crypto');
    assert.equal(r.stdout.split(' ')[0], createHash('md5').update(data).digest('hex'));
  });

  await t.test('directories: mkdir, a listing bigger than one readdir buffer, rename, unlink, rmdir', async () => {
    await mkdir(path.join(mnt, 'd'));
    const names: string[] = [];
    for (let i = 0; i < 400; i++) names.push(`file-with-a-longish-name-${String(i).padStart(4, '0')}`);
    await Promise.all(names.map((n) => writeFile(path.join(mnt, 'd', n), n)));
    const listed = (await readdir(path.join(mnt, 'd'))).sort();
    assert.deepEqual(listed, names);
    const ls = await sh(`ls -la ${mnt}/d | wc -l`);
    assert.equal(Number(ls.stdout.trim()), 400 + 3); // total, ., .. and the files
    await rename(path.join(mnt, 'd', names[0]!), path.join(mnt, 'moved'));
    assert.equal(await readFile(path.join(mnt, 'moved'), 'utf8'), names[0]);
    for (const n of names.slice(1)) await unlink(path.join(mnt, 'd', n));
    await rmdir(path.join(mnt, 'd'));
    await assert.rejects(stat(path.join(mnt, 'd')), { code: 'ENOENT' });
  });

  await t.test('errors come back as errnos', async () => {
    await assert.rejects(readFile(path.join(mnt, 'nope')), { code: 'ENOENT' });
    await mkdir(path.join(mnt, 'full'));
    await writeFile(path.join(mnt, 'full', 'x'), 'x');
    await assert.rejects(rmdir(path.join(mnt, 'full')), { code: 'ENOTEMPTY' });
    await assert.rejects(mkdir(path.join(mnt, 'full')), { code: 'EEXIST' });
    await assert.rejects(sh(`ln ${mnt}/a ${mnt}/hard`).then((r) => (r.code === 0 ? undefined : Promise.reject(new Error(r.stderr)))), /Operation not permitted/);
  });

  await t.test('symlinks and statfs', async () => {
    await symlink('a', path.join(mnt, 'link'));
    assert.equal(await readlink(path.join(mnt, 'link')), 'a');
    assert.equal(await readFile(path.join(mnt, 'link'), 'utf8'), 'hello\n');
    const r = await sh(`stat -f -c '%b %S' ${mnt}`);
    assert.equal(r.stdout.trim(), '1000 4096');
  });

  await t.test('many requests at once', async () => {
    const r = await sh(`cd ${mnt} && for i in $(seq 1 32); do (head -c 300000 /dev/urandom > p$i && cat p$i | wc -c) & done; wait`);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n').map(Number), Array(32).fill(300000));
  });

  await t.test('SIGTERM unmounts and exits 0', async () => {
    const code = await svc!.kill('SIGTERM');
    assert.equal(code, 0);
    assert.ok(!mounted(mnt), 'no longer mounted');
    assert.doesNotMatch(svc!.stderr(), /Warning|reader ended|failed/, 'no warnings from the reader');
    svc = undefined;
  });
});
