// Parse Server 9 for the comparison benchmark: node parse-server.mjs PORT DATABASE_URI
// Uses the parse-server installed in ops/interop (npm ci there first).
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
  logLevel: 'error',
  silent: true,
});
console.log('ready');
