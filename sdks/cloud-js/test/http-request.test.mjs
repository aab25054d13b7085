// Parse.Cloud.httpRequest against a local HTTP server: bodies, params,
// basic auth, redirects, cookies, and rejection with the response.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { httpRequest } = require('../src/http-request.js');

let server;
let base;

before(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/redirect') {
        res.writeHead(302, { Location: '/echo?from=redirect' }).end();
        return;
      }
      if (url.pathname === '/missing') {
        res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"no"}');
        return;
      }
      res.setHeader('Set-Cookie', ['a=1', 'b=2']);
      res.setHeader('Content-Type', 'application/json');
      res.end(
        JSON.stringify({
          method: req.method,
          query: Object.fromEntries(url.searchParams),
          type: req.headers['content-type'] ?? null,
          auth: req.headers.authorization ?? null,
          body,
        }),
      );
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => new Promise((resolve) => server.close(resolve)));

test('a GET with params answers status, headers, text, data and cookies', async () => {
  const res = await httpRequest({ url: `${base}/echo?x=1`, params: { y: 'two' } });
  assert.equal(res.status, 200);
  assert.deepEqual(res.data.query, { x: '1', y: 'two' });
  assert.equal(res.data.method, 'GET');
  assert.equal(JSON.parse(res.text).method, 'GET');
  assert.equal(res.headers['content-type'], 'application/json');
  assert.deepEqual(res.cookies, ['a=1', 'b=2']);
  assert.ok(Buffer.isBuffer(res.buffer));
});

test('an object body is form-encoded by default and JSON when the type says so', async () => {
  const form = await httpRequest({ method: 'POST', url: `${base}/echo`, body: { a: 1, b: 'x y' } });
  assert.equal(form.data.type, 'application/x-www-form-urlencoded');
  assert.equal(form.data.body, 'a=1&b=x%20y');
  const json = await httpRequest({
    method: 'POST',
    url: `${base}/echo`,
    headers: { 'Content-Type': 'application/json' },
    body: { a: [1, 2] },
  });
  assert.deepEqual(JSON.parse(json.data.body), { a: [1, 2] });
});

test('credentials in the URL become basic auth', async () => {
  const url = new URL(`${base}/echo`);
  url.username = 'ann';
  url.password = 'p w';
  const res = await httpRequest({ url: url.toString() });
  assert.equal(res.data.auth, `Basic ${Buffer.from('ann:p w').toString('base64')}`);
});

test('redirects are followed only when asked', async () => {
  const kept = await httpRequest({ url: `${base}/redirect` });
  assert.equal(kept.status, 302);
  assert.equal(kept.headers.location, '/echo?from=redirect');
  const followed = await httpRequest({ url: `${base}/redirect`, followRedirects: true });
  assert.deepEqual(followed.data.query, { from: 'redirect' });
});

test('a 404 rejects with the response', async () => {
  await assert.rejects(httpRequest({ url: `${base}/missing` }), (res) => {
    assert.equal(res.status, 404);
    assert.deepEqual(res.data, { error: 'no' });
    return true;
  });
});
