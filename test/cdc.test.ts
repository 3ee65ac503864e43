// The CDC against real shards: the twelve CDCTests scenarios of metadata.md §10, the loop case of
// §5.4, every CDC error of §4.9/§5.4, malformed datagrams, client retry de-duplication (also
// across a restart), the bounded queue, and racing directory renames.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, test } from 'node:test';
import { CDC_PROTOCOL, decodeResponse, encodeCdcRequest } from '../src/proto/envelope.js';
import { ErrorCode, errorName } from '../src/proto/errors.js';
import { EXTRA_BIT, InodeType, NULL_INODE_ID, ROOT_DIR_INODE_ID, makeInodeId, shardOf } from '../src/proto/ids.js';
import { CDC_MESSAGES } from '../src/proto/messages.js';
import { eggsNow } from '../src/proto/time.js';
import { CdcCluster, ROOT, SHARDS } from './helpers/cdc-fixture.js';

let c: CdcCluster;
let seq = 0;
/** A fresh directory under the root for one test, so tests do not see each other's entries. */
async function freshDir(): Promise<bigint> {
  return c.mkdir(ROOT, `t${++seq}`);
}
const B = (s: string) => Buffer.from(s);

before(async () => {
  c = await CdcCluster.start({ proxy: true });
});
after(async () => {
  await c?.stop();
});

async function visitAll(kind: 'VISIT_DIRECTORIES' | 'VISIT_FILES'): Promise<Set<bigint>> {
  const out = new Set<bigint>();
  await Promise.all(
    Array.from({ length: SHARDS }, async (_, s) => {
      for (let begin = 0n; ; ) {
        const r = await c.shard(kind, { beginId: begin }, s);
        for (const id of r.ids) out.add(id);
        if (r.nextId === 0n) break;
        begin = r.nextId;
      }
    }),
  );
  return out;
}

async function inBatches<T>(n: number, batch: number, f: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i += batch) out.push(...(await Promise.all(Array.from({ length: Math.min(batch, n - i) }, (_, j) => f(i + j)))));
  return out;
}

// Must run first: it counts every inode of the cluster.
test('test_visit_inodes: 276 files and 276 CDC directories are exactly what VISIT_* return', async () => {
  const files = await inBatches(276, 32, (i) => c.createFile(ROOT, `f${i}`));
  const dirs = await inBatches(276, 32, (i) => c.mkdir(ROOT, `d${i}`));
  assert.equal(new Set(dirs).size, 276);
  // Directory ids are handed out round-robin over the shards.
  assert.deepEqual(new Set(dirs.map(shardOf)).size, SHARDS);
  assert.deepEqual([...(await visitAll('VISIT_FILES'))].sort(), [...files].sort());
  assert.deepEqual([...(await visitAll('VISIT_DIRECTORIES'))].sort(), [ROOT_DIR_INODE_ID, ...dirs].sort());
  await c.assertFsckClean();
});

test('test_make_dir: two directories appear in the listing with the returned ids', async () => {
  const p = await freshDir();
  const a = await c.mkdir(p, 'a');
  const b = await c.mkdir(p, 'b');
  assert.notEqual(a, b);
  assert.equal(await c.lookup(p, 'a'), a);
  assert.equal(await c.lookup(p, 'b'), b);
  assert.deepEqual(await c.listNames(p), ['a', 'b']);
  assert.equal(await c.owner(a), p);
  assert.equal(await c.owner(b), p);
});

test('test_make_dir_error_1: CREATE_DIRECTORY_INODE error → INTERNAL_ERROR, nothing left behind', async () => {
  const p = await freshDir();
  const rule = c.proxy!.addRule({ kind: 'CREATE_DIRECTORY_INODE', match: (b) => b.ownerId === p, action: { t: 'error', code: ErrorCode.INTERNAL_ERROR } });
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: p, name: B('x') }, ErrorCode.INTERNAL_ERROR);
  assert.equal(rule.fired, 1);
  c.proxy!.clearRules();
  assert.equal(await c.lookup(p, 'x'), undefined);
  await c.assertFsckClean();
});

test('test_make_dir_error_2: edge creation error is returned and the new directory is disowned', async () => {
  const p = await freshDir();
  c.proxy!.addRule({ kind: 'CREATE_LOCKED_CURRENT_EDGE', match: (b) => b.dirId === p, action: { t: 'error', code: ErrorCode.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS } });
  const logStart = c.proxy!.log.length;
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: p, name: B('x') }, ErrorCode.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
  c.proxy!.clearRules();
  const created = c.proxy!.log.slice(logStart).find((r) => r.kind === 'CREATE_DIRECTORY_INODE' && r.body.ownerId === p);
  assert.ok(created, 'CREATE_DIRECTORY_INODE was sent');
  assert.equal(await c.owner(created.body.id), NULL_INODE_ID);
  assert.equal(await c.lookup(p, 'x'), undefined);
  await c.assertFsckClean();
});

test('test_make_dir_error_3: edge creation and rollback both fail → FATAL_ERROR, directory keeps its owner', async () => {
  const p = await freshDir();
  c.proxy!.addRule({ kind: 'CREATE_LOCKED_CURRENT_EDGE', match: (b) => b.dirId === p, action: { t: 'error', code: ErrorCode.INTERNAL_ERROR } });
  c.proxy!.addRule({ kind: 'SET_DIRECTORY_OWNER', match: (b) => b.ownerId === NULL_INODE_ID, action: { t: 'error', code: ErrorCode.INTERNAL_ERROR } });
  const logStart = c.proxy!.log.length;
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: p, name: B('x') }, ErrorCode.FATAL_ERROR);
  c.proxy!.clearRules();
  const d = c.proxy!.log.slice(logStart).find((r) => r.kind === 'CREATE_DIRECTORY_INODE')!.body.id as bigint;
  assert.equal(await c.owner(d), p);
  // fsck sees the leak; repairing it by hand makes the namespace clean again.
  const r = await c.fsck();
  assert.deepEqual(r.problems.map((x) => x.kind), ['unreachable-directory']);
  await c.shard('SET_DIRECTORY_OWNER', { dirId: d, ownerId: NULL_INODE_ID }, shardOf(d));
  await c.assertFsckClean();
});

test('test_make_dir_no_override: a second mkdir of the same name → CANNOT_OVERRIDE_NAME', async () => {
  const p = await freshDir();
  await c.mkdir(p, 'x');
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: p, name: B('x') }, ErrorCode.CANNOT_OVERRIDE_NAME);
  await c.createFile(p, 'f');
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: p, name: B('f') }, ErrorCode.CANNOT_OVERRIDE_NAME);
  await c.assertFsckClean();
});

/** Two fresh directories on different shards. */
async function twoDirs(): Promise<[bigint, bigint]> {
  const a = await freshDir();
  const b = await freshDir();
  assert.notEqual(shardOf(a), shardOf(b));
  return [a, b];
}

test('test_move_file: cross-shard RENAME_FILE, its refusals, and an injected unlock failure → FATAL_ERROR', async () => {
  const [a, b] = await twoDirs();
  const f = await c.createFile(a, 'f');
  const sub = await c.mkdir(b, 'd');
  const mv = (newName: string) => ({ targetId: f, oldOwnerId: a, oldName: B('f'), newOwnerId: b, newName: B(newName) });
  await c.cdcErr('RENAME_FILE', mv('d'), ErrorCode.CANNOT_OVERRIDE_NAME);
  assert.equal(await c.lookup(a, 'f'), f);
  assert.equal(await c.lookup(b, 'd'), sub);
  await c.cdc('RENAME_FILE', mv('g'));
  assert.equal(await c.lookup(a, 'f'), undefined);
  assert.equal(await c.lookup(b, 'g'), f);
  await c.cdcErr('RENAME_FILE', { targetId: sub, oldOwnerId: b, oldName: B('d'), newOwnerId: a, newName: B('d') }, ErrorCode.TYPE_IS_DIRECTORY);
  await c.assertFsckClean();
  // Unlock of the new edge fails for good: FATAL_ERROR, both edges stay locked (fsck says so).
  c.proxy!.addRule({ kind: 'UNLOCK_CURRENT_EDGE', match: (x) => x.dirId === a && !x.wasMoved, action: { t: 'error', code: ErrorCode.INTERNAL_ERROR } });
  await c.cdcErr('RENAME_FILE', { targetId: f, oldOwnerId: b, oldName: B('g'), newOwnerId: a, newName: B('h') }, ErrorCode.FATAL_ERROR);
  c.proxy!.clearRules();
  const r = await c.fsck();
  assert.deepEqual(r.problems.map((x) => x.kind).sort(), ['file-owned-twice', 'locked-edge', 'locked-edge']);
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: a, name: B('h'), targetId: f, wasMoved: false }, shardOf(a));
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: b, name: B('g'), targetId: f, wasMoved: true }, shardOf(b));
  await c.assertFsckClean();
});

test('test_unlink_dir: REMOVE_DIRECTORY of an empty directory', async () => {
  const p = await freshDir();
  const d = await c.mkdir(p, 'd');
  await c.cdc('REMOVE_DIRECTORY', { ownerId: p, targetId: d, name: B('d') });
  assert.equal(await c.lookup(p, 'd'), undefined);
  assert.equal(await c.owner(d), NULL_INODE_ID);
  await c.assertFsckClean();
});

test('test_move_dir: RENAME_DIRECTORY refusals and /1 → /2/1 and back', async () => {
  const p = await freshDir();
  const d1 = await c.mkdir(p, '1');
  const d2 = await c.mkdir(p, '2');
  const child = await c.mkdir(d1, 'c');
  const grandchild = await c.mkdir(child, 'g');
  await c.createFile(d2, 'file');
  await c.mkdir(d2, 'dir');
  const mv = (target: bigint, oldOwner: bigint, oldName: string, newOwner: bigint, newName: string) => ({
    targetId: target,
    oldOwnerId: oldOwner,
    oldName: B(oldName),
    newOwnerId: newOwner,
    newName: B(newName),
  });
  await c.cdcErr('RENAME_DIRECTORY', mv(d2, p, '1', d2, 'x'), ErrorCode.LOOP_IN_DIRECTORY_RENAME);
  await c.cdcErr('RENAME_DIRECTORY', mv(d2, p, '1', d1, 'x'), ErrorCode.MISMATCHING_TARGET);
  await c.cdcErr('RENAME_DIRECTORY', mv(makeInodeId(InodeType.DIRECTORY, 999_999n, 7), p, '1', d2, 'x'), ErrorCode.MISMATCHING_TARGET);
  await c.cdcErr('RENAME_DIRECTORY', mv(d1, p, '1', makeInodeId(InodeType.DIRECTORY, 999_999n, 7), 'x'), ErrorCode.NEW_DIRECTORY_NOT_FOUND);
  await c.cdcErr('RENAME_DIRECTORY', mv(d1, p, '1', d1, 'x'), ErrorCode.LOOP_IN_DIRECTORY_RENAME);
  await c.cdcErr('RENAME_DIRECTORY', mv(d1, p, '1', child, 'x'), ErrorCode.LOOP_IN_DIRECTORY_RENAME);
  await c.cdcErr('RENAME_DIRECTORY', mv(d1, p, '1', grandchild, 'x'), ErrorCode.LOOP_IN_DIRECTORY_RENAME);
  await c.cdcErr('RENAME_DIRECTORY', mv(d1, p, '1', d2, 'dir'), ErrorCode.CANNOT_OVERRIDE_NAME);
  await c.cdcErr('RENAME_DIRECTORY', mv(d1, p, '1', d2, 'file'), ErrorCode.CANNOT_OVERRIDE_NAME);
  await c.assertFsckClean('after refused renames');
  await c.cdc('RENAME_DIRECTORY', mv(d1, p, '1', d2, '1'));
  assert.equal(await c.lookup(p, '1'), undefined);
  assert.equal(await c.lookup(d2, '1'), d1);
  assert.equal(await c.owner(d1), d2, 'the moved directory points at its new parent');
  await c.cdc('RENAME_DIRECTORY', mv(d1, d2, '1', p, '1'));
  assert.equal(await c.lookup(p, '1'), d1);
  assert.equal(await c.owner(d1), p);
  await c.assertFsckClean();
});

test('loop case of §5.4: /1 → /2/1 then /2 → /2/1/x is refused (the prototype detached both)', async () => {
  const p = await freshDir();
  const d1 = await c.mkdir(p, '1');
  const d2 = await c.mkdir(p, '2');
  await c.cdc('RENAME_DIRECTORY', { targetId: d1, oldOwnerId: p, oldName: B('1'), newOwnerId: d2, newName: B('1') });
  await c.cdcErr('RENAME_DIRECTORY', { targetId: d2, oldOwnerId: p, oldName: B('2'), newOwnerId: d1, newName: B('x') }, ErrorCode.LOOP_IN_DIRECTORY_RENAME);
  assert.deepEqual(await c.listNames(p), ['2']);
  assert.equal(await c.owner(d2), p);
  await c.assertFsckClean();
});

test('racing directory renames /a → /b/a and /b → /a/b: exactly one wins, never a cycle', async () => {
  for (let round = 0; round < 5; round++) {
    const p = await freshDir();
    const a = await c.mkdir(p, 'a');
    const b = await c.mkdir(p, 'b');
    const [r1, r2] = await Promise.all([
      c.outcome('RENAME_DIRECTORY', { targetId: a, oldOwnerId: p, oldName: B('a'), newOwnerId: b, newName: B('a') }),
      c.outcome('RENAME_DIRECTORY', { targetId: b, oldOwnerId: p, oldName: B('b'), newOwnerId: a, newName: B('b') }),
    ]);
    const oks = [r1, r2].filter((r) => r.ok).length;
    assert.equal(oks, 1, `one rename succeeds: ${JSON.stringify([r1, r2].map((r) => (r.ok ? 'ok' : errorName(r.code))))}`);
    const failed = [r1, r2].find((r) => !r.ok)!;
    assert.equal(!failed.ok && errorName(failed.code), 'LOOP_IN_DIRECTORY_RENAME');
  }
  await c.assertFsckClean();
});

test('test_bad_soft_unlink_dir: SOFT_UNLINK_FILE of a directory entry → TYPE_IS_DIRECTORY', async () => {
  const p = await freshDir();
  const d = await c.mkdir(p, 'd');
  await c.shardErr('SOFT_UNLINK_FILE', { ownerId: p, fileId: d, name: B('d') }, shardOf(p), ErrorCode.TYPE_IS_DIRECTORY);
  assert.equal(await c.lookup(p, 'd'), d);
});

test('test_file_cycle: edge removal rules and FULL_READ_DIR after overwrite and rename', async () => {
  const p = await freshDir();
  const s = shardOf(p);
  const f1 = await c.createFile(p, 'a');
  const f2 = await c.createFile(p, 'a'); // overwrites: f1's edge becomes an owned snapshot
  const hist = async () => (await c.shard('FULL_READ_DIR', { dirId: p, startHash: 0n, startName: B(''), startTime: 0n }, s)).results;
  let edges = await hist();
  const e1 = edges.find((e) => (e.targetId & ~EXTRA_BIT) === f1)!;
  const e2 = edges.find((e) => (e.targetId & ~EXTRA_BIT) === f2)!;
  assert.ok(e1.targetId & EXTRA_BIT && e2.targetId & EXTRA_BIT, 'both own their file');
  const key = (e: typeof e1, target: bigint) => ({ dirId: p, targetId: target, name: e.name, creationTime: e.creationTime });
  await c.shardErr('REMOVE_NON_OWNED_EDGE', key(e2, f2), s, ErrorCode.EDGE_NOT_FOUND);
  await c.shardErr('REMOVE_NON_OWNED_EDGE', key(e1, f1), s, ErrorCode.EDGE_NOT_FOUND);
  await c.shard('REMOVE_OWNED_SNAPSHOT_FILE_EDGE', key(e1, f1), s);
  const transient = await c.shard('VISIT_TRANSIENT_FILES', { beginId: 0n }, s);
  assert.ok(transient.files.some((t) => t.id === f1), 'the overwritten file is transient again');
  await c.shard('SAME_DIRECTORY_RENAME', { targetId: f2, dirId: p, oldName: B('a'), newName: B('b') }, s);
  edges = await hist();
  const nonOwnedOld = edges.find((e) => e.name.toString() === 'a' && e.targetId === f2)!;
  const marker = edges.find((e) => e.name.toString() === 'a' && e.targetId === 0n)!;
  const owning = edges.find((e) => e.name.toString() === 'b')!;
  assert.ok(nonOwnedOld && marker && owning);
  assert.equal(owning.targetId, f2 | EXTRA_BIT);
  await c.shard('REMOVE_NON_OWNED_EDGE', key(nonOwnedOld, f2), s);
  await c.shard('REMOVE_NON_OWNED_EDGE', key(marker, 0n), s);
  edges = await hist();
  assert.deepEqual(edges.map((e) => e.name.toString()), ['b']);
  await c.assertFsckClean();
});

test('test_snapshot_directory: no new entries in a removed directory', async () => {
  const p = await freshDir();
  const d = await c.mkdir(p, 'd');
  await c.cdc('REMOVE_DIRECTORY', { ownerId: p, targetId: d, name: B('d') });
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: d, name: B('x') }, ErrorCode.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY);
  const f = await c.shard('CONSTRUCT_FILE', { type: InodeType.FILE }, shardOf(d));
  await c.shardErr('LINK_FILE', { fileId: f.id, cookie: f.cookie, ownerId: d, name: B('f') }, shardOf(d), ErrorCode.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY);
  await c.assertFsckClean();
});

/** A name in `dir` whose history holds a snapshot newer than now (so a CDC creation at "now" is refused). */
async function futureSnapshot(dir: bigint, name: string): Promise<void> {
  const future = eggsNow() + 3_600_000_000_000n;
  const target = await c.createFile(dir, `${name}-target`);
  // A locked edge created an hour ahead, then unlocked as moved: a snapshot dated in the future.
  await c.shard('CREATE_LOCKED_CURRENT_EDGE', { dirId: dir, name: B(name), targetId: target, creationTime: future }, shardOf(dir));
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: dir, name: B(name), targetId: target, wasMoved: true }, shardOf(dir));
}

test('MAKE_DIRECTORY errors', async () => {
  const p = await freshDir();
  const missing = makeInodeId(InodeType.DIRECTORY, 777_777n, 3);
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: missing, name: B('x') }, ErrorCode.DIRECTORY_NOT_FOUND);
  const file = await c.createFile(p, 'file');
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: file, name: B('x') }, ErrorCode.DIRECTORY_NOT_FOUND);
  // A locked entry (an in-flight transaction of some other CDC) → NAME_IS_LOCKED.
  const other = await c.mkdir(p, 'other');
  await c.shard('LOCK_CURRENT_EDGE', { dirId: p, name: B('other'), targetId: other }, shardOf(p));
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: p, name: B('other') }, ErrorCode.NAME_IS_LOCKED);
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: p, name: B('other'), targetId: other, wasMoved: false }, shardOf(p));
  await futureSnapshot(p, 'later');
  await c.cdcErr('MAKE_DIRECTORY', { ownerId: p, name: B('later') }, ErrorCode.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
  for (const bad of ['.', '..', 'a/b', 'a\0b']) await c.cdcErr('MAKE_DIRECTORY', { ownerId: p, name: B(bad) }, ErrorCode.MALFORMED_REQUEST);
  // None of the refusals left an entry behind.
  assert.deepEqual(await c.listNames(p), ['file', 'later-target', 'other']);
  await c.assertFsckClean();
});

test('RENAME_FILE errors', async () => {
  const [a, b] = await twoDirs();
  const f = await c.createFile(a, 'f');
  const g = await c.createFile(a, 'g');
  const missing = makeInodeId(InodeType.DIRECTORY, 777_777n, 5);
  const mv = (o: Partial<{ targetId: bigint; oldOwnerId: bigint; oldName: string; newOwnerId: bigint; newName: string }>) => ({
    targetId: o.targetId ?? f,
    oldOwnerId: o.oldOwnerId ?? a,
    oldName: B(o.oldName ?? 'f'),
    newOwnerId: o.newOwnerId ?? b,
    newName: B(o.newName ?? 'n'),
  });
  await c.cdcErr('RENAME_FILE', mv({ targetId: a }), ErrorCode.TYPE_IS_DIRECTORY);
  await c.cdcErr('RENAME_FILE', mv({ oldOwnerId: missing }), ErrorCode.OLD_DIRECTORY_NOT_FOUND);
  await c.cdcErr('RENAME_FILE', mv({ oldName: 'nope' }), ErrorCode.NAME_NOT_FOUND);
  await c.cdcErr('RENAME_FILE', mv({ targetId: g }), ErrorCode.MISMATCHING_TARGET);
  await c.cdcErr('RENAME_FILE', mv({ newOwnerId: missing }), ErrorCode.NEW_DIRECTORY_NOT_FOUND);
  const locked = await c.createFile(b, 'locked');
  await c.shard('LOCK_CURRENT_EDGE', { dirId: b, name: B('locked'), targetId: locked }, shardOf(b));
  await c.cdcErr('RENAME_FILE', mv({ newName: 'locked' }), ErrorCode.NEW_NAME_IS_LOCKED);
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: b, name: B('locked'), targetId: locked, wasMoved: false }, shardOf(b));
  await c.mkdir(b, 'dir');
  await c.cdcErr('RENAME_FILE', mv({ newName: 'dir' }), ErrorCode.CANNOT_OVERRIDE_NAME);
  await futureSnapshot(b, 'later');
  await c.cdcErr('RENAME_FILE', mv({ newName: 'later' }), ErrorCode.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
  const removed = await c.mkdir(b, 'removed');
  await c.cdc('REMOVE_DIRECTORY', { ownerId: b, targetId: removed, name: B('removed') });
  await c.cdcErr('RENAME_FILE', mv({ newOwnerId: removed }), ErrorCode.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY);
  await c.cdcErr('RENAME_FILE', mv({ newName: '..' }), ErrorCode.MALFORMED_REQUEST);
  // Same directory, same name: the source lock makes the destination locked.
  await c.cdcErr('RENAME_FILE', mv({ newOwnerId: a, newName: 'f' }), ErrorCode.NEW_NAME_IS_LOCKED);
  assert.equal(await c.lookup(a, 'f'), f, 'every refusal left the file where it was');
  // Overwriting a file is allowed (the old one stays as an owned snapshot).
  const victim = await c.createFile(b, 'victim');
  await c.cdc('RENAME_FILE', mv({ newName: 'victim' }));
  assert.equal(await c.lookup(b, 'victim'), f);
  assert.notEqual(victim, f);
  await c.assertFsckClean();
});

test('REMOVE_DIRECTORY errors', async () => {
  const p = await freshDir();
  const d = await c.mkdir(p, 'd');
  const f = await c.createFile(p, 'f');
  const missing = makeInodeId(InodeType.DIRECTORY, 777_777n, 9);
  await c.cdcErr('REMOVE_DIRECTORY', { ownerId: p, targetId: f, name: B('f') }, ErrorCode.TYPE_IS_NOT_DIRECTORY);
  await c.cdcErr('REMOVE_DIRECTORY', { ownerId: missing, targetId: d, name: B('d') }, ErrorCode.DIRECTORY_NOT_FOUND);
  await c.cdcErr('REMOVE_DIRECTORY', { ownerId: p, targetId: d, name: B('nope') }, ErrorCode.NAME_NOT_FOUND);
  await c.cdcErr('REMOVE_DIRECTORY', { ownerId: p, targetId: missing, name: B('d') }, ErrorCode.MISMATCHING_TARGET);
  await c.mkdir(d, 'inner');
  await c.cdcErr('REMOVE_DIRECTORY', { ownerId: p, targetId: d, name: B('d') }, ErrorCode.DIRECTORY_NOT_EMPTY);
  assert.equal(await c.owner(d), p);
  assert.equal(await c.lookup(p, 'd'), d);
  await c.assertFsckClean();
});

test('RENAME_DIRECTORY errors', async () => {
  const [a, b] = await twoDirs();
  const d = await c.mkdir(a, 'd');
  const f = await c.createFile(a, 'f');
  const missing = makeInodeId(InodeType.DIRECTORY, 777_777n, 11);
  const mv = (o: Partial<{ targetId: bigint; oldOwnerId: bigint; oldName: string; newOwnerId: bigint; newName: string }>) => ({
    targetId: o.targetId ?? d,
    oldOwnerId: o.oldOwnerId ?? a,
    oldName: B(o.oldName ?? 'd'),
    newOwnerId: o.newOwnerId ?? b,
    newName: B(o.newName ?? 'n'),
  });
  await c.cdcErr('RENAME_DIRECTORY', mv({ targetId: f, oldName: 'f' }), ErrorCode.TYPE_IS_NOT_DIRECTORY);
  await c.cdcErr('RENAME_DIRECTORY', mv({ newOwnerId: d }), ErrorCode.LOOP_IN_DIRECTORY_RENAME);
  await c.cdcErr('RENAME_DIRECTORY', mv({ oldOwnerId: missing }), ErrorCode.OLD_DIRECTORY_NOT_FOUND);
  await c.cdcErr('RENAME_DIRECTORY', mv({ oldName: 'nope' }), ErrorCode.NAME_NOT_FOUND);
  await c.cdcErr('RENAME_DIRECTORY', mv({ oldName: 'f' }), ErrorCode.MISMATCHING_TARGET);
  await c.cdcErr('RENAME_DIRECTORY', mv({ newOwnerId: missing }), ErrorCode.NEW_DIRECTORY_NOT_FOUND);
  await c.cdcErr('RENAME_DIRECTORY', mv({ newOwnerId: f }), ErrorCode.NEW_DIRECTORY_NOT_FOUND);
  const locked = await c.mkdir(b, 'locked');
  await c.shard('LOCK_CURRENT_EDGE', { dirId: b, name: B('locked'), targetId: locked }, shardOf(b));
  await c.cdcErr('RENAME_DIRECTORY', mv({ newName: 'locked' }), ErrorCode.NEW_NAME_IS_LOCKED);
  await c.shard('UNLOCK_CURRENT_EDGE', { dirId: b, name: B('locked'), targetId: locked, wasMoved: false }, shardOf(b));
  await c.cdcErr('RENAME_DIRECTORY', mv({ newName: 'locked' }), ErrorCode.CANNOT_OVERRIDE_NAME);
  await futureSnapshot(b, 'later');
  await c.cdcErr('RENAME_DIRECTORY', mv({ newName: 'later' }), ErrorCode.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS);
  const removed = await c.mkdir(b, 'removed');
  await c.cdc('REMOVE_DIRECTORY', { ownerId: b, targetId: removed, name: B('removed') });
  await c.cdcErr('RENAME_DIRECTORY', mv({ newOwnerId: removed }), ErrorCode.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY);
  await c.cdcErr('RENAME_DIRECTORY', mv({ newName: 'a/b' }), ErrorCode.MALFORMED_REQUEST);
  // A STAT failing on an ancestor of the new parent (not the parent itself) → INTERNAL_ERROR, rolled back.
  c.proxy!.addRule({ kind: 'STAT', match: (x) => x.id === ROOT, action: { t: 'error', code: ErrorCode.DIRECTORY_NOT_FOUND } });
  await c.cdcErr('RENAME_DIRECTORY', mv({}), ErrorCode.INTERNAL_ERROR);
  c.proxy!.clearRules();
  assert.equal(await c.lookup(a, 'd'), d, 'every refusal left the directory where it was');
  assert.equal(await c.owner(d), a);
  await c.assertFsckClean();
});

/** Send raw bytes to the CDC and collect what comes back within `waitMs`. */
async function rawExchange(datagrams: Buffer[], waitMs: number): Promise<Buffer[]> {
  const s = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  s.on('message', (m) => got.push(m));
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  for (const d of datagrams) s.send(d, c.cdcPort, '127.0.0.1');
  await new Promise((r) => setTimeout(r, waitMs));
  s.close();
  return got;
}

test('malformed datagrams get MALFORMED_REQUEST (or nothing without a request id) and never kill the CDC', async () => {
  const p = await freshDir();
  const good = encodeCdcRequest('MAKE_DIRECTORY', 42n, { ownerId: p, name: B('ok') });
  const cases: [string, Buffer, boolean][] = [
    ['empty', Buffer.alloc(0), false],
    ['bad magic', Buffer.from('XYZ\0\x01\0\0\0\0\0\0\0\x01'), false],
    ['magic only', good.subarray(0, 4), false],
    ['no kind', good.subarray(0, 12), true],
    ['unknown kind', Buffer.concat([good.subarray(0, 12), Buffer.from([0x09])]), true],
    ['kind 0', Buffer.concat([good.subarray(0, 12), Buffer.from([0x00])]), true],
    ['truncated body', good.subarray(0, good.length - 1), true],
    ['trailing bytes', Buffer.concat([good, Buffer.from([0])]), true],
    ['name longer than its bytes', Buffer.concat([good.subarray(0, 21), Buffer.from([200, 0x61])]), true],
  ];
  for (const [what, d, answered] of cases) {
    const got = await rawExchange([d], 150);
    if (!answered) {
      assert.equal(got.length, 0, `${what}: no answer`);
      continue;
    }
    assert.equal(got.length, 1, `${what}: one answer`);
    const r = decodeResponse(CDC_PROTOCOL, got[0]!, CDC_MESSAGES.MAKE_DIRECTORY);
    assert.equal(r.requestId, 42n, what);
    assert.equal(errorName(r.error!), 'MALFORMED_REQUEST', what);
  }
  assert.equal(c.cdcProc.proc.exitCode, null, 'still running');
  await c.mkdir(p, 'after');
  assert.deepEqual(await c.listNames(p), ['after']);
});

test('client retries with the same request id are answered from the stored response, also after a restart', async () => {
  const p = await freshDir();
  const s = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  s.on('message', (m) => got.push(m));
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const req = encodeCdcRequest('MAKE_DIRECTORY', 0xfeedfacecafebeefn, { ownerId: p, name: B('once') });
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
  try {
    // Twice at once: the copy arriving while the transaction runs is not answered separately.
    s.send(req, c.cdcPort, '127.0.0.1');
    s.send(req, c.cdcPort, '127.0.0.1');
    await wait(400);
    assert.equal(got.length, 1);
    // Retries after completion: the stored answer, no new transaction.
    s.send(req, c.cdcPort, '127.0.0.1');
    s.send(req, c.cdcPort, '127.0.0.1');
    await wait(200);
    assert.equal(got.length, 3);
    const answers = got.map((m) => decodeResponse(CDC_PROTOCOL, m, CDC_MESSAGES.MAKE_DIRECTORY));
    const id = answers[0]!.body!.id as bigint;
    for (const a of answers) {
      assert.equal(a.error, undefined);
      assert.equal(a.requestId, 0xfeedfacecafebeefn);
      assert.equal(a.body.id, id);
    }
    assert.equal(await c.lookup(p, 'once'), id);
    // After kill -9 and restart of the CDC, the same retry still gets the same answer.
    await c.restartCdc();
    s.send(req, c.cdcPort, '127.0.0.1');
    await wait(300);
    assert.equal(got.length, 4);
    assert.deepEqual(got[3], got[0]);
    // The same request id with a different body is a new request.
    const other = encodeCdcRequest('MAKE_DIRECTORY', 0xfeedfacecafebeefn, { ownerId: p, name: B('other') });
    s.send(other, c.cdcPort, '127.0.0.1');
    await wait(300);
    assert.equal(got.length, 5);
    const o = decodeResponse(CDC_PROTOCOL, got[4]!, CDC_MESSAGES.MAKE_DIRECTORY);
    assert.equal(o.error, undefined);
    assert.notEqual(o.body.id, id);
  } finally {
    s.close();
  }
  assert.deepEqual(await c.listNames(p), ['once', 'other']);
  await c.assertFsckClean();
});

test('a full queue is answered TIMEOUT at once, and the queued work still completes', async () => {
  const q = await CdcCluster.start({ proxy: true, cdcArgs: ['--max-running', '1', '--max-queued', '1'] });
  try {
    const held = q.proxy!.addRule({ kind: 'CREATE_DIRECTORY_INODE', times: 1_000, action: { t: 'hold' } });
    const first = q.outcome('MAKE_DIRECTORY', { ownerId: ROOT, name: B('one') });
    await held.firedOnce;
    const second = q.outcome('MAKE_DIRECTORY', { ownerId: ROOT, name: B('two') });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    const third = await q.outcome('MAKE_DIRECTORY', { ownerId: ROOT, name: B('three') });
    assert.equal(!third.ok && errorName(third.code), 'TIMEOUT');
    assert.ok(Date.now() - t0 < 1_000, 'answered at once');
    q.proxy!.clearRules();
    q.proxy!.releaseHeld();
    assert.ok((await first).ok);
    assert.ok((await second).ok);
    assert.deepEqual(await q.listNames(ROOT), ['one', 'two']);
    await q.assertFsckClean();
  } finally {
    await q.stop();
  }
});

test('a duplicated moved-unlock whose first answer is lost: NAME_NOT_FOUND on the first send is checked with LOOKUP, not FATAL', async () => {
  const [a, b] = await twoDirs();
  // RENAME_FILE
  const f = await c.createFile(a, 'f');
  let logStart = c.proxy!.log.length;
  let rule = c.proxy!.addRule({ kind: 'UNLOCK_CURRENT_EDGE', match: (x) => x.dirId === a && x.wasMoved, action: { t: 'duplicate-lose-first-answer' } });
  await c.cdc('RENAME_FILE', { targetId: f, oldOwnerId: a, oldName: B('f'), newOwnerId: b, newName: B('f') });
  c.proxy!.clearRules();
  assert.equal(rule.fired, 1);
  assert.ok(c.proxy!.log.slice(logStart).some((r) => r.kind === 'LOOKUP' && r.body.dirId === a), 'the CDC looked');
  assert.equal(await c.lookup(b, 'f'), f);
  // REMOVE_DIRECTORY
  const d = await c.mkdir(a, 'd');
  logStart = c.proxy!.log.length;
  rule = c.proxy!.addRule({ kind: 'UNLOCK_CURRENT_EDGE', match: (x) => x.dirId === a && x.wasMoved, action: { t: 'duplicate-lose-first-answer' } });
  await c.cdc('REMOVE_DIRECTORY', { ownerId: a, targetId: d, name: B('d') });
  c.proxy!.clearRules();
  assert.equal(rule.fired, 1);
  assert.ok(c.proxy!.log.slice(logStart).some((r) => r.kind === 'LOOKUP' && r.body.dirId === a));
  assert.equal(await c.owner(d), NULL_INODE_ID);
  // RENAME_DIRECTORY
  const e = await c.mkdir(a, 'e');
  logStart = c.proxy!.log.length;
  rule = c.proxy!.addRule({ kind: 'UNLOCK_CURRENT_EDGE', match: (x) => x.dirId === a && x.wasMoved, action: { t: 'duplicate-lose-first-answer' } });
  await c.cdc('RENAME_DIRECTORY', { targetId: e, oldOwnerId: a, oldName: B('e'), newOwnerId: b, newName: B('e') });
  c.proxy!.clearRules();
  assert.equal(rule.fired, 1);
  assert.ok(c.proxy!.log.slice(logStart).some((r) => r.kind === 'LOOKUP' && r.body.dirId === a));
  assert.equal(await c.lookup(b, 'e'), e);
  assert.equal(await c.owner(e), b);
  await c.assertFsckClean();
});
