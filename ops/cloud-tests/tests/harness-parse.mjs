// Parse Server 9 running cloud/main.js, in a child process, on a fresh
// PostgreSQL database (OXBASE_TEST_POSTGRES_URI names a role that may create
// databases; `source ops/postgres.sh` sets it). The database and the
// temporary directory (uploaded files) are removed by stop().
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { APP_ID, MASTER_KEY, freePort, inheritedEnv, stopChild, waitForLine } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

export async function startTarget({ cloudFile = path.join(here, '../cloud/main.js') } = {}) {
  const admin = process.env.OXBASE_TEST_POSTGRES_URI;
  if (!admin) throw new Error('OXBASE_TEST_POSTGRES_URI is not set (source ops/postgres.sh)');
  const name = `oxbase_cloud_${process.pid}_${Date.now()}`;
  const psql = (sql) => execFileSync('psql', [admin, '-qc', sql], { stdio: ['ignore', 'ignore', 'pipe'] });
  psql(`CREATE DATABASE ${name}`);
  const base = admin.split('?')[0];
  const databaseURI = `${base.slice(0, base.lastIndexOf('/'))}/${name}`;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'oxbase-cloud-parse-'));
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(here, 'parse-server.mjs'), String(port), databaseURI, cloudFile, APP_ID, MASTER_KEY], {
    cwd: dir,
    env: inheritedEnv(),
    stdio: ['ignore', 'pipe', process.env.CLOUD_TESTS_TRACE ? 'inherit' : 'pipe'],
  });
  if (process.env.CLOUD_TESTS_TRACE) child.stdout.pipe(process.stderr);
  const cleanup = async () => {
    await stopChild(child);
    await rm(dir, { recursive: true, force: true });
    psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  };
  try {
    await waitForLine(child, 'ready', 'Parse Server', 60_000);
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { kind: 'parse', serverURL: `http://127.0.0.1:${port}/parse`, stop: cleanup };
}
