// Users, sessions, ACLs, roles and class-level permissions through the Parse
// JS SDK: signUp, logIn, User.me, logOut, private objects, roles of roles and
// CLP refusals.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectParseError, uniqueClass } from './server.mjs';

let server;
let Parse;

before(async () => {
  server = await startServer();
  Parse = server.Parse;
  Parse.User.enableUnsafeCurrentUser();
});

after(async () => {
  if (server) await server.stop();
});

let counter = 0;
async function newUser(prefix = 'user') {
  counter += 1;
  const user = new Parse.User();
  const username = `${prefix}${counter}_${Date.now()}`;
  await user.signUp({ username, password: `${username}-pw`, email: `${username}@example.com` });
  return user;
}

const as = (user) => ({ sessionToken: user.getSessionToken() });

describe('users and sessions', () => {
  it('signs up, logs in, finds itself with User.me and logs out', async () => {
    const user = await newUser('ada');
    assert.match(user.getSessionToken(), /^r:[0-9a-f]{32}$/);
    const username = user.getUsername();

    const loggedIn = await Parse.User.logIn(username, `${username}-pw`);
    assert.equal(loggedIn.id, user.id);
    assert.equal(loggedIn.get('email'), `${username}@example.com`);
    assert.notEqual(loggedIn.getSessionToken(), user.getSessionToken());
    assert.equal(Parse.User.current().id, user.id);

    const me = await Parse.User.me(loggedIn.getSessionToken());
    assert.equal(me.id, user.id);
    assert.equal(me.getUsername(), username);

    const session = await Parse.Session.current();
    assert.equal(session.get('user').id, user.id);
    assert.equal(session.getSessionToken(), loggedIn.getSessionToken());

    const token = loggedIn.getSessionToken();
    await Parse.User.logOut();
    assert.equal(Parse.User.current(), null);
    await expectParseError(Parse.User.me(token), Parse.Error.INVALID_SESSION_TOKEN);
    // The sign-up session still works.
    assert.equal((await Parse.User.me(user.getSessionToken())).id, user.id);
  });

  it('refuses a taken username (202) and a wrong password (101)', async () => {
    const user = await newUser('grace');
    const twin = new Parse.User();
    await expectParseError(
      twin.signUp({ username: user.getUsername(), password: 'x' }),
      Parse.Error.USERNAME_TAKEN,
    );
    await expectParseError(
      Parse.User.logIn(user.getUsername(), 'wrong'),
      Parse.Error.OBJECT_NOT_FOUND,
    );
  });

  it('lets a user change their own data and nobody else', async () => {
    const ann = await newUser('ann');
    const bob = await newUser('bob');
    // Users are private, as in Parse Server 9, until they open their ACL.
    await expectParseError(new Parse.Query(Parse.User).get(ann.id, as(bob)), Parse.Error.OBJECT_NOT_FOUND);
    const acl = new Parse.ACL(ann);
    acl.setPublicReadAccess(true);
    ann.setACL(acl);
    ann.set('nick', 'a');
    await ann.save(null, as(ann));
    const annAsBob = await new Parse.Query(Parse.User).get(ann.id, as(bob));
    assert.equal(annAsBob.get('email'), undefined, 'emails are private');
    annAsBob.set('nick', 'hijacked');
    // Parse answers another user's change to a user with 206.
    await expectParseError(annAsBob.save(null, as(bob)), Parse.Error.SESSION_MISSING);
    const fresh = await new Parse.Query(Parse.User).get(ann.id, { useMasterKey: true });
    assert.equal(fresh.get('nick'), 'a');
  });
});

describe('ACLs', () => {
  it('hides a private object from another user through get, find, count and include', async () => {
    const ann = await newUser('ann');
    const bob = await newUser('bob');
    const Diary = uniqueClass('Diary');
    const diary = new Parse.Object(Diary);
    diary.set('text', 'secret');
    diary.setACL(new Parse.ACL(ann));
    await diary.save(null, as(ann));
    const Shelf = uniqueClass('Shelf');
    const shelf = new Parse.Object(Shelf);
    shelf.set('diary', diary);
    await shelf.save(null, as(ann));

    assert.equal((await new Parse.Query(Diary).get(diary.id, as(ann))).get('text'), 'secret');
    await expectParseError(new Parse.Query(Diary).get(diary.id, as(bob)), Parse.Error.OBJECT_NOT_FOUND);
    await expectParseError(new Parse.Query(Diary).get(diary.id), Parse.Error.OBJECT_NOT_FOUND);
    assert.equal((await new Parse.Query(Diary).find(as(bob))).length, 0);
    assert.equal(await new Parse.Query(Diary).count(as(bob)), 0);
    assert.equal(await new Parse.Query(Diary).count(as(ann)), 1);

    const seenByAnn = await new Parse.Query(Shelf).include('diary').get(shelf.id, as(ann));
    assert.equal(seenByAnn.get('diary').get('text'), 'secret');
    const seenByBob = await new Parse.Query(Shelf).include('diary').get(shelf.id, as(bob));
    assert.equal(seenByBob.get('diary'), undefined);

    const inner = new Parse.Query(Diary).equalTo('text', 'secret');
    assert.equal((await new Parse.Query(Shelf).matchesQuery('diary', inner).find(as(bob))).length, 0);
    assert.equal((await new Parse.Query(Shelf).matchesQuery('diary', inner).find(as(ann))).length, 1);
  });

  it("refuses a write made with another user's session", async () => {
    const ann = await newUser('ann');
    const bob = await newUser('bob');
    const Note = uniqueClass('Note');
    const note = new Parse.Object(Note);
    note.set('text', 'mine');
    const acl = new Parse.ACL(ann);
    acl.setPublicReadAccess(true);
    note.setACL(acl);
    await note.save(null, as(ann));

    const asBob = await new Parse.Query(Note).get(note.id, as(bob));
    asBob.set('text', 'yours');
    await expectParseError(asBob.save(null, as(bob)), Parse.Error.OBJECT_NOT_FOUND);
    await expectParseError(asBob.destroy(as(bob)), Parse.Error.OBJECT_NOT_FOUND);
    const stored = await new Parse.Query(Note).get(note.id, { useMasterKey: true });
    assert.equal(stored.get('text'), 'mine');
  });
});

describe('roles', () => {
  it('grants access through a role of a role', async () => {
    const ann = await newUser('ann');
    const bob = await newUser('bob');
    const suffix = `${Date.now()}`;
    const roleACL = new Parse.ACL();
    roleACL.setPublicReadAccess(true);
    const editors = new Parse.Role(`Editors${suffix}`, roleACL);
    editors.getUsers().add(ann);
    await editors.save(null, { useMasterKey: true });
    const staff = new Parse.Role(`Staff${suffix}`, roleACL);
    staff.getRoles().add(editors);
    await staff.save(null, { useMasterKey: true });

    const Memo = uniqueClass('Memo');
    const memo = new Parse.Object(Memo);
    memo.set('text', 'for staff');
    const acl = new Parse.ACL();
    acl.setRoleReadAccess(staff, true);
    memo.setACL(acl);
    await memo.save(null, { useMasterKey: true });

    assert.equal((await new Parse.Query(Memo).get(memo.id, as(ann))).get('text'), 'for staff');
    await expectParseError(new Parse.Query(Memo).get(memo.id, as(bob)), Parse.Error.OBJECT_NOT_FOUND);

    // The role's relations can be queried back.
    const members = await editors.getUsers().query().find({ useMasterKey: true });
    assert.deepEqual(members.map((u) => u.id), [ann.id]);
    const childRoles = await staff.getRoles().query().find({ useMasterKey: true });
    assert.deepEqual(childRoles.map((r) => r.id), [editors.id]);
  });
});

describe('class-level permissions', () => {
  it('refuses operations the class does not allow (119)', async () => {
    const ann = await newUser('ann');
    const Locked = uniqueClass('Locked');
    const schema = new Parse.Schema(Locked);
    schema.addString('title');
    const clp = new Parse.CLP();
    clp.setPublicReadAccess(true);
    clp.setPublicWriteAccess(false);
    schema.setCLP(clp);
    await schema.save();

    const obj = new Parse.Object(Locked);
    obj.set('title', 'x');
    await expectParseError(obj.save(null, as(ann)), Parse.Error.OPERATION_FORBIDDEN);
    await obj.save(null, { useMasterKey: true });
    const found = await new Parse.Query(Locked).find(as(ann));
    assert.equal(found.length, 1);
    found[0].set('title', 'y');
    await expectParseError(found[0].save(null, as(ann)), Parse.Error.OPERATION_FORBIDDEN);
    await expectParseError(found[0].destroy(as(ann)), Parse.Error.OPERATION_FORBIDDEN);
  });
});
