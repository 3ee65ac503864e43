// The shuckle web page in a real headless browser (Debian's chromium driven by playwright-core),
// loaded from a running shuckle with real block services: what it shows, that it refreshes
// itself, that the buttons work, and that no secret key ever appears.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fetchBlockServices, registerCdc, registerShards } from '../src/client/shuckle.js';
import { freeTcpPort, freeUdpPort } from './helpers/ports.js';
import { startEggsfs, tempDir, type Service } from './helpers/proc.js';
import { until } from './helpers/until.js';

const CHROMIUM = '/usr/bin/chromium';
const SECRET = '0123456789abcdef0123456789abcdef';
const haveChromium = fs.existsSync(CHROMIUM);
// Without chromium the test cannot run; on CI (which installs it) that is a failure, not a skip.
const skip = !haveChromium && !process.env.CI ? `${CHROMIUM} is not installed (apt-get install -y chromium)` : false;

const tmp = tempDir('shuckle-page');
const procs: Service[] = [];
let url = '';
let blockPorts: number[] = [];

before(async () => {
  if (skip) return;
  const httpPort = await freeTcpPort();
  const udpPort = await freeUdpPort();
  const sh = startEggsfs(['shuckle', '--dir', path.join(tmp.path, 'sh'), '--bind', '127.0.0.1', '--http-port', String(httpPort), '--udp-port', String(udpPort), '--check-period-ms', '500', '--stale-ms', '3000'], {
    env: { EGGSFS_CLUSTER_SECRET: SECRET },
  });
  procs.push(sh);
  await sh.waitFor(/^ready shuckle /);
  url = `http://127.0.0.1:${httpPort}`;
  for (let i = 0; i < 3; i++) {
    const port = await freeTcpPort();
    const b = startEggsfs(['blocks', '--dir', path.join(tmp.path, `b${i}`), '--port', String(port), '--shuckle-udp', `127.0.0.1:${udpPort}`, '--failure-domain', `host-${i}`]);
    procs.push(b);
    await b.waitFor(/^ready blocks /);
    blockPorts.push(port);
  }
  await until('three block services', async () => (await fetchBlockServices({ url })).length === 3);
  await registerShards({ url, secret: SECRET }, Array.from({ length: 200 }, (_, id) => ({ id, ip: '127.0.0.1', port: 30000 + id })));
  await registerCdc({ url, secret: SECRET }, { ip: '127.0.0.1', port: 36999 });
});

after(async () => {
  await Promise.all(procs.map((p) => p.kill()));
  tmp.remove();
});

test('the page shows the cluster, refreshes itself, drives drain/resume, and shows no secret', { skip, timeout: 120_000 }, async () => {
  const { chromium } = await import('playwright-core');
  const profile = tempDir('chromium-profile');
  // A persistent context on a fresh directory is how playwright takes --user-data-dir.
  const browser = await chromium.launchPersistentContext(profile.path, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1000 },
  });
  try {
    const page = await browser.newPage();
    await page.goto(url + '/');
    assert.equal(await page.title(), 'EggsFS cluster');
    // Every block service, with its address, class, status, failure domain, block count.
    const rows = page.locator('#block-services tbody tr');
    assert.equal(await rows.count(), 3);
    const tableText = await page.locator('#block-services').innerText();
    for (const port of blockPorts) assert.ok(tableText.includes(`127.0.0.1:${port}`), `address ${port} shown`);
    for (let i = 0; i < 3; i++) assert.ok(tableText.includes(`host-${i}`));
    assert.match(tableText, /Free space/);
    assert.match(tableText, /live/);
    assert.equal(await page.locator('#total-services').innerText(), '3');
    // Shards: 200 of 256 up, grid of 256 cells; the CDC.
    assert.match(await page.locator('#shard-summary').innerText(), /200 up, 0 stale, 56 not registered/);
    assert.equal(await page.locator('#shard-grid .cell').count(), 256);
    assert.equal(await page.locator('#shard-grid .cell.up').count(), 200);
    assert.match(await page.locator('#cdc').innerText(), /127\.0\.0\.1:36999/);
    // No secret key anywhere: not in the HTML, not in the text.
    const keys = (await fetchBlockServices({ url, secret: SECRET })).map((e) => e.secret_key);
    assert.equal(keys.length, 3);
    const html = await page.content();
    for (const k of keys) {
      assert.ok(k.length === 32);
      assert.ok(!html.includes(k), 'secret key on the page');
    }
    assert.ok(!html.includes(SECRET), 'cluster secret on the page');

    // Drain from the page: the row's status changes without a manual reload.
    const firstId = await rows.first().getAttribute('data-bs-id');
    await page.locator(`tr[data-bs-id="${firstId}"] button[data-action="drain"]`).click();
    await page.locator(`tr[data-bs-id="${firstId}"] .badge.drain`).waitFor({ timeout: 10_000 });
    assert.equal((await fetchBlockServices({ url })).find((e) => String(e.id) === firstId)!.status, 'drain');
    fs.mkdirSync(path.join(tmp.path, 'shots'), { recursive: true });
    const shot = process.env.EGGSFS_SCREENSHOT ?? path.join(tmp.path, 'shots', 'shuckle.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 10_000);
    await page.locator(`tr[data-bs-id="${firstId}"] button[data-action="resume"]`).click();
    await page.locator(`tr[data-bs-id="${firstId}"] .badge.ok`).waitFor({ timeout: 10_000 });

    // It refreshes itself: kill one block service and watch its row turn stale.
    const victim = procs[1]!;
    await victim.kill('SIGKILL');
    await page.locator('#block-services tr.stale').first().waitFor({ timeout: 20_000 });
    const staleText = await page.locator('#block-services tr.stale').first().innerText();
    assert.match(staleText, new RegExp(`127\\.0\\.0\\.1:${blockPorts[0]}`));
    assert.match(staleText, /stale/);
  } finally {
    await browser.close();
    profile.remove();
  }
});
