// Processes of one scenario: nats-server nodes, oxbase commands and a
// private PostgreSQL. Every child is killed when the campaign exits, however
// it exits, so a failed scenario leaves nothing running.

import { spawn, execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const children = new Set();
const cleanups = [];

function killAll() {
  for (const child of children) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      cleanup();
    } catch (err) {
      console.error(`cleanup failed: ${err.message}`);
    }
  }
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => process.exit(130));
}

/** Runs `fn` at the scenario's teardown, or at exit, newest first. */
export function atExit(fn) {
  cleanups.push(fn);
}

/** Kills every child still running and runs the cleanups: a scenario's end. */
export function teardown() {
  killAll();
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(what, within, check) {
  const deadline = Date.now() + within;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${within} ms`);
    await sleep(100);
  }
}

function portOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

export async function httpOk(url) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.arrayBuffer();
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * A child process that can be killed with SIGKILL and started again with
 * the same command line, its output appended to `log`.
 */
export class Proc {
  constructor({ name, command, args, env = {}, log, ready }) {
    Object.assign(this, { name, command, args, env, log, ready });
    this.child = null;
    this.starts = 0;
  }

  spawn() {
    const out = fs.openSync(this.log, 'a');
    fs.writeSync(out, `\n=== start ${++this.starts} at ${new Date().toISOString()}\n`);
    const child = spawn(this.command, this.args, {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    children.add(child);
    child.exitInfo = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        children.delete(child);
        resolve({ code, signal });
      }),
    );
    this.child = child;
    return this;
  }

  async start(within = 60_000) {
    this.spawn();
    await this.waitReady(within);
    return this;
  }

  async waitReady(within = 60_000) {
    const child = this.child;
    let exited = null;
    child.exitInfo.then((info) => (exited = info));
    await waitFor(`${this.name}`, within, async () => {
      if (exited) throw new Error(`${this.name} exited while starting: ${JSON.stringify(exited)}; see ${this.log}`);
      return this.ready();
    });
  }

  get alive() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGKILL, as a crash or the OOM killer would. */
  async kill9() {
    const child = this.child;
    if (!child || !this.alive) return;
    child.kill('SIGKILL');
    await child.exitInfo;
  }

  async terminate() {
    const child = this.child;
    if (!child || !this.alive) return;
    child.kill('SIGTERM');
    const done = await Promise.race([child.exitInfo, sleep(15_000).then(() => null)]);
    if (!done) await this.kill9();
  }
}

/** One nats-server with JetStream; `cluster` adds it to a cluster. */
export function natsServer({ bin, dir, name, port, cluster }) {
  const store = path.join(dir, `nats-${name}`);
  fs.mkdirSync(store, { recursive: true });
  const args = ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store, '-n', name];
  if (cluster) {
    args.push(
      '--cluster_name', 'oxfaults',
      '--cluster', `nats://127.0.0.1:${cluster.port}`,
      '--routes', cluster.routes.map((p) => `nats://127.0.0.1:${p}`).join(','),
    );
  }
  const proc = new Proc({
    name: `nats ${name}`,
    command: bin,
    args,
    log: path.join(dir, `nats-${name}.log`),
    ready: () => portOpen(port),
  });
  proc.port = port;
  proc.url = `nats://127.0.0.1:${port}`;
  proc.nodeName = name;
  return proc;
}

/**
 * `oxbase <command>` with the app id and master key of the campaign, the
 * settings as environment variables. `api` takes the data dir and port as
 * flags; the services take them from the environment.
 */
export function oxbase({ bin, dir, command, port, env, label }) {
  const args = [command, '--port', String(port)];
  const proc = new Proc({
    name: label ?? `oxbase ${command}:${port}`,
    command: bin,
    args,
    env: {
      OXBASE_HOST: '127.0.0.1',
      OXBASE_APP_ID: 'faults',
      OXBASE_MASTER_KEY: 'faults-master',
      OXBASE_ALLOW_CLIENT_CLASS_CREATION: 'true',
      OXBASE_LOG_FORMAT: 'text',
      RUST_LOG: process.env.RUST_LOG ?? 'info',
      ...env,
    },
    log: path.join(dir, `${label ?? command}-${port}.log`.replace(/[^\w.-]+/g, '_')),
    ready: () => httpOk(`http://127.0.0.1:${port}/ready`),
  });
  proc.port = port;
  proc.base = `http://127.0.0.1:${port}`;
  return proc;
}

/**
 * A PostgreSQL server of our own (initdb in `dir`, owned by the postgres
 * user), so that restarting it disturbs no one else's tests.
 */
export class Postgres {
  constructor({ port, keepLog }) {
    this.keepLog = keepLog;
    const versions = fs.readdirSync('/usr/lib/postgresql').sort((a, b) => Number(a) - Number(b));
    this.bin = `/usr/lib/postgresql/${versions.at(-1)}/bin`;
    // Under /tmp: the postgres user must reach it, and /work may be closed to it.
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), 'oxfaults-pg-'));
    this.data = path.join(this.root, 'data');
    this.socket = path.join(this.root, 'sock');
    this.log = path.join(this.root, 'postgres.log');
    this.port = port;
    this.uri = `postgres://oxbase@127.0.0.1:${port}/faults`;
  }

  // Asynchronous, so that the load keeps its pace while PostgreSQL stops.
  async asPostgres(tool, args) {
    const { stdout } = await promisify(execFile)('runuser', ['-u', 'postgres', '--', path.join(this.bin, tool), ...args]);
    return stdout;
  }

  async init() {
    for (const d of [this.data, this.socket]) fs.mkdirSync(d, { recursive: true });
    execFileSync('chown', ['-R', 'postgres:postgres', this.root]);
    fs.chmodSync(this.data, 0o700);
    await this.asPostgres('initdb', ['-D', this.data, '-U', 'oxbase', '-A', 'trust', '--no-sync']);
    // Cleanups run newest first: stop, keep the log, then remove.
    atExit(() => {
      if (this.keepLog && fs.existsSync(this.log)) fs.copyFileSync(this.log, this.keepLog);
      fs.rmSync(this.root, { recursive: true, force: true });
    });
    atExit(() =>
      execFileSync('runuser', ['-u', 'postgres', '--', path.join(this.bin, 'pg_ctl'), '-D', this.data, '-m', 'immediate', 'stop'], {
        stdio: 'ignore',
      }),
    );
    await this.start();
    await this.asPostgres('createdb', ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'oxbase', 'faults']);
  }

  async start() {
    await this.asPostgres('pg_ctl', [
      '-D', this.data, '-l', this.log, '-w',
      '-o', `-p ${this.port} -c listen_addresses=127.0.0.1 -k ${this.socket} -c max_connections=200`,
      'start',
    ]);
  }

  /** `fast` is what `pg_ctlcluster restart` does; `immediate` is a crash. */
  async stop(mode) {
    await this.asPostgres('pg_ctl', ['-D', this.data, '-m', mode, '-w', 'stop']);
  }
}

/** A tmpfs of `sizeMb` at `mountPoint`, unmounted at exit. */
export function tmpfs(mountPoint, sizeMb) {
  fs.mkdirSync(mountPoint, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMb}m`, 'tmpfs', mountPoint]);
  atExit(() => {
    execFileSync('umount', ['-l', mountPoint]);
    fs.rmdirSync(mountPoint);
  });
}
