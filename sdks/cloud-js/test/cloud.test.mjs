// Definition-time behaviour of Parse.Cloud's LiveQuery triggers: what each
// registers, and what Parse Server refuses when the cloud file loads.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const Parse = require('parse/node');
const { createRegistry, installCloud } = require('../src/cloud.js');

function cloud() {
  const registry = createRegistry();
  const warnings = [];
  installCloud(Parse, registry, { warn: (m) => warnings.push(m) });
  return { registry, warnings };
}

test('the LiveQuery triggers register under their wire names', () => {
  const { registry } = cloud();
  const handler = () => {};
  const validator = { requireUser: true };
  Parse.Cloud.beforeConnect(handler, validator);
  Parse.Cloud.beforeSubscribe(Parse.User, handler);
  Parse.Cloud.afterLiveQueryEvent('Thing', handler);
  assert.deepEqual([...registry.triggers.keys()].sort(), ['afterEvent.Thing', 'beforeConnect._Connect', 'beforeSubscribe._User']);
  assert.deepEqual(registry.triggers.get('beforeConnect._Connect'), {
    triggerName: 'beforeConnect',
    className: '_Connect',
    handler,
    validator,
  });
  assert.equal(registry.triggers.get('afterEvent.Thing').validator, null);
});

test('LiveQuery definitions are checked as Parse Server checks them', () => {
  cloud();
  const handler = () => {};
  assert.throws(() => Parse.Cloud.afterLiveQueryEvent('_Session', handler), (e) => e === 'Only the afterLogout trigger is allowed for the _Session class.');
  assert.throws(() => Parse.Cloud.beforeSubscribe('_Session', handler), (e) => e === 'Only the afterLogout trigger is allowed for the _Session class.');
  assert.throws(
    () => Parse.Cloud.beforeConnect(handler, { bogus: true }),
    (e) => e === 'bogus is not a supported parameter for Cloud Function validations.',
  );
  assert.throws(() => Parse.Cloud.beforeSubscribe('Thing', 'not a function'), /the handler must be a function/);
  assert.throws(() => Parse.Cloud.afterLiveQueryEvent(Parse.File, handler), /Parse.Cloud.afterLiveQueryEvent on Parse.File is not supported yet/);
  assert.throws(() => Parse.Cloud.onLiveQueryEvent(handler), /onLiveQueryEvent \(LiveQuery\) is not supported yet/);
});
