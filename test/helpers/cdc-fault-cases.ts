// The fault matrix of the CDC: for each transaction type, every step with the shard request it
// sends, the errors that request can receive, what the client must then be told, and how an
// operator would finish a transaction that ended FATAL_ERROR. Used by test/cdc-faults*.test.ts.
import assert from 'node:assert/strict';
import { ErrorCode, errorName } from '../../src/proto/errors.js';
import { NULL_INODE_ID, ROOT_DIR_INODE_ID, shardOf } from '../../src/proto/ids.js';
import type { CdcKindName, ShardKindName } from '../../src/proto/messages.js';
import type { CdcCluster, Outcome } from './cdc-fixture.js';
import type { FaultAction } from './udp-fault-proxy.js';

const B = (s: string) => Buffer.from(s);
const E = ErrorCode;
const same = (code: number) => code;
const fatal = () => E.FATAL_ERROR;
const mapping = (m: Record<number, number>) => (code: number) => m[code] ?? code;

export interface StepSpec {
  /** Step name in src/cdc/transactions.ts (for crash points). */
  step: string;
  kind: ShardKindName;
  match(s: any, body: any): boolean;
  /** Errors the shard can answer this request with. */
  errors: number[];
  /** What the client is told when the request definitively fails with `code` ('done': success). */
  expect(code: number): number | 'done';
  /** After a FATAL_ERROR: finish by hand (as an operator would), leaving the namespace `repaired`. */
  repair?(c: CdcCluster, s: any): Promise<void>;
  repaired?: 'done' | 'undone';
  /**
   * Steps off the main path (rollbacks, verifications) are reached by a fault at an earlier step:
   * an error `code` (or another `action`); the client then sees `expect`.
   */
  via?: { kind: ShardKindName; match(s: any, body: any): boolean; code?: number; action?: FaultAction; expect: number | 'done' };
  /** No crash-point variant (a second request of the same step name). */
  noCrash?: boolean;
}

export interface TxnCase {
  kind: CdcKindName;
  setup(c: CdcCluster): Promise<any>;
  request(s: any): any;
  checkDone(c: CdcCluster, s: any, o: Outcome): Promise<void>;
  checkUndone(c: CdcCluster, s: any): Promise<void>;
  steps: StepSpec[];
}

let seq = 0;
async function fresh(c: CdcCluster): Promise<bigint> {
  return c.mkdir(ROOT_DIR_INODE_ID, `fault${++seq}`);
}
async function twoShards(c: CdcCluster): Promise<[bigint, bigint]> {
  const a = await fresh(c);
  const b = await fresh(c);
  assert.notEqual(shardOf(a), shardOf(b));
  return [a, b];
}
const unlock = (c: CdcCluster, dir: bigint, name: string, target: bigint, wasMoved: boolean) =>
  c.shard('UNLOCK_CURRENT_EDGE', { dirId: dir, name: B(name), targetId: target, wasMoved }, shardOf(dir));
const setOwner = (c: CdcCluster, dir: bigint, owner: bigint) => c.shard('SET_DIRECTORY_OWNER', { dirId: dir, ownerId: owner }, shardOf(dir));

const LOCK_ERRORS = [E.DIRECTORY_NOT_FOUND, E.NAME_NOT_FOUND, E.MISMATCHING_TARGET, E.INTERNAL_ERROR];
const UNLOCK_ERRORS = [E.DIRECTORY_NOT_FOUND, E.NAME_NOT_FOUND, E.MISMATCHING_TARGET, E.INTERNAL_ERROR];
const CREATE_EDGE_ERRORS = [
  E.DIRECTORY_NOT_FOUND,
  E.NAME_IS_LOCKED,
  E.MORE_RECENT_SNAPSHOT_ALREADY_EXISTS,
  E.CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY,
  E.CANNOT_OVERRIDE_NAME,
  E.INTERNAL_ERROR,
];

/**
 * The end of every transaction that moves or removes the edge `dir/name` → target: the LOOKUP that
 * settles an ambiguous moved-unlock (reached by losing the first answer of a duplicated unlock),
 * and the rollback that unlocks the edge in place, reached by `rollbackVia`.
 */
function verifyGoneAndRollback(
  verifyStep: string,
  dir: (s: any) => bigint,
  name: string,
  target: (s: any) => bigint,
  rollbackVia: NonNullable<StepSpec['via']>,
): StepSpec[] {
  return [
    {
      step: verifyStep,
      kind: 'LOOKUP',
      match: (s, b) => b.dirId === dir(s),
      errors: [E.DIRECTORY_NOT_FOUND, E.NAME_NOT_FOUND, E.INTERNAL_ERROR],
      expect: () => 'done',
      via: {
        kind: 'UNLOCK_CURRENT_EDGE',
        match: (s, b) => b.dirId === dir(s) && b.wasMoved,
        action: { t: 'duplicate-lose-first-answer' },
        expect: 'done',
      },
    },
    {
      step: 'rollback_resp',
      kind: 'UNLOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === dir(s) && !b.wasMoved,
      errors: UNLOCK_ERRORS,
      expect: fatal,
      repair: async (c, s) => void (await unlock(c, dir(s), name, target(s), false)),
      repaired: 'undone',
      via: rollbackVia,
    },
  ];
}

// --- MAKE_DIRECTORY {p, 'x'} -------------------------------------------------------------------

/** The directory id the CDC allocated for the scenario's mkdir (from the proxy's log). */
function newDirOf(c: CdcCluster, p: bigint): bigint {
  const r = [...c.proxy!.log].reverse().find((x) => x.kind === 'CREATE_DIRECTORY_INODE' && x.body.ownerId === p);
  assert.ok(r, 'CREATE_DIRECTORY_INODE seen');
  return r.body.id;
}

const makeDirectory: TxnCase = {
  kind: 'MAKE_DIRECTORY',
  setup: async (c) => ({ p: await fresh(c) }),
  request: (s) => ({ ownerId: s.p, name: B('x') }),
  async checkDone(c, s, o) {
    const id = o.ok ? o.body.id : newDirOf(c, s.p);
    assert.equal(await c.lookup(s.p, 'x'), id);
    assert.equal(await c.owner(id), s.p);
  },
  async checkUndone(c, s) {
    assert.equal(await c.lookup(s.p, 'x'), undefined);
  },
  steps: [
    {
      step: 'create_dir_resp',
      kind: 'CREATE_DIRECTORY_INODE',
      match: (s, b) => b.ownerId === s.p,
      errors: [E.TYPE_IS_NOT_DIRECTORY, E.MISMATCHING_OWNER, E.INTERNAL_ERROR],
      expect: () => E.INTERNAL_ERROR,
    },
    { step: 'create_locked_edge_resp', kind: 'CREATE_LOCKED_CURRENT_EDGE', match: (s, b) => b.dirId === s.p, errors: CREATE_EDGE_ERRORS, expect: same },
    {
      step: 'unlock_edge_resp',
      kind: 'UNLOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.p,
      errors: UNLOCK_ERRORS,
      expect: fatal,
      repair: async (c, s) => void (await unlock(c, s.p, 'x', newDirOf(c, s.p), false)),
      repaired: 'done',
    },
    {
      step: 'rollback_resp',
      kind: 'SET_DIRECTORY_OWNER',
      match: (_s, b) => b.ownerId === NULL_INODE_ID,
      errors: [E.DIRECTORY_NOT_FOUND, E.INTERNAL_ERROR],
      expect: fatal,
      repair: async (c, s) => void (await setOwner(c, newDirOf(c, s.p), NULL_INODE_ID)),
      repaired: 'undone',
      via: { kind: 'CREATE_LOCKED_CURRENT_EDGE', match: (s, b) => b.dirId === s.p, code: E.NAME_IS_LOCKED, expect: E.NAME_IS_LOCKED },
    },
  ],
};

// --- RENAME_FILE {f, a/'f' → b/'g'} --------------------------------------------------------------

const renameFile: TxnCase = {
  kind: 'RENAME_FILE',
  async setup(c) {
    const [a, b] = await twoShards(c);
    return { a, b, f: await c.createFile(a, 'f') };
  },
  request: (s) => ({ targetId: s.f, oldOwnerId: s.a, oldName: B('f'), newOwnerId: s.b, newName: B('g') }),
  async checkDone(c, s) {
    assert.equal(await c.lookup(s.a, 'f'), undefined);
    assert.equal(await c.lookup(s.b, 'g'), s.f);
  },
  async checkUndone(c, s) {
    assert.equal(await c.lookup(s.a, 'f'), s.f);
    assert.equal(await c.lookup(s.b, 'g'), undefined);
  },
  steps: [
    {
      step: 'lock_old_resp',
      kind: 'LOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.a,
      errors: LOCK_ERRORS,
      expect: mapping({ [E.DIRECTORY_NOT_FOUND]: E.OLD_DIRECTORY_NOT_FOUND }),
    },
    {
      step: 'create_new_locked_edge_resp',
      kind: 'CREATE_LOCKED_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.b,
      errors: CREATE_EDGE_ERRORS,
      expect: mapping({ [E.DIRECTORY_NOT_FOUND]: E.NEW_DIRECTORY_NOT_FOUND, [E.NAME_IS_LOCKED]: E.NEW_NAME_IS_LOCKED }),
    },
    {
      step: 'unlock_new_edge_resp',
      kind: 'UNLOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.b && !b.wasMoved,
      errors: UNLOCK_ERRORS,
      expect: fatal,
      async repair(c, s) {
        await unlock(c, s.b, 'g', s.f, false);
        await unlock(c, s.a, 'f', s.f, true);
      },
      repaired: 'done',
    },
    {
      step: 'unlock_old_edge_resp',
      kind: 'UNLOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.a && b.wasMoved,
      errors: UNLOCK_ERRORS,
      expect: fatal,
      repair: async (c, s) => void (await unlock(c, s.a, 'f', s.f, true)),
      repaired: 'done',
    },
    ...verifyGoneAndRollback('verify_old_gone_resp', (s) => s.a, 'f', (s) => s.f, {
      kind: 'CREATE_LOCKED_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.b,
      code: E.NAME_IS_LOCKED,
      expect: E.NEW_NAME_IS_LOCKED,
    }),
  ],
};

// --- REMOVE_DIRECTORY {p/'d' = d} -----------------------------------------------------------------

const removeDirectory: TxnCase = {
  kind: 'REMOVE_DIRECTORY',
  async setup(c) {
    const p = await fresh(c);
    return { p, d: await c.mkdir(p, 'd') };
  },
  request: (s) => ({ ownerId: s.p, targetId: s.d, name: B('d') }),
  async checkDone(c, s) {
    assert.equal(await c.lookup(s.p, 'd'), undefined);
    assert.equal(await c.owner(s.d), NULL_INODE_ID);
  },
  async checkUndone(c, s) {
    assert.equal(await c.lookup(s.p, 'd'), s.d);
    assert.equal(await c.owner(s.d), s.p);
  },
  steps: [
    { step: 'lock_resp', kind: 'LOCK_CURRENT_EDGE', match: (s, b) => b.dirId === s.p, errors: LOCK_ERRORS, expect: same },
    {
      step: 'remove_owner_resp',
      kind: 'SET_DIRECTORY_OWNER',
      match: (s, b) => b.dirId === s.d,
      errors: [E.DIRECTORY_NOT_EMPTY, E.DIRECTORY_NOT_FOUND, E.INTERNAL_ERROR],
      expect: same,
    },
    {
      step: 'unlock_resp',
      kind: 'UNLOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.p && b.wasMoved,
      errors: UNLOCK_ERRORS,
      expect: fatal,
      repair: async (c, s) => void (await unlock(c, s.p, 'd', s.d, true)),
      repaired: 'done',
    },
    ...verifyGoneAndRollback('verify_gone_resp', (s) => s.p, 'd', (s) => s.d, {
      kind: 'SET_DIRECTORY_OWNER',
      match: (s, b) => b.dirId === s.d,
      code: E.DIRECTORY_NOT_EMPTY,
      expect: E.DIRECTORY_NOT_EMPTY,
    }),
  ],
};

// --- RENAME_DIRECTORY {d, a/'d' → b/'e'} -----------------------------------------------------------

const renameDirectory: TxnCase = {
  kind: 'RENAME_DIRECTORY',
  async setup(c) {
    const [a, b] = await twoShards(c);
    return { a, b, d: await c.mkdir(a, 'd') };
  },
  request: (s) => ({ targetId: s.d, oldOwnerId: s.a, oldName: B('d'), newOwnerId: s.b, newName: B('e') }),
  async checkDone(c, s) {
    assert.equal(await c.lookup(s.a, 'd'), undefined);
    assert.equal(await c.lookup(s.b, 'e'), s.d);
    assert.equal(await c.owner(s.d), s.b);
  },
  async checkUndone(c, s) {
    assert.equal(await c.lookup(s.a, 'd'), s.d);
    assert.equal(await c.lookup(s.b, 'e'), undefined);
    assert.equal(await c.owner(s.d), s.a);
  },
  steps: [
    {
      step: 'lock_old_resp',
      kind: 'LOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.a,
      errors: LOCK_ERRORS,
      expect: mapping({ [E.DIRECTORY_NOT_FOUND]: E.OLD_DIRECTORY_NOT_FOUND }),
    },
    {
      step: 'stat_resp',
      kind: 'STAT',
      match: (s, b) => b.id === s.b,
      errors: [E.DIRECTORY_NOT_FOUND, E.INTERNAL_ERROR],
      expect: mapping({ [E.DIRECTORY_NOT_FOUND]: E.NEW_DIRECTORY_NOT_FOUND }),
    },
    {
      step: 'stat_resp',
      kind: 'STAT',
      match: (_s, b) => b.id === ROOT_DIR_INODE_ID,
      errors: [E.DIRECTORY_NOT_FOUND, E.INTERNAL_ERROR],
      expect: () => E.INTERNAL_ERROR,
      noCrash: true,
    },
    {
      step: 'create_new_resp',
      kind: 'CREATE_LOCKED_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.b,
      errors: CREATE_EDGE_ERRORS,
      expect: mapping({ [E.DIRECTORY_NOT_FOUND]: E.NEW_DIRECTORY_NOT_FOUND, [E.NAME_IS_LOCKED]: E.NEW_NAME_IS_LOCKED }),
    },
    {
      step: 'unlock_new_resp',
      kind: 'UNLOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.b && !b.wasMoved,
      errors: UNLOCK_ERRORS,
      expect: fatal,
      async repair(c, s) {
        await unlock(c, s.b, 'e', s.d, false);
        await unlock(c, s.a, 'd', s.d, true);
        await setOwner(c, s.d, s.b);
      },
      repaired: 'done',
    },
    {
      step: 'unlock_old_resp',
      kind: 'UNLOCK_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.a && b.wasMoved,
      errors: UNLOCK_ERRORS,
      expect: fatal,
      async repair(c, s) {
        await unlock(c, s.a, 'd', s.d, true);
        await setOwner(c, s.d, s.b);
      },
      repaired: 'done',
    },
    {
      step: 'set_owner_resp',
      kind: 'SET_DIRECTORY_OWNER',
      match: (s, b) => b.dirId === s.d,
      errors: [E.DIRECTORY_NOT_FOUND, E.INTERNAL_ERROR],
      expect: fatal,
      repair: async (c, s) => void (await setOwner(c, s.d, s.b)),
      repaired: 'done',
    },
    ...verifyGoneAndRollback('verify_old_gone_resp', (s) => s.a, 'd', (s) => s.d, {
      kind: 'CREATE_LOCKED_CURRENT_EDGE',
      match: (s, b) => b.dirId === s.b,
      code: E.NAME_IS_LOCKED,
      expect: E.NEW_NAME_IS_LOCKED,
    }),
  ],
};

export const TXN_CASES: TxnCase[] = [makeDirectory, renameFile, removeDirectory, renameDirectory];

export function stepLabel(tc: TxnCase, st: StepSpec): string {
  const via = st.via ? ` after ${st.via.code !== undefined ? errorName(st.via.code) : `${st.via.kind} ${st.via.action!.t}`}` : '';
  return `${tc.kind} ${st.step} (${st.kind}${via})`;
}

/** Arm the rule that leads to a rollback step, if it is one. */
export function armVia(c: CdcCluster, st: StepSpec, s: any): void {
  if (st.via) c.proxy!.addRule({ kind: st.via.kind, match: (b) => st.via!.match(s, b), action: st.via.action ?? { t: 'error', code: st.via.code! } });
}

/** The outcome a transient fault (anything but a definitive error) must not change. */
export async function checkUnaffected(c: CdcCluster, tc: TxnCase, st: StepSpec, s: any, o: Outcome, what: string): Promise<void> {
  if (st.via && st.via.expect !== 'done') {
    assert.equal(o.ok ? 'success' : errorName(o.code), errorName(st.via.expect), `${what}: the rollback's cause is reported`);
    await tc.checkUndone(c, s);
  } else {
    assert.ok(o.ok, `${what}: succeeds despite the fault, got ${o.ok ? '' : errorName(o.code)}`);
    await tc.checkDone(c, s, o);
  }
}

export const NET_FAULTS: { name: string; action: (shardTimeoutMs: number) => FaultAction }[] = [
  { name: 'dropped', action: () => ({ t: 'drop' }) },
  { name: 'delayed past the timeout', action: (ms) => ({ t: 'delay', ms: ms * 3 }) },
  { name: 'duplicated', action: () => ({ t: 'duplicate' }) },
  { name: 'executed but answer lost', action: () => ({ t: 'drop-reply' }) },
];
