// Helpers shared by both harnesses and the tests.
import net from 'node:net';

export const APP_ID = 'taskboard';
export const MASTER_KEY = 'taskboard-master-key';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
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

/** The environment without settings that would change what a server does. */
export function inheritedEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('OXBASE_') || k.startsWith('PARSE_SERVER_') || k.startsWith('PARSE_')) continue;
    env[k] = v;
  }
  return env;
}

/** Waits until `line` appears in the child's stdout; rejects if it exits. */
export function waitForLine(child, line, what, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not print "${line}" within ${timeoutMs} ms\nstdout:\n${out}\nstderr:\n${err}`)), timeoutMs);
    const onOut = (d) => {
      out += d;
      if (out.includes(line)) {
        clearTimeout(timer);
        child.stdout.off('data', onOut);
        resolve();
      }
    };
    child.stdout.on('data', onOut);
    child.stderr?.on('data', (d) => {
      err += d;
      if (err.length > 100_000) err = err.slice(-50_000);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (code ${code}, signal ${signal}) before "${line}"\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
}

/** Stops a child process: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopChild(child, graceMs = 5_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Polls `fn` until it returns a truthy value; returns it, or throws after `timeoutMs`. */
export async function eventually(fn, { timeoutMs = 10_000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`);
    }
    await sleep(intervalMs);
  }
}
