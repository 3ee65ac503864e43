// The shard and shuckle (issue item 4): requests that need no block service are served while
// shuckle is unreachable; the block-service list is polled (more often while empty) and applied;
// the shards register their addresses; without the cluster secret no keys, so no block writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startShards, waitForBlockServices } from './helpers/shard-proc.js';
import { fakeBlockServices, startFixtureShuckle } from './helpers/fixture-shuckle.js';
import { freeTcpPort, freeUdpRange } from './helpers/ports.js';
import { startEggsfs, tempDir } from './helpers/proc.js';
import { UdpTransport } from '../src/client/transport.js';
import { ErrorCode, EggsError } from '../src/proto/errors.js';
import { ROOT_DIR_INODE_ID } from '../src/proto/ids.js';
import { crc32c, crcToBytes } from '../src/proto/crc32c.js';

const data = Buffer.alloc(100, 1);
const blockSpan = (f: { id: bigint; cookie: bigint }) => ({
  fileId: f.id,
  cookie: f.cookie,
  byteOffset: 0n,
  storageClass: 2,
  parity: 0x21, // 1 data + 2 parity: needs three distinct services
  crc32: crcToBytes(crc32c(data)),
  size: 100n,
  bodyBytes: Buffer.alloc(0),
  bodyBlocks: [0, 1, 2].map(() => ({ crc32: crcToBytes(crc32c(data)), size: 100n })),
});

test('shuckle unreachable at start: requests are served, block services arrive once it answers', async (t) => {
  const shuckle = await startFixtureShuckle([]);
  t.after(() => shuckle.close());
  const deadPort = await freeTcpPort();
  const basePort = await freeUdpRange(2);
  const dir = tempDir('shard-shuckle');
  t.after(() => dir.remove());
  // First against a dead shuckle address.
  const p = startEggsfs(['shard', '--shards', '0-1', '--dir', dir.path, '--bind', '127.0.0.1', '--base-port', String(basePort), '--shuckle', `http://127.0.0.1:${deadPort}`, '--shuckle-poll-ms', '200', '--register-ms', '100'], {
    env: { EGGSFS_CLUSTER_SECRET: shuckle.secret },
  });
  t.after(() => p.kill('SIGKILL'));
  await p.waitFor(/^ready shard /);
  const tr = new UdpTransport({ defaultAttempts: 1 });
  t.after(() => tr.close());
  const at = { host: '127.0.0.1', port: basePort };
  assert.equal((await tr.shardRequest(at, 'STAT', { id: ROOT_DIR_INODE_ID })).sizeOrOwner, 0n);
  const f = await tr.shardRequest(at, 'CONSTRUCT_FILE', { type: 2 });
  await assert.rejects(tr.shardRequest(at, 'ADD_SPAN_INITIATE', blockSpan(f)), (e: EggsError) => e.code === ErrorCode.COULD_NOT_PICK_BLOCK_SERVERS);
  await p.kill('SIGTERM');
  assert.match(p.stderr(), /cannot fetch block services: shuckle at .* is unreachable/);

  // Now a live shuckle with an empty list at first: the shard keeps asking, and registers.
  const p2 = startEggsfs(['shard', '--shards', '0-1', '--dir', dir.path, '--bind', '127.0.0.1', '--base-port', String(basePort), '--shuckle', shuckle.url, '--shuckle-poll-ms', '60000', '--register-ms', '100', '--advertise-host', '10.1.2.3'], {
    env: { EGGSFS_CLUSTER_SECRET: shuckle.secret },
  });
  t.after(() => p2.kill('SIGKILL'));
  await p2.waitFor(/^ready shard /);
  const t0 = Date.now();
  while (shuckle.fetches < 2 && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 50));
  assert.ok(shuckle.fetches >= 2, 'an empty list is asked for again well before the 60 s period');
  await assert.rejects(tr.shardRequest(at, 'ADD_SPAN_INITIATE', blockSpan(f)), (e: EggsError) => e.code === ErrorCode.COULD_NOT_PICK_BLOCK_SERVERS);
  // Two services in one failure domain and two in another: three distinct services are needed,
  // so the third comes from a domain already used.
  shuckle.services = fakeBlockServices(4, { failureDomains: 2 });
  const t1 = Date.now();
  for (;;) {
    try {
      const r = await tr.shardRequest(at, 'ADD_SPAN_INITIATE', blockSpan(f));
      assert.equal(new Set(r.blocks.map((x) => x.port)).size, 3);
      const domains = r.blocks.map((x) => shuckle.services.find((s) => s.port === x.port)!.failure_domain);
      assert.equal(new Set(domains.slice(0, 2)).size, 2, 'the first two blocks are in distinct failure domains');
      break;
    } catch (e) {
      if (!(e instanceof EggsError) || e.code !== ErrorCode.COULD_NOT_PICK_BLOCK_SERVERS || Date.now() - t1 > 5_000) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  while (shuckle.registrations.length === 0 && Date.now() - t1 < 5_000) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(shuckle.registrations[0], [
    { id: 0, ip: '10.1.2.3', port: basePort },
    { id: 1, ip: '10.1.2.3', port: basePort + 1 },
  ]);
});

test('without the cluster secret there are no keys, so no block-backed spans; stale/terminal/zero-weight avoided', async (t) => {
  const fx = await startShards({ blockServices: 3, extraArgs: ['--shuckle-poll-ms', '100'] });
  t.after(() => fx.stop());
  await waitForBlockServices(fx);
  const f = await fx.req('CONSTRUCT_FILE', { type: 2 });
  await fx.req('ADD_SPAN_INITIATE', blockSpan(f)); // exactly three usable services
  const g = await fx.req('CONSTRUCT_FILE', { type: 2 });
  for (const change of [{ is_stale: true }, { is_terminal: true }, { write_weight: 0 }]) {
    fx.shuckle.services = fx.shuckle.services.map((s, i) => (i === 0 ? { ...s, ...change } : { ...s }));
    await new Promise((r) => setTimeout(r, 400)); // a few poll periods
    await fx.err('ADD_SPAN_INITIATE', blockSpan(g), ErrorCode.COULD_NOT_PICK_BLOCK_SERVERS);
    fx.shuckle.services = fx.shuckle.services.map((s) => ({ ...s, is_stale: false, is_terminal: false, write_weight: 1 }));
  }
  // All weights 0: uniform choice instead of none.
  fx.shuckle.services = fx.shuckle.services.map((s) => ({ ...s, write_weight: 0 }));
  await new Promise((r) => setTimeout(r, 400));
  await fx.req('ADD_SPAN_INITIATE', blockSpan(g));

  // The same shuckle, asked without the secret: entries come without keys.
  fx.shuckle.services = fx.shuckle.services.map((s) => ({ ...s, write_weight: 1 }));
  const basePort = await freeUdpRange(1);
  const dir = tempDir('shard-nosecret');
  t.after(() => dir.remove());
  const p = startEggsfs(['shard', '--shards', '0', '--dir', dir.path, '--bind', '127.0.0.1', '--base-port', String(basePort), '--shuckle', fx.shuckle.url], { env: { EGGSFS_CLUSTER_SECRET: '' } });
  t.after(() => p.kill('SIGKILL'));
  await p.waitFor(/^ready shard /);
  const t0 = Date.now();
  while (!/block services from .*: 3 listed, 0 writable/.test(p.stderr()) && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 50));
  assert.match(p.stderr(), /no cluster secret/);
  assert.match(p.stderr(), /3 listed, 0 writable/);
  const tr = new UdpTransport({ defaultAttempts: 1 });
  t.after(() => tr.close());
  const at = { host: '127.0.0.1', port: basePort };
  const h = await tr.shardRequest(at, 'CONSTRUCT_FILE', { type: 2 });
  await assert.rejects(tr.shardRequest(at, 'ADD_SPAN_INITIATE', blockSpan(h)), (e: EggsError) => e.code === ErrorCode.COULD_NOT_PICK_BLOCK_SERVERS);
});
