// The fault matrix, CDC half: the CDC killed -9 between any two steps of every transaction
// (right after persisting a step's shard request, right after sending it, right after its answer
// arrived), and killed while a step's request is held in the network. The restarted CDC must
// resume from its database and finish or roll back, answering the waiting client; fsck passes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CdcCluster } from './helpers/cdc-fixture.js';
import { TXN_CASES, armVia, checkUnaffected, stepLabel, type StepSpec, type TxnCase } from './helpers/cdc-fault-cases.js';

const PHASES = ['persisted', 'sent', 'answered'] as const;
let c: CdcCluster;

interface CrashCase {
  tc: TxnCase;
  st: StepSpec;
  phase: (typeof PHASES)[number];
  s?: any;
}
const crashCases: CrashCase[] = [];
for (const tc of TXN_CASES) for (const st of tc.steps) if (!st.noCrash) for (const phase of PHASES) crashCases.push({ tc, st, phase });
const crashEnv = (k: CrashCase) => ({ EGGSFS_CDC_CRASH_AT: `${k.tc.kind}:${k.st.step}:${k.phase}` });

before(async () => {
  c = await CdcCluster.start({ proxy: true, shardTimeoutMs: 100 });
  // Every scenario's fixtures first, while the CDC has no crash point armed.
  for (const k of crashCases) k.s = await k.tc.setup(c);
  await c.restartCdc(crashEnv(crashCases[0]!));
});
after(async () => {
  await c?.stop();
});

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))]);
}

crashCases.forEach((k, i) => {
  const label = `${stepLabel(k.tc, k.st)}: CDC killed -9 when ${k.phase}`;
  test(label, async () => {
    armVia(c, k.st, k.s);
    const pending = c.outcome(k.tc.kind, k.tc.request(k.s));
    const exit = await within(c.cdcProc.exited(), 10_000, `crash point ${JSON.stringify(crashEnv(k))}`);
    assert.equal(exit, 'SIGKILL', 'the CDC died at the crash point');
    c.proxy!.clearRules();
    // Restart armed for the next scenario: resumed transactions never trigger crash points.
    const next = crashCases[i + 1];
    await c.startCdc(next ? crashEnv(next) : {});
    const o = await pending;
    await checkUnaffected(c, k.tc, k.st, k.s, o, label);
  });
});

test('fsck is clean after every crash', async () => {
  await c.restartCdc({});
  await c.assertFsckClean();
});

for (const tc of TXN_CASES) {
  for (const st of tc.steps) {
    const label = `${stepLabel(tc, st)}: CDC killed -9 while the request is held, then the old copy delivered late`;
    test(label, async () => {
      const s = await tc.setup(c);
      armVia(c, st, s);
      const held = c.proxy!.addRule({ kind: st.kind, match: (b) => st.match(s, b), times: 1_000, action: { t: 'hold' } });
      const pending = c.outcome(tc.kind, tc.request(s));
      await within(held.firedOnce, 10_000, 'request held');
      await c.restartCdc({});
      c.proxy!.clearRules();
      c.proxy!.releaseHeld();
      const o = await pending;
      await checkUnaffected(c, tc, st, s, o, label);
    });
  }
}

test('fsck is clean at the end', async () => {
  await c.assertFsckClean();
});
