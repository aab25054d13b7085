// Users are private in Parse Server 9 (enforcePrivateUsers defaults to
// true): a user signed up without an ACL gets one that lets only that user
// read and write it, so no other user and no anonymous client can get or
// find it. A user signed up on either server is private on both.

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

const servers = () => [
  ['Parse Server', env.parse],
  ['oxbase', env.oxbase],
];

for (const [writerName, writerOf] of [
  ['Parse Server', () => env.parse],
  ['oxbase', () => env.oxbase],
]) {
  describe(`a user signed up on ${writerName} without an ACL`, () => {
    const tag = writerName === 'oxbase' ? 'ox' : 'pa';
    let user;
    let other;
    before(async () => {
      const writer = writerOf();
      const signup = await writer.post('users', { username: `${tag}-private`, password: 'pw-1', email: `${tag}-private@example.com` });
      assert.equal(signup.status, 201, JSON.stringify(signup.body));
      user = signup.body;
      const second = await writer.post('users', { username: `${tag}-other`, password: 'pw-2' });
      assert.equal(second.status, 201, JSON.stringify(second.body));
      other = second.body;
    });

    it('gets an ACL for that user alone, read back through both servers', async () => {
      for (const [name, server] of servers()) {
        const got = await server.get(`users/${user.objectId}`, undefined, { master: true });
        assert.equal(got.status, 200, `${name}: ${JSON.stringify(got.body)}`);
        assert.deepEqual(got.body.ACL, { [user.objectId]: { read: true, write: true } }, name);
        const found = await server.get('users', { where: { username: `${tag}-private` } }, { master: true });
        assert.deepEqual(found.body.results?.map((u) => u.ACL), [{ [user.objectId]: { read: true, write: true } }], name);
      }
      // What lands in the database is what Parse Server writes for it.
      const row = env.psql(`SELECT _rperm::text || ' ' || _wperm::text FROM "_User" WHERE "objectId" = '${user.objectId}'`).trim();
      assert.equal(row, `{${user.objectId}} {${user.objectId}}`);
    });

    it('is readable by its own session on both servers', async () => {
      for (const [name, server] of servers()) {
        const got = await server.get(`users/${user.objectId}`, undefined, { session: user.sessionToken });
        assert.equal(got.status, 200, `${name}: ${JSON.stringify(got.body)}`);
        assert.equal(got.body.username, `${tag}-private`, name);
        assert.equal(got.body.email, `${tag}-private@example.com`, name);
      }
    });

    it("is hidden from another user's session on both servers", async () => {
      for (const [name, server] of servers()) {
        const got = await server.get(`users/${user.objectId}`, undefined, { session: other.sessionToken });
        assert.equal(got.status, 404, `${name}: ${JSON.stringify(got.body)}`);
        assert.equal(got.body.code, 101, name);
        const byName = await server.get('users', { where: { username: `${tag}-private` } }, { session: other.sessionToken });
        assert.equal(byName.status, 200, `${name}: ${JSON.stringify(byName.body)}`);
        assert.deepEqual(byName.body.results, [], name);
        const byId = await server.get('users', { where: { objectId: user.objectId } }, { session: other.sessionToken });
        assert.deepEqual(byId.body.results, [], name);
        // A plain find shows the other user only its own user object.
        const all = await server.get('users', { where: { username: { $in: [`${tag}-private`, `${tag}-other`] } } }, { session: other.sessionToken });
        assert.deepEqual(all.body.results?.map((u) => u.objectId), [other.objectId], name);
        const count = await server.get('users', { where: { username: `${tag}-private` }, count: 1, limit: 0 }, { session: other.sessionToken });
        assert.equal(count.body.count, 0, name);
      }
    });

    it('is hidden from anonymous clients on both servers', async () => {
      for (const [name, server] of servers()) {
        const got = await server.get(`users/${user.objectId}`);
        assert.equal(got.status, 404, `${name}: ${JSON.stringify(got.body)}`);
        assert.equal(got.body.code, 101, name);
        const found = await server.get('users', { where: { username: `${tag}-private` } });
        assert.deepEqual(found.body.results, [], name);
      }
    });

    it('cannot be changed or deleted by another user or anonymously on either server', async () => {
      // Parse Server answers 206 (session missing or not the user's), not
      // 101, although the user is hidden from that session.
      for (const [name, server] of servers()) {
        for (const [who, opts] of [["another user's session", { session: other.sessionToken }], ['no session', {}]]) {
          const put = await server.put(`users/${user.objectId}`, { nick: 'hijacked' }, opts);
          assert.equal(put.status, 400, `PUT with ${who} on ${name}: ${JSON.stringify(put.body)}`);
          assert.equal(put.body.code, 206, `PUT with ${who} on ${name}`);
          const del = await server.del(`users/${user.objectId}`, opts);
          assert.equal(del.status, 400, `DELETE with ${who} on ${name}: ${JSON.stringify(del.body)}`);
          assert.equal(del.body.code, 206, `DELETE with ${who} on ${name}`);
        }
      }
      const after = await env.parse.get(`users/${user.objectId}`, undefined, { master: true });
      assert.equal(after.body.nick, undefined);
    });
  });
}
