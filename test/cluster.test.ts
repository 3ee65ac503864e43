// `eggsfs run` as a user drives it: start from an empty data directory, use it, stop it with
// SIGTERM, start it again on the same directory and find everything; a service that dies is
// reported and run exits non-zero instead of pretending all is well.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { EggsClient } from '../src/client/index.js';
import { allocateClusterPorts, startCluster } from './helpers/cluster.js';
import { runEggsfs, tempDir } from './helpers/proc.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function writeFile(c: EggsClient, p: string, data: Buffer): Promise<void> {
  const w = c.createWriteStream(p);
  await new Promise<void>((resolve, reject) => {
    w.on('finish', resolve).on('error', reject);
    w.end(data);
  });
}

async function readFile(c: EggsClient, p: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of c.createReadStream(p)) parts.push(b);
  return Buffer.concat(parts);
}

test('eggsfs run --help', async () => {
  const r = await runEggsfs(['run', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^usage: eggsfs run DATA_DIR/);
  assert.match(r.stdout, /--port-offset/);
  const bad = await runEggsfs(['run']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /missing DATA_DIR/);
});

test('run: start, use, stop, restart with everything still there', { timeout: 180_000 }, async (t) => {
  const data = tempDir('run');
  t.after(() => data.remove());
  const dir = path.join(data.path, 'new-dir'); // does not exist yet: run creates it
  const ports = await allocateClusterPorts(4);
  const t0 = Date.now();
  let cluster = await startCluster({ dir, ports, blockServices: 4 });
  const startMs = Date.now() - t0;
  const out = cluster.service.stdout();
  assert.match(out, new RegExp(`shuckle +http://127\\.0\\.0\\.1:${ports.shucklePort}`));
  assert.match(out, new RegExp(`Web page: http://127\\.0\\.0\\.1:${ports.shucklePort}/`));
  assert.match(out, new RegExp(`256 shards on UDP 127\\.0\\.0\\.1:${ports.shardBasePort}-${ports.shardBasePort + 255}`));
  assert.match(out, /4 block services on TCP/);
  const ready = JSON.parse(out.split('\n').find((l) => l.startsWith('ready run '))!.slice('ready run '.length));
  assert.equal(ready.blockServices, 4);
  const pids = Object.values(ready.pids) as number[];
  assert.equal(pids.length, 4, 'shuckle, blocks, shards and CDC: four processes');
  assert.ok(startMs < 60_000, `startup took ${startMs} ms`);
  const secret = readFileSync(path.join(dir, 'cluster.secret'), 'utf8');
  assert.match(secret, /^[0-9a-f]{32}\n$/);
  // The web page answers.
  const page = await fetch(`${cluster.shuckleUrl}/`);
  assert.equal(page.status, 200);

  const big = randomBytes((12 << 20) + 5);
  {
    const c = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl, spanBytes: 4 << 20 });
    await c.mkdir('/keep');
    await c.mkdir('/keep/sub');
    await writeFile(c, '/keep/big', big);
    await writeFile(c, '/keep/sub/small', Buffer.from('small'));
    await writeFile(c, '/keep/zeros', Buffer.alloc(1 << 20));
    await c.close();
  }

  const code = await cluster.stop();
  assert.equal(code, 0, `run should exit 0 on SIGTERM; stderr:\n${cluster.service.stderr()}`);
  for (const pid of pids) assert.ok(!alive(pid), `child ${pid} still running after run stopped`);
  assert.ok(existsSync(path.join(dir, 'logs', 'shards.log')));

  cluster = await startCluster({ dir, ports, blockServices: 4 });
  t.after(() => cluster.stop());
  assert.equal(readFileSync(path.join(dir, 'cluster.secret'), 'utf8'), secret, 'the secret is kept');
  const c = await EggsClient.connect({ shuckleUrl: cluster.shuckleUrl });
  t.after(() => c.close());
  assert.ok((await readFile(c, '/keep/big')).equals(big));
  assert.equal((await readFile(c, '/keep/sub/small')).toString(), 'small');
  assert.ok((await readFile(c, '/keep/zeros')).equals(Buffer.alloc(1 << 20)));
  const names: string[] = [];
  for await (const e of c.readDir('/keep')) names.push(e.name);
  assert.deepEqual(names.sort(), ['big', 'sub', 'zeros']);
  // And it still takes writes.
  await writeFile(c, '/keep/after-restart', big.subarray(0, 1 << 20));
  assert.equal((await c.stat('/keep/after-restart')).size, 1 << 20);
});

test('run: a service that dies is reported and run exits non-zero', { timeout: 120_000 }, async (t) => {
  const cluster = await startCluster({ blockServices: 2 });
  t.after(() => cluster.destroy());
  const ready = JSON.parse(cluster.service.stdout().split('\n').find((l) => l.startsWith('ready run '))!.slice('ready run '.length));
  process.kill(ready.pids.shards, 'SIGKILL');
  const code = await cluster.service.exited();
  assert.equal(code, 1);
  assert.match(cluster.service.stderr(), /shards \(pid \d+\) was killed by SIGKILL/);
  assert.match(cluster.service.stderr(), /stopping the whole cluster/);
  for (const pid of Object.values(ready.pids) as number[]) assert.ok(!alive(pid), `child ${pid} left running`);
});

test('run: a port in use is a clear startup failure', { timeout: 60_000 }, async (t) => {
  const first = await startCluster({ blockServices: 1 });
  t.after(() => first.destroy());
  const data = tempDir('run-clash');
  t.after(() => data.remove());
  const ports = await allocateClusterPorts(1);
  ports.shucklePort = first.ports.shucklePort; // taken
  const r = await runEggsfs(['run', data.path, '--block-services', '1', '--shuckle-port', String(ports.shucklePort), '--cdc-port', String(ports.cdcPort), '--shard-base-port', String(ports.shardBasePort), '--block-base-port', String(ports.blockBasePort)]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /the cluster did not start: shuckle \(pid \d+\) exited with status/);
});

test('run: killed with SIGKILL, its services stop by themselves', { timeout: 120_000 }, async (t) => {
  const cluster = await startCluster({ blockServices: 2 });
  t.after(() => cluster.destroy());
  const ready = JSON.parse(cluster.service.stdout().split('\n').find((l) => l.startsWith('ready run '))!.slice('ready run '.length));
  const pids = Object.values(ready.pids) as number[];
  assert.ok(pids.length >= 4 && pids.every(alive));
  await cluster.service.kill('SIGKILL');
  const deadline = Date.now() + 30_000;
  while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  for (const pid of pids) assert.ok(!alive(pid), `child ${pid} outlived a SIGKILLed run`);
});
