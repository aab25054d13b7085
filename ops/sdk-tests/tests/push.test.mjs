// Parse.Push.send as a Parse app calls it, on `oxbase all` with NATS: the
// push service sends to a fake FCM HTTP v1 server run by this test process
// (its OAuth2 token endpoint checks the service account's signed JWT), and
// the _PushStatus is read with the master key.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const KEY_FILE = path.resolve(here, '../../push-fakes/fixtures/fcm-service-account-key.pem');
const PROJECT = 'sdk-push';
const ACCOUNT = 'push@sdk-push.iam.gserviceaccount.com';

let server;
let Parse;
let fcm;
let dir;
/** Push data received, by device token. */
const received = new Map();

function startFcm(publicKey) {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        const answer = (status, value) => {
          res.writeHead(status, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify(value));
        };
        if (req.url === '/token') {
          const assertion = new URLSearchParams(body).get('assertion') ?? '';
          const [header, claims, signature] = assertion.split('.');
          const valid = crypto.verify(
            'RSA-SHA256',
            Buffer.from(`${header}.${claims}`),
            publicKey,
            Buffer.from(signature ?? '', 'base64url'),
          );
          const iss = JSON.parse(Buffer.from(claims ?? '', 'base64url').toString() || '{}').iss;
          if (!valid || iss !== ACCOUNT) return answer(400, { error: 'invalid_grant' });
          return answer(200, { access_token: 'sdk-access', expires_in: 3599, token_type: 'Bearer' });
        }
        if (req.url === `/v1/projects/${PROJECT}/messages:send` && req.headers.authorization === 'Bearer sdk-access') {
          const { message } = JSON.parse(body);
          received.set(message.token, JSON.parse(message.data.data));
          return answer(200, { name: `projects/${PROJECT}/messages/1` });
        }
        answer(401, { error: { code: 401, status: 'UNAUTHENTICATED' } });
      });
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

before(async () => {
  const pem = await readFile(KEY_FILE, 'utf8');
  fcm = await startFcm(crypto.createPublicKey(pem));
  const base = `http://127.0.0.1:${fcm.address().port}`;
  dir = await mkdtemp(path.join(os.tmpdir(), 'oxbase-sdk-push-'));
  const account = path.join(dir, 'service-account.json');
  await writeFile(account, JSON.stringify({
    type: 'service_account',
    project_id: PROJECT,
    private_key: pem,
    client_email: ACCOUNT,
    token_uri: `${base}/token`,
  }));
  server = await startServer({
    nats: true,
    env: { OXBASE_PUSH__FCM__SERVICE_ACCOUNT: account, OXBASE_PUSH__FCM__ENDPOINT: base },
  });
  Parse = server.Parse;
  const devices = [
    ['sdk-news-1', ['news']],
    ['sdk-news-2', ['news', 'sport']],
    ['sdk-sport', ['sport']],
  ];
  for (const [token, channels] of devices) {
    await new Parse.Installation({ deviceType: 'android', installationId: `i-${token}`, deviceToken: token, channels }).save();
  }
});

after(async () => {
  if (server) await server.stop();
  if (fcm) fcm.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function finished(statusId) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const status = await new Parse.Query('_PushStatus').get(statusId, { useMasterKey: true });
    if (status.get('status') === 'succeeded') return status;
    if (Date.now() > deadline) throw new Error(`push never finished: ${JSON.stringify(status.toJSON())}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('Parse.Push.send', () => {
  it('sends to a channel', async () => {
    received.clear();
    const statusId = await Parse.Push.send({ channels: ['news'], data: { alert: 'Breaking' } }, { useMasterKey: true });
    assert.match(statusId, /^[A-Za-z0-9]{10}$/);
    const status = await finished(statusId);
    assert.equal(status.get('numSent'), 2);
    assert.deepEqual(status.get('sentPerType'), { android: 2 });
    assert.deepEqual([...received.keys()].sort(), ['sdk-news-1', 'sdk-news-2']);
    assert.deepEqual(received.get('sdk-news-1'), { alert: 'Breaking' });
  });

  it('sends to a where query', async () => {
    received.clear();
    const where = new Parse.Query(Parse.Installation).equalTo('channels', 'sport').notEqualTo('deviceToken', 'sdk-news-2');
    const statusId = await Parse.Push.send({ where, data: { alert: 'Goal', title: 'Match' } }, { useMasterKey: true });
    const status = await finished(statusId);
    assert.equal(status.get('numSent'), 1);
    assert.equal(status.get('title'), 'Match');
    assert.deepEqual([...received.keys()], ['sdk-sport']);
    assert.deepEqual(received.get('sdk-sport'), { alert: 'Goal', title: 'Match' });
  });
});
