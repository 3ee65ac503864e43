// The shuckle HTTP client must reach shuckle on any port, including those that fetch() refuses
// as browser-unsafe (a cluster started with --port-offset 1000 puts shuckle on 6000).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { fetchBlockServices, SECRET_HEADER } from '../src/client/shuckle.js';

const UNSAFE_PORTS = [6000, 6665, 6666, 6667, 6668, 6669, 10080];

async function listenOnUnsafePort(server: http.Server): Promise<number | undefined> {
  for (const port of UNSAFE_PORTS) {
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) return port;
  }
  return undefined;
}

test('shuckle client works on a browser-unsafe port, sends the secret, and reports errors in words', async (t) => {
  let seenSecret: string | undefined;
  const server = http.createServer((req, res) => {
    seenSecret = req.headers[SECRET_HEADER] as string | undefined;
    if (req.url === '/show_me_what_you_got') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify([{ ip: '127.0.0.1', port: 1, storage_class: 2, is_terminal: false, is_stale: false, write_weight: 1, secret_key: '' }]));
    } else {
      res.statusCode = 404;
      res.end('nope');
    }
  });
  const port = await listenOnUnsafePort(server);
  t.after(() => server.listening && server.close());
  if (port === undefined) return t.skip('every browser-unsafe port is taken on this machine');
  const list = await fetchBlockServices({ url: `http://127.0.0.1:${port}`, secret: 'abcd' });
  assert.equal(list.length, 1);
  assert.equal(list[0]!.storage_class, 2);
  assert.equal(seenSecret, 'abcd');
  await new Promise((r) => {
    server.close(r);
    server.closeAllConnections(); // including the client's kept-alive one
  });
  await assert.rejects(fetchBlockServices({ url: `http://127.0.0.1:${port}`, timeoutMs: 1000 }), /shuckle at http:\/\/127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\)/);
});
