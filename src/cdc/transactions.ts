// The four CDC transactions as step machines (metadata.md §5.4), pure functions of (request,
// persisted state, shard answer). The server persists `step` + `state` + the shard request a step
// returns before sending it, so any step can be re-entered after a crash by resending that request.
//
// Differences from the prototype, all deliberate (metadata.md §5.6, §8 items 24–28):
// - RENAME_DIRECTORY ends with SET_DIRECTORY_OWNER {target, new_owner}, so parent pointers stay
//   true and the loop check holds; its source-side DIRECTORY_NOT_FOUND maps to
//   OLD_DIRECTORY_NOT_FOUND like RENAME_FILE's.
// - Edge creation times are taken when the edge creation is issued (also for RENAME_FILE), and
//   travel only inside the persisted request body, which is resent verbatim.
// - UNLOCK_CURRENT_EDGE with was_moved = true answered NAME_NOT_FOUND / MISMATCHING_TARGET is
//   success when it may have run before (see movedUnlock): our locked edge cannot have been
//   removed by anyone else, so its absence means an earlier copy of the request did it.
// - Requests that cannot succeed are refused before any shard is touched (no directory id is
//   consumed, no orphan directory is made): bad names, owners that are not directory ids.
import { ErrorCode } from '../proto/errors.js';
import { invalidNameReason } from '../proto/hash.js';
import { InodeType, NULL_INODE_ID, inodeType, shardOf } from '../proto/ids.js';
import type { CdcKindName, CdcReq, ShardKindName, ShardReq } from '../proto/messages.js';
import { MAX_DIRECTORY_DEPTH } from './limits.js';

/** What a shard said to the last request: a body, or a definitive error code. */
export type ShardAnswer =
  | { ok: true; body: any }
  | {
      ok: false;
      code: number;
      /** The request may have been executed before (resent, or resumed after a restart). */
      maybeRepeated: boolean;
    };

export type StepResult =
  | { t: 'shard'; step: string; shard: number; kind: ShardKindName; body: any }
  | { t: 'reply'; body: any }
  | { t: 'error'; code: number; why: string };

export interface TxnContext {
  allocateDirectoryId(): bigint;
  now(): bigint;
}

export interface TxnDef<K extends CdcKindName> {
  /** In-memory locks (see locks.ts): edges `dir/name` the transaction creates, locks or moves. */
  locks(req: CdcReq<K>): string[];
  begin(req: CdcReq<K>, state: any, ctx: TxnContext): StepResult;
  steps: Record<string, (req: CdcReq<K>, state: any, ans: ShardAnswer, ctx: TxnContext) => StepResult>;
}

export function edgeLockKey(dirId: bigint, name: Buffer): string {
  return `e:${dirId.toString(16)}/${name.toString('hex')}`;
}
/** Held by every RENAME_DIRECTORY: the only transaction that re-parents a live directory. */
export const RENAME_DIRECTORY_LOCK = 'rename-directory';

function shard<K extends ShardKindName>(step: string, kind: K, to: bigint, body: ShardReq<K>): StepResult {
  return { t: 'shard', step, shard: shardOf(to), kind, body };
}
function fail(code: number, why: string): StepResult {
  return { t: 'error', code, why };
}
function fatal(what: string, ans: ShardAnswer): StepResult {
  return fail(ErrorCode.FATAL_ERROR, `${what} failed with ${ans.ok ? 'success?' : ans.code}; state left inconsistent`);
}
function mapCode(code: number, map: Partial<Record<number, number>>): number {
  return map[code] ?? code;
}
const isDir = (id: bigint) => inodeType(id) === InodeType.DIRECTORY;
/**
 * How a moved-unlock (UNLOCK_CURRENT_EDGE, was_moved = true) went. It is the one CDC request that
 * is not idempotent: repeated, it finds no edge (NAME_NOT_FOUND, or MISMATCHING_TARGET once a
 * client reused the freed name). Our edge is locked and in-memory locked by us, so nobody else can
 * have removed it: when we resent the request (or resumed after a restart) that answer means
 * done. When we sent it once, a duplicated datagram may still have run first with its answer
 * lost, so we LOOKUP the name: our edge gone = done, still there = the unlock really failed.
 */
function movedUnlock(ans: ShardAnswer): 'done' | 'verify' | 'failed' {
  if (ans.ok) return 'done';
  if (ans.code !== ErrorCode.NAME_NOT_FOUND && ans.code !== ErrorCode.MISMATCHING_TARGET) return 'failed';
  return ans.maybeRepeated ? 'done' : 'verify';
}
/** LOOKUPs are read-only: an error other than NAME_NOT_FOUND is retried this many times. */
export const MAX_VERIFY_LOOKUPS = 5;
function lookupEdge(step: string, s: any, dir: bigint, name: Buffer): StepResult {
  s.verifyLookups = (s.verifyLookups ?? 0) + 1;
  return shard(step, 'LOOKUP', dir, { dirId: dir, name });
}
/** The LOOKUP after an ambiguous moved-unlock: is our edge (dir/name → target) gone? */
function edgeGone(ans: ShardAnswer, target: bigint): 'gone' | 'there' | 'unknown' {
  if (ans.ok) return ans.body.targetId !== target ? 'gone' : 'there';
  return ans.code === ErrorCode.NAME_NOT_FOUND ? 'gone' : 'unknown';
}
/** Next step after a verification LOOKUP answered `ans`. */
function afterVerify(step: string, s: any, dir: bigint, name: Buffer, target: bigint, ans: ShardAnswer, done: () => StepResult): StepResult {
  const g = edgeGone(ans, target);
  if (g === 'gone') return done();
  if (g === 'unknown' && s.verifyLookups < MAX_VERIFY_LOOKUPS) return lookupEdge(step, s, dir, name);
  return fatal(`UNLOCK_CURRENT_EDGE (moved) of ${name.toString('utf8')} (${g === 'there' ? 'edge still there' : 'cannot look'})`, ans);
}
function badName(name: Buffer): string | undefined {
  return invalidNameReason(name);
}

// ---------------------------------------------------------------------------------------------
// MAKE_DIRECTORY {owner_id, name} → {id}

const makeDirectory: TxnDef<'MAKE_DIRECTORY'> = {
  locks: (r) => [edgeLockKey(r.ownerId, r.name)],
  begin(r, s, ctx) {
    const bad = badName(r.name);
    if (bad) return fail(ErrorCode.MALFORMED_REQUEST, bad);
    if (!isDir(r.ownerId)) return fail(ErrorCode.DIRECTORY_NOT_FOUND, 'owner is not a directory id');
    s.dirId = ctx.allocateDirectoryId();
    s.exitError = null;
    return shard('create_dir_resp', 'CREATE_DIRECTORY_INODE', s.dirId, { id: s.dirId, ownerId: r.ownerId, opaque: Buffer.alloc(0) });
  },
  steps: {
    create_dir_resp(r, s, ans, ctx) {
      // Nothing exists yet (shard requests are atomic), so nothing to roll back.
      if (!ans.ok) return fail(ErrorCode.INTERNAL_ERROR, `CREATE_DIRECTORY_INODE failed with ${ans.code}`);
      return shard('create_locked_edge_resp', 'CREATE_LOCKED_CURRENT_EDGE', r.ownerId, {
        dirId: r.ownerId,
        name: r.name,
        targetId: s.dirId,
        creationTime: ctx.now(),
      });
    },
    create_locked_edge_resp(r, s, ans) {
      if (!ans.ok) {
        s.exitError = ans.code;
        return shard('rollback_resp', 'SET_DIRECTORY_OWNER', s.dirId, { dirId: s.dirId, ownerId: NULL_INODE_ID });
      }
      return shard('unlock_edge_resp', 'UNLOCK_CURRENT_EDGE', r.ownerId, { dirId: r.ownerId, name: r.name, targetId: s.dirId, wasMoved: false });
    },
    unlock_edge_resp(_r, s, ans) {
      if (!ans.ok) return fatal('UNLOCK_CURRENT_EDGE of the new directory', ans);
      return { t: 'reply', body: { id: s.dirId } };
    },
    rollback_resp(_r, s, ans) {
      if (!ans.ok) return fatal('rollback SET_DIRECTORY_OWNER(0)', ans);
      return fail(s.exitError, 'edge creation failed, new directory disowned');
    },
  },
};

// ---------------------------------------------------------------------------------------------
// RENAME_FILE {target_id, old_owner_id, old_name, new_owner_id, new_name} → {}

const renameFile: TxnDef<'RENAME_FILE'> = {
  locks: (r) => [edgeLockKey(r.oldOwnerId, r.oldName), edgeLockKey(r.newOwnerId, r.newName)],
  begin(r, s) {
    if (isDir(r.targetId)) return fail(ErrorCode.TYPE_IS_DIRECTORY, 'RENAME_FILE of a directory');
    const bad = badName(r.newName);
    if (bad) return fail(ErrorCode.MALFORMED_REQUEST, bad);
    s.exitError = null;
    return shard('lock_old_resp', 'LOCK_CURRENT_EDGE', r.oldOwnerId, { dirId: r.oldOwnerId, name: r.oldName, targetId: r.targetId });
  },
  steps: {
    lock_old_resp(r, _s, ans, ctx) {
      if (!ans.ok) {
        const code = mapCode(ans.code, {
          [ErrorCode.DIRECTORY_NOT_FOUND]: ErrorCode.OLD_DIRECTORY_NOT_FOUND,
          [ErrorCode.NAME_IS_LOCKED]: ErrorCode.OLD_NAME_IS_LOCKED,
        });
        return fail(code, 'locking the source edge failed');
      }
      return shard('create_new_locked_edge_resp', 'CREATE_LOCKED_CURRENT_EDGE', r.newOwnerId, {
        dirId: r.newOwnerId,
        name: r.newName,
        targetId: r.targetId,
        creationTime: ctx.now(),
      });
    },
    create_new_locked_edge_resp(r, s, ans) {
      if (!ans.ok) {
        s.exitError = mapCode(ans.code, {
          [ErrorCode.DIRECTORY_NOT_FOUND]: ErrorCode.NEW_DIRECTORY_NOT_FOUND,
          [ErrorCode.NAME_IS_LOCKED]: ErrorCode.NEW_NAME_IS_LOCKED,
        });
        return shard('rollback_resp', 'UNLOCK_CURRENT_EDGE', r.oldOwnerId, { dirId: r.oldOwnerId, name: r.oldName, targetId: r.targetId, wasMoved: false });
      }
      return shard('unlock_new_edge_resp', 'UNLOCK_CURRENT_EDGE', r.newOwnerId, { dirId: r.newOwnerId, name: r.newName, targetId: r.targetId, wasMoved: false });
    },
    unlock_new_edge_resp(r, _s, ans) {
      if (!ans.ok) return fatal('UNLOCK_CURRENT_EDGE of the destination', ans);
      return shard('unlock_old_edge_resp', 'UNLOCK_CURRENT_EDGE', r.oldOwnerId, { dirId: r.oldOwnerId, name: r.oldName, targetId: r.targetId, wasMoved: true });
    },
    unlock_old_edge_resp(r, s, ans) {
      const m = movedUnlock(ans);
      if (m === 'failed') return fatal('UNLOCK_CURRENT_EDGE (moved) of the source', ans);
      if (m === 'verify') return lookupEdge('verify_old_gone_resp', s, r.oldOwnerId, r.oldName);
      return { t: 'reply', body: {} };
    },
    verify_old_gone_resp(r, s, ans) {
      return afterVerify('verify_old_gone_resp', s, r.oldOwnerId, r.oldName, r.targetId, ans, () => ({ t: 'reply', body: {} }));
    },
    rollback_resp(_r, s, ans) {
      if (!ans.ok) return fatal('rollback UNLOCK_CURRENT_EDGE of the source', ans);
      return fail(s.exitError, 'destination edge creation failed, source unlocked');
    },
  },
};

// ---------------------------------------------------------------------------------------------
// REMOVE_DIRECTORY {owner_id, target_id, name} → {}

const removeDirectory: TxnDef<'REMOVE_DIRECTORY'> = {
  locks: (r) => [edgeLockKey(r.ownerId, r.name)],
  begin(r, s) {
    if (!isDir(r.targetId)) return fail(ErrorCode.TYPE_IS_NOT_DIRECTORY, 'REMOVE_DIRECTORY of a non-directory');
    s.exitError = null;
    return shard('lock_resp', 'LOCK_CURRENT_EDGE', r.ownerId, { dirId: r.ownerId, name: r.name, targetId: r.targetId });
  },
  steps: {
    lock_resp(r, _s, ans) {
      if (!ans.ok) return fail(ans.code, 'locking the edge failed');
      return shard('remove_owner_resp', 'SET_DIRECTORY_OWNER', r.targetId, { dirId: r.targetId, ownerId: NULL_INODE_ID });
    },
    remove_owner_resp(r, s, ans) {
      if (!ans.ok) {
        s.exitError = ans.code;
        return shard('rollback_resp', 'UNLOCK_CURRENT_EDGE', r.ownerId, { dirId: r.ownerId, name: r.name, targetId: r.targetId, wasMoved: false });
      }
      return shard('unlock_resp', 'UNLOCK_CURRENT_EDGE', r.ownerId, { dirId: r.ownerId, name: r.name, targetId: r.targetId, wasMoved: true });
    },
    unlock_resp(r, s, ans) {
      const m = movedUnlock(ans);
      if (m === 'failed') return fatal('UNLOCK_CURRENT_EDGE (moved) of the removed directory', ans);
      if (m === 'verify') return lookupEdge('verify_gone_resp', s, r.ownerId, r.name);
      return { t: 'reply', body: {} };
    },
    verify_gone_resp(r, s, ans) {
      return afterVerify('verify_gone_resp', s, r.ownerId, r.name, r.targetId, ans, () => ({ t: 'reply', body: {} }));
    },
    rollback_resp(_r, s, ans) {
      if (!ans.ok) return fatal('rollback UNLOCK_CURRENT_EDGE', ans);
      return fail(s.exitError, 'disowning failed, edge unlocked');
    },
  },
};

// ---------------------------------------------------------------------------------------------
// RENAME_DIRECTORY {target_id, old_owner_id, old_name, new_owner_id, new_name} → {}

function renameDirRollback(r: CdcReq<'RENAME_DIRECTORY'>, s: any, code: number): StepResult {
  s.exitError = code;
  return shard('rollback_resp', 'UNLOCK_CURRENT_EDGE', r.oldOwnerId, { dirId: r.oldOwnerId, name: r.oldName, targetId: r.targetId, wasMoved: false });
}

function statDirectory(dir: bigint): StepResult {
  return shard('stat_resp', 'STAT', dir, { id: dir });
}

const renameDirectory: TxnDef<'RENAME_DIRECTORY'> = {
  locks: (r) => [edgeLockKey(r.oldOwnerId, r.oldName), edgeLockKey(r.newOwnerId, r.newName), RENAME_DIRECTORY_LOCK],
  begin(r, s) {
    if (!isDir(r.targetId)) return fail(ErrorCode.TYPE_IS_NOT_DIRECTORY, 'RENAME_DIRECTORY of a non-directory');
    if (r.targetId === r.newOwnerId) return fail(ErrorCode.LOOP_IN_DIRECTORY_RENAME, 'moving a directory into itself');
    if (!isDir(r.newOwnerId)) return fail(ErrorCode.NEW_DIRECTORY_NOT_FOUND, 'new owner is not a directory id');
    const bad = badName(r.newName);
    if (bad) return fail(ErrorCode.MALFORMED_REQUEST, bad);
    s.exitError = null;
    return shard('lock_old_resp', 'LOCK_CURRENT_EDGE', r.oldOwnerId, { dirId: r.oldOwnerId, name: r.oldName, targetId: r.targetId });
  },
  steps: {
    lock_old_resp(r, s, ans) {
      if (!ans.ok) return fail(mapCode(ans.code, { [ErrorCode.DIRECTORY_NOT_FOUND]: ErrorCode.OLD_DIRECTORY_NOT_FOUND }), 'locking the source edge failed');
      // Visited directories as hex strings (JSON keys) → their owner.
      s.parentCache = { [r.targetId.toString(16)]: r.newOwnerId.toString(16) };
      s.currentDirectory = r.newOwnerId.toString(16);
      s.depth = 0;
      return statDirectory(r.newOwnerId);
    },
    stat_resp(r, s, ans, ctx) {
      const cur = BigInt('0x' + s.currentDirectory);
      if (!ans.ok) {
        if (cur === r.newOwnerId) return renameDirRollback(r, s, mapCode(ans.code, { [ErrorCode.DIRECTORY_NOT_FOUND]: ErrorCode.NEW_DIRECTORY_NOT_FOUND }));
        return renameDirRollback(r, s, ErrorCode.INTERNAL_ERROR);
      }
      const owner: bigint = ans.body.sizeOrOwner;
      const key = owner.toString(16);
      if (key in s.parentCache || owner === cur) return renameDirRollback(r, s, ErrorCode.LOOP_IN_DIRECTORY_RENAME);
      if (owner !== NULL_INODE_ID) {
        if (++s.depth > MAX_DIRECTORY_DEPTH) return renameDirRollback(r, s, ErrorCode.INTERNAL_ERROR);
        s.parentCache[s.currentDirectory] = key;
        s.currentDirectory = key;
        return statDirectory(owner);
      }
      // Reached the root (or a removed directory, where the edge creation below will fail).
      return shard('create_new_resp', 'CREATE_LOCKED_CURRENT_EDGE', r.newOwnerId, {
        dirId: r.newOwnerId,
        name: r.newName,
        targetId: r.targetId,
        creationTime: ctx.now(),
      });
    },
    create_new_resp(r, s, ans) {
      if (!ans.ok) {
        return renameDirRollback(
          r,
          s,
          mapCode(ans.code, { [ErrorCode.DIRECTORY_NOT_FOUND]: ErrorCode.NEW_DIRECTORY_NOT_FOUND, [ErrorCode.NAME_IS_LOCKED]: ErrorCode.NEW_NAME_IS_LOCKED }),
        );
      }
      return shard('unlock_new_resp', 'UNLOCK_CURRENT_EDGE', r.newOwnerId, { dirId: r.newOwnerId, name: r.newName, targetId: r.targetId, wasMoved: false });
    },
    unlock_new_resp(r, _s, ans) {
      if (!ans.ok) return fatal('UNLOCK_CURRENT_EDGE of the destination', ans);
      return shard('unlock_old_resp', 'UNLOCK_CURRENT_EDGE', r.oldOwnerId, { dirId: r.oldOwnerId, name: r.oldName, targetId: r.targetId, wasMoved: true });
    },
    unlock_old_resp(r, s, ans) {
      const m = movedUnlock(ans);
      if (m === 'failed') return fatal('UNLOCK_CURRENT_EDGE (moved) of the source', ans);
      if (m === 'verify') return lookupEdge('verify_old_gone_resp', s, r.oldOwnerId, r.oldName);
      return shard('set_owner_resp', 'SET_DIRECTORY_OWNER', r.targetId, { dirId: r.targetId, ownerId: r.newOwnerId });
    },
    verify_old_gone_resp(r, s, ans) {
      return afterVerify('verify_old_gone_resp', s, r.oldOwnerId, r.oldName, r.targetId, ans, () =>
        shard('set_owner_resp', 'SET_DIRECTORY_OWNER', r.targetId, { dirId: r.targetId, ownerId: r.newOwnerId }),
      );
    },
    set_owner_resp(_r, _s, ans) {
      if (!ans.ok) return fatal('SET_DIRECTORY_OWNER of the moved directory', ans);
      return { t: 'reply', body: {} };
    },
    rollback_resp(_r, s, ans) {
      if (!ans.ok) return fatal('rollback UNLOCK_CURRENT_EDGE of the source', ans);
      return fail(s.exitError, 'rename refused, source unlocked');
    },
  },
};

export const TXNS: { [K in CdcKindName]: TxnDef<K> } = {
  MAKE_DIRECTORY: makeDirectory,
  RENAME_FILE: renameFile,
  REMOVE_DIRECTORY: removeDirectory,
  RENAME_DIRECTORY: renameDirectory,
};
