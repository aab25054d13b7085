// Account rules through the Parse JS SDK, configured with Parse Server's own
// variables: the account lockout, the password policy, User.verifyPassword
// and User.loginAs.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectParseError } from './server.mjs';

let server;
let Parse;

before(async () => {
  server = await startServer({
    env: {
      PARSE_SERVER_ACCOUNT_LOCKOUT: JSON.stringify({ duration: 5, threshold: 2 }),
      PARSE_SERVER_PASSWORD_POLICY: JSON.stringify({
        validatorPattern: '^(?=.*[0-9]).{6,}$',
        doNotAllowUsername: true,
        maxPasswordHistory: 3,
      }),
    },
  });
  Parse = server.Parse;
});

after(async () => {
  if (server) await server.stop();
});

let counter = 0;
async function newUser(prefix) {
  counter += 1;
  const username = `${prefix}${counter}`;
  const user = new Parse.User();
  await user.signUp({ username, password: 'pass-1', email: `${username}@example.com` });
  return user;
}

describe('account rules', () => {
  it('locks an account after repeated failed log-ins', async () => {
    const user = await newUser('locked');
    const name = user.getUsername();
    for (let i = 0; i < 2; i += 1) {
      const err = await expectParseError(Parse.User.logIn(name, 'wrong'), Parse.Error.OBJECT_NOT_FOUND);
      assert.equal(err.message, 'Invalid username/password.');
    }
    const err = await expectParseError(Parse.User.logIn(name, 'pass-1'), Parse.Error.OBJECT_NOT_FOUND);
    assert.equal(
      err.message,
      'Your account is locked due to multiple failed login attempts. Please try again after 5 minute(s)',
    );
  });

  it('refuses passwords the policy refuses', async () => {
    const weak = new Parse.User();
    const err = await expectParseError(
      weak.signUp({ username: 'weakling', password: 'short' }),
      Parse.Error.VALIDATION_ERROR,
    );
    assert.equal(err.message, 'Password does not meet the Password Policy requirements.');
    const named = new Parse.User();
    const contains = await expectParseError(
      named.signUp({ username: 'named', password: 'named123' }),
      Parse.Error.VALIDATION_ERROR,
    );
    assert.equal(contains.message, 'Password cannot contain your username.');

    const user = await newUser('history');
    user.setPassword('pass-2');
    await user.save(null, { sessionToken: user.getSessionToken() });
    user.setPassword('pass-1');
    const repeated = await expectParseError(
      user.save(null, { sessionToken: user.getSessionToken() }),
      Parse.Error.VALIDATION_ERROR,
    );
    assert.equal(repeated.message, 'New password should not be the same as last 3 passwords.');
  });

  it('verifies a password without a session', async () => {
    const user = await newUser('verify');
    // The SDK answers the server's JSON as it is.
    const verified = await Parse.User.verifyPassword(user.getUsername(), 'pass-1');
    assert.equal(verified.objectId, user.id);
    assert.equal(verified.username, user.getUsername());
    assert.equal(verified.sessionToken, undefined);
    await expectParseError(Parse.User.verifyPassword(user.getUsername(), 'wrong'), Parse.Error.OBJECT_NOT_FOUND);
  });

  it('logs in as a user with the master key', async () => {
    const user = await newUser('target');
    const loggedIn = await Parse.User.loginAs(user.id);
    assert.equal(loggedIn.id, user.id);
    assert.match(loggedIn.getSessionToken(), /^r:[0-9a-f]{32}$/);
    const me = await Parse.User.me(loggedIn.getSessionToken());
    assert.equal(me.getUsername(), user.getUsername());
  });
});
