// Sign-in with authData shared between Parse Server and oxbase: a user
// signed up with a provider on one server logs in on the other as the same
// user, and providers oxbase does not check (a custom adapter of Parse
// Server's) stay linked and readable when oxbase serves the user.

import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as OTPAuth from 'otpauth';
import { startBoth } from './harness.mjs';

let env;
before(async () => {
  env = await startBoth({
    parseOptions: () => ({
      // A custom adapter as a Parse Server app would configure it: oxbase
      // has no counterpart, so it refuses logging in with it, but keeps it.
      auth: {
        acme: { module: { validateAuthData: async () => {}, validateAppId: async () => {} } },
        mfa: { enabled: true, options: ['TOTP'], digits: 6, period: 30, algorithm: 'SHA1' },
      },
    }),
  });
});
after(async () => {
  await env?.stop();
});

const expect = (response, status) => assert.equal(response.status, status, JSON.stringify(response.body));

describe('authData across servers', () => {
  it('an anonymous user signed up on one server logs in on the other as the same user', async () => {
    const onParse = { anonymous: { id: randomUUID() } };
    const signUp = await env.parse.post('users', { authData: onParse });
    expect(signUp, 201);
    const logIn = await env.oxbase.post('users', { authData: onParse });
    expect(logIn, 200);
    assert.equal(logIn.body.objectId, signUp.body.objectId);
    assert.equal(logIn.body.username, signUp.body.username);
    assert.deepEqual(logIn.body.authData, onParse);
    // oxbase's session is Parse Server's too.
    const me = await env.parse.get('users/me', undefined, { session: logIn.body.sessionToken });
    expect(me, 200);
    assert.equal(me.body.objectId, signUp.body.objectId);

    const onOxbase = { anonymous: { id: randomUUID() } };
    const there = await env.oxbase.post('users', { authData: onOxbase });
    expect(there, 201);
    const back = await env.parse.post('users', { authData: onOxbase });
    expect(back, 200);
    assert.equal(back.body.objectId, there.body.objectId);
    assert.deepEqual(back.body.authData, onOxbase);
    const session = await env.parse.get('sessions/me', undefined, { session: there.body.sessionToken });
    expect(session, 200);
    assert.deepEqual(session.body.createdWith, { action: 'signup', authProvider: 'anonymous' });
  });

  it('a provider linked on Parse Server stays linked and readable on oxbase', async () => {
    const anonymous = { id: randomUUID() };
    const acme = { id: `acme-${randomUUID()}`, token: 'acme-token' };
    const signUp = await env.parse.post('users', { authData: { anonymous } });
    expect(signUp, 201);
    const { objectId, sessionToken } = signUp.body;
    expect(await env.parse.put(`users/${objectId}`, { authData: { acme } }, { session: sessionToken }), 200);

    const me = await env.oxbase.get('users/me', undefined, { session: sessionToken });
    expect(me, 200);
    assert.deepEqual(me.body.authData, { anonymous, acme });
    const byMaster = await env.oxbase.get(`users/${objectId}`, undefined, { master: true });
    expect(byMaster, 200);
    assert.deepEqual(byMaster.body.authData, { anonymous, acme });

    // oxbase does not check acme's data, so it does not log in with it…
    const withAcme = await env.oxbase.post('users', { authData: { acme } });
    assert.equal(withAcme.body.code, 252, JSON.stringify(withAcme.body));
    // …but logging in with the anonymous id, and unlinking it, keeps acme.
    const logIn = await env.oxbase.post('users', { authData: { anonymous } });
    expect(logIn, 200);
    assert.equal(logIn.body.objectId, objectId);
    expect(await env.oxbase.put(`users/${objectId}`, { authData: { anonymous: null } }, { session: sessionToken }), 200);
    const onParse = await env.parse.get(`users/${objectId}`, undefined, { master: true });
    expect(onParse, 200);
    assert.deepEqual(onParse.body.authData, { acme });
    // And Parse Server still logs the user in with it.
    const back = await env.parse.post('users', { authData: { acme } });
    expect(back, 200);
    assert.equal(back.body.objectId, objectId);
  });

  it('a user who enrolled in MFA on Parse Server cannot log in on oxbase with the password alone', async () => {
    const username = `mfa-${randomUUID()}`;
    const signUp = await env.parse.post('users', { username, password: 'pw' });
    expect(signUp, 201);
    const secret = new OTPAuth.Secret({ size: 20 }).base32;
    const token = new OTPAuth.TOTP({ secret, digits: 6, period: 30, algorithm: 'SHA1' }).generate();
    const enrol = await env.parse.put(
      `users/${signUp.body.objectId}`,
      { authData: { mfa: { secret, token } } },
      { session: signUp.body.sessionToken },
    );
    expect(enrol, 200);
    // Parse Server now wants the second factor...
    const parseLogIn = await env.parse.post('login', { username, password: 'pw' });
    assert.equal(parseLogIn.body.code, -1, JSON.stringify(parseLogIn.body));
    // ...which oxbase cannot check yet, so it refuses rather than let the password through.
    const oxbaseLogIn = await env.oxbase.post('login', { username, password: 'pw' });
    expect(oxbaseLogIn, 400);
    assert.equal(oxbaseLogIn.body.code, 252);
    assert.match(oxbaseLogIn.body.error, /multi-factor authentication \(mfa\)/);
  });
});
