// EggsFS mounted for real: `eggsfs mount` against a cluster started with `eggsfs run` on free
// ports. Every operation through shell commands and node:fs, the immutable-file rules (EROFS),
// `echo > file`, trees copied in and out byte-exact (cp -r, tar, rsync when installed: Debian
// package rsync), a reader that never sees a half-written file, and a cluster restart under the
// mount. The mount is always unmounted in teardown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';
import { startCluster, type TestCluster } from './helpers/cluster.js';
import { mountEggsfs } from '../src/fuse/index.js';
import { ENTRY_TTL_MS } from '../src/fuse/eggsfs.js';
import { until } from './helpers/until.js';

function sh(cmd: string, timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', cmd], { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function ok(cmd: string): Promise<string> {
  const r = await sh(cmd);
  assert.equal(r.code, 0, `${cmd}\n${r.stderr}`);
  return r.stdout;
}

/** Mounting needs root and /dev/fuse (CI has both). */
const NO_FUSE = !existsSync('/dev/fuse') || process.getuid?.() !== 0 ? 'needs root and /dev/fuse' : false;

function mounted(mnt: string): boolean {
  return readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** A local tree with files of assorted sizes (empty, inline-small, multi-span) and nesting. */
async function makeTree(root: string): Promise<void> {
  await mkdir(path.join(root, 'a', 'b', 'c'), { recursive: true });
  await mkdir(path.join(root, 'empty-dir'));
  await writeFile(path.join(root, 'empty'), '');
  await writeFile(path.join(root, 'a', 'small.txt'), 'small file\n');
  await writeFile(path.join(root, 'a', 'b', 'mid.bin'), randomBytes(300_000));
  await writeFile(path.join(root, 'a', 'b', 'c', 'big.bin'), randomBytes(3 * 1024 * 1024 + 17));
  for (let i = 0; i < 30; i++) await writeFile(path.join(root, 'a', `n${i}`), randomBytes(i * 997));
}

test('EggsFS through a real FUSE mount', { timeout: 600_000, skip: NO_FUSE }, async (t) => {
  const work = tempDir('fuse');
  const mnt = path.join(work.path, 'mnt');
  await mkdir(mnt);
  let cluster: TestCluster | undefined;
  const clusters: TestCluster[] = [];
  let mount: Service | undefined;
  t.after(async () => {
    if (mount) await mount.kill('SIGTERM');
    if (mounted(mnt)) await sh(`umount -l ${mnt}`);
    for (const c of clusters.reverse()) await c.destroy();
    work.remove();
  });
  cluster = await startCluster({ blockServices: 3 });
  clusters.push(cluster);
  const startMount = async () => {
    // Small spans, so that modest files have many and reads cross span boundaries.
    mount = startEggsfs(['mount', mnt, '--shuckle', cluster!.shuckleUrl, '--timeout-ms', '500', '--span-bytes', String(256 * 1024)]);
    await mount.waitFor(/^ready mount /);
  };
  await startMount();
  const m = (p: string) => path.join(mnt, p);

  await t.test('echo > file works and the file appears complete', async () => {
    await ok(`cd ${mnt} && echo blah > foobar`);
    assert.equal(await ok(`cat ${mnt}/foobar`), 'blah\n');
    assert.equal(await ok(`stat -c '%s %F' ${mnt}/foobar`), '5 regular file\n');
  });

  await t.test('shell: mkdir, ls, mv within and across directories, rm, rmdir, find, du, df', async () => {
    await ok(`cd ${mnt} && mkdir -p x/y z && printf one > x/f1 && printf two > x/y/f2`);
    assert.equal(await ok(`ls ${mnt}/x`), 'f1\ny\n');
    await ok(`mv ${mnt}/x/f1 ${mnt}/x/g1`); // same directory
    await ok(`mv ${mnt}/x/g1 ${mnt}/z/h1`); // across directories
    await ok(`mv ${mnt}/x/y ${mnt}/z/yy`); // a directory across directories
    assert.equal(await ok(`cat ${mnt}/z/h1 ${mnt}/z/yy/f2`), 'onetwo');
    assert.equal((await ok(`cd ${mnt} && find x z | sort`)).trim().split('\n').join(' '), 'x z z/h1 z/yy z/yy/f2');
    assert.match(await ok(`du -sb ${mnt}/z`), /^\d+\s/);
    const df = await ok(`df -B1 --output=size ${mnt} | tail -1`);
    assert.ok(Number(df.trim()) > 0, `df shows the block services' capacity: ${df}`);
    const rmdirFull = await sh(`rmdir ${mnt}/z/yy`);
    assert.notEqual(rmdirFull.code, 0);
    assert.match(rmdirFull.stderr, /not empty/i);
    await ok(`rm ${mnt}/z/yy/f2 && rmdir ${mnt}/z/yy && rm -r ${mnt}/z ${mnt}/x`);
    assert.ok(!existsSync(m('z')));
    const missing = await sh(`cat ${mnt}/nope`);
    assert.match(missing.stderr, /No such file or directory/);
  });

  await t.test('node:fs: writeFile, readFile, readdir, stat, mkdir, rename, unlink, rmdir', async () => {
    const data = randomBytes(2 * 1024 * 1024 + 5);
    await mkdir(m('nd'));
    await writeFile(m('nd/data'), data);
    assert.ok((await readFile(m('nd/data'))).equals(data));
    const st = await stat(m('nd/data'));
    assert.equal(st.size, data.length);
    assert.ok(st.isFile());
    assert.ok((await stat(m('nd'))).isDirectory());
    await rename(m('nd/data'), m('data2'));
    assert.deepEqual(await readdir(m('nd')), []);
    assert.ok((await readFile(m('data2'))).equals(data));
    await unlink(m('data2'));
    await rmdir(m('nd'));
    await assert.rejects(stat(m('nd')), { code: 'ENOENT' });
    // The writer itself sees its file while writing it (fstat and stat by name).
    const fh = await open(m('growing'), 'w');
    await fh.write(Buffer.from('12345'));
    assert.equal((await fh.stat()).size, 5);
    assert.equal((await stat(m('growing'))).size, 5);
    await fh.write(Buffer.from('678'));
    await fh.close();
    assert.equal(await readFile(m('growing'), 'utf8'), '12345678');
  });

  await t.test('reads at any offset, in any order, across spans, are byte-exact', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 333);
    await writeFile(m('spans'), data);
    await ok('echo 3 > /proc/sys/vm/drop_caches');
    const fh = await open(m('spans'), 'r');
    try {
      // Backwards, forwards, straddling span boundaries, past the end.
      const offsets = [4_000_000, 0, 262_000, 5 * 1024 * 1024, 1_000_000, 999_999, 3 * 262_144 - 7, data.length - 10, data.length + 5];
      for (let i = 0; i < 40; i++) offsets.push(Math.floor(Math.random() * data.length));
      for (const off of offsets) {
        const buf = Buffer.alloc(70_000);
        const { bytesRead } = await fh.read(buf, 0, buf.length, off);
        const want = data.subarray(off, off + buf.length);
        assert.equal(bytesRead, want.length, `bytes read at ${off}`);
        assert.ok(buf.subarray(0, bytesRead).equals(want), `bytes at ${off}`);
      }
      // Many reads in flight on one descriptor.
      const parallel = await Promise.all(
        Array.from({ length: 16 }, async (_, i) => {
          const b = Buffer.alloc(300_000);
          const off = (i * 317_000) % data.length;
          const { bytesRead } = await fh.read(b, 0, b.length, off);
          return b.subarray(0, bytesRead).equals(data.subarray(off, off + b.length));
        }),
      );
      assert.deepEqual(parallel, Array(16).fill(true));
    } finally {
      await fh.close();
    }
    assert.equal(md5(await readFile(m('spans'))), md5(data));
    await unlink(m('spans'));
  });

  await t.test('many files closed at once share a descriptor scan, and each is linked at its own last close', async () => {
    // One process creates 16 files and closes them all at once; the odd ones are also the stdout
    // of a child that outlives the close by a second, so they stay open. At its close, an even
    // file is linked (in the cluster, not only in the mount); an odd one only once its child exits.
    await mkdir(m('batch'));
    const script = `
      const { spawn } = require('child_process');
      const fsp = require('fs/promises');
      (async () => {
        const dir = process.argv[1];
        const fhs = await Promise.all(Array.from({ length: 16 }, (_, i) => fsp.open(dir + '/f' + i, 'wx')));
        await Promise.all(fhs.map((fh, i) => fh.write('file ' + i + '\\n')));
        const kids = fhs.filter((_, i) => i % 2 === 1).map((fh) => spawn('sleep', ['1.5'], { stdio: ['ignore', fh.fd, 'ignore'] }));
        await new Promise((r) => setTimeout(r, 300));
        await Promise.all(fhs.map((fh) => fh.close()));
        process.stdout.write('closed\\n');
        await Promise.all(kids.map((k) => new Promise((r) => k.on('exit', r))));
      })();`;
    const { EggsClient } = await import('../src/client/index.js');
    const client = await EggsClient.connect({ shuckleUrl: cluster!.shuckleUrl });
    try {
      const listed = async () => {
        const names: string[] = [];
        for await (const e of client.readDir('/batch')) names.push(e.name);
        return names.sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
      };
      const child = spawn(process.execPath, ['-e', script, m('batch')], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      await new Promise<void>((resolve, reject) => {
        child.stdout!.setEncoding('utf8').on('data', (d: string) => d.includes('closed') && resolve());
        void exited.then((code) => reject(new Error(`writer exited ${code} before closing`)));
      });
      const even = Array.from({ length: 8 }, (_, i) => `f${2 * i}`);
      assert.deepEqual(await listed(), even, 'at close: the files nobody else holds are linked, the others are not');
      assert.equal(await exited, 0);
      assert.deepEqual(await listed(), Array.from({ length: 16 }, (_, i) => `f${i}`));
      for (let i = 0; i < 16; i++) assert.equal(await readFile(m(`batch/f${i}`), 'utf8'), `file ${i}\n`);
    } finally {
      await client.close();
    }
    await ok(`rm -r ${mnt}/batch`);
  });

  await t.test('immutable files: rewriting, truncating, appending and writing out of order fail with EROFS', async () => {
    await writeFile(m('imm'), 'fixed');
    const append = await sh(`echo more >> ${mnt}/imm`);
    assert.match(append.stderr, /Read-only file system/);
    const overwrite = await sh(`echo new > ${mnt}/imm`);
    assert.match(overwrite.stderr, /Read-only file system/);
    const trunc = await sh(`truncate -s 0 ${mnt}/imm`);
    assert.match(trunc.stderr, /Read-only file system/);
    await assert.rejects(open(m('imm'), 'r+'), { code: 'EROFS' });
    assert.equal(await readFile(m('imm'), 'utf8'), 'fixed');
    // Writing a new file backwards is refused; forwards with a hole is fine (zeros).
    const fh = await open(m('ordered'), 'w');
    await fh.write(Buffer.from('abcdef'), 0, 6, 0);
    await assert.rejects(fh.write(Buffer.from('X'), 0, 1, 2), { code: 'EROFS' });
    await fh.close();
    const fh2 = await open(m('holes'), 'w');
    await fh2.write(Buffer.from('ab'), 0, 2, 0);
    await fh2.write(Buffer.from('cd'), 0, 2, 10);
    await fh2.close();
    assert.deepEqual(await readFile(m('holes')), Buffer.from('ab\0\0\0\0\0\0\0\0cd'));
    // Truncate to the current size (or growing while writing) is harmless.
    const fh3 = await open(m('trunc-ok'), 'w');
    await fh3.write(Buffer.from('xyz'));
    await fh3.truncate(3);
    await fh3.truncate(5);
    await fh3.close();
    assert.deepEqual(await readFile(m('trunc-ok')), Buffer.from('xyz\0\0'));
    // chmod and touch succeed without effect (tar and rsync do them).
    await ok(`chmod 600 ${mnt}/imm && touch ${mnt}/imm && touch -d 2020-01-02 ${mnt}/imm`);
    await rm(m('imm'));
  });

  await t.test('copy trees in and out byte-exact: cp -r, tar, rsync', async () => {
    const src = path.join(work.path, 'src');
    await makeTree(src);
    await ok(`cp -r ${src} ${mnt}/cp && diff -r ${src} ${mnt}/cp`);
    await ok(`mkdir ${mnt}/tar && tar -C ${src} -cf - . | tar -C ${mnt}/tar -xf - && diff -r ${src} ${mnt}/tar`);
    await ok(`cp -r ${mnt}/cp ${work.path}/out && diff -r ${src} ${work.path}/out`);
    await ok(`tar -C ${mnt}/tar -cf - . | (mkdir ${work.path}/out2 && tar -C ${work.path}/out2 -xf -) && diff -r ${src} ${work.path}/out2`);
    if ((await sh('command -v rsync')).code === 0) {
      await ok(`rsync -a ${src}/ ${mnt}/rs/ && diff -r ${src} ${mnt}/rs`);
      // A changed file is replaced (rsync writes a temp file and renames it over the old one).
      await writeFile(path.join(src, 'a', 'small.txt'), 'changed\n');
      await ok(`rsync -a ${src}/ ${mnt}/rs/ && diff -r ${src} ${mnt}/rs`);
      await ok(`rsync -a ${mnt}/rs/ ${work.path}/out3/ && diff -r ${src} ${work.path}/out3`);
    } else {
      t.diagnostic('rsync not installed (apt-get install -y rsync): rsync part skipped');
    }
    await ok(`rm -r ${mnt}/cp ${mnt}/tar ${mnt}/rs 2>/dev/null; true`);
  });

  await t.test('a reader never sees a half-written file', async () => {
    const payload = randomBytes(256 * 1024);
    const want = md5(payload);
    // The writer (another process) writes 64 KiB pieces with pauses, so it is open for a while.
    const writerScript = `
      const fs = require('fs');
      const data = fs.readFileSync(process.argv[2]);
      const fd = fs.openSync(process.argv[1], 'w');
      let off = 0;
      const step = () => {
        if (off >= data.length) { fs.closeSync(fd); return; }
        fs.writeSync(fd, data, off, 65536, off); off += 65536;
        setTimeout(step, 150);
      };
      step();`;
    const target = m('watched');
    const payloadFile = path.join(work.path, 'payload');
    await writeFile(payloadFile, payload);
    const writer = spawn(process.execPath, ['-e', writerScript, target, payloadFile], { stdio: 'ignore' });
    const writerDone = new Promise<void>((resolve) => writer.on('exit', () => resolve()));
    let sawMissing = 0;
    let sawComplete = 0;
    let done = false;
    void writerDone.then(() => (done = true));
    while (!done || sawComplete === 0) {
      // List first, then read: a name that was listed must read back whole (the file can only
      // become complete between the two, never the other way round).
      const r = await sh(`ls ${mnt} | grep -c '^watched$'; cat ${target} 2>/dev/null | md5sum`);
      const [listed, sum] = r.stdout.trim().split('\n');
      const inListing = Number(listed) > 0;
      const emptySum = md5(Buffer.alloc(0));
      const s = sum!.split(' ')[0];
      if (inListing) assert.equal(s, want, 'listed while incomplete');
      if (s === want) sawComplete++;
      else {
        assert.equal(s, emptySum, 'a reader got part of the file');
        sawMissing++;
      }
      if (sawComplete > 0 && done) break;
      await new Promise((r2) => setTimeout(r2, 50));
    }
    assert.ok(sawMissing > 0, 'the file was absent while being written');
    assert.ok(sawComplete > 0, 'and complete afterwards');
  });

  await t.test('mountEggsfs (for eggsfs run --mount): a second mount sees the first one\'s files; kill -9 leaves a mount the next driver clears', async () => {
    const mnt2 = path.join(work.path, 'mnt2');
    await mkdir(mnt2);
    await writeFile(m('shared'), 'from mount 1');
    const handle = await mountEggsfs(mnt2, { shuckleUrl: cluster!.shuckleUrl });
    try {
      assert.equal(await readFile(path.join(mnt2, 'shared'), 'utf8'), 'from mount 1');
      await writeFile(path.join(mnt2, 'back'), 'from mount 2');
      // Another client's new name may take up to ENTRY_TTL_MS to show (mount 1 may answer from a
      // directory listing it fetched earlier: src/fuse/dir-cache.ts); slack for a busy machine.
      await until('mount 2\'s file through mount 1', () => readFile(m('back'), 'utf8').catch(() => undefined), ENTRY_TTL_MS + 2_000);
      assert.equal(await readFile(m('back'), 'utf8'), 'from mount 2');
      handle.process.kill('SIGKILL');
      await new Promise((r) => handle.process.once('exit', r));
      assert.ok(mounted(mnt2), 'a killed driver leaves its mount');
      const again = await mountEggsfs(mnt2, { shuckleUrl: cluster!.shuckleUrl });
      assert.equal(await readFile(path.join(mnt2, 'back'), 'utf8'), 'from mount 2');
      await again.unmount();
    } finally {
      await handle.unmount();
    }
    assert.ok(!mounted(mnt2));
    await unlink(m('shared'));
    await unlink(m('back'));
  });

  await t.test('a cluster restart under the mount: requests fail with EIO meanwhile, then work again', async () => {
    const data = randomBytes(500_000);
    await writeFile(m('before-restart'), data);
    await cluster!.stop();
    const t0 = Date.now();
    const during = await sh(`ls ${mnt}/no-such-dir-${Date.now()}`, 60_000);
    assert.notEqual(during.code, 0);
    assert.match(during.stderr, /Input\/output error|No such file/);
    assert.ok(Date.now() - t0 < 50_000, 'failed in bounded time, did not hang');
    assert.ok(mounted(mnt), 'the mount survived');
    cluster = await startCluster({ dir: cluster!.dir, ports: cluster!.ports, blockServices: 3 });
    clusters.push(cluster);
    // The mount recovers without remounting.
    let last = '';
    for (let i = 0; i < 60; i++) {
      const r = await sh(`echo after > ${mnt}/after-restart-${i} && cat ${mnt}/after-restart-${i}`, 60_000);
      if (r.code === 0 && r.stdout === 'after\n') {
        last = 'ok';
        break;
      }
      last = r.stderr;
      await new Promise((r2) => setTimeout(r2, 500));
    }
    assert.equal(last, 'ok');
    assert.ok((await readFile(m('before-restart'))).equals(data));
  });

  await t.test('SIGTERM unmounts cleanly', async () => {
    assert.equal(await mount!.kill('SIGTERM'), 0);
    mount = undefined;
    assert.ok(!mounted(mnt));
  });
});
