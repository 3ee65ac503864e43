// Several clients hammering the CDC at once (mkdir, file creation, cross-directory file and
// directory renames, rmdir over ten shared directories), with the CDC killed -9 and restarted in
// the middle. Clients resend with the same request id until answered (the CDC de-duplicates), so
// every operation has one definite outcome; all must succeed, the namespace must equal what the
// clients were told, and fsck must pass.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, test } from 'node:test';
import { CDC_PROTOCOL, decodeResponse, encodeCdcRequest } from '../src/proto/envelope.js';
import { errorName } from '../src/proto/errors.js';
import { CDC_MESSAGES, type CdcKindName, type CdcReq } from '../src/proto/messages.js';
import { eggsNow } from '../src/proto/time.js';
import { CdcCluster, ROOT, type Outcome } from './helpers/cdc-fixture.js';

const CLIENTS = 6;
const OPS_PER_CLIENT = 40;
const SHARED_DIRS = 10;
const RESEND_MS = 300;
const GIVE_UP_MS = 30_000;

let c: CdcCluster;
before(async () => {
  c = await CdcCluster.start({ shardTimeoutMs: 200 });
});
after(async () => {
  await c?.stop();
});

/** A CDC client that resends the identical datagram (same request id) until it is answered. */
class StubbornClient {
  private readonly sock = dgram.createSocket('udp4');
  private readonly pending = new Map<bigint, (m: Buffer) => void>();
  private nextId = eggsNow();
  async open(): Promise<void> {
    this.sock.on('message', (m) => {
      if (m.length < 12) return;
      const id = m.readBigUInt64LE(4);
      this.pending.get(id)?.(m);
    });
    await new Promise<void>((r) => this.sock.bind(0, '127.0.0.1', r));
  }
  request<K extends CdcKindName>(kind: K, body: CdcReq<K>): Promise<Outcome> {
    const id = this.nextId++;
    const datagram = encodeCdcRequest(kind, id, body);
    return new Promise((resolve, reject) => {
      const send = () => this.sock.send(datagram, c.cdcPort, '127.0.0.1');
      const timer = setInterval(send, RESEND_MS);
      const giveUp = setTimeout(() => {
        clearInterval(timer);
        this.pending.delete(id);
        reject(new Error(`${kind}: no answer within ${GIVE_UP_MS} ms`));
      }, GIVE_UP_MS);
      this.pending.set(id, (m) => {
        clearInterval(timer);
        clearTimeout(giveUp);
        this.pending.delete(id);
        const r = decodeResponse(CDC_PROTOCOL, m, CDC_MESSAGES[kind]);
        resolve(r.error === undefined ? { ok: true, body: r.body } : { ok: false, code: r.error });
      });
      send();
    });
  }
  close(): void {
    this.sock.close();
  }
}

interface Item {
  name: string;
  id: bigint;
  type: 'file' | 'dir';
  at: number; // index of the shared directory holding it
}

test('concurrent clients with the CDC killed -9 twice: every answer matches the namespace, fsck clean', async (t) => {
  const shared: bigint[] = [];
  for (let i = 0; i < SHARED_DIRS; i++) shared.push(await c.mkdir(ROOT, `shared${i}`));
  const B = (s: string) => Buffer.from(s);
  const failures: string[] = [];
  let completed = 0;
  const TOTAL_OPS = CLIENTS * OPS_PER_CLIENT;
  const models: Item[][] = [];
  let rng = 12345;
  const rand = (n: number) => {
    rng = (rng * 1103515245 + 12345) & 0x7fffffff;
    return rng % n;
  };

  const runClient = async (k: number) => {
    const cl = new StubbornClient();
    await cl.open();
    const items: Item[] = [];
    models[k] = items;
    let n = 0;
    try {
      for (let op = 0; op < OPS_PER_CLIENT; op++, completed++) {
        const choice = rand(10);
        const dirs = items.filter((x) => x.type === 'dir');
        const files = items.filter((x) => x.type === 'file');
        const to = rand(SHARED_DIRS);
        if (choice < 3 || items.length === 0) {
          const name = `k${k}-d${n++}`;
          const o = await cl.request('MAKE_DIRECTORY', { ownerId: shared[to]!, name: B(name) });
          if (!o.ok) failures.push(`mkdir ${name}: ${errorName(o.code)}`);
          else items.push({ name, id: o.body.id, type: 'dir', at: to });
        } else if (choice < 5) {
          const name = `k${k}-f${n++}`;
          items.push({ name, id: await c.createFile(shared[to]!, name), type: 'file', at: to });
        } else if (choice < 7 && files.length > 0) {
          const it = files[rand(files.length)]!;
          if (it.at === to) continue;
          const o = await cl.request('RENAME_FILE', { targetId: it.id, oldOwnerId: shared[it.at]!, oldName: B(it.name), newOwnerId: shared[to]!, newName: B(it.name) });
          if (!o.ok) failures.push(`mv file ${it.name}: ${errorName(o.code)}`);
          else it.at = to;
        } else if (choice < 9 && dirs.length > 0) {
          const it = dirs[rand(dirs.length)]!;
          if (it.at === to) continue;
          const o = await cl.request('RENAME_DIRECTORY', { targetId: it.id, oldOwnerId: shared[it.at]!, oldName: B(it.name), newOwnerId: shared[to]!, newName: B(it.name) });
          if (!o.ok) failures.push(`mv dir ${it.name}: ${errorName(o.code)}`);
          else it.at = to;
        } else if (dirs.length > 0) {
          const it = dirs[rand(dirs.length)]!;
          const o = await cl.request('REMOVE_DIRECTORY', { ownerId: shared[it.at]!, targetId: it.id, name: B(it.name) });
          if (!o.ok) failures.push(`rmdir ${it.name}: ${errorName(o.code)}`);
          else items.splice(items.indexOf(it), 1);
        }
      }
    } finally {
      cl.close();
    }
  };

  // Kill the CDC a third and two thirds of the way through, while every client has work in flight.
  let resumed = 0;
  const chaos = (async () => {
    for (const fraction of [1 / 3, 2 / 3]) {
      while (completed < TOTAL_OPS * fraction) await new Promise((r) => setTimeout(r, 5));
      await c.restartCdc();
      await new Promise((r) => setTimeout(r, 50));
      resumed += Number(/resuming (\d+) transaction/.exec(c.cdcProc.stderr())?.[1] ?? 0);
    }
  })();
  await Promise.all([...Array.from({ length: CLIENTS }, (_, k) => runClient(k)), chaos]);
  assert.deepEqual(failures, []);
  t.diagnostic(`transactions resumed after the kills: ${resumed}`);

  // The namespace is exactly what the clients were told.
  for (let i = 0; i < SHARED_DIRS; i++) {
    const expected = models.flatMap((m) => m.filter((x) => x.at === i).map((x) => x.name)).sort();
    assert.deepEqual(await c.listNames(shared[i]!), expected, `shared${i}`);
  }
  for (const m of models) {
    for (const it of m) {
      assert.equal(await c.lookup(shared[it.at]!, it.name), it.id);
      if (it.type === 'dir') assert.equal(await c.owner(it.id), shared[it.at]);
    }
  }
  await c.assertFsckClean();
});
