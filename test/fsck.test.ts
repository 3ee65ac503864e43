// `eggsfs fsck` against real shards: a namespace built through the CDC is clean; each kind of
// damage (made with privileged shard requests, as a buggy CDC would) is reported in words with
// the path, with a non-zero exit code; undoing it makes fsck clean again.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { ProblemKind } from '../src/client/fsck.js';
import { InodeType, NULL_INODE_ID, makeInodeId, shardOf } from '../src/proto/ids.js';
import { eggsNow } from '../src/proto/time.js';
import { CdcCluster, ROOT } from './helpers/cdc-fixture.js';
import { freeUdpRange } from './helpers/ports.js';
import { runEggsfs } from './helpers/proc.js';

let c: CdcCluster;
let a: bigint, b: bigint, cc: bigint, f: bigint;
const B = (s: string) => Buffer.from(s);

before(async () => {
  c = await CdcCluster.start();
  a = await c.mkdir(ROOT, 'a');
  b = await c.mkdir(a, 'b');
  cc = await c.mkdir(ROOT, 'c');
  f = await c.createFile(a, 'f');
  await c.createFile(b, 'g');
});
after(async () => {
  await c?.stop();
});

const fsckCli = (...extra: string[]) => runEggsfs(['fsck', '--shard-host', '127.0.0.1', '--shard-base-port', String(c.shardBase), ...extra]);

/** Create an unlocked current edge dir/name → target directly on the shard. */
async function link(dir: bigint, name: string, target: bigint): Promise<void> {
  await c.shard('CREATE_LOCKED_CURRENT_EDGE', { dirId: dir, name: B(name), targetId: target, creationTime: eggsNow() }, shardOf(dir));
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: dir, name: B(name), targetId: target, wasMoved: false }, shardOf(dir));
}
async function unlink(dir: bigint, name: string, target: bigint): Promise<void> {
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: dir, name: B(name), targetId: target, wasMoved: true }, shardOf(dir));
}
async function expectProblems(kinds: ProblemKind[], mentions: RegExp[]): Promise<void> {
  const r = await c.fsck();
  assert.deepEqual(r.problems.map((p) => p.kind).sort(), [...kinds].sort(), JSON.stringify(r.problems, null, 1));
  const text = r.problems.map((p) => p.message).join('\n');
  for (const m of mentions) assert.match(text, m);
}

test('a namespace made through the CDC is clean (library and CLI)', async () => {
  const r = await c.assertFsckClean();
  assert.equal(r.liveDirectories, 4);
  assert.equal(r.files, 2);
  const cli = await fsckCli();
  assert.equal(cli.code, 0, cli.stdout + cli.stderr);
  assert.match(cli.stdout, /^ok: 256\/256 shards read: 4 live directories/m);
});

test('a locked edge is reported (and the CLI exits 1 naming the path)', async () => {
  await c.shard('LOCK_CURRENT_EDGE', { dirId: a, name: B('b'), targetId: b }, shardOf(a));
  await expectProblems(['locked-edge'], [/\/a\/b .* is locked/]);
  const cli = await fsckCli();
  assert.equal(cli.code, 1);
  assert.match(cli.stdout, /locked-edge: \/a\/b \(→ 0x[0-9a-f]{16}\) is locked/);
  assert.match(cli.stdout, /1 problem\(s\)/);
  const noLocks = await fsckCli('--no-lock-check');
  assert.equal(noLocks.code, 0, 'the lock probe can be turned off');
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: a, name: B('b'), targetId: b, wasMoved: false }, shardOf(a));
  await c.assertFsckClean();
});

test("a parent pointer that does not match the directory's entry", async () => {
  await c.shard('SET_DIRECTORY_OWNER', { dirId: b, ownerId: cc }, shardOf(b));
  await expectProblems(['parent-mismatch'], [/\/a\/b: parent pointer says \/c/]);
  await c.shard('SET_DIRECTORY_OWNER', { dirId: b, ownerId: a }, shardOf(b));
  await c.assertFsckClean();
});

test('a live directory without an entry (a leaked mkdir) is unreachable', async () => {
  const leak = makeInodeId(InodeType.DIRECTORY, 1_000_000n, 5);
  await c.shard('CREATE_DIRECTORY_INODE', { id: leak, ownerId: a, opaque: B('') }, shardOf(leak));
  await expectProblems(['unreachable-directory'], [/has no entry anywhere: not reachable from \//]);
  await c.shard('SET_DIRECTORY_OWNER', { dirId: leak, ownerId: NULL_INODE_ID }, shardOf(leak));
  await c.assertFsckClean();
});

test('dangling edges: to a missing directory, a missing file, a removed directory', async () => {
  const missingDir = makeInodeId(InodeType.DIRECTORY, 2_000_000n, 7);
  const missingFile = makeInodeId(InodeType.FILE, 2_000_000n, 9);
  await link(a, 'ghost', missingDir);
  await link(cc, 'phantom', missingFile);
  const removed = await c.mkdir(cc, 'removed');
  await c.cdc('REMOVE_DIRECTORY', { ownerId: cc, targetId: removed, name: B('removed') });
  await link(cc, 'zombie', removed);
  await expectProblems(
    ['dangling-edge', 'dangling-edge', 'dangling-edge'],
    [/\/a\/ghost points at directory .* which does not exist/, /\/c\/phantom points at file .* which does not exist/, /\/c\/zombie points at removed directory/],
  );
  await unlink(a, 'ghost', missingDir);
  await unlink(cc, 'phantom', missingFile);
  await unlink(cc, 'zombie', removed);
  await c.assertFsckClean();
});

test('a directory with two entries, and a file owned twice (paths listed in order, whichever shard answered first)', async () => {
  await link(cc, 'b-again', b);
  await link(cc, 'f-again', f);
  await expectProblems(['doubled-edge', 'file-owned-twice'], [/has 2 entries: \/a\/b, \/c\/b-again$/m, /is owned by 2 edges: \/a\/f, \/c\/f-again$/m]);
  await unlink(cc, 'b-again', b);
  await unlink(cc, 'f-again', f);
  await c.assertFsckClean();
});

test('a cycle detached from the root (what the prototype RENAME_DIRECTORY could make)', async () => {
  const p = await c.mkdir(ROOT, 'p');
  const q = await c.mkdir(p, 'q');
  // q/p → p, p's parent := q, and the root's entry for p removed: p ↔ q hang off nothing.
  await link(q, 'p', p);
  await c.shard('SET_DIRECTORY_OWNER', { dirId: p, ownerId: q }, shardOf(p));
  await unlink(ROOT, 'p', p);
  await expectProblems(['unreachable-directory', 'unreachable-directory'], [/is not reachable from \//]);
  await link(ROOT, 'p', p);
  await unlink(q, 'p', p);
  await c.shard('SET_DIRECTORY_OWNER', { dirId: p, ownerId: ROOT }, shardOf(p));
  await c.assertFsckClean();
});

test('unreachable shards are a problem, not a pass; --shards limits the scan', async () => {
  const nowhere = await freeUdpRange(2);
  const r = await runEggsfs(['fsck', '--shard-host', '127.0.0.1', '--shard-base-port', String(nowhere), '--shards', '0-1', '--timeout-ms', '50']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /shard-unreachable: shard 0 at 127\.0\.0\.1:\d+ could not be read/);
  const some = await fsckCli('--shards', '0-3');
  assert.equal(some.code, 0, some.stdout);
  assert.match(some.stdout, /ok: 4\/4 shards read/);
  const bad = await runEggsfs(['fsck', '--shards', '7-3']);
  assert.equal(bad.code, 2, 'usage error');
});
