// Geo queries through the SDK: near, withinRadians/Miles/Kilometers (sorted
// and unsorted), withinGeoBox, withinPolygon and polygonContains.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectParseError } from './server.mjs';

let server;
let Parse;

const PLACE = 'GPlace';
const ZONE = 'GZone';

// name, lat, lng, country
const PLACES = [
  ['paris', 48.8566, 2.3522, 'FR'],
  ['versailles', 48.8049, 2.1204, 'FR'],
  ['london', 51.5074, -0.1278, 'UK'],
  ['brussels', 50.8503, 4.3517, 'BE'],
  ['berlin', 52.52, 13.405, 'DE'],
  ['newyork', 40.7128, -74.006, 'US'],
  ['sydney', -33.8688, 151.2093, 'AU'],
];

let paris;

before(async () => {
  server = await startServer();
  Parse = server.Parse;
  paris = new Parse.GeoPoint(48.8566, 2.3522);
  const objs = PLACES.map(
    ([name, lat, lng, country]) => new Parse.Object(PLACE, { name, country, location: new Parse.GeoPoint(lat, lng) }),
  );
  // A row without a location never matches a geo constraint.
  objs.push(new Parse.Object(PLACE, { name: 'nowhere', country: 'FR' }));
  await Parse.Object.saveAll(objs);

  const square = (lat0, lng0, lat1, lng1) =>
    new Parse.Polygon([
      [lat0, lng0],
      [lat0, lng1],
      [lat1, lng1],
      [lat1, lng0],
    ]);
  await Parse.Object.saveAll([
    new Parse.Object(ZONE, { name: 'zoneA', area: square(0, 0, 10, 10) }),
    new Parse.Object(ZONE, { name: 'zoneB', area: square(5, 5, 15, 15) }),
    new Parse.Object(ZONE, { name: 'zoneC', area: square(-40, -40, -30, -30) }),
  ]);
});

after(async () => {
  if (server) await server.stop();
});

const names = (results) => results.map((o) => o.get('name'));
const sortedNames = (results) => names(results).sort();
const p = () => new Parse.Query(PLACE);

// Order by true distance from Paris, computed with the SDK's own formula.
function byDistanceFrom(point, list) {
  return [...list]
    .map(([name, lat, lng]) => [name, point.radiansTo(new Parse.GeoPoint(lat, lng))])
    .sort((a, b) => a[1] - b[1])
    .map(([name]) => name);
}

describe('near', () => {
  it('returns every row with a location, nearest first', async () => {
    const results = await p().near('location', paris).find();
    const expected = byDistanceFrom(paris, PLACES);
    assert.deepEqual(expected, ['paris', 'versailles', 'brussels', 'london', 'berlin', 'newyork', 'sydney']);
    assert.deepEqual(names(results), expected);
  });

  it('nearest first from another point', async () => {
    const tokyo = new Parse.GeoPoint(35.6762, 139.6503);
    const results = await p().near('location', tokyo).find();
    assert.deepEqual(names(results), byDistanceFrom(tokyo, PLACES));
    assert.equal(names(results)[0], 'sydney');
  });

  it('with limit and another constraint', async () => {
    assert.deepEqual(names(await p().near('location', paris).limit(2).find()), ['paris', 'versailles']);
    // Seen from London, Versailles is a little nearer than Paris.
    const uk = new Parse.GeoPoint(51.5, -0.1);
    assert.deepEqual(
      names(await p().near('location', uk).containedIn('country', ['FR', 'DE']).find()),
      ['versailles', 'paris', 'berlin'],
    );
  });

  it('returned GeoPoints are intact', async () => {
    const first = await p().near('location', new Parse.GeoPoint(-33, 151)).first();
    assert.equal(first.get('name'), 'sydney');
    assert.ok(first.get('location') instanceof Parse.GeoPoint);
    assert.equal(first.get('location').latitude, -33.8688);
    assert.equal(first.get('location').longitude, 151.2093);
  });
});

describe('within a distance', () => {
  it('withinKilometers sorted', async () => {
    assert.deepEqual(names(await p().withinKilometers('location', paris, 300).find()), ['paris', 'versailles', 'brussels']);
    assert.deepEqual(
      names(await p().withinKilometers('location', paris, 400, true).find()),
      ['paris', 'versailles', 'brussels', 'london'],
    );
    assert.deepEqual(names(await p().withinKilometers('location', paris, 10).find()), ['paris']);
  });

  it('withinMiles sorted', async () => {
    // London is about 214 miles from Paris, Brussels about 164.
    assert.deepEqual(names(await p().withinMiles('location', paris, 200).find()), ['paris', 'versailles', 'brussels']);
    assert.deepEqual(names(await p().withinMiles('location', paris, 250).find()), ['paris', 'versailles', 'brussels', 'london']);
  });

  it('withinRadians sorted', async () => {
    // 0.01 rad is about 64 km.
    assert.deepEqual(names(await p().withinRadians('location', paris, 0.01).find()), ['paris', 'versailles']);
    const fromNY = new Parse.GeoPoint(40.7, -74);
    assert.deepEqual(names(await p().withinRadians('location', fromNY, 0.95).find()), ['newyork', 'london', 'versailles', 'paris', 'brussels']);
  });

  it('withinKilometers unsorted ($centerSphere) returns the same set', async () => {
    const results = await p().withinKilometers('location', paris, 400, false).find();
    assert.deepEqual(sortedNames(results), ['brussels', 'london', 'paris', 'versailles']);
    const ordered = await p().withinKilometers('location', paris, 400, false).descending('name').find();
    assert.deepEqual(names(ordered), ['versailles', 'paris', 'london', 'brussels']);
  });

  it('withinMiles and withinRadians unsorted', async () => {
    assert.deepEqual(sortedNames(await p().withinMiles('location', paris, 200, false).find()), ['brussels', 'paris', 'versailles']);
    assert.deepEqual(sortedNames(await p().withinRadians('location', paris, 0.01, false).find()), ['paris', 'versailles']);
    assert.deepEqual(sortedNames(await p().withinRadians('location', new Parse.GeoPoint(0, 0), 0.01, false).find()), []);
  });

  it('count with a distance constraint', async () => {
    assert.equal(await p().withinKilometers('location', paris, 300).count(), 3);
    assert.equal(await p().withinKilometers('location', paris, 300, false).count(), 3);
  });
});

describe('boxes and polygons', () => {
  it('withinGeoBox', async () => {
    const sw = new Parse.GeoPoint(48, 0);
    const ne = new Parse.GeoPoint(52, 5);
    assert.deepEqual(sortedNames(await p().withinGeoBox('location', sw, ne).find()), ['brussels', 'paris', 'versailles']);
    const wider = new Parse.GeoPoint(48, -1);
    assert.deepEqual(
      sortedNames(await p().withinGeoBox('location', wider, ne).find()),
      ['brussels', 'london', 'paris', 'versailles'],
    );
    const empty = await p().withinGeoBox('location', new Parse.GeoPoint(0, 0), new Parse.GeoPoint(1, 1)).find();
    assert.deepEqual(names(empty), []);
  });

  it('withinPolygon with GeoPoints', async () => {
    const poly = [
      new Parse.GeoPoint(47, -1),
      new Parse.GeoPoint(47, 5),
      new Parse.GeoPoint(52, 5),
      new Parse.GeoPoint(52, -1),
    ];
    assert.deepEqual(
      sortedNames(await p().withinPolygon('location', poly).find()),
      ['brussels', 'london', 'paris', 'versailles'],
    );
    // A triangle that holds Paris and Versailles but not Brussels or London.
    const triangle = [new Parse.GeoPoint(48, 1), new Parse.GeoPoint(50, 1), new Parse.GeoPoint(48, 4)];
    assert.deepEqual(sortedNames(await p().withinPolygon('location', triangle).find()), ['paris', 'versailles']);
    // A thinner one: its long side passes between Versailles (inside) and Paris (outside).
    const thin = [new Parse.GeoPoint(48, 1), new Parse.GeoPoint(49.5, 1), new Parse.GeoPoint(48, 3.5)];
    assert.deepEqual(sortedNames(await p().withinPolygon('location', thin).find()), ['versailles']);
  });

  it('withinPolygon with [lng, lat] pairs is read the Parse Server way', async () => {
    // Plain 2-element arrays in $polygon are taken as [longitude, latitude].
    const poly = [
      [-1, 47],
      [5, 47],
      [5, 52],
      [-1, 52],
    ];
    assert.deepEqual(
      sortedNames(await p().withinPolygon('location', poly).find()),
      ['brussels', 'london', 'paris', 'versailles'],
    );
  });

  it('polygonContains', async () => {
    const z = () => new Parse.Query(ZONE);
    assert.deepEqual(sortedNames(await z().polygonContains('area', new Parse.GeoPoint(7, 7)).find()), ['zoneA', 'zoneB']);
    assert.deepEqual(sortedNames(await z().polygonContains('area', new Parse.GeoPoint(2, 3)).find()), ['zoneA']);
    assert.deepEqual(sortedNames(await z().polygonContains('area', new Parse.GeoPoint(12, 14)).find()), ['zoneB']);
    assert.deepEqual(sortedNames(await z().polygonContains('area', new Parse.GeoPoint(-35, -35)).find()), ['zoneC']);
    assert.deepEqual(sortedNames(await z().polygonContains('area', new Parse.GeoPoint(20, 20)).find()), []);
  });
});

describe('geo errors', () => {
  it('withinGeoBox with a single corner is rejected (107)', async () => {
    const query = p();
    query._addCondition('location', '$within', { $box: [paris] });
    await expectParseError(query.find(), Parse.Error.INVALID_JSON);
  });

  it('withinPolygon with fewer than 3 points is rejected (107)', async () => {
    const err = await expectParseError(
      p().withinPolygon('location', [new Parse.GeoPoint(1, 1), new Parse.GeoPoint(2, 2)]).find(),
      Parse.Error.INVALID_JSON,
    );
    assert.match(err.message, /\$polygon should contain at least 3 GeoPoints/);
  });

  it('two GeoPoint values in one object are rejected (111)', async () => {
    const obj = new Parse.Object(PLACE, {
      name: 'double',
      location: new Parse.GeoPoint(1, 1),
      other: new Parse.GeoPoint(2, 2),
    });
    const err = await expectParseError(obj.save(), Parse.Error.INCORRECT_TYPE);
    assert.equal(err.message, 'there can only be one geopoint field in a class');
    assert.equal(await p().equalTo('name', 'double').count(), 0);
  });
});
