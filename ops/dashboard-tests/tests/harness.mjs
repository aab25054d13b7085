// What the Parse Dashboard test runs on: `oxbase dev` on a free port with a
// temp data dir (it starts its own nats-server, found on PATH, on another
// free port), a small webhook server answering job runs, Parse Dashboard's
// Express middleware serving the real dashboard on a free port, and Debian's
// headless Chromium driven by playwright-core. Everything started here is
// stopped, and every temp dir removed, by the returned stop().
//
// OXBASE_BIN overrides the binary (default: ../../target/debug/oxbase from
// ops/dashboard-tests). CHROMIUM_PATH overrides /usr/bin/chromium.
// OXBASE_DASHBOARD_OUTPUT overrides where screenshots go (default:
// ops/dashboard-tests/output).

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { access, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const suiteRoot = path.resolve(here, '..');
const require = createRequire(import.meta.url);
// parse-dashboard is CommonJS and brings its own Express.
const ParseDashboard = require('parse-dashboard');
const express = createRequire(require.resolve('parse-dashboard'))('express');

export const APP_ID = 'oxbase-dashboard-test';
export const MASTER_KEY = 'oxbase-dashboard-test-master-key';
export const APP_NAME = 'oxbase-e2e';
export const WEBHOOK_KEY = 'oxbase-dashboard-webhook-key';
const READY_TIMEOUT_MS = 30_000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function outputDir() {
  return path.resolve(process.env.OXBASE_DASHBOARD_OUTPUT || path.join(suiteRoot, 'output'));
}

function binaryPath() {
  const fromEnv = process.env.OXBASE_BIN;
  if (fromEnv) return path.resolve(fromEnv);
  return path.resolve(suiteRoot, '../../target/debug/oxbase');
}

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

// The caller's OXBASE_* / PARSE_SERVER_* settings would change what the
// server does, so they are not passed on.
function inheritedEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('OXBASE_') || k.startsWith('PARSE_SERVER_')) continue;
    env[k] = v;
  }
  return env;
}

/** `oxbase dev` on free ports with a temp data dir. */
async function startOxbase() {
  const bin = binaryPath();
  try {
    await access(bin, fsConstants.X_OK);
  } catch {
    throw new Error(`oxbase binary not found at ${bin}: run \`cargo build -p oxbase\`, or set OXBASE_BIN`);
  }
  const port = await freePort();
  const natsPort = await freePort();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'oxbase-dashboard-'));
  const child = spawn(
    bin,
    ['dev', '--port', String(port), '--data-dir', dataDir, '--app-id', APP_ID, '--master-key', MASTER_KEY],
    {
      env: {
        ...inheritedEnv(),
        // Its own NATS on a free port, never one another process runs.
        OXBASE_NATS_URL: `nats://127.0.0.1:${natsPort}`,
        OXBASE_TRIGGERS__WEBHOOK_KEY: WEBHOOK_KEY,
        NO_COLOR: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let log = '';
  const keep = (d) => {
    log += d;
    if (log.length > 200_000) log = log.slice(-100_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve((exited = { code, signal })));
    child.on('error', (error) => resolve((exited = { error })));
  });
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => exited || child.kill('SIGKILL'), 8_000);
      await exitPromise;
      clearTimeout(timer);
    }
    // dev's nats-server dies with it (kill on drop); make sure of it before
    // its store dir goes.
    await waitPortClosed(natsPort, 5_000);
    await rm(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`oxbase dev exited before it was ready (${JSON.stringify(exited)}):\n${log}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`oxbase dev did not answer /ready within ${READY_TIMEOUT_MS} ms:\n${log}`);
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
  return { port, serverURL: `http://127.0.0.1:${port}/parse`, log: () => log, stop };
}

async function waitPortClosed(port, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const open = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (!open) return;
    await sleep(100);
  }
}

/**
 * The job handler: a webhook that answers every run with success and
 * remembers it. `runs` is every run received ({ path, headers, body }).
 */
async function startWebhook() {
  const runs = [];
  const srv = http.createServer((req, res) => {
    let data = '';
    req.on('data', (chunk) => (data += chunk));
    req.on('end', () => {
      let body = null;
      try {
        body = JSON.parse(data);
      } catch {
        // recorded as null
      }
      runs.push({ path: req.url, headers: req.headers, body });
      res.setHeader('Content-Type', 'application/json');
      // The dashboard's "Run" dialog sends the parameters as `input`.
      const what = body?.payload?.input?.what ?? body?.payload?.what ?? 'everything';
      res.end(JSON.stringify({ success: `cleaned ${what}` }));
    });
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    url: (p) => `http://127.0.0.1:${srv.address().port}${p}`,
    runs,
    stop: () => new Promise((resolve) => srv.close(resolve)),
  };
}

/** Parse Dashboard, as its Express middleware under /dashboard. */
async function startDashboard(serverURL) {
  const port = await freePort();
  const dashboard = new ParseDashboard(
    {
      apps: [
        {
          serverURL,
          appId: APP_ID,
          masterKey: MASTER_KEY,
          appName: APP_NAME,
        },
      ],
    },
    { allowInsecureHTTP: true, cookieSessionSecret: 'oxbase-dashboard-test-secret' },
  );
  const app = express();
  app.use('/dashboard', dashboard);
  const server = await new Promise((resolve) => {
    const s = app.listen(port, '127.0.0.1', () => resolve(s));
  });
  return {
    url: `http://127.0.0.1:${port}/dashboard`,
    stop: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

/** Debian's Chromium, headless, with a fresh profile. */
async function startBrowser() {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'oxbase-dashboard-chromium-'));
  const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  try {
    await access(executablePath, fsConstants.X_OK);
  } catch {
    throw new Error(`no Chromium at ${executablePath}: apt-get install chromium, or set CHROMIUM_PATH`);
  }
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1920, height: 1080 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    stop: async () => {
      await context.close().catch(() => {});
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Starts everything. Returns { oxbase, webhook, dashboard, context, page,
 * failures, rest, stop }: `failures` is every request the browser made to
 * oxbase that got a non-2xx answer (or none), `rest` a master-key REST call.
 */
export async function startStack() {
  const stops = [];
  const stop = async () => {
    for (const s of stops.reverse()) {
      try {
        await s();
      } catch (err) {
        process.stderr.write(`cleanup: ${err && err.stack ? err.stack : err}\n`);
      }
    }
  };
  try {
    const oxbase = await startOxbase();
    stops.push(oxbase.stop);
    const webhook = await startWebhook();
    stops.push(webhook.stop);
    const dashboard = await startDashboard(oxbase.serverURL);
    stops.push(dashboard.stop);
    const browser = await startBrowser();
    stops.push(browser.stop);
    await mkdir(outputDir(), { recursive: true });

    // The dashboard asks Google for fonts; there is no internet here, so
    // anything not on this machine fails at once rather than on DNS.
    await browser.context.route(
      (url) => url.hostname !== '127.0.0.1' && url.hostname !== 'localhost',
      (route) => route.abort('blockedbyclient'),
    );
    const failures = [];
    const pending = new Set();
    const page = browser.context.pages()[0] || (await browser.context.newPage());
    const origin = `http://127.0.0.1:${oxbase.port}`;
    // The dashboard route a request was made from, such as browser/GameScore.
    const screenOf = (url) => new URL(url).pathname.replace(/^\/dashboard\/(apps\/[^/]+\/)?/, '') || '/';
    const describe = (req) => {
      const u = new URL(req.url());
      let body = req.postData();
      // The JS SDK tunnels every call as a POST with _method in the body.
      let method = req.method();
      try {
        const parsed = JSON.parse(body);
        if (parsed && parsed._method) method = `${parsed._method} (tunnelled)`;
        if (parsed) {
          for (const k of ['_ApplicationId', '_MasterKey', '_ClientVersion', '_InstallationId', '_JavaScriptKey', '_SessionToken', '_method']) delete parsed[k];
          body = JSON.stringify(parsed);
        }
      } catch {
        // not JSON
      }
      return { method, path: u.pathname, query: u.search, requestBody: body };
    };
    page.on('response', async (res) => {
      const req = res.request();
      if (!req.url().startsWith(origin)) return;
      if (res.status() >= 200 && res.status() < 300) return;
      if (req.method() === 'OPTIONS') return;
      const entry = { ...describe(req), status: res.status(), responseBody: null, screen: screenOf(page.url()) };
      failures.push(entry);
      const p = res
        .text()
        .then((t) => (entry.responseBody = t.slice(0, 2000)))
        .catch(() => {});
      pending.add(p);
      p.finally(() => pending.delete(p));
    });
    page.on('requestfailed', (req) => {
      if (!req.url().startsWith(origin)) return;
      failures.push({ ...describe(req), status: 'no answer', responseBody: req.failure()?.errorText, screen: screenOf(page.url()) });
    });
    const consoleErrors = [];
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      if (/ERR_BLOCKED_BY_CLIENT|ERR_NAME_NOT_RESOLVED/.test(msg.text())) return;
      consoleErrors.push(msg.text().slice(0, 500));
    });
    page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${String(err).slice(0, 500)}`));

    async function rest(method, p, body) {
      const res = await fetch(`${oxbase.serverURL}${p}`, {
        method,
        headers: {
          'X-Parse-Application-Id': APP_ID,
          'X-Parse-Master-Key': MASTER_KEY,
          'Content-Type': 'application/json',
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        // left null
      }
      return { status: res.status, headers: res.headers, body: json, text };
    }

    return {
      oxbase,
      webhook,
      dashboard,
      context: browser.context,
      page,
      failures,
      consoleErrors,
      settle: () => Promise.all([...pending]),
      rest,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
