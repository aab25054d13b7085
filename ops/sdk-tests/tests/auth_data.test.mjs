// Signing in with authData through the Parse JS SDK: anonymous users
// (AnonymousUtils, logInWith('anonymous')), and an OpenID provider whose
// tokens this test signs, its keys served from a JWKS endpoint in this
// process: logInWith, linkWith, _unlinkFrom and their errors.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { generateKeyPairSync, sign, randomUUID } from 'node:crypto';
import { startServer, expectParseError } from './server.mjs';

const ISSUER = 'https://id.example.com';
const CLIENT_ID = 'oxbase-sdk-tests';

let server;
let Parse;
let jwks;
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });

const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** An RS256 ID token for `sub`; `change` overrides claims. */
function idToken(sub, change = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: ISSUER, aud: CLIENT_ID, sub, iat: now, exp: now + 600, ...change };
  const input = `${b64({ alg: 'RS256', kid: 'k1' })}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

const acme = (sub, change) => ({ authData: { id: sub, id_token: idToken(sub, change) } });

before(async () => {
  const key = { ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256', use: 'sig' };
  jwks = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [key] }));
  });
  await new Promise((resolve) => jwks.listen(0, '127.0.0.1', resolve));
  server = await startServer({
    env: {
      OXBASE_AUTH__PROVIDERS__ACME__TYPE: 'oidc',
      OXBASE_AUTH__PROVIDERS__ACME__ISSUERS: ISSUER,
      OXBASE_AUTH__PROVIDERS__ACME__CLIENT_IDS: CLIENT_ID,
      OXBASE_AUTH__PROVIDERS__ACME__JWKS_URL: `http://127.0.0.1:${jwks.address().port}/jwks`,
    },
  });
  Parse = server.Parse;
  Parse.User.enableUnsafeCurrentUser();
});

after(async () => {
  if (server) await server.stop();
  if (jwks) await new Promise((resolve) => jwks.close(resolve));
});

describe('sign-in with authData', () => {
  it('logs in anonymously, and again as the same user with the same id', async () => {
    const user = await Parse.AnonymousUtils.logIn();
    assert.ok(Parse.AnonymousUtils.isLinked(user));
    assert.match(user.getSessionToken(), /^r:[0-9a-f]{32}$/);
    const { id } = user.get('authData').anonymous;
    await Parse.User.logOut();

    const again = await Parse.User.logInWith('anonymous', { authData: { id } });
    assert.equal(again.id, user.id);
    assert.notEqual(again.getSessionToken(), user.getSessionToken());
    await Parse.User.logOut();
  });

  it('keeps an anonymous user who sets a username and password', async () => {
    const user = await Parse.AnonymousUtils.logIn();
    user.setUsername(`kept-${randomUUID()}`);
    user.setPassword('secret');
    await user.save();
    assert.ok(!Parse.AnonymousUtils.isLinked(user));
    await Parse.User.logOut();

    const loggedIn = await Parse.User.logIn(user.getUsername(), 'secret');
    assert.equal(loggedIn.id, user.id);
    assert.ok(!Parse.AnonymousUtils.isLinked(loggedIn));
    await Parse.User.logOut();
  });

  it('signs up and logs in with a signed ID token', async () => {
    const sub = `sub-${randomUUID()}`;
    const user = await Parse.User.logInWith('acme', acme(sub));
    assert.ok(user._isLinked('acme'));
    assert.equal(user.getUsername().length, 25);
    await Parse.User.logOut();

    const again = await Parse.User.logInWith('acme', acme(sub));
    assert.equal(again.id, user.id);
    await Parse.User.logOut();
  });

  it('links a provider to a user, logs in with it, and unlinks it', async () => {
    const user = new Parse.User();
    await user.signUp({ username: `linked-${randomUUID()}`, password: 'secret' });
    const sub = `sub-${randomUUID()}`;
    await user.linkWith('acme', acme(sub));
    assert.ok(user._isLinked('acme'));
    await Parse.User.logOut();

    const viaProvider = await Parse.User.logInWith('acme', acme(sub));
    assert.equal(viaProvider.id, user.id);
    await viaProvider._unlinkFrom('acme');
    assert.ok(!viaProvider._isLinked('acme'));
    const fetched = await new Parse.Query(Parse.User).get(user.id, { useMasterKey: true });
    assert.equal(fetched.get('authData')?.acme, undefined);
    await Parse.User.logOut();

    const fresh = await Parse.User.logInWith('acme', acme(sub));
    assert.notEqual(fresh.id, user.id, 'an unlinked id signs up a new user');
    await Parse.User.logOut();
  });

  it('upgrades an anonymous user by linking a provider', async () => {
    const user = await Parse.AnonymousUtils.logIn();
    await user.linkWith('acme', acme(`sub-${randomUUID()}`));
    assert.ok(user._isLinked('acme'));
    assert.ok(!Parse.AnonymousUtils.isLinked(user));
    const me = await Parse.User.me({ sessionToken: user.getSessionToken() });
    assert.equal(me.id, user.id);
    await Parse.User.logOut();
  });

  it('refuses bad tokens and ids linked to someone else', async () => {
    const sub = `sub-${randomUUID()}`;
    let err = await expectParseError(Parse.User.logInWith('acme', acme(sub, { aud: 'other' })), Parse.Error.OBJECT_NOT_FOUND);
    assert.equal(err.message, `jwt audience invalid. expected: ${CLIENT_ID}`);
    err = await expectParseError(Parse.User.logInWith('acme', acme(sub, { exp: 1 })), Parse.Error.OBJECT_NOT_FOUND);
    assert.equal(err.message, 'jwt expired');
    err = await expectParseError(
      Parse.User.logInWith('acme', { authData: { id: 'someone', id_token: idToken(sub) } }),
      Parse.Error.OBJECT_NOT_FOUND,
    );
    assert.equal(err.message, 'auth data is invalid for this user.');

    const owner = await Parse.User.logInWith('acme', acme(sub));
    await Parse.User.logOut();
    const other = new Parse.User();
    await other.signUp({ username: `other-${randomUUID()}`, password: 'secret' });
    err = await expectParseError(other.linkWith('acme', acme(sub)), Parse.Error.ACCOUNT_ALREADY_LINKED);
    assert.equal(err.message, 'this auth is already used');
    assert.ok(owner.id);
    await Parse.User.logOut();

    err = await expectParseError(Parse.User.logInWith('vkontakte', { authData: { id: '1', access_token: 't' } }), Parse.Error.UNSUPPORTED_SERVICE);
    assert.match(err.message, /vkontakte.*oxbase/);
    await expectParseError(Parse.User.logInWith('myspace', { authData: { id: '1' } }), Parse.Error.UNSUPPORTED_SERVICE);
  });
});
