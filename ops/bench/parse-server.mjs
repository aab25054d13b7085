// Parse Server 9 for the comparison benchmarks:
//   node parse-server.mjs PORT DATABASE_URI [LIVEQUERY_CLASSES]
// With LIVEQUERY_CLASSES (comma-separated), its LiveQuery server runs on the
// same HTTP server (WebSocket upgrades on any path, such as
// ws://127.0.0.1:PORT/parse) and, without a redisURL, gets saves through an
// in-process emitter. Uses the parse-server installed in ops/interop (npm ci
// there first).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../interop/package.json'));
const { ParseServer } = require('parse-server');

const [port, databaseURI, liveQueryClasses] = process.argv.slice(2);
// liveQuery.classNames alone only publishes the saves: startLiveQueryServer
// serves the WebSockets.
const liveQuery = liveQueryClasses
  ? { liveQuery: { classNames: liveQueryClasses.split(',') }, startLiveQueryServer: true }
  : {};
await ParseServer.startApp({
  databaseURI,
  appId: 'bench',
  masterKey: 'bench-master',
  port: Number(port),
  host: '127.0.0.1',
  mountPath: '/parse',
  serverURL: `http://127.0.0.1:${port}/parse`,
  allowClientClassCreation: true,
  logLevel: 'error',
  silent: true,
  ...liveQuery,
});
console.log('ready');
