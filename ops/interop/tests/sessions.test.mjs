// A password change revokes the user's sessions on both servers
// (revokeSessionOnPasswordReset defaults to true). What Parse Server 9 does,
// and oxbase must do too:
// - a user changing its own password with PUT /users/<id> loses every
//   session, the one it used for the change included, and the reply carries
//   a new sessionToken, the user's only session afterwards;
// - a change made with the master key revokes every session and the reply
//   carries no sessionToken;
// - changing any other field leaves the sessions alone.
//
// Parse Server keeps a session it has used in memory for 5 s (cacheTTL), so
// a session revoked by oxbase would still work on Parse Server for that
// long if Parse Server had used it just before. The tests therefore check
// on Parse Server only sessions Parse Server has not used yet.

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

const label = { parse: 'Parse Server', oxbase: 'oxbase' };
const servers = () => [
  ['Parse Server', env.parse],
  ['oxbase', env.oxbase],
];

async function assertInvalid(token, what) {
  for (const [name, server] of servers()) {
    const me = await server.get('users/me', undefined, { session: token });
    assert.equal(me.status, 400, `${what} on ${name}: ${JSON.stringify(me.body)}`);
    assert.equal(me.body.code, 209, `${what} on ${name}`);
  }
}

async function assertValid(token, username, what) {
  for (const [name, server] of servers()) {
    const me = await server.get('users/me', undefined, { session: token });
    assert.equal(me.status, 200, `${what} on ${name}: ${JSON.stringify(me.body)}`);
    assert.equal(me.body.username, username, `${what} on ${name}`);
  }
}

async function sessionsOf(userId) {
  const where = { user: { __type: 'Pointer', className: '_User', objectId: userId } };
  const tokens = {};
  for (const [name, server] of servers()) {
    const r = await server.get('sessions', { where }, { master: true });
    assert.equal(r.status, 200, `${name}: ${JSON.stringify(r.body)}`);
    tokens[name] = r.body.results.map((s) => s.sessionToken).sort();
  }
  assert.deepEqual(tokens.oxbase, tokens['Parse Server']);
  return tokens.oxbase;
}

async function loginTwice(server, username, password) {
  const tokens = [];
  for (let i = 0; i < 2; i++) {
    const login = await server.post('login', { username, password });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    tokens.push(login.body.sessionToken);
  }
  return tokens;
}

for (const changer of ['parse', 'oxbase']) {
  describe(`a password change on ${label[changer]}`, () => {
    const tag = changer === 'parse' ? 'pa' : 'ox';

    it("revokes the user's sessions on both servers and hands back a new one", async () => {
      const server = env[changer];
      const username = `${tag}-changer`;
      const signup = await server.post('users', { username, password: 'old-pw' });
      assert.equal(signup.status, 201, JSON.stringify(signup.body));
      const id = signup.body.objectId;
      const [used, spare] = await loginTwice(server, username, 'old-pw');
      const bystander = await server.post('users', { username: `${tag}-bystander`, password: 'pw' });
      assert.equal(bystander.status, 201, JSON.stringify(bystander.body));
      assert.deepEqual(await sessionsOf(id), [signup.body.sessionToken, used, spare].sort());

      const change = await server.put(`users/${id}`, { password: 'new-pw' }, { session: used });
      assert.equal(change.status, 200, JSON.stringify(change.body));
      assert.equal(typeof change.body.updatedAt, 'string');
      const fresh = change.body.sessionToken;
      assert.match(fresh ?? '', /^r:/, JSON.stringify(change.body));
      assert.ok(![signup.body.sessionToken, used, spare].includes(fresh));

      // Every earlier session is gone, the one used for the change too.
      await assertInvalid(spare, 'the other login session');
      await assertInvalid(signup.body.sessionToken, 'the sign-up session');
      await assertInvalid(used, 'the session that changed the password');
      // The new one works on both servers and is the only one left.
      await assertValid(fresh, username, 'the session handed back');
      assert.deepEqual(await sessionsOf(id), [fresh]);
      // Other users keep their sessions.
      await assertValid(bystander.body.sessionToken, `${tag}-bystander`, "another user's session");

      for (const [name, s] of servers()) {
        const old = await s.post('login', { username, password: 'old-pw' });
        assert.equal(old.status, 404, `${name}: ${JSON.stringify(old.body)}`);
        assert.equal(old.body.code, 101, name);
      }
      const other = changer === 'parse' ? env.oxbase : env.parse;
      const login = await other.post('login', { username, password: 'new-pw' });
      assert.equal(login.status, 200, JSON.stringify(login.body));
    });

    it('with the master key revokes every session and hands back none', async () => {
      const server = env[changer];
      const username = `${tag}-by-master`;
      const signup = await server.post('users', { username, password: 'old-pw' });
      assert.equal(signup.status, 201, JSON.stringify(signup.body));
      const id = signup.body.objectId;
      const [first, second] = await loginTwice(server, username, 'old-pw');

      const change = await server.put(`users/${id}`, { password: 'new-pw' }, { master: true });
      assert.equal(change.status, 200, JSON.stringify(change.body));
      assert.equal(change.body.sessionToken, undefined, JSON.stringify(change.body));
      for (const token of [signup.body.sessionToken, first, second]) await assertInvalid(token, 'a session');
      assert.deepEqual(await sessionsOf(id), []);
    });

    it('of another field keeps the sessions', async () => {
      const server = env[changer];
      const username = `${tag}-keeps`;
      const signup = await server.post('users', { username, password: 'pw' });
      assert.equal(signup.status, 201, JSON.stringify(signup.body));
      const id = signup.body.objectId;
      const [used, spare] = await loginTwice(server, username, 'pw');
      const change = await server.put(`users/${id}`, { nick: 'n' }, { session: used });
      assert.equal(change.status, 200, JSON.stringify(change.body));
      assert.equal(change.body.sessionToken, undefined, JSON.stringify(change.body));
      for (const token of [signup.body.sessionToken, used, spare]) await assertValid(token, username, 'a session');
      assert.deepEqual(await sessionsOf(id), [signup.body.sessionToken, used, spare].sort());
    });
  });
}
