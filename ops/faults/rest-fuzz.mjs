// A REST fuzzer, in place of schemathesis (oxbase has no OpenAPI document):
// random and malformed requests over every route family Parse serves, with
// random methods, keys, headers and bodies, against a real `oxbase api` on
// the embedded store and a real nats-server. Every answer must be a status
// below 500 (or a documented 503), with Parse's error body when it is not a
// success, and the process must stay up.
//
//   node ops/faults/rest-fuzz.mjs [seconds]     (OXBASE_BIN, NATS_SERVER)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { freePort, natsServer, oxbase, sleep, teardown } from './lib/procs.mjs';

const SECONDS = Number(process.argv[2] ?? process.env.FUZZ_SECONDS ?? 300);
const CONCURRENCY = 8;

// A deterministic generator, so a failure can be replayed by its seed.
let seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
const firstSeed = seed;
function random() {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
}
const int = (n) => Math.floor(random() * n);
const pick = (items) => items[int(items.length)];

const CLASSES = ['Fuzz', 'GameScore', '_User', '_Role', '_Session', '_Installation', '_PushStatus', '_Audience', 'Bad Name', '$x', ''];
const IDS = () => pick(['abc', 'zzzzzzzzzz', '', '..', '%00', 'ü', 'a'.repeat(300), String(int(1e6))]);

function scalar() {
  return pick([
    null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 63, Number.MAX_SAFE_INTEGER,
    '', 'x', 'ü😀', '\u0000', 'a'.repeat(int(5000)), '$regex', '__proto__', '{"a":1}',
  ]);
}

function typed() {
  return pick([
    { __type: 'Date', iso: pick(['2024-01-01T00:00:00.000Z', 'nope', 5]) },
    { __type: 'Pointer', className: pick(CLASSES), objectId: IDS() },
    { __type: 'Pointer' },
    { __type: 'GeoPoint', latitude: pick([0, 91, 'x']), longitude: pick([0, 181, null]) },
    { __type: 'File', name: pick(['a.txt', '', '../x']) },
    { __type: 'Bytes', base64: pick(['aGk=', '!!!']) },
    { __type: 'Relation', className: pick(CLASSES) },
    { __type: 'Polygon', coordinates: pick([[[0, 0], [1, 1], [0, 1]], [], 'x']) },
    { __type: pick(['Weird', '', null]) },
    { __op: pick(['Increment', 'Add', 'AddUnique', 'Remove', 'Delete', 'AddRelation', 'RemoveRelation', 'Batch', 'Nope']), amount: scalar(), objects: [scalar(), typed0()] },
  ]);
}
const typed0 = () => ({ __type: 'Pointer', className: '_User', objectId: 'u1' });

function value(depth = 0) {
  const roll = int(10);
  if (depth > 4 || roll < 4) return scalar();
  if (roll < 6) return typed();
  if (roll < 8) return Array.from({ length: int(5) }, () => value(depth + 1));
  return object(depth + 1);
}

function key() {
  return pick(['a', 'score', 'name', 'ACL', 'objectId', 'createdAt', '_hashed_password', 'authData', 'a.b', '$or', '$and', '$where', '__op', 'sessionToken', 'username', 'password', 'email', 'x'.repeat(200), '']);
}

function object(depth = 0) {
  const out = {};
  for (let i = int(6); i > 0; i--) out[key()] = value(depth);
  return out;
}

function where(depth = 0) {
  const ops = ['$eq', '$ne', '$lt', '$gt', '$in', '$nin', '$all', '$exists', '$regex', '$options', '$select', '$dontSelect', '$inQuery', '$notInQuery', '$relatedTo', '$nearSphere', '$within', '$geoWithin', '$text', '$containedBy', '$bogus'];
  const out = {};
  for (let i = int(4); i > 0; i--) {
    const roll = int(10);
    if (roll < 2 && depth < 12) out[pick(['$or', '$and', '$nor'])] = Array.from({ length: int(3) }, () => where(depth + 1));
    else if (roll < 4) out[key()] = value(depth);
    else out[key()] = { [pick(ops)]: pick([value(depth), pick(['(a+)+$', '[', '.*'.repeat(50), '(?=x)']), { where: where(depth + 1), className: pick(CLASSES), key: 'a' }]) };
  }
  return out;
}

function query() {
  const params = new URLSearchParams();
  if (random() < 0.7) params.set('where', random() < 0.9 ? JSON.stringify(where()) : pick(['{', 'null', '[]', '1']));
  for (const [name, gen] of [
    ['limit', () => pick(['10', '-1', '1e9', 'x', '99999999999999999999'])],
    ['skip', () => pick(['0', '-5', '200000', 'x'])],
    ['order', () => pick(['a', '-a,b', '$x', '', 'a'.repeat(300)])],
    ['keys', () => pick(['a,b', '', '.', 'a.b.c'])],
    ['include', () => pick(['a', '*', 'a.b.c.d.e.f.g.h.i.j.k.l', Array.from({ length: 60 }, (_, i) => `f${i}`).join(',')])],
    ['count', () => pick(['1', 'true', 'x'])],
    ['explain', () => pick(['true', '1'])],
    ['hint', () => pick(['_id_', 'x'])],
  ]) {
    if (random() < 0.3) params.set(name, gen());
  }
  return params.toString();
}

function route() {
  const cls = encodeURIComponent(pick(CLASSES));
  const id = encodeURIComponent(IDS());
  return pick([
    `classes/${cls}`, `classes/${cls}/${id}`, `classes/${cls}?${query()}`,
    `users`, `users/${id}`, `users/me`, `login`, `logout`, `loginAs`, `verifyPassword`, `requestPasswordReset`, `verificationEmailRequest`, `upgradeToRevocableSession`,
    `sessions`, `sessions/me`, `sessions/${id}`, `roles`, `roles/${id}`,
    `installations`, `installations/${id}`,
    `schemas`, `schemas/${cls}`, `purge/${cls}`,
    `files/${pick(['a.txt', 'x.svg', '', '..%2f..%2fetc', 'ü.png'])}`, `files/faults/${id}`,
    `functions/${pick(['hello', '', 'x'.repeat(300)])}`, `jobs`, `jobs/${id}`,
    `hooks/functions`, `hooks/functions/${id}`, `hooks/triggers`, `hooks/triggers/${cls}/${pick(['beforeSave', 'afterSave', 'bogus'])}`,
    `config`, `batch`, `aggregate/${cls}?${query()}`, `push`, `push_audiences`,
    `serverInfo`, `health`, `events/${cls}`, `graphql`, `scriptlog`, `apps/faults/request_password_reset`,
    `cloud_code/jobs`, `classes/${cls}/${id}/${id}`, `..`, `%`,
  ]);
}

function body(path) {
  const roll = int(20);
  if (roll === 0) return { raw: pick(['{', '[1,2', '"text"', '\u0000\u0001', 'nul', '{"a":' + '['.repeat(3000)]) };
  if (roll === 1) return { raw: '{"a":' + '{"b":'.repeat(200) + '1' + '}'.repeat(201) };
  if (path.startsWith('batch')) {
    return { json: { requests: Array.from({ length: int(60) }, () => ({ method: pick(['POST', 'PUT', 'DELETE', 'GET', 'X']), path: pick(['/parse/classes/Fuzz', '/classes/Fuzz/abc', '/parse/users', 'nope', 5]), body: object() })) } };
  }
  if (path.startsWith('push')) return { json: { where: where(), data: value(), channels: value() } };
  if (path.startsWith('hooks')) return { json: { functionName: scalar(), className: pick(CLASSES), triggerName: scalar(), url: pick(['http://127.0.0.1:1/x', 'ftp://x', scalar()]) } };
  if (path.startsWith('schemas')) return { json: { className: pick(CLASSES), fields: { [key()]: { type: pick(['String', 'Number', 'Pointer', 'Relation', 'Weird', 5]), targetClass: pick(CLASSES) } }, classLevelPermissions: object(), indexes: { i: { [key()]: pick([1, -1, 'text', 'x']) } } } };
  return { json: object() };
}

function headers(base) {
  const out = {};
  if (random() < 0.9) out['X-Parse-Application-Id'] = random() < 0.95 ? 'faults' : pick(['', 'wrong', 'ü']);
  if (random() < 0.3) out['X-Parse-Master-Key'] = random() < 0.8 ? 'faults-master' : 'wrong';
  if (random() < 0.2) out['X-Parse-Session-Token'] = pick(['r:bogus', '', 'x'.repeat(500)]);
  if (random() < 0.1) out['X-Parse-Installation-Id'] = pick(['abc', '']);
  if (random() < 0.1) out['X-Parse-Revocable-Session'] = '1';
  if (random() < 0.1) out['Content-Type'] = pick(['text/plain', 'application/octet-stream', 'multipart/form-data', '']);
  return out;
}

// Parse Server's own answer, status and all, to the account-mail routes of
// a deployment without email settings: the server's configuration, not the
// request, is at fault.
const NO_EMAIL_CONFIG = 'An appName, publicServerURL, and emailAdapter are required';

/** A violation, or null: what a Parse client may always rely on. */
function check(status, text) {
  if (status === 500 && text.includes(NO_EMAIL_CONFIG)) return null;
  if (status >= 500 && status !== 503) return `status ${status}`;
  if (status < 300) return null;
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    return `status ${status} with a body that is not JSON`;
  }
  const parseError = typeof parsed?.code === 'number' && typeof parsed?.error === 'string';
  const unauthorized = parsed?.error === 'unauthorized' || parsed?.error === 'Permission denied';
  return parseError || unauthorized ? null : `status ${status} with ${text.slice(0, 200)}`;
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oxbase-rest-fuzz-'));
  const nats = await natsServer({ bin: process.env.NATS_SERVER, dir, name: 'n0', port: await freePort() }).start();
  const api = await oxbase({
    bin: process.env.OXBASE_BIN,
    dir,
    command: 'api',
    port: await freePort(),
    env: { OXBASE_NATS_URL: nats.url, OXBASE_DATA_DIR: path.join(dir, 'data') },
    label: 'api',
  }).start();
  const statuses = {};
  const violations = [];
  let sent = 0;
  let transportErrors = 0;
  const deadline = Date.now() + SECONDS * 1000;
  const created = [];
  async function worker() {
    while (Date.now() < deadline) {
      // One request in five is well formed, on a class the random
      // requests never name (their master-key schema changes would soon
      // refuse every write), so the write paths are fuzzed past their
      // first checks.
      const wellFormed = random() < 0.2;
      const path = wellFormed
        ? pick(['classes/Kept', created.length ? `classes/Kept/${pick(created)}` : 'classes/Kept'])
        : route();
      const method = wellFormed
        ? (path === 'classes/Kept' ? 'POST' : pick(['PUT', 'GET', 'DELETE']))
        : pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD']);
      const { json, raw } = wellFormed
        ? { json: { score: int(1000), name: pick(['a', 'ü', '', 'x'.repeat(2000)]), tags: [int(9), int(9)], when: { __type: 'Date', iso: '2024-01-01T00:00:00.000Z' } } }
        : ['GET', 'HEAD', 'OPTIONS'].includes(method) && random() < 0.8 ? {} : body(path);
      const request = {
        method,
        headers: { 'Content-Type': 'application/json', ...(wellFormed ? { 'X-Parse-Application-Id': 'faults' } : headers()) },
        signal: AbortSignal.timeout(30_000),
      };
      if (!['GET', 'HEAD'].includes(method) && (json !== undefined || raw !== undefined)) {
        request.body = raw ?? JSON.stringify(json);
      }
      sent += 1;
      try {
        const response = await fetch(`${api.base}/parse/${path}`, request);
        const text = await response.text();
        if (wellFormed && response.status === 201) created.push(JSON.parse(text).objectId);
        statuses[response.status] = (statuses[response.status] ?? 0) + 1;
        // HEAD has no body, and file downloads and the pages under apps/
        // answer browsers (in text or HTML, as Parse Server's do): for
        // these only the status counts.
        const statusOnly = method === 'HEAD' || path.startsWith('apps/') || path.startsWith('files/faults/');
        const serverError = response.status >= 500 && response.status !== 503;
        const problem = statusOnly ? (serverError ? `status ${response.status}` : null) : check(response.status, text);
        if (problem) violations.push({ problem, method, path, body: request.body?.slice(0, 300) });
      } catch (err) {
        transportErrors += 1;
        if (!api.alive) {
          violations.push({ problem: `the process died: ${err.message}`, method, path });
          return;
        }
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const alive = api.alive && (await fetch(`${api.base}/health`).then((r) => r.ok, () => false));
  const report = { seconds: SECONDS, seed: firstSeed, sent, statuses, transportErrors, alive, violations: violations.length, examples: violations.slice(0, 10) };
  console.log(JSON.stringify(report, null, 2));
  await api.terminate();
  await nats.terminate();
  teardown();
  await sleep(100);
  process.exit(violations.length === 0 && alive ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  teardown();
  process.exit(2);
});
