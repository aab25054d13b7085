// Parse.Installation through the SDK: a device saves and updates its own
// installation (POST and PUT on classes/_Installation, with the SDK's
// installation id in the body), reads it back by id, and only the master
// key may query installations.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectParseError } from './server.mjs';

let server;
let Parse;

before(async () => {
  server = await startServer();
  Parse = server.Parse;
});

after(async () => {
  if (server) await server.stop();
});

describe('Parse.Installation', () => {
  it('saves the current installation, then updates it', async () => {
    const current = await Parse.Installation.currentInstallation();
    current.set('deviceType', 'ios');
    current.set('deviceToken', 'sdk-token-1');
    current.set('channels', ['news']);
    await current.save();
    assert.match(current.id, /^[A-Za-z0-9]{10}$/);
    const installationId = await Parse.CoreManager.getInstallationController().currentInstallationId();
    assert.equal(current.get('installationId'), installationId);

    current.addUnique('channels', 'sport');
    current.set('badge', 2);
    await current.save();

    const fetched = await new Parse.Query(Parse.Installation).get(current.id).catch((e) => e);
    // A device may not query installations, only the master key may.
    assert.equal(fetched.code, 119);
    const stored = await new Parse.Query(Parse.Installation).get(current.id, { useMasterKey: true });
    assert.deepEqual(stored.get('channels'), ['news', 'sport']);
    assert.equal(stored.get('badge'), 2);
    assert.equal(stored.get('deviceToken'), 'sdk-token-1');
    assert.equal(stored.get('installationId'), installationId);

    const again = await new Parse.Installation({ objectId: current.id }).fetch();
    assert.equal(again.get('deviceType'), 'ios');
  });

  it('refuses a change of deviceType', async () => {
    const device = new Parse.Installation({ deviceType: 'android', installationId: 'sdk-device-2' });
    await device.save();
    device.set('deviceType', 'ios');
    await expectParseError(device.save(), 136);
  });

  it('lets the master key find installations by channel', async () => {
    await new Parse.Installation({ deviceType: 'android', installationId: 'sdk-c1', channels: ['promo'] }).save();
    await new Parse.Installation({ deviceType: 'ios', installationId: 'sdk-c2', channels: ['other'] }).save();
    const found = await new Parse.Query(Parse.Installation)
      .equalTo('channels', 'promo')
      .find({ useMasterKey: true });
    assert.deepEqual(found.map((i) => i.get('installationId')), ['sdk-c1']);
    await expectParseError(new Parse.Query(Parse.Installation).find(), 119);
  });
});
