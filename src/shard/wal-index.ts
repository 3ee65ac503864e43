// How much of a shard's WAL is not yet in its database, read from the wal-index header at the
// start of the -shm file without taking any SQLite lock (one pread).
import assert from 'node:assert/strict';
import { readSync } from 'node:fs';
import os from 'node:os';

// The wal-index header (sqlite.org/walformat.html §2.1): two copies of a 48-byte header, then the
// checkpoint info; native byte order. Its layout is fixed: processes of any SQLite version share it.
const WAL_INDEX_HEADER_BYTES = 48;
export const WAL_INDEX_READ_BYTES = 2 * WAL_INDEX_HEADER_BYTES + 4;
const WAL_INDEX_VERSION = 3007000;
const OFF_VERSION = 0;
const OFF_IS_INIT = 12;
const OFF_PAGE_SIZE = 14;
const OFF_MX_FRAME = 16;
const OFF_N_BACKFILL = 2 * WAL_INDEX_HEADER_BYTES;

// Native byte order, as SQLite writes it.
assert.equal(os.endianness(), 'LE', 'the wal-index reader assumes a little-endian machine');

export interface WalIndexHeader {
  /** Frames in the WAL (it restarts from 0 once all were copied). */
  mxFrame: number;
  /** Frames already copied into the database. */
  nBackfill: number;
  pageSizeBytes: number;
}

/** The header, or undefined if it cannot be trusted right now (being written, not initialised). */
export function readWalIndexHeader(shmFd: number, buf: Buffer): WalIndexHeader | undefined {
  assert(buf.length >= WAL_INDEX_READ_BYTES);
  const n = readSync(shmFd, buf, 0, WAL_INDEX_READ_BYTES, 0);
  if (n < WAL_INDEX_READ_BYTES) return undefined;
  // SQLite writes the second copy first and reads the first; equal copies mean a whole header.
  if (buf.compare(buf, WAL_INDEX_HEADER_BYTES, 2 * WAL_INDEX_HEADER_BYTES, 0, WAL_INDEX_HEADER_BYTES) !== 0) return undefined;
  if (buf.readUInt32LE(OFF_VERSION) !== WAL_INDEX_VERSION || buf[OFF_IS_INIT] !== 1) return undefined;
  const pageField = buf.readUInt16LE(OFF_PAGE_SIZE);
  return { mxFrame: buf.readUInt32LE(OFF_MX_FRAME), nBackfill: buf.readUInt32LE(OFF_N_BACKFILL), pageSizeBytes: pageField === 1 ? 65536 : pageField };
}

/**
 * Bytes of WAL frames not yet copied into the database, or -1 if the header cannot be trusted
 * right now: the caller then checkpoints to be safe.
 */
export function walPendingBytes(shmFd: number, buf: Buffer): number {
  const h = readWalIndexHeader(shmFd, buf);
  if (!h) return -1;
  if (h.nBackfill > h.mxFrame) return 0; // a restarted WAL whose checkpoint info is not reset yet
  return (h.mxFrame - h.nBackfill) * h.pageSizeBytes;
}
