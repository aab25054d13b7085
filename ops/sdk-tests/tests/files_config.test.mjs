// Parse.File (save from base64, byte arrays and Buffers, download by URL,
// File fields, destroy) and Parse.Config (get, save, master-key-only
// parameters) through the Parse JS SDK.

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

const master = { useMasterKey: true };

/** The bytes served at a URL, fetched as a browser would (no Parse headers). */
async function download(url) {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type'), bytes: Buffer.from(await res.arrayBuffer()) };
}

function assertSavedName(file, original) {
  assert.match(file.name(), /^[0-9a-f]{32}_/);
  assert.equal(file.name().slice(33), original);
  assert.equal(file.url(), `${server.serverURL}/files/${APP_ID}/${encodeURIComponent(file.name())}`);
}

describe('Parse.File', () => {
  it('saves from base64 and serves the same bytes at its URL', async () => {
    const text = 'Working at Parse is great!';
    const file = new Parse.File('greeting.txt', { base64: Buffer.from(text).toString('base64') });
    const saved = await file.save(master);
    assert.equal(saved, file);
    assertSavedName(file, 'greeting.txt');
    const got = await download(file.url());
    assert.equal(got.status, 200);
    assert.equal(got.type, 'text/plain');
    assert.equal(got.bytes.toString(), text);
  });

  it('saves a data URI, a byte array and a Buffer', async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0]);
    const fromUri = new Parse.File('pixel', { base64: `data:image/png;base64,${png.toString('base64')}` });
    await fromUri.save(master);
    assertSavedName(fromUri, 'pixel.png');
    let got = await download(fromUri.url());
    assert.equal(got.type, 'image/png');
    assert.deepEqual(got.bytes, png);

    const every = Array.from({ length: 256 }, (_, i) => i);
    const fromArray = new Parse.File('all-bytes.bin', every);
    await fromArray.save(master);
    assertSavedName(fromArray, 'all-bytes.bin');
    got = await download(fromArray.url());
    assert.equal(got.type, 'application/octet-stream');
    assert.deepEqual([...got.bytes], every);

    // A Buffer goes up as a binary stream-mode upload.
    const buffer = Buffer.from('binary upload \u00e9\u0000\u00ff', 'utf8');
    const fromBuffer = new Parse.File('buffer.dat', buffer, 'application/x-oxbase');
    await fromBuffer.save(master);
    assertSavedName(fromBuffer, 'buffer.dat');
    got = await download(fromBuffer.url());
    assert.equal(got.type, 'application/x-oxbase');
    assert.deepEqual(got.bytes, buffer);
    assert.equal(await fromBuffer.getData(), buffer.toString('base64'));
  });

  it('keeps metadata and tags', async () => {
    const file = new Parse.File('tagged.txt', Buffer.from('tagged'), 'text/plain');
    file.setMetadata({ owner: 'ada' });
    file.setTags({ kind: 'note' });
    await file.save(master);
    const res = await fetch(`${server.serverURL}/files/${APP_ID}/metadata/${file.name()}`);
    assert.deepEqual(await res.json(), { metadata: { owner: 'ada' } });
  });

  it('lives in File fields, which come back with their URL', async () => {
    const C = uniqueClass('WithFile');
    const file = new Parse.File('doc.txt', { base64: Buffer.from('attached').toString('base64') });
    await file.save(master);
    const obj = await new Parse.Object(C, { doc: file, list: [file] }).save();
    const fetched = await new Parse.Query(C).get(obj.id);
    const doc = fetched.get('doc');
    assert.ok(doc instanceof Parse.File);
    assert.equal(doc.name(), file.name());
    assert.equal(doc.url(), file.url());
    assert.equal(fetched.get('list')[0].url(), file.url());
    assert.equal(Buffer.from(await doc.getData(), 'base64').toString(), 'attached');
    const found = await new Parse.Query(C).equalTo('doc', file).find();
    assert.equal(found.length, 1);
  });

  it('refuses uploads Parse Server refuses', async () => {
    // Public uploads are off by default.
    const err = await expectParseError(new Parse.File('public.txt', [1, 2, 3]).save(), Parse.Error.FILE_SAVE_ERROR);
    assert.equal(err.message, 'File upload by public is disabled.');
    await expectParseError(new Parse.File('bad$name.txt', [1]).save(master), Parse.Error.INVALID_FILE_NAME);
    await expectParseError(new Parse.File('-dash.txt', [1]).save(master), Parse.Error.INVALID_FILE_NAME);

    // Signed-in users may upload (Node has no current user, so the session
    // token is passed), but not HTML.
    const user = await Parse.User.signUp(`filer${Date.now()}`, 'secret-pw');
    const asUser = { sessionToken: user.getSessionToken() };
    assert.ok(asUser.sessionToken);
    const mine = new Parse.File('mine.txt', { base64: Buffer.from('mine').toString('base64') });
    await mine.save(asUser);
    assert.equal((await download(mine.url())).bytes.toString(), 'mine');
    const binary = new Parse.File('mine.bin', Buffer.from([1, 2, 3]));
    await binary.save(asUser);
    assert.deepEqual([...(await download(binary.url())).bytes], [1, 2, 3]);
    const html = await expectParseError(
      new Parse.File('page.html', { base64: Buffer.from('<p>').toString('base64') }).save(asUser),
      Parse.Error.FILE_SAVE_ERROR,
    );
    assert.equal(html.message, 'File upload of extension html is disabled.');
    // The master key may upload it.
    const page = new Parse.File('page.html', { base64: Buffer.from('<p>').toString('base64') });
    await page.save(master);
    assert.equal((await download(page.url())).type, 'text/html');
  });

  it('is destroyed with the master key only', async () => {
    const file = new Parse.File('doomed.txt', { base64: Buffer.from('bye').toString('base64') });
    await file.save(master);
    await assert.rejects(file.destroy({ useMasterKey: false }));
    assert.equal((await download(file.url())).status, 200);
    await file.destroy();
    const got = await download(file.url());
    assert.equal(got.status, 404);
    assert.equal(got.bytes.toString(), 'File not found.');
  });
});

describe('Parse.Config', () => {
  it('starts empty, saves with the master key, and hides master-key-only parameters', async () => {
    const empty = await Parse.Config.get();
    assert.deepEqual(empty.attributes, {});

    const when = new Date('2024-05-01T10:00:00.000Z');
    const logo = new Parse.File('logo.txt', { base64: Buffer.from('logo').toString('base64') });
    await logo.save(master);
    await Parse.Config.save(
      {
        welcome: 'hello',
        count: 3,
        when,
        where: new Parse.GeoPoint(40.5, -73.25),
        tags: ['a', 'b'],
        nested: { deep: { ok: true } },
        logo,
        secret: 's3cr3t',
      },
      { secret: true },
    );

    const config = await Parse.Config.get();
    assert.equal(config.get('welcome'), 'hello');
    assert.equal(config.get('count'), 3);
    assert.ok(config.get('when') instanceof Date);
    assert.equal(config.get('when').getTime(), when.getTime());
    assert.ok(config.get('where') instanceof Parse.GeoPoint);
    assert.equal(config.get('where').latitude, 40.5);
    assert.deepEqual(config.get('tags'), ['a', 'b']);
    assert.deepEqual(config.get('nested'), { deep: { ok: true } });
    assert.ok(config.get('logo') instanceof Parse.File);
    assert.equal(config.get('logo').name(), logo.name());
    assert.equal(config.get('secret'), undefined);
    assert.equal(Parse.Config.current().get('welcome'), 'hello');

    const withMaster = await Parse.Config.get(master);
    assert.equal(withMaster.get('secret'), 's3cr3t');
  });

  it('merges updates and deletes nothing it is not told to', async () => {
    await Parse.Config.save({ count: 4, added: 'new' });
    const config = await Parse.Config.get(master);
    assert.equal(config.get('count'), 4);
    assert.equal(config.get('added'), 'new');
    assert.equal(config.get('welcome'), 'hello');
    assert.equal(config.get('secret'), 's3cr3t');
    assert.equal((await Parse.Config.get()).get('secret'), undefined);
  });

  it('refuses saves without the master key', async () => {
    const res = await fetch(`${server.serverURL}/config`, {
      method: 'PUT',
      headers: { 'X-Parse-Application-Id': APP_ID, 'Content-Type': 'application/json' },
      body: JSON.stringify({ params: { count: 99 } }),
    });
    assert.equal(res.status, 403);
    assert.deepEqual(await res.json(), { error: 'Permission denied' });
    assert.equal((await Parse.Config.get()).get('count'), 4);
  });
});
