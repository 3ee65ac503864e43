// Error codes (u16 on the wire, from 10 in this fixed order) and their errno mapping.
import { constants as os } from 'node:os';

const E = os.errno;

/** Declared once: [name, errno]. The code is 10 + the index. */
const ERROR_TABLE = [
  ['INTERNAL_ERROR', E.EIO],
  ['FATAL_ERROR', E.EIO],
  ['TIMEOUT', E.EIO],
  ['MALFORMED_REQUEST', E.EIO],
  ['MALFORMED_RESPONSE', E.EIO],
  ['NOT_AUTHORISED', E.EACCES],
  ['UNRECOGNIZED_REQUEST', E.EIO],
  ['FILE_NOT_FOUND', E.ENOENT],
  ['DIRECTORY_NOT_FOUND', E.ENOENT],
  ['NAME_NOT_FOUND', E.ENOENT],
  ['TYPE_IS_DIRECTORY', E.EISDIR],
  ['TYPE_IS_NOT_DIRECTORY', E.ENOTDIR],
  ['BAD_COOKIE', E.EACCES],
  ['INCONSISTENT_STORAGE_CLASS_PARITY', E.EINVAL],
  ['LAST_SPAN_STATE_NOT_CLEAN', E.EBUSY],
  ['COULD_NOT_PICK_BLOCK_SERVERS', E.EIO],
  ['BAD_SPAN_BODY', E.EINVAL],
  ['SPAN_NOT_FOUND', E.EINVAL],
  ['BLOCK_SERVER_NOT_FOUND', E.EIO],
  ['CANNOT_CERTIFY_BLOCKLESS_SPAN', E.EINVAL],
  ['BAD_NUMBER_OF_BLOCKS_PROOFS', E.EINVAL],
  ['BAD_BLOCK_PROOF', E.EINVAL],
  ['CANNOT_OVERRIDE_NAME', E.EEXIST],
  ['NAME_IS_LOCKED', E.EEXIST],
  ['OLD_NAME_IS_LOCKED', E.EBUSY],
  ['NEW_NAME_IS_LOCKED', E.EBUSY],
  ['MORE_RECENT_SNAPSHOT_ALREADY_EXISTS', E.EBUSY],
  ['MISMATCHING_TARGET', E.EINVAL],
  ['MISMATCHING_OWNER', E.EINVAL],
  ['DIRECTORY_NOT_EMPTY', E.ENOTEMPTY],
  ['FILE_IS_TRANSIENT', E.EBUSY],
  ['OLD_DIRECTORY_NOT_FOUND', E.ENOENT],
  ['NEW_DIRECTORY_NOT_FOUND', E.ENOENT],
  ['LOOP_IN_DIRECTORY_RENAME', E.ELOOP],
  ['EDGE_NOT_FOUND', E.ENOENT],
  ['CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY', E.ENOENT],
] as const;

export type ErrorName = (typeof ERROR_TABLE)[number][0];

export const ErrorCode = Object.fromEntries(ERROR_TABLE.map(([name], i) => [name, 10 + i])) as {
  readonly [K in ErrorName]: number;
};

export const FIRST_ERROR_CODE = 10;
export const LAST_ERROR_CODE = 10 + ERROR_TABLE.length - 1;

export function isKnownErrorCode(code: number): boolean {
  return Number.isInteger(code) && code >= FIRST_ERROR_CODE && code <= LAST_ERROR_CODE;
}

export function errorName(code: number): string {
  return isKnownErrorCode(code) ? ERROR_TABLE[code - 10]![0] : `UNKNOWN_ERROR_${code}`;
}

/** Positive errno for a code; EIO for anything unknown. */
export function errorToErrno(code: number): number {
  return isKnownErrorCode(code) ? ERROR_TABLE[code - 10]![1] : E.EIO;
}

const DESCRIPTIONS: Partial<Record<ErrorName, string>> = {
  TIMEOUT: 'no answer from the server (timed out)',
  FILE_NOT_FOUND: 'no such file',
  DIRECTORY_NOT_FOUND: 'no such directory',
  NAME_NOT_FOUND: 'no such file or directory',
  TYPE_IS_DIRECTORY: 'is a directory',
  TYPE_IS_NOT_DIRECTORY: 'not a directory',
  CANNOT_OVERRIDE_NAME: 'name exists',
  NAME_IS_LOCKED: 'name is being changed by another operation',
  NEW_NAME_IS_LOCKED: 'destination name is being changed by another operation',
  OLD_NAME_IS_LOCKED: 'source name is being changed by another operation',
  DIRECTORY_NOT_EMPTY: 'directory not empty',
  LOOP_IN_DIRECTORY_RENAME: 'cannot move a directory into itself',
  OLD_DIRECTORY_NOT_FOUND: 'no such source directory',
  NEW_DIRECTORY_NOT_FOUND: 'no such destination directory',
  FILE_IS_TRANSIENT: 'file is still being written',
  COULD_NOT_PICK_BLOCK_SERVERS: 'no block service available to store data',
  CANNOT_CREATE_CURRENT_EDGE_IN_SNAPSHOT_DIRECTORY: 'directory was removed',
  MORE_RECENT_SNAPSHOT_ALREADY_EXISTS: 'name was changed concurrently (a newer entry exists)',
  NOT_AUTHORISED: 'not authorised',
  MALFORMED_REQUEST: 'malformed request',
  INTERNAL_ERROR: 'internal server error',
  FATAL_ERROR: 'fatal server error (inconsistent state, operator attention needed)',
};

export function describeError(code: number): string {
  const name = errorName(code) as ErrorName;
  return DESCRIPTIONS[name] ?? name.toLowerCase().replace(/_/g, ' ');
}

/** An error answered by a server (or synthesised, for TIMEOUT). */
export class EggsError extends Error {
  override readonly name = 'EggsError';
  constructor(
    readonly code: number,
    detail?: string,
  ) {
    super(detail ? `${errorName(code)}: ${detail}` : errorName(code));
  }
  get errorName(): string {
    return errorName(this.code);
  }
  get errno(): number {
    return errorToErrno(this.code);
  }
}
