// Wire-level tests: this test plays oxbase, sending cloud-protocol.md
// requests to the runner over NATS and checking the replies. Covers the
// kinds oxbase may not send yet (find, login, logout, file triggers).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { startNats, startRunner } from './harness.mjs';

const require = createRequire(import.meta.url);
const { connect } = require('nats');
const here = path.dirname(fileURLToPath(import.meta.url));
let nats;
let runner;
let nc;

before(async () => {
  nats = await startNats();
  runner = await startRunner({ natsUrl: nats.natsUrl }, path.join(here, 'fixtures/protocol.js'));
  nc = await connect({ servers: nats.natsUrl });
});

after(async () => {
  if (nc) await nc.close();
  if (runner) await runner.stop();
  if (nats) await nats.stop();
});

async function ask(subject, body) {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  const msg = await nc.request(subject, new TextEncoder().encode(data), { timeout: 5000 });
  return JSON.parse(new TextDecoder().decode(msg.data));
}

const user = { objectId: 'u1', username: 'bob', sessionToken: 'r:abc', createdAt: '2024-01-01T00:00:00.000Z', updatedAt: '2024-01-01T00:00:00.000Z' };

test('registration: every hook is in OXBASE_HOOKS', async () => {
  const kv = await nc.jetstream().views.kv('OXBASE_HOOKS');
  const keys = [];
  for await (const k of await kv.keys()) keys.push(k);
  for (const k of [
    'function.echoParams',
    'trigger.Thing.beforeSave',
    'trigger.Thing.beforeFind',
    'trigger.Thing.afterFind',
    'trigger._User.beforeLogin',
    'trigger._User.beforePasswordResetRequest',
    'trigger._Session.afterLogout',
    'trigger._File.beforeSaveFile',
    'trigger._File.beforeDeleteFile',
  ]) {
    assert.ok(keys.includes(k), `${k} registered`);
  }
  const v = JSON.parse(new TextDecoder().decode((await kv.get('trigger._File.beforeSaveFile')).value));
  assert.deepEqual(v, { className: '_File', triggerName: 'beforeSaveFile', nats: true });
});

test('functions: params decoded, user from the wire, context', async () => {
  const r = await ask('oxbase.functions.echoParams', {
    functionName: 'echoParams',
    params: { when: { __type: 'Date', iso: '2024-01-01T00:00:00.000Z' }, ptr: { __type: 'Pointer', className: 'A', objectId: 'x' } },
    user,
    context: { a: 1 },
  });
  assert.deepEqual(r, { success: { isDate: true, ptrClass: 'A', user: 'bob', ctx: { a: 1 } } });
  assert.deepEqual(await ask('oxbase.functions.express', { params: {} }), { success: 'via res' });
  assert.deepEqual(await ask('oxbase.functions.throwsError', { params: {} }), { error: { code: 141, message: 'plain error' } });
});

test('malformed JSON answers 107', async () => {
  const r = await ask('oxbase.functions.echoParams', '{nope');
  assert.equal(r.error.code, 107);
});

test('rateLimit goes in the registry entry for the API to count; the runner does not count', async () => {
  const kv = await nc.jetstream().views.kv('OXBASE_HOOKS');
  const v = JSON.parse(new TextDecoder().decode((await kv.get('function.limited')).value));
  assert.deepEqual(v, {
    functionName: 'limited',
    nats: true,
    rateLimit: { requestTimeWindow: 60_000, requestCount: 2, zone: 'user' },
  });
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(await ask('oxbase.functions.limited', { params: {}, ip: '10.0.0.1' }), { success: 'ok' });
  }
});

test('beforeSave: dirtyKeys are the request\'s changes; ops and context come back', async () => {
  const original = { objectId: 't1', n: 1, label: 'a', createdAt: '2024-01-01T00:00:00.000Z', updatedAt: '2024-01-01T00:00:00.000Z', className: 'Thing' };
  const r = await ask('oxbase.triggers.beforeSave.Thing', {
    triggerName: 'beforeSave',
    object: { ...original, n: 2 },
    original,
    context: { from: 'client' },
  });
  assert.equal(r.success.n, 12);
  assert.equal(r.success.label, 'a');
  assert.deepEqual(r.context, { from: 'client', seen: ['n'] });
  const d = await ask('oxbase.triggers.beforeSave.Defaults', { triggerName: 'beforeSave', object: { className: 'Defaults', x: 1 } });
  assert.deepEqual(d.success, { x: 1, kind: 'basic', className: 'Defaults' });
});

test('beforeFind rewrites the query or refuses', async () => {
  const r = await ask('oxbase.triggers.beforeFind.Thing', { triggerName: 'beforeFind', className: 'Thing', query: { where: { a: 1 } }, count: false, isGet: false });
  assert.deepEqual(r, { success: { query: { where: { a: 1 }, limit: 5 } } });
  const e = await ask('oxbase.triggers.beforeFind.Thing', { triggerName: 'beforeFind', className: 'Thing', query: { where: { secret: 1 } } });
  assert.deepEqual(e, { error: { code: 141, message: 'no secrets' } });
});

test('afterFind replaces the results', async () => {
  const r = await ask('oxbase.triggers.afterFind.Thing', {
    triggerName: 'afterFind',
    className: 'Thing',
    objects: [
      { objectId: 'a', className: 'Thing', visible: true },
      { objectId: 'b', className: 'Thing', visible: false },
    ],
    query: { where: {} },
  });
  assert.equal(r.success.length, 1);
  assert.equal(r.success[0].objectId, 'a');
  assert.equal(r.success[0].seen, true);
});

test('beforeLogin and afterLogout', async () => {
  const ok = await ask('oxbase.triggers.beforeLogin._User', { triggerName: 'beforeLogin', object: { ...user, className: '_User' } });
  assert.deepEqual(ok, { success: true });
  const banned = await ask('oxbase.triggers.beforeLogin._User', { triggerName: 'beforeLogin', object: { ...user, banned: true, className: '_User' } });
  assert.deepEqual(banned, { error: { code: 141, message: 'Access denied, you have been banned.' } });
  const out = await ask('oxbase.triggers.afterLogout._Session', { triggerName: 'afterLogout', object: { objectId: 's', sessionToken: 'r:x', className: '_Session' } });
  assert.deepEqual(out, { success: true });
});

test('beforePasswordResetRequest: lets through, or refuses with the handler\'s error', async () => {
  const subject = 'oxbase.triggers.beforePasswordResetRequest._User';
  const ok = await ask(subject, { triggerName: 'beforePasswordResetRequest', object: { ...user, email: 'bob@example.com', className: '_User' } });
  assert.deepEqual(ok, { success: true });
  const refused = await ask(subject, { triggerName: 'beforePasswordResetRequest', object: { ...user, email: 'locked@example.com', className: '_User' } });
  assert.deepEqual(refused, { error: { code: 205, message: 'This account cannot reset its password.' } });
});

test('file triggers: replace, refuse with 130 / 153', async () => {
  const b64 = Buffer.from('hello').toString('base64');
  assert.deepEqual(
    await ask('oxbase.triggers.beforeSaveFile._File', { triggerName: 'beforeSaveFile', file: { name: 'a.txt', base64: b64 }, fileSize: 5 }),
    { success: true },
  );
  assert.deepEqual(
    await ask('oxbase.triggers.beforeSaveFile._File', { triggerName: 'beforeSaveFile', file: { name: 'bad.txt', base64: b64 }, fileSize: 5 }),
    { error: { code: 130, message: 'bad file' } },
  );
  assert.deepEqual(
    await ask('oxbase.triggers.beforeSaveFile._File', { triggerName: 'beforeSaveFile', file: { name: 'rename.txt', base64: b64 }, fileSize: 5 }),
    { success: { file: { name: 'renamed.txt', base64: Buffer.from('new').toString('base64'), contentType: 'text/plain' } } },
  );
  assert.deepEqual(
    await ask('oxbase.triggers.beforeDeleteFile._File', { triggerName: 'beforeDeleteFile', file: { name: 'a.txt', url: 'http://x/a.txt' } }),
    { error: { code: 153, message: 'keep files' } },
  );
});

test('LiveQuery triggers are registered: beforeConnect on _Connect, afterLiveQueryEvent as afterEvent', async () => {
  const kv = await nc.jetstream().views.kv('OXBASE_HOOKS');
  const entry = async (key) => JSON.parse(new TextDecoder().decode((await kv.get(key)).value));
  assert.deepEqual(await entry('trigger._Connect.beforeConnect'), { className: '_Connect', triggerName: 'beforeConnect', nats: true });
  assert.deepEqual(await entry('trigger.Thing.beforeSubscribe'), { className: 'Thing', triggerName: 'beforeSubscribe', nats: true });
  assert.deepEqual(await entry('trigger.Thing.afterEvent'), { className: 'Thing', triggerName: 'afterEvent', nats: true });
});

const lq = (triggerName, className, event, more = {}) => ({ triggerName, className, event, clients: 2, subscriptions: 3, master: false, ...more });

test('beforeConnect: allows, or refuses with the handler\'s code', async () => {
  const subject = 'oxbase.triggers.beforeConnect._Connect';
  const signedIn = lq('beforeConnect', '_Connect', 'connect', { sessionToken: 'r:abc', user: { ...user, className: '_User' }, installationId: 'i1' });
  assert.deepEqual(await ask(subject, signedIn), { success: true });
  assert.deepEqual(await ask(subject, lq('beforeConnect', '_Connect', 'connect', { master: true })), { success: true });
  assert.deepEqual(await ask(subject, { ...signedIn, installationId: 'banned-device' }), {
    error: { code: 119, message: 'This device may not connect.' },
  });
  assert.deepEqual(await ask(subject, lq('beforeConnect', '_Connect', 'connect')), { error: { code: 141, message: 'Sign in first.' } });
  assert.deepEqual(await ask(subject, { ...signedIn, sessionToken: 'r:other' }), {
    error: { code: 141, message: 'the user does not match the session token' },
  });
});

test('beforeSubscribe: rewrites the query, subscribes as asked, or refuses', async () => {
  const subject = 'oxbase.triggers.beforeSubscribe.Thing';
  const asked = { where: { n: { $gt: 1 } }, keys: ['n', 'label'], watch: ['n'] };
  const r = await ask(subject, lq('beforeSubscribe', 'Thing', 'subscribe', { query: asked, sessionToken: 'r:abc', user: { ...user, className: '_User' } }));
  assert.deepEqual(r, {
    success: { query: { where: { n: { $gt: 1 }, owner: 'u1' }, keys: ['n', 'label', 'owner'], watch: ['n', 'owner'] } },
  });
  assert.deepEqual(await ask(subject, lq('beforeSubscribe', 'Thing', 'subscribe', { query: asked, master: true })), { success: true });
  assert.deepEqual(await ask(subject, lq('beforeSubscribe', 'Thing', 'subscribe', { query: { where: { secret: 1 } }, master: true })), {
    error: { code: 119, message: 'no secrets' },
  });
  assert.deepEqual(await ask(subject, lq('beforeSubscribe', 'Thing', 'subscribe', { query: asked })), {
    error: { code: 142, message: 'Validation failed. Please login to continue.' },
  });
});

test('afterLiveQueryEvent: sends as is, drops, changes the object, or sends an error', async () => {
  const subject = 'oxbase.triggers.afterEvent.Thing';
  const thing = { objectId: 't1', className: 'Thing', n: 5, label: 'a', createdAt: '2024-01-01T00:00:00.000Z', updatedAt: '2024-01-02T00:00:00.000Z', ACL: { '*': { read: true } } };
  assert.deepEqual(await ask(subject, lq('afterEvent', 'Thing', 'create', { object: thing })), { success: true });
  assert.deepEqual(await ask(subject, lq('afterEvent', 'Thing', 'create', { object: { ...thing, hidden: true } })), {
    success: { sendEvent: false },
  });
  const updated = await ask(subject, lq('afterEvent', 'Thing', 'update', { object: thing, original: { ...thing, n: 2 } }));
  assert.deepEqual(updated, { success: { object: { ...thing, delta: 3 } } });
  const viewed = await ask(subject, lq('afterEvent', 'Thing', 'create', { object: { ...thing, showViewer: true }, sessionToken: 'r:abc', user: { ...user, className: '_User' } }));
  assert.equal(viewed.success.object.viewer.__type, 'Object');
  assert.equal(viewed.success.object.viewer.className, '_User');
  assert.equal(viewed.success.object.viewer.username, 'bob');
  assert.equal(viewed.success.original, undefined);
  const left = await ask(subject, lq('afterEvent', 'Thing', 'leave', { object: thing, original: { ...thing, secret: 's' } }));
  assert.deepEqual(left, { success: { original: thing } });
  assert.deepEqual(await ask(subject, lq('afterEvent', 'Thing', 'delete', { object: { ...thing, boom: true } })), {
    error: { code: 141, message: 'boom on delete' },
  });
});

test('jobs: heartbeats on progressSubject while running, then the result', async () => {
  const beats = [];
  const sub = nc.subscribe('test.progress.1', { callback: (_e, m) => beats.push(new TextDecoder().decode(m.data)) });
  const r = await ask('oxbase.jobs.run.default.beating', {
    id: 'job-1', queue: 'default', name: 'beating', payload: {}, attempt: 1, maxAttempts: 3,
    timeoutMs: 10000, heartbeatMs: 300, progressSubject: 'test.progress.1',
  });
  sub.unsubscribe();
  assert.deepEqual(r, { success: 'job-1' });
  assert.ok(beats.length >= 3, `${beats.length} heartbeats`);
  assert.equal(beats[0], '{}');
});

test('SIGTERM: a call in flight is answered, then the last runner withdraws its keys', async () => {
  const other = await startRunner({ natsUrl: nats.natsUrl }, path.join(here, 'fixtures/protocol.js'), ['--prefix', 'slowtest']);
  const kv = await nc.jetstream().views.kv('SLOWTEST_HOOKS');
  assert.equal((await kv.get('function.slow')).operation, 'PUT');
  const pending = ask('slowtest.functions.slow', { params: {} });
  await new Promise((r) => setTimeout(r, 150));
  const exited = other.stop();
  assert.deepEqual(await pending, { success: 'done' });
  assert.deepEqual(await exited, { code: 0, signal: null });
  const gone = await kv.get('function.slow');
  assert.ok(!gone || gone.operation !== 'PUT');
});
