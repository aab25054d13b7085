// Parse Config shared between Parse Server and oxbase on one PostgreSQL
// database: parameters saved on either server read back on the other, and
// master-key-only parameters stay hidden from clients on both.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startBoth } from './harness.mjs';

let env;
before(async () => {
  env = await startBoth();
});
after(async () => {
  await env?.stop();
});

describe('Parse Config across servers', () => {
  it('reads what the other server saved', async () => {
    const saved = await env.parse.put(
      'config',
      { params: { welcome: 'hi', limit: 3, secret: 's' }, masterKeyOnly: { secret: true } },
      { master: true },
    );
    assert.equal(saved.status, 200, JSON.stringify(saved.body));
    const client = await env.oxbase.get('config');
    assert.equal(client.status, 200, JSON.stringify(client.body));
    assert.deepEqual(client.body.params, { welcome: 'hi', limit: 3 });
    const master = await env.oxbase.get('config', undefined, { master: true });
    assert.equal(master.body.params.secret, 's');

    const changed = await env.oxbase.put('config', { params: { limit: 4 } }, { master: true });
    assert.equal(changed.status, 200, JSON.stringify(changed.body));
    const back = await env.parse.get('config');
    assert.equal(back.body.params.limit, 4);
    assert.equal(back.body.params.welcome, 'hi');
    assert.equal(back.body.params.secret, undefined);
  });
});
