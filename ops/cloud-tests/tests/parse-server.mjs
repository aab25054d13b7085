// Parse Server 9 with cloud/main.js, as its own process (Parse Server's Cloud
// Code and the test's Parse JS SDK would otherwise share the global `Parse`):
//   node parse-server.mjs PORT DATABASE_URI CLOUD_FILE APP_ID MASTER_KEY
// Prints `ready` once it serves. Files go to ./files under the working
// directory (the harness runs it in a temporary one).
import { ParseServer } from 'parse-server';
import FSFilesAdapter from '@parse/fs-files-adapter';
import { createRequire } from 'node:module';

const [port, databaseURI, cloud, appId, masterKey] = process.argv.slice(2);
const server = await ParseServer.startApp({
  databaseURI,
  appId,
  masterKey,
  port: Number(port),
  host: '127.0.0.1',
  mountPath: '/parse',
  serverURL: `http://127.0.0.1:${port}/parse`,
  cloud,
  allowClientClassCreation: true,
  filesAdapter: new FSFilesAdapter(),
  logLevel: process.env.CLOUD_TESTS_TRACE ? 'info' : 'error',
  logsFolder: null,
  silent: !process.env.CLOUD_TESTS_TRACE,
});
// parse-server#8684 (open in 9.10): a `rateLimit` in a Cloud Function's
// validator is lost when the cloud file is loaded by start(), which puts the
// server's config back without the limits the file added. Loading the file
// again once the server runs registers the same functions and triggers again
// and, this time, keeps the limits, so the documented behaviour is what the
// tests see.
const require = createRequire(import.meta.url);
delete require.cache[require.resolve(cloud)];
require(cloud);

process.on('SIGTERM', async () => {
  await server.handleShutdown();
  process.exit(0);
});
console.log('ready');
