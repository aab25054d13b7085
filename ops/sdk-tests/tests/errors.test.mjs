// Errors as the SDK reports them: the Parse.Error code and message a client
// sees, and that nothing was stored when a write is refused.

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

describe('type mismatch (111)', () => {
  it('a String into a Number field, on create and on update', async () => {
    const C = uniqueClass('TypeNum');
    const obj = await new Parse.Object(C, { score: 1 }).save();

    const bad = new Parse.Object(C, { score: 'ten' });
    const err = await expectParseError(bad.save(), Parse.Error.INCORRECT_TYPE);
    assert.equal(err.message, `schema mismatch for ${C}.score; expected Number but got String`);
    assert.equal(bad.id, undefined);

    obj.set('score', 'eleven');
    const err2 = await expectParseError(obj.save(), Parse.Error.INCORRECT_TYPE);
    assert.equal(err2.message, `schema mismatch for ${C}.score; expected Number but got String`);

    assert.equal(await new Parse.Query(C).count(), 1);
    const stored = await new Parse.Query(C).get(obj.id);
    assert.equal(stored.get('score'), 1);
  });

  it('other type pairs name both types', async () => {
    const C = uniqueClass('TypePairs');
    await new Parse.Object(C, {
      s: 'text',
      b: true,
      d: new Date('2020-01-01T00:00:00.000Z'),
      arr: [1],
      obj: { a: 1 },
      g: new Parse.GeoPoint(1, 2),
    }).save();
    const cases = [
      ['s', 5, 'String', 'Number'],
      ['b', 'yes', 'Boolean', 'String'],
      ['d', '2020-01-01', 'Date', 'String'],
      ['arr', { a: 1 }, 'Array', 'Object'],
      ['obj', [1, 2], 'Object', 'Array'],
      ['g', 12, 'GeoPoint', 'Number'],
      ['s', new Date('2020-01-01T00:00:00.000Z'), 'String', 'Date'],
    ];
    for (const [field, value, expected, got] of cases) {
      const err = await expectParseError(new Parse.Object(C, { [field]: value }).save(), Parse.Error.INCORRECT_TYPE);
      assert.equal(err.message, `schema mismatch for ${C}.${field}; expected ${expected} but got ${got}`, `field ${field}`);
    }
    assert.equal(await new Parse.Query(C).count(), 1, 'no refused object was stored');
  });

  it('a pointer to another class', async () => {
    const C = uniqueClass('TypePtr');
    const A = uniqueClass('TypePtrA');
    const B = uniqueClass('TypePtrB');
    const a = await new Parse.Object(A, { n: 1 }).save();
    const b = await new Parse.Object(B, { n: 1 }).save();
    await new Parse.Object(C, { ref: a }).save();
    const err = await expectParseError(new Parse.Object(C, { ref: b }).save(), Parse.Error.INCORRECT_TYPE);
    assert.equal(err.message, `schema mismatch for ${C}.ref; expected Pointer<${A}> but got Pointer<${B}>`);
  });

  it('update operators on a field of another type', async () => {
    const C = uniqueClass('TypeOps');
    const obj = await new Parse.Object(C, { name: 'x', list: ['a'] }).save();

    const inc = withoutData(C, obj.id);
    inc.increment('name');
    const e1 = await expectParseError(inc.save(), Parse.Error.INCORRECT_TYPE);
    assert.equal(e1.message, `schema mismatch for ${C}.name; expected String but got Number`);

    const add = withoutData(C, obj.id);
    add.add('name', 'y');
    const e2 = await expectParseError(add.save(), Parse.Error.INCORRECT_TYPE);
    assert.equal(e2.message, `schema mismatch for ${C}.name; expected String but got Array`);

    const inc2 = withoutData(C, obj.id);
    inc2.increment('list');
    const e3 = await expectParseError(inc2.save(), Parse.Error.INCORRECT_TYPE);
    assert.equal(e3.message, `schema mismatch for ${C}.list; expected Array but got Number`);

    await obj.fetch();
    assert.equal(obj.get('name'), 'x');
    assert.deepEqual(obj.get('list'), ['a']);
  });
});

describe('invalid names', () => {
  it('a field name the server refuses (105)', async () => {
    const C = uniqueClass('BadField');
    await new Parse.Object(C, { ok: 1 }).save();
    // The SDK lets a leading underscore through; Parse Server does not.
    const err = await expectParseError(new Parse.Object(C, { _secret: 1 }).save(), Parse.Error.INVALID_KEY_NAME);
    assert.equal(err.message, 'Invalid field name: _secret.');

    const obj = new Parse.Object(C);
    obj.set('bad-name', 1, { ignoreValidation: true });
    const err2 = await expectParseError(obj.save(), Parse.Error.INVALID_KEY_NAME);
    assert.equal(err2.message, 'Invalid field name: bad-name.');
    assert.equal(await new Parse.Query(C).count(), 1);
  });

  it('an invalid field name on update (105)', async () => {
    const C = uniqueClass('BadFieldUpdate');
    const obj = await new Parse.Object(C, { ok: 1 }).save();
    obj.set('_hidden', 2);
    const err = await expectParseError(obj.save(), Parse.Error.INVALID_KEY_NAME);
    assert.equal(err.message, 'Invalid field name: _hidden.');
  });

  it('the SDK itself refuses some names before sending (105)', async () => {
    const obj = new Parse.Object(uniqueClass('SdkBad'));
    assert.throws(
      () => obj.set('bad name', 1),
      (e) => e instanceof Parse.Error && e.code === Parse.Error.INVALID_KEY_NAME,
    );
  });

  it('nested keys with $ or . are refused (121)', async () => {
    const C = uniqueClass('BadNested');
    const err = await expectParseError(
      new Parse.Object(C, { obj: { 'a.b': 1 } }).save(),
      Parse.Error.INVALID_NESTED_KEY,
    );
    assert.equal(err.message, "Nested keys should not contain the '$' or '.' characters");
    await expectParseError(new Parse.Object(C, { obj: { deep: { $x: 1 } } }).save(), Parse.Error.INVALID_NESTED_KEY);
  });

  it('an invalid key name in a query (105)', async () => {
    const C = uniqueClass('BadQueryKey');
    await new Parse.Object(C, { a: 1 }).save();
    const query = new Parse.Query(C);
    query.equalTo('$where', 'sleep(1000)');
    const err = await expectParseError(query.find(), Parse.Error.INVALID_KEY_NAME);
    assert.equal(err.message, 'Invalid key name: $where');
  });

  it('sorting on an invalid field name (105)', async () => {
    const C = uniqueClass('BadSort');
    await new Parse.Object(C, { a: 1 }).save();
    const err = await expectParseError(new Parse.Query(C).ascending('bad-name').find(), Parse.Error.INVALID_KEY_NAME);
    assert.equal(err.message, 'Invalid field name: bad-name.');
  });
});

describe('not found (101)', () => {
  it('Parse.Query.get of a missing id', async () => {
    const C = uniqueClass('Missing');
    await new Parse.Object(C, { a: 1 }).save();
    const err = await expectParseError(new Parse.Query(C).get('nOtThErE00'), Parse.Error.OBJECT_NOT_FOUND);
    assert.equal(err.message, 'Object not found.');
  });

  it('Parse.Query.get on a class that has no rows', async () => {
    await expectParseError(new Parse.Query(uniqueClass('NeverSaved')).get('nOtThErE00'), Parse.Error.OBJECT_NOT_FOUND);
  });

  it('fetch of a missing id comes back from GET /classes/C/id as 101', async () => {
    const C = uniqueClass('MissingFetch');
    await new Parse.Object(C, { a: 1 }).save();
    const err = await expectParseError(withoutData(C, 'nOtThErE00').fetch(), Parse.Error.OBJECT_NOT_FOUND);
    assert.equal(err.message, 'Object not found.');
  });

  it('get with a constraint that excludes the object', async () => {
    const C = uniqueClass('MissingConstrained');
    const obj = await new Parse.Object(C, { a: 1 }).save();
    await expectParseError(new Parse.Query(C).equalTo('a', 2).get(obj.id), Parse.Error.OBJECT_NOT_FOUND);
    const found = await new Parse.Query(C).equalTo('a', 1).get(obj.id);
    assert.equal(found.id, obj.id);
  });
});

describe('malformed queries', () => {
  it('a bad regex option (102)', async () => {
    const C = uniqueClass('BadRegex');
    await new Parse.Object(C, { s: 'abc' }).save();
    const err = await expectParseError(new Parse.Query(C).matches('s', 'a', 'q').find(), Parse.Error.INVALID_QUERY);
    assert.equal(err.message, 'Bad $options value for query: q');
  });

  it('$in with a non-array value (107)', async () => {
    const C = uniqueClass('BadIn');
    await new Parse.Object(C, { n: 1 }).save();
    const query = new Parse.Query(C);
    query._addCondition('n', '$in', 1);
    const err = await expectParseError(query.find(), Parse.Error.INVALID_JSON);
    assert.equal(err.message, 'bad $in value');
  });

  it('querying on ACL (102)', async () => {
    const C = uniqueClass('QueryAcl');
    await new Parse.Object(C, { n: 1 }).save();
    const query = new Parse.Query(C);
    query.equalTo('ACL', { '*': { read: true } });
    const err = await expectParseError(query.find(), Parse.Error.INVALID_QUERY);
    assert.equal(err.message, 'Cannot query on ACL.');
  });

  it('$or that is not an array (102)', async () => {
    const C = uniqueClass('BadOr');
    await new Parse.Object(C, { n: 1 }).save();
    const query = new Parse.Query(C);
    query._where.$or = { n: 1 };
    const err = await expectParseError(query.find(), Parse.Error.INVALID_QUERY);
    assert.equal(err.message, 'Bad $or format - use an array value.');
  });
});
