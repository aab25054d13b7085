#!/usr/bin/env node
'use strict';

const { parseArgs } = require('node:util');
const { start } = require('../src/index');

const usage = `Usage: oxbase-cloud [options] path/to/cloud/main.js

Serves a Parse Server Cloud Code file to oxbase over NATS.

Options (environment variable in brackets):
  --server-url URL        oxbase's Parse API, e.g. http://127.0.0.1:1337/parse [PARSE_SERVER_URL]
  --app-id ID             application id [PARSE_APP_ID]
  --master-key KEY        master key [PARSE_MASTER_KEY]
  --javascript-key KEY    JavaScript key, optional [PARSE_JAVASCRIPT_KEY]
  --nats URL              NATS server(s), comma separated (default nats://127.0.0.1:4222) [NATS_URL]
  --prefix P              oxbase's subject prefix (default oxbase) [OXBASE_PREFIX]
  --queue-group G         NATS queue group of the runners (default oxbase-cloud) [OXBASE_QUEUE_GROUP]
  --ignore-unsupported    warn instead of failing on Parse APIs oxbase-cloud does not provide
  -h, --help              this help
`;

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      'server-url': { type: 'string' },
      'app-id': { type: 'string' },
      'master-key': { type: 'string' },
      'javascript-key': { type: 'string' },
      nats: { type: 'string' },
      prefix: { type: 'string' },
      'queue-group': { type: 'string' },
      'ignore-unsupported': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
} catch (e) {
  process.stderr.write(`${e.message}\n\n${usage}`);
  process.exit(2);
}
const { values, positionals } = parsed;
if (values.help) {
  process.stdout.write(usage);
  process.exit(0);
}
if (positionals.length !== 1) {
  process.stderr.write(usage);
  process.exit(2);
}

// A bug in cloud code must not take the runner down.
process.on('unhandledRejection', (reason) => {
  process.stderr.write(`oxbase-cloud: unhandled rejection: ${reason && reason.stack ? reason.stack : reason}\n`);
});
process.on('uncaughtException', (err) => {
  process.stderr.write(`oxbase-cloud: uncaught exception: ${err && err.stack ? err.stack : err}\n`);
});

(async () => {
  let runner;
  try {
    runner = await start({
      cloud: positionals[0],
      serverURL: values['server-url'],
      appId: values['app-id'],
      masterKey: values['master-key'],
      javascriptKey: values['javascript-key'],
      natsUrl: values.nats,
      prefix: values.prefix,
      queueGroup: values['queue-group'],
      ignoreUnsupported: values['ignore-unsupported'],
    });
  } catch (e) {
    process.stderr.write(`oxbase-cloud: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  }
  let signalled = false;
  const shutdown = async (signal) => {
    if (signalled) return;
    signalled = true;
    process.stdout.write(`oxbase-cloud: ${signal}, stopping\n`);
    try {
      await runner.stop();
      process.exit(0);
    } catch (e) {
      process.stderr.write(`oxbase-cloud: stop failed: ${e && e.stack ? e.stack : e}\n`);
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  runner.closed.then((err) => {
    if (!signalled) {
      process.stderr.write(`oxbase-cloud: the NATS connection closed${err ? `: ${err.message}` : ''}\n`);
      process.exit(1);
    }
  });
})();
