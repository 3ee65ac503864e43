// The web page (services.md §3.5, extended): the whole cluster at a glance. Rendered on the server
// (works without JavaScript); a small script refreshes the cluster part every few seconds and
// drives the drain/resume/terminate buttons. No secret key is ever rendered.
import type { Overview } from './view.js';

export const PAGE_REFRESH_MS = 5_000;

function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Decimal units like Jinja's filesizeformat: "1.2 GB". */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '?';
  if (n < 1000) return `${n} Bytes`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function formatDuration(ms: number): string {
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${ms / 1000} s`;
}

export function formatAge(ms: number): string {
  if (ms < 0) ms = 0;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.round(h / 24)} days ago`;
}

function blockServicesTable(o: Overview): string {
  if (o.block_services.length === 0) return '<p class="empty">No block service has registered yet.</p>';
  const rows = o.block_services.map((b) => {
    const age = formatAge(o.now_ms - b.last_seen_ms!);
    const actions: string[] = [];
    if (b.status === 'ok') actions.push(`<button data-action="drain" data-id="${b.id}">Drain</button>`);
    if (b.status === 'drain') actions.push(`<button data-action="resume" data-id="${b.id}">Resume</button>`);
    if (b.status === 'drain' && b.is_stale) actions.push(`<button class="danger" data-action="terminate" data-id="${b.id}">Terminate</button>`);
    const cap = b.used_bytes! + b.free_bytes!;
    const pct = cap > 0 ? (100 * b.used_bytes!) / cap : 0;
    return `<tr data-bs-id="${b.id}" class="bs-row status-${esc(b.status)}${b.is_stale ? ' stale' : ''}">
<td class="num">${b.id}</td>
<td class="addr">${esc(b.ip)}:${b.port}</td>
<td>${esc(b.failure_domain || '—')}</td>
<td class="num">${b.storage_class}</td>
<td><span class="badge ${esc(b.status)}">${esc(b.status)}</span></td>
<td class="num">${formatBytes(cap)}</td>
<td class="num">${formatBytes(b.used_bytes!)} <span class="bar"><span style="width:${pct.toFixed(1)}%"></span></span></td>
<td class="num">${formatBytes(b.free_bytes!)}</td>
<td class="num">${b.used_n}</td>
<td class="num">${b.write_weight.toFixed(3)}</td>
<td class="${b.is_stale ? 'bad' : ''}">${esc(age)}</td>
<td class="${b.is_stale ? 'bad' : 'good'}">${b.is_stale ? 'stale' : 'live'}</td>
<td class="actions">${actions.join(' ')}</td>
</tr>`;
  });
  return `<table id="block-services">
<thead><tr><th>ID</th><th>Address</th><th>Failure domain</th><th>Storage class</th><th>Status</th><th>Capacity</th><th>Stored bytes</th><th>Free space</th><th>Blocks</th><th>Write weight</th><th>Last checked</th><th>Stale</th><th></th></tr></thead>
<tbody>${rows.join('\n')}</tbody></table>`;
}

function shardGrid(o: Overview): string {
  const byId = new Map(o.shards.map((s) => [s.id, s]));
  const cells: string[] = [];
  for (let i = 0; i < 256; i++) {
    const s = byId.get(i);
    const cls = !s ? 'missing' : s.is_stale ? 'stale' : 'up';
    const title = s ? `shard ${i}: ${s.ip}:${s.port}, last seen ${formatAge(o.now_ms - s.last_seen_ms)}` : `shard ${i}: not registered`;
    cells.push(`<span class="cell ${cls}" title="${esc(title)}">${i.toString(16).padStart(2, '0')}</span>`);
  }
  const ports = o.shards.map((s) => s.port);
  const range = ports.length ? `ports ${Math.min(...ports)}–${Math.max(...ports)}` : '';
  return `<p id="shard-summary"><b>${o.totals.shards_up}</b> up, <b>${o.totals.shards_stale}</b> stale, <b>${o.totals.shards_missing}</b> not registered ${esc(range)}</p>
<div id="shard-grid">${cells.join('')}</div>`;
}

function cdcPart(o: Overview): string {
  if (!o.cdc) return '<p id="cdc" class="empty">The CDC has not registered.</p>';
  return `<p id="cdc">Address <b class="addr">${esc(o.cdc.ip)}:${o.cdc.port}</b>, last seen ${esc(formatAge(o.now_ms - o.cdc.last_seen_ms))}
<span class="${o.cdc.is_stale ? 'bad' : 'good'}">${o.cdc.is_stale ? 'stale' : 'live'}</span></p>`;
}

/** The part of the page that the script refreshes. */
export function renderCluster(o: Overview): string {
  const t = o.totals;
  return `<section id="totals">
<div class="tile"><div class="v" id="total-services">${t.block_services}</div><div class="k">block services</div><div class="s">${t.ok} ok · ${t.drain} drain · ${t.terminal} terminal · <span class="${t.stale ? 'bad' : ''}">${t.stale} stale</span></div></div>
<div class="tile"><div class="v" id="total-capacity">${formatBytes(t.capacity_bytes)}</div><div class="k">capacity</div><div class="s">${formatBytes(t.free_bytes)} free</div></div>
<div class="tile"><div class="v" id="total-used">${formatBytes(t.used_bytes)}</div><div class="k">stored</div><div class="s"><span id="total-blocks">${t.blocks}</span> blocks</div></div>
<div class="tile"><div class="v" id="total-shards">${t.shards_up}/256</div><div class="k">shards up</div><div class="s">${t.shards_stale} stale</div></div>
<div class="tile"><div class="v">${o.cdc ? (o.cdc.is_stale ? 'stale' : 'up') : '—'}</div><div class="k">CDC</div><div class="s">${o.cdc ? esc(`${o.cdc.ip}:${o.cdc.port}`) : 'not registered'}</div></div>
</section>
<h2>Block services</h2>
${blockServicesTable(o)}
<p class="note">Services sharing a disk each report that disk's free space. A service is stale when its last successful check is ${esc(formatDuration(o.block_stale_ms))} old.</p>
<h2>Shards</h2>
${shardGrid(o)}
<h2>CDC</h2>
${cdcPart(o)}
<p class="updated">Updated ${esc(new Date(o.now_ms).toISOString().replace('T', ' ').slice(0, 19))} UTC</p>`;
}

const STYLE = `
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;align-items:baseline;gap:16px}
header h1{margin:0;font-size:20px}header span{color:#aab}
main{padding:8px 24px 24px}
h2{font-size:16px;margin:20px 0 8px}
#totals{display:flex;gap:12px;flex-wrap:wrap;margin-top:12px}
.tile{background:#fff;border:1px solid #dde;border-radius:6px;padding:10px 14px;min-width:150px}
.tile .v{font-size:22px;font-weight:600}.tile .k{color:#667;text-transform:uppercase;font-size:11px;letter-spacing:.05em}.tile .s{color:#556;font-size:12px}
table{border-collapse:collapse;background:#fff;border:1px solid #dde;width:100%}
th,td{border-bottom:1px solid #e5e7ee;padding:5px 8px;text-align:left;white-space:nowrap}
th{background:#eef0f5;font-size:12px;color:#445}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.addr,.addr{font-family:ui-monospace,Menlo,monospace}
tr.stale td{background:#fff6f6}
.bad{color:#c0262d;font-weight:600}.good{color:#1a7f37}
.badge{padding:1px 7px;border-radius:9px;font-size:12px;background:#e4e8f0}
.badge.ok{background:#d8f3dc;color:#1a5c2b}.badge.drain{background:#fff1c2;color:#7a5a00}.badge.terminal{background:#f6d5d7;color:#8a1c22}
.bar{display:inline-block;width:50px;height:6px;background:#e4e8f0;border-radius:3px;vertical-align:middle;margin-left:4px}
.bar span{display:block;height:6px;background:#4a7bd0;border-radius:3px}
button{font:inherit;font-size:12px;padding:2px 8px;border:1px solid #99a;border-radius:4px;background:#fff;cursor:pointer}
button.danger{border-color:#c0262d;color:#c0262d}
#shard-grid{display:grid;grid-template-columns:repeat(32,1fr);gap:2px;max-width:900px}
.cell{font:10px ui-monospace,monospace;text-align:center;padding:2px 0;border-radius:2px;color:#fff}
.cell.up{background:#2f9e55}.cell.stale{background:#d1434b}.cell.missing{background:#c9ccd6;color:#667}
.note,.updated,.empty{color:#667;font-size:12px}
`;

const SCRIPT = `
(function(){
  async function refresh(){
    try{
      const r = await fetch('/?part=cluster', {cache:'no-store'});
      if(r.ok){ document.getElementById('cluster').innerHTML = await r.text(); document.getElementById('conn').textContent=''; }
    }catch(e){ document.getElementById('conn').textContent = 'shuckle unreachable, retrying'; }
  }
  document.addEventListener('click', async function(ev){
    const b = ev.target.closest('button[data-action]');
    if(!b) return;
    const action = b.dataset.action, id = Number(b.dataset.id);
    if(action === 'terminate' && !confirm('Are you sure?')) return;
    await fetch('/change_status', {method:'POST', headers:{'content-type':'application/json'}, body: JSON.stringify({action, id})});
    refresh();
  });
  setInterval(refresh, ${PAGE_REFRESH_MS});
})();
`;

export function renderPage(o: Overview): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EggsFS cluster</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${STYLE}</style></head>
<body><header><h1>EggsFS cluster</h1><span>shuckle: block services, shards and CDC</span><span id="conn" class="bad"></span></header>
<main id="cluster">${renderCluster(o)}</main>
<script>${SCRIPT}</script>
</body></html>`;
}
