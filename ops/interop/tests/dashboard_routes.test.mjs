// The routes Parse Dashboard calls, answered by both servers on the same
// data: server info, purge, aggregate, push audiences, script logs, explain
// and relation redirects. Each call runs on both servers and the answers are
// compared, Parse Server's being the reference.

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

const master = { master: true };
const pointer = (className, objectId) => ({ __type: 'Pointer', className, objectId });
const label = { parse: 'Parse Server', oxbase: 'oxbase' };
const servers = () => [
  ['Parse Server', env.parse],
  ['oxbase', env.oxbase],
];
const sortBy = (key) => (results) => [...results].sort((a, b) => (JSON.stringify(a[key]) < JSON.stringify(b[key]) ? -1 : 1));

describe('GET /serverInfo', () => {
  it('answers with features and parseServerVersion on oxbase, shaped as on Parse Server', async () => {
    const parse = await env.parse.get('serverInfo', undefined, master);
    assert.equal(parse.status, 200, JSON.stringify(parse.body));
    const ox = await env.oxbase.get('serverInfo', undefined, master);
    assert.equal(ox.status, 200, JSON.stringify(ox.body));
    assert.equal(typeof ox.body.parseServerVersion, 'string');
    assert.ok(ox.body.parseServerVersion.length > 0);
    const features = ox.body.features;
    assert.equal(typeof features, 'object', JSON.stringify(ox.body));
    for (const section of ['globalConfig', 'hooks', 'cloudCode', 'logs', 'push', 'schemas']) {
      assert.equal(typeof features[section], 'object', `features.${section} in ${JSON.stringify(features)}`);
    }
    // Every section and flag Parse Server reports, oxbase reports too, as
    // a boolean (false where oxbase does not serve it).
    for (const [section, flags] of Object.entries(parse.body.features)) {
      assert.equal(typeof features[section], 'object', `features.${section} in ${JSON.stringify(features)}`);
      for (const flag of Object.keys(flags)) {
        assert.equal(typeof features[section][flag], 'boolean', `features.${section}.${flag} in ${JSON.stringify(features[section])}`);
      }
    }
  });

  it('needs the master key on both servers', async () => {
    for (const [name, server] of servers()) {
      const r = await server.get('serverInfo');
      assert.equal(r.status, 403, `${name}: ${JSON.stringify(r.body)}`);
    }
  });
});

for (const [purger, other] of [
  ['parse', 'oxbase'],
  ['oxbase', 'parse'],
]) {
  describe(`DELETE /purge on ${label[purger]}`, () => {
    const className = purger === 'parse' ? 'PurgedByParse' : 'PurgedByOxbase';

    it('empties the class for both servers and keeps its schema', async () => {
      // Objects from both servers, with a relation and a pointer so the
      // schema has more than plain fields.
      const target = await env[other].post('classes/PurgeTarget', { n: 1 });
      for (const [i, writer] of [env.parse, env.oxbase, env.parse].entries()) {
        const r = await writer.post(`classes/${className}`, { i, owner: pointer('PurgeTarget', target.body.objectId) });
        assert.equal(r.status, 201, JSON.stringify(r.body));
      }
      for (const [, server] of servers()) {
        assert.equal((await server.get(`classes/${className}`, { count: 1, limit: 0 })).body.count, 3);
      }
      // Each server's schema is compared with its own answer from before
      // the purge (schema_cache.test.mjs compares the two servers').
      const schemaBefore = {};
      for (const [name, server] of servers()) {
        const schema = await server.get(`schemas/${className}`, undefined, master);
        assert.equal(schema.status, 200, `${name}: ${JSON.stringify(schema.body)}`);
        schemaBefore[name] = schema.body;
      }

      const refused = await env[purger].del(`purge/${className}`);
      assert.equal(refused.status, 403, JSON.stringify(refused.body));
      const purged = await env[purger].del(`purge/${className}`, master);
      assert.equal(purged.status, 200, JSON.stringify(purged.body));
      assert.deepEqual(purged.body, {});

      for (const [name, server] of servers()) {
        const found = await server.get(`classes/${className}`, { count: 1 });
        assert.equal(found.status, 200, `${name}: ${JSON.stringify(found.body)}`);
        assert.deepEqual(found.body, { results: [], count: 0 }, name);
        const schema = await server.get(`schemas/${className}`, undefined, master);
        assert.equal(schema.status, 200, `${name}: ${JSON.stringify(schema.body)}`);
        assert.deepEqual(schema.body, schemaBefore[name], name);
      }
      // Other classes are untouched.
      assert.equal((await env[purger].get(`classes/PurgeTarget/${target.body.objectId}`)).status, 200);
      // The class takes new objects on both servers.
      for (const [name, server] of servers()) {
        const r = await server.post(`classes/${className}`, { i: 9 });
        assert.equal(r.status, 201, `${name}: ${JSON.stringify(r.body)}`);
      }
    });
  });
}

describe('GET /aggregate', () => {
  const ids = {};
  before(async () => {
    const owner = await env.parse.post('classes/Coach', { name: 'c' });
    // Parse Server writes the first object, with every field, so its own
    // schema cache knows them all: it answers a Pointer column another
    // server added as a bare objectId until it reloads its schema.
    const rows = [
      ['parse', { name: 'a', team: 'red', score: 10, tags: ['x', 'y'], when: { __type: 'Date', iso: '2024-01-01T00:00:00.000Z' }, coach: pointer('Coach', owner.body.objectId) }],
      ['oxbase', { name: 'b', team: 'red', score: 20, tags: ['y'], coach: pointer('Coach', owner.body.objectId) }],
      ['parse', { name: 'c', team: 'blue', score: 5, tags: [] }],
      ['oxbase', { name: 'd', team: 'blue', score: 7, tags: ['x'], when: { __type: 'Date', iso: '2024-06-01T00:00:00.000Z' } }],
      ['parse', { name: 'e', team: 'green', score: 1 }],
    ];
    for (const [server, row] of rows) {
      const r = await env[server].post('classes/Score', row);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      ids[row.name] = r.body.objectId;
    }
  });

  // Runs the same aggregate on both servers and returns Parse Server's
  // answer after checking oxbase gives the same. `normalize` orders results
  // where the pipeline leaves the order open.
  async function same(params, normalize = (r) => r) {
    const parse = await env.parse.get('aggregate/Score', params, master);
    assert.equal(parse.status, 200, `Parse Server: ${JSON.stringify(params)} -> ${JSON.stringify(parse.body)}`);
    const ox = await env.oxbase.get('aggregate/Score', params, master);
    assert.equal(ox.status, 200, `oxbase: ${JSON.stringify(params)} -> ${JSON.stringify(ox.body)}`);
    assert.ok(Array.isArray(ox.body.results), JSON.stringify(ox.body));
    assert.deepEqual(normalize(ox.body.results), normalize(parse.body.results), JSON.stringify(params));
    return parse.body.results;
  }

  it('$match gives the same objects', async () => {
    const r = await same({ pipeline: [{ $match: { score: { $gt: 4 } } }] }, sortBy('objectId'));
    assert.equal(r.length, 4);
    const red = await same({ pipeline: [{ $match: { team: 'red' } }] }, sortBy('objectId'));
    assert.deepEqual(red.map((o) => o.name).sort(), ['a', 'b']);
    // Objects come back as in a find: dates and pointers typed.
    const b = red.find((o) => o.name === 'b');
    assert.deepEqual(b.coach?.__type, 'Pointer');
    await same({ pipeline: [{ $match: { score: { $gte: 5, $lt: 10 } } }] }, sortBy('objectId'));
  });

  it('$group with $sum and $avg, then $sort', async () => {
    const grouped = await same(
      { pipeline: [{ $group: { _id: '$team', total: { $sum: '$score' }, mean: { $avg: '$score' } } }] },
      sortBy('objectId'),
    );
    assert.deepEqual(sortBy('objectId')(grouped), [
      { objectId: 'blue', total: 12, mean: 6 },
      { objectId: 'green', total: 1, mean: 1 },
      { objectId: 'red', total: 30, mean: 15 },
    ]);
    const sorted = await same({
      pipeline: [
        { $match: { score: { $gte: 5 } } },
        { $group: { _id: '$team', total: { $sum: '$score' }, n: { $sum: 1 } } },
        { $sort: { total: -1 } },
      ],
    });
    assert.deepEqual(sorted, [
      { objectId: 'red', total: 30, n: 2 },
      { objectId: 'blue', total: 12, n: 2 },
    ]);
    const all = await same({ pipeline: [{ $group: { _id: null, total: { $sum: '$score' }, n: { $sum: 1 }, hi: { $max: '$score' }, lo: { $min: '$score' } } }] });
    assert.deepEqual(all, [{ objectId: null, total: 43, n: 5, hi: 20, lo: 1 }]);
  });

  it('$sort, $limit and $project', async () => {
    const top = await same({ pipeline: [{ $sort: { score: -1 } }, { $limit: 2 }] });
    assert.deepEqual(top.map((o) => o.name), ['b', 'a']);
    // Parse Server's PostgreSQL adapter loses the objectId in a $project
    // (it answers null); oxbase keeps it, as MongoDB's $project does, so
    // the servers are compared on the projected fields.
    const withoutId = (results) => results.map(({ objectId, ...rest }) => rest);
    const pipeline = [{ $sort: { score: 1 } }, { $limit: 2 }, { $project: { name: 1, score: 1 } }];
    const projected = await same({ pipeline }, withoutId);
    assert.deepEqual(withoutId(projected), [
      { name: 'e', score: 1 },
      { name: 'c', score: 5 },
    ]);
    const ox = await env.oxbase.get('aggregate/Score', { pipeline }, master);
    assert.deepEqual(ox.body.results.map((o) => o.objectId), [ids.e, ids.c]);
    await same({ pipeline: [{ $match: { team: 'blue' } }, { $project: { name: 1, team: 1 } }] }, (r) => sortBy('name')(withoutId(r)));
  });

  it('$skip', async () => {
    // Without a $sort the rows skipped are the database's choice, so only
    // what can be relied on is compared.
    for (const [pipeline, length] of [
      [[{ $match: { team: 'red' } }, { $skip: 1 }], 1],
      [[{ $skip: 3 }, { $limit: 1 }], 1],
      [[{ $skip: 2 }], 3],
      [[{ $skip: 5 }], 0],
    ]) {
      for (const [name, server] of servers()) {
        const r = await server.get('aggregate/Score', { pipeline }, master);
        assert.equal(r.status, 200, `${name}: ${JSON.stringify(pipeline)} -> ${JSON.stringify(r.body)}`);
        assert.equal(r.body.results.length, length, `${name}: ${JSON.stringify(pipeline)}`);
        for (const o of r.body.results) assert.equal(o.objectId, ids[o.name], name);
      }
    }
  });

  // Parse Server 9's PostgreSQL adapter has no $count and no $unwind: it
  // leaves those stages out and answers with the rest of the pipeline.
  // oxbase runs them as Parse Server on MongoDB does.
  it('$count and $unwind run as on MongoDB', async () => {
    const counted = await env.oxbase.get('aggregate/Score', { pipeline: [{ $match: { team: 'red' } }, { $count: 'n' }] }, master);
    assert.equal(counted.status, 200, JSON.stringify(counted.body));
    assert.deepEqual(counted.body.results, [{ n: 2 }]);
    const unwound = await env.oxbase.get('aggregate/Score', { pipeline: [{ $match: { team: 'red' } }, { $unwind: '$tags' }, { $sort: { name: 1, tags: 1 } }, { $project: { name: 1, tags: 1 } }] }, master);
    assert.equal(unwound.status, 200, JSON.stringify(unwound.body));
    assert.deepEqual(
      unwound.body.results.map((o) => [o.name, o.tags]),
      [['a', 'x'], ['a', 'y'], ['b', 'y']],
    );
    // Parse Server answers the objects the stages would have counted or
    // unwound, so both servers still agree on what matched.
    const parse = await env.parse.get('aggregate/Score', { pipeline: [{ $match: { team: 'red' } }, { $count: 'n' }] }, master);
    assert.deepEqual(parse.body.results.map((o) => o.name).sort(), ['a', 'b']);
  });

  it('distinct, alone and with where', async () => {
    const sorted = (r) => [...r].sort();
    assert.deepEqual(sorted(await same({ distinct: 'team' }, sorted)), ['blue', 'green', 'red']);
    assert.deepEqual(sorted(await same({ distinct: 'team', where: { score: { $gt: 6 } } }, sorted)), ['blue', 'red']);
    assert.deepEqual(sorted(await same({ distinct: 'score', where: { team: 'red' } }, sorted)), [10, 20]);
  });

  it('needs the master key on both servers', async () => {
    for (const [name, server] of servers()) {
      const r = await server.get('aggregate/Score', { distinct: 'team' });
      assert.equal(r.status, 403, `${name}: ${JSON.stringify(r.body)}`);
    }
  });
});

for (const [creator, other] of [
  ['parse', 'oxbase'],
  ['oxbase', 'parse'],
]) {
  describe(`push audiences created on ${label[creator]}`, () => {
    it(`are listed, changed and deleted on ${label[other]}`, async () => {
      const name = `${creator} audience`;
      const query = { deviceType: { $in: ['ios'] }, channels: creator };
      const created = await env[creator].post('push_audiences', { name, query: JSON.stringify(query) }, master);
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = created.body.objectId;
      assert.equal(typeof id, 'string');

      const listed = await env[other].get('push_audiences', undefined, master);
      assert.equal(listed.status, 200, JSON.stringify(listed.body));
      const mine = listed.body.results.find((a) => a.objectId === id);
      assert.ok(mine, JSON.stringify(listed.body));
      assert.equal(mine.name, name);
      assert.deepEqual(mine.query, query);
      const listedHere = await env[creator].get('push_audiences', undefined, master);
      assert.deepEqual(sortBy('objectId')(listed.body.results), sortBy('objectId')(listedHere.body.results));
      const one = await env[other].get(`push_audiences/${id}`, undefined, master);
      assert.equal(one.status, 200, JSON.stringify(one.body));
      assert.deepEqual(one.body, (await env[creator].get(`push_audiences/${id}`, undefined, master)).body);

      const changed = await env[other].put(`push_audiences/${id}`, { name: `${name} renamed` }, master);
      assert.equal(changed.status, 200, JSON.stringify(changed.body));
      assert.equal(typeof changed.body.updatedAt, 'string');
      const seen = await env[creator].get(`push_audiences/${id}`, undefined, master);
      assert.equal(seen.body.name, `${name} renamed`);
      assert.deepEqual(seen.body.query, query);

      const deleted = await env[other].del(`push_audiences/${id}`, master);
      assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
      assert.deepEqual(deleted.body, {});
      for (const [serverName, server] of servers()) {
        const after = await server.get('push_audiences', undefined, master);
        assert.ok(!after.body.results.some((a) => a.objectId === id), `${serverName}: ${JSON.stringify(after.body)}`);
        const gone = await server.get(`push_audiences/${id}`, undefined, master);
        assert.equal(gone.status, 404, `${serverName}: ${JSON.stringify(gone.body)}`);
        assert.equal(gone.body.code, 101, serverName);
      }
    });
  });
}

describe('push audiences', () => {
  it('need the master key on both servers', async () => {
    for (const [name, server] of servers()) {
      const list = await server.get('push_audiences');
      assert.equal(list.status, 403, `${name}: ${JSON.stringify(list.body)}`);
      const create = await server.post('push_audiences', { name: 'x', query: '{}' });
      assert.equal(create.status, 403, `${name}: ${JSON.stringify(create.body)}`);
    }
  });
});

describe('GET /scriptlog', () => {
  // Parse Server runs here with logsFolder null, which makes its /scriptlog
  // fail (500), so only oxbase's answer is checked for its shape.
  it('answers an array of log entries on oxbase', async () => {
    const r = await env.oxbase.get('scriptlog', { level: 'info', size: 10, order: 'desc' }, master);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(Array.isArray(r.body), JSON.stringify(r.body));
    for (const entry of r.body) {
      assert.equal(typeof entry.level, 'string', JSON.stringify(entry));
      assert.ok('message' in entry, JSON.stringify(entry));
      assert.equal(typeof entry.timestamp, 'string', JSON.stringify(entry));
    }
    const plain = await env.oxbase.get('scriptlog', undefined, master);
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    assert.ok(Array.isArray(plain.body), JSON.stringify(plain.body));
  });

  it('needs the master key on both servers', async () => {
    for (const [name, server] of servers()) {
      const r = await server.get('scriptlog');
      assert.equal(r.status, 403, `${name}: ${JSON.stringify(r.body)}`);
    }
  });
});

describe('GET /classes/<Class>?explain=true', () => {
  before(async () => {
    await env.parse.post('classes/Explained', { n: 1 });
    await env.oxbase.post('classes/Explained', { n: 2 });
  });

  it('answers a plan on both servers', async () => {
    for (const [name, server] of servers()) {
      for (const params of [{ explain: true }, { explain: true, where: { n: 1 } }]) {
        const r = await server.get('classes/Explained', params, master);
        assert.equal(r.status, 200, `${name}: ${JSON.stringify(r.body)}`);
        assert.ok(Array.isArray(r.body.results) && r.body.results.length > 0, `${name}: ${JSON.stringify(r.body)}`);
        assert.ok(JSON.stringify(r.body.results[0]).length > 2, `${name}: ${JSON.stringify(r.body)}`);
      }
    }
  });

  it('needs the master key on both servers', async () => {
    for (const [name, server] of servers()) {
      const r = await server.get('classes/Explained', { explain: true });
      assert.equal(r.status, 400, `${name}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 102, name);
    }
  });
});

for (const writer of ['parse', 'oxbase']) {
  describe(`redirectClassNameForKey on a relation ${label[writer]} made`, () => {
    const owner = writer === 'parse' ? 'PTeam' : 'OTeam';
    const target = writer === 'parse' ? 'PPlayer' : 'OPlayer';
    let teamId;
    before(async () => {
      const players = [];
      for (const name of ['p1', 'p2']) {
        const p = await env[writer].post(`classes/${target}`, { name });
        assert.equal(p.status, 201, JSON.stringify(p.body));
        players.push(pointer(target, p.body.objectId));
      }
      const team = await env[writer].post(`classes/${owner}`, { name: 't', members: { __op: 'AddRelation', objects: players } });
      assert.equal(team.status, 201, JSON.stringify(team.body));
      teamId = team.body.objectId;
    });

    it('answers the same on both servers', async () => {
      // Parse Server resolves the key with its cached schema, which does
      // not know a relation oxbase added until something reloads it; the
      // dashboard loads /schemas before it browses a class, and so does
      // this test.
      assert.equal((await env.parse.get(`schemas/${owner}`, undefined, master)).status, 200);
      // With limit=0 Parse Server 9 answers only an empty results array
      // (no top-level className); oxbase must answer the same results.
      const parseEmpty = await env.parse.get(`classes/${owner}`, { redirectClassNameForKey: 'members', limit: 0 });
      const oxEmpty = await env.oxbase.get(`classes/${owner}`, { redirectClassNameForKey: 'members', limit: 0 });
      assert.equal(parseEmpty.status, 200, JSON.stringify(parseEmpty.body));
      assert.equal(oxEmpty.status, 200, JSON.stringify(oxEmpty.body));
      assert.deepEqual(oxEmpty.body.results, parseEmpty.body.results);
      assert.deepEqual(parseEmpty.body.results, []);
      if ('className' in oxEmpty.body) assert.equal(oxEmpty.body.className, target);

      // The JS SDK's relation query: the owning class in the path, the key
      // in redirectClassNameForKey, $relatedTo in where. Each object comes
      // back with the target's className.
      const params = { redirectClassNameForKey: 'members', where: { $relatedTo: { object: pointer(owner, teamId), key: 'members' } } };
      const fromParse = await env.parse.get(`classes/${owner}`, params);
      assert.deepEqual(fromParse.body.results.map((o) => o.className), [target, target]);
      const fromOxbase = await env.oxbase.get(`classes/${owner}`, params);
      assert.equal(fromOxbase.status, 200, JSON.stringify(fromOxbase.body));
      assert.deepEqual(sortBy('objectId')(fromOxbase.body.results).map(comparable), sortBy('objectId')(fromParse.body.results).map(comparable));
      assert.deepEqual(fromOxbase.body.results.map((o) => o.name).sort(), ['p1', 'p2']);

      // A key that is not a relation leaves the class as it is.
      const plainParse = await env.parse.get(`classes/${owner}`, { redirectClassNameForKey: 'name' });
      const plainOx = await env.oxbase.get(`classes/${owner}`, { redirectClassNameForKey: 'name' });
      assert.equal(plainOx.status, 200, JSON.stringify(plainOx.body));
      assert.deepEqual(plainOx.body, plainParse.body);
    });
  });
}
