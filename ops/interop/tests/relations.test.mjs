// Relations written on one server are queried with $relatedTo on the other:
// both when the owning class is new to the reader and when the reader had
// already loaded (cached) the owning class before the relation field was
// added to it.

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
const relatedTo = (className, objectId, key) => ({ $relatedTo: { object: pointer(className, objectId), key } });
const names = (r) => r.body.results?.map((o) => o.name).sort();

const label = { parse: 'Parse Server', oxbase: 'oxbase' };

for (const [writerName, readerName] of [
  ['parse', 'oxbase'],
  ['oxbase', 'parse'],
]) {
  describe(`relations ${label[writerName]} writes, ${label[readerName]} queries`, () => {
    const prefix = writerName === 'parse' ? 'P' : 'O';

    async function makeTargets(writer, className) {
      const ids = {};
      for (const name of ['red', 'green', 'blue']) {
        const r = await writer.post(`classes/${className}`, { name });
        assert.equal(r.status, 201, JSON.stringify(r.body));
        ids[name] = r.body.objectId;
      }
      return ids;
    }

    it('on an owning class new to the reader', async () => {
      const writer = env[writerName];
      const reader = env[readerName];
      const owner = `${prefix}Album`;
      const target = `${prefix}Photo`;
      const photos = await makeTargets(writer, target);
      const album = await writer.post(`classes/${owner}`, {
        title: 'holiday',
        photos: { __op: 'AddRelation', objects: [pointer(target, photos.red), pointer(target, photos.blue)] },
      });
      assert.equal(album.status, 201, JSON.stringify(album.body));
      const id = album.body.objectId;

      const related = await reader.get(`classes/${target}`, { where: relatedTo(owner, id, 'photos') });
      assert.equal(related.status, 200, JSON.stringify(related.body));
      assert.deepEqual(names(related), ['blue', 'red']);
      const counted = await reader.get(`classes/${target}`, { where: relatedTo(owner, id, 'photos'), count: 1, limit: 0 });
      assert.equal(counted.body.count, 2, JSON.stringify(counted.body));
      // $relatedTo combines with other constraints.
      const narrowed = await reader.get(`classes/${target}`, { where: { ...relatedTo(owner, id, 'photos'), name: { $ne: 'red' } } });
      assert.deepEqual(names(narrowed), ['blue']);

      // The owning object shows the relation field on both servers alike.
      const fromWriter = await writer.get(`classes/${owner}/${id}`);
      const fromReader = await reader.get(`classes/${owner}/${id}`);
      assert.equal(fromReader.status, 200, JSON.stringify(fromReader.body));
      assert.deepEqual(fromReader.body.photos, { __type: 'Relation', className: target });
      assert.deepEqual(comparable(fromReader.body), comparable(fromWriter.body));
      const schema = await reader.get(`schemas/${owner}`, undefined, { master: true });
      assert.deepEqual(schema.body.fields?.photos, { type: 'Relation', targetClass: target }, JSON.stringify(schema.body));

      // A change made on the reader shows on the writer, and the reverse.
      const removed = await reader.put(`classes/${owner}/${id}`, { photos: { __op: 'RemoveRelation', objects: [pointer(target, photos.red)] } });
      assert.equal(removed.status, 200, JSON.stringify(removed.body));
      assert.deepEqual(names(await writer.get(`classes/${target}`, { where: relatedTo(owner, id, 'photos') })), ['blue']);
      const added = await writer.put(`classes/${owner}/${id}`, { photos: { __op: 'AddRelation', objects: [pointer(target, photos.green)] } });
      assert.equal(added.status, 200, JSON.stringify(added.body));
      assert.deepEqual(names(await reader.get(`classes/${target}`, { where: relatedTo(owner, id, 'photos') })), ['blue', 'green']);
    });

    it('on an owning class the reader had already loaded', async () => {
      const writer = env[writerName];
      const reader = env[readerName];
      const owner = `${prefix}Shelf`;
      const target = `${prefix}Book`;
      const books = await makeTargets(writer, target);
      // The reader creates the owning class and reads it, so the class
      // without any relation field is in its cache.
      const shelf = await reader.post(`classes/${owner}`, { title: 'top' });
      assert.equal(shelf.status, 201, JSON.stringify(shelf.body));
      const id = shelf.body.objectId;
      assert.equal((await reader.get(`classes/${owner}/${id}`)).status, 200);
      assert.equal((await reader.get(`classes/${owner}`)).body.results?.length, 1);

      // The writer adds the relation field to that class.
      const added = await writer.put(`classes/${owner}/${id}`, {
        books: { __op: 'AddRelation', objects: [pointer(target, books.green), pointer(target, books.blue)] },
      });
      assert.equal(added.status, 200, JSON.stringify(added.body));

      const related = await reader.get(`classes/${target}`, { where: relatedTo(owner, id, 'books') });
      assert.equal(related.status, 200, JSON.stringify(related.body));
      assert.deepEqual(names(related), ['blue', 'green']);
      // $relatedTo also works inside $or, the way the JS SDK combines
      // queries.
      const inOr = await reader.get(`classes/${target}`, { where: { $or: [relatedTo(owner, id, 'books'), { name: 'red' }] } });
      assert.equal(inOr.status, 200, JSON.stringify(inOr.body));
      assert.deepEqual(names(inOr), ['blue', 'green', 'red']);

      if (readerName === 'oxbase') {
        // oxbase, like Parse Server for its own writes, shows the new
        // relation field on the object it had cached.
        const got = await reader.get(`classes/${owner}/${id}`);
        assert.deepEqual(got.body.books, { __type: 'Relation', className: target }, JSON.stringify(got.body));
      }
      // The reader can add to the relation the other server made.
      const more = await reader.put(`classes/${owner}/${id}`, { books: { __op: 'AddRelation', objects: [pointer(target, books.red)] } });
      assert.equal(more.status, 200, JSON.stringify(more.body));
      assert.deepEqual(names(await writer.get(`classes/${target}`, { where: relatedTo(owner, id, 'books') })), ['blue', 'green', 'red']);
    });
  });
}
