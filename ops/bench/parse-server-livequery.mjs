// Parse Server 9 with its LiveQuery server for ops/bench/livequery.sh:
//   node parse-server-livequery.mjs PORT DATABASE_URI
// LiveQuery shares the API's HTTP server (WebSocket upgrades on any path,
// such as ws://127.0.0.1:PORT/parse) and, without a redisURL, publishes
// saves to it through an in-process emitter. Uses the parse-server
// installed in ops/interop (npm ci there first).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../interop/package.json'));
const { ParseServer } = require('parse-server');

const [port, databaseURI] = process.argv.slice(2);
await ParseServer.startApp({
  databaseURI,
  appId: 'bench',
  masterKey: 'bench-master',
  port: Number(port),
  host: '127.0.0.1',
  mountPath: '/parse',
  serverURL: `http://127.0.0.1:${port}/parse`,
  allowClientClassCreation: true,
  // Without startLiveQueryServer, liveQuery.classNames only publishes the
  // saves; nothing would serve the WebSockets.
  liveQuery: { classNames: ['Message'] },
  startLiveQueryServer: true,
  logLevel: 'error',
  silent: true,
});
console.log('ready');
