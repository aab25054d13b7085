// Taskboard: the Cloud Code of a small shared todo app, written for Parse
// Server 9 (CommonJS, the global `Parse` that Parse Server provides).
//
// Classes: Project (name, todoCount), Todo (title, done, priority, owner,
// project, hidden, locked, privateNote, source, completedAt, archived),
// Comment (todo, text, author) and AuditLog (written only here, readable only
// with the master key).

const MAX_PAGE = 10;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Appends an entry to the audit log (master key only: an empty ACL). */
async function audit(action, fields = {}) {
  const entry = new Parse.Object('AuditLog');
  entry.set('action', action);
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null) entry.set(key, value);
  }
  entry.setACL(new Parse.ACL());
  await entry.save(null, { useMasterKey: true });
}

function displayNameOf(username) {
  const name = String(username || '');
  return name.charAt(0).toUpperCase() + name.slice(1);
}

// ---------------------------------------------------------------- functions

Parse.Cloud.define('hello', (request) => {
  const name = request.params.name || 'world';
  return { greeting: `Hello, ${name}!`, n: request.params.n ?? null };
});

Parse.Cloud.define(
  'whoami',
  (request) => ({
    username: request.user.get('username'),
    displayName: request.user.get('displayName'),
    master: request.master,
  }),
  { requireUser: true },
);

Parse.Cloud.define(
  'createTodo',
  async (request) => {
    const { title, priority, projectId } = request.params;
    const todo = new Parse.Object('Todo');
    todo.set({ title, priority, owner: request.user });
    if (projectId) todo.set('project', Parse.Object.extend('Project').createWithoutData(projectId));
    const acl = new Parse.ACL(request.user);
    todo.setACL(acl);
    // As the caller: their session, so ACLs and class permissions apply.
    await todo.save(null, { sessionToken: request.user.getSessionToken(), context: { source: 'createTodo' } });
    return todo;
  },
  {
    requireUser: true,
    fields: {
      title: { type: String, required: true },
      priority: { type: Number, default: 2, options: [1, 2, 3], error: 'Priority must be 1, 2 or 3' },
      projectId: { type: String },
    },
  },
);

Parse.Cloud.define(
  'projectStats',
  async (request) => {
    const project = Parse.Object.extend('Project').createWithoutData(request.params.projectId);
    const all = new Parse.Query('Todo').equalTo('project', project);
    const total = await all.count({ useMasterKey: true });
    const done = await new Parse.Query('Todo').equalTo('project', project).equalTo('done', true).count({ useMasterKey: true });
    const hidden = await new Parse.Query('Todo').equalTo('project', project).equalTo('hidden', true).count({ useMasterKey: true });
    return { total, done, hidden, master: request.master };
  },
  { requireMaster: true, fields: ['projectId'] },
);

Parse.Cloud.define(
  'awardPoints',
  async (request) => {
    const user = request.user;
    user.increment('points', request.params.points);
    await user.save(null, { useMasterKey: true });
    return { username: user.get('username'), points: user.get('points') };
  },
  async (request) => {
    if (!request.user) throw 'Log in to collect points';
    const { points } = request.params;
    if (!Number.isInteger(points) || points <= 0) throw 'Points must be a positive whole number';
    if (points > 100) throw new Parse.Error(Parse.Error.EXCEEDED_QUOTA, 'At most 100 points at a time');
  },
);

// Cheering is limited: 3 a minute. Parse Server skips rate limits for
// requests from 127.0.0.1 unless includeInternalRequests is set; this app's
// clients are all local.
Parse.Cloud.define(
  'cheer',
  (request) => ({ cheer: `Go ${request.params.team || 'team'}!` }),
  {
    rateLimit: {
      requestTimeWindow: 60 * 1000,
      requestCount: 3,
      errorResponseMessage: 'Too many cheers, take a breath',
      includeInternalRequests: true,
    },
  },
);

Parse.Cloud.define('redeemInvite', async (request) => {
  const { code } = request.params;
  request.log.info(`redeeming invite ${code}`);
  if (code === 'expired') throw 'This invite has expired';
  if (code === 'crash') throw new Error('Invite service is down');
  if (code !== 'WELCOME') throw new Parse.Error(Parse.Error.OBJECT_NOT_FOUND, `No invite with code ${code}`);
  return { ok: true, bonus: 10 };
});

Parse.Cloud.define('requestInfo', (request) => {
  request.log.info('requestInfo', { params: request.params });
  return {
    master: request.master,
    username: request.user ? request.user.get('username') : null,
    installationId: request.installationId || null,
    appVersion: request.headers['x-app-version'] || null,
    hasIp: typeof request.ip === 'string' && request.ip.length > 0,
    params: request.params,
  };
});

Parse.Cloud.define('greetTwice', async (request) => {
  const first = await Parse.Cloud.run('hello', { name: request.params.name });
  const second = await Parse.Cloud.run('hello', { name: `${request.params.name} again` });
  return { first: first.greeting, second: second.greeting };
});

// Quote of the day from the quote service whose URL is in Parse Config.
// Parse Server 9 no longer has Parse.Cloud.httpRequest: Node's fetch it is.
Parse.Cloud.define('quoteOfTheDay', async (request) => {
  const config = await Parse.Config.get({ useMasterKey: true });
  const base = config.get('quoteServiceUrl');
  if (!base) throw new Parse.Error(Parse.Error.INTERNAL_SERVER_ERROR, 'quoteServiceUrl is not configured');
  const url = new URL('/quote', base);
  url.searchParams.set('topic', request.params.topic || 'work');
  const response = await fetch(url, { headers: { 'X-Api-Key': 'taskboard' } });
  if (!response.ok) throw new Parse.Error(Parse.Error.SCRIPT_FAILED, `quote service answered ${response.status}`);
  const data = await response.json();
  return { status: response.status, quote: data.quote, topic: data.topic, apiKey: data.apiKey };
});

Parse.Cloud.define('postQuote', async (request) => {
  const config = await Parse.Config.get({ useMasterKey: true });
  const response = await fetch(new URL('/quotes', config.get('quoteServiceUrl')), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ quote: request.params.quote }),
  });
  const data = await response.json();
  return { status: response.status, stored: data.stored };
});

Parse.Cloud.define(
  'myOpenTodos',
  async (request) => {
    const query = new Parse.Query('Todo').equalTo('done', false).ascending('title');
    const todos = await query.find({ sessionToken: request.user.getSessionToken() });
    return todos.map((todo) => todo.get('title'));
  },
  { requireUser: true },
);

// The busiest project (a leaderboard of one).
Parse.Cloud.define('busiestProject', async () => {
  const project = await new Parse.Query('Project').descending('todoCount').first({ useMasterKey: true });
  return project ? { name: project.get('name'), todoCount: project.get('todoCount') || 0 } : null;
});

Parse.Cloud.define('slowEcho', async (request) => {
  await sleep(request.params.ms || 500);
  return { echo: request.params.value };
});

// --------------------------------------------------------------------- jobs

Parse.Cloud.job('archiveDone', async (request) => {
  const { params, message } = request;
  message('looking for finished todos');
  const query = new Parse.Query('Todo').equalTo('done', true).notEqualTo('archived', true).limit(1000);
  if (params.projectId) query.equalTo('project', Parse.Object.extend('Project').createWithoutData(params.projectId));
  const todos = await query.find({ useMasterKey: true });
  for (const todo of todos) todo.set('archived', true);
  await Parse.Object.saveAll(todos, { useMasterKey: true });
  await audit('job.archiveDone', { detail: `archived ${todos.length}`, targetId: params.projectId });
  return `archived ${todos.length} todos`;
});

// ------------------------------------------------------------ Todo triggers

Parse.Cloud.beforeSave('Todo', async (request) => {
  const todo = request.object;
  const title = String(todo.get('title') || '').trim();
  if (!title) throw new Parse.Error(Parse.Error.VALIDATION_ERROR, 'A todo needs a title');
  if (/\bspam\b/i.test(title)) throw 'Todo titles may not mention spam';
  if (title !== todo.get('title')) todo.set('title', title);
  if (!todo.has('priority')) todo.set('priority', 2);
  if (!todo.has('done')) todo.set('done', false);

  const original = request.original;
  if (original) {
    const before = original.get('owner') ? original.get('owner').id : null;
    const after = todo.get('owner') ? todo.get('owner').id : null;
    if (before !== after) throw new Parse.Error(Parse.Error.OPERATION_FORBIDDEN, 'The owner of a todo cannot change');
    if (!original.get('done') && todo.get('done')) todo.set('completedAt', new Date());
  } else {
    if (!todo.has('owner') && request.user) todo.set('owner', request.user);
    todo.set('source', (request.context && request.context.source) || 'app');
  }
  // afterSave reads what this hook leaves in the context.
  request.context.auditNote = request.user
    ? `saved by ${request.user.get('username')}`
    : request.master
      ? 'saved with the master key'
      : 'saved anonymously';
});

Parse.Cloud.afterSave('Todo', async (request) => {
  const todo = request.object;
  const created = !request.original;
  await audit(created ? 'todo.create' : 'todo.update', {
    targetId: todo.id,
    userId: request.user ? request.user.id : undefined,
    source: request.context.source,
    note: request.context.auditNote,
    detail: created ? todo.get('title') : `done: ${request.original.get('done')} -> ${todo.get('done')}`,
  });
  const project = todo.get('project');
  if (created && project) {
    project.increment('todoCount');
    await project.save(null, { useMasterKey: true });
  }
});

Parse.Cloud.beforeDelete('Todo', (request) => {
  if (request.object.get('locked')) {
    throw new Parse.Error(Parse.Error.OPERATION_FORBIDDEN, 'Locked todos cannot be deleted');
  }
  request.context.checkedBy = 'beforeDelete';
});

Parse.Cloud.afterDelete('Todo', async (request) => {
  const { reason = 'none', checkedBy = 'nobody' } = request.context;
  await audit('todo.delete', {
    targetId: request.object.id,
    userId: request.user ? request.user.id : undefined,
    detail: `${request.object.get('title')} (${reason}, checked by ${checkedBy})`,
  });
});

// Hidden todos are only for the master key; pages are at most MAX_PAGE long.
Parse.Cloud.beforeFind('Todo', (request) => {
  const query = request.query;
  if (request.master) return query;
  query.notEqualTo('hidden', true);
  const { limit } = query.toJSON();
  if (!request.count && (limit === undefined || limit > MAX_PAGE)) query.limit(MAX_PAGE);
  return query;
});

// A todo's private note is for its owner only.
Parse.Cloud.afterFind('Todo', (request) => {
  if (request.master) return request.objects;
  const me = request.user ? request.user.id : null;
  return request.objects.map((todo) => {
    const owner = todo.get('owner');
    if (todo.has('privateNote') && (!owner || owner.id !== me)) todo.set('privateNote', '[redacted]');
    return todo;
  });
});

// ---------------------------------------------------------------- comments

Parse.Cloud.beforeSave(
  'Comment',
  (request) => {
    request.object.set('author', request.user);
    request.object.set('text', request.object.get('text').trim());
  },
  { requireUser: true, fields: { text: { type: String, required: true } } },
);

// ------------------------------------------------------------------- users

Parse.Cloud.beforeSave(Parse.User, (request) => {
  const user = request.object;
  if (!request.original && /^admin/i.test(user.get('username') || '')) {
    throw new Parse.Error(Parse.Error.USERNAME_TAKEN, 'That username is reserved');
  }
  if (!user.get('displayName')) user.set('displayName', displayNameOf(user.get('username')));
  if (!request.original && !user.has('points')) user.set('points', 0);
});

Parse.Cloud.afterSave(Parse.User, async (request) => {
  if (request.original) return;
  await audit('user.signup', { targetId: request.object.id, detail: request.object.get('username') });
});

Parse.Cloud.beforeLogin((request) => {
  if (request.object.get('banned')) throw new Error('Access denied, you have been banned.');
});

Parse.Cloud.afterLogin(async (request) => {
  await audit('user.login', { targetId: request.object.id, userId: request.object.id, detail: request.object.get('username') });
});

Parse.Cloud.afterLogout(async (request) => {
  const user = request.object.get('user');
  await audit('user.logout', { targetId: request.object.id, userId: user ? user.id : undefined });
});

// ----------------------------------------------------------- installations

Parse.Cloud.beforeSave(Parse.Installation, (request) => {
  const installation = request.object;
  if (installation.get('deviceType') === 'blackberry') {
    throw new Parse.Error(Parse.Error.INCORRECT_TYPE, 'This device type is no longer supported');
  }
  if (!installation.get('channels')) installation.set('channels', ['general']);
  installation.set('appName', 'Taskboard');
});

Parse.Cloud.afterSave(Parse.Installation, async (request) => {
  await audit('installation.save', {
    targetId: request.object.id,
    detail: request.object.get('installationId'),
  });
});

// ------------------------------------------------------------------- files

Parse.Cloud.beforeSave(Parse.File, async (request) => {
  const { file } = request;
  const name = file.name();
  if (/\.(exe|bat|cmd)$/i.test(name)) {
    throw new Parse.Error(Parse.Error.FILE_SAVE_ERROR, 'Executable files are not allowed');
  }
  if (/virus/i.test(name)) throw 'This file looks infected';
  if (name.startsWith('draft-')) {
    // Drafts are published under their final name.
    const data = await file.getData();
    return new Parse.File(name.replace(/^draft-/, 'final-'), { base64: data });
  }
});

Parse.Cloud.afterSave(Parse.File, async (request) => {
  await audit('file.save', {
    detail: request.file.name(),
    size: request.fileSize,
    userId: request.user ? request.user.id : undefined,
  });
});

Parse.Cloud.beforeDelete(Parse.File, (request) => {
  if (/keep/i.test(request.file.name())) {
    throw new Parse.Error(Parse.Error.FILE_DELETE_ERROR, 'This file is protected');
  }
});

Parse.Cloud.afterDelete(Parse.File, async (request) => {
  await audit('file.delete', { detail: request.file.name() });
});
