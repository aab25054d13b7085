// Object lifecycle through the Parse JS SDK: save (create and update), fetch,
// Parse.Query.get, update operators, destroy, and every field type the SDK can
// set without other endpoints (Date, Pointer, GeoPoint, Polygon, nested
// objects and arrays).

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

describe('save and fetch', () => {
  it('creates an object and gets an objectId, createdAt and updatedAt', async () => {
    const C = uniqueClass('Create');
    const obj = new Parse.Object(C);
    obj.set({ name: 'first', score: 7, active: true });
    const before = Date.now();
    const saved = await obj.save();
    assert.equal(saved, obj);
    assert.match(obj.id, /^[A-Za-z0-9]{10}$/);
    assert.ok(obj.createdAt instanceof Date);
    assert.ok(obj.updatedAt instanceof Date);
    // The create response has no updatedAt; the SDK copies createdAt.
    assert.equal(obj.updatedAt.getTime(), obj.createdAt.getTime());
    assert.ok(Math.abs(obj.createdAt.getTime() - before) < 60_000, 'createdAt is the server time now');
    assert.equal(obj.dirty(), false);

    const fetched = await new Parse.Query(C).get(obj.id);
    assert.equal(fetched.id, obj.id);
    assert.equal(fetched.get('name'), 'first');
    assert.equal(fetched.get('score'), 7);
    assert.equal(fetched.get('active'), true);
    assert.equal(fetched.createdAt.toISOString(), obj.createdAt.toISOString());
    assert.equal(fetched.updatedAt.toISOString(), obj.createdAt.toISOString());
  });

  it('two creates get different ids', async () => {
    const C = uniqueClass('Ids');
    const a = await new Parse.Object(C, { n: 1 }).save();
    const b = await new Parse.Object(C, { n: 2 }).save();
    assert.notEqual(a.id, b.id);
    assert.equal(await new Parse.Query(C).count(), 2);
  });

  it('updates an existing object and only sends changed fields', async () => {
    const C = uniqueClass('Update');
    const obj = await new Parse.Object(C, { name: 'before', keep: 'kept', score: 1 }).save();
    const createdAt = obj.createdAt.getTime();
    await new Promise((r) => setTimeout(r, 5));
    obj.set('name', 'after');
    obj.set('extra', 42);
    await obj.save();
    assert.ok(obj.updatedAt.getTime() >= createdAt, 'updatedAt moves forward');
    assert.equal(obj.createdAt.getTime(), createdAt, 'createdAt does not change');

    const fresh = await new Parse.Object(C, { objectId: obj.id }).fetch();
    assert.equal(fresh.get('name'), 'after');
    assert.equal(fresh.get('keep'), 'kept');
    assert.equal(fresh.get('score'), 1);
    assert.equal(fresh.get('extra'), 42);
    assert.equal(fresh.createdAt.getTime(), createdAt);
    assert.equal(fresh.updatedAt.getTime(), obj.updatedAt.getTime());
    assert.ok(fresh.updatedAt.getTime() > createdAt, 'stored updatedAt is later than createdAt');
  });

  it('fetch refreshes a stale instance with the stored values', async () => {
    const C = uniqueClass('Fetch');
    const obj = await new Parse.Object(C, { v: 'one' }).save();
    const other = withoutData(C, obj.id);
    other.set('v', 'two');
    await other.save();
    assert.equal(obj.get('v'), 'one');
    await obj.fetch();
    assert.equal(obj.get('v'), 'two');
  });

  it('Parse.Object.fetchAll and fetchAllWithInclude', async () => {
    const C = uniqueClass('FetchAll');
    const T = uniqueClass('FetchAllT');
    const t = await new Parse.Object(T, { label: 'target' }).save();
    const saved = await Parse.Object.saveAll([
      new Parse.Object(C, { n: 1, t }),
      new Parse.Object(C, { n: 2, t }),
      new Parse.Object(C, { n: 3 }),
    ]);
    const stale = saved.map((o) => withoutData(C, o.id));
    const fetched = await Parse.Object.fetchAll(stale);
    assert.deepEqual(fetched.map((o) => o.get('n')), [1, 2, 3]);
    assert.equal(fetched[0].get('t').isDataAvailable(), false);
    const withInc = await Parse.Object.fetchAllWithInclude(saved.map((o) => withoutData(C, o.id)), 't');
    assert.deepEqual(withInc.map((o) => o.get('t') && o.get('t').get('label')), ['target', 'target', undefined]);
  });

  it('fetch of a missing id fails with 101', async () => {
    const C = uniqueClass('FetchMissing');
    await new Parse.Object(C, { a: 1 }).save();
    const ghost = withoutData(C, 'doesNotExi');
    const err = await expectParseError(ghost.fetch(), Parse.Error.OBJECT_NOT_FOUND);
    assert.equal(err.message, 'Object not found.');
  });

  it('destroy removes the object: get and fetch then fail with 101', async () => {
    const C = uniqueClass('Destroy');
    const obj = await new Parse.Object(C, { a: 1 }).save();
    const keep = await new Parse.Object(C, { a: 2 }).save();
    await obj.destroy();
    await expectParseError(new Parse.Query(C).get(obj.id), Parse.Error.OBJECT_NOT_FOUND);
    await expectParseError(withoutData(C, obj.id).fetch(), Parse.Error.OBJECT_NOT_FOUND);
    const rest = await new Parse.Query(C).find();
    assert.deepEqual(rest.map((o) => o.id), [keep.id]);
  });

  it('destroying an already destroyed object fails with 101', async () => {
    const C = uniqueClass('DestroyTwice');
    const obj = await new Parse.Object(C, { a: 1 }).save();
    await obj.destroy();
    await expectParseError(withoutData(C, obj.id).destroy(), Parse.Error.OBJECT_NOT_FOUND);
  });

  it('updating a missing object fails with 101', async () => {
    const C = uniqueClass('UpdateMissing');
    await new Parse.Object(C, { a: 1 }).save();
    const ghost = withoutData(C, 'doesNotExi');
    ghost.set('a', 2);
    await expectParseError(ghost.save(), Parse.Error.OBJECT_NOT_FOUND);
  });
});

describe('update operators', () => {
  it('increment on create starts from the amount', async () => {
    const C = uniqueClass('IncCreate');
    const obj = new Parse.Object(C);
    obj.increment('n', 5);
    await obj.save();
    assert.equal(obj.get('n'), 5);
    const fetched = await new Parse.Query(C).get(obj.id);
    assert.equal(fetched.get('n'), 5);
  });

  it('increment and decrement apply to the stored value and the response carries the result', async () => {
    const C = uniqueClass('Inc');
    const obj = await new Parse.Object(C, { n: 10 }).save();
    // A stale copy that does not know n: the SDK can only learn 13 from the server.
    const stale = withoutData(C, obj.id);
    stale.increment('n', 3);
    await stale.save();
    assert.equal(stale.get('n'), 13);

    const again = withoutData(C, obj.id);
    again.decrement('n', 20);
    await again.save();
    assert.equal(again.get('n'), -7);

    const frac = withoutData(C, obj.id);
    frac.increment('n', 0.5);
    await frac.save();
    assert.equal(frac.get('n'), -6.5);

    await obj.fetch();
    assert.equal(obj.get('n'), -6.5);
  });

  it('increment on a missing field starts from 0', async () => {
    const C = uniqueClass('IncMissing');
    const obj = await new Parse.Object(C, { other: 1 }).save();
    const stale = withoutData(C, obj.id);
    stale.increment('counter');
    await stale.save();
    assert.equal(stale.get('counter'), 1);
    await obj.fetch();
    assert.equal(obj.get('counter'), 1);
  });

  it('add appends (duplicates allowed) and the response carries the whole array', async () => {
    const C = uniqueClass('Add');
    const obj = await new Parse.Object(C, { tags: ['a', 'b'] }).save();
    const stale = withoutData(C, obj.id);
    stale.add('tags', 'a');
    stale.add('tags', 'c');
    await stale.save();
    assert.deepEqual(stale.get('tags'), ['a', 'b', 'a', 'c']);
    await obj.fetch();
    assert.deepEqual(obj.get('tags'), ['a', 'b', 'a', 'c']);
  });

  it('addAll on create makes the array', async () => {
    const C = uniqueClass('AddCreate');
    const obj = new Parse.Object(C);
    obj.addAll('list', [1, 2, 3]);
    await obj.save();
    const fetched = await new Parse.Query(C).get(obj.id);
    assert.deepEqual(fetched.get('list'), [1, 2, 3]);
  });

  it('addUnique only adds values that are not there yet', async () => {
    const C = uniqueClass('AddUnique');
    const obj = await new Parse.Object(C, { tags: ['a', 'b'] }).save();
    const stale = withoutData(C, obj.id);
    stale.addAllUnique('tags', ['b', 'c', 'c', 'd']);
    await stale.save();
    assert.deepEqual(stale.get('tags'), ['a', 'b', 'c', 'd']);
    await obj.fetch();
    assert.deepEqual(obj.get('tags'), ['a', 'b', 'c', 'd']);
  });

  it('addUnique compares objects by value', async () => {
    const C = uniqueClass('AddUniqueObj');
    const obj = await new Parse.Object(C, { items: [{ k: 1 }, { k: 2 }] }).save();
    const stale = withoutData(C, obj.id);
    stale.addAllUnique('items', [{ k: 2 }, { k: 3 }]);
    await stale.save();
    await obj.fetch();
    assert.deepEqual(obj.get('items'), [{ k: 1 }, { k: 2 }, { k: 3 }]);
  });

  it('remove deletes every occurrence and the response carries the whole array', async () => {
    const C = uniqueClass('Remove');
    const obj = await new Parse.Object(C, { tags: ['a', 'b', 'a', 'c', 'd'] }).save();
    const stale = withoutData(C, obj.id);
    stale.removeAll('tags', ['a', 'd', 'zzz']);
    await stale.save();
    assert.deepEqual(stale.get('tags'), ['b', 'c']);
    await obj.fetch();
    assert.deepEqual(obj.get('tags'), ['b', 'c']);
  });

  it('remove of pointers matches by objectId', async () => {
    const C = uniqueClass('RemovePtr');
    const T = uniqueClass('RemovePtrTarget');
    const [t1, t2, t3] = await Parse.Object.saveAll([
      new Parse.Object(T, { i: 1 }),
      new Parse.Object(T, { i: 2 }),
      new Parse.Object(T, { i: 3 }),
    ]);
    const obj = await new Parse.Object(C, { refs: [t1, t2, t3] }).save();
    const stale = withoutData(C, obj.id);
    stale.remove('refs', withoutData(T, t2.id));
    await stale.save();
    const fetched = await new Parse.Query(C).get(obj.id);
    assert.deepEqual(
      fetched.get('refs').map((p) => p.id),
      [t1.id, t3.id],
    );
  });

  it('unset removes the field', async () => {
    const C = uniqueClass('Unset');
    const obj = await new Parse.Object(C, { a: 1, b: 'two', c: [3] }).save();
    obj.unset('b');
    await obj.save();
    assert.equal(obj.has('b'), false);
    const fetched = await new Parse.Query(C).get(obj.id);
    assert.equal(fetched.has('b'), false);
    assert.equal(fetched.get('b'), undefined);
    assert.equal(fetched.get('a'), 1);
    assert.deepEqual(fetched.get('c'), [3]);
    // The row no longer matches an exists query on the field.
    assert.equal(await new Parse.Query(C).exists('b').count(), 0);
    assert.equal(await new Parse.Query(C).doesNotExist('b').count(), 1);
  });

  it('several operators in one save', async () => {
    const C = uniqueClass('MultiOp');
    const obj = await new Parse.Object(C, { n: 1, tags: ['x'], gone: true, name: 'a' }).save();
    const stale = withoutData(C, obj.id);
    stale.increment('n', 4);
    stale.addUnique('tags', 'y');
    stale.unset('gone');
    stale.set('name', 'b');
    await stale.save();
    await obj.fetch();
    assert.equal(obj.get('n'), 5);
    assert.deepEqual(obj.get('tags'), ['x', 'y']);
    assert.equal(obj.has('gone'), false);
    assert.equal(obj.get('name'), 'b');
  });

  it('set on a dotted key updates one nested field and keeps the others', async () => {
    const C = uniqueClass('DottedSet');
    const obj = await new Parse.Object(C, { meta: { color: 'red', size: 3, deep: { x: 1 } } }).save();
    const stale = withoutData(C, obj.id);
    stale.set('meta.color', 'blue');
    stale.increment('meta.size', 2);
    await stale.save();
    const fetched = await new Parse.Query(C).get(obj.id);
    assert.deepEqual(fetched.get('meta'), { color: 'blue', size: 5, deep: { x: 1 } });
  });
});

describe('field types', () => {
  it('Date round-trips with millisecond precision and stays a Date', async () => {
    const C = uniqueClass('Dates');
    const when = new Date('2021-03-04T05:06:07.089Z');
    const obj = await new Parse.Object(C, { when }).save();
    const fetched = await new Parse.Query(C).get(obj.id);
    assert.ok(fetched.get('when') instanceof Date);
    assert.equal(fetched.get('when').toISOString(), '2021-03-04T05:06:07.089Z');
  });

  it('Date inside a nested object and an array is decoded as a Date', async () => {
    const C = uniqueClass('NestedDates');
    const d1 = new Date('2020-01-01T00:00:00.000Z');
    const d2 = new Date('2022-12-31T23:59:59.999Z');
    const obj = await new Parse.Object(C, { info: { at: d1 }, list: [d2] }).save();
    const fetched = await new Parse.Query(C).get(obj.id);
    assert.ok(fetched.get('info').at instanceof Date);
    assert.equal(fetched.get('info').at.toISOString(), d1.toISOString());
    assert.ok(fetched.get('list')[0] instanceof Date);
    assert.equal(fetched.get('list')[0].toISOString(), d2.toISOString());
  });

  it('GeoPoint round-trips', async () => {
    const C = uniqueClass('Geo');
    const obj = await new Parse.Object(C, { loc: new Parse.GeoPoint(40.7128, -74.006) }).save();
    const fetched = await new Parse.Query(C).get(obj.id);
    const loc = fetched.get('loc');
    assert.ok(loc instanceof Parse.GeoPoint);
    assert.equal(loc.latitude, 40.7128);
    assert.equal(loc.longitude, -74.006);
  });

  it('Polygon round-trips', async () => {
    const C = uniqueClass('Poly');
    const coords = [
      [0, 0],
      [0, 1],
      [1, 1],
      [1, 0],
    ];
    const obj = await new Parse.Object(C, { area: new Parse.Polygon(coords) }).save();
    const fetched = await new Parse.Query(C).get(obj.id);
    const area = fetched.get('area');
    assert.ok(area instanceof Parse.Polygon);
    // Parse Server closes the ring when it stores a Polygon (both the Mongo
    // and the Postgres adapter), so the first point comes back at the end.
    assert.deepEqual(area.coordinates, [
      [0, 0],
      [0, 1],
      [1, 1],
      [1, 0],
      [0, 0],
    ]);
  });

  it('nested objects and arrays round-trip exactly', async () => {
    const C = uniqueClass('Nested');
    const data = {
      obj: { a: 1, b: { c: [1, 'two', { d: true }], e: null }, s: 'x' },
      arr: [1, 2.5, 'three', false, [4, [5]], { six: 6 }],
      empty: {},
      emptyArr: [],
      unicode: 'héllo wörld ✓ 日本',
      big: 9007199254740991,
      neg: -0.125,
    };
    const obj = await new Parse.Object(C, data).save();
    const fetched = await new Parse.Query(C).get(obj.id);
    for (const [k, v] of Object.entries(data)) {
      assert.deepEqual(fetched.get(k), v, `field ${k}`);
    }
  });

  it('Pointer: fetch without include gives a pointer, with include gives the object', async () => {
    const Owner = uniqueClass('Owner');
    const Pet = uniqueClass('Pet');
    const owner = await new Parse.Object(Owner, { name: 'Ann' }).save();
    const pet = await new Parse.Object(Pet, { name: 'Rex', owner }).save();

    const plain = await new Parse.Query(Pet).get(pet.id);
    const p = plain.get('owner');
    assert.ok(p instanceof Parse.Object);
    assert.equal(p.className, Owner);
    assert.equal(p.id, owner.id);
    assert.equal(p.isDataAvailable(), false);

    const withInclude = await new Parse.Query(Pet).include('owner').get(pet.id);
    assert.equal(withInclude.get('owner').id, owner.id);
    assert.equal(withInclude.get('owner').get('name'), 'Ann');
    assert.equal(withInclude.get('owner').isDataAvailable(), true);

    const fetched = await withoutData(Pet, pet.id).fetchWithInclude('owner');
    assert.equal(fetched.get('owner').get('name'), 'Ann');
  });

  it('saving an object with an unsaved pointer saves the child first', async () => {
    const Parent = uniqueClass('Parent');
    const Child = uniqueClass('Child');
    const child = new Parse.Object(Child, { label: 'kid' });
    const parent = new Parse.Object(Parent, { child });
    await parent.save();
    assert.ok(child.id, 'child got an id');
    const fetched = await new Parse.Query(Parent).include('child').get(parent.id);
    assert.equal(fetched.get('child').id, child.id);
    assert.equal(fetched.get('child').get('label'), 'kid');
  });

  it('multi-level include a.b resolves both levels', async () => {
    const A = uniqueClass('LvlA');
    const B = uniqueClass('LvlB');
    const Cc = uniqueClass('LvlC');
    const c = await new Parse.Object(Cc, { name: 'leaf' }).save();
    const b = await new Parse.Object(B, { name: 'mid', c }).save();
    const a = await new Parse.Object(A, { name: 'top', b }).save();

    const one = await new Parse.Query(A).include('b').get(a.id);
    assert.equal(one.get('b').get('name'), 'mid');
    assert.equal(one.get('b').get('c').id, c.id);
    assert.equal(one.get('b').get('c').isDataAvailable(), false, 'include b does not resolve b.c');

    const two = await new Parse.Query(A).include('b.c').get(a.id);
    assert.equal(two.get('b').get('name'), 'mid');
    assert.equal(two.get('b').get('c').get('name'), 'leaf');
  });

  it('includeAll resolves every pointer field one level deep', async () => {
    const Root = uniqueClass('IncAll');
    const T = uniqueClass('IncAllT');
    const Deep = uniqueClass('IncAllDeep');
    const deep = await new Parse.Object(Deep, { name: 'deep' }).save();
    const t1 = await new Parse.Object(T, { name: 't1', deep }).save();
    const t2 = await new Parse.Object(T, { name: 't2' }).save();
    const root = await new Parse.Object(Root, { first: t1, second: t2, n: 1 }).save();

    const got = await new Parse.Query(Root).includeAll().get(root.id);
    assert.equal(got.get('first').get('name'), 't1');
    assert.equal(got.get('second').get('name'), 't2');
    assert.equal(got.get('n'), 1);
    assert.equal(got.get('first').get('deep').id, deep.id);
    assert.equal(got.get('first').get('deep').isDataAvailable(), false, 'includeAll is one level');
  });

  it('include works on an array of pointers', async () => {
    const Team = uniqueClass('Team');
    const Player = uniqueClass('Player');
    const players = await Parse.Object.saveAll([
      new Parse.Object(Player, { name: 'p1' }),
      new Parse.Object(Player, { name: 'p2' }),
      new Parse.Object(Player, { name: 'p3' }),
    ]);
    const team = await new Parse.Object(Team, { members: [players[2], players[0], players[1]] }).save();
    const got = await new Parse.Query(Team).include('members').get(team.id);
    assert.deepEqual(
      got.get('members').map((m) => m.get('name')),
      ['p3', 'p1', 'p2'],
    );
  });

  it('include of a pointer to a deleted object drops it (Parse Server replacePointers)', async () => {
    const Holder = uniqueClass('Holder');
    const Gone = uniqueClass('Gone');
    const gone = await new Parse.Object(Gone, { name: 'soon gone' }).save();
    const alive = await new Parse.Object(Gone, { name: 'alive' }).save();
    const holder = await new Parse.Object(Holder, { ref: gone, list: [gone, alive], name: 'h' }).save();
    await gone.destroy();

    const plain = await new Parse.Query(Holder).get(holder.id);
    assert.equal(plain.get('ref').id, gone.id, 'without include the dangling pointer is returned');
    assert.equal(plain.get('list').length, 2);

    const got = await new Parse.Query(Holder).include('ref', 'list').get(holder.id);
    assert.equal(got.get('name'), 'h');
    // Parse Server replaces each pointer with the found object, and a pointer
    // whose object is not found with undefined: the key disappears, and array
    // entries are filtered out.
    assert.equal(got.has('ref'), false);
    assert.deepEqual(
      got.get('list').map((o) => [o.id, o.get('name')]),
      [[alive.id, 'alive']],
    );
  });
});
