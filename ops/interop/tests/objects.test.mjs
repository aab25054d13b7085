// Objects written by Parse Server read, query and update through oxbase, and
// the reverse, on one PostgreSQL database.

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

const everyType = (pointerClass, pointerId) => ({
  name: 'full',
  count: 3,
  ratio: 0.25,
  active: true,
  when: { __type: 'Date', iso: '2024-05-06T07:08:09.123Z' },
  owner: { __type: 'Pointer', className: pointerClass, objectId: pointerId },
  at: { __type: 'GeoPoint', latitude: 48.85, longitude: 2.35 },
  area: { __type: 'Polygon', coordinates: [[0, 0], [0, 1], [1, 1], [0, 0]] },
  doc: { __type: 'File', name: 'photo.png' },
  raw: { __type: 'Bytes', base64: 'aGVsbG8=' },
  meta: { size: { w: 2, h: 3 }, tags: ['x'], at: { __type: 'Date', iso: '2024-01-01T00:00:00.000Z' } },
  tags: ['a', 'b', 1],
  ACL: { '*': { read: true }, u1: { read: true, write: true } },
});

describe('Parse Server writes, oxbase reads', () => {
  let id;
  let owner;
  before(async () => {
    const o = await env.parse.post('classes/Owner', { name: 'o' });
    assert.equal(o.status, 201, JSON.stringify(o.body));
    owner = o.body.objectId;
    const r = await env.parse.post('classes/Thing', everyType('Owner', owner));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    id = r.body.objectId;
  });

  it('reads every field type as Parse Server does', async () => {
    const fromParse = await env.parse.get(`classes/Thing/${id}`);
    const fromOxbase = await env.oxbase.get(`classes/Thing/${id}`);
    assert.equal(fromOxbase.status, 200, JSON.stringify(fromOxbase.body));
    assert.deepEqual(comparable(fromOxbase.body), comparable(fromParse.body));
    assert.match(fromOxbase.body.doc.url, /\/files\/interop-app\/photo.png$/);
  });

  it('queries Parse Server objects', async () => {
    const q = (where, extra = {}) => env.oxbase.get('classes/Thing', { where, ...extra });
    const ids = (r) => r.body.results.map((o) => o.objectId);
    assert.deepEqual(ids(await q({ count: { $gte: 3 }, active: true })), [id]);
    assert.deepEqual(ids(await q({ owner: { __type: 'Pointer', className: 'Owner', objectId: owner } })), [id]);
    assert.deepEqual(ids(await q({ when: { $lt: { __type: 'Date', iso: '2025-01-01T00:00:00.000Z' } } })), [id]);
    assert.deepEqual(ids(await q({ tags: 'b' })), [id]);
    assert.deepEqual(ids(await q({ 'meta.size.w': 2 })), [id]);
    assert.deepEqual(ids(await q({ name: { $regex: '^FU', $options: 'i' } })), [id]);
    assert.deepEqual(ids(await q({ at: { $nearSphere: { __type: 'GeoPoint', latitude: 48.8, longitude: 2.3 }, $maxDistanceInKilometers: 20 } })), [id]);
    const included = await q({ objectId: id }, { include: 'owner' });
    assert.equal(included.body.results[0].owner.name, 'o');
  });

  it('updates Parse Server objects so Parse Server reads the change', async () => {
    const u = await env.oxbase.put(`classes/Thing/${id}`, {
      count: { __op: 'Increment', amount: 2 },
      tags: { __op: 'AddUnique', objects: ['c'] },
      name: 'changed',
      extra: 'new field',
      ACL: { '*': { read: true } },
    }, { master: true });
    assert.equal(u.status, 200, JSON.stringify(u.body));
    // Without the master key the object's ACL (public read, u1 writes)
    // refuses the change, on oxbase as on Parse Server.
    const refused = await env.oxbase.put(`classes/Thing/${id}`, { name: 'anonymous' });
    assert.equal(refused.body.code, 101, JSON.stringify(refused.body));
    const back = await env.parse.get(`classes/Thing/${id}`);
    assert.equal(back.body.count, 5);
    assert.deepEqual(back.body.tags, ['a', 'b', 1, 'c']);
    assert.equal(back.body.name, 'changed');
    assert.equal(back.body.extra, 'new field');
    assert.deepEqual(back.body.ACL, { '*': { read: true } });
    assert.equal(back.body.updatedAt, u.body.updatedAt);
  });
});

describe('oxbase writes, Parse Server reads', () => {
  let id;
  before(async () => {
    const o = await env.oxbase.post('classes/Maker', { name: 'm' });
    const r = await env.oxbase.post('classes/Gadget', everyType('Maker', o.body.objectId));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    id = r.body.objectId;
  });

  it('Parse Server reads every field type as oxbase wrote it', async () => {
    const fromOxbase = await env.oxbase.get(`classes/Gadget/${id}`);
    const fromParse = await env.parse.get(`classes/Gadget/${id}`);
    assert.equal(fromParse.status, 200, JSON.stringify(fromParse.body));
    assert.deepEqual(comparable(fromParse.body), comparable(fromOxbase.body));
  });

  it('Parse Server queries, updates and deletes what oxbase wrote', async () => {
    const found = await env.parse.get('classes/Gadget', { where: { count: 3, 'meta.size.h': 3 } });
    assert.deepEqual(found.body.results.map((o) => o.objectId), [id]);
    // The ACL lets only u1 write, so anyone else is refused, as oxbase wrote it.
    const refused = await env.parse.put(`classes/Gadget/${id}`, { count: 9 });
    assert.equal(refused.status, 404, JSON.stringify(refused.body));
    const u = await env.parse.put(`classes/Gadget/${id}`, { count: { __op: 'Increment', amount: 1 } }, { master: true });
    assert.equal(u.status, 200, JSON.stringify(u.body));
    assert.equal((await env.oxbase.get(`classes/Gadget/${id}`)).body.count, 4);
    assert.equal((await env.parse.del(`classes/Gadget/${id}`, { master: true })).status, 200);
    assert.equal((await env.oxbase.get(`classes/Gadget/${id}`)).status, 404);
  });

  it('Parse Server sees the schema oxbase created', async () => {
    const schema = await env.parse.get('schemas/Gadget', undefined, { master: true });
    assert.equal(schema.status, 200, JSON.stringify(schema.body));
    const f = schema.body.fields;
    assert.deepEqual(f.owner, { type: 'Pointer', targetClass: 'Maker' });
    for (const [field, type] of Object.entries({ count: 'Number', when: 'Date', at: 'GeoPoint', area: 'Polygon', doc: 'File', raw: 'Bytes', meta: 'Object', tags: 'Array', active: 'Boolean' })) {
      assert.equal(f[field]?.type, type, field);
    }
  });
});
