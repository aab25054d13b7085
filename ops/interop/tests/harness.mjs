// Runs Parse Server 9 (in this process) and oxbase (a child process) on the
// same fresh PostgreSQL database, for tests that write through one and read
// through the other.
//
// Needs OXBASE_TEST_POSTGRES_URI (a user that may create databases; `bash
// ops/test.sh` sets one up) and the oxbase binary (OXBASE_BIN, default
// ../../target/debug/oxbase). The database is dropped afterwards.

import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ParseServer } from 'parse-server';

const here = path.dirname(fileURLToPath(import.meta.url));
export const APP_ID = 'interop-app';
export const MASTER_KEY = 'interop-master-key';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A REST client for one server. */
export function client(serverURL) {
  const call = async (method, route, body, { master = false, session } = {}) => {
    const headers = { 'X-Parse-Application-Id': APP_ID, 'Content-Type': 'application/json' };
    if (master) headers['X-Parse-Master-Key'] = MASTER_KEY;
    if (session) headers['X-Parse-Session-Token'] = session;
    let url = `${serverURL}/${route}`;
    let payload;
    if (method === 'GET' && body) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(body)) params.set(k, typeof v === 'string' ? v : JSON.stringify(v));
      url += `?${params}`;
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, { method, headers, body: payload });
    } catch (e) {
      // After answering a 403 or a 500, Parse Server hands the error on to
      // Express, whose final handler destroys the socket. A request sent
      // on that kept-alive socket meanwhile is reset before Parse Server
      // reads it (a reset, or a close right after the request went out),
      // so it is sent again on a fresh connection.
      if (!['ECONNRESET', 'UND_ERR_SOCKET'].includes(e?.cause?.code)) throw e;
      res = await fetch(url, { method, headers, body: payload });
    }
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, body: json };
  };
  return {
    url: serverURL,
    call,
    get: (route, params, opts) => call('GET', route, params, opts),
    post: (route, body, opts) => call('POST', route, body, opts),
    put: (route, body, opts) => call('PUT', route, body, opts),
    del: (route, opts) => call('DELETE', route, undefined, opts),
  };
}

/** `parseOptions(urls)` are added to Parse Server's options and
 * `oxbaseEnv(urls)` to oxbase's environment; `urls` has both servers' URLs,
 * for options that name one (a publicServerURL). */
export async function startBoth({ parseOptions = () => ({}), oxbaseEnv = () => ({}) } = {}) {
  const admin = process.env.OXBASE_TEST_POSTGRES_URI;
  if (!admin) throw new Error('OXBASE_TEST_POSTGRES_URI is not set (bash ops/test.sh sets it up)');
  const name = `oxbase_interop_${process.pid}_${Date.now()}`;
  const psql = (sql) => execFileSync('psql', [admin, '-qc', sql], { stdio: ['ignore', 'ignore', 'pipe'] });
  psql(`CREATE DATABASE ${name}`);
  const base = admin.split('?')[0];
  const databaseURI = `${base.slice(0, base.lastIndexOf('/'))}/${name}`;

  // Parse Server first, as an existing deployment would be.
  const parsePort = await freePort();
  const parseURL = `http://127.0.0.1:${parsePort}/parse`;
  const oxPort = await freePort();
  const oxURL = `http://127.0.0.1:${oxPort}/parse`;
  const urls = { parse: parseURL, oxbase: oxURL };
  // Parse Server's own app (startApp): its batch router expects the
  // Express it ships with.
  const parseServer = await ParseServer.startApp({
    databaseURI,
    appId: APP_ID,
    masterKey: MASTER_KEY,
    port: parsePort,
    host: '127.0.0.1',
    mountPath: '/parse',
    serverURL: parseURL,
    allowClientClassCreation: true,
    // Parse Server's default mode, without databaseOptions.enableSchemaHooks:
    // its schema cache does not hear about oxbase's schema changes, as in
    // most deployments that would move to oxbase one server at a time.
    logLevel: 'error',
    logsFolder: null,
    silent: true,
    ...parseOptions(urls),
  });

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'oxbase-interop-'));
  const bin = path.resolve(process.env.OXBASE_BIN || path.join(here, '../../../target/debug/oxbase'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OXBASE_')));
  const child = spawn(
    bin,
    ['api', '--port', String(oxPort), '--data-dir', dataDir, '--app-id', APP_ID, '--master-key', MASTER_KEY, '--database-uri', databaseURI],
    { env: { ...env, OXBASE_HOST: '127.0.0.1', OXBASE_ALLOW_CLIENT_CLASS_CREATION: 'true', OXBASE_EVENTS__ENABLED: 'false', OXBASE_TRIGGERS__ENABLED: 'false', OXBASE_JOBS__ENABLED: 'false', OXBASE_PUSH__ENABLED: 'false', ...oxbaseEnv(urls) }, stdio: ['ignore', process.env.OXBASE_INTEROP_TRACE ? 'inherit' : 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  // OXBASE_INTEROP_TRACE=1 shows oxbase's log, to see why a request failed.
  if (process.env.OXBASE_INTEROP_TRACE) child.stderr.pipe(process.stderr);
  let exited = false;
  child.on('exit', () => (exited = true));
  for (let i = 0; ; i++) {
    if (exited || i > 200) throw new Error(`oxbase did not start:\n${stderr}`);
    try {
      if ((await fetch(`http://127.0.0.1:${oxPort}/ready`)).status === 200) break;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }

  const stop = async () => {
    child.kill('SIGTERM');
    await new Promise((resolve) => (exited ? resolve() : child.on('exit', resolve)));
    // Stops Parse Server's HTTP server and closes its database connections.
    await parseServer.handleShutdown();
    await rm(dataDir, { recursive: true, force: true });
    psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  };
  return { parse: client(parseURL), oxbase: client(oxURL), stop, databaseURI, psql: (sql) => execFileSync('psql', [databaseURI, '-Atqc', sql]).toString() };
}

/** The object without the fields whose values depend on the server that
 * answered (file URLs carry the server's own address). */
export function comparable(object) {
  return JSON.parse(
    JSON.stringify(object, (key, value) => (key === 'url' && typeof value === 'string' ? undefined : value)),
  );
}
