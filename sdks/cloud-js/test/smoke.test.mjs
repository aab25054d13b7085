// Smoke test: a real oxbase (`oxbase all` + nats-server) and the runner on
// test/fixtures/main.js, a Parse Server cloud file used unchanged.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { APP_ID, MASTER_KEY, oxbaseBinary, startOxbase, startRunner } from './harness.mjs';

const require = createRequire(import.meta.url);
const { connect } = require('nats');
const here = path.dirname(fileURLToPath(import.meta.url));
const cloudFile = path.join(here, 'fixtures/main.js');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const skip = oxbaseBinary() ? false : 'no oxbase binary (build it, or set OXBASE_BIN)';
let ox;
let runner;

async function call(method, route, body, headers = {}) {
  const res = await fetch(`${ox.serverURL}${route}`, {
    method,
    headers: { 'X-Parse-Application-Id': APP_ID, 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null), headers: res.headers };
}
const master = { 'X-Parse-Master-Key': MASTER_KEY };

async function eventually(fn, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(100);
  }
}

before(async () => {
  if (skip) return;
  ox = await startOxbase();
  runner = await startRunner(ox, cloudFile);
  await sleep(300); // oxbase's registry watch
});

after(async () => {
  if (runner) await runner.stop();
  if (ox) await ox.stop();
});

test('a cloud function answers, with Parse.Objects encoded as Parse Server does', { skip }, async () => {
  assert.deepEqual((await call('POST', '/functions/hello', { name: 'ox' })).body, { result: 'Hello ox' });
  const made = (await call('POST', '/functions/makeObject', { label: 'abc' })).body.result;
  assert.equal(made.__type, 'Object');
  assert.equal(made.className, 'SmokeItem');
  assert.equal(made.upper, 'ABC', 'the save went through beforeSave');
  assert.ok(made.objectId);
  assert.deepEqual((await call('POST', '/functions/fail', {})).body, { code: 101, error: 'nothing here' });
});

test('validators: requireUser and typed fields answer 142', { skip }, async () => {
  const anon = await call('POST', '/functions/whoami', {});
  assert.equal(anon.status, 400);
  assert.deepEqual(anon.body, { code: 142, error: 'Validation failed. Please login to continue.' });
  const signup = await call('POST', '/users', { username: `u${Date.now()}`, password: 'pw' });
  const token = signup.body.sessionToken;
  const me = await call('POST', '/functions/whoami', {}, { 'X-Parse-Session-Token': token });
  assert.equal(me.body.result.master, false);
  assert.equal(me.body.result.token, true);
  assert.match(me.body.result.user, /^u\d+/);
  assert.deepEqual((await call('POST', '/functions/typed', { n: 'x' })).body, {
    code: 142,
    error: 'Validation failed. Invalid type for n. Expected: number',
  });
  assert.deepEqual((await call('POST', '/functions/typed', { n: 4 })).body, { result: 8 });
});

test('beforeSave changes the object, or refuses it with 141', { skip }, async () => {
  const created = await call('POST', '/classes/SmokeItem', { label: 'hey', scratch: 1 });
  assert.equal(created.status, 201);
  assert.equal(created.body.upper, 'HEY');
  const id = created.body.objectId;
  const updated = await call('PUT', `/classes/SmokeItem/${id}`, { label: 'second', scratch: 2 });
  assert.equal(updated.status, 200);
  assert.equal(updated.body.upper, 'SECOND');
  const stored = (await call('GET', `/classes/SmokeItem/${id}`)).body;
  assert.equal(stored.label, 'second');
  assert.equal(stored.upper, 'SECOND');
  assert.equal(stored.wasNew, true, 'isNew() was true on create only');
  assert.equal(stored.scratch, undefined, 'the hook unset it');
  const refused = await call('POST', '/classes/SmokeItem', { label: 'forbidden' });
  assert.equal(refused.status, 400);
  assert.deepEqual(refused.body, { code: 141, error: 'label forbidden' });
});

test('beforeDelete refuses with the Parse.Error code it throws', { skip }, async () => {
  const { objectId } = (await call('POST', '/classes/SmokeItem', { label: 'keep' })).body;
  assert.deepEqual((await call('DELETE', `/classes/SmokeItem/${objectId}`)).body, { code: 119, error: 'keep me' });
});

test('afterSave runs after the write, with the object and the user', { skip }, async () => {
  const username = `a${Date.now()}`;
  const token = (await call('POST', '/users', { username, password: 'pw' })).body.sessionToken;
  const { objectId } = (await call('POST', '/classes/SmokeItem', { label: 'audit-me' }, { 'X-Parse-Session-Token': token })).body;
  const audit = await eventually(async () => {
    const r = await call('GET', `/classes/SmokeAudit?where=${encodeURIComponent(JSON.stringify({ itemId: objectId }))}`, undefined, master);
    return r.body.results && r.body.results[0];
  });
  assert.equal(audit.existed, false);
  assert.equal(audit.by, username, 'request.user was read from the pointer');
});

test('a job runs with its params and reports its result', { skip }, async () => {
  const started = await call('POST', '/jobs/smokeJob', { x: 7 }, master);
  const statusId = started.headers.get('x-parse-job-status-id');
  assert.ok(statusId);
  const status = await eventually(async () => {
    const r = (await call('GET', `/classes/_JobStatus/${statusId}`, undefined, master)).body;
    return r.status === 'succeeded' || r.status === 'failed' ? r : null;
  });
  assert.equal(status.status, 'succeeded');
  assert.match(status.message, /"got":7/);
});

test('SIGTERM withdraws the hooks only when no other runner of the group is left', { skip }, async () => {
  const second = await startRunner(ox, cloudFile);
  const nc = await connect({ servers: ox.natsUrl });
  try {
    const kv = await nc.jetstream().views.kv('OXBASE_HOOKS');
    assert.ok(await kv.get('function.hello'));
    assert.deepEqual(await runner.stop(), { code: 0, signal: null });
    runner = null;
    const kept = await kv.get('function.hello');
    assert.equal(kept && kept.operation, 'PUT', 'another runner still serves: keys stay');
    assert.deepEqual((await call('POST', '/functions/hello', {})).body, { result: 'Hello world' });
    assert.deepEqual(await second.stop(), { code: 0, signal: null });
    const gone = await kv.get('function.hello');
    assert.ok(!gone || gone.operation !== 'PUT', 'the last runner withdrew its keys');
    const trig = await kv.get('trigger.SmokeItem.beforeSave');
    assert.ok(!trig || trig.operation !== 'PUT');
  } finally {
    await nc.close();
  }
});
