// Schema changes made by one server show on the other at once. Parse Server
// runs in its default mode (no schema hooks), so nothing tells either server
// that the other changed a class: a class or a field the other server added
// must be picked up on the next request that needs it, with no sleep and no
// restart.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { comparable, startBoth } from './harness.mjs';

let env;
before(async () => {
  env = await startBoth();
});
after(async () => {
  await env?.stop();
});

const pointer = (className, objectId) => ({ __type: 'Pointer', className, objectId });
const byId = (results) => [...results].sort((a, b) => (a.objectId < b.objectId ? -1 : 1));

describe('fields Parse Server adds to a class oxbase has cached', () => {
  it('show on oxbase GET and find at once', async () => {
    const first = await env.oxbase.post('classes/Cached', { name: 'first' });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    // oxbase reads the class, so its schema is now in oxbase's cache.
    const warm = await env.oxbase.get(`classes/Cached/${first.body.objectId}`);
    assert.equal(warm.status, 200, JSON.stringify(warm.body));
    assert.equal((await env.oxbase.get('classes/Cached')).body.results?.length, 1);
    assert.equal((await env.oxbase.get('schemas/Cached', undefined, { master: true })).status, 200);

    // Parse Server saves an object with new columns of several types.
    const added = await env.parse.post('classes/Cached', {
      name: 'second',
      label: 'new string',
      amount: 42,
      when: { __type: 'Date', iso: '2024-02-03T04:05:06.789Z' },
      owner: pointer('Cached', first.body.objectId),
      place: { __type: 'GeoPoint', latitude: 10, longitude: 20 },
      meta: { a: 1 },
      list: ['x', 2],
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    const id = added.body.objectId;
    const fromParse = await env.parse.get(`classes/Cached/${id}`);
    assert.equal(fromParse.status, 200, JSON.stringify(fromParse.body));
    assert.deepEqual(fromParse.body.owner, pointer('Cached', first.body.objectId));

    // No sleep: oxbase's very next GET and find show every new field with
    // its type, as Parse Server reads them.
    const got = await env.oxbase.get(`classes/Cached/${id}`);
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.deepEqual(comparable(got.body), comparable(fromParse.body));

    const found = await env.oxbase.get('classes/Cached');
    assert.equal(found.status, 200, JSON.stringify(found.body));
    const foundOnParse = await env.parse.get('classes/Cached');
    assert.deepEqual(byId(found.body.results).map(comparable), byId(foundOnParse.body.results).map(comparable));

    // The new fields can be queried on oxbase as their types.
    const q = await env.oxbase.get('classes/Cached', { where: { owner: pointer('Cached', first.body.objectId), amount: { $gt: 41 } } });
    assert.deepEqual(q.body.results?.map((o) => o.objectId), [id], JSON.stringify(q.body));
    const q2 = await env.oxbase.get('classes/Cached', { where: { when: { $gte: { __type: 'Date', iso: '2024-01-01T00:00:00.000Z' } } } });
    assert.deepEqual(q2.body.results?.map((o) => o.objectId), [id], JSON.stringify(q2.body));

    // And oxbase's schema shows them too.
    const schema = await env.oxbase.get('schemas/Cached', undefined, { master: true });
    assert.equal(schema.status, 200, JSON.stringify(schema.body));
    assert.deepEqual(schema.body.fields.owner, { type: 'Pointer', targetClass: 'Cached' });
    for (const [field, type] of Object.entries({ label: 'String', amount: 'Number', when: 'Date', place: 'GeoPoint', meta: 'Object', list: 'Array' })) {
      assert.equal(schema.body.fields[field]?.type, type, field);
    }
  });

  it('show on oxbase when Parse Server adds a field to an existing object', async () => {
    const obj = await env.oxbase.post('classes/Cached2', { name: 'x' });
    assert.equal(obj.status, 201, JSON.stringify(obj.body));
    const id = obj.body.objectId;
    assert.equal((await env.oxbase.get(`classes/Cached2/${id}`)).status, 200);
    const put = await env.parse.put(`classes/Cached2/${id}`, { extra: 'from parse', at: { __type: 'Date', iso: '2023-03-04T05:06:07.000Z' } });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const got = await env.oxbase.get(`classes/Cached2/${id}`);
    assert.equal(got.body.extra, 'from parse', JSON.stringify(got.body));
    assert.deepEqual(got.body.at, { __type: 'Date', iso: '2023-03-04T05:06:07.000Z' });
    const found = await env.oxbase.get('classes/Cached2');
    assert.equal(found.body.results?.[0]?.extra, 'from parse', JSON.stringify(found.body));
    assert.deepEqual(found.body.results[0].at, { __type: 'Date', iso: '2023-03-04T05:06:07.000Z' });
  });
});

describe('fields oxbase adds to a class Parse Server has cached', () => {
  it('show on Parse Server GET and find at once', async () => {
    const first = await env.parse.post('classes/Warm', { name: 'first' });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    // Parse Server reads the class, so its schema is in Parse Server's cache.
    assert.equal((await env.parse.get(`classes/Warm/${first.body.objectId}`)).status, 200);
    assert.equal((await env.parse.get('classes/Warm')).body.results.length, 1);

    // Scalar types only: Parse Server, whose cache still holds the old
    // schema, returns a column it does not know as the raw column value,
    // which is right for these types (a Pointer would come back as a bare
    // objectId string until Parse Server reloads its schema).
    const added = await env.oxbase.post('classes/Warm', {
      name: 'second',
      label: 'new string',
      amount: 42,
      flag: true,
      when: { __type: 'Date', iso: '2024-02-03T04:05:06.789Z' },
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    const id = added.body.objectId;
    const fromOxbase = await env.oxbase.get(`classes/Warm/${id}`);
    assert.equal(fromOxbase.status, 200, JSON.stringify(fromOxbase.body));

    const got = await env.parse.get(`classes/Warm/${id}`);
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.deepEqual(got.body, fromOxbase.body);
    const found = await env.parse.get('classes/Warm');
    const foundOnOxbase = await env.oxbase.get('classes/Warm');
    assert.deepEqual(byId(found.body.results), byId(foundOnOxbase.body.results));
    const q = await env.parse.get('classes/Warm', { where: { amount: 42, label: 'new string' } });
    assert.deepEqual(q.body.results.map((o) => o.objectId), [id]);

    // Parse Server's schema endpoint reloads from the database.
    const schema = await env.parse.get('schemas/Warm', undefined, { master: true });
    for (const [field, type] of Object.entries({ label: 'String', amount: 'Number', flag: 'Boolean', when: 'Date' })) {
      assert.equal(schema.body.fields[field]?.type, type, field);
    }
  });
});

// A class the other server created a moment ago is there at once, even when
// the reader asked for it before it existed.
for (const [writerName, readerName] of [
  ['parse', 'oxbase'],
  ['oxbase', 'parse'],
]) {
  describe(`a class ${writerName === 'parse' ? 'Parse Server' : 'oxbase'} creates`, () => {
    const className = writerName === 'parse' ? 'BornOnParse' : 'BornOnOxbase';

    it(`is visible on ${readerName === 'parse' ? 'Parse Server' : 'oxbase'} immediately`, async () => {
      const writer = env[writerName];
      const reader = env[readerName];

      // Before it exists both servers say the same: no objects, no schema.
      const noneFind = await reader.get(`classes/${className}`);
      assert.equal(noneFind.status, 200, JSON.stringify(noneFind.body));
      assert.deepEqual(noneFind.body, { results: [] });
      const noneSchema = await reader.get(`schemas/${className}`, undefined, { master: true });
      assert.equal(noneSchema.status, 400, JSON.stringify(noneSchema.body));
      assert.equal(noneSchema.body.code, 103);
      const allBefore = await reader.get('schemas', undefined, { master: true });
      assert.ok(!allBefore.body.results.some((c) => c.className === className));

      const created = await writer.post(`classes/${className}`, { title: 'hello', n: 1 });
      assert.equal(created.status, 201, JSON.stringify(created.body));

      // No sleep.
      const found = await reader.get(`classes/${className}`);
      assert.equal(found.status, 200, JSON.stringify(found.body));
      assert.deepEqual(found.body.results?.map((o) => [o.objectId, o.title, o.n]), [[created.body.objectId, 'hello', 1]]);
      const got = await reader.get(`classes/${className}/${created.body.objectId}`);
      assert.equal(got.status, 200, JSON.stringify(got.body));
      const schema = await reader.get(`schemas/${className}`, undefined, { master: true });
      assert.equal(schema.status, 200, JSON.stringify(schema.body));
      assert.equal(schema.body.className, className);
      assert.deepEqual(schema.body.fields.title, { type: 'String' });
      assert.deepEqual(schema.body.fields.n, { type: 'Number' });
      const writerSchema = await writer.get(`schemas/${className}`, undefined, { master: true });
      assert.deepEqual(schema.body, writerSchema.body);
      const all = await reader.get('schemas', undefined, { master: true });
      assert.ok(all.body.results.some((c) => c.className === className), JSON.stringify(all.body.results.map((c) => c.className)));
      const count = await reader.get(`classes/${className}`, { count: 1, limit: 0 });
      assert.equal(count.body.count, 1);

      // The reader writes into the class the other server just made.
      const more = await reader.post(`classes/${className}`, { title: 'again', n: 2 });
      assert.equal(more.status, 201, JSON.stringify(more.body));
      const both = await writer.get(`classes/${className}`, { order: 'n' });
      assert.deepEqual(both.body.results.map((o) => o.title), ['hello', 'again']);
    });
  });
}
