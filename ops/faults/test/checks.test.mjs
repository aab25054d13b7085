// The campaign's checks must see a loss when there is one: each is fed a
// record with one write, event or delivery missing, doubled or invented.
//   node --test ops/faults/test

import assert from 'node:assert/strict';
import test from 'node:test';
import { checkWrites } from '../lib/verify.mjs';
import { FakeFcm, LiveQuerySubscribers, WebhookCounter } from '../lib/sinks.mjs';

const writes = [
  { op: 'create', id: 'a', n: 1 },
  { op: 'update', id: 'a', n: 3 },
  { op: 'create', id: 'b', n: 2 },
];

function event(id, kind, objectId, n, seq) {
  return {
    seq,
    msgId: id,
    event: { id, type: `oxbase.object.${kind}`, subject: `C/${objectId}`, data: { object: { objectId, n } } },
  };
}

const events = [
  event('e1', 'created', 'a', 1, 1),
  event('e2', 'created', 'b', 2, 2),
  event('e3', 'updated', 'a', 3, 3),
];
const stored = new Map([
  ['a', { objectId: 'a', n: 3 }],
  ['b', { objectId: 'b', n: 2 }],
]);

test('a clean record has nothing lost', () => {
  const result = checkWrites(writes, stored, events);
  assert.deepEqual(
    [result.lost, result.eventsLost, result.duplicateEvents, result.phantomEvents, result.storedWithoutEvent],
    [0, 0, 0, 0, 0],
  );
});

test('a missing object and a stale update are lost writes', () => {
  const partial = new Map([['a', { objectId: 'a', n: 1 }]]);
  const result = checkWrites(writes, partial, events);
  assert.equal(result.lost, 2);
});

test('an acknowledged write without its event is an event lost', () => {
  const result = checkWrites(writes, stored, events.filter((e) => e.event.id !== 'e3'));
  assert.equal(result.eventsLost, 1);
  // a's last event now says n=1 while n=3 is stored.
  assert.equal(result.phantomEvents, 1);
});

test('an event id twice, or one write published twice, is a duplicate', () => {
  assert.equal(checkWrites(writes, stored, [...events, events[0]]).duplicateEvents, 2);
  const again = event('e4', 'updated', 'a', 3, 4);
  assert.equal(checkWrites(writes, stored, [...events, again]).duplicateEvents, 1);
});

test('an event of a write that never committed is a phantom', () => {
  const extra = event('e5', 'updated', 'b', 9, 5);
  assert.equal(checkWrites(writes, stored, [...events, extra]).phantomEvents, 1);
});

test('webhook deliveries: a missing one is lost, a second one a duplicate', () => {
  const webhook = new WebhookCounter();
  webhook.deliveries.push({ eventId: 'e1', at: 10 }, { eventId: 'e1', at: 11 }, { eventId: 'e2', at: 12 });
  const result = webhook.check(events, new Map());
  assert.equal(result.lost, 1);
  assert.equal(result.duplicates, 1);
  webhook.close();
});

test('LiveQuery: every subscriber must get every event once', () => {
  const subscribers = new LiveQuerySubscribers({ urls: [], className: 'C', count: 0 });
  subscribers.subscribers.push(
    { index: 0, events: [{ eventId: '1' }, { eventId: '2' }, { eventId: '3' }], reconnects: 0, errors: [] },
    { index: 1, events: [{ eventId: '1' }, { eventId: '1' }, { eventId: '3' }], reconnects: 1, errors: [] },
  );
  const result = subscribers.check(events);
  assert.equal(result.lost, 1);
  assert.equal(result.duplicates, 1);
});

test('push: each push must reach each device', () => {
  const fcm = new FakeFcm();
  fcm.notifications.set('p1 t1', 1);
  fcm.notifications.set('p1 t2', 2);
  const result = fcm.check(['p1'], ['t1', 't2', 't3']);
  assert.equal(result.lost, 1);
  assert.equal(result.duplicates, 1);
  fcm.close();
});
