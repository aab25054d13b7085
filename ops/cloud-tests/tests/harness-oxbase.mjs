// oxbase (`oxbase all`: the API with the triggers, jobs, cron and push
// services) on its embedded SQLite store, with its own nats-server, plus the
// oxbase-cloud runner (sdks/cloud-js) serving cloud/main.js over NATS.
//
// OXBASE_BIN names the binary (default ../../target/debug/oxbase),
// OXBASE_CLOUD_RUNNER another runner script (default sdks/cloud-js's bin);
// nats-server must be on PATH (ops/test.sh installs it into
// .oxbase/tools/bin). stop() ends every process and removes the data dir.
import { spawn } from 'node:child_process';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { APP_ID, MASTER_KEY, freePort, inheritedEnv, sleep, stopChild, waitForLine } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const trace = !!process.env.CLOUD_TESTS_TRACE;

export function oxbaseBin() {
  return path.resolve(process.env.OXBASE_BIN || path.join(repoRoot, 'target/debug/oxbase'));
}

/** The runner's bin script: OXBASE_CLOUD_RUNNER, or the one sdks/cloud-js/package.json names. */
export async function runnerBin() {
  if (process.env.OXBASE_CLOUD_RUNNER) return path.resolve(process.env.OXBASE_CLOUD_RUNNER);
  const dir = path.join(repoRoot, 'sdks/cloud-js');
  const pkg = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8'));
  const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin['oxbase-cloud'];
  return path.join(dir, bin);
}

async function startNats(dir) {
  const port = await freePort();
  const child = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let failed = null;
  child.on('error', (err) => (failed = err));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (failed) throw new Error(`cannot start nats-server (is it on PATH? ops/test.sh installs it): ${failed.message}`);
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
  return { url: `nats://127.0.0.1:${port}`, child };
}

/**
 * Starts NATS, oxbase and one runner on `cloudFile`. `env` adds oxbase
 * settings (e.g. OXBASE_TRIGGERS__TIMEOUT_MS). The result's startRunner()
 * starts more runners (for the runner tests).
 */
export async function startTarget({ cloudFile = path.join(here, '../cloud/main.js'), env = {}, runners = 1 } = {}) {
  const bin = oxbaseBin();
  try {
    await access(bin, fsConstants.X_OK);
  } catch {
    throw new Error(`oxbase binary not found at ${bin}: build it (cargo build -p oxbase) or set OXBASE_BIN`);
  }
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'oxbase-cloud-'));
  const children = [];
  const runnerProcs = new Set();
  const stop = async () => {
    for (const r of runnerProcs) await stopChild(r);
    for (const c of children.reverse()) await stopChild(c);
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    const nats = await startNats(path.join(dataDir, 'nats'));
    children.push(nats.child);
    const port = await freePort();
    const serverURL = `http://127.0.0.1:${port}/parse`;
    const ox = spawn(bin, ['all', '--port', String(port), '--data-dir', dataDir, '--app-id', APP_ID, '--master-key', MASTER_KEY], {
      env: {
        ...inheritedEnv(),
        OXBASE_HOST: '127.0.0.1',
        OXBASE_NATS_URL: nats.url,
        OXBASE_ALLOW_CLIENT_CLASS_CREATION: 'true',
        OXBASE_EVENTS__ENABLED: 'true',
        OXBASE_TRIGGERS__ENABLED: 'true',
        OXBASE_JOBS__ENABLED: 'true',
        OXBASE_PUSH__ENABLED: 'false',
        NO_COLOR: '1',
        ...env,
      },
      stdio: ['ignore', trace ? 'inherit' : 'ignore', trace ? 'inherit' : 'pipe'],
    });
    children.push(ox);
    let stderr = '';
    ox.stderr?.on('data', (d) => {
      stderr += d;
      if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (ox.exitCode !== null) throw new Error(`oxbase exited with ${ox.exitCode} before it was ready:\n${stderr}`);
      if (Date.now() > deadline) throw new Error(`oxbase was not ready within 30 s:\n${stderr}`);
      try {
        const res = await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(1_000) });
        await res.arrayBuffer();
        if (res.status === 200) break;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }

    const runnerScript = await runnerBin();
    /** Starts one runner; resolves once it printed `oxbase-cloud ready`. */
    const startRunner = async ({ file = cloudFile, extraEnv = {} } = {}) => {
      const runner = spawn(process.execPath, [runnerScript, file], {
        env: {
          ...inheritedEnv(),
          PARSE_SERVER_URL: serverURL,
          PARSE_APP_ID: APP_ID,
          PARSE_MASTER_KEY: MASTER_KEY,
          NATS_URL: nats.url,
          OXBASE_PREFIX: 'oxbase',
          ...extraEnv,
        },
        stdio: ['ignore', 'pipe', trace ? 'inherit' : 'pipe'],
      });
      runnerProcs.add(runner);
      runner.on('exit', () => runnerProcs.delete(runner));
      if (trace) runner.stdout.on('data', (d) => process.stderr.write(`[runner ${runner.pid}] ${d}`));
      await waitForLine(runner, 'oxbase-cloud ready', 'the oxbase-cloud runner', 30_000);
      return runner;
    };
    for (let i = 0; i < runners; i++) await startRunner();
    return { kind: 'oxbase', serverURL, natsURL: nats.url, startRunner, runners: runnerProcs, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
