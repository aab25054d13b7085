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
    oxbaseEnv: () => ({ OXBASE_AUTH__PROVIDERS__MFA__OPTIONS: 'TOTP' }),
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

  it('a user who enrolled in MFA on one server logs in on the other with a TOTP token', async () => {
    const username = `mfa-${randomUUID()}`;
    const signUp = await env.parse.post('users', { username, password: 'pw' });
    expect(signUp, 201);
    const secret = new OTPAuth.Secret({ size: 20 }).base32;
    const totp = new OTPAuth.TOTP({ secret, digits: 6, period: 30, algorithm: 'SHA1' });
    const enrol = await env.parse.put(
      `users/${signUp.body.objectId}`,
      { authData: { mfa: { secret, token: totp.generate() } } },
      { session: signUp.body.sessionToken },
    );
    expect(enrol, 200);
    const recovery = enrol.body.authDataResponse.mfa.recovery.split(', ');
    // Both servers now want the second factor, with the same error...
    for (const server of [env.parse, env.oxbase]) {
      const passwordOnly = await server.post('login', { username, password: 'pw' });
      expect(passwordOnly, 400);
      assert.deepEqual(passwordOnly.body, { code: -1, error: 'Missing additional authData mfa' });
    }
    // ...and oxbase checks Parse Server's secret and uses up its recovery codes.
    const logIn = await env.oxbase.post('login', { username, password: 'pw', authData: { mfa: { token: totp.generate() } } });
    expect(logIn, 200);
    assert.equal(logIn.body.objectId, signUp.body.objectId);
    assert.deepEqual(logIn.body.authData, { mfa: { status: 'enabled' } });
    const recovered = await env.oxbase.post('login', { username, password: 'pw', authData: { mfa: { token: recovery[0] } } });
    expect(recovered, 200);
    const reused = await env.parse.post('login', { username, password: 'pw', authData: { mfa: { token: recovery[0] } } });
    assert.deepEqual(reused.body, { code: 141, error: 'Invalid MFA token' });

    // A user enrolled on oxbase logs in on Parse Server.
    const other = `mfa-${randomUUID()}`;
    const onOxbase = await env.oxbase.post('users', { username: other, password: 'pw' });
    expect(onOxbase, 201);
    const secret2 = new OTPAuth.Secret({ size: 20 }).base32;
    const totp2 = new OTPAuth.TOTP({ secret: secret2 });
    const enrolled = await env.oxbase.put(
      `users/${onOxbase.body.objectId}`,
      { authData: { mfa: { secret: secret2, token: totp2.generate() } } },
      { session: onOxbase.body.sessionToken },
    );
    expect(enrolled, 200);
    const [code] = enrolled.body.authDataResponse.mfa.recovery.split(', ');
    const onParse = await env.parse.post('login', { username: other, password: 'pw', authData: { mfa: { token: totp2.generate() } } });
    expect(onParse, 200);
    assert.deepEqual(onParse.body.authData, { mfa: { status: 'enabled' } });
    expect(await env.parse.post('login', { username: other, password: 'pw', authData: { mfa: { token: code } } }), 200);
    const stored = await env.oxbase.get(`users/${onOxbase.body.objectId}`, undefined, { master: true });
    assert.equal(stored.body.authData.mfa.recovery.length, 1);
    assert.ok(!stored.body.authData.mfa.recovery.includes(code));
  });
});
