// Shuckle with real block services: registration and verification, staleness, status changes,
// weights, persistence, keys only for the cluster secret, shard/CDC discovery.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fetchBlockServices, fetchCdc, fetchShards, registerCdc, registerShards } from '../src/client/shuckle.js';
import { encodeShuckleRegistration, ShuckleRegistration } from '../src/proto/blockwire.js';
import { encode } from '../src/proto/bincode.js';
import { waterFill } from '../src/shuckle/weights.js';
import { freeTcpPort, freeUdpPort } from './helpers/ports.js';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';
import { until } from './helpers/until.js';

const SECRET = 'c0ffee00c0ffee00c0ffee00c0ffee00';

interface Shuckle {
  svc: Service;
  url: string;
  httpPort: number;
  udpPort: number;
}

async function startShuckle(dir: string, extra: string[] = [], ports?: { http: number; udp: number }, env: NodeJS.ProcessEnv = { EGGSFS_CLUSTER_SECRET: SECRET }): Promise<Shuckle> {
  const httpPort = ports?.http ?? (await freeTcpPort());
  const udpPort = ports?.udp ?? (await freeUdpPort());
  const svc = startEggsfs(['shuckle', '--dir', dir, '--bind', '127.0.0.1', '--http-port', String(httpPort), '--udp-port', String(udpPort), ...extra], { env });
  await svc.waitFor(/^ready shuckle /);
  return { svc, url: `http://127.0.0.1:${httpPort}`, httpPort, udpPort };
}

async function startBlocks(dirs: string[], shuckleUdp: number, extra: string[] = []): Promise<{ svc: Service; ports: number[] }> {
  const ports: number[] = [];
  for (const _ of dirs) ports.push(await freeTcpPort());
  // One process per directory keeps the test's ports independent of each other.
  const svcs = dirs.map((d, i) => startEggsfs(['blocks', '--dir', d, '--port', String(ports[i]), '--shuckle-udp', `127.0.0.1:${shuckleUdp}`, ...extra]));
  await Promise.all(svcs.map((s) => s.waitFor(/^ready blocks /)));
  return {
    ports,
    svc: {
      ...svcs[0]!,
      kill: async (sig?: NodeJS.Signals) => {
        const r = await Promise.all(svcs.map((s) => s.kill(sig)));
        return r[0]!;
      },
    } as Service,
  };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

describe('write weights (water-filling)', () => {
  test('equal empty disks share equally; a full disk among empty ones gets nothing', () => {
    const w = waterFill([
      { usedBytes: 0, freeBytes: 100 },
      { usedBytes: 0, freeBytes: 100 },
      { usedBytes: 0, freeBytes: 100 },
    ]);
    w.forEach((x) => assert.ok(Math.abs(x - 1 / 3) < 1e-12));
    const w2 = waterFill([
      { usedBytes: 50, freeBytes: 50 },
      { usedBytes: 0, freeBytes: 100 },
      { usedBytes: 0, freeBytes: 100 },
    ]);
    assert.equal(w2[0], 0);
    assert.ok(Math.abs(w2[1]! - 0.5) < 1e-12 && Math.abs(w2[2]! - 0.5) < 1e-12);
  });

  test('emptier disks get more; weights sum to 1; degenerate inputs are guarded', () => {
    const w = waterFill([
      { usedBytes: 10, freeBytes: 90 },
      { usedBytes: 5, freeBytes: 95 },
      { usedBytes: 0, freeBytes: 200 },
    ]);
    assert.ok(Math.abs(w.reduce((a, b) => a + b, 0) - 1) < 1e-12);
    assert.ok(w[2]! > w[1]! && w[1]! > w[0]!);
    // Fill ratios after adding 20 % of capacity by these weights are equal among the receivers.
    const T = 400;
    const ratio = (i: number, used: number, total: number) => (used + w[i]! * 0.2 * T) / total;
    assert.ok(Math.abs(ratio(0, 10, 100) - ratio(2, 0, 200)) < 1e-9);
    assert.deepEqual(waterFill([]), []);
    assert.deepEqual(waterFill([{ usedBytes: 0, freeBytes: 0 }, { usedBytes: 0, freeBytes: 0 }]), [0.5, 0.5]);
    assert.deepEqual(waterFill([{ usedBytes: 0, freeBytes: 0 }, { usedBytes: 0, freeBytes: 10 }]), [0, 1]);
    assert.deepEqual(waterFill([{ usedBytes: 100, freeBytes: 0 }]), [1]);
  });
});

describe('shuckle with block services', () => {
  const tmp = tempDir('shuckle');
  const running: Service[] = [];
  after(async () => {
    await Promise.all(running.map((s) => s.kill()));
    tmp.remove();
  });

  test('registration is verified; keys only with the cluster secret; failure domains; equal weights', async () => {
    const sh = await startShuckle(path.join(tmp.path, 'sh1'));
    running.push(sh.svc);
    const dirs = ['b0', 'b1'].map((d) => path.join(tmp.path, 'reg', d));
    const bs = await startBlocks(dirs, sh.udpPort, ['--failure-domain', 'rack-7']);
    running.push(bs.svc);
    const list = await until('two verified block services', async () => {
      const l = await fetchBlockServices({ url: sh.url });
      return l.length === 2 ? l : undefined;
    });
    const byPort = new Map(list.map((e) => [e.port, e]));
    for (const port of bs.ports) {
      const e = byPort.get(port)!;
      assert.ok(e, `port ${port} listed`);
      assert.equal(e.ip, '127.0.0.1');
      assert.equal(e.storage_class, 2);
      assert.equal(e.is_stale, false);
      assert.equal(e.is_terminal, false);
      assert.equal(e.status, 'ok');
      assert.equal(e.failure_domain, 'rack-7');
      assert.equal(e.secret_key, '', 'no key without the secret');
      assert.ok(e.free_bytes! > 0);
      // Both report the same disk, measured a moment apart: equal shares up to that noise.
      assert.ok(Math.abs(e.write_weight - 0.5) < 0.01, `weight ${e.write_weight}`);
      assert.equal(typeof e.id, 'number');
      assert.ok(Math.abs(e.last_seen_ms! - Date.now()) < 60_000);
    }
    // With the secret, the keys are the services' secret.key files.
    const keyed = await fetchBlockServices({ url: sh.url, secret: SECRET });
    for (const [i, port] of bs.ports.entries()) {
      const key = fs.readFileSync(path.join(dirs[i]!, 'secret.key')).toString('hex');
      assert.equal(keyed.find((e) => e.port === port)!.secret_key, key);
    }
    // A wrong secret gets no keys either.
    const wrong = await fetchBlockServices({ url: sh.url, secret: 'deadbeefdeadbeefdeadbeefdeadbeef' });
    assert.ok(wrong.every((e) => e.secret_key === ''));
    // The public page and the overview API never show a key.
    const page = await (await fetch(sh.url + '/')).text();
    const overview = await (await fetch(sh.url + '/api/overview')).text();
    for (const e of keyed) {
      assert.ok(!page.includes(e.secret_key), 'key on the page');
      assert.ok(!overview.includes(e.secret_key), 'key in the overview');
    }
    assert.ok(page.includes(`127.0.0.1:${bs.ports[0]}`));
  });

  test('forged and malformed registrations are not recorded, and shuckle keeps serving', async () => {
    const sh = await startShuckle(path.join(tmp.path, 'sh2'), ['--check-period-ms', '500']);
    running.push(sh.svc);
    const bs = await startBlocks([path.join(tmp.path, 'forge', 'b0')], sh.udpPort);
    running.push(bs.svc);
    await until('the real service', async () => (await fetchBlockServices({ url: sh.url })).length === 1);
    // A silent TCP peer that accepts and never answers: its check must time out, not hang shuckle.
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const silentPort = (silent.address() as net.AddressInfo).port;
    const sock = dgram.createSocket('udp4');
    const send = (b: Buffer) => new Promise<void>((r) => sock.send(b, sh.udpPort, '127.0.0.1', () => r()));
    try {
      // A made-up key pointing at the real service: the stats MAC will not verify.
      await send(encode(ShuckleRegistration, { secretKey: Buffer.alloc(16, 0xab), port: bs.ports[0]!, storageClass: 2 }));
      // A key pointing at the silent peer, and at a closed port.
      await send(encodeShuckleRegistration({ secretKey: Buffer.alloc(16, 0xcd), port: silentPort, storageClass: 2, failureDomain: 'x' }));
      await send(encode(ShuckleRegistration, { secretKey: Buffer.alloc(16, 0xef), port: await freeTcpPort(), storageClass: 2 }));
      // Garbage of the wrong sizes, port 0, class 1.
      for (const n of [0, 1, 18, 20, 34, 36, 1400]) await send(Buffer.alloc(n, 7));
      await send(encode(ShuckleRegistration, { secretKey: Buffer.alloc(16, 1), port: 0, storageClass: 2 }));
      await send(encode(ShuckleRegistration, { secretKey: Buffer.alloc(16, 2), port: 1234, storageClass: 1 }));
      // Wait past a few check periods (and the 2 s connect/3 s read timeouts of the checks).
      await new Promise((r) => setTimeout(r, 4_000));
      const list = await fetchBlockServices({ url: sh.url, secret: SECRET });
      assert.equal(list.length, 1);
      assert.equal(list[0]!.port, bs.ports[0]);
      assert.equal(list[0]!.is_stale, false);
      assert.ok(Date.now() - list[0]!.last_seen_ms! < 3_000, 'periodic checks continue despite the silent peer');
      assert.equal((await fetch(sh.url + '/')).status, 200);
    } finally {
      sock.close();
      silent.close();
    }
  });

  test('staleness, drain/resume/terminate, weights follow status, state survives a restart', async () => {
    const dir = path.join(tmp.path, 'sh3');
    const opts = ['--check-period-ms', '200', '--stale-ms', '1500'];
    let sh = await startShuckle(dir, opts);
    const bs = await startBlocks(['b0', 'b1', 'b2'].map((d) => path.join(tmp.path, 'stale', d)), sh.udpPort);
    try {
      const list = await until('three services', async () => {
        const l = await fetchBlockServices({ url: sh.url });
        return l.length === 3 && l.every((e) => !e.is_stale) ? l : undefined;
      });
      const ids = list.map((e) => e.id!);
      const status = async (id: number) => (await fetchBlockServices({ url: sh.url })).find((e) => e.id === id)!;
      // drain: ok → drain, weight 0, the others share.
      assert.equal((await post(sh.url + '/change_status', { action: 'drain', id: ids[0] })).status, 200);
      assert.equal((await status(ids[0]!)).status, 'drain');
      const l2 = await fetchBlockServices({ url: sh.url });
      assert.equal(l2.find((e) => e.id === ids[0])!.write_weight, 0);
      assert.ok(Math.abs(l2.filter((e) => e.id !== ids[0]).reduce((a, e) => a + e.write_weight, 0) - 1) < 1e-9);
      // terminate needs staleness: refused (no change) while live.
      await post(sh.url + '/change_status', { action: 'terminate', id: ids[0] });
      assert.equal((await status(ids[0]!)).status, 'drain');
      // resume: drain → ok.
      await post(sh.url + '/change_status', { action: 'resume', id: ids[0] });
      assert.equal((await status(ids[0]!)).status, 'ok');
      // Bad requests are clear 400s.
      assert.equal((await post(sh.url + '/change_status', { action: 'explode', id: ids[0] })).status, 400);
      assert.equal((await fetch(sh.url + '/change_status', { method: 'POST', body: '{nope' })).status, 400);
      assert.equal((await fetch(sh.url + '/no/such/route')).status, 404);
      // Kill the services: they go stale, weights drop to 0.
      await bs.svc.kill('SIGKILL');
      const stale = await until('stale services', async () => {
        const l = await fetchBlockServices({ url: sh.url });
        return l.every((e) => e.is_stale) ? l : undefined;
      });
      assert.ok(stale.every((e) => e.write_weight === 0));
      await post(sh.url + '/change_status', { action: 'drain', id: ids[1] });
      await post(sh.url + '/change_status', { action: 'terminate', id: ids[1] });
      const t = await status(ids[1]!);
      assert.equal(t.status, 'terminal');
      assert.equal(t.is_terminal, true);
      // Restart shuckle on the same dir: same rows, same ids, same statuses.
      await sh.svc.kill();
      sh = await startShuckle(dir, opts, { http: sh.httpPort, udp: sh.udpPort });
      const again = await fetchBlockServices({ url: sh.url });
      assert.deepEqual(again.map((e) => e.id).sort(), [...ids].sort());
      assert.equal(again.find((e) => e.id === ids[1])!.status, 'terminal');
    } finally {
      await bs.svc.kill();
      await sh.svc.kill();
    }
  });

  test('a block service restarted on another port is followed; a new key at an old address replaces the old row', async () => {
    const sh = await startShuckle(path.join(tmp.path, 'sh4'), ['--check-period-ms', '300']);
    running.push(sh.svc);
    const d = path.join(tmp.path, 'move', 'b0');
    let bs = await startBlocks([d], sh.udpPort);
    await until('registered', async () => (await fetchBlockServices({ url: sh.url })).length === 1);
    const id = (await fetchBlockServices({ url: sh.url }))[0]!.id;
    await bs.svc.kill();
    bs = await startBlocks([d], sh.udpPort);
    const moved = await until('moved', async () => {
      const l = await fetchBlockServices({ url: sh.url });
      return l.length === 1 && l[0]!.port === bs.ports[0] ? l : undefined;
    });
    assert.equal(moved[0]!.id, id, 'same key, same row');
    // A fresh directory (new key) on the same port: it takes over the address.
    await bs.svc.kill();
    const port = bs.ports[0]!;
    const other = startEggsfs(['blocks', '--dir', path.join(tmp.path, 'move', 'fresh'), '--port', String(port), '--shuckle-udp', `127.0.0.1:${sh.udpPort}`]);
    try {
      await other.waitFor(/^ready blocks /);
      const l = await until('replaced', async () => {
        const x = await fetchBlockServices({ url: sh.url });
        return x.length === 1 && x[0]!.id !== id ? x : undefined;
      });
      assert.equal(l[0]!.port, port);
    } finally {
      await other.kill();
    }
  });

  test('shards and the CDC register with the cluster secret only; clients discover them', async () => {
    const secretFile = path.join(tmp.path, 'secret.hex');
    fs.writeFileSync(secretFile, 'ABCDEF0123456789abcdef0123456789\n');
    const sh = await startShuckle(path.join(tmp.path, 'sh5'), ['--secret-file', secretFile], undefined, {});
    running.push(sh.svc);
    const secret = 'abcdef0123456789abcdef0123456789';
    await assert.rejects(registerShards({ url: sh.url }, [{ id: 0, ip: '10.0.0.1', port: 22272 }]), /403/);
    await assert.rejects(registerShards({ url: sh.url, secret: 'beef' }, [{ id: 0, ip: '10.0.0.1', port: 22272 }]), /403/);
    await assert.rejects(registerCdc({ url: sh.url }, { ip: '10.0.0.1', port: 36137 }), /403/);
    assert.deepEqual(await fetchShards({ url: sh.url }), []);
    assert.equal(await fetchCdc({ url: sh.url }), null);
    await registerShards({ url: sh.url, secret }, [
      { id: 0, ip: '10.0.0.1', port: 22272 },
      { id: 255, ip: '0.0.0.0', port: 22527 },
    ]);
    await registerCdc({ url: sh.url, secret }, { ip: '10.0.0.2', port: 36137 });
    const shards = await fetchShards({ url: sh.url });
    assert.deepEqual(
      shards.map((s) => [s.id, s.ip, s.port]),
      [
        [0, '10.0.0.1', 22272],
        [255, '127.0.0.1', 22527], // unspecified address → where the registration came from
      ],
    );
    const cdc = await fetchCdc({ url: sh.url });
    assert.equal(cdc!.ip, '10.0.0.2');
    assert.equal(cdc!.port, 36137);
    // Bad bodies are refused.
    for (const body of [{ shards: [{ id: 256, ip: 'x', port: 1 }] }, { shards: [{ id: 1, ip: 'x', port: 0 }] }, { shards: 'no' }, []]) {
      assert.equal((await post(sh.url + '/api/register_shards', body, { 'x-eggsfs-secret': secret })).status, 400);
    }
  });

  test('without a configured secret one is generated once into the directory', async () => {
    const dir = path.join(tmp.path, 'sh6');
    const sh = await startShuckle(dir, [], undefined, { EGGSFS_CLUSTER_SECRET: '' });
    const secret = fs.readFileSync(path.join(dir, 'cluster.secret'), 'utf8').trim();
    assert.match(secret, /^[0-9a-f]{32}$/);
    assert.match(sh.svc.stderr(), /cluster\.secret/);
    await registerCdc({ url: sh.url, secret }, { ip: '10.0.0.3', port: 1 });
    assert.equal(await sh.svc.kill(), 0, 'SIGTERM is a clean exit');
    const sh2 = await startShuckle(dir, [], { http: sh.httpPort, udp: sh.udpPort }, { EGGSFS_CLUSTER_SECRET: '' });
    try {
      assert.equal(fs.readFileSync(path.join(dir, 'cluster.secret'), 'utf8').trim(), secret);
      await registerCdc({ url: sh2.url, secret }, { ip: '10.0.0.3', port: 2 });
      assert.equal((await fetchCdc({ url: sh2.url }))!.port, 2);
    } finally {
      await sh2.svc.kill();
    }
  });
});

