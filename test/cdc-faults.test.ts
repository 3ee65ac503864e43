// The fault matrix, network half: every shard request of every step of the four transactions
// dropped, delayed past the CDC's timeout, duplicated, executed with its answer lost, answered
// with each error it can receive, and sent while its shard process is killed -9 and restarted.
// After each fault the client's answer must match the namespace (done = done, failed = nothing
// left behind, FATAL_ERROR = fsck sees the damage, and an operator's repair makes it clean), and
// fsck must pass at the end.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ErrorCode, errorName } from '../src/proto/errors.js';
import { CdcCluster } from './helpers/cdc-fixture.js';
import { NET_FAULTS, TXN_CASES, armVia, checkUnaffected, stepLabel } from './helpers/cdc-fault-cases.js';

const SHARD_TIMEOUT_MS = 100;
let c: CdcCluster;

before(async () => {
  c = await CdcCluster.start({ proxy: true, shardTimeoutMs: SHARD_TIMEOUT_MS });
});
after(async () => {
  await c?.stop();
});

for (const tc of TXN_CASES) {
  for (const st of tc.steps) {
    const label = stepLabel(tc, st);
    for (const f of NET_FAULTS) {
      test(`${label}: ${f.name}`, async () => {
        const s = await tc.setup(c);
        armVia(c, st, s);
        const rule = c.proxy!.addRule({ kind: st.kind, match: (b) => st.match(s, b), action: f.action(SHARD_TIMEOUT_MS) });
        const o = await c.outcome(tc.kind, tc.request(s));
        c.proxy!.clearRules();
        assert.equal(rule.fired, 1, 'the fault was injected');
        await checkUnaffected(c, tc, st, s, o, label);
      });
    }

    test(`${label}: shard process killed -9 and restarted`, async () => {
      const s = await tc.setup(c);
      armVia(c, st, s);
      const rule = c.proxy!.addRule({
        kind: st.kind,
        match: (b) => st.match(s, b),
        action: {
          t: 'call',
          f: async (): Promise<'drop'> => {
            await c.restartShards();
            return 'drop';
          },
        },
      });
      const o = await c.outcome(tc.kind, tc.request(s));
      c.proxy!.clearRules();
      assert.equal(rule.fired, 1);
      assert.deepEqual(c.proxy!.errors, [], 'shard restart worked');
      await checkUnaffected(c, tc, st, s, o, label);
    });

    for (const code of st.errors) {
      test(`${label}: answered ${errorName(code)}`, async () => {
        const s = await tc.setup(c);
        armVia(c, st, s);
        const rule = c.proxy!.addRule({ kind: st.kind, match: (b) => st.match(s, b), action: { t: 'error', code } });
        const o = await c.outcome(tc.kind, tc.request(s));
        c.proxy!.clearRules();
        assert.equal(rule.fired, 1, 'the error was injected');
        const expected = st.expect(code);
        if (expected === 'done') {
          assert.ok(o.ok, `succeeds, got ${o.ok ? '' : errorName(o.code)}`);
          await tc.checkDone(c, s, o);
          return;
        }
        assert.equal(o.ok ? 'success' : errorName(o.code), errorName(expected));
        if (expected === ErrorCode.FATAL_ERROR) {
          const r = await c.fsck();
          assert.ok(r.problems.length > 0, 'fsck sees what the FATAL_ERROR left behind');
          await st.repair!(c, s);
          if (st.repaired === 'done') await tc.checkDone(c, s, o);
          else await tc.checkUndone(c, s);
        } else {
          await tc.checkUndone(c, s);
        }
      });
    }
  }
  test(`fsck is clean after every ${tc.kind} fault`, async () => {
    await c.assertFsckClean();
  });
}
