// Absolute EggsFS paths: splitting into names, validating each name before it reaches the wire,
// and the PathError a person sees ("mkdir /a/b: no such directory /a").
import { EggsError, ErrorCode, describeError } from '../proto/errors.js';
import { MAX_NAME_BYTES } from '../proto/hash.js';

/** An operation on a path failed; the message names the operation, the path and the cause. */
export class PathError extends EggsError {
  override readonly message: string;
  constructor(
    readonly op: string,
    readonly path: string,
    code: number,
    readonly reason: string,
    override readonly cause?: unknown,
  ) {
    super(code, reason);
    this.message = `${op} ${path}: ${reason}`;
  }
}

/**
 * The names of an absolute path. Empty components and "." are dropped; ".." goes up one level
 * lexically (EggsFS has no symlink following in paths, so this is exact).
 */
export function splitPath(op: string, path: string): string[] {
  if (!path.startsWith('/')) {
    throw new PathError(op, path, ErrorCode.MALFORMED_REQUEST, 'path must be absolute (start with /)');
  }
  const names: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      names.pop();
      continue;
    }
    const why = invalidName(part);
    if (why) throw new PathError(op, path, ErrorCode.MALFORMED_REQUEST, why);
    names.push(part);
  }
  return names;
}

export function joinPath(names: readonly string[]): string {
  return '/' + names.join('/');
}

/** Why `name` cannot be a directory entry, or undefined. */
export function invalidName(name: string): string | undefined {
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > MAX_NAME_BYTES) return `name too long (${bytes} bytes, the limit is ${MAX_NAME_BYTES})`;
  if (bytes === 0) return 'empty name';
  if (name.includes('\0')) return 'name contains a NUL byte';
  if (name.includes('/')) return 'name contains "/"';
  if (name === '.' || name === '..') return `name "${name}" is reserved`;
  return undefined;
}

export function nameBytes(name: string): Buffer {
  const b = Buffer.from(name, 'utf8');
  const why = invalidName(name);
  if (why) throw new EggsError(ErrorCode.MALFORMED_REQUEST, why);
  return b;
}

/** Wraps a server error into a PathError with words for the cause. */
export function pathError(op: string, path: string, err: unknown, subject?: string): Error {
  if (err instanceof PathError) return err;
  if (err instanceof EggsError) {
    const what = describeError(err.code);
    // Timeouts, and data the client could not read (INTERNAL_ERROR raised by the client itself, e.g.
    // a span with too many blocks lost), carry words worth showing after the code's description.
    const own = err.code === ErrorCode.TIMEOUT || err.code === ErrorCode.INTERNAL_ERROR ? err.message.replace(/^[A-Z_]+(: )?/, '') : '';
    const detail = own ? `${what}: ${own}` : what;
    return new PathError(op, path, err.code, subject ? `${detail} ${subject}` : detail, err);
  }
  return err instanceof Error ? err : new Error(String(err));
}
