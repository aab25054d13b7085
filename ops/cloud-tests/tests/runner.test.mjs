// oxbase only: several oxbase-cloud runners serving one app, a runner killed
// while afterSave deliveries are in flight, and a runner stopped while it
// serves a call.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventually, sleep, stopChild } from './common.mjs';
import { Parse, TARGET, startTarget } from './target.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const cloudFile = path.join(here, 'fixtures/runner-cloud.cjs');

describe('oxbase-cloud runners', { skip: TARGET !== 'oxbase' && 'oxbase only (CLOUD_TARGET=oxbase)' }, () => {
  let target;

  before(async () => {
    target = await startTarget({
      cloudFile,
      runners: 2,
      // Short trigger timeouts and retries, so a delivery lost with a killed
      // runner comes back within a few seconds.
      env: {
        OXBASE_TRIGGERS__TIMEOUT_MS: '2000',
        OXBASE_TRIGGERS__RETRY_INITIAL_MS: '200',
        OXBASE_TRIGGERS__RETRY_MAX_MS: '1000',
        OXBASE_TRIGGERS__MAX_ATTEMPTS: '30',
      },
    });
  });

  after(async () => {
    if (target) await target.stop();
  });

  test('two runners share the calls', async () => {
    const pids = [...target.runners].map((r) => r.pid).sort();
    assert.equal(pids.length, 2);
    const results = [];
    for (let batch = 0; batch < 10; batch++) {
      const calls = [];
      for (let i = 0; i < 20; i++) calls.push(Parse.Cloud.run('whoServes', { n: batch * 20 + i }));
      results.push(...(await Promise.all(calls)));
    }
    assert.equal(results.length, 200);
    assert.deepEqual(results.map((r) => r.n), Array.from({ length: 200 }, (_, i) => i), 'every call got its own answer');
    const served = new Map();
    for (const r of results) served.set(r.pid, (served.get(r.pid) || 0) + 1);
    assert.deepEqual([...served.keys()].sort(), pids, `both runners served calls: ${JSON.stringify([...served])}`);
  });

  test('SIGKILL of a runner loses no afterSave', async (t) => {
    const N = 100;
    const [victim] = [...target.runners];
    const ids = [];
    for (let i = 0; i < N; i += 20) {
      const batch = [];
      for (let j = i; j < i + 20; j++) batch.push(new Parse.Object('Delivery', { n: j }).save());
      ids.push(...(await Promise.all(batch)).map((o) => o.id));
    }
    // Kill the victim once it has finished a delivery: it is then busy with
    // others (each takes 200 ms, up to 16 run at once across the runners).
    await eventually(
      async () => (await new Parse.Query('DeliveryLog').equalTo('pid', victim.pid).count({ useMasterKey: true })) > 0,
      { intervalMs: 20, what: 'a delivery served by the runner to kill' },
    );
    victim.kill('SIGKILL');
    assert.equal(new Set(ids).size, N);
    const distinct = async () => {
      const rows = await new Parse.Query('DeliveryLog').limit(10_000).find({ useMasterKey: true });
      return new Set(rows.map((r) => r.get('deliveryId')));
    };
    const seen = await eventually(async () => ((await distinct()).size >= N ? distinct() : null), { timeoutMs: 40_000, intervalMs: 500, what: `${N} distinct afterSave deliveries` });
    assert.deepEqual([...seen].sort(), [...ids].sort());
    const rows = await new Parse.Query('DeliveryLog').limit(10_000).find({ useMasterKey: true });
    const byPid = {};
    for (const r of rows) byPid[r.get('pid')] = (byPid[r.get('pid')] || 0) + 1;
    t.diagnostic(`${rows.length} deliveries for ${N} objects (redelivered: ${rows.length - N}); by runner pid: ${JSON.stringify(byPid)}; killed ${victim.pid}`);
    assert.equal(target.runners.size, 1, 'the killed runner is gone');
  });

  test('SIGTERM: a stopping runner finishes the call in flight', async () => {
    // One runner left, so the call is surely on the one being stopped.
    while (target.runners.size > 1) await stopChild([...target.runners][0]);
    if (target.runners.size === 0) await target.startRunner();
    const [runner] = [...target.runners];
    const exited = new Promise((resolve) => runner.once('exit', (code, signal) => resolve({ code, signal })));
    const call = Parse.Cloud.run('slowEcho', { ms: 500, value: 'still here' });
    await sleep(150);
    runner.kill('SIGTERM');
    assert.deepEqual(await call, { echo: 'still here', pid: runner.pid });
    assert.deepEqual(await exited, { code: 0, signal: null }, 'the runner exits cleanly once drained');
  });
});
