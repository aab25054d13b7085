// Links that Parse Server mails work on oxbase: a password reset and an
// email verification issued by Parse Server 9 (with an email adapter that
// keeps the mails in memory) are completed on oxbase's pages, on the same
// PostgreSQL database, and the result holds on both servers.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { APP_ID, startBoth } from './harness.mjs';

const mails = [];
// Parse Server's mail adapter interface: it calls sendVerificationEmail and
// sendPasswordResetEmail when they exist, with the link it built.
const memoryAdapter = {
  sendMail: async () => {},
  sendVerificationEmail: ({ link, user }) => mails.push({ kind: 'verify', link, to: user.get('email') }),
  sendPasswordResetEmail: ({ link, user }) => mails.push({ kind: 'reset', link, to: user.get('email') }),
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function nextMail(kind, to) {
  for (let i = 0; i < 100; i++) {
    const index = mails.findIndex((m) => m.kind === kind && m.to === to);
    if (index >= 0) return mails.splice(index, 1)[0];
    await sleep(50);
  }
  throw new Error(`no ${kind} mail to ${to}`);
}

let env;
before(async () => {
  env = await startBoth({
    parseOptions: (urls) => ({
      appName: 'Interop',
      publicServerURL: urls.parse,
      emailAdapter: memoryAdapter,
      verifyUserEmails: true,
    }),
    // oxbase needs its own [email] to serve the pages; nothing listens on
    // this SMTP port, and these tests follow Parse Server's mails only.
    oxbaseEnv: (urls) => ({
      OXBASE_PUBLIC_SERVER_URL: urls.oxbase,
      OXBASE_EMAIL__SMTP_HOST: '127.0.0.1',
      OXBASE_EMAIL__SMTP_PORT: '9',
      OXBASE_EMAIL__TLS: 'none',
      OXBASE_EMAIL__FROM: 'no-reply@example.com',
      PARSE_SERVER_APP_NAME: 'Interop',
      PARSE_SERVER_VERIFY_USER_EMAILS: 'true',
    }),
  });
});
after(async () => {
  await env?.stop();
});

/** A Parse Server link, pointed at oxbase. */
const onOxbase = (link) => {
  assert.ok(link.startsWith(`${env.parse.url}/apps/${APP_ID}/`), link);
  return env.oxbase.url + link.slice(env.parse.url.length);
};

describe('Parse Server mails, oxbase pages', () => {
  it("a reset link from Parse Server sets the password on oxbase", async () => {
    const signup = await env.parse.post('users', { username: 'rita', password: 'old-pw', email: 'rita@example.com' });
    assert.equal(signup.status, 201, JSON.stringify(signup.body));
    const asked = await env.parse.post('requestPasswordReset', { email: 'rita@example.com' });
    assert.deepEqual([asked.status, asked.body], [200, {}]);
    const { link } = await nextMail('reset', 'rita@example.com');
    const token = new URL(link).searchParams.get('token');

    const form = await fetch(onOxbase(link));
    assert.equal(form.status, 200);
    assert.equal(form.headers.get('x-parse-page-param-token'), token);
    assert.match(await form.text(), /name="new_password"/);

    const done = await fetch(`${env.oxbase.url}/apps/${APP_ID}/request_password_reset`, {
      method: 'POST',
      body: new URLSearchParams({ token, new_password: 'new-pw' }),
      redirect: 'manual',
    });
    assert.equal(done.status, 200);
    assert.match(await done.text(), /password was changed/);

    for (const server of [env.parse, env.oxbase]) {
      const login = await server.post('login', { username: 'rita', password: 'new-pw' });
      assert.equal(login.status, 200, JSON.stringify(login.body));
      const old = await server.post('login', { username: 'rita', password: 'old-pw' });
      assert.equal(old.body.code, 101, JSON.stringify(old.body));
    }
    // The token is spent for Parse Server too.
    const again = await fetch(link);
    assert.match(await again.text(), /invalid/i);
  });

  it('a verification link from Parse Server verifies on oxbase', async () => {
    const signup = await env.parse.post('users', { username: 'vic', password: 'pw', email: 'vic@example.com' });
    assert.equal(signup.status, 201, JSON.stringify(signup.body));
    const { link } = await nextMail('verify', 'vic@example.com');
    const before = await env.parse.get(`users/${signup.body.objectId}`, undefined, { master: true });
    assert.equal(before.body.emailVerified, false);

    const page = await fetch(onOxbase(link));
    assert.equal(page.status, 200);
    assert.match(await page.text(), /email is verified/);
    const afterwards = await env.parse.get(`users/${signup.body.objectId}`, undefined, { master: true });
    assert.equal(afterwards.body.emailVerified, true);
  });

  it('a reset asked of oxbase is completed on Parse Server', async () => {
    const signup = await env.oxbase.post('users', { username: 'otto', password: 'old-pw', email: 'otto@example.com' });
    assert.equal(signup.status, 201, JSON.stringify(signup.body));
    const asked = await env.oxbase.post('requestPasswordReset', { email: 'otto@example.com' });
    assert.deepEqual([asked.status, asked.body], [200, {}]);
    // oxbase's mail goes nowhere here; the token is in the shared table.
    const token = env.psql(`SELECT "_perishable_token" FROM "_User" WHERE username = 'otto'`).trim();
    assert.match(token, /^[A-Za-z0-9]{25}$/);
    const done = await fetch(`${env.parse.url}/apps/${APP_ID}/request_password_reset`, {
      method: 'POST',
      body: new URLSearchParams({ token, new_password: 'new-pw' }),
      redirect: 'manual',
    });
    assert.equal(done.status, 200, await done.text());
    const login = await env.oxbase.post('login', { username: 'otto', password: 'new-pw' });
    assert.equal(login.status, 200, JSON.stringify(login.body));
  });
});
