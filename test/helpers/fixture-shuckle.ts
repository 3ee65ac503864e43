// A tiny stand-in for shuckle's HTTP registry, for shard tests until the real shuckle lands: it
// serves one block-service list on GET /show_me_what_you_got (keys only with the cluster secret)
// and records POST /api/register_shards. Only the JSON documents of the contract in
// src/client/shuckle.ts; no behaviour of shuckle itself.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { SECRET_HEADER, type BlockServiceEntry } from '../../src/client/shuckle.js';

export interface FixtureShuckle {
  readonly url: string;
  readonly secret: string;
  services: BlockServiceEntry[];
  readonly registrations: { id: number; ip: string; port: number }[][];
  /** How many times the block-service list was fetched. */
  fetches: number;
  close(): Promise<void>;
}

/** `count` fake block services of one storage class, with random keys, on 127.0.0.1. */
export function fakeBlockServices(count: number, opts: { storageClass?: number; basePort?: number; failureDomains?: number } = {}): BlockServiceEntry[] {
  const out: BlockServiceEntry[] = [];
  for (let i = 0; i < count; i++) {
    const e: BlockServiceEntry = {
      ip: '127.0.0.1',
      port: (opts.basePort ?? 41000) + i,
      storage_class: opts.storageClass ?? 2,
      is_terminal: false,
      is_stale: false,
      write_weight: 1,
      secret_key: randomBytes(16).toString('hex'),
    };
    if (opts.failureDomains) e.failure_domain = `fd${i % opts.failureDomains}`;
    out.push(e);
  }
  return out;
}

export async function startFixtureShuckle(services: BlockServiceEntry[] = []): Promise<FixtureShuckle> {
  const secret = randomBytes(16).toString('hex');
  const state = { services, registrations: [] as { id: number; ip: string; port: number }[][], fetches: 0 };
  const server = http.createServer((req, res) => {
    const authed = req.headers[SECRET_HEADER] === secret;
    if (req.method === 'GET' && req.url === '/show_me_what_you_got') {
      state.fetches++;
      const list = state.services.map((s) => ({ ...s, secret_key: authed ? s.secret_key : '' }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(list));
      return;
    }
    if (req.method === 'POST' && req.url === '/api/register_shards') {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        if (!authed) {
          res.writeHead(403).end('{}');
          return;
        }
        state.registrations.push((JSON.parse(body) as { shards: { id: number; ip: string; port: number }[] }).shards);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
      return;
    }
    res.writeHead(404).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    secret,
    get services() {
      return state.services;
    },
    set services(v) {
      state.services = v;
    },
    registrations: state.registrations,
    get fetches() {
      return state.fetches;
    },
    set fetches(v) {
      state.fetches = v;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
