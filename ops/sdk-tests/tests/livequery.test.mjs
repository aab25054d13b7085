// LiveQuery end to end: the Parse JS SDK's `query.subscribe()` and
// `Parse.LiveQueryClient`, and raw WebSocket clients where the exact
// messages matter, against `oxbase all` (LiveQuery at the mount path) and
// `oxbase livequery` processes beside it. Covers Parse's event kinds, `keys`
// and `watch`, ACLs and roles per subscriber, class-level permissions,
// protectedFields and `_Session`, the LiveQuery triggers (as webhooks), bad
// messages, and oxbase's resume extension (`eventId` / `lastEventId`) across
// a process killed mid-stream.
//
// Absence is never asserted by waiting: a later object every subscriber may
// see is written after the ones it must not be sent, and once that one
// arrives nothing else may have come before it, as one subscription's events
// arrive in stream order.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import { startServer, uniqueClass, APP_ID, MASTER_KEY } from './server.mjs';

// LiveQuery reads the event stream, not the store, for what it sends; the
// store only answers sessions, roles and class permissions, which the other
// files test on both backends. Running this file once (on the embedded
// store) keeps the suite's time down.
const SKIP = process.env.OXBASE_TEST_BACKEND === 'postgres' ? 'LiveQuery does not depend on the backend' : false;

const TIMEOUT = 10_000;
const EVENT_OPS = ['create', 'enter', 'update', 'leave', 'delete'];

let server;
let Parse;
let webhook;
/** Every webhook call: { path, body }. */
const calls = [];
/** The webhook server answers each path with handlers[path](body). */
const handlers = {};
/** Raw sockets and SDK clients to close after the file. */
const sockets = new Set();
const sdkClients = new Set();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `predicate` until it returns something truthy. */
async function waitUntil(predicate, what, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const found = await predicate();
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A REST call to the API; throws on an error status. */
async function rest(method, path, body, { master = false, session } = {}) {
  const headers = { 'X-Parse-Application-Id': APP_ID, 'Content-Type': 'application/json' };
  if (master) headers['X-Parse-Master-Key'] = MASTER_KEY;
  if (session) headers['X-Parse-Session-Token'] = session;
  const res = await fetch(`${server.serverURL}/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

const create = (className, fields, options) => rest('POST', `classes/${className}`, fields, options);
const update = (className, id, fields, options) => rest('PUT', `classes/${className}/${id}`, fields, options);
const destroy = (className, id, options) => rest('DELETE', `classes/${className}/${id}`, undefined, options);

/** A raw LiveQuery WebSocket client that keeps every message it got. */
class LiveSocket {
  static async open(url) {
    const ws = new WebSocket(url);
    const socket = new LiveSocket(ws);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    return socket;
  }

  constructor(ws) {
    this.ws = ws;
    this.messages = [];
    this.closed = false;
    this.listeners = new Set();
    ws.on('message', (data) => {
      this.messages.push(JSON.parse(data.toString()));
      this.notify();
    });
    ws.on('close', () => {
      this.closed = true;
      this.notify();
    });
    ws.on('error', () => {});
    sockets.add(this);
  }

  notify() {
    for (const listener of [...this.listeners]) listener();
  }

  send(message) {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  /** The first message from index `from` on that `predicate` accepts. */
  waitFor(predicate, what, { from = 0, timeout = TIMEOUT } = {}) {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      const check = () => {
        for (let i = from; i < this.messages.length; i++) {
          if (predicate(this.messages[i])) {
            done();
            resolve(this.messages[i]);
            return;
          }
        }
        if (this.closed) {
          done();
          reject(new Error(`the connection closed while waiting for ${what}; got ${this.since(from)}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for ${what}; got ${this.since(from)}`));
      }, timeout);
      this.listeners.add(check);
      check();
    });
  }

  since(from) {
    return JSON.stringify(this.messages.slice(from));
  }

  /** Sends `message` and waits for the next message. */
  async ask(message, what) {
    const from = this.messages.length;
    this.send(message);
    return this.waitFor(() => true, what, { from });
  }

  /** Sends `connect` and returns the answer (`connected` or an error). */
  async connect(extra = {}) {
    const from = this.messages.length;
    this.send({ op: 'connect', applicationId: APP_ID, ...extra });
    return this.waitFor((m) => m.op === 'connected' || m.op === 'error', 'the answer to connect', { from });
  }

  /** Sends `subscribe` and returns the answer (`subscribed` or an error). */
  async subscribe(requestId, query, extra = {}) {
    const from = this.messages.length;
    this.send({ op: 'subscribe', requestId, query: { where: {}, ...query }, ...extra });
    return this.waitFor(
      (m) => (m.op === 'subscribed' || m.op === 'error') && m.requestId === requestId,
      `the answer to subscribe ${requestId}`,
      { from },
    );
  }

  /** The events of one subscription, in the order they arrived. */
  events(requestId) {
    return this.messages.filter((m) => EVENT_OPS.includes(m.op) && m.requestId === requestId);
  }

  /** Waits for the `op` event about `objectId` on subscription `requestId`. */
  event(requestId, op, objectId, timeout) {
    return this.waitFor(
      (m) => m.op === op && m.requestId === requestId && m.object?.objectId === objectId,
      `${op} of ${objectId} on subscription ${requestId}`,
      { timeout },
    );
  }

  waitClosed() {
    return new Promise((resolve) => {
      const check = () => {
        if (this.closed) {
          this.listeners.delete(check);
          resolve();
        }
      };
      this.listeners.add(check);
      check();
    });
  }

  close() {
    this.ws.close();
  }
}

const apiURL = () => `ws://127.0.0.1:${server.port}/parse`;

/** A raw client connected to `url` (the API's by default). */
async function connected(extra = {}, url = apiURL()) {
  const socket = await LiveSocket.open(url);
  const answer = await socket.connect(extra);
  assert.equal(answer.op, 'connected', `connect answered ${JSON.stringify(answer)}`);
  assert.equal(typeof answer.clientId, 'string');
  return socket;
}

async function subscribed(socket, requestId, query, extra = {}) {
  const answer = await socket.subscribe(requestId, query, extra);
  assert.equal(answer.op, 'subscribed', `subscribe ${requestId} answered ${JSON.stringify(answer)}`);
  return answer;
}

/** `op:tag` of each event, to compare whole sequences at once. */
const summary = (events) => events.map((m) => `${m.op}:${m.object.tag}`);

/** Records the events an SDK subscription emits. */
function record(subscription) {
  const got = [];
  for (const op of EVENT_OPS) {
    subscription.on(op, (object, original) => {
      got.push({ op, object, original: original instanceof Parse.Object ? original : undefined });
    });
  }
  return got;
}

let userCounter = 0;
async function signUp(prefix) {
  userCounter += 1;
  const username = `${prefix}${userCounter}_${Date.now()}`;
  const user = await Parse.User.signUp(username, `${username}-pw`);
  return { id: user.id, username, password: `${username}-pw`, token: user.getSessionToken() };
}

function liveQueryClient(options) {
  const client = new Parse.LiveQueryClient({ applicationId: APP_ID, ...options });
  sdkClients.add(client);
  client.open();
  return client;
}

function startWebhook() {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      let data = '';
      req.on('data', (chunk) => (data += chunk));
      req.on('end', () => {
        const body = JSON.parse(data);
        calls.push({ path: req.url, body });
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

const hookURL = (path) => `http://127.0.0.1:${webhook.address().port}${path}`;

describe('LiveQuery', { skip: SKIP }, () => {
  before(async () => {
    webhook = await startWebhook();
    server = await startServer({ nats: true });
    Parse = server.Parse;
    Parse.liveQueryServerURL = apiURL();
  });

  after(async () => {
    for (const client of sdkClients) await client.close();
    if (Parse) await Parse.LiveQuery.close();
    for (const socket of sockets) socket.close();
    if (server) await server.stop();
    if (webhook) webhook.close();
  });

  describe('the SDK', () => {
    it('query.subscribe() gets create, update, leave, enter and delete with their values', async () => {
      const C = uniqueClass('LiveScore');
      const subscription = await new Parse.Query(C).greaterThan('score', 10).subscribe();
      const got = record(subscription);

      await new Parse.Object(C, { score: 1, tag: 'low' }).save();
      const obj = await new Parse.Object(C, { score: 20, tag: 'a' }).save();
      obj.set('score', 30);
      await obj.save();
      obj.set('score', 5);
      await obj.save();
      obj.set('score', 15);
      obj.set('tag', 'b');
      await obj.save();
      await obj.destroy();
      await waitUntil(() => got.some((e) => e.op === 'delete'), 'the delete event');

      assert.deepEqual(
        got.map((e) => e.op),
        ['create', 'update', 'leave', 'enter', 'delete'],
        'the object scoring 1 never matched, so it is never sent',
      );
      const [created, updated, left, entered, deleted] = got;
      for (const e of got) {
        assert.equal(e.object.id, obj.id);
        assert.equal(e.object.className, C);
      }
      assert.equal(created.object.get('score'), 20);
      assert.equal(created.object.get('tag'), 'a');
      assert.ok(created.object.createdAt instanceof Date);
      assert.equal(created.original, undefined);
      assert.equal(updated.object.get('score'), 30);
      assert.equal(updated.original.get('score'), 20);
      // Left because the query stopped matching: the new state is sent.
      assert.equal(left.object.get('score'), 5);
      assert.equal(left.original.get('score'), 30);
      // Entered because the query started matching: the old state the
      // subscriber could read comes as original.
      assert.equal(entered.object.get('score'), 15);
      assert.equal(entered.object.get('tag'), 'b');
      assert.equal(entered.original.get('score'), 5);
      assert.equal(deleted.object.get('score'), 15);

      await subscription.unsubscribe();
    });

    it('Parse.LiveQueryClient with a session token sees the user’s private objects', async () => {
      const C = uniqueClass('LiveClient');
      const user = await signUp('lqclient');
      const client = liveQueryClient({ serverURL: apiURL() });
      const subscription = client.subscribe(new Parse.Query(C).equalTo('kind', 'note'), user.token);
      const got = record(subscription);
      await subscription.subscribePromise;

      const acl = { [user.id]: { read: true, write: true } };
      await create(C, { kind: 'other', tag: 'skip', ACL: acl }, { session: user.token });
      const note = await create(C, { kind: 'note', tag: 'mine', n: 7, ACL: acl }, { session: user.token });
      await waitUntil(() => got.length > 0, 'the create event');
      assert.equal(got[0].op, 'create');
      assert.equal(got[0].object.id, note.objectId);
      assert.equal(got[0].object.get('tag'), 'mine');
      assert.equal(got[0].object.get('n'), 7);
      assert.equal(got[0].object.getACL().getReadAccess(user.id), true);
      assert.equal(got[0].object.getACL().getPublicReadAccess(), false);

      await client.close();
    });
  });

  describe('keys, watch, update and unsubscribe', () => {
    it('query.select() sends only the selected fields', async () => {
      const C = uniqueClass('LiveKeys');
      const subscription = await new Parse.Query(C).select('name').subscribe();
      const got = record(subscription);
      const obj = await create(C, { name: 'n1', score: 3, secret: 's' });
      await update(C, obj.objectId, { name: 'n2', score: 4 });
      await waitUntil(() => got.length >= 2, 'create and update');
      assert.deepEqual(
        got.map((e) => e.op),
        ['create', 'update'],
      );
      assert.equal(got[0].object.get('name'), 'n1');
      assert.equal(got[0].object.get('score'), undefined);
      assert.equal(got[0].object.get('secret'), undefined);
      assert.equal(got[1].object.get('name'), 'n2');
      assert.equal(got[1].object.get('score'), undefined);
      await subscription.unsubscribe();
    });

    it('keys: the message carries the listed fields and the ones Parse always sends', async () => {
      const C = uniqueClass('LiveKeysRaw');
      const socket = await connected();
      await subscribed(socket, 1, { className: C, keys: ['name', 'missing'] });
      const obj = await create(C, { name: 'n1', score: 3, secret: 's' });
      await update(C, obj.objectId, { name: 'n2', score: 4 });
      const updated = await socket.event(1, 'update', obj.objectId);
      const [created] = socket.events(1);
      const fields = (o) => Object.keys(o).filter((k) => k !== 'ACL').sort();
      const expected = ['className', 'createdAt', 'name', 'objectId', 'updatedAt'];
      assert.deepEqual(fields(created.object), expected);
      assert.deepEqual(fields(updated.object), expected);
      assert.deepEqual(fields(updated.original), expected);
      assert.equal(created.object.className, C);
      assert.equal(updated.object.name, 'n2');
      assert.equal(updated.original.name, 'n1');
    });

    it('query.watch() sends creates and updates only when a watched field changed', async () => {
      const C = uniqueClass('LiveWatch');
      const subscription = await new Parse.Query(C).watch('score').subscribe();
      const got = record(subscription);
      const obj = await create(C, { tag: 'no score yet' });
      await update(C, obj.objectId, { tag: 'score 1', score: 1 });
      await update(C, obj.objectId, { tag: 'tag only' });
      await update(C, obj.objectId, { tag: 'score 2', score: 2 });
      await waitUntil(() => got.some((e) => e.object.get('score') === 2), 'the update setting score 2');
      assert.deepEqual(
        got.map((e) => `${e.op}:${e.object.get('tag')}`),
        ['update:score 1', 'update:score 2'],
        'the create had no score and one update changed only the tag',
      );
      assert.equal(got[1].original.get('score'), 1);
      await destroy(C, obj.objectId);
      await waitUntil(() => got.some((e) => e.op === 'delete'), 'the delete, which watch does not hold back');
      await subscription.unsubscribe();
    });

    it('update replaces a subscription; unsubscribe ends one', async () => {
      const C = uniqueClass('LiveUpdate');
      const socket = await connected();
      await subscribed(socket, 1, { className: C, where: { score: { $gt: 10 } } });
      await subscribed(socket, 2, { className: C });

      const from = socket.messages.length;
      socket.send({ op: 'update', requestId: 1, query: { className: C, where: { score: { $lt: 0 } } } });
      await socket.waitFor((m) => m.op === 'subscribed' && m.requestId === 1, 'subscribed after update', { from });
      await create(C, { score: 20, tag: 'old query' });
      const negative = await create(C, { score: -5, tag: 'new query' });
      await socket.event(1, 'create', negative.objectId);
      assert.deepEqual(summary(socket.events(1)), ['create:new query']);

      const answer = await socket.ask({ op: 'unsubscribe', requestId: 1 }, 'the answer to unsubscribe');
      assert.equal(answer.op, 'unsubscribed');
      assert.equal(answer.requestId, 1);
      await create(C, { score: -7, tag: 'after unsubscribe' });
      const marker = await create(C, { score: 0, tag: 'marker' });
      await socket.event(2, 'create', marker.objectId);
      assert.deepEqual(summary(socket.events(1)), ['create:new query'], 'nothing after unsubscribed');
      assert.deepEqual(summary(socket.events(2)), ['create:old query', 'create:new query', 'create:after unsubscribe', 'create:marker']);
    });
  });

  describe('what events carry', () => {
    it('the whole object after the write, as GET returns it, with Parse’s encodings', async () => {
      const C = uniqueClass('LiveShape');
      const user = await signUp('shape');
      const socket = await connected();
      await subscribed(socket, 1, { className: C });
      const fields = {
        tag: 't',
        score: 20,
        list: [1, 2],
        when: { __type: 'Date', iso: '2024-05-06T07:08:09.123Z' },
        loc: { __type: 'GeoPoint', latitude: 10, longitude: 20 },
        owner: { __type: 'Pointer', className: '_User', objectId: user.id },
        nested: { a: { b: 1 } },
      };
      const obj = await create(C, fields);
      await update(C, obj.objectId, {
        score: { __op: 'Increment', amount: 5 },
        list: { __op: 'AddUnique', objects: [2, 3] },
        tag: { __op: 'Delete' },
      });
      const updated = await socket.event(1, 'update', obj.objectId);
      const [created] = socket.events(1);
      const stored = await rest('GET', `classes/${C}/${obj.objectId}`, undefined, { master: true });

      const withoutClass = ({ className, ...rest }) => {
        assert.equal(className, C);
        return rest;
      };
      assert.deepEqual(withoutClass(updated.object), stored, 'the update carries the stored object');
      assert.equal(updated.object.score, 25);
      assert.deepEqual(updated.object.list, [1, 2, 3]);
      assert.ok(!('tag' in updated.object));
      assert.deepEqual(withoutClass(updated.original), withoutClass(created.object));
      assert.equal(created.object.tag, 't');
      assert.equal(created.object.createdAt, obj.createdAt);
      for (const key of ['when', 'loc', 'owner', 'nested', 'list']) {
        assert.deepEqual(created.object[key], fields[key], key);
      }
    });

    it('query operators: $in, $regex, $inQuery, $or, $within and $exists', async () => {
      const C = uniqueClass('LiveOps');
      const Team = uniqueClass('LiveTeam');
      const active = await create(Team, { active: true });
      const inactive = await create(Team, { active: false });
      const team = (t) => ({ __type: 'Pointer', className: Team, objectId: t.objectId });
      const point = (latitude, longitude) => ({ __type: 'GeoPoint', latitude, longitude });
      const socket = await connected();
      const queries = {
        1: { score: { $in: [1, 3] } },
        2: { name: { $regex: '^ab', $options: 'i' } },
        3: { team: { $inQuery: { className: Team, where: { active: true } } } },
        4: { $or: [{ score: 3 }, { name: 'zzz' }] },
        5: { loc: { $within: { $box: [point(0, 0), point(10, 10)] } } },
        6: { extra: { $exists: true } },
      };
      for (const [requestId, where] of Object.entries(queries)) {
        await subscribed(socket, Number(requestId), { className: C, where });
      }
      await create(C, { tag: 'o1', score: 1, name: 'Abc', team: team(active), loc: point(5, 5) });
      await create(C, { tag: 'o2', score: 2, name: 'xyz', team: team(inactive), loc: point(20, 20) });
      await create(C, { tag: 'o3', score: 3, name: 'abd', loc: point(50, 50), extra: 'x' });
      await create(C, { tag: 'o4', score: 4, name: 'zzz', team: team(inactive) });
      const marker = await create(C, { tag: 'marker', score: 3, name: 'ABmarker', team: team(active), loc: point(1, 1), extra: 'm' });
      for (const requestId of Object.keys(queries)) await socket.event(Number(requestId), 'create', marker.objectId);
      const tags = (requestId) => socket.events(requestId).map((m) => m.object.tag);
      assert.deepEqual(tags(1), ['o1', 'o3', 'marker'], '$in');
      assert.deepEqual(tags(2), ['o1', 'o3', 'marker'], '$regex');
      assert.deepEqual(tags(3), ['o1', 'marker'], '$inQuery');
      assert.deepEqual(tags(4), ['o3', 'o4', 'marker'], '$or');
      assert.deepEqual(tags(5), ['o1', 'marker'], '$within');
      assert.deepEqual(tags(6), ['o3', 'marker'], '$exists');
    });

    it('$relatedTo and a Relation field are answered from the store', async () => {
      const Club = uniqueClass('LiveClub');
      const Owner = uniqueClass('LiveOwner');
      const c1 = await create(Club, { tag: 'c1' });
      const c2 = await create(Club, { tag: 'c2' });
      const club = (c) => ({ __type: 'Pointer', className: Club, objectId: c.objectId });
      const owner = await create(Owner, { tag: 'o1', teams: { __op: 'AddRelation', objects: [club(c1)] } });
      const other = await create(Owner, { tag: 'o2', teams: { __op: 'AddRelation', objects: [club(c2)] } });
      const socket = await connected();
      await subscribed(socket, 1, {
        className: Club,
        where: { $relatedTo: { object: { __type: 'Pointer', className: Owner, objectId: owner.objectId }, key: 'teams' } },
      });
      await subscribed(socket, 2, { className: Owner, where: { teams: club(c1) } });
      await update(Club, c2.objectId, { touched: 1 });
      await update(Club, c1.objectId, { touched: 1 });
      await update(Owner, other.objectId, { touched: 1 });
      await update(Owner, owner.objectId, { touched: 1 });
      await socket.event(1, 'update', c1.objectId);
      await socket.event(2, 'update', owner.objectId);
      // Updates only: the hub may still be reading the creates above when
      // the subscriptions start, and then sends them too, as Parse does.
      const ids = (requestId) =>
        socket.events(requestId).filter((m) => m.op === 'update').map((m) => m.object.tag);
      assert.deepEqual(ids(1), ['c1'], '$relatedTo');
      assert.deepEqual(ids(2), ['o1'], 'equality on a Relation field');
      const ownerUpdate = socket.events(2).find((m) => m.op === 'update');
      assert.deepEqual(ownerUpdate.object.teams, { __type: 'Relation', className: Club });
    });

    it('replies carry the clientId and the installationId given to connect', async () => {
      const C = uniqueClass('LiveInstall');
      const socket = await LiveSocket.open(apiURL());
      const hello = await socket.connect({ installationId: 'install-1' });
      assert.equal(hello.op, 'connected');
      assert.equal(hello.installationId, 'install-1');
      const sub = await subscribed(socket, 1, { className: C });
      assert.equal(sub.clientId, hello.clientId);
      assert.equal(sub.installationId, 'install-1');
      const obj = await create(C, { tag: 'x' });
      const event = await socket.event(1, 'create', obj.objectId);
      assert.equal(event.clientId, hello.clientId);
      assert.equal(event.installationId, 'install-1');
    });
  });

  describe('ACLs and roles per subscriber', () => {
    it('a subquery reads only what the subscriber may', async () => {
      const C = uniqueClass('LiveSub');
      const Team = uniqueClass('LiveSubTeam');
      const a = await signUp('subq');
      const open = await create(Team, { name: 'open' });
      const hidden = await create(Team, { name: 'hidden', ACL: { [a.id]: { read: true } } }, { master: true });
      const team = (t) => ({ __type: 'Pointer', className: Team, objectId: t.objectId });
      const socket = await connected();
      await subscribed(socket, 1, { className: C, where: { team: { $inQuery: { className: Team, where: {} } } } });
      await create(C, { tag: 'hidden team', team: team(hidden) });
      const marker = await create(C, { tag: 'open team', team: team(open) });
      await socket.event(1, 'create', marker.objectId);
      assert.deepEqual(socket.events(1).map((m) => m.object.tag), ['open team']);
    });

    it('a role granted after subscribing opens, and a log-out closes, what the subscriber reads', async () => {
      const C = uniqueClass('LiveRenew');
      const a = await signUp('renew');
      const publicRead = new Parse.ACL();
      publicRead.setPublicReadAccess(true);
      const role = new Parse.Role(`Renew${userCounter}`, publicRead);
      await role.save(null, { useMasterKey: true });
      const socket = await connected({ sessionToken: a.token });
      await subscribed(socket, 1, { className: C });
      const forRole = { [`role:${role.getName()}`]: { read: true } };
      await create(C, { tag: 'before the role', ACL: forRole }, { master: true });
      role.getUsers().add(Parse.User.createWithoutData(a.id));
      await role.save(null, { useMasterKey: true });
      await create(C, { tag: 'with the role', ACL: forRole }, { master: true });
      await rest('POST', 'logout', {}, { session: a.token });
      await create(C, { tag: 'after log-out', ACL: forRole }, { master: true });
      await create(C, { tag: 'own, after log-out', ACL: { [a.id]: { read: true } } }, { master: true });
      const marker = await create(C, { tag: 'marker' });
      await socket.event(1, 'create', marker.objectId);
      assert.deepEqual(socket.events(1).map((m) => m.object.tag), ['with the role', 'marker']);
    });

    it('an object a subscriber cannot read is never sent; losing access is a leave, gaining it an enter', async () => {
      const C = uniqueClass('LiveAcl');
      const a = await signUp('alice');
      const b = await signUp('bob');
      const publicRole = new Parse.ACL();
      publicRole.setPublicReadAccess(true);
      const onlyA = new Parse.Role(`OnlyA${userCounter}`, publicRole);
      onlyA.getUsers().add(Parse.User.createWithoutData(a.id));
      await onlyA.save(null, { useMasterKey: true });
      const withB = new Parse.Role(`WithB${userCounter}`, publicRole);
      withB.getUsers().add(Parse.User.createWithoutData(b.id));
      await withB.save(null, { useMasterKey: true });

      // A gives its token with the subscription, B with the connection;
      // Parse honours both.
      const sa = await connected();
      await subscribed(sa, 1, { className: C }, { sessionToken: a.token });
      const sb = await connected({ sessionToken: b.token });
      await subscribed(sb, 1, { className: C });
      const sm = await connected({ masterKey: MASTER_KEY });
      await subscribed(sm, 1, { className: C });

      const asA = { session: a.token };
      const aOnly = { [a.id]: { read: true, write: true } };
      const p = await create(C, { tag: 'p1', ACL: aOnly }, asA);
      await update(C, p.objectId, { tag: 'p2' }, asA);
      await create(C, { tag: 'roleA', ACL: { [`role:${onlyA.getName()}`]: { read: true } } }, { master: true });
      await create(C, { tag: 'roleB', ACL: { [`role:${withB.getName()}`]: { read: true } } }, { master: true });
      await destroy(C, p.objectId, asA);
      const m1 = await create(C, { tag: 'm1' });
      await sa.event(1, 'create', m1.objectId);
      await sb.event(1, 'create', m1.objectId);
      assert.deepEqual(summary(sa.events(1)), ['create:p1', 'update:p2', 'create:roleA', 'delete:p2', 'create:m1']);
      assert.deepEqual(summary(sb.events(1)), ['create:roleB', 'create:m1']);
      await sm.event(1, 'create', m1.objectId);
      assert.deepEqual(
        summary(sm.events(1)),
        ['create:p1', 'update:p2', 'create:roleA', 'create:roleB', 'delete:p2', 'create:m1'],
        'the master key reads every object',
      );

      const shared = { '*': { read: true }, [a.id]: { read: true, write: true } };
      const s = await create(C, { tag: 's1', ACL: shared }, asA);
      await update(C, s.objectId, { tag: 's2', ACL: aOnly }, asA);
      await update(C, s.objectId, { tag: 's3', ACL: shared }, asA);
      const m2 = await create(C, { tag: 'm2' });
      await sa.event(1, 'create', m2.objectId);
      await sb.event(1, 'create', m2.objectId);
      assert.deepEqual(summary(sa.events(1)).slice(5), ['create:s1', 'update:s2', 'update:s3', 'create:m2']);
      assert.deepEqual(summary(sb.events(1)).slice(2), ['create:s1', 'leave:s1', 'enter:s3', 'create:m2']);

      const [, leave, enter] = sb.events(1).slice(2);
      assert.equal(leave.object.objectId, s.objectId);
      assert.deepEqual(leave.object.ACL, shared, 'the leave shows the last state B could read');
      assert.ok(!JSON.stringify(leave).includes('s2'), `B may not see the state that shut it out: ${JSON.stringify(leave)}`);
      assert.equal(enter.object.objectId, s.objectId);
      assert.ok(!('original' in enter), `an enter by an ACL grant has no original: ${JSON.stringify(enter)}`);
    });
  });

  describe('class-level permissions, protectedFields and _Session', () => {
    it('a role inherited through a parent role grants read access', async () => {
      const C = uniqueClass('LiveRoleTree');
      const a = await signUp('child');
      const b = await signUp('outsider');
      const readable = new Parse.ACL();
      readable.setPublicReadAccess(true);
      const child = new Parse.Role(`Child${userCounter}`, readable);
      child.getUsers().add(Parse.User.createWithoutData(a.id));
      await child.save(null, { useMasterKey: true });
      const parent = new Parse.Role(`Parent${userCounter}`, readable);
      parent.getRoles().add(child);
      await parent.save(null, { useMasterKey: true });

      const sa = await connected({ sessionToken: a.token });
      await subscribed(sa, 1, { className: C });
      const sb = await connected({ sessionToken: b.token });
      await subscribed(sb, 1, { className: C });
      await create(C, { tag: 'parent', ACL: { [`role:${parent.getName()}`]: { read: true } } }, { master: true });
      const marker = await create(C, { tag: 'marker' });
      await sa.event(1, 'create', marker.objectId);
      await sb.event(1, 'create', marker.objectId);
      assert.deepEqual(summary(sa.events(1)), ['create:parent', 'create:marker']);
      assert.deepEqual(summary(sb.events(1)), ['create:marker']);
    });

    it('readUserFields: a subscriber gets only the objects whose pointer names it', async () => {
      const C = uniqueClass('LivePointerPerm');
      const a = await signUp('owner');
      const b = await signUp('other');
      const everyone = { '*': true };
      await rest(
        'POST',
        `schemas/${C}`,
        {
          className: C,
          fields: { tag: { type: 'String' }, owner: { type: 'Pointer', targetClass: '_User' } },
          classLevelPermissions: {
            find: {},
            get: {},
            count: {},
            create: everyone,
            update: everyone,
            delete: everyone,
            addField: everyone,
            readUserFields: ['owner'],
            protectedFields: {},
          },
        },
        { master: true },
      );
      const pointer = (id) => ({ __type: 'Pointer', className: '_User', objectId: id });
      const sa = await connected();
      await subscribed(sa, 1, { className: C }, { sessionToken: a.token });
      await create(C, { tag: 'of b', owner: pointer(b.id) });
      const mine = await create(C, { tag: 'of a', owner: pointer(a.id) });
      await sa.event(1, 'create', mine.objectId);
      assert.deepEqual(summary(sa.events(1)), ['create:of a']);
    });

    it('a subscriber without find permission is refused with 119', async () => {
      const C = uniqueClass('LiveClp');
      const a = await signUp('clpa');
      const b = await signUp('clpb');
      const everyone = { '*': true };
      await rest(
        'POST',
        `schemas/${C}`,
        {
          className: C,
          fields: { tag: { type: 'String' } },
          classLevelPermissions: {
            find: { [a.id]: true },
            get: everyone,
            count: everyone,
            create: everyone,
            update: everyone,
            delete: everyone,
            addField: everyone,
            protectedFields: {},
          },
        },
        { master: true },
      );

      const anonymous = await connected();
      const refused = await anonymous.subscribe(1, { className: C });
      assert.equal(refused.op, 'error');
      assert.equal(refused.code, 119);
      assert.equal(refused.requestId, 1);
      const sb = await connected();
      const refusedB = await sb.subscribe(1, { className: C }, { sessionToken: b.token });
      assert.equal(refusedB.op, 'error');
      assert.equal(refusedB.code, 119);

      const sa = await connected();
      await subscribed(sa, 1, { className: C }, { sessionToken: a.token });
      const obj = await create(C, { tag: 'seen' });
      await sa.event(1, 'create', obj.objectId);

      // A query on one objectId needs `get`, which everyone has.
      await subscribed(anonymous, 2, { className: C, where: { objectId: obj.objectId } });
      await update(C, obj.objectId, { tag: 'got' });
      const got = await anonymous.event(2, 'update', obj.objectId);
      assert.equal(got.object.tag, 'got');
    });

    it('protectedFields are removed from events, and a where or watch on them is refused', async () => {
      const C = uniqueClass('LiveProtected');
      const everyone = { '*': true };
      await rest(
        'POST',
        `schemas/${C}`,
        {
          className: C,
          fields: { tag: { type: 'String' }, secret: { type: 'String' } },
          classLevelPermissions: {
            find: everyone,
            get: everyone,
            count: everyone,
            create: everyone,
            update: everyone,
            delete: everyone,
            addField: everyone,
            protectedFields: { '*': ['secret'] },
          },
        },
        { master: true },
      );

      const socket = await connected();
      await subscribed(socket, 1, { className: C });
      const master = await connected({ masterKey: MASTER_KEY });
      await subscribed(master, 1, { className: C });
      const obj = await create(C, { tag: 't1', secret: 'hidden' });
      await update(C, obj.objectId, { tag: 't2', secret: 'hidden2' });
      const updated = await socket.event(1, 'update', obj.objectId);
      const [created] = socket.events(1);
      assert.equal(created.object.tag, 't1');
      assert.ok(!('secret' in created.object), JSON.stringify(created));
      assert.equal(updated.object.tag, 't2');
      assert.ok(!('secret' in updated.object), JSON.stringify(updated));
      assert.ok(!('secret' in updated.original), JSON.stringify(updated));
      const masterUpdate = await master.event(1, 'update', obj.objectId);
      assert.equal(masterUpdate.object.secret, 'hidden2', 'the master key sees protected fields');
      assert.equal(masterUpdate.original.secret, 'hidden');

      for (const [requestId, query] of [
        [2, { className: C, where: { secret: 'hidden' } }],
        [3, { className: C, where: { $or: [{ tag: 't1' }, { secret: 'hidden' }] } }],
        [4, { className: C, where: {}, watch: ['secret'] }],
      ]) {
        const refused = await socket.subscribe(requestId, query);
        assert.equal(refused.op, 'error', `${JSON.stringify(query)} answered ${JSON.stringify(refused)}`);
        assert.equal(refused.code, 119);
      }
    });

    it('class-level permissions changed after subscribing apply to the events that follow', async () => {
      const P = uniqueClass('LiveClpChange');
      const Q = uniqueClass('LiveClpLater');
      const everyone = { '*': true };
      const clp = (changes) => ({
        find: everyone,
        get: everyone,
        count: everyone,
        create: everyone,
        update: everyone,
        delete: everyone,
        addField: everyone,
        protectedFields: {},
        ...changes,
      });
      const fields = { tag: { type: 'String' }, secret: { type: 'String' } };
      await rest('POST', `schemas/${P}`, { className: P, fields, classLevelPermissions: clp() }, { master: true });
      const socket = await connected();
      await subscribed(socket, 1, { className: P });
      // Q does not exist yet: its permissions come with it.
      await subscribed(socket, 2, { className: Q });

      const hidden = { protectedFields: { '*': ['secret'] } };
      await rest('PUT', `schemas/${P}`, { className: P, classLevelPermissions: clp(hidden) }, { master: true });
      await rest('POST', `schemas/${Q}`, { className: Q, fields, classLevelPermissions: clp(hidden) }, { master: true });
      const p1 = await create(P, { tag: 'p1', secret: 's' });
      const q1 = await create(Q, { tag: 'q1', secret: 's' });
      const fromP = await socket.event(1, 'create', p1.objectId);
      const fromQ = await socket.event(2, 'create', q1.objectId);
      assert.ok(!('secret' in fromP.object), `protectedFields added after subscribing: ${JSON.stringify(fromP)}`);
      assert.ok(!('secret' in fromQ.object), `protectedFields of a class made after subscribing: ${JSON.stringify(fromQ)}`);

      // Events are matched when the LiveQuery process reads them, against
      // the permissions it knows then: a master-key subscriber on the same
      // process shows when the event made while find was denied has been
      // dispatched, before find is granted again.
      const watcher = await connected({ masterKey: MASTER_KEY });
      await subscribed(watcher, 1, { className: P });
      await rest('PUT', `schemas/${P}`, { className: P, classLevelPermissions: clp({ ...hidden, find: {} }) }, { master: true });
      const denied = await create(P, { tag: 'while find is denied' });
      await watcher.event(1, 'create', denied.objectId);
      await rest('PUT', `schemas/${P}`, { className: P, classLevelPermissions: clp(hidden) }, { master: true });
      const marker = await create(P, { tag: 'marker' });
      await socket.event(1, 'create', marker.objectId);
      assert.deepEqual(summary(socket.events(1)), ['create:p1', 'create:marker'], 'no event while find was denied');
    });

    it('_Session needs a session token (209) and shows only the subscriber’s sessions', async () => {
      const a = await signUp('sessa');
      const b = await signUp('sessb');
      const anonymous = await connected();
      const refused = await anonymous.subscribe(1, { className: '_Session' });
      assert.equal(refused.op, 'error');
      assert.equal(refused.code, 209);
      assert.equal(refused.requestId, 1);

      const socket = await connected();
      await subscribed(socket, 1, { className: '_Session' }, { sessionToken: a.token });
      await Parse.User.logIn(b.username, b.password);
      const again = await Parse.User.logIn(a.username, a.password);
      const created = await socket.waitFor((m) => m.op === 'create' && m.requestId === 1, "A's new session");
      assert.equal(created.object.user?.objectId, a.id, `the first session sent is A's: ${JSON.stringify(created)}`);
      assert.equal(created.object.className, '_Session');
      assert.notEqual(again.getSessionToken(), a.token);
    });
  });

  describe('_User', () => {
    /** Checks that no object of `message` carries `hidden` or an internal field. */
    const assertHidden = (message, hidden) => {
      for (const object of [message.object, message.original].filter(Boolean)) {
        for (const field of hidden) {
          assert.ok(!(field in object), `${field} is not sent to another user: ${JSON.stringify(message)}`);
        }
        for (const key of Object.keys(object)) assert.ok(!key.startsWith('_'), `internal field ${key}: ${JSON.stringify(message)}`);
      }
    };
    // Parse 9 makes users private (enforcePrivateUsers); these open
    // themselves to everyone, so only the field rules hide anything.
    const openTo = (id) => ({ '*': { read: true }, [id]: { read: true, write: true } });

    it('another user’s email is never sent (Parse’s default protectedFields), the owner’s is', async () => {
      const C = '_User';
      const user = await signUp('nick');
      const anonymous = await connected();
      await subscribed(anonymous, 1, { className: C, where: { nick: { $exists: true } } });
      const self = await connected();
      await subscribed(self, 1, { className: C, where: { objectId: user.id } }, { sessionToken: user.token });
      const email = `${user.username}@example.com`;
      await rest('PUT', `users/${user.id}`, { nick: 'n1', email, ACL: openTo(user.id) }, { session: user.token });
      await rest('PUT', `users/${user.id}`, { nick: 'n2' }, { session: user.token });

      const seenByOthers = await anonymous.waitFor((m) => m.requestId === 1 && m.object?.nick === 'n2', 'the second update');
      const [entered] = anonymous.events(1);
      assert.equal(entered.op, 'enter');
      assert.equal(entered.object.username, user.username);
      assert.equal(seenByOthers.op, 'update');
      assertHidden(entered, ['password', 'sessionToken', 'email']);
      assertHidden(seenByOthers, ['password', 'sessionToken', 'email']);

      const seenBySelf = await self.waitFor((m) => m.requestId === 1 && m.object?.nick === 'n2', 'the update of oneself');
      assert.equal(seenBySelf.object.email, email, 'the owner sees its own email');
      assertHidden(seenBySelf, ['password', 'sessionToken']);
    });

    it('another user’s authData is never sent', async () => {
      const anonymous = await connected();
      await subscribed(anonymous, 1, { className: '_User', where: { nick: { $exists: true } } });
      const signedUp = await rest('POST', 'users', { authData: { anonymous: { id: `anon-${Date.now()}` } } });
      await rest('PUT', `users/${signedUp.objectId}`, { nick: 'a1', ACL: openTo(signedUp.objectId) }, { session: signedUp.sessionToken });
      const entered = await anonymous.event(1, 'enter', signedUp.objectId);
      assert.equal(entered.object.nick, 'a1');
      assertHidden(entered, ['password', 'sessionToken', 'authData', 'email']);
    });
  });

  describe('LiveQuery triggers', () => {
    it('beforeConnect refuses a client with the hook’s error', async () => {
      const user = await signUp('connect');
      handlers['/connect'] = (body) =>
        body.installationId === 'refused-install' ? { error: { code: 142, message: 'connect refused' } } : { success: true };
      await Parse.Hooks.createTrigger('@Connect', 'beforeConnect', hookURL('/connect'));
      try {
        // The hook reaches the process's registry shortly after it is saved.
        const refused = await waitUntil(async () => {
          const socket = await LiveSocket.open(apiURL());
          const answer = await socket.connect({ installationId: 'refused-install' });
          if (answer.op === 'error') return { socket, answer };
          socket.close();
          return null;
        }, 'beforeConnect to refuse a client');
        assert.equal(refused.answer.code, 142);
        assert.equal(refused.answer.error, 'connect refused');
        assert.equal(refused.answer.reconnect, false);
        const notConnected = await refused.socket.ask(
          { op: 'subscribe', requestId: 1, query: { className: 'Anything', where: {} } },
          'the answer to subscribe',
        );
        assert.equal(notConnected.op, 'error');
        assert.equal(notConnected.code, 2, 'a refused client is not connected');

        await connected({ installationId: 'ok-install', sessionToken: user.token });
        const call = calls.findLast((c) => c.path === '/connect' && c.body.installationId === 'ok-install');
        assert.ok(call, 'the hook saw the accepted connect');
        assert.equal(call.body.triggerName, 'beforeConnect');
        assert.equal(call.body.event, 'connect');
        assert.equal(call.body.sessionToken, user.token);
        assert.equal(call.body.user?.objectId, user.id);
      } finally {
        await Parse.Hooks.removeTrigger('@Connect', 'beforeConnect');
      }
      await waitUntil(async () => {
        const socket = await LiveSocket.open(apiURL());
        const answer = await socket.connect({ installationId: 'refused-install' });
        socket.close();
        return answer.op === 'connected';
      }, 'the removed beforeConnect to stop refusing');
    });

    it('beforeSubscribe refuses a subscription or rewrites its where', async () => {
      const C = uniqueClass('LiveBeforeSub');
      handlers['/subscribe'] = (body) => {
        const where = body.query?.where ?? {};
        if (where.refuse) return { error: { code: 142, message: 'subscribe refused' } };
        if (where.rewrite) return { success: { query: { where: { score: { $gt: 100 } } } } };
        return { success: true };
      };
      await Parse.Hooks.createTrigger(C, 'beforeSubscribe', hookURL('/subscribe'));
      const socket = await connected();
      let requestId = 0;
      const refused = await waitUntil(async () => {
        requestId += 1;
        const answer = await socket.subscribe(requestId, { className: C, where: { refuse: true } });
        if (answer.op === 'error') return answer;
        await socket.ask({ op: 'unsubscribe', requestId }, 'unsubscribed');
        return null;
      }, 'beforeSubscribe to refuse a subscription');
      assert.equal(refused.code, 142);
      assert.equal(refused.error, 'subscribe refused');
      assert.equal(refused.requestId, requestId);

      await subscribed(socket, 100, { className: C, where: { rewrite: true } });
      await subscribed(socket, 101, { className: C });
      const call = calls.findLast((c) => c.path === '/subscribe' && c.body.query?.where?.rewrite);
      assert.equal(call.body.triggerName, 'beforeSubscribe');
      assert.equal(call.body.className, C);
      assert.deepEqual(call.body.query.where, { rewrite: true });

      await create(C, { score: 5, tag: 'low' });
      const high = await create(C, { score: 500, tag: 'high' });
      await socket.event(100, 'create', high.objectId);
      await socket.event(101, 'create', high.objectId);
      assert.deepEqual(summary(socket.events(100)), ['create:high'], 'the rewritten where wants score > 100');
      assert.deepEqual(summary(socket.events(101)), ['create:low', 'create:high'], 'a plain success keeps the query');
    });

    it('afterEvent drops an event for one subscriber and changes the object sent', async () => {
      const C = uniqueClass('LiveAfterEvent');
      const a = await signUp('after');
      handlers['/event'] = (body) => {
        if (body.object?.drop && body.sessionToken === a.token) return { success: { sendEvent: false } };
        if (body.object?.change) return { success: { object: { ...body.object, change: 'changed' } } };
        if (body.object?.fail) return { error: { code: 142, message: 'event refused' } };
        return { success: true };
      };
      await Parse.Hooks.createTrigger(C, 'afterEvent', hookURL('/event'));
      const withToken = await connected();
      await subscribed(withToken, 1, { className: C }, { sessionToken: a.token });
      const anonymous = await connected();
      await subscribed(anonymous, 1, { className: C });

      // Probes until the hook is called, so it is in the registry.
      await waitUntil(async () => {
        const probe = await create(C, { tag: 'probe' });
        await anonymous.event(1, 'create', probe.objectId);
        return calls.some((c) => c.path === '/event' && c.body.object?.objectId === probe.objectId);
      }, 'afterEvent to be called');

      await create(C, { tag: 'dropped', drop: true });
      await create(C, { tag: 'changed', change: true });
      const failed = await create(C, { tag: 'failed', fail: true });
      const last = await create(C, { tag: 'plain' });
      await withToken.event(1, 'create', last.objectId);
      await anonymous.event(1, 'create', last.objectId);
      const notProbe = (m) => m.object.tag !== 'probe';
      const fromA = withToken.events(1).filter(notProbe);
      const fromAnonymous = anonymous.events(1).filter(notProbe);
      assert.deepEqual(summary(fromA), ['create:changed', 'create:plain']);
      assert.deepEqual(summary(fromAnonymous), ['create:dropped', 'create:changed', 'create:plain']);
      assert.equal(fromA[0].object.change, 'changed');
      assert.equal(fromAnonymous[1].object.change, 'changed');
      assert.equal(fromAnonymous[0].object.drop, true);
      // A hook's error goes to the subscriber instead of the event, before
      // the later events.
      for (const socket of [withToken, anonymous]) {
        const error = socket.messages.find((m) => m.op === 'error' && m.requestId === 1);
        assert.ok(error, `the hook's error reaches the subscriber: ${socket.since(0)}`);
        assert.equal(error.code, 142);
        assert.equal(error.error, 'event refused');
        const plain = socket.events(1).at(-1);
        assert.ok(socket.messages.indexOf(error) < socket.messages.indexOf(plain));
        assert.ok(!socket.events(1).some((m) => m.object.objectId === failed.objectId));
      }

      const call = calls.findLast((c) => c.path === '/event' && c.body.sessionToken === a.token && c.body.object?.tag === 'plain');
      assert.ok(call, 'the hook was called for the subscriber with a token');
      assert.equal(call.body.triggerName, 'afterEvent');
      assert.equal(call.body.event, 'create');
      assert.equal(call.body.object.className, C);
      assert.equal(call.body.object.objectId, last.objectId);
    });
  });

  describe('resuming and several processes', () => {
    it('a client resumes with lastEventId across a LiveQuery process killed mid-stream', async () => {
      const C = uniqueClass('LiveStream');
      const N = 60;
      const HOLD_AT = 40;
      const live = await server.startLiveQuery();
      const socket = await connected({}, live.url);
      await subscribed(socket, 1, { className: C });

      const client = liveQueryClient({ serverURL: live.url });
      const sdkSubscription = client.subscribe(new Parse.Query(C));
      let opens = 0;
      sdkSubscription.on('open', () => {
        opens += 1;
      });
      const sdkGot = record(sdkSubscription);
      await sdkSubscription.subscribePromise;

      // The writer keeps a steady pace through the kill and the restart,
      // and holds its last third until the client has resubscribed, so
      // events also flow live after the replay.
      const created = [];
      let openGate;
      const resubscribed = new Promise((resolve) => (openGate = resolve));
      const writer = (async () => {
        for (let n = 0; n < N; n++) {
          if (n === HOLD_AT) await resubscribed;
          const obj = await create(C, { n });
          created.push(obj.objectId);
          await sleep(20);
        }
      })();
      writer.catch(() => {});

      let before;
      let resumedSocket;
      let writtenWhileAway;
      try {
        await socket.waitFor((m) => m.op === 'create' && m.object.n >= 10, 'ten live events');
        await live.kill('SIGKILL');
        await socket.waitClosed();
        before = socket.events(1);
        const restarted = await server.startLiveQuery({ port: live.port });
        resumedSocket = await connected({}, restarted.url);
        writtenWhileAway = created.length;
        await subscribed(resumedSocket, 1, { className: C }, { lastEventId: before.at(-1).eventId });
      } finally {
        openGate();
      }
      await writer;
      await resumedSocket.event(1, 'create', created.at(-1));

      const all = [...before, ...resumedSocket.events(1)];
      assert.ok(
        before.length < writtenWhileAway,
        `objects were written while the client was away (${before.length} received, ${writtenWhileAway} written), so the resume replays them`,
      );
      assert.deepEqual(
        all.map((m) => m.op),
        Array(N).fill('create'),
      );
      assert.deepEqual(
        all.map((m) => m.object.objectId),
        created,
        'every object exactly once, in creation order',
      );
      assert.deepEqual(
        all.map((m) => m.object.n),
        [...Array(N).keys()],
      );
      for (const m of all) assert.match(m.eventId, /^[0-9]+$/);
      for (let i = 1; i < all.length; i++) {
        assert.ok(BigInt(all[i].eventId) > BigInt(all[i - 1].eventId), `eventIds increase: ${all[i - 1].eventId} then ${all[i].eventId}`);
      }

      // The SDK reconnects and resubscribes by itself (with a random
      // back-off of up to a few seconds), then gets new events again.
      await waitUntil(() => opens >= 2, 'the SDK to resubscribe after the restart', 40_000);
      const after = await create(C, { n: N });
      await waitUntil(() => sdkGot.some((e) => e.object.id === after.objectId), 'the SDK to get an event after the restart');
      await client.close();
    });

    it('a resume replays only what the subscriber may see, limited to its keys', async () => {
      const C = uniqueClass('LiveResumeAcl');
      const a = await signUp('resumea');
      const b = await signUp('resumeb');
      const first = await connected();
      await subscribed(first, 1, { className: C, keys: ['tag'] }, { sessionToken: b.token });
      const m0 = await create(C, { tag: 'm0', other: 1 });
      const seen = await first.event(1, 'create', m0.objectId);
      first.close();
      await first.waitClosed();

      await create(C, { tag: 'private', ACL: { [a.id]: { read: true, write: true } } }, { session: a.token });
      const m1 = await create(C, { tag: 'm1', other: 2 });
      const again = await connected();
      await subscribed(again, 1, { className: C, keys: ['tag'] }, { sessionToken: b.token, lastEventId: seen.eventId });
      const replayed = await again.event(1, 'create', m1.objectId);
      assert.deepEqual(summary(again.events(1)), ['create:m1']);
      assert.ok(!('other' in replayed.object), `keys apply to replayed events: ${JSON.stringify(replayed)}`);
      const m2 = await create(C, { tag: 'm2', other: 3 });
      await again.event(1, 'create', m2.objectId);
      assert.deepEqual(summary(again.events(1)), ['create:m1', 'create:m2']);
    });

    it('two processes deliver the same event, and a resume too far back is an error 120 then live', async () => {
      const C = uniqueClass('LiveTwo');
      const live = await server.startLiveQuery({ env: { OXBASE_LIVEQUERY__MAX_REPLAY: '3' } });
      const onApi = await connected();
      await subscribed(onApi, 1, { className: C });
      const onLive = await connected({}, live.url);
      await subscribed(onLive, 1, { className: C });

      const first = await create(C, { tag: 'first' });
      const fromApi = await onApi.event(1, 'create', first.objectId);
      const fromLive = await onLive.event(1, 'create', first.objectId);
      assert.equal(fromLive.object.tag, 'first');
      assert.equal(fromLive.eventId, fromApi.eventId, 'the eventId is the position in the one event stream');

      const more = [];
      for (let i = 0; i < 4; i++) more.push(await create(C, { tag: `more${i}` }));
      await onLive.event(1, 'create', more.at(-1).objectId);

      const tooFar = await subscribed(onLive, 2, { className: C }, { lastEventId: fromLive.eventId });
      assert.equal(tooFar.requestId, 2);
      const gap = await onLive.waitFor((m) => m.op === 'error' && m.requestId === 2, 'the resume error');
      assert.equal(gap.code, 120);
      const nearEnough = onLive.events(1).at(-2);
      await subscribed(onLive, 3, { className: C }, { lastEventId: nearEnough.eventId });

      const later = await create(C, { tag: 'later' });
      await onLive.event(2, 'create', later.objectId);
      await onLive.event(3, 'create', later.objectId);
      assert.deepEqual(summary(onLive.events(2)), ['create:later'], 'after the error the subscription runs live');
      assert.deepEqual(summary(onLive.events(3)), ['create:more3', 'create:later'], 'a resume sends what came after lastEventId');
      assert.ok(!onLive.messages.some((m) => m.op === 'error' && m.requestId === 3));
    });
  });

  describe('bad messages', () => {
    it('get Parse’s error op and leave the connection usable', async () => {
      const C = uniqueClass('LiveBad');
      const socket = await LiveSocket.open(apiURL());
      const expectError = async (message, code, what) => {
        const answer = await socket.ask(message, what);
        assert.equal(answer.op, 'error', `${what}: ${JSON.stringify(answer)}`);
        assert.equal(answer.code, code, `${what}: ${JSON.stringify(answer)}`);
        assert.equal(typeof answer.error, 'string');
        return answer;
      };
      await expectError('not json', 1, 'text that is not JSON');
      await expectError({ op: 'dance' }, 1, 'an unknown op');
      await expectError({ requestId: 1 }, 1, 'no op');
      const early = await expectError({ op: 'subscribe', requestId: 1, query: { className: C, where: {} } }, 2, 'subscribe before connect');
      assert.equal(early.error, 'Can not find this client, make sure you connect to server before subscribing');
      await expectError({ op: 'unsubscribe', requestId: 1 }, 2, 'unsubscribe before connect');

      assert.equal((await socket.connect()).op, 'connected');
      await expectError({ op: 'subscribe', requestId: 1, query: { className: C, where: {}, fields: ['a'] } }, 1, 'fields');
      await expectError({ op: 'subscribe', requestId: 1, query: { className: C, where: {}, keys: [] } }, 1, 'empty keys');
      await expectError({ op: 'subscribe', requestId: '1', query: { className: C, where: {} } }, 1, 'a string requestId');
      await expectError({ op: 'subscribe', requestId: 1, query: { where: {} } }, 1, 'no className');
      const unknown = await expectError({ op: 'unsubscribe', requestId: 9 }, 2, 'an unknown subscription');
      assert.equal(unknown.requestId, 9);

      await subscribed(socket, 1, { className: C });
      const obj = await create(C, { tag: 'after the errors' });
      const event = await socket.event(1, 'create', obj.objectId);
      assert.equal(event.object.tag, 'after the errors');
    });
  });
});
