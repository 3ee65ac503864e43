// Talking to shuckle over HTTP: the block-service list (the original `/show_me_what_you_got`),
// and, as extensions, where the shards and the CDC are, so that a cluster can span machines.
//
// Contract (served by src/shuckle, used by shards, the CDC and clients):
//   GET  /show_me_what_you_got            → BlockServiceEntry[]  (secret_key only with the cluster secret)
//   GET  /api/shards                      → ShardEntry[]   (one per registered shard)
//   GET  /api/cdc                         → CdcEntry | null
//   POST /api/register_shards  {shards: [{id, ip, port}]}   (authenticated with the cluster secret)
//   POST /api/register_cdc     {ip, port}                    (authenticated with the cluster secret)
// The cluster secret travels in the `x-eggsfs-secret` header (hex), never in a URL.

import http from 'node:http';

export const SECRET_HEADER = 'x-eggsfs-secret';
export const DEFAULT_HTTP_TIMEOUT_MS = 5_000;

export interface BlockServiceEntry {
  ip: string;
  port: number;
  storage_class: number;
  is_terminal: boolean;
  is_stale: boolean;
  write_weight: number;
  /** Hex; empty unless the request carried the cluster secret. */
  secret_key: string;
  // Extensions (absent from the original, ignored by original shards):
  id?: number;
  failure_domain?: string;
  status?: 'ok' | 'drain' | 'terminal';
  used_bytes?: number;
  free_bytes?: number;
  used_n?: number;
  last_seen_ms?: number;
}

export interface ShardEntry {
  id: number;
  ip: string;
  port: number;
  last_seen_ms: number;
}

export interface CdcEntry {
  ip: string;
  port: number;
  last_seen_ms: number;
}

export interface ShuckleClientOptions {
  url: string;
  /** Hex cluster secret; needed for keys and registrations. */
  secret?: string;
  timeoutMs?: number;
}

/** Largest answer accepted from shuckle: the block-service list of a big cluster fits easily. */
const MAX_RESPONSE_BYTES = 64 << 20;

// node:http rather than fetch(): fetch refuses the ports browsers consider unsafe (6000, 6665-6669,
// 10080, …), and a cluster started with a port offset may well land on one of them.
function call(opts: ShuckleClientOptions, path: string, init: { method?: string; body?: unknown } = {}): Promise<unknown> {
  const method = init.method ?? 'GET';
  const url = new URL(path, opts.url);
  const body = init.body === undefined ? undefined : Buffer.from(JSON.stringify(init.body));
  const headers: Record<string, string | number> = {};
  if (opts.secret) headers[SECRET_HEADER] = opts.secret;
  if (body) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = body.length;
  }
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const unreachable = (cause: string) => reject(new Error(`shuckle at ${opts.url} is unreachable (${cause})`));
    // No kept-alive connection: calls are seconds apart, and a connection kept across a shuckle
    // restart would fail the next call with ECONNRESET.
    const req = http.request(url, { method, headers, timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_RESPONSE_BYTES) req.destroy(new Error(`answer larger than ${MAX_RESPONSE_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on('error', (err) => unreachable(err.message));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) return reject(new Error(`shuckle ${method} ${path}: HTTP ${status} ${text}`.trim()));
        try {
          resolve(JSON.parse(text));
        } catch {
          reject(new Error(`shuckle ${method} ${path}: answer is not JSON`));
        }
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => unreachable(err.code ?? err.message));
    req.end(body);
  });
}

export async function fetchBlockServices(opts: ShuckleClientOptions): Promise<BlockServiceEntry[]> {
  const v = await call(opts, '/show_me_what_you_got');
  if (!Array.isArray(v)) throw new Error('shuckle: /show_me_what_you_got is not a list');
  return v as BlockServiceEntry[];
}

export async function fetchShards(opts: ShuckleClientOptions): Promise<ShardEntry[]> {
  return (await call(opts, '/api/shards')) as ShardEntry[];
}

export async function fetchCdc(opts: ShuckleClientOptions): Promise<CdcEntry | null> {
  return (await call(opts, '/api/cdc')) as CdcEntry | null;
}

export async function registerShards(opts: ShuckleClientOptions, shards: { id: number; ip: string; port: number }[]): Promise<void> {
  await call(opts, '/api/register_shards', { method: 'POST', body: { shards } });
}

export async function registerCdc(opts: ShuckleClientOptions, addr: { ip: string; port: number }): Promise<void> {
  await call(opts, '/api/register_cdc', { method: 'POST', body: addr });
}

/** The cluster secret from EGGSFS_CLUSTER_SECRET or a file, as hex; undefined when neither is set. */
export async function loadClusterSecret(file?: string): Promise<string | undefined> {
  if (process.env.EGGSFS_CLUSTER_SECRET) return process.env.EGGSFS_CLUSTER_SECRET.trim();
  if (!file) return undefined;
  const { readFile } = await import('node:fs/promises');
  return (await readFile(file, 'utf8')).trim();
}
