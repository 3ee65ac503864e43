// Shuckle's HTTP API (services.md §3.3 plus the /api/* contract of src/client/shuckle.ts).
import http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { SECRET_HEADER } from '../client/shuckle.js';
import type { Logger } from '../util/log.js';
import type { ShuckleDb } from './db.js';
import { renderCluster, renderPage } from './page.js';
import { blockServiceEntries, overview, type Staleness } from './view.js';

export const MAX_BODY_BYTES = 1 << 20;
const MAX_IP_CHARS = 64;
const REQUEST_TIMEOUT_MS = 10_000;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

function html(res: http.ServerResponse, body: string): void {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function readJson(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY_BYTES) {
        reject(new HttpError(413, `request body above ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new HttpError(400, 'request body is not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkPort(v: unknown, what: string): number {
  if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) throw new HttpError(400, `${what}: port must be an integer in 1..65535`);
  return v as number;
}

/** An unspecified address ("", 0.0.0.0, ::) means "where this request came from". */
function checkIp(v: unknown, what: string, req: http.IncomingMessage): string {
  if (typeof v !== 'string' || v.length > MAX_IP_CHARS) throw new HttpError(400, `${what}: ip must be a string of at most ${MAX_IP_CHARS} characters`);
  if (v === '' || v === '0.0.0.0' || v === '::') {
    const a = req.socket.remoteAddress ?? '127.0.0.1';
    return a.startsWith('::ffff:') ? a.slice(7) : a;
  }
  return v;
}

export interface HttpDeps {
  db: ShuckleDb;
  staleness: Staleness;
  secretHex: string;
  log: Logger;
}

export function createHttpServer(d: HttpDeps): http.Server {
  const secret = Buffer.from(d.secretHex, 'utf8');
  const authorised = (req: http.IncomingMessage): boolean => {
    const h = req.headers[SECRET_HEADER];
    if (typeof h !== 'string') return false;
    const given = Buffer.from(h.trim().toLowerCase(), 'utf8');
    return given.length === secret.length && timingSafeEqual(given, secret);
  };
  const requireSecret = (req: http.IncomingMessage) => {
    if (!authorised(req)) throw new HttpError(403, `this request needs the cluster secret in the ${SECRET_HEADER} header`);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://shuckle');
    const route = `${req.method} ${url.pathname}`;
    const now = Date.now();
    switch (route) {
      case 'GET /': {
        const o = overview(d.db, now, d.staleness);
        return html(res, url.searchParams.get('part') === 'cluster' ? renderCluster(o) : renderPage(o));
      }
      case 'GET /show_me_what_you_got':
      case 'GET /api/block_services':
        return json(res, 200, blockServiceEntries(d.db, now, d.staleness, authorised(req)));
      case 'GET /api/overview':
        return json(res, 200, overview(d.db, now, d.staleness));
      case 'GET /api/shards':
        return json(res, 200, d.db.shards());
      case 'GET /api/cdc':
        return json(res, 200, d.db.cdc());
      case 'POST /change_status': {
        const b = await readJson(req);
        if (!isRecord(b)) throw new HttpError(400, 'body must be a JSON object {action, id}');
        const { action, id } = b;
        if (action !== 'drain' && action !== 'resume' && action !== 'terminate') throw new HttpError(400, `unknown action ${JSON.stringify(action)} (drain, resume or terminate)`);
        if (!Number.isInteger(id)) throw new HttpError(400, 'id must be an integer');
        const changed = d.db.changeStatus(action, id as number, now - d.staleness.blockStaleMs);
        if (changed) d.log.info(`block service ${id}: ${action}`);
        return json(res, 200, {});
      }
      case 'POST /api/register_shards': {
        requireSecret(req);
        const b = await readJson(req);
        if (!isRecord(b) || !Array.isArray(b.shards)) throw new HttpError(400, 'body must be {shards: [{id, ip, port}]}');
        if (b.shards.length > 256) throw new HttpError(400, 'at most 256 shards');
        const shards = b.shards.map((s: unknown, i: number) => {
          if (!isRecord(s)) throw new HttpError(400, `shards[${i}] must be an object`);
          if (!Number.isInteger(s.id) || (s.id as number) < 0 || (s.id as number) > 255) throw new HttpError(400, `shards[${i}]: id must be in 0..255`);
          return { id: s.id as number, ip: checkIp(s.ip, `shards[${i}]`, req), port: checkPort(s.port, `shards[${i}]`) };
        });
        d.db.registerShards(shards, now);
        return json(res, 200, {});
      }
      case 'POST /api/register_cdc': {
        requireSecret(req);
        const b = await readJson(req);
        if (!isRecord(b)) throw new HttpError(400, 'body must be {ip, port}');
        d.db.registerCdc(checkIp(b.ip, 'cdc', req), checkPort(b.port, 'cdc'), now);
        return json(res, 200, {});
      }
      default:
        throw new HttpError(404, `no route ${route}`);
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status === 500) d.log.error(`${req.method} ${req.url}: ${err.stack ?? err.message}`);
      if (!res.headersSent) json(res, status, { error: err.message });
      else res.destroy();
    });
  });
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS;
  server.keepAliveTimeout = 5_000;
  return server;
}
