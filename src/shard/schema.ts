// One SQLite database per shard (metadata.md §3.2). The shard number is baked into the CHECK
// constraints so that a row of another shard can never be stored, whatever the code does.
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { HASH_MODE_TRUNC_MD5 } from '../proto/hash.js';
import { ROOT_DIR_INODE_ID } from '../proto/ids.js';
import { newSecretKey } from '../proto/crypto.js';
import { eggsNow } from '../proto/time.js';

export const SCHEMA_VERSION = 1;

/**
 * Page cache per database, in KiB. 256 shards share one process, so each gets little: the hot
 * rows of a shard fit, and the OS page cache holds the rest. 256 × 1 MiB bounds the cache at 256 MiB.
 */
export const CACHE_SIZE_KIB = 1024;
/**
 * Checkpoints run off the request path, on the checkpointer thread (checkpointer.ts), once a
 * shard's WAL holds this many bytes not yet copied into the database. SQLite's automatic checkpoint
 * (every 4 MiB, inside a COMMIT) stalled every shard of that event loop for 4-6 ms: two fsyncs
 * and the copy.
 */
export const CHECKPOINT_WAL_BYTES = 512 << 10;
/**
 * A WAL this large is checkpointed inside the COMMIT that grew it (SQLite's automatic checkpoint).
 * That is what restarts the WAL of a shard that never pauses between commits (a restart needs a
 * transaction to begin with every frame copied, which the checkpointer alone cannot arrange); the
 * checkpointer has left it little to copy, so it costs about three fsyncs of little data. It also
 * bounds the WAL should the checkpointer stall or die. Measured (one shard, creates one at a time):
 * at 4 MiB the request path still stalled 86 ms per 10k commits, at 16 MiB 34 ms (inline at
 * 4 MiB with no checkpointer: 210 ms).
 */
export const INLINE_CHECKPOINT_WAL_BYTES = 16 << 20;
/**
 * Disk kept by a shard's WAL after it restarts (256 shards: at most 4 GiB). As large as the inline
 * bound: truncating a larger WAL is done by the first COMMIT after the restart, and took ms.
 */
export const WAL_SIZE_LIMIT_BYTES = INLINE_CHECKPOINT_WAL_BYTES;
/** Page cache of a checkpointer's connection: a checkpoint copies frames without the cache. */
export const CHECKPOINT_CACHE_SIZE_KIB = 64;
/** Opening a checkpoint connection may wait this long on a recovering database. */
const CHECKPOINT_OPEN_TIMEOUT_MS = 1_000;

/**
 * Durability (metadata.md §3.6, issue item 6). WAL journal: a commit is one append to the -wal file.
 * - 'normal' (default): synchronous=NORMAL. A COMMIT has been written to the OS (write(2)) before
 *   any answer is sent, so every answered request survives kill -9 of the shard process. On a power
 *   loss or kernel crash the database stays consistent but the transactions committed since the
 *   last WAL fsync (at checkpoints) can be lost.
 * - 'full': synchronous=FULL. The WAL is fsynced at every COMMIT (one fsync per shard per group
 *   commit batch), so every answered request also survives a power loss.
 */
export type SyncMode = 'normal' | 'full';

export function schemaSql(shard: number): string {
  const S = shard;
  return `
CREATE TABLE IF NOT EXISTS shard_info (
  id INTEGER PRIMARY KEY CHECK (id = 0),
  shard INTEGER NOT NULL CHECK (shard = ${S}),
  secret_key BLOB NOT NULL CHECK (length(secret_key) = 16),
  next_file_id INTEGER NOT NULL,
  next_symlink_id INTEGER NOT NULL,
  next_block_id INTEGER NOT NULL,
  schema_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS block_services (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ip TEXT NOT NULL,
  port INTEGER NOT NULL,
  secret_key BLOB NOT NULL,
  storage_class INTEGER NOT NULL,
  terminal INTEGER NOT NULL CHECK (terminal IN (0, 1)),
  stale INTEGER NOT NULL CHECK (stale IN (0, 1)),
  write_weight REAL NOT NULL,
  active INTEGER NOT NULL CHECK (active IN (0, 1)),
  failure_domain TEXT,
  UNIQUE (ip, port)
);
CREATE TABLE IF NOT EXISTS files (
  id INTEGER PRIMARY KEY CHECK (id <> 0 AND (id & 255) = ${S} AND ((id >> 61) & 3) IN (2, 3)),
  transient INTEGER NOT NULL CHECK (transient IN (0, 1)),
  size INTEGER NOT NULL CHECK (size >= 0),
  mtime INTEGER NOT NULL,
  deadline INTEGER,
  last_span_state INTEGER CHECK (last_span_state IN (0, 1, 2)),
  CHECK ((transient = 1) = (deadline IS NOT NULL AND last_span_state IS NOT NULL)),
  CHECK (transient = 1 OR (deadline IS NULL AND last_span_state IS NULL))
);
CREATE INDEX IF NOT EXISTS files_transient ON files (id) WHERE transient = 1;
CREATE TABLE IF NOT EXISTS spans (
  file_id INTEGER NOT NULL REFERENCES files (id),
  byte_offset INTEGER NOT NULL CHECK (byte_offset >= 0),
  state INTEGER NOT NULL CHECK (state IN (0, 1, 2)),
  storage_class INTEGER NOT NULL CHECK (storage_class BETWEEN 0 AND 255),
  parity INTEGER NOT NULL CHECK (parity BETWEEN 0 AND 255),
  crc32 INTEGER NOT NULL,
  size INTEGER NOT NULL CHECK (size > 0),
  body BLOB NOT NULL,
  CHECK (storage_class >= 2 OR parity = 0),
  PRIMARY KEY (file_id, byte_offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS directories (
  id INTEGER PRIMARY KEY CHECK (id <> 0 AND (id & 255) = ${S} AND ((id >> 61) & 3) = 1),
  owner_id INTEGER NOT NULL CHECK (owner_id = 0 OR ((owner_id >> 61) & 3) = 1),
  mtime INTEGER NOT NULL,
  hash_mode INTEGER NOT NULL CHECK (hash_mode = ${HASH_MODE_TRUNC_MD5}),
  opaque BLOB NOT NULL CHECK (length(opaque) <= 255)
);
CREATE TABLE IF NOT EXISTS edges (
  dir_id INTEGER NOT NULL REFERENCES directories (id),
  name_hash INTEGER NOT NULL CHECK (name_hash >= 0),
  name BLOB NOT NULL CHECK (length(name) <= 255),
  creation_time INTEGER NOT NULL CHECK (creation_time >= 0),
  current INTEGER NOT NULL CHECK (current IN (0, 1)),
  target_id INTEGER NOT NULL,
  owned INTEGER CHECK (owned IN (0, 1)),
  locked INTEGER CHECK (locked IN (0, 1)),
  CHECK (target_id <> 0 OR (current = 0 AND owned = 0)),
  CHECK (current = 0 OR (owned IS NULL AND locked IS NOT NULL)),
  CHECK (current = 1 OR (locked IS NULL AND owned IS NOT NULL)),
  PRIMARY KEY (dir_id, name_hash, name, creation_time)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS edges_one_current ON edges (dir_id, name_hash, name) WHERE current = 1;
CREATE TABLE IF NOT EXISTS block_to_span (
  block_service_id INTEGER NOT NULL,
  block_id INTEGER NOT NULL,
  file_id INTEGER NOT NULL,
  byte_offset INTEGER NOT NULL,
  PRIMARY KEY (block_service_id, block_id),
  FOREIGN KEY (file_id, byte_offset) REFERENCES spans (file_id, byte_offset)
) WITHOUT ROWID;
`;
}

export function openShardDb(path: string, shard: number, sync: SyncMode): Database.Database {
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma('foreign_keys = ON');
    db.pragma(`cache_size = -${CACHE_SIZE_KIB}`);
    // The -wal file is reused after each checkpoint; this bounds what it keeps on disk per shard.
    db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    db.pragma('temp_store = MEMORY');
    const pageSizeBytes = db.pragma('page_size', { simple: true }) as number;
    assert(pageSizeBytes > 0 && INLINE_CHECKPOINT_WAL_BYTES % pageSizeBytes === 0);
    db.pragma(`wal_autocheckpoint = ${INLINE_CHECKPOINT_WAL_BYTES / pageSizeBytes}`);
    db.defaultSafeIntegers(true);
    db.exec(schemaSql(shard));
    const info = db.prepare('SELECT shard, schema_version FROM shard_info WHERE id = 0').get() as { shard: bigint; schema_version: bigint } | undefined;
    if (!info) {
      const s = BigInt(shard);
      db.transaction(() => {
        db.prepare('INSERT INTO shard_info (id, shard, secret_key, next_file_id, next_symlink_id, next_block_id, schema_version) VALUES (0, ?, ?, ?, ?, ?, ?)').run(
          s,
          newSecretKey(),
          s,
          s,
          s,
          BigInt(SCHEMA_VERSION),
        );
        // The root lives in shard 0 and is created once, with the database; later starts leave its
        // mtime alone (metadata.md §8 item 32).
        if (shard === 0) {
          db.prepare('INSERT OR IGNORE INTO directories (id, owner_id, mtime, hash_mode, opaque) VALUES (?, 0, ?, ?, ?)').run(
            ROOT_DIR_INODE_ID,
            eggsNow(),
            BigInt(HASH_MODE_TRUNC_MD5),
            Buffer.alloc(0),
          );
        }
      })();
    } else {
      if (Number(info.shard) !== shard) throw new Error(`${path} belongs to shard ${info.shard}, not shard ${shard}`);
      if (Number(info.schema_version) !== SCHEMA_VERSION) throw new Error(`${path} has schema version ${info.schema_version}, this build expects ${SCHEMA_VERSION}`);
    }
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * A second connection to an existing shard database, used only for PASSIVE checkpoints. Same
 * synchronous mode as the serving connection: a checkpoint fsyncs the WAL before copying it and
 * the database after, so a WAL restart can never overwrite frames the database does not hold yet.
 */
export function openCheckpointDb(path: string, sync: SyncMode): Database.Database {
  // A PASSIVE checkpoint never waits on locks; the timeout only covers opening during recovery.
  const db = new Database(path, { fileMustExist: true, timeout: CHECKPOINT_OPEN_TIMEOUT_MS });
  try {
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    db.pragma(`synchronous = ${sync === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma(`cache_size = -${CHECKPOINT_CACHE_SIZE_KIB}`);
    db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    // This connection never writes, so it never checkpoints by itself.
    db.pragma('wal_autocheckpoint = 0');
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}
