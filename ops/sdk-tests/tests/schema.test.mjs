// Parse.Schema: creating, reading, changing and deleting classes through
// /schemas with the master key, as Parse Dashboard and scripts do.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectParseError, uniqueClass, APP_ID } from './server.mjs';

let server;
let Parse;

before(async () => {
  server = await startServer();
  Parse = server.Parse;
});

after(async () => {
  if (server) await server.stop();
});

const DEFAULT_FIELDS = {
  objectId: { type: 'String' },
  createdAt: { type: 'Date' },
  updatedAt: { type: 'Date' },
  ACL: { type: 'ACL' },
};

const OPEN_CLP = {
  find: { '*': true },
  count: { '*': true },
  get: { '*': true },
  create: { '*': true },
  update: { '*': true },
  delete: { '*': true },
  addField: { '*': true },
  protectedFields: { '*': [] },
};

describe('Parse.Schema', () => {
  it('creates, reads, updates, lists and deletes a class', async () => {
    const C = uniqueClass('Schema');
    const schema = new Parse.Schema(C);
    schema
      .addString('title', { required: true, defaultValue: 'untitled' })
      .addNumber('score', { defaultValue: 0 })
      .addPointer('owner', '_User')
      .addRelation('fans', '_User')
      .addIndex('by_title', { title: 1 });
    const created = await schema.save();
    assert.deepEqual(created, {
      className: C,
      fields: {
        ...DEFAULT_FIELDS,
        title: { type: 'String', required: true, defaultValue: 'untitled' },
        score: { type: 'Number', defaultValue: 0 },
        owner: { type: 'Pointer', targetClass: '_User' },
        fans: { type: 'Relation', targetClass: '_User' },
      },
      classLevelPermissions: OPEN_CLP,
      indexes: { by_title: { title: 1 } },
    });

    const fetched = await new Parse.Schema(C).get();
    assert.deepEqual(fetched, created);

    // Saving objects follows the declared types.
    const obj = await new Parse.Object(C, { title: 'a', score: 3 }).save();
    const err = await expectParseError(new Parse.Object(C, { score: 'high' }).save(), Parse.Error.INCORRECT_TYPE);
    assert.equal(err.message, `schema mismatch for ${C}.score; expected Number but got String`);

    const update = new Parse.Schema(C);
    update.addDate('due').addGeoPoint('place').deleteField('score').deleteIndex('by_title');
    const updated = await update.update();
    assert.deepEqual(updated.fields, {
      ...DEFAULT_FIELDS,
      title: { type: 'String', required: true, defaultValue: 'untitled' },
      owner: { type: 'Pointer', targetClass: '_User' },
      fans: { type: 'Relation', targetClass: '_User' },
      due: { type: 'Date' },
      place: { type: 'GeoPoint' },
    });
    assert.equal(updated.indexes, undefined);
    // The deleted field's value is gone from the object.
    const again = await new Parse.Query(C).get(obj.id);
    assert.equal(again.get('score'), undefined);
    assert.equal(again.get('title'), 'a');

    const all = await Parse.Schema.all();
    const names = all.map((s) => s.className);
    assert.ok(names.includes(C), names.join(','));
    assert.ok(names.includes('_User') && names.includes('_Role'), names.join(','));
    assert.deepEqual(
      all.find((s) => s.className === C),
      updated,
    );

    // A class with objects cannot be deleted; once empty it can.
    const notEmpty = await expectParseError(new Parse.Schema(C).delete(), Parse.Error.INVALID_SCHEMA_OPERATION);
    assert.equal(notEmpty.message, `Class ${C} is not empty, contains 1 objects, cannot drop schema.`);
    await obj.destroy();
    assert.deepEqual(await new Parse.Schema(C).delete(), {});
    const gone = await expectParseError(new Parse.Schema(C).get(), Parse.Error.INVALID_CLASS_NAME);
    assert.equal(gone.message, `Class ${C} does not exist.`);
    const listed = (await Parse.Schema.all()).map((s) => s.className);
    assert.ok(!listed.includes(C), listed.join(','));
  });

  it('sets class-level permissions that take effect', async () => {
    const C = uniqueClass('SchemaClp');
    const schema = new Parse.Schema(C);
    schema.addString('text');
    schema.setCLP({ find: { '*': true }, get: { '*': true }, create: { 'role:admin': true } });
    const saved = await schema.save();
    assert.deepEqual(saved.classLevelPermissions, {
      find: { '*': true },
      get: { '*': true },
      count: {},
      create: { 'role:admin': true },
      update: {},
      delete: {},
      addField: {},
      protectedFields: {},
    });
    // Without the master key, creating is now refused.
    const err = await expectParseError(
      new Parse.Object(C, { text: 'x' }).save(null, { useMasterKey: false }),
      Parse.Error.OPERATION_FORBIDDEN,
    );
    assert.equal(err.message, `Permission denied for action create on class ${C}.`);
    await new Parse.Object(C, { text: 'x' }).save(null, { useMasterKey: true });

    const bad = new Parse.Schema(C);
    bad.setCLP({ find: { '*': 1 } });
    const invalid = await expectParseError(bad.update(), Parse.Error.INVALID_JSON);
    assert.equal(invalid.message, "'1' is not a valid value for class level permissions find:*:1");
  });

  it('answers Parse errors for bad requests', async () => {
    const C = uniqueClass('SchemaErr');
    await new Parse.Schema(C).addString('name').save();

    const dup = await expectParseError(new Parse.Schema(C).save(), Parse.Error.INVALID_CLASS_NAME);
    assert.equal(dup.message, `Class ${C} already exists.`);

    const missingField = await expectParseError(
      new Parse.Schema(C).deleteField('nothing').update(),
      Parse.Error.INVALID_SCHEMA_OPERATION,
    );
    assert.equal(missingField.message, 'Field nothing does not exist, cannot delete.');

    const retype = await expectParseError(new Parse.Schema(C).addNumber('name').update(), Parse.Error.INVALID_SCHEMA_OPERATION);
    assert.equal(retype.message, 'Field name exists, cannot update.');

    const badName = await expectParseError(new Parse.Schema(C).addString('1st').update(), Parse.Error.INVALID_KEY_NAME);
    assert.equal(badName.message, 'invalid field name: 1st');

    const noClass = await expectParseError(new Parse.Schema(uniqueClass('Nope')).get(), Parse.Error.INVALID_CLASS_NAME);
    assert.match(noClass.message, /does not exist/);

    const badIndex = await expectParseError(
      new Parse.Schema(C).addIndex('by_x', { x: 1 }).update(),
      Parse.Error.INVALID_QUERY,
    );
    assert.equal(badIndex.message, 'Field x does not exist, cannot add index.');

    // Deleting a class that does not exist succeeds, as in Parse Server.
    assert.deepEqual(await new Parse.Schema(uniqueClass('Never')).delete(), {});
  });

  it('requires the master key', async () => {
    const res = await fetch(`${server.serverURL}/schemas`, {
      headers: { 'X-Parse-Application-Id': APP_ID },
    });
    assert.equal(res.status, 403);
    assert.deepEqual(await res.json(), { error: 'Permission denied' });
  });
});
