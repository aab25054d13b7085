// Every Parse.Query constraint and option the SDK offers for plain classes,
// run against fixed data and checked against the exact rows Parse Server
// returns.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectParseError } from './server.mjs';

let server;
let Parse;

const ITEM = 'QItem';
const OWNER = 'QOwner';
const PET = 'QPet';
const GROUP = 'QGroup';
const EVENT = 'QEvent';
const TEXT = 'QText';
const STR = 'QString';

const d = (s) => new Date(`${s}T00:00:00.000Z`);

// name, score, group, tags, when, meta, opt, flag
const ITEMS = [
  { name: 'alpha', score: 10, group: 'A', tags: ['red', 'green'], when: d('2020-01-01'), meta: { color: 'red', size: 1, dims: { w: 1 } }, opt: 'x', flag: true },
  { name: 'beta', score: 20, group: 'A', tags: ['green', 'blue'], when: d('2020-02-01'), meta: { color: 'blue', size: 2 }, flag: false },
  { name: 'gamma', score: 30, group: 'B', tags: ['red'], when: d('2020-03-01'), meta: { color: 'red', size: 3 }, opt: 'y', flag: true },
  { name: 'delta', score: 40, group: 'B', tags: [], when: d('2020-04-01'), meta: { color: 'green', size: 4 }, flag: false },
  { name: 'epsilon', score: 50, group: 'C', tags: ['blue', 'yellow', 'red'], when: d('2020-05-01'), meta: { color: 'blue', size: 5 }, opt: 'x', flag: true },
  { name: 'zeta.one', score: 25, group: 'C', tags: ['greenish', 'reddish'], when: d('2020-06-01'), meta: { color: 'pink', size: 6 }, flag: false },
  { name: 'zetaxone', score: 35, group: 'C', tags: ['teal'], when: d('2020-07-01'), meta: { color: 'teal', size: 7 }, flag: false },
];
const ALL = ITEMS.map((i) => i.name).sort();

const byId = {};

before(async () => {
  server = await startServer();
  Parse = server.Parse;

  const items = await Parse.Object.saveAll(ITEMS.map((data) => new Parse.Object(ITEM, data)));
  items.forEach((o) => {
    byId[o.get('name')] = o;
  });

  const owners = await Parse.Object.saveAll([
    new Parse.Object(OWNER, { name: 'ann', city: 'Paris', age: 30 }),
    new Parse.Object(OWNER, { name: 'bob', city: 'Berlin', age: 40 }),
    new Parse.Object(OWNER, { name: 'cid', city: 'Paris', age: 50 }),
  ]);
  const [ann, bob, cid] = owners;
  byId.ann = ann;
  byId.bob = bob;
  byId.cid = cid;
  await Parse.Object.saveAll([
    new Parse.Object(PET, { name: 'rex', owner: ann, kind: 'dog' }),
    new Parse.Object(PET, { name: 'tom', owner: bob, kind: 'cat' }),
    new Parse.Object(PET, { name: 'fifi', owner: cid, kind: 'dog' }),
    new Parse.Object(PET, { name: 'nemo', owner: bob, kind: 'fish' }),
  ]);

  await Parse.Object.saveAll([
    new Parse.Object(GROUP, { groupName: 'A', active: true }),
    new Parse.Object(GROUP, { groupName: 'B', active: false }),
    new Parse.Object(GROUP, { groupName: 'C', active: true }),
  ]);

  await Parse.Object.saveAll([
    new Parse.Object(STR, { s: 'a+b' }),
    new Parse.Object(STR, { s: 'ab' }),
    new Parse.Object(STR, { s: 'aab' }),
    new Parse.Object(STR, { s: 'price: $5 [sale]' }),
    new Parse.Object(STR, { s: 'back\\Eslash' }),
    new Parse.Object(STR, { s: 'Mixed Case' }),
    new Parse.Object(STR, { s: "it's" }),
  ]);
});

after(async () => {
  if (server) await server.stop();
});

const names = (results) => results.map((o) => o.get('name'));
const sortedNames = (results) => names(results).sort();
const q = () => new Parse.Query(ITEM);
async function expectNames(query, expected) {
  const results = await query.find();
  assert.deepEqual(sortedNames(results), [...expected].sort());
  return results;
}

describe('basic comparisons', () => {
  it('equalTo on a string', async () => {
    await expectNames(q().equalTo('group', 'A'), ['alpha', 'beta']);
  });

  it('equalTo on a number, a boolean and a Date', async () => {
    await expectNames(q().equalTo('score', 30), ['gamma']);
    await expectNames(q().equalTo('flag', true), ['alpha', 'gamma', 'epsilon']);
    await expectNames(q().equalTo('when', d('2020-04-01')), ['delta']);
  });

  it('equalTo on an array field matches any element', async () => {
    await expectNames(q().equalTo('tags', 'red'), ['alpha', 'gamma', 'epsilon']);
    await expectNames(q().equalTo('tags', 'teal'), ['zetaxone']);
    await expectNames(q().equalTo('tags', 're'), []);
  });

  it('equalTo on a pointer', async () => {
    const pets = await new Parse.Query(PET).equalTo('owner', byId.bob).find();
    assert.deepEqual(sortedNames(pets), ['nemo', 'tom']);
  });

  it('equalTo with no match gives an empty list', async () => {
    await expectNames(q().equalTo('group', 'Z'), []);
  });

  it('notEqualTo, including rows where the field is missing', async () => {
    await expectNames(q().notEqualTo('group', 'A'), ['gamma', 'delta', 'epsilon', 'zeta.one', 'zetaxone']);
    await expectNames(q().notEqualTo('opt', 'x'), ['beta', 'gamma', 'delta', 'zeta.one', 'zetaxone']);
  });

  it('lessThan, lessThanOrEqualTo, greaterThan, greaterThanOrEqualTo on numbers', async () => {
    await expectNames(q().lessThan('score', 25), ['alpha', 'beta']);
    await expectNames(q().lessThanOrEqualTo('score', 25), ['alpha', 'beta', 'zeta.one']);
    await expectNames(q().greaterThan('score', 40), ['epsilon']);
    await expectNames(q().greaterThanOrEqualTo('score', 40), ['delta', 'epsilon']);
    await expectNames(q().greaterThan('score', 10).lessThan('score', 30), ['beta', 'zeta.one']);
  });

  it('comparisons on Date fields', async () => {
    await expectNames(q().lessThan('when', d('2020-03-01')), ['alpha', 'beta']);
    await expectNames(q().lessThanOrEqualTo('when', d('2020-03-01')), ['alpha', 'beta', 'gamma']);
    await expectNames(q().greaterThan('when', d('2020-05-01')), ['zeta.one', 'zetaxone']);
    await expectNames(q().greaterThanOrEqualTo('when', d('2020-05-01')), ['epsilon', 'zeta.one', 'zetaxone']);
    await expectNames(
      q().greaterThan('when', d('2020-01-15')).lessThan('when', d('2020-03-15')),
      ['beta', 'gamma'],
    );
  });

  it('comparisons on createdAt', async () => {
    const all = await q().ascending('createdAt').find();
    assert.equal(all.length, ITEMS.length);
    const latest = all[all.length - 1].createdAt;
    const later = await q().greaterThan('createdAt', latest).find();
    assert.equal(later.length, 0);
    const upTo = await q().lessThanOrEqualTo('createdAt', latest).count();
    assert.equal(upTo, ITEMS.length);
    const future = new Date(Date.now() + 3_600_000);
    assert.equal(await q().lessThan('createdAt', future).count(), ITEMS.length);
    assert.equal(await q().greaterThan('updatedAt', future).count(), 0);
  });

  it('containedIn and notContainedIn', async () => {
    await expectNames(q().containedIn('group', ['A', 'C']), ['alpha', 'beta', 'epsilon', 'zeta.one', 'zetaxone']);
    await expectNames(q().containedIn('score', [10, 50, 999]), ['alpha', 'epsilon']);
    await expectNames(q().notContainedIn('group', ['A', 'B']), ['epsilon', 'zeta.one', 'zetaxone']);
    await expectNames(q().notContainedIn('score', [10, 20, 30, 40]), ['epsilon', 'zeta.one', 'zetaxone']);
  });

  it('containedIn on an array field matches when any element is in the list', async () => {
    await expectNames(q().containedIn('tags', ['yellow', 'green']), ['alpha', 'beta', 'epsilon']);
  });

  it('notContainedIn on an array field excludes rows holding the value', async () => {
    await expectNames(q().notContainedIn('tags', ['red']), ['beta', 'delta', 'zeta.one', 'zetaxone']);
  });

  it('equalTo null matches missing fields, notEqualTo null matches present ones', async () => {
    await expectNames(q().equalTo('opt', null), ['beta', 'delta', 'zeta.one', 'zetaxone']);
    await expectNames(q().notEqualTo('opt', null), ['alpha', 'gamma', 'epsilon']);
  });

  it('containedIn on objectId', async () => {
    await expectNames(q().containedIn('objectId', [byId.alpha.id, byId.delta.id]), ['alpha', 'delta']);
  });

  it('containedIn on a pointer field', async () => {
    const pets = await new Parse.Query(PET).containedIn('owner', [byId.ann, byId.cid]).find();
    assert.deepEqual(sortedNames(pets), ['fifi', 'rex']);
  });

  it('exists and doesNotExist', async () => {
    await expectNames(q().exists('opt'), ['alpha', 'gamma', 'epsilon']);
    await expectNames(q().doesNotExist('opt'), ['beta', 'delta', 'zeta.one', 'zetaxone']);
    await expectNames(q().exists('nosuchfield'), []);
    await expectNames(q().doesNotExist('nosuchfield'), ALL);
  });

  it('containsAll', async () => {
    await expectNames(q().containsAll('tags', ['red', 'green']), ['alpha']);
    await expectNames(q().containsAll('tags', ['red']), ['alpha', 'gamma', 'epsilon']);
    await expectNames(q().containsAll('tags', ['red', 'blue']), ['epsilon']);
    await expectNames(q().containsAll('tags', ['red', 'purple']), []);
  });

  it('containsAllStartingWith', async () => {
    await expectNames(q().containsAllStartingWith('tags', ['gre', 'red']), ['alpha', 'zeta.one']);
    await expectNames(q().containsAllStartingWith('tags', ['reddi']), ['zeta.one']);
    await expectNames(q().containsAllStartingWith('tags', ['ye', 'bl']), ['epsilon']);
  });

  it('containedBy: every element of the array is in the list (empty array included)', async () => {
    await expectNames(q().containedBy('tags', ['red', 'green', 'blue']), ['alpha', 'beta', 'gamma', 'delta']);
    await expectNames(q().containedBy('tags', ['teal']), ['delta', 'zetaxone']);
  });
});

describe('strings', () => {
  it('matches with a plain regex string', async () => {
    await expectNames(q().matches('name', '^a'), ['alpha']);
    await expectNames(q().matches('name', 'ta'), ['beta', 'delta', 'zeta.one', 'zetaxone']);
    await expectNames(q().matches('name', '^zeta.one$'), ['zeta.one', 'zetaxone']);
  });

  it('matches is case-sensitive unless the i modifier is given', async () => {
    await expectNames(q().matches('name', 'ALPHA|BETA'), []);
    await expectNames(q().matches('name', 'ALPHA|BETA', 'i'), ['alpha', 'beta']);
    await expectNames(q().matches('name', /^E/i), ['epsilon']);
    await expectNames(q().matches('name', /^E/), []);
  });

  it('matches with the x modifier ignores whitespace in the pattern', async () => {
    await expectNames(q().matches('name', '^al pha$', 'x'), ['alpha']);
    await expectNames(q().matches('name', '^al pha$'), []);
  });

  it('matches with a character class and anchors', async () => {
    await expectNames(q().matches('name', '^[a-d][a-z]+a$'), ['alpha', 'beta', 'delta']);
  });

  it('startsWith treats the prefix literally', async () => {
    await expectNames(q().startsWith('name', 'zeta.'), ['zeta.one']);
    await expectNames(q().startsWith('name', 'zeta'), ['zeta.one', 'zetaxone']);
    await expectNames(q().startsWith('name', 'eta'), []);
    await expectNames(q().startsWith('name', 'ALP'), []);
    await expectNames(q().startsWith('name', 'ALP', 'i'), ['alpha']);
  });

  it('endsWith', async () => {
    await expectNames(q().endsWith('name', 'ta'), ['beta', 'delta']);
    await expectNames(q().endsWith('name', '.one'), ['zeta.one']);
    await expectNames(q().endsWith('name', 'one'), ['zeta.one', 'zetaxone']);
  });

  it('contains', async () => {
    await expectNames(q().contains('name', 'lph'), ['alpha']);
    await expectNames(q().contains('name', 'a.o'), ['zeta.one']);
    await expectNames(q().contains('name', 'et'), ['beta', 'zeta.one', 'zetaxone']);
  });

  it('contains, startsWith and endsWith quote regex metacharacters', async () => {
    const sq = () => new Parse.Query(STR);
    const svals = async (query) => (await query.find()).map((o) => o.get('s')).sort();
    assert.deepEqual(await svals(sq().contains('s', '+')), ['a+b']);
    assert.deepEqual(await svals(sq().contains('s', 'a+b')), ['a+b']);
    assert.deepEqual(await svals(sq().contains('s', '$5 [')), ['price: $5 [sale]']);
    assert.deepEqual(await svals(sq().endsWith('s', '[sale]')), ['price: $5 [sale]']);
    assert.deepEqual(await svals(sq().startsWith('s', 'price: $')), ['price: $5 [sale]']);
    assert.deepEqual(await svals(sq().contains('s', "'")), ["it's"]);
    assert.deepEqual(await svals(sq().startsWith('s', 'a')), ['a+b', 'aab', 'ab']);
    // The SDK turns \E inside the text into \E\\E\Q so the quote survives.
    assert.deepEqual(await svals(sq().contains('s', 'k\\Es')), ['back\\Eslash']);
    assert.deepEqual(await svals(sq().contains('s', 'mixed')), []);
    assert.deepEqual(await svals(sq().contains('s', 'Mixed')), ['Mixed Case']);
  });
});

describe('dotted keys into nested objects', () => {
  it('equalTo on a nested key', async () => {
    await expectNames(q().equalTo('meta.color', 'red'), ['alpha', 'gamma']);
    await expectNames(q().equalTo('meta.dims.w', 1), ['alpha']);
  });

  it('comparisons and containedIn on nested keys', async () => {
    await expectNames(q().greaterThan('meta.size', 4), ['epsilon', 'zeta.one', 'zetaxone']);
    await expectNames(q().lessThanOrEqualTo('meta.size', 2), ['alpha', 'beta']);
    await expectNames(q().containedIn('meta.color', ['blue', 'teal']), ['beta', 'epsilon', 'zetaxone']);
    await expectNames(q().notEqualTo('meta.color', 'red'), ['beta', 'delta', 'epsilon', 'zeta.one', 'zetaxone']);
  });

  it('exists and regex on nested keys', async () => {
    await expectNames(q().exists('meta.dims'), ['alpha']);
    await expectNames(q().startsWith('meta.color', 'te'), ['zetaxone']);
  });

  it('sorting on a nested key', async () => {
    const results = await q().descending('meta.size').find();
    assert.deepEqual(names(results), ['zetaxone', 'zeta.one', 'epsilon', 'delta', 'gamma', 'beta', 'alpha']);
  });
});

describe('subqueries', () => {
  it('matchesQuery and doesNotMatchQuery on a pointer', async () => {
    const inParis = new Parse.Query(OWNER).equalTo('city', 'Paris');
    const pets = await new Parse.Query(PET).matchesQuery('owner', inParis).find();
    assert.deepEqual(sortedNames(pets), ['fifi', 'rex']);
    const others = await new Parse.Query(PET).doesNotMatchQuery('owner', inParis).find();
    assert.deepEqual(sortedNames(others), ['nemo', 'tom']);
  });

  it('matchesQuery combined with another constraint', async () => {
    const older = new Parse.Query(OWNER).greaterThan('age', 35);
    const pets = await new Parse.Query(PET).matchesQuery('owner', older).equalTo('kind', 'dog').find();
    assert.deepEqual(sortedNames(pets), ['fifi']);
  });

  it('matchesKeyInQuery and doesNotMatchKeyInQuery', async () => {
    const active = new Parse.Query(GROUP).equalTo('active', true);
    await expectNames(q().matchesKeyInQuery('group', 'groupName', active), ['alpha', 'beta', 'epsilon', 'zeta.one', 'zetaxone']);
    await expectNames(q().doesNotMatchKeyInQuery('group', 'groupName', active), ['gamma', 'delta']);
  });
});

describe('logical combinations', () => {
  it('Parse.Query.or', async () => {
    const query = Parse.Query.or(q().lessThan('score', 15), q().equalTo('group', 'C'));
    await expectNames(query, ['alpha', 'epsilon', 'zeta.one', 'zetaxone']);
  });

  it('Parse.Query.or with an extra top-level constraint', async () => {
    const query = Parse.Query.or(q().lessThan('score', 15), q().equalTo('group', 'C'));
    query.greaterThan('score', 30);
    await expectNames(query, ['epsilon', 'zetaxone']);
  });

  it('Parse.Query.and', async () => {
    const query = Parse.Query.and(q().equalTo('tags', 'red'), q().greaterThan('score', 20));
    await expectNames(query, ['gamma', 'epsilon']);
  });

  it('Parse.Query.nor', async () => {
    const query = Parse.Query.nor(q().equalTo('group', 'A'), q().greaterThanOrEqualTo('score', 40));
    await expectNames(query, ['gamma', 'zeta.one', 'zetaxone']);
  });

  it('and of ors', async () => {
    const query = Parse.Query.and(
      Parse.Query.or(q().equalTo('group', 'A'), q().equalTo('group', 'B')),
      Parse.Query.or(q().equalTo('flag', true), q().greaterThan('score', 35)),
    );
    await expectNames(query, ['alpha', 'gamma', 'delta']);
  });
});

describe('$relativeTime', () => {
  let base;
  before(async () => {
    base = Date.now();
    const day = 86_400_000;
    await Parse.Object.saveAll([
      new Parse.Object(EVENT, { name: 'tenDaysAgo', at: new Date(base - 10 * day) }),
      new Parse.Object(EVENT, { name: 'twoDaysAgo', at: new Date(base - 2 * day) }),
      new Parse.Object(EVENT, { name: 'inThreeDays', at: new Date(base + 3 * day) }),
    ]);
  });
  const e = () => new Parse.Query(EVENT);

  it('on createdAt', async () => {
    assert.equal(await q().lessThan('createdAt', { $relativeTime: 'in 1 day' }).count(), ITEMS.length);
    assert.equal(await q().greaterThan('createdAt', { $relativeTime: '1 day ago' }).count(), ITEMS.length);
    assert.equal(await q().lessThan('createdAt', { $relativeTime: '1 day ago' }).count(), 0);
  });

  it('on a Date field with ago, in and now', async () => {
    assert.deepEqual(sortedNames(await e().greaterThan('at', { $relativeTime: '5 days ago' }).find()), ['inThreeDays', 'twoDaysAgo']);
    assert.deepEqual(sortedNames(await e().lessThan('at', { $relativeTime: 'now' }).find()), ['tenDaysAgo', 'twoDaysAgo']);
    assert.deepEqual(sortedNames(await e().greaterThanOrEqualTo('at', { $relativeTime: 'in 1 day' }).find()), ['inThreeDays']);
    assert.deepEqual(sortedNames(await e().lessThanOrEqualTo('at', { $relativeTime: '1 week 1 day ago' }).find()), ['tenDaysAgo']);
    assert.deepEqual(sortedNames(await e().lessThan('at', { $relativeTime: 'in 2 days 12 hours' }).find()), ['tenDaysAgo', 'twoDaysAgo']);
  });

  it('outside $lt/$lte/$gt/$gte fails with 107', async () => {
    const err = await expectParseError(e().notEqualTo('at', { $relativeTime: '1 day ago' }).find(), Parse.Error.INVALID_JSON);
    assert.equal(err.message, '$relativeTime can only be used with the $lt, $lte, $gt, and $gte operators');
  });

  it('a malformed relative time fails with 107', async () => {
    const err = await expectParseError(e().lessThan('at', { $relativeTime: '3 days' }).find(), Parse.Error.INVALID_JSON);
    assert.match(err.message, /^bad \$relativeTime/);
    assert.match(err.message, /Time should either start with 'in' or end with 'ago'/);
  });
});

describe('full text search', () => {
  before(async () => {
    await Parse.Object.saveAll([
      new Parse.Object(TEXT, { name: 't1', body: 'coffee shop downtown' }),
      new Parse.Object(TEXT, { name: 't2', body: 'green tea and coffee coffee coffee' }),
      new Parse.Object(TEXT, { name: 't3', body: 'a quiet library' }),
      new Parse.Object(TEXT, { name: 't4', body: 'tea house' }),
    ]);
  });
  const t = () => new Parse.Query(TEXT);

  it('fullText finds documents that contain the term', async () => {
    assert.deepEqual(sortedNames(await t().fullText('body', 'coffee').find()), ['t1', 't2']);
    assert.deepEqual(sortedNames(await t().fullText('body', 'tea').find()), ['t2', 't4']);
    assert.deepEqual(sortedNames(await t().fullText('body', 'library').find()), ['t3']);
    assert.deepEqual(sortedNames(await t().fullText('body', 'volcano').find()), []);
  });

  it('sortByTextScore orders by relevance and returns the score', async () => {
    // sortByTextScore adds order=$score and keys=$score; select name too so
    // the rows can be told apart.
    const results = await t().fullText('body', 'coffee').select('name').sortByTextScore().find();
    for (const o of results) assert.equal(o.has('body'), false, 'keys limits the projection');
    assert.deepEqual(names(results), ['t2', 't1']);
    const scores = results.map((o) => o.get('score'));
    for (const s of scores) assert.equal(typeof s, 'number');
    assert.ok(scores[0] > scores[1], `scores descending: ${scores}`);
  });
});

describe('ordering, paging and projection', () => {
  it('ascending and descending on one key', async () => {
    assert.deepEqual(names(await q().ascending('score').find()), ['alpha', 'beta', 'zeta.one', 'gamma', 'zetaxone', 'delta', 'epsilon']);
    assert.deepEqual(names(await q().descending('score').find()), ['epsilon', 'delta', 'zetaxone', 'gamma', 'zeta.one', 'beta', 'alpha']);
    assert.deepEqual(names(await q().descending('when').find()), ['zetaxone', 'zeta.one', 'epsilon', 'delta', 'gamma', 'beta', 'alpha']);
  });

  it('several sort keys', async () => {
    assert.deepEqual(
      names(await q().ascending('group').addDescending('score').find()),
      ['beta', 'alpha', 'delta', 'gamma', 'epsilon', 'zetaxone', 'zeta.one'],
    );
    assert.deepEqual(
      names(await q().descending('group', 'score').find()),
      ['epsilon', 'zetaxone', 'zeta.one', 'delta', 'gamma', 'beta', 'alpha'],
    );
    assert.deepEqual(
      names(await q().ascending('flag').addAscending('score').find()),
      ['beta', 'zeta.one', 'zetaxone', 'delta', 'alpha', 'gamma', 'epsilon'],
    );
  });

  it('skip and limit', async () => {
    assert.deepEqual(names(await q().ascending('score').skip(2).limit(3).find()), ['zeta.one', 'gamma', 'zetaxone']);
    assert.deepEqual(names(await q().ascending('score').limit(2).find()), ['alpha', 'beta']);
    assert.deepEqual(names(await q().ascending('score').skip(6).find()), ['epsilon']);
    assert.deepEqual(names(await q().ascending('score').skip(7).find()), []);
    assert.deepEqual(names(await q().ascending('score').limit(0).find()), []);
  });

  it('select returns only the chosen keys plus objectId, createdAt and updatedAt', async () => {
    const results = await q().select('name', 'score').ascending('score').limit(1).find();
    assert.equal(results.length, 1);
    const o = results[0];
    assert.equal(o.id, byId.alpha.id);
    assert.equal(o.get('name'), 'alpha');
    assert.equal(o.get('score'), 10);
    assert.ok(o.createdAt instanceof Date);
    assert.ok(o.updatedAt instanceof Date);
    for (const k of ['group', 'tags', 'when', 'meta', 'opt', 'flag']) {
      assert.equal(o.has(k), false, `${k} must not be returned`);
    }
  });

  it('select of a dotted key on a pointer includes it with only that key', async () => {
    const pets = await new Parse.Query(PET).select('name', 'owner.city').equalTo('name', 'rex').find();
    assert.equal(pets.length, 1);
    const owner = pets[0].get('owner');
    assert.equal(owner.id, byId.ann.id);
    assert.equal(owner.get('city'), 'Paris');
    assert.equal(owner.has('name'), false);
    assert.equal(owner.has('age'), false);
    assert.equal(pets[0].has('kind'), false);
  });

  it('exclude leaves out the chosen keys', async () => {
    const o = await q().exclude('tags', 'meta').equalTo('name', 'gamma').first();
    assert.equal(o.get('name'), 'gamma');
    assert.equal(o.get('score'), 30);
    assert.equal(o.get('opt'), 'y');
    assert.equal(o.has('tags'), false);
    assert.equal(o.has('meta'), false);
  });

  it('include with a query', async () => {
    const pets = await new Parse.Query(PET).include('owner').ascending('name').find();
    assert.deepEqual(
      pets.map((p) => [p.get('name'), p.get('owner').get('name')]),
      [['fifi', 'cid'], ['nemo', 'bob'], ['rex', 'ann'], ['tom', 'bob']],
    );
  });

  it('count', async () => {
    assert.equal(await q().count(), ITEMS.length);
    assert.equal(await q().equalTo('group', 'A').count(), 2);
    assert.equal(await q().equalTo('group', 'Z').count(), 0);
    assert.equal(await new Parse.Query('QNeverCreated').count(), 0);
    // count ignores skip and limit.
    assert.equal(await q().ascending('score').skip(2).limit(1).count(), ITEMS.length);
  });

  it('withCount returns the total next to a limited page', async () => {
    const res = await q().withCount().ascending('score').limit(2).find();
    assert.equal(res.count, ITEMS.length);
    assert.deepEqual(names(res.results), ['alpha', 'beta']);
    const filtered = await q().withCount().equalTo('group', 'C').ascending('score').skip(1).find();
    assert.equal(filtered.count, 3);
    assert.deepEqual(names(filtered.results), ['zetaxone', 'epsilon']);
  });

  it('first', async () => {
    const top = await q().descending('score').first();
    assert.equal(top.get('name'), 'epsilon');
    assert.equal(top.id, byId.epsilon.id);
    assert.equal(await q().equalTo('group', 'Z').first(), undefined);
  });

  it('default limit is 100', async () => {
    const C = 'QMany';
    const objs = [];
    for (let i = 0; i < 120; i += 1) objs.push(new Parse.Object(C, { i }));
    await Parse.Object.saveAll(objs);
    const page = await new Parse.Query(C).ascending('i').find();
    assert.equal(page.length, 100);
    assert.equal(page[99].get('i'), 99);
    assert.equal(await new Parse.Query(C).count(), 120);
    const rest = await new Parse.Query(C).ascending('i').skip(100).limit(1000).find();
    assert.deepEqual(rest.map((o) => o.get('i')), Array.from({ length: 20 }, (_, k) => 100 + k));

    const all = await new Parse.Query(C).findAll({ batchSize: 50 });
    assert.equal(all.length, 120);
    assert.deepEqual(all.map((o) => o.get('i')).sort((a, b) => a - b), Array.from({ length: 120 }, (_, k) => k));
  });

  it('findAll pages through every row', async () => {
    const all = await q().findAll({ batchSize: 3 });
    assert.deepEqual(sortedNames(all), ALL);
    assert.equal(new Set(all.map((o) => o.id)).size, ITEMS.length);
  });

  it('each visits every matching row once', async () => {
    const seen = [];
    await q().notEqualTo('group', 'B').each((o) => {
      seen.push(o.get('name'));
    }, { batchSize: 2 });
    assert.deepEqual(seen.sort(), ['alpha', 'beta', 'epsilon', 'zeta.one', 'zetaxone']);
  });
});
