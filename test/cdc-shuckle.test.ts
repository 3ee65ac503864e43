// The CDC in a shuckle-discovered cluster: it learns the shards from GET /api/shards, registers
// its own address (GET /api/cdc lists it), serves mkdirs, and `eggsfs fsck --shuckle` finds the
// shards the same way.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { fetchCdc } from '../src/client/shuckle.js';
import { UdpTransport } from '../src/client/transport.js';
import { ROOT_DIR_INODE_ID, shardOf } from '../src/proto/ids.js';
import { freeTcpPort, freeUdpPort, freeUdpRange } from './helpers/ports.js';
import { startWithRetry } from './helpers/cdc-fixture.js';
import { runEggsfs, startEggsfs, tempDir, type Service } from './helpers/proc.js';

test('CDC with --shuckle: discovers shards, registers itself, serves; fsck --shuckle is clean', async () => {
  const dir = tempDir('cdc-shuckle');
  const secret = randomBytes(16).toString('hex');
  const env = { EGGSFS_CLUSTER_SECRET: secret };
  const procs: Service[] = [];
  const tr = new UdpTransport({ defaultTimeoutMs: 5_000, defaultAttempts: 1 });
  try {
    const httpPort = await freeTcpPort();
    const udpPort = await freeUdpPort();
    const shuckle = startEggsfs(['shuckle', '--dir', `${dir.path}/shuckle`, '--bind', '127.0.0.1', '--http-port', String(httpPort), '--udp-port', String(udpPort)], { env });
    procs.push(shuckle);
    await shuckle.waitFor(/^ready shuckle /);
    const url = `http://127.0.0.1:${httpPort}`;
    const shards = await startWithRetry(
      async () => ['shard', '--shards', '0-255', '--dir', `${dir.path}/shards`, '--bind', '127.0.0.1', '--base-port', String(await freeUdpRange(256)), '--shuckle', url, '--register-ms', '500'],
      /^ready shard /,
      env,
    );
    procs.push(shards);
    const cdcPort = await freeUdpPort();
    const cdc = startEggsfs(['cdc', '--dir', `${dir.path}/cdc`, '--bind', '127.0.0.1', '--port', String(cdcPort), '--shuckle', url, '--shard-timeout-ms', '200'], { env });
    procs.push(cdc);
    await cdc.waitFor(/^ready cdc /);
    const deadline = Date.now() + 15_000;
    for (;;) {
      const e = await fetchCdc({ url, secret });
      if (e && e.port === cdcPort) {
        assert.equal(e.ip, '127.0.0.1');
        break;
      }
      assert.ok(Date.now() < deadline, 'the CDC registered with shuckle');
      await new Promise((r) => setTimeout(r, 200));
    }
    // Directories land on shards 1, 2, …: every one of them reached through shuckle's addresses.
    const ids: bigint[] = [];
    for (let i = 0; i < 4; i++) {
      ids.push((await tr.cdcRequest({ host: '127.0.0.1', port: cdcPort }, 'MAKE_DIRECTORY', { ownerId: ROOT_DIR_INODE_ID, name: Buffer.from(`d${i}`) })).id);
    }
    assert.equal(new Set(ids.map(shardOf)).size, 4);
    const r = await runEggsfs(['fsck', '--shuckle', url]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /ok: 256\/256 shards read: 5 live directories/);
  } finally {
    tr.close();
    for (const p of procs.reverse()) await p.kill('SIGKILL');
    dir.remove();
  }
});
