// Parse.Object.saveAll / destroyAll (both go through POST /batch, 20 requests
// per batch by default) and raw /batch requests sent with the SDK's own
// request function.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectParseError, uniqueClass, withoutData } from './server.mjs';

let server;
let Parse;

before(async () => {
  server = await startServer();
  Parse = server.Parse;
});

after(async () => {
  if (server) await server.stop();
});

describe('saveAll', () => {
  it('creates more objects than one batch holds', async () => {
    const C = uniqueClass('SaveAllMany');
    const objs = Array.from({ length: 45 }, (_, i) => new Parse.Object(C, { i, label: `n${i}` }));
    const saved = await Parse.Object.saveAll(objs);
    assert.equal(saved.length, 45);
    for (const o of objs) {
      assert.match(o.id, /^[A-Za-z0-9]{10}$/);
      assert.ok(o.createdAt instanceof Date);
      assert.equal(o.dirty(), false);
    }
    assert.equal(new Set(objs.map((o) => o.id)).size, 45);
    assert.equal(await new Parse.Query(C).count(), 45);
    const found = await new Parse.Query(C).ascending('i').limit(100).find();
    assert.deepEqual(found.map((o) => o.get('label')), objs.map((o) => o.get('label')));
    assert.deepEqual(found.map((o) => o.id), objs.map((o) => o.id));
  });

  it('mixes creates and updates with operators', async () => {
    const C = uniqueClass('SaveAllMixed');
    const a = await new Parse.Object(C, { name: 'a', n: 1, tags: ['x'] }).save();
    const b = await new Parse.Object(C, { name: 'b', n: 10 }).save();
    a.increment('n', 2);
    a.addUnique('tags', 'y');
    b.set('name', 'bee');
    b.unset('n');
    const c = new Parse.Object(C, { name: 'c', n: 100 });
    await Parse.Object.saveAll([a, b, c]);
    assert.equal(a.get('n'), 3);
    assert.deepEqual(a.get('tags'), ['x', 'y']);
    assert.ok(c.id);

    const rows = await new Parse.Query(C).ascending('name').find();
    assert.deepEqual(
      rows.map((o) => [o.get('name'), o.get('n'), o.get('tags')]),
      [
        ['a', 3, ['x', 'y']],
        ['bee', undefined, undefined],
        ['c', 100, undefined],
      ],
    );
  });

  it('update results come back per item: a stale copy learns the server value', async () => {
    const C = uniqueClass('SaveAllStale');
    const a = await new Parse.Object(C, { n: 5, list: [1, 2] }).save();
    const staleA = withoutData(C, a.id);
    staleA.increment('n', 1);
    staleA.add('list', 3);
    const other = new Parse.Object(C, { n: 0 });
    await Parse.Object.saveAll([staleA, other]);
    assert.equal(staleA.get('n'), 6);
    assert.deepEqual(staleA.get('list'), [1, 2, 3]);
  });

  it('one failing item rejects saveAll, the other items are still saved', async () => {
    const C = uniqueClass('SaveAllPartial');
    await new Parse.Object(C, { name: 'seed', score: 1 }).save();
    const good1 = new Parse.Object(C, { name: 'good1', score: 2 });
    const bad = new Parse.Object(C, { name: 'bad', score: 'not a number' });
    const good2 = new Parse.Object(C, { name: 'good2', score: 3 });
    const err = await expectParseError(Parse.Object.saveAll([good1, bad, good2]), Parse.Error.INCORRECT_TYPE);
    assert.equal(err.message, `schema mismatch for ${C}.score; expected Number but got String`);
    assert.ok(good1.id, 'good1 got an id');
    assert.ok(good2.id, 'good2 got an id');
    assert.equal(bad.id, undefined);
    const rows = await new Parse.Query(C).ascending('score').find();
    assert.deepEqual(rows.map((o) => o.get('name')), ['seed', 'good1', 'good2']);
  });

  it('saveAll with an explicit batchSize', async () => {
    const C = uniqueClass('SaveAllBatchSize');
    const objs = Array.from({ length: 7 }, (_, i) => new Parse.Object(C, { i }));
    await Parse.Object.saveAll(objs, { batchSize: 3 });
    assert.equal(await new Parse.Query(C).count(), 7);
  });

  it('saveAll of unsaved children inside arrays saves them first', async () => {
    const Parent = uniqueClass('SaveAllParent');
    const Child = uniqueClass('SaveAllChild');
    const kids = [new Parse.Object(Child, { k: 1 }), new Parse.Object(Child, { k: 2 })];
    const parents = [new Parse.Object(Parent, { kids }), new Parse.Object(Parent, { kid: kids[0] })];
    await Parse.Object.saveAll(parents);
    assert.ok(kids.every((k) => k.id));
    const got = await new Parse.Query(Parent).include('kids').exists('kids').first();
    assert.deepEqual(got.get('kids').map((k) => k.get('k')), [1, 2]);
  });
});

describe('destroyAll', () => {
  it('deletes more objects than one batch holds', async () => {
    const C = uniqueClass('DestroyAllMany');
    const objs = await Parse.Object.saveAll(Array.from({ length: 25 }, (_, i) => new Parse.Object(C, { i })));
    const keep = await new Parse.Object(C, { i: -1, keep: true }).save();
    await Parse.Object.destroyAll(objs);
    assert.equal(await new Parse.Query(C).count(), 1);
    await expectParseError(new Parse.Query(C).get(objs[0].id), Parse.Error.OBJECT_NOT_FOUND);
    await expectParseError(new Parse.Query(C).get(objs[24].id), Parse.Error.OBJECT_NOT_FOUND);
    assert.equal((await new Parse.Query(C).get(keep.id)).get('keep'), true);
  });

  it('a missing object gives an AggregateError holding a 101 for that object', async () => {
    const C = uniqueClass('DestroyAllMissing');
    const [a, b, c] = await Parse.Object.saveAll([
      new Parse.Object(C, { n: 1 }),
      new Parse.Object(C, { n: 2 }),
      new Parse.Object(C, { n: 3 }),
    ]);
    await b.destroy();
    const err = await expectParseError(Parse.Object.destroyAll([a, b, c]), Parse.Error.AGGREGATE_ERROR);
    assert.equal(err.errors.length, 1);
    assert.equal(err.errors[0].code, Parse.Error.OBJECT_NOT_FOUND);
    assert.equal(err.errors[0].message, 'Object not found.');
    assert.equal(err.errors[0].object, b);
    assert.equal(await new Parse.Query(C).count(), 0, 'the others were deleted');
  });
});

describe('raw /batch through the SDK request function', () => {
  const mount = () => new URL(server.serverURL).pathname; // "/parse"

  it('answers every sub-request in order with success or error', async () => {
    const C = uniqueClass('RawBatch');
    const existing = await new Parse.Object(C, { name: 'old', n: 1 }).save();
    const doomed = await new Parse.Object(C, { name: 'doomed' }).save();
    const res = await Parse._request('POST', 'batch', {
      requests: [
        { method: 'POST', path: `${mount()}/classes/${C}`, body: { name: 'new', n: { __op: 'Increment', amount: 4 } } },
        { method: 'PUT', path: `${mount()}/classes/${C}/${existing.id}`, body: { n: { __op: 'Increment', amount: 2 } } },
        { method: 'DELETE', path: `${mount()}/classes/${C}/${doomed.id}`, body: {} },
        { method: 'GET', path: `${mount()}/classes/${C}/${existing.id}` },
        { method: 'PUT', path: `${mount()}/classes/${C}/doesNotExi`, body: { name: 'x' } },
        { method: 'POST', path: `${mount()}/classes/${C}`, body: { n: 'wrong type' } },
      ],
    });
    assert.ok(Array.isArray(res));
    assert.equal(res.length, 6);

    assert.deepEqual(Object.keys(res[0]), ['success']);
    assert.match(res[0].success.objectId, /^[A-Za-z0-9]{10}$/);
    assert.match(res[0].success.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(res[0].success.n, 4);

    assert.deepEqual(Object.keys(res[1]), ['success']);
    assert.match(res[1].success.updatedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(res[1].success.n, 3);

    assert.deepEqual(res[2], { success: {} });

    // Sub-requests run in parallel on Parse Server, so the GET may see n=1 or n=3.
    assert.equal(res[3].success.objectId, existing.id);
    assert.equal(res[3].success.name, 'old');

    assert.deepEqual(res[4], { error: { code: Parse.Error.OBJECT_NOT_FOUND, error: 'Object not found.' } });
    assert.deepEqual(res[5], {
      error: { code: Parse.Error.INCORRECT_TYPE, error: `schema mismatch for ${C}.n; expected Number but got String` },
    });

    const rows = await new Parse.Query(C).ascending('name').find();
    assert.deepEqual(rows.map((o) => [o.get('name'), o.get('n')]), [
      ['new', 4],
      ['old', 3],
    ]);
  });

  it('a batch GET on a class runs a query', async () => {
    const C = uniqueClass('RawBatchFind');
    await Parse.Object.saveAll([new Parse.Object(C, { n: 2 }), new Parse.Object(C, { n: 1 })]);
    const res = await Parse._request('POST', 'batch', {
      requests: [{ method: 'GET', path: `${mount()}/classes/${C}`, body: { order: '-n', where: { n: { $gte: 1 } } } }],
    });
    assert.equal(res.length, 1);
    assert.deepEqual(res[0].success.results.map((r) => r.n), [2, 1]);
  });

  it('a path outside the mount fails the whole batch with 107', async () => {
    const C = uniqueClass('RawBatchBadPath');
    const err = await expectParseError(
      Parse._request('POST', 'batch', {
        requests: [
          { method: 'POST', path: `${mount()}/classes/${C}`, body: { ok: true } },
          { method: 'POST', path: `/classes/${C}`, body: { ok: false } },
        ],
      }),
      Parse.Error.INVALID_JSON,
    );
    assert.equal(err.message, `cannot route batch path /classes/${C}`);
    assert.equal(await new Parse.Query(C).count(), 0, 'nothing was written');
  });

  it('requests that is not an array fails with 107', async () => {
    const err = await expectParseError(Parse._request('POST', 'batch', { requests: 'nope' }), Parse.Error.INVALID_JSON);
    assert.equal(err.message, 'requests must be an array');
  });
});
