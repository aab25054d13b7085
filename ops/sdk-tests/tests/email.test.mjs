// Parse.User.requestPasswordReset and Parse.User.requestEmailVerification
// against oxbase, which mails to a local SMTP sink (ops/smtp-sink.py, on
// aiosmtpd, which `bash ops/test.sh` installs into .oxbase/tools); the test
// then follows the mailed links as a browser would.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, APP_ID } from './server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startSink() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'oxbase-smtp-'));
  const port = await freePort();
  const child = spawn('python3', [path.join(root, 'ops/smtp-sink.py'), String(port), dir], {
    env: { ...process.env, PYTHONPATH: path.join(root, '.oxbase/tools') },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const ready = await Promise.race([
    new Promise((resolve) => lines.once('line', (line) => resolve(line === 'ready'))),
    sleep(20_000).then(() => false),
  ]);
  if (!ready) throw new Error('the SMTP sink did not start: bash ops/test.sh installs aiosmtpd into .oxbase/tools');
  let seen = 0;
  return {
    port,
    async nextMail() {
      for (let i = 0; i < 200; i++) {
        try {
          const text = await readFile(path.join(dir, `${seen + 1}.eml`), 'utf8');
          seen += 1;
          return text;
        } catch {
          await sleep(50);
        }
      }
      throw new Error('no mail arrived');
    },
    async stop() {
      child.kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// Undoes quoted-printable, which lettre uses for lines as long as a link.
const decoded = (mail) =>
  mail.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
const linkIn = (mail) => {
  const text = decoded(mail);
  return text.slice(text.indexOf('http://')).split(/\s/)[0];
};

let sink;
let server;
let Parse;

before(async () => {
  sink = await startSink();
  server = await startServer({
    env: ({ serverURL }) => ({
      OXBASE_PUBLIC_SERVER_URL: serverURL,
      OXBASE_EMAIL__SMTP_HOST: '127.0.0.1',
      OXBASE_EMAIL__SMTP_PORT: String(sink.port),
      OXBASE_EMAIL__TLS: 'none',
      OXBASE_EMAIL__FROM: 'SDK Tests <no-reply@example.com>',
      PARSE_SERVER_APP_NAME: 'SDK Tests',
      PARSE_SERVER_VERIFY_USER_EMAILS: 'true',
    }),
  });
  Parse = server.Parse;
});

after(async () => {
  if (server) await server.stop();
  if (sink) await sink.stop();
});

describe('account mails', () => {
  it('requestEmailVerification mails a link that verifies the email', async () => {
    const user = new Parse.User();
    await user.signUp({ username: 'vera', password: 'pw-1', email: 'vera@example.com' });
    assert.equal(user.get('emailVerified'), undefined);
    // Users are private: read as the user.
    const session = { sessionToken: user.getSessionToken() };
    await user.fetch(session);
    assert.equal(user.get('emailVerified'), false);
    assert.match(await sink.nextMail(), /To: vera@example.com/);

    await Parse.User.requestEmailVerification('vera@example.com');
    const link = linkIn(await sink.nextMail());
    assert.ok(link.startsWith(`${server.serverURL}/apps/${APP_ID}/verify_email?token=`), link);
    const page = await fetch(link);
    assert.equal(page.status, 200);
    await user.fetch(session);
    assert.equal(user.get('emailVerified'), true);
  });

  it('requestPasswordReset mails a link that sets a new password', async () => {
    const user = new Parse.User();
    await user.signUp({ username: 'rex', password: 'old-pw', email: 'rex@example.com' });
    await sink.nextMail(); // the verification mail
    await Parse.User.logOut();

    await Parse.User.requestPasswordReset('rex@example.com');
    const link = linkIn(await sink.nextMail());
    const token = new URL(link).searchParams.get('token');
    const form = await fetch(link);
    assert.equal(form.status, 200);
    const done = await fetch(`${server.serverURL}/apps/${APP_ID}/request_password_reset`, {
      method: 'POST',
      body: new URLSearchParams({ token, new_password: 'new-pw' }),
    });
    assert.equal(done.status, 200);

    const back = await Parse.User.logIn('rex', 'new-pw');
    assert.equal(back.id, user.id);
    await assert.rejects(Parse.User.logIn('rex', 'old-pw'), (err) => err.code === Parse.Error.OBJECT_NOT_FOUND);
    // Unknown emails succeed too, as on Parse Server.
    await Parse.User.requestPasswordReset('nobody@example.com');
  });
});
