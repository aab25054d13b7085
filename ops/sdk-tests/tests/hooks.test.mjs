// Cloud functions and triggers through the SDK: Parse.Hooks registers
// webhooks served by this test process, Parse.Cloud.run calls a function,
// a beforeSave stamps or rejects, a beforeDelete rejects, and an afterSave
// arrives through the triggers service.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, expectParseError, uniqueClass } from './server.mjs';

const WEBHOOK_KEY = 'sdk-webhook-key';

let server;
let Parse;
let webhook;
/** Every call the webhook server received: { path, headers, body }. */
const calls = [];

/** A webhook server: each path answers with handlers[path](body). */
const handlers = {
  '/hello': (body) => ({ success: { greeting: `hi ${body.params.name}`, master: body.master } }),
  '/hello2': () => ({ success: 'second' }),
  '/fail': () => ({ error: 'nope' }),
  '/coded': () => ({ error: { code: 137, message: 'taken' } }),
  '/stamp': (body) => ({ success: { ...body.object, stamped: true } }),
  '/reject': () => ({ error: 'not allowed' }),
  '/observe': () => ({ success: true }),
};

function startWebhook() {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      let data = '';
      req.on('data', (chunk) => (data += chunk));
      req.on('end', () => {
        const body = JSON.parse(data);
        calls.push({ path: req.url, headers: req.headers, body });
        const handler = handlers[req.url];
        res.setHeader('Content-Type', 'application/json');
        if (!handler) {
          res.statusCode = 404;
          res.end('{}');
          return;
        }
        res.end(JSON.stringify(handler(body)));
      });
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

const url = (path) => `http://127.0.0.1:${webhook.address().port}${path}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(predicate, what) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const found = predicate();
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

before(async () => {
  webhook = await startWebhook();
  server = await startServer({ nats: true, env: { OXBASE_TRIGGERS__WEBHOOK_KEY: WEBHOOK_KEY } });
  Parse = server.Parse;
});

after(async () => {
  if (server) await server.stop();
  if (webhook) webhook.close();
});

describe('Parse.Hooks functions', () => {
  it('create, list, get, run, update and remove a function', async () => {
    const created = await Parse.Hooks.createFunction('hello', url('/hello'));
    assert.deepEqual(created, { functionName: 'hello', url: url('/hello') });
    const all = await Parse.Hooks.getFunctions();
    assert.deepEqual(all, [{ functionName: 'hello', url: url('/hello') }]);
    assert.deepEqual(await Parse.Hooks.getFunction('hello'), created);

    const result = await Parse.Cloud.run('hello', { name: 'ox' });
    assert.deepEqual(result, { greeting: 'hi ox', master: false });
    const call = calls.findLast((c) => c.path === '/hello');
    assert.equal(call.headers['x-parse-webhook-key'], WEBHOOK_KEY);
    assert.equal(call.body.functionName, 'hello');
    assert.deepEqual(call.body.params, { name: 'ox' });
    assert.equal(call.headers['content-type'], 'application/json');
    assert.equal(call.body.headers['x-parse-master-key'], undefined, 'the master key is not passed on');

    const updated = await Parse.Hooks.updateFunction('hello', url('/hello2'));
    assert.equal(updated.url, url('/hello2'));
    assert.equal(await Parse.Cloud.run('hello'), 'second');

    assert.deepEqual(await Parse.Hooks.removeFunction('hello'), {});
    const err = await expectParseError(Parse.Cloud.run('hello'), Parse.Error.SCRIPT_FAILED);
    assert.equal(err.message, 'Invalid function: "hello"');
    await expectParseError(Parse.Hooks.getFunction('hello'), 143);
  });

  it('a function error is 141 with its message, or its own code', async () => {
    await Parse.Hooks.createFunction('fails', url('/fail'));
    await Parse.Hooks.createFunction('coded', url('/coded'));
    const err = await expectParseError(Parse.Cloud.run('fails'), Parse.Error.SCRIPT_FAILED);
    assert.equal(err.message, 'nope');
    const coded = await expectParseError(Parse.Cloud.run('coded'), 137);
    assert.equal(coded.message, 'taken');
  });

  it('refuses duplicates, bad URLs and unknown functions', async () => {
    await Parse.Hooks.createFunction('dup', url('/hello'));
    const dup = await expectParseError(Parse.Hooks.createFunction('dup', url('/hello')), 143);
    assert.equal(dup.message, 'function name: dup already exists');
    await expectParseError(Parse.Hooks.createFunction('ftp', 'ftp://example.com/x'), 143);
    await expectParseError(Parse.Hooks.updateFunction('missing', url('/hello')), 143);
    const unknown = await expectParseError(Parse.Cloud.run('neverRegistered'), Parse.Error.SCRIPT_FAILED);
    assert.equal(unknown.message, 'Invalid function: "neverRegistered"');
  });
});

describe('Parse.Hooks triggers', () => {
  it('a beforeSave stamps a field the client sees and the store keeps', async () => {
    const C = uniqueClass('Stamped');
    const created = await Parse.Hooks.createTrigger(C, 'beforeSave', url('/stamp'));
    assert.deepEqual(created, { className: C, triggerName: 'beforeSave', url: url('/stamp') });
    const obj = await new Parse.Object(C, { name: 'a' }).save();
    assert.equal(obj.get('stamped'), true, 'the response carries the changed field');
    const stored = await new Parse.Query(C).get(obj.id);
    assert.equal(stored.get('stamped'), true);
    assert.equal(stored.get('name'), 'a');

    const call = calls.findLast((c) => c.path === '/stamp');
    assert.equal(call.body.triggerName, 'beforeSave');
    assert.equal(call.body.object.className, C);
    assert.equal(call.body.object.name, 'a');

    obj.set('name', 'b');
    obj.unset('stamped');
    await obj.save();
    const update = calls.findLast((c) => c.path === '/stamp');
    assert.equal(update.body.original.name, 'a');
    assert.equal(update.body.object.name, 'b');
    assert.equal((await new Parse.Query(C).get(obj.id)).get('stamped'), true);

    const triggers = await Parse.Hooks.getTriggers();
    assert.ok(triggers.some((t) => t.className === C && t.triggerName === 'beforeSave'));
    assert.deepEqual(await Parse.Hooks.getTrigger(C, 'beforeSave'), created);
  });

  it('a beforeSave that rejects refuses the write with 142', async () => {
    const C = uniqueClass('Refused');
    await Parse.Hooks.createTrigger(C, 'beforeSave', url('/reject'));
    const err = await expectParseError(new Parse.Object(C, { a: 1 }).save(), Parse.Error.VALIDATION_ERROR);
    assert.equal(err.message, 'not allowed');
    await Parse.Hooks.removeTrigger(C, 'beforeSave');
    assert.equal(await new Parse.Query(C).count(), 0, 'nothing was stored');
    await new Parse.Object(C, { a: 2 }).save();
    assert.equal(await new Parse.Query(C).count(), 1, 'the removed hook no longer runs');
  });

  it('a beforeDelete that rejects keeps the object', async () => {
    const C = uniqueClass('Kept');
    const obj = await new Parse.Object(C, { a: 1 }).save();
    await Parse.Hooks.createTrigger(C, 'beforeDelete', url('/reject'));
    await expectParseError(obj.destroy(), Parse.Error.VALIDATION_ERROR);
    assert.equal(await new Parse.Query(C).count(), 1);
    await Parse.Hooks.updateTrigger(C, 'beforeDelete', url('/observe'));
    await obj.destroy();
    assert.equal(await new Parse.Query(C).count(), 0);
  });

  it('an afterSave is delivered with the event id as its idempotency key', async () => {
    const C = uniqueClass('Observed');
    await Parse.Hooks.createTrigger(C, 'afterSave', url('/observe'));
    const obj = await new Parse.Object(C, { n: 1 }).save();
    const call = await waitFor(
      () => calls.find((c) => c.path === '/observe' && c.body.object?.objectId === obj.id),
      'the afterSave delivery',
    );
    assert.equal(call.body.triggerName, 'afterSave');
    assert.equal(call.body.object.className, C);
    assert.equal(call.body.object.n, 1);
    assert.ok(call.body.eventId);
    assert.equal(call.headers['idempotency-key'], call.body.eventId);
    assert.equal(call.headers['x-parse-webhook-key'], WEBHOOK_KEY);
  });

  it('refuses duplicate triggers and unknown trigger names', async () => {
    const C = uniqueClass('Dup');
    await Parse.Hooks.createTrigger(C, 'afterDelete', url('/observe'));
    const err = await expectParseError(Parse.Hooks.createTrigger(C, 'afterDelete', url('/observe')), 143);
    assert.equal(err.message, `class ${C} already has trigger afterDelete`);
    await expectParseError(Parse.Hooks.createTrigger(C, 'beforeFnd', url('/observe')), 143);
    // Log-in triggers belong to _User only.
    await expectParseError(Parse.Hooks.createTrigger(C, 'beforeLogin', url('/observe')), 143);
    await expectParseError(Parse.Hooks.getTrigger(C, 'beforeSave'), 143);
  });

  it('hooks need the master key', async () => {
    const res = await fetch(`${server.serverURL}/hooks/functions`, {
      headers: { 'X-Parse-Application-Id': 'sdk-test-app' },
    });
    assert.equal(res.status, 403);
  });
});
