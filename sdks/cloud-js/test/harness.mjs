// Starts a nats-server (JetStream) and `oxbase all` on free ports in a temp
// dir, and oxbase-cloud runners on a cloud file. Used by the smoke test.
//
// OXBASE_BIN picks the oxbase binary (default: the workspace's
// target/debug/oxbase, then target/release/oxbase). nats-server is taken from
// PATH or the workspace's .oxbase/tools/bin.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '..');
const workspace = path.resolve(pkg, '../..');
export const APP_ID = 'cloud-smoke-app';
export const MASTER_KEY = 'cloud-smoke-master-key';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function oxbaseBinary() {
  const candidates = [process.env.OXBASE_BIN, path.join(workspace, 'target/debug/oxbase'), path.join(workspace, 'target/release/oxbase')];
  return candidates.find((c) => c && existsSync(c)) || null;
}

function natsServerBinary() {
  const local = path.join(workspace, '.oxbase/tools/bin/nats-server');
  return existsSync(local) ? local : 'nats-server';
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

async function waitPort(port, deadline) {
  for (;;) {
    const open = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not open`);
    await sleep(50);
  }
}

function track(child) {
  const state = { out: '', exited: null };
  child.stdout?.on('data', (d) => (state.out += d));
  child.stderr?.on('data', (d) => (state.out += d));
  state.exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve((state.exited = { code, signal }))));
  return state;
}

async function kill(child, state) {
  if (state.exited) return state.exited;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  const r = await state.exit;
  clearTimeout(t);
  return r;
}

/** A nats-server with JetStream in a temp dir: {natsUrl, dir, stop}. */
export async function startNats() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'oxbase-cloud-smoke-'));
  const natsPort = await freePort();
  const nats = spawn(natsServerBinary(), ['-js', '-a', '127.0.0.1', '-p', String(natsPort), '-sd', path.join(dir, 'nats')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const natsState = track(nats);
  nats.on('error', () => {});
  await waitPort(natsPort, Date.now() + 10_000);
  return {
    natsUrl: `nats://127.0.0.1:${natsPort}`,
    dir,
    stop: async () => {
      await kill(nats, natsState);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** nats-server + oxbase all. Returns {serverURL, natsUrl, stop, logs()}. */
export async function startOxbase() {
  const bin = oxbaseBinary();
  const natsServer = await startNats();
  const { dir, natsUrl } = natsServer;
  const port = await freePort();
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('OXBASE_') && !k.startsWith('PARSE_SERVER_')) env[k] = v;
  const ox = spawn(bin, ['all', '--port', String(port), '--data-dir', dir, '--app-id', APP_ID, '--master-key', MASTER_KEY], {
    cwd: dir,
    env: {
      ...env,
      OXBASE_NATS_URL: natsUrl,
      OXBASE_HOST: '127.0.0.1',
      OXBASE_ALLOW_CLIENT_CLASS_CREATION: 'true',
      OXBASE_EVENTS__ENABLED: 'true',
      OXBASE_TRIGGERS__ENABLED: 'true',
      OXBASE_JOBS__ENABLED: 'true',
      OXBASE_PUSH__ENABLED: 'false',
      NO_COLOR: '1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const oxState = track(ox);
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (oxState.exited) throw new Error(`oxbase exited: ${oxState.out}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/ready`);
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`oxbase not ready: ${oxState.out}`);
    await sleep(100);
  }
  return {
    serverURL: `http://127.0.0.1:${port}/parse`,
    natsUrl,
    logs: () => oxState.out,
    stop: async () => {
      await kill(ox, oxState);
      await natsServer.stop();
    },
  };
}

/** Spawns bin/oxbase-cloud on `cloudFile`; resolves once it printed "oxbase-cloud ready". */
export async function startRunner(ox, cloudFile, extraArgs = []) {
  const child = spawn(
    process.execPath,
    [path.join(pkg, 'bin/oxbase-cloud.js'), '--server-url', ox.serverURL || 'http://127.0.0.1:9/parse', '--app-id', APP_ID, '--master-key', MASTER_KEY, '--nats', ox.natsUrl, ...extraArgs, cloudFile],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const state = track(child);
  const deadline = Date.now() + 15_000;
  while (!state.out.includes('oxbase-cloud ready')) {
    if (state.exited) throw new Error(`runner exited: ${state.out}`);
    if (Date.now() > deadline) throw new Error(`runner not ready: ${state.out}`);
    await sleep(25);
  }
  return {
    logs: () => state.out,
    /** SIGTERM, resolves to the exit {code, signal}. */
    stop: () => kill(child, state),
  };
}
