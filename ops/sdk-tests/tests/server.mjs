// Starts one oxbase API server for a test file and points the Parse JS SDK at
// it. Each test file calls startServer() in `before` and the returned stop()
// in `after`, so every file gets a fresh, empty store and nothing is left
// behind (no process, no temp dir).
//
// OXBASE_BIN overrides the binary (default: ../../target/debug/oxbase relative
// to ops/sdk-tests). OXBASE_SDK_TRACE=1 prints every SDK request and the
// server's answer to stderr, which is how discrepancies are reported.
// OXBASE_TEST_BACKEND=postgres runs each file's server on a fresh database of
// the PostgreSQL server OXBASE_TEST_POSTGRES_URI names (created and dropped
// with psql) instead of the embedded store.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, access } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
// The package's exports map names this entry point `parse/node` (the file
// is node.js; `parse/node.js` is not exported).
import Parse from 'parse/node';

const here = path.dirname(fileURLToPath(import.meta.url));
const suiteRoot = path.resolve(here, '..');

export const APP_ID = 'sdk-test-app';
export const MASTER_KEY = 'sdk-test-master-key';
const READY_TIMEOUT_MS = 20_000;

function binaryPath() {
  const fromEnv = process.env.OXBASE_BIN;
  if (fromEnv) return path.resolve(fromEnv);
  return path.resolve(suiteRoot, '../../target/debug/oxbase');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// The caller's OXBASE_* / PARSE_SERVER_* settings (a config file, a database
// URI, keys) would change what the server does, so they are not passed on.
function inheritedEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('OXBASE_') || k.startsWith('PARSE_SERVER_')) continue;
    env[k] = v;
  }
  return env;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A fresh PostgreSQL database: its URI and a function dropping it. */
function postgresDatabase() {
  const admin = process.env.OXBASE_TEST_POSTGRES_URI;
  if (!admin) {
    throw new Error('OXBASE_TEST_BACKEND=postgres needs OXBASE_TEST_POSTGRES_URI (bash ops/test.sh sets it up)');
  }
  const name = `oxbase_sdk_${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  const psql = (sql) => execFileSync('psql', [admin, '-qc', sql], { stdio: ['ignore', 'ignore', 'pipe'] });
  psql(`CREATE DATABASE ${name}`);
  const base = admin.split('?')[0];
  const uri = `${base.slice(0, base.lastIndexOf('/'))}/${name}`;
  return { uri, drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

function installTrace() {
  const rest = Parse.CoreManager.getRESTController();
  const original = rest.ajax;
  rest.ajax = async function traced(method, url, data, headers, options) {
    process.stderr.write(`[sdk] ${method} ${url}\n[sdk]   body: ${data}\n`);
    try {
      const res = await original.call(this, method, url, data, headers, options);
      process.stderr.write(`[sdk]   -> ${JSON.stringify(res.response)}\n`);
      return res;
    } catch (err) {
      process.stderr.write(`[sdk]   -> error ${err && (err.code ?? '')} ${err && err.message}\n`);
      throw err;
    }
  };
}

/**
 * A nats-server with JetStream on a free port and a temp dir: its URL and a
 * function stopping it. The test command puts nats-server on PATH.
 */
async function startNats(dir) {
  const port = await freePort();
  const child = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let failed = null;
  child.on('error', (err) => {
    failed = err;
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (failed) throw new Error(`cannot start nats-server (bash ops/test.sh installs it): ${failed.message}`);
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.end();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (open) break;
    if (Date.now() > deadline) throw new Error('nats-server did not start');
    await sleep(50);
  }
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return {
    url: `nats://127.0.0.1:${port}`,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * Spawns `bin args` and waits until GET /ready on `port` answers 200.
 * Returns { child, port, output, exited, hasExited, stop }: `output()` is
 * the last of its stderr and stdout, `exited` resolves on exit, `stop()`
 * ends it (SIGTERM, then SIGKILL after 5 s).
 */
async function spawnReady(bin, args, env, port) {
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });

  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
  });
  child.stdout.on('data', (d) => {
    stdout += d;
    if (stdout.length > 100_000) stdout = stdout.slice(-50_000);
  });
  let exitedWith = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitedWith = { code, signal };
      resolve(exitedWith);
    });
    child.on('error', (err) => {
      exitedWith = { code: null, signal: null, error: err };
      resolve(exitedWith);
    });
  });
  const output = () => `stderr:\n${stderr}\nstdout:\n${stdout}`;
  const stop = async () => {
    if (!exitedWith) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!exitedWith) child.kill('SIGKILL');
      }, 5_000);
      await exited;
      clearTimeout(timer);
    }
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exitedWith) {
      const how = exitedWith.error
        ? `failed to start: ${exitedWith.error.message}`
        : `exited with code ${exitedWith.code} signal ${exitedWith.signal}`;
      throw new Error(`oxbase ${args[0]} ${how} before it was ready.\n${output()}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`oxbase ${args[0]} did not answer /ready within ${READY_TIMEOUT_MS} ms.\n${output()}`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(1_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  return { child, port, output, exited, hasExited: () => exitedWith !== null, stop };
}

/**
 * Spawns the server, waits until GET /ready answers 200, and initializes the
 * SDK. Returns { Parse, port, serverURL, stop, natsUrl, dataDir, env,
 * startLiveQuery }: `env` is the server's environment; `natsUrl` is set with
 * `nats`.
 *
 * With `{ nats: true }` it also starts a nats-server and runs `oxbase all`
 * (the API with the triggers service, events on); `env` adds settings: an
 * object, or a function of `{ serverURL }` for settings that name it.
 *
 * `startLiveQuery({ port, env })` (with `nats` only) runs `oxbase livequery`
 * beside it on the same store and NATS, on `port` (a free one by default),
 * with `env` added; it resolves once the process is ready and returns
 * { port, url, output, exited, hasExited, stop, kill }, `kill(signal)`
 * resolving when the process is gone. stop() stops these processes too.
 */
export async function startServer({ nats = false, env = {} } = {}) {
  const bin = binaryPath();
  try {
    await access(bin, fsConstants.X_OK);
  } catch {
    throw new Error(
      `oxbase binary not found at ${bin}. Build it with \`cargo build -p oxbase\` in the ` +
        'workspace root, or set OXBASE_BIN to its path.',
    );
  }

  const port = await freePort();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'oxbase-sdk-'));
  const database = process.env.OXBASE_TEST_BACKEND === 'postgres' ? postgresDatabase() : null;
  const natsServer = nats ? await startNats(path.join(dataDir, 'nats')) : null;
  const args = [nats ? 'all' : 'api', '--port', String(port), '--data-dir', dataDir, '--app-id', APP_ID, '--master-key', MASTER_KEY];
  if (database) args.push('--database-uri', database.uri);
  const serverURL = `http://127.0.0.1:${port}/parse`;
  const childEnv = {
    ...inheritedEnv(),
    OXBASE_ALLOW_CLIENT_CLASS_CREATION: 'true',
    // The SDK suite tests the API; events have their own tests with NATS.
    OXBASE_EVENTS__ENABLED: nats ? 'true' : 'false',
    OXBASE_TRIGGERS__ENABLED: nats ? 'true' : 'false',
    OXBASE_JOBS__ENABLED: nats ? 'true' : 'false',
    OXBASE_PUSH__ENABLED: nats ? 'true' : 'false',
    ...(natsServer ? { OXBASE_NATS_URL: natsServer.url } : {}),
    OXBASE_HOST: '127.0.0.1',
    NO_COLOR: '1',
    ...(typeof env === 'function' ? env({ serverURL }) : env),
  };

  const cleanupDir = async () => {
    if (natsServer) await natsServer.stop();
    await rm(dataDir, { recursive: true, force: true });
    if (database) database.drop();
  };

  let server;
  try {
    server = await spawnReady(bin, args, childEnv, port);
  } catch (err) {
    await cleanupDir();
    throw err;
  }

  /** The `oxbase livequery` processes started beside the server. */
  const extras = new Set();
  const startLiveQuery = async ({ port: lqPort, env: lqEnv = {} } = {}) => {
    if (!natsServer) throw new Error('startLiveQuery needs startServer({ nats: true })');
    const chosen = lqPort ?? (await freePort());
    const extraEnv = {
      ...childEnv,
      // `oxbase livequery` takes --port only; the rest comes from the
      // environment, the same settings the API was given as flags.
      OXBASE_DATA_DIR: dataDir,
      OXBASE_APP_ID: APP_ID,
      OXBASE_MASTER_KEY: MASTER_KEY,
      ...(database ? { OXBASE_DATABASE_URI: database.uri } : {}),
      ...lqEnv,
    };
    const live = await spawnReady(bin, ['livequery', '--port', String(chosen)], extraEnv, chosen);
    extras.add(live);
    live.exited.then(() => extras.delete(live));
    return {
      ...live,
      url: `ws://127.0.0.1:${chosen}/`,
      kill: async (signal = 'SIGKILL') => {
        if (!live.hasExited()) live.child.kill(signal);
        await live.exited;
      },
    };
  };

  const stop = async () => {
    await Promise.all([...extras].map((live) => live.stop()));
    await server.stop();
    await cleanupDir();
  };

  Parse.initialize(APP_ID, undefined, MASTER_KEY);
  Parse.serverURL = serverURL;
  if (process.env.OXBASE_SDK_TRACE) installTrace();

  return {
    Parse,
    port,
    serverURL,
    stop,
    natsUrl: natsServer ? natsServer.url : null,
    dataDir,
    env: childEnv,
    startLiveQuery,
  };
}

/**
 * Awaits `promise`, expects it to reject with a Parse.Error carrying `code`,
 * and returns the error so callers can check the message too.
 */
export async function expectParseError(promise, code) {
  let value;
  try {
    value = await promise;
  } catch (err) {
    if (!(err instanceof Parse.Error)) {
      throw new Error(`expected a Parse.Error with code ${code}, got ${err && err.stack ? err.stack : JSON.stringify(err)}`);
    }
    if (err.code !== code) {
      throw new Error(`expected Parse.Error code ${code}, got code ${err.code}: ${err.message}`);
    }
    return err;
  }
  throw new Error(`expected a Parse.Error with code ${code}, but the call succeeded with ${safeJson(value)}`);
}

function safeJson(v) {
  try {
    return JSON.stringify(v && typeof v.toJSON === 'function' ? v.toJSON() : v);
  } catch {
    return String(v);
  }
}

/** A class name unique to one test, so tests don't see each other's rows. */
let counter = 0;
export function uniqueClass(prefix) {
  counter += 1;
  return `${prefix}${counter}`;
}

/** Sorted list of a field's values from a result list. */
export function values(results, key) {
  return results.map((o) => o.get(key));
}

export function sortedValues(results, key) {
  return values(results, key).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export { Parse };

/** An object of `className` that only knows its id (Parse.Object.createWithoutData on a subclass). */
export function withoutData(className, id) {
  return Parse.Object.extend(className).createWithoutData(id);
}
