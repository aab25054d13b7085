// The client's view of cloud/main.js: the same Parse JS SDK checks against
// Parse Server 9 (CLOUD_TARGET=parse) and oxbase with the oxbase-cloud runner
// (CLOUD_TARGET=oxbase).
//
// One documented difference is allowed for: Parse Server runs afterSave,
// afterDelete and the other after-hooks before it answers, oxbase runs
// afterSave/afterDelete after it answers (durably, at least once). So every
// check of an after-hook's side effect polls for it (up to 10 s).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually } from './common.mjs';
import { Parse, TARGET, startTarget } from './target.mjs';

let target;
let alice; // a Parse.User, logged in
let bob;

const Todo = Parse.Object.extend('Todo');
const Project = Parse.Object.extend('Project');

/** Awaits `promise`, expects a Parse.Error with `code` and `message`. */
async function expectError(promise, code, message) {
  let value;
  try {
    value = await promise;
  } catch (err) {
    assert.ok(err instanceof Parse.Error, `expected a Parse.Error, got ${err && err.stack}`);
    assert.deepEqual({ code: err.code, message: err.message }, { code, message });
    return err;
  }
  assert.fail(`expected Parse.Error ${code} "${message}", but the call succeeded with ${JSON.stringify(value && value.toJSON ? value.toJSON() : value)}`);
}

const as = (user) => ({ sessionToken: user.getSessionToken() });
const master = { useMasterKey: true };

/** The AuditLog rows matching `where` (master key). */
async function auditRows(where) {
  const query = new Parse.Query('AuditLog');
  for (const [key, value] of Object.entries(where)) query.equalTo(key, value);
  return query.find(master);
}

/** Waits (up to 10 s) until at least `count` AuditLog rows match `where`; returns them. */
function auditEventually(where, count = 1) {
  return eventually(
    async () => {
      const rows = await auditRows(where);
      return rows.length >= count ? rows : null;
    },
    { what: `AuditLog ${JSON.stringify(where)}` },
  );
}

async function newProject(name) {
  const project = new Project({ name });
  await project.save(null, master);
  return project;
}

async function signUp(username, fields = {}) {
  const user = new Parse.User();
  user.set({ username, password: `${username}-password`, ...fields });
  await user.signUp();
  return user;
}

describe(`cloud/main.js on ${TARGET}`, () => {
  before(async () => {
    target = await startTarget();
    // The app's schema, as its developers set it up (Parse Dashboard or
    // migrations). Parse Server's PostgreSQL adapter answers a query on a
    // column that does not exist yet with no rows at all, even for
    // notEqualTo, so the fields beforeFind and the job filter on must exist.
    const todoSchema = new Parse.Schema('Todo');
    todoSchema
      .addString('title')
      .addBoolean('done')
      .addNumber('priority')
      .addPointer('owner', '_User')
      .addPointer('project', 'Project')
      .addBoolean('hidden')
      .addBoolean('locked')
      .addBoolean('archived')
      .addString('privateNote')
      .addString('source')
      .addDate('completedAt');
    await todoSchema.save();
    alice = await signUp('alice');
    bob = await signUp('bob');
  });

  after(async () => {
    if (target) await target.stop();
  });

  // ------------------------------------------------------------ functions

  test('a function answers from its params', async () => {
    assert.deepEqual(await Parse.Cloud.run('hello', { name: 'Ada', n: 3 }), { greeting: 'Hello, Ada!', n: 3 });
    assert.deepEqual(await Parse.Cloud.run('hello'), { greeting: 'Hello, world!', n: null });
  });

  test('an unknown function is refused', async () => {
    await expectError(Parse.Cloud.run('noSuchFunction'), 141, 'Invalid function: "noSuchFunction"');
  });

  test('requireUser: refused without a session, request.user with one', async () => {
    await expectError(Parse.Cloud.run('whoami'), 142, 'Validation failed. Please login to continue.');
    assert.deepEqual(await Parse.Cloud.run('whoami', {}, as(alice)), { username: 'alice', displayName: 'Alice', master: false });
  });

  test('fields validator: required, type, options with a custom error, default', async () => {
    await expectError(Parse.Cloud.run('createTodo', {}, as(alice)), 142, 'Validation failed. Please specify data for title.');
    await expectError(Parse.Cloud.run('createTodo', { title: 7 }, as(alice)), 142, 'Validation failed. Invalid type for title. Expected: string');
    await expectError(Parse.Cloud.run('createTodo', { title: 'x', priority: 9 }, as(alice)), 142, 'Priority must be 1, 2 or 3');
    await expectError(Parse.Cloud.run('createTodo', { title: 'x' }), 142, 'Validation failed. Please login to continue.');

    const todo = await Parse.Cloud.run('createTodo', { title: '  Water the plants  ' }, as(alice));
    assert.ok(todo instanceof Parse.Object, 'a Parse.Object comes back');
    assert.equal(todo.className, 'Todo');
    assert.ok(todo.id);
    assert.equal(todo.get('title'), 'Water the plants', 'beforeSave trimmed it');
    assert.equal(todo.get('priority'), 2, 'the validator default');
    assert.equal(todo.get('done'), false);
    assert.equal(todo.get('source'), 'createTodo', 'the context the function saved with reached beforeSave');
    assert.equal(todo.get('owner').id, alice.id);
    // Stored as returned; the ACL keeps it from bob.
    const stored = await new Parse.Query(Todo).get(todo.id, as(alice));
    assert.equal(stored.get('title'), 'Water the plants');
    await expectError(new Parse.Query(Todo).get(todo.id, as(bob)), 101, 'Object not found.');
  });

  test('requireMaster: refused without the master key; counts with it', async () => {
    const project = await newProject('Garden');
    await new Todo({ title: 'dig', project, done: true }).save(null, master);
    await new Todo({ title: 'plant', project }).save(null, master);
    await new Todo({ title: 'weed', project, hidden: true }).save(null, master);
    await expectError(
      Parse.Cloud.run('projectStats', { projectId: project.id }, as(alice)),
      142,
      'Validation failed. Master key is required to complete this request.',
    );
    assert.deepEqual(await Parse.Cloud.run('projectStats', { projectId: project.id }, master), { total: 3, done: 1, hidden: 1, master: true });
  });

  test('a validator function: thrown strings and Parse.Errors', async () => {
    await expectError(Parse.Cloud.run('awardPoints', { points: 5 }), 142, 'Log in to collect points');
    await expectError(Parse.Cloud.run('awardPoints', { points: -1 }, as(bob)), 142, 'Points must be a positive whole number');
    await expectError(Parse.Cloud.run('awardPoints', { points: 500 }, as(bob)), 140, 'At most 100 points at a time');
    assert.deepEqual(await Parse.Cloud.run('awardPoints', { points: 5 }, as(bob)), { username: 'bob', points: 5 });
    assert.deepEqual(await Parse.Cloud.run('awardPoints', { points: 7 }, as(bob)), { username: 'bob', points: 12 });
    const stored = await new Parse.Query(Parse.User).get(bob.id, master);
    assert.equal(stored.get('points'), 12);
  });

  test('rateLimit: the fourth call in a minute is refused', async () => {
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await Parse.Cloud.run('cheer', { team: 'Reds' }), { cheer: 'Go Reds!' });
    }
    await expectError(Parse.Cloud.run('cheer', { team: 'Reds' }), 100, 'Too many cheers, take a breath');
    // The master key is not limited.
    assert.deepEqual(await Parse.Cloud.run('cheer', { team: 'Blues' }, master), { cheer: 'Go Blues!' });
  });

  test('errors thrown by a function: string, Error, Parse.Error', async () => {
    assert.deepEqual(await Parse.Cloud.run('redeemInvite', { code: 'WELCOME' }), { ok: true, bonus: 10 });
    await expectError(Parse.Cloud.run('redeemInvite', { code: 'expired' }), 141, 'This invite has expired');
    await expectError(Parse.Cloud.run('redeemInvite', { code: 'crash' }), 141, 'Invite service is down');
    await expectError(Parse.Cloud.run('redeemInvite', { code: 'NOPE' }), 101, 'No invite with code NOPE');
  });

  test('request.user, master, installationId, headers, ip and params', async () => {
    const installationId = await Parse.CoreManager.getInstallationController().currentInstallationId();
    Parse.CoreManager.set('REQUEST_HEADERS', { 'X-App-Version': '2.4.1' });
    try {
      const params = { page: 2, tags: ['a', 'b'], filter: { done: false } };
      assert.deepEqual(await Parse.Cloud.run('requestInfo', params, as(alice)), {
        master: false,
        username: 'alice',
        installationId,
        appVersion: '2.4.1',
        hasIp: true,
        params,
      });
      const withMaster = await Parse.Cloud.run('requestInfo', {}, master);
      assert.equal(withMaster.master, true);
      assert.equal(withMaster.username, null);
    } finally {
      Parse.CoreManager.set('REQUEST_HEADERS', {});
    }
  });

  test('cloud code calls another function with Parse.Cloud.run', async () => {
    assert.deepEqual(await Parse.Cloud.run('greetTwice', { name: 'Lin' }), { first: 'Hello, Lin!', second: 'Hello, Lin again!' });
  });

  test('cloud code calls an HTTP service named in Parse Config', async () => {
    assert.deepEqual(await Parse.Cloud.run('quoteOfTheDay', { topic: 'focus' }), {
      status: 200,
      quote: 'Done is better than perfect.',
      topic: 'focus',
      apiKey: 'taskboard',
    });
    assert.deepEqual(await Parse.Cloud.run('postQuote', { quote: 'Ship it.' }), { status: 201, stored: 'Ship it.' });
    const post = target.quotes.received.find((r) => r.method === 'POST');
    assert.deepEqual(JSON.parse(post.body), { quote: 'Ship it.' });
  });

  test('a query with the caller\'s sessionToken inside cloud code sees what the caller may see', async () => {
    const mine = new Todo({ title: 'alice private', owner: alice });
    mine.setACL(new Parse.ACL(alice));
    await mine.save(null, as(alice));
    const theirs = new Todo({ title: 'bob private', owner: bob });
    theirs.setACL(new Parse.ACL(bob));
    await theirs.save(null, as(bob));
    const aliceSees = await Parse.Cloud.run('myOpenTodos', {}, as(alice));
    assert.ok(aliceSees.includes('alice private'));
    assert.ok(!aliceSees.includes('bob private'));
    const bobSees = await Parse.Cloud.run('myOpenTodos', {}, as(bob));
    assert.ok(bobSees.includes('bob private'));
    assert.ok(!bobSees.includes('alice private'));
  });

  // ------------------------------------------------- beforeSave / afterSave

  test('beforeSave changes show in the save response and in the stored object', async () => {
    const todo = new Todo({ title: '   Buy milk   ' });
    await todo.save(null, as(alice));
    assert.equal(todo.get('title'), 'Buy milk');
    assert.equal(todo.get('priority'), 2);
    assert.equal(todo.get('done'), false);
    assert.equal(todo.get('source'), 'app');
    assert.equal(todo.get('owner').id, alice.id, 'owner set from request.user');
    const stored = await new Parse.Query(Todo).get(todo.id, master);
    assert.equal(stored.get('title'), 'Buy milk');
    assert.equal(stored.get('priority'), 2);
    assert.equal(stored.get('owner').id, alice.id);
    assert.equal(stored.get('source'), 'app');
  });

  test('beforeSave refuses with a Parse.Error or a string; nothing is written', async () => {
    const before = await new Parse.Query(Todo).count(master);
    await expectError(new Todo({ title: '   ' }).save(null, as(alice)), 142, 'A todo needs a title');
    await expectError(new Todo({ title: 'Buy spam' }).save(null, as(alice)), 141, 'Todo titles may not mention spam');
    assert.equal(await new Parse.Query(Todo).count(master), before);
  });

  test('beforeSave sees request.original on an update', async () => {
    const todo = new Todo({ title: 'Call mom' });
    await todo.save(null, as(alice));
    assert.equal(todo.get('completedAt'), undefined);
    todo.set('done', true);
    await todo.save(null, as(alice));
    assert.ok(todo.get('completedAt') instanceof Date, 'completedAt came back in the update response');
    const stored = await new Parse.Query(Todo).get(todo.id, master);
    assert.equal(stored.get('completedAt').getTime(), todo.get('completedAt').getTime());

    todo.set('owner', bob);
    await expectError(todo.save(null, as(alice)), 119, 'The owner of a todo cannot change');
    const unchanged = await new Parse.Query(Todo).get(todo.id, master);
    assert.equal(unchanged.get('owner').id, alice.id);
  });

  test('context: beforeSave reads the client\'s context, afterSave reads it with what beforeSave added', async () => {
    const todo = new Todo({ title: 'Pack bags' });
    await todo.save(null, { ...as(alice), context: { source: 'mobile' } });
    assert.equal(todo.get('source'), 'mobile');
    const [row] = await auditEventually({ action: 'todo.create', targetId: todo.id });
    assert.equal(row.get('source'), 'mobile');
    assert.equal(row.get('note'), 'saved by alice');
    assert.equal(row.get('userId'), alice.id);
    assert.equal(row.get('detail'), 'Pack bags');

    todo.set('done', true);
    await todo.save(null, { ...as(alice), context: { source: 'watch' } });
    const [update] = await auditEventually({ action: 'todo.update', targetId: todo.id });
    assert.equal(update.get('source'), 'watch');
    assert.equal(update.get('detail'), 'done: false -> true', 'afterSave saw request.original');
  });

  test('a function reads with the master key', async () => {
    const top = await newProject('Launch');
    top.set('todoCount', 1000);
    await top.save(null, master);
    assert.deepEqual(await Parse.Cloud.run('busiestProject'), { name: 'Launch', todoCount: 1000 });
  });

  test('afterSave updates a counter on another class', async () => {
    const project = await newProject('Trip');
    await new Todo({ title: 'book hotel', project }).save(null, as(alice));
    await new Todo({ title: 'book train', project }).save(null, as(bob));
    await eventually(async () => (await new Parse.Query(Project).get(project.id, master)).get('todoCount') === 2, { what: 'todoCount == 2' });
    // An update does not count again.
    const [first] = await new Parse.Query(Todo).equalTo('project', project).find(master);
    first.set('priority', 1);
    await first.save(null, master);
    await auditEventually({ action: 'todo.update', targetId: first.id });
    assert.equal((await new Parse.Query(Project).get(project.id, master)).get('todoCount'), 2);
  });

  test('a beforeSave validator: requireUser and a required field', async () => {
    const todo = new Todo({ title: 'Discuss' });
    await todo.save(null, as(alice));
    const Comment = Parse.Object.extend('Comment');
    await expectError(new Comment({ todo, text: 'hi' }).save(), 142, 'Validation failed. Please login to continue.');
    await expectError(new Comment({ todo }).save(null, as(bob)), 142, 'Validation failed. Please specify data for text.');
    const comment = new Comment({ todo, text: '  looks good  ' });
    await comment.save(null, as(bob));
    assert.equal(comment.get('text'), 'looks good');
    assert.equal(comment.get('author').id, bob.id);
  });

  // --------------------------------------------- beforeDelete / afterDelete

  test('beforeDelete refuses; afterDelete writes the audit log with the context', async () => {
    const locked = new Todo({ title: 'Taxes', locked: true });
    await locked.save(null, master);
    await expectError(locked.destroy(master), 119, 'Locked todos cannot be deleted');
    assert.ok(await new Parse.Query(Todo).get(locked.id, master), 'still there');

    const todo = new Todo({ title: 'Old chore' });
    await todo.save(null, as(alice));
    await todo.destroy({ ...as(alice), context: { reason: 'cleanup' } });
    const [row] = await auditEventually({ action: 'todo.delete', targetId: todo.id });
    assert.equal(row.get('detail'), 'Old chore (cleanup, checked by beforeDelete)');
    assert.equal(row.get('userId'), alice.id);
  });

  // ------------------------------------------------ beforeFind / afterFind

  test('beforeFind hides hidden objects from clients, not from the master key', async () => {
    const project = await newProject('Secrets');
    const visible = new Todo({ title: 'visible', project });
    const hidden = new Todo({ title: 'hidden', project, hidden: true });
    await Parse.Object.saveAll([visible, hidden], master);
    const titles = async (opts) => (await new Parse.Query(Todo).equalTo('project', project).ascending('title').find(opts)).map((t) => t.get('title'));
    assert.deepEqual(await titles({}), ['visible']);
    assert.deepEqual(await titles(as(bob)), ['visible']);
    assert.deepEqual(await titles(master), ['hidden', 'visible']);
    assert.equal(await new Parse.Query(Todo).equalTo('project', project).count(), 1, 'count too');
    await expectError(new Parse.Query(Todo).get(hidden.id, as(bob)), 101, 'Object not found.');
    assert.equal((await new Parse.Query(Todo).get(hidden.id, master)).get('title'), 'hidden');
    assert.equal((await new Parse.Query(Todo).get(visible.id)).get('title'), 'visible');
  });

  test('beforeFind caps the page size at 10', async () => {
    const project = await newProject('Big');
    const todos = [];
    for (let i = 0; i < 12; i++) todos.push(new Todo({ title: `task ${String(i).padStart(2, '0')}`, project }));
    await Parse.Object.saveAll(todos, master);
    const q = () => new Parse.Query(Todo).equalTo('project', project);
    assert.equal((await q().find()).length, 10);
    assert.equal((await q().limit(50).find(as(alice))).length, 10);
    assert.equal((await q().limit(5).find()).length, 5);
    assert.equal(await q().count(), 12, 'a count is not capped');
    assert.equal((await q().find(master)).length, 12, 'nor is the master key');
  });

  test('afterFind redacts a private note for everyone but its owner', async () => {
    const project = await newProject('Notes');
    const todo = new Todo({ title: 'Surprise party', project, privateNote: 'for bob' });
    todo.setACL(new Parse.ACL({ '*': { read: true }, [alice.id]: { read: true, write: true } }));
    await todo.save(null, as(alice));
    const note = async (opts) => (await new Parse.Query(Todo).equalTo('project', project).first(opts)).get('privateNote');
    assert.equal(await note(as(alice)), 'for bob');
    assert.equal(await note(as(bob)), '[redacted]');
    assert.equal(await note({}), '[redacted]');
    assert.equal(await note(master), 'for bob');
    assert.equal((await new Parse.Query(Todo).get(todo.id, as(bob))).get('privateNote'), '[redacted]', 'get runs afterFind too');
    assert.equal((await new Parse.Query(Todo).get(todo.id, as(alice))).get('privateNote'), 'for bob');
  });

  // ----------------------------------------------------------------- users

  test('beforeSave on Parse.User: refuses a reserved name, fills in fields; afterSave audits the sign-up', async () => {
    await expectError(signUp('administrator'), 202, 'That username is reserved');
    const carol = await signUp('carol');
    assert.equal(carol.get('displayName'), 'Carol', 'beforeSave changes come back from sign-up');
    assert.equal(carol.get('points'), 0);
    assert.ok(carol.getSessionToken());
    await auditEventually({ action: 'user.signup', targetId: carol.id });
  });

  test('beforeLogin refuses a banned user; afterLogin audits a log-in', async () => {
    const dave = await signUp('dave');
    const eve = await signUp('eve');
    eve.set('banned', true);
    await eve.save(null, master);
    await expectError(Parse.User.logIn('eve', 'eve-password'), 141, 'Access denied, you have been banned.');
    const sessions = await new Parse.Query(Parse.Session).equalTo('user', eve).find(master);
    assert.equal(sessions.length, 1, 'only the sign-up session: the refused log-in made none');

    const loggedIn = await Parse.User.logIn('dave', 'dave-password');
    assert.equal(loggedIn.id, dave.id);
    assert.ok(loggedIn.getSessionToken());
    const [row] = await auditEventually({ action: 'user.login', targetId: dave.id });
    assert.equal(row.get('detail'), 'dave');
  });

  test('an authData log-in runs beforeLogin but not afterLogin, as Parse Server does', async () => {
    const authData = { id: 'cloud-tests-anonymous-1' };
    const first = await Parse.User.logInWith('anonymous', { authData });
    const again = await Parse.User.logInWith('anonymous', { authData });
    assert.equal(again.id, first.id);
    assert.ok(again.getSessionToken());
    // afterLogin runs before a log-in answers, so its audit would be there
    // already.
    assert.equal((await auditRows({ action: 'user.login', targetId: first.id })).length, 0);
    first.set('banned', true);
    await first.save(null, master);
    await expectError(Parse.User.logInWith('anonymous', { authData }), 141, 'Access denied, you have been banned.');
  });

  test('afterLogout audits the session that ended', async () => {
    const frank = await signUp('frank');
    const session = await new Parse.Query(Parse.Session).equalTo('user', frank).first(master);
    await Parse.CoreManager.getRESTController().request('POST', 'logout', {}, { sessionToken: frank.getSessionToken() });
    const [row] = await auditEventually({ action: 'user.logout', targetId: session.id });
    assert.equal(row.get('userId'), frank.id);
    await expectError(Parse.Cloud.run('whoami', {}, as(frank)), 209, 'Invalid session token');
  });

  // --------------------------------------------------------- installations

  test('installation triggers: beforeSave fills in fields or refuses; afterSave audits', async () => {
    const installationId = '6e1c8f3c-2b6a-4c55-9a3e-1d2f3a4b5c6d';
    const installation = new Parse.Installation();
    installation.set({ deviceType: 'android', installationId, pushType: 'gcm' });
    await installation.save();
    assert.deepEqual(installation.get('channels'), ['general']);
    assert.equal(installation.get('appName'), 'Taskboard');
    const stored = await new Parse.Query(Parse.Installation).get(installation.id, master);
    assert.equal(stored.get('appName'), 'Taskboard');
    assert.deepEqual(stored.get('channels'), ['general']);
    const [row] = await auditEventually({ action: 'installation.save', targetId: installation.id });
    assert.equal(row.get('detail'), installationId);

    const old = new Parse.Installation();
    old.set({ deviceType: 'blackberry', installationId: '0b0b0b0b-2b6a-4c55-9a3e-1d2f3a4b5c6d' });
    await expectError(old.save(), 111, 'This device type is no longer supported');
  });

  // ----------------------------------------------------------------- files

  test('file triggers: refuse by type and by name, rename, and audit saves', async () => {
    await expectError(new Parse.File('setup.exe', [77, 90]).save(as(alice)), 130, 'Executable files are not allowed');
    await expectError(new Parse.File('virus.txt', { base64: Buffer.from('x').toString('base64') }).save(as(alice)), 130, 'This file looks infected');

    const notes = new Parse.File('notes.txt', { base64: Buffer.from('remember the milk').toString('base64') }, 'text/plain');
    await notes.save(as(alice));
    assert.match(notes.name(), /notes\.txt$/);
    const [row] = await auditEventually({ action: 'file.save', detail: notes.name() });
    assert.equal(row.get('size'), 17);
    assert.equal(row.get('userId'), alice.id);

    const draft = new Parse.File('draft-report.txt', { base64: Buffer.from('Q3 numbers').toString('base64') }, 'text/plain');
    await draft.save(as(alice));
    assert.match(draft.name(), /final-report\.txt$/, 'beforeSaveFile renamed it');
    assert.doesNotMatch(draft.name(), /draft/);
    const res = await fetch(draft.url());
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'Q3 numbers');
    await auditEventually({ action: 'file.save', detail: draft.name() });
  });

  test('file delete triggers: beforeDelete refuses, afterDelete audits', async () => {
    const kept = new Parse.File('keep-me.txt', { base64: Buffer.from('precious').toString('base64') }, 'text/plain');
    await kept.save(as(alice));
    await expectError(kept.destroy(master), 153, 'This file is protected');
    assert.equal((await fetch(kept.url())).status, 200, 'still served');

    const scratch = new Parse.File('scratch.txt', { base64: Buffer.from('tmp').toString('base64') }, 'text/plain');
    await scratch.save(as(alice));
    await scratch.destroy(master);
    await auditEventually({ action: 'file.delete', detail: scratch.name() });
    assert.equal((await fetch(scratch.url())).status, 404);
  });

  // ------------------------------------------------------------------ jobs

  test('a job started with Parse.Cloud.startJob runs, records _JobStatus, and has its effect', async () => {
    const project = await newProject('Chores');
    const done = new Todo({ title: 'sweep', project, done: true });
    const open = new Todo({ title: 'mop', project });
    await Parse.Object.saveAll([done, open], master);

    const jobStatusId = await Parse.Cloud.startJob('archiveDone', { projectId: project.id });
    assert.equal(typeof jobStatusId, 'string');
    const status = await eventually(
      async () => {
        const s = await Parse.Cloud.getJobStatus(jobStatusId);
        return s.get('status') === 'succeeded' || s.get('status') === 'failed' ? s : null;
      },
      { what: `job ${jobStatusId} to finish` },
    );
    assert.equal(status.get('status'), 'succeeded');
    assert.equal(status.get('jobName'), 'archiveDone');
    assert.equal(status.get('message'), 'archived 1 todos');
    assert.equal(status.get('source'), 'api');
    assert.ok(status.get('finishedAt') instanceof Date);
    assert.equal((await new Parse.Query(Todo).get(done.id, master)).get('archived'), true);
    assert.equal((await new Parse.Query(Todo).get(open.id, master)).get('archived'), undefined);
    const [row] = await auditEventually({ action: 'job.archiveDone', targetId: project.id });
    assert.equal(row.get('detail'), 'archived 1');
  });

  test('jobs: only known ones, only with the master key', async () => {
    await expectError(Parse.Cloud.startJob('noSuchJob', {}), 141, 'Invalid job.');
    // Without the master key the SDK has no Parse.Error to show (403 without
    // a code), so this one is checked over HTTP.
    const res = await fetch(`${target.serverURL}/jobs/archiveDone`, {
      method: 'POST',
      headers: { 'X-Parse-Application-Id': Parse.applicationId, 'Content-Type': 'application/json' },
      body: '{}',
    });
    assert.equal(res.status, 403);
    assert.deepEqual(await res.json(), { error: 'Permission denied' });
  });
});
