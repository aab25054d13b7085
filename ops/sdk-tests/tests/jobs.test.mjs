// Background jobs as a Parse app sees them: a job handler registered as a
// webhook served by this test process, Parse.Cloud.startJob, and the
// _JobStatus it leaves, read with the master key.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startServer, expectParseError, APP_ID, MASTER_KEY } from './server.mjs';

const WEBHOOK_KEY = 'sdk-jobs-webhook-key';

let server;
let Parse;
let webhook;
/** Every run the webhook received: { path, headers, body }. */
const runs = [];

/** Each path answers a run with handlers[path](body). */
const handlers = {
  '/report': (body) => ({ success: `report for ${body.payload.month} sent` }),
  '/boom': () => ({ error: 'boom' }),
};

function startWebhook() {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      let data = '';
      req.on('data', (chunk) => (data += chunk));
      req.on('end', () => {
        const body = JSON.parse(data);
        runs.push({ path: req.url, headers: req.headers, body });
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify(handlers[req.url](body)));
      });
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

const url = (path) => `http://127.0.0.1:${webhook.address().port}${path}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A REST call; `master` adds the master key. */
async function rest(method, path, body, { master = true } = {}) {
  const headers = { 'X-Parse-Application-Id': APP_ID, 'Content-Type': 'application/json' };
  if (master) headers['X-Parse-Master-Key'] = MASTER_KEY;
  const res = await fetch(`${server.serverURL}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/** Registers `name` as a job served by the webhook at `path`. */
async function registerJob(name, path) {
  const res = await rest('POST', '/hooks/jobs', { jobName: name, url: url(path) });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(res.body, { jobName: name, url: url(path) });
}

/** The job's _JobStatus once it is no longer running. */
async function finished(statusId) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const status = await new Parse.Query('_JobStatus').get(statusId, { useMasterKey: true });
    if (status.get('status') !== 'running') return status;
    if (Date.now() > deadline) throw new Error(`job ${statusId} still running`);
    await sleep(100);
  }
}

before(async () => {
  webhook = await startWebhook();
  server = await startServer({
    nats: true,
    env: {
      OXBASE_TRIGGERS__WEBHOOK_KEY: WEBHOOK_KEY,
      // A failing job fails at once rather than after its retries.
      OXBASE_JOBS__QUEUES__DEFAULT__MAX_ATTEMPTS: '1',
    },
  });
  Parse = server.Parse;
});

after(async () => {
  if (server) await server.stop();
  if (webhook) webhook.close();
});

describe('Parse.Cloud.startJob', () => {
  it('runs the job on its webhook and records it in _JobStatus', async () => {
    await registerJob('monthlyReport', '/report');
    const statusId = await Parse.Cloud.startJob('monthlyReport', { month: 'May' });
    assert.match(statusId, /^[A-Za-z0-9]{10}$/);

    const status = await finished(statusId);
    assert.equal(status.get('status'), 'succeeded');
    assert.equal(status.get('message'), 'report for May sent');
    assert.equal(status.get('jobName'), 'monthlyReport');
    assert.equal(status.get('source'), 'api');
    assert.deepEqual(status.get('params'), { month: 'May' });
    assert.ok(status.get('finishedAt') instanceof Date);
    assert.ok(status.get('finishedAt') >= status.createdAt);

    const run = runs.find((r) => r.path === '/report');
    assert.equal(run.headers['x-parse-webhook-key'], WEBHOOK_KEY);
    assert.equal(run.headers['idempotency-key'], run.body.id);
    assert.equal(run.body.name, 'monthlyReport');
    assert.deepEqual(run.body.payload, { month: 'May' });
    assert.equal(run.body.attempt, 1);
  });

  it('a job whose handler fails ends failed, with the error as its message', async () => {
    await registerJob('explodes', '/boom');
    const statusId = await Parse.Cloud.startJob('explodes', {});
    const status = await finished(statusId);
    assert.equal(status.get('status'), 'failed');
    assert.equal(status.get('message'), 'boom');
    assert.ok(status.get('finishedAt') instanceof Date);
  });

  it('a job without a handler is refused with 141', async () => {
    const err = await expectParseError(Parse.Cloud.startJob('nobodyHome', {}), Parse.Error.SCRIPT_FAILED);
    assert.equal(err.message, 'Invalid job.');
  });

  it('starting a job takes the master key', async () => {
    await registerJob('guarded', '/report');
    const res = await rest('POST', '/jobs/guarded', { month: 'June' }, { master: false });
    assert.equal(res.status, 403);
    assert.equal(runs.filter((r) => r.body.name === 'guarded').length, 0);
  });

  it('_JobStatus is the master key\'s alone', async () => {
    const statusId = await Parse.Cloud.startJob('monthlyReport', { month: 'July' });
    await finished(statusId);
    const listed = await new Parse.Query('_JobStatus').find({ useMasterKey: true });
    assert.ok(listed.some((s) => s.id === statusId));
    await expectParseError(new Parse.Query('_JobStatus').find(), Parse.Error.OPERATION_FORBIDDEN);
    await expectParseError(new Parse.Query('_JobStatus').get(statusId), Parse.Error.OPERATION_FORBIDDEN);
  });
});
