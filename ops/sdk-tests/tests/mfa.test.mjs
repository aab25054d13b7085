// Multi-factor authentication through the Parse JS SDK, as with Parse
// Server's `mfa` adapter: a user enrols a TOTP secret with
// user.save({authData: {mfa: {secret, token}}}), then logs in with
// Parse.User.logInWithAdditionalAuth(username, password, {mfa: token}).
// Tokens are computed here (RFC 6238 with node:crypto), as an
// authenticator app would.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { startServer, expectParseError } from './server.mjs';

let server;
let Parse;

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(bytes) {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return bits > 0 ? out + ALPHABET[(value << (5 - bits)) & 31] : out;
}

function unbase32(text) {
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text) {
    value = (value << 5) | ALPHABET.indexOf(c);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 255);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** The six-digit SHA-1 TOTP of `secret`, `steps` periods of 30 s from now. */
function totp(secret, steps = 0) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + steps));
  const tag = createHmac('sha1', unbase32(secret)).update(counter).digest();
  const offset = tag[tag.length - 1] & 15;
  return String((tag.readUInt32BE(offset) & 0x7fffffff) % 1e6).padStart(6, '0');
}

/** A token the server does not accept now. */
function wrongToken(secret) {
  const accepted = [-1, 0, 1].map((s) => totp(secret, s));
  return ['000000', '000001', '000002', '000003'].find((t) => !accepted.includes(t));
}

before(async () => {
  server = await startServer({ env: { OXBASE_AUTH__PROVIDERS__MFA__OPTIONS: 'TOTP' } });
  Parse = server.Parse;
  Parse.User.enableUnsafeCurrentUser();
});

after(async () => {
  if (server) await server.stop();
});

describe('multi-factor authentication', () => {
  it('enrols a TOTP secret, then logs in with the password and a token or a recovery code', async () => {
    const username = `mfa-${randomUUID()}`;
    const user = await Parse.User.signUp(username, 'secret');
    const secret = base32(randomBytes(20));
    assert.equal(secret.length, 32);

    await expectParseError(user.save({ authData: { mfa: { secret: secret.slice(0, 16), token: totp(secret) } } }), 141);
    await user.save({ authData: { mfa: { secret, token: totp(secret) } } });
    const recovery = user.get('authDataResponse').mfa.recovery.split(', ');
    assert.equal(recovery.length, 2);
    await user.fetch();
    assert.deepEqual(user.get('authData'), { mfa: { status: 'enabled' } });
    await Parse.User.logOut();

    const missing = await expectParseError(Parse.User.logIn(username, 'secret'), Parse.Error.OTHER_CAUSE);
    assert.equal(missing.message, 'Missing additional authData mfa');
    const wrong = await expectParseError(
      Parse.User.logInWithAdditionalAuth(username, 'secret', { mfa: { token: wrongToken(secret) } }),
      Parse.Error.SCRIPT_FAILED,
    );
    assert.equal(wrong.message, 'Invalid MFA token');

    const loggedIn = await Parse.User.logInWithAdditionalAuth(username, 'secret', { mfa: { token: totp(secret) } });
    assert.equal(loggedIn.id, user.id);
    assert.equal(Parse.User.current().id, user.id);
    assert.deepEqual(loggedIn.get('authData'), { mfa: { status: 'enabled' } });
    await Parse.User.logOut();

    const recovered = await Parse.User.logInWithAdditionalAuth(username, 'secret', { mfa: { token: recovery[0] } });
    assert.equal(recovered.id, user.id);
    await Parse.User.logOut();
    await expectParseError(
      Parse.User.logInWithAdditionalAuth(username, 'secret', { mfa: { token: recovery[0] } }),
      Parse.Error.SCRIPT_FAILED,
    );
    const stored = await new Parse.Query(Parse.User).get(user.id, { useMasterKey: true });
    assert.deepEqual(stored.get('authData').mfa, { secret, recovery: [recovery[1]] });
  });

  it('answers /challenge for a user named by username and password', async () => {
    // The SDK has no call for /challenge; its REST controller sends it as
    // it sends every request.
    const username = `challenge-${randomUUID()}`;
    await Parse.User.signUp(username, 'secret');
    await Parse.User.logOut();
    const request = Parse.CoreManager.getRESTController().request;
    const answer = await request('POST', 'challenge', { username, password: 'secret', challengeData: { mfa: {} } });
    assert.deepEqual(answer, { challengeData: {} });
    const err = await expectParseError(request('POST', 'challenge', { username, password: 'secret' }), Parse.Error.OTHER_CAUSE);
    assert.equal(err.message, 'Nothing to challenge.');
  });
});
