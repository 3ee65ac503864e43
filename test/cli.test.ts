// The `eggsfs` client commands as a new user meets them: the original README's examples, every
// command and its --help, and every error a user can provoke, each a single line naming the path
// and the cause with exit status 1. One cluster (`eggsfs run` on free ports) serves the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLIENT_COMMANDS } from '../src/cli/commands.js';
import { EggsClient } from '../src/client/index.js';
import { startCluster } from './helpers/cluster.js';
import { freeTcpRange } from './helpers/ports.js';
import { EGGSFS_BIN, runEggsfs, tempDir } from './helpers/proc.js';

test('eggsfs client commands', { timeout: 300_000 }, async (t) => {
  const cluster = await startCluster({ blockServices: 3 });
  t.after(() => cluster.destroy());
  const local = tempDir('cli-local');
  t.after(() => local.remove());
  const env = cluster.env;
  const ok = async (args: string[], input?: string | Buffer) => {
    const r = await runEggsfs(args, { env, input });
    assert.equal(r.code, 0, `eggsfs ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };
  /** A failing command: exit status 1 and exactly this one line on stderr. */
  const fails = async (args: string[], line: string | RegExp, code = 1) => {
    const r = await runEggsfs(args, { env });
    assert.equal(r.code, code, `eggsfs ${args.join(' ')} should fail (stdout ${r.stdout}, stderr ${r.stderr})`);
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, `one line of error expected, got:\n${r.stderr}`);
    if (typeof line === 'string') assert.equal(lines[0], line);
    else assert.match(lines[0]!, line);
  };

  await t.test('every command has --help', async () => {
    for (const name of Object.keys(CLIENT_COMMANDS)) {
      if (name === 'fsck') continue; // the CDC engineer's module, tested there
      const r = await runEggsfs([name, '--help'], { env });
      assert.equal(r.code, 0, `${name} --help: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^usage: eggsfs ${name}\\b`));
      assert.match(r.stdout, /--shuckle/);
    }
  });

  await t.test("the original README's examples work as written", async () => {
    assert.equal(await ok(['ls', '/']), '');
    const src = path.join(local.path, 'cdc.py');
    const content = randomBytes(5000).toString('base64');
    writeFileSync(src, content);
    await ok(['copy_into', '/cdc.py', src]);
    assert.equal(await ok(['cat', '/cdc.py']), content);
    await ok(['mkdir', '/blah']);
    await ok(['echo_into', '/blah/baz', 'hello']);
    assert.equal(await ok(['cat', '/blah/baz']), 'hello\n');
    assert.deepEqual((await ok(['ls', '/'])).split('\n').filter(Boolean).sort(), ['blah/', 'cdc.py']);
    assert.deepEqual((await ok(['ls', '/blah'])).split('\n').filter(Boolean), ['baz']);
  });

  await t.test('stat, lookup, ls -l', async () => {
    const s = await ok(['stat', '/cdc.py']);
    assert.match(s, /^id: 0x4[0-9a-f]{15}\ntype: file\nshard: \d+\nsize: 6668\nmtime: 20\d\d-/);
    const d = await ok(['stat', '/blah']);
    assert.match(d, /type: directory\n.*\nowner: 0x2000000000000000\n/s);
    const l = await ok(['lookup', '/blah']);
    assert.match(l, /^0x2[0-9a-f]{15} directory shard \d+\n$/);
    const root = await ok(['lookup', '/']);
    assert.equal(root, '0x2000000000000000 directory shard 0\n');
    const long = await ok(['ls', '-l', '/']);
    assert.match(long, /^file +6668 20\S+ 0x4[0-9a-f]{15} cdc\.py$/m);
    assert.match(long, /^directory +0 20\S+ 0x2[0-9a-f]{15} blah\/$/m);
  });

  await t.test('echo_into -n, copy_into from stdin, copy_out to a file and to stdout', async () => {
    await ok(['echo_into', '-n', '/plain', 'no newline']);
    assert.equal(await ok(['cat', '/plain']), 'no newline');
    const data = randomBytes((9 << 20) + 17); // a few spans' worth at a small span size
    await ok(['copy_into', '--span-bytes', String(4 << 20), '/from-stdin', '-'], data);
    const out = path.join(local.path, 'out.bin');
    await ok(['copy_out', '/from-stdin', out]);
    assert.ok(readFileSync(out).equals(data));
    await ok(['copy_out', '/from-stdin', local.path]); // into a directory: under its own name
    assert.ok(readFileSync(path.join(local.path, 'from-stdin')).equals(data));
    const r = spawnSync(process.execPath, [EGGSFS_BIN, 'copy_out', '/from-stdin', '-'], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
    assert.equal(r.status, 0);
    assert.ok(r.stdout.equals(data));
    assert.equal(r.stderr.length, 0, 'no progress bar when not on a terminal');
    await ok(['copy_into', '--parity', '2+1', '/rs', out]);
    assert.ok(Buffer.from(await ok(['cat', '/rs']), 'latin1').length > 0);
    const rs = spawnSync(process.execPath, [EGGSFS_BIN, 'cat', '/rs'], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
    assert.ok(rs.stdout.equals(data));
    // A second copy_into onto the same name replaces the file, as cp does.
    await ok(['echo_into', '/plain', 'replaced']);
    assert.equal(await ok(['cat', '/plain']), 'replaced\n');
  });

  await t.test('a progress bar on a terminal', async () => {
    const src = path.join(local.path, 'progress.bin');
    writeFileSync(src, randomBytes(24 << 20));
    // `script` gives the command a pseudo-terminal, as an interactive shell would.
    const cmd = `${process.execPath} ${EGGSFS_BIN} copy_into /progress.bin ${src}`;
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /copy_into \/progress\.bin \[#+\.*\] +\d+% .*\/s/);
    assert.match(r.stdout, /100%/);
  });

  await t.test('mv, rm, rmdir and the original rm_file / rm_dir', async () => {
    await ok(['mkdir', '/m']);
    await ok(['mkdir', '/m/inner']);
    await ok(['echo_into', '/m/f', 'x']);
    await ok(['mv', '/m/f', '/m/g']); // same directory
    await ok(['mv', '/m/g', '/m/inner/h']); // across directories (CDC)
    await ok(['mv', '/m/inner', '/moved']); // a directory across directories
    await ok(['mkdir', '/target']);
    await ok(['mv', '/moved/h', '/target']); // into an existing directory
    assert.equal(await ok(['cat', '/target/h']), 'x\n');
    assert.deepEqual((await ok(['ls', '/m'])).split('\n').filter(Boolean), []);
    await ok(['rm', '/target/h']);
    await ok(['rmdir', '/target']);
    await ok(['echo_into', '/moved/z', 'z']);
    await ok(['rm_file', '/moved/z']);
    await ok(['rm_dir', '/moved']);
    await ok(['rmdir', '/m']);
    await ok(['mkdir', '-p', '/p/q/r']);
    await ok(['mkdir', '-p', '/p/q/r']);
    assert.match(await ok(['stat', '/p/q/r']), /type: directory/);
  });

  await t.test('direct addressing without shuckle (--shards, --cdc)', async () => {
    const direct = ['--shards', `127.0.0.1:${cluster.ports.shardBasePort}`, '--cdc', `127.0.0.1:${cluster.ports.cdcPort}`];
    const r = await runEggsfs(['mkdir', ...direct, '/direct'], { env: { EGGSFS_SHUCKLE: 'http://127.0.0.1:1' } });
    assert.equal(r.code, 0, r.stderr);
    const ls = await runEggsfs(['ls', ...direct, '/'], { env: { EGGSFS_SHUCKLE: 'http://127.0.0.1:1' } });
    assert.match(ls.stdout, /^direct\/$/m);
    await ok(['rmdir', '/direct']);
  });

  await t.test('transient_files lists a file being written', async () => {
    const c = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl });
    t.after(() => c.close());
    const w = c.createFile(await c.resolve('/'), 'in-progress');
    await w.write(randomBytes(1000));
    // Not closed: still transient. Its id appears once CONSTRUCT_FILE answered.
    const out = await ok(['transient_files']);
    assert.match(out, /^0x4[0-9a-f]{15} file shard \d+ deadline 20/m);
    await w.abort();
  });

  await t.test('every error a user can provoke is one line with the path and the cause', async () => {
    await fails(['cat', '/nope'], 'cat /nope: no such file or directory');
    await fails(['ls', '/nope/deeper'], 'ls /nope/deeper: no such directory /nope');
    await fails(['mkdir', '/a/b'], 'mkdir /a/b: no such directory /a');
    await fails(['mkdir', '/blah'], 'mkdir /blah: name exists');
    await fails(['mkdir', '/cdc.py'], 'mkdir /cdc.py: name exists');
    await fails(['rmdir', '/blah'], 'rmdir /blah: directory not empty');
    await fails(['rmdir', '/cdc.py'], 'rmdir /cdc.py: not a directory');
    await fails(['rm', '/blah'], 'rm /blah: is a directory');
    await fails(['rm', '/nope'], 'rm /nope: no such file or directory');
    await fails(['cat', '/blah'], 'cat /blah: is a directory');
    await fails(['ls', '/cdc.py'], 'ls /cdc.py: not a directory');
    await fails(['echo_into', '/cdc.py/x', 'y'], 'echo_into /cdc.py/x: /cdc.py is not a directory');
    await fails(['echo_into', '/blah', 'y'], 'echo_into /blah: name exists');
    await fails(['stat', '/cdc.py/x'], 'stat /cdc.py/x: /cdc.py is not a directory');
    await fails(['mv', '/nope', '/x'], 'mv /nope: no such file or directory');
    await fails(['mv', '/blah', '/blah/inside'], /^mv \/blah: cannot move a directory into itself/);
    await fails(['mv', '/cdc.py', '/blah/baz/x'], 'mv /blah/baz/x: /blah/baz is not a directory');
    const long = 'n'.repeat(256);
    await fails(['mkdir', `/${long}`], `mkdir /${long}: name too long (256 bytes, the limit is 255)`);
    await fails(['echo_into', `/blah/${long}`, 'y'], /name too long \(256 bytes, the limit is 255\)$/);
    await fails(['cat', 'relative/path'], 'cat relative/path: path must be absolute (start with /)');
    await fails(['mkdir', 'blah2'], 'mkdir blah2: path must be absolute (start with /)');
    await fails(['copy_into', '/x', path.join(local.path, 'missing')], `copy_into /x: cannot read ${path.join(local.path, 'missing')}: no such file or directory`);
    await fails(['copy_into', '/x', local.path], `copy_into /x: ${local.path} is a directory`);
    await fails(['copy_out', '/nope', path.join(local.path, 'o')], 'copy_out /nope: no such file or directory');
    await fails(['copy_out', '/cdc.py', '/nonexistent-dir/o'], 'copy_out /cdc.py: cannot write /nonexistent-dir/o: no such file or directory');
    // Usage mistakes: status 2 and a pointer to --help.
    await fails(['cat'], 'eggsfs cat: missing PATH', 2);
    await fails(['ls', '--bogus'], 'eggsfs ls: unknown option --bogus (see eggsfs ls --help)', 2);
    await fails(['copy_into', '--parity', '0+1', '/x', '-'], /^eggsfs copy_into: --parity: /, 2);
    // Nothing listening where the cluster should be.
    const dead = await freeTcpRange(1);
    const r = await runEggsfs(['ls', '/'], { env: { EGGSFS_SHUCKLE: `http://127.0.0.1:${dead}` } });
    assert.equal(r.code, 1);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1);
    assert.match(r.stderr, new RegExp(`^no cluster running: shuckle at http://127\\.0\\.0\\.1:${dead} is unreachable \\(ECONNREFUSED\\)`));
    const r2 = await runEggsfs(['ls', '--shuckle', `http://127.0.0.1:${dead}`, '/'], { env: {} });
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /^no cluster running/);
  });

  await t.test('a directory of many files is listed completely (many READ_DIR pages)', async () => {
    const c = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl });
    t.after(() => c.close());
    await c.mkdir('/many');
    const dirId = await c.resolve('/many');
    const FILES = 1500;
    const names = [...Array(FILES).keys()].map((i) => `file-${String(i).padStart(5, '0')}-${'x'.repeat(90)}`);
    const PARALLEL = 64;
    let next = 0;
    await Promise.all(
      [...Array(PARALLEL)].map(async () => {
        while (next < names.length) {
          const w = c.createFile(dirId, names[next++]!);
          await w.close();
        }
      }),
    );
    const listed = (await ok(['ls', '/many'])).split('\n').filter(Boolean);
    assert.equal(listed.length, FILES);
    assert.deepEqual([...listed].sort(), [...names].sort());
    // At ~125 bytes an entry, a 1472-byte datagram holds about 11: well over 100 pages.
    let viaLib = 0;
    for await (const _ of c.readDir('/many')) viaLib++;
    assert.equal(viaLib, FILES);
  });
});
