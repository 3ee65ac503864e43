// Every bound of the CDC, named in one place (issue 3 item 3).

/** Transactions executing at once (each has at most one shard request outstanding). */
export const MAX_TXNS_RUNNING = 512;
/**
 * Transactions accepted but waiting (for a running slot or for a lock held by another transaction).
 * When full, a new request is answered TIMEOUT at once: nothing was done, so a retry is safe, and
 * the client transport already retries on TIMEOUT.
 */
export const MAX_TXNS_QUEUED = 4096;
/** CDC → shard timeout before the persisted request is resent (metadata.md §2.7: 2 s). */
export const DEFAULT_SHARD_TIMEOUT_MS = 2_000;
/** Resends back off by doubling the timeout up to this many times the base timeout. */
export const MAX_RESEND_BACKOFF_FACTOR = 8;
/** Completed transactions remembered to answer client retries of the same request id. */
export const DEDUP_CAPACITY = 65_536;
/** How often persisted completed transactions beyond DEDUP_CAPACITY are deleted. */
export const PRUNE_EVERY_FLUSHES = 1_024;
/** Longest parent chain the RENAME_DIRECTORY loop check walks before giving up (INTERNAL_ERROR). */
export const MAX_DIRECTORY_DEPTH = 4_096;
/** Client and shard sockets' kernel buffers: bursts of thousands of datagrams must not be dropped. */
export const SOCKET_BUFFER_BYTES = 8 << 20;
/** Shuckle: re-register our address and refresh shard addresses this often. */
export const SHUCKLE_REFRESH_MS = 10_000;
/** A request for a shard whose address shuckle has not told us triggers a refresh, at most this often. */
export const SHUCKLE_MISS_REFRESH_MS = 1_000;
