// Users, sessions, roles, relations and ACLs shared between Parse Server and
// oxbase on one PostgreSQL database: a user signed up on one logs in on the
// other, a session made on one works on the other, and role-based ACLs mean
// the same on both.

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

const pointer = (className, objectId) => ({ __type: 'Pointer', className, objectId });

describe('users and sessions across servers', () => {
  it('a user signed up on Parse Server logs in on oxbase, and the reverse', async () => {
    const onParse = await env.parse.post('users', { username: 'pia', password: 'pia-pw', email: 'pia@example.com' });
    assert.equal(onParse.status, 201, JSON.stringify(onParse.body));
    const login = await env.oxbase.post('login', { username: 'pia', password: 'pia-pw' });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.equal(login.body.objectId, onParse.body.objectId);
    const wrong = await env.oxbase.post('login', { username: 'pia', password: 'nope' });
    assert.equal(wrong.body.code, 101);

    const onOxbase = await env.oxbase.post('users', { username: 'oli', password: 'oli-pw' });
    assert.equal(onOxbase.status, 201, JSON.stringify(onOxbase.body));
    const back = await env.parse.post('login', { username: 'oli', password: 'oli-pw' });
    assert.equal(back.status, 200, JSON.stringify(back.body));
    assert.equal(back.body.objectId, onOxbase.body.objectId);

    // Each server accepts the other's session tokens.
    const me = await env.oxbase.get('users/me', undefined, { session: onParse.body.sessionToken });
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body.username, 'pia');
    const meThere = await env.parse.get('users/me', undefined, { session: onOxbase.body.sessionToken });
    assert.equal(meThere.status, 200, JSON.stringify(meThere.body));
    assert.equal(meThere.body.username, 'oli');

    // A log-out on oxbase ends the session for Parse Server too.
    await env.oxbase.post('logout', {}, { session: login.body.sessionToken });
    const ended = await env.parse.get('users/me', undefined, { session: login.body.sessionToken });
    assert.equal(ended.body.code, 209, JSON.stringify(ended.body));
  });
});

describe('roles, relations and ACLs across servers', () => {
  it('a role made on Parse Server grants access on oxbase', async () => {
    const ann = await env.parse.post('users', { username: 'ann', password: 'ann-pw' });
    const bob = await env.parse.post('users', { username: 'bob', password: 'bob-pw' });
    const editors = await env.parse.post(
      'roles',
      { name: 'Editors', ACL: { '*': { read: true } }, users: { __op: 'AddRelation', objects: [pointer('_User', ann.body.objectId)] } },
      { master: true },
    );
    assert.equal(editors.status, 201, JSON.stringify(editors.body));
    const staff = await env.parse.post(
      'roles',
      { name: 'Staff', ACL: { '*': { read: true } }, roles: { __op: 'AddRelation', objects: [pointer('_Role', editors.body.objectId)] } },
      { master: true },
    );
    assert.equal(staff.status, 201, JSON.stringify(staff.body));
    const memo = await env.parse.post('classes/Memo', { text: 'staff only', ACL: { 'role:Staff': { read: true, write: true } } }, { master: true });
    assert.equal(memo.status, 201, JSON.stringify(memo.body));

    const annOnOx = await env.oxbase.get(`classes/Memo/${memo.body.objectId}`, undefined, { session: ann.body.sessionToken });
    assert.equal(annOnOx.status, 200, JSON.stringify(annOnOx.body));
    assert.equal(annOnOx.body.text, 'staff only');
    const bobOnOx = await env.oxbase.get(`classes/Memo/${memo.body.objectId}`, undefined, { session: bob.body.sessionToken });
    assert.equal(bobOnOx.body.code, 101);
    const count = await env.oxbase.get('classes/Memo', { count: 1, limit: 0 }, { session: bob.body.sessionToken });
    assert.equal(count.body.count, 0);

    // Ann updates it on oxbase; Parse Server sees the change.
    const update = await env.oxbase.put(`classes/Memo/${memo.body.objectId}`, { text: 'edited' }, { session: ann.body.sessionToken });
    assert.equal(update.status, 200, JSON.stringify(update.body));
    const seen = await env.parse.get(`classes/Memo/${memo.body.objectId}`, undefined, { master: true });
    assert.equal(seen.body.text, 'edited');

    // Relation membership written on oxbase reads back on Parse Server.
    const added = await env.oxbase.put(
      `roles/${editors.body.objectId}`,
      { users: { __op: 'AddRelation', objects: [pointer('_User', bob.body.objectId)] } },
      { master: true },
    );
    assert.equal(added.status, 200, JSON.stringify(added.body));
    const members = await env.parse.get(
      'users',
      { where: { $relatedTo: { object: pointer('_Role', editors.body.objectId), key: 'users' } } },
      { master: true },
    );
    assert.deepEqual(members.body.results.map((u) => u.username).sort(), ['ann', 'bob']);
    const bobNow = await env.parse.get(`classes/Memo/${memo.body.objectId}`, undefined, { session: bob.body.sessionToken });
    assert.equal(bobNow.status, 200, JSON.stringify(bobNow.body));
  });
});
