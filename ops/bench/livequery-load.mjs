// LiveQuery load generator and measurer for ops/bench/livequery.sh.
//
// The main thread opens SUBSCRIBERS WebSockets speaking Parse's LiveQuery
// protocol (subscriber i watches Message where room = "r<i % ROOMS>"), in
// batches of BATCH, waiting for every `subscribed`. A worker thread then
// creates Message objects through REST at RATE per second for WARMUP +
// DURATION seconds, each stamped with its send time (sentAt, ms). Every
// `create` event's latency is its receive time minus sentAt; both threads
// read the same clock (performance.timeOrigin is the process's). Only
// writes sent inside the measured window (after the warm-up) count, for
// the writer's rate and for the events expected and delivered.
//
// The server's RSS and CPU come from /proc/SERVER_PID; OTHER_PIDS (comma
// separated, e.g. nats-server) add CPU seconds reported beside it.
//
// Environment: LQ_URL, BASE (REST, with the mount path), APP_ID, LABEL,
// SUBSCRIBERS, ROOMS, RATE, DURATION, WARMUP (s), CONCURRENCY, BATCH,
// DRAIN (s: longest wait for late events), SERVER_PID, OTHER_PIDS,
// CLK_TCK, RESULT (a file the JSON summary line is appended to).
import { readFileSync, appendFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const clock = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Subscribers of room k when subscriber i watches room i % rooms.
const roomSize = (k, subscribers, rooms) =>
  Math.floor(subscribers / rooms) + (k < subscribers % rooms ? 1 : 0);

async function main() {
  const env = (name, fallback) => process.env[name] ?? fallback;
  const cfg = {
    label: env('LABEL', 'server'),
    url: env('LQ_URL', 'ws://127.0.0.1:18337/parse'),
    base: env('BASE', 'http://127.0.0.1:18337/parse'),
    appId: env('APP_ID', 'bench'),
    subscribers: Number(env('SUBSCRIBERS', 10000)),
    rooms: Number(env('ROOMS', 1000)),
    rate: Number(env('RATE', 1000)),
    duration: Number(env('DURATION', 30)),
    warmup: Number(env('WARMUP', 5)),
    concurrency: Number(env('CONCURRENCY', 64)),
    batch: Number(env('BATCH', 500)),
    drain: Number(env('DRAIN', 15)),
    serverPid: env('SERVER_PID', ''),
    otherPids: env('OTHER_PIDS', '').split(',').filter(Boolean),
    clkTck: Number(env('CLK_TCK', 100)),
    result: env('RESULT', ''),
  };
  const here = path.dirname(fileURLToPath(import.meta.url));
  const require = createRequire(path.join(here, '../interop/package.json'));
  const WebSocket = require('ws');

  const stats = new Receiver(cfg);
  const rssBefore = rssKiB(cfg.serverPid);
  const sockets = [];
  const connectStart = clock();
  for (let first = 0; first < cfg.subscribers; first += cfg.batch) {
    const last = Math.min(first + cfg.batch, cfg.subscribers);
    const pending = [];
    for (let i = first; i < last; i++) pending.push(subscribe(WebSocket, cfg, i, stats, sockets));
    const settled = await Promise.allSettled(pending);
    const failed = settled.filter((s) => s.status === 'rejected');
    if (failed.length > 0) {
      console.error(`${cfg.label}: ${failed.length} of subscribers ${first}..${last - 1} failed, first: ${failed[0].reason}`);
      process.exit(1);
    }
  }
  const connectSeconds = (clock() - connectStart) / 1000;
  await sleep(1000);
  const rssSubscribed = rssKiB(cfg.serverPid);
  const perConnKiB = (rssSubscribed - rssBefore) / cfg.subscribers;
  console.log(`${cfg.label}: ${cfg.subscribers} subscribed in ${connectSeconds.toFixed(1)} s; server RSS ${mib(rssBefore)} -> ${mib(rssSubscribed)} MiB (${perConnKiB.toFixed(1)} KiB per connection)`);

  const start = clock() + 100;
  const windowStart = start + cfg.warmup * 1000;
  const windowEnd = windowStart + cfg.duration * 1000;
  stats.window(windowStart, windowEnd);

  let peakRss = rssSubscribed;
  const rssTimer = setInterval(() => { peakRss = Math.max(peakRss, rssKiB(cfg.serverPid)); }, 1000);
  let cpuAtWindow = null;
  setTimeout(() => { cpuAtWindow = cpuSnapshot(cfg); }, windowStart - clock());
  const loadCpuStart = process.cpuUsage();

  const written = await runWriter({ ...cfg, start, windowStart, windowEnd });
  await stats.drain(written.expected, cfg.drain * 1000);
  const cpuAtEnd = cpuSnapshot(cfg);
  clearInterval(rssTimer);
  const loadCpu = process.cpuUsage(loadCpuStart);

  const lat = stats.latencies();
  const summary = {
    label: cfg.label,
    subscribers: cfg.subscribers,
    rooms: cfg.rooms,
    rateTarget: cfg.rate,
    rate: written.ok / cfg.duration,
    writes: written.ok,
    writeErrors: written.errors,
    writesSkipped: written.skipped,
    restP50: written.restP50,
    restP99: written.restP99,
    expected: written.expected,
    delivered: stats.delivered,
    lateOrDuplicate: Math.max(0, stats.delivered - written.expected),
    p50: lat.p50,
    p99: lat.p99,
    max: lat.max,
    rssBeforeKiB: rssBefore,
    rssSubscribedKiB: rssSubscribed,
    rssPeakKiB: peakRss,
    perConnKiB,
    connectSeconds,
    serverCpuSeconds: cpuAtWindow ? cpuAtEnd.server - cpuAtWindow.server : null,
    otherCpuSeconds: cpuAtWindow ? cpuAtEnd.other - cpuAtWindow.other : null,
    loadCpuSeconds: (loadCpu.user + loadCpu.system) / 1e6,
    closed: stats.closed,
    errors: stats.errors,
    serverErrors: stats.serverErrors,
  };
  report(summary);
  if (cfg.result) appendFileSync(cfg.result, JSON.stringify(summary) + '\n');
  for (const ws of sockets) ws.terminate();
  process.exit(0);
}

// Opens subscriber i: connect, then subscribe; resolves on `subscribed`.
function subscribe(WebSocket, cfg, i, stats, sockets) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(cfg.url, { perMessageDeflate: false, handshakeTimeout: 60000 });
    sockets.push(ws);
    let ready = false;
    const timer = setTimeout(() => reject(new Error(`subscriber ${i}: no subscribed within 60 s`)), 60000);
    ws.on('open', () => ws.send(JSON.stringify({ op: 'connect', applicationId: cfg.appId })));
    ws.on('error', (err) => {
      stats.errors++;
      if (!ready) { clearTimeout(timer); reject(err); }
    });
    ws.on('close', () => {
      stats.closed++;
      if (!ready) { clearTimeout(timer); reject(new Error(`subscriber ${i}: closed before subscribed`)); }
    });
    ws.on('message', (data) => {
      const now = clock();
      const msg = JSON.parse(data);
      switch (msg.op) {
        case 'create':
          stats.event(now, msg.object.sentAt);
          break;
        case 'connected':
          ws.send(JSON.stringify({
            op: 'subscribe',
            requestId: 1,
            query: { className: 'Message', where: { room: `r${i % cfg.rooms}` } },
          }));
          break;
        case 'subscribed':
          ready = true;
          clearTimeout(timer);
          resolve();
          break;
        case 'error':
          stats.serverErrors++;
          if (!ready) { clearTimeout(timer); reject(new Error(`subscriber ${i}: ${data}`)); }
          break;
        default:
          break;
      }
    });
  });
}

// Counts and times the `create` events of writes sent inside the window.
class Receiver {
  constructor(cfg) {
    this.samples = new Float64Array(Math.max(1024, cfg.subscribers / cfg.rooms * cfg.rate * (cfg.duration + 1)));
    this.delivered = 0;
    this.outside = 0;
    this.closed = 0;
    this.errors = 0;
    this.serverErrors = 0;
    this.lastEvent = 0;
    this.from = Infinity;
    this.to = -Infinity;
  }

  window(from, to) {
    this.from = from;
    this.to = to;
  }

  event(now, sentAt) {
    this.lastEvent = now;
    if (!(sentAt >= this.from && sentAt < this.to)) {
      this.outside++;
      return;
    }
    if (this.delivered === this.samples.length) {
      const grown = new Float64Array(this.samples.length * 2);
      grown.set(this.samples);
      this.samples = grown;
    }
    this.samples[this.delivered++] = now - sentAt;
  }

  // Waits until every expected event came, or no event at all came for
  // 3 s, or `limit` ms passed.
  async drain(expected, limit) {
    const until = clock() + limit;
    while (this.delivered < expected && clock() < until && clock() - this.lastEvent < 3000) {
      await sleep(100);
    }
  }

  latencies() {
    const sorted = this.samples.subarray(0, this.delivered).sort();
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);
    return { p50: at(0.5), p99: at(0.99), max: sorted.length ? sorted[sorted.length - 1] : NaN };
  }
}

function runWriter(cfg) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: cfg });
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

// The writer: an open-loop token bucket at `rate`, at most `concurrency`
// requests in flight on keep-alive connections. Tokens the server cannot
// take (more than a tenth of a second behind) are dropped and counted, so
// a slow server lowers the achieved rate instead of queueing in here.
async function writer(cfg) {
  const url = new URL(cfg.base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.concurrency });
  const burst = Math.max(1, Math.ceil(cfg.rate / 10));
  const restTimes = [];
  let issued = 0;
  let inflight = 0;
  let ok = 0;
  let errors = 0;
  let skipped = 0;
  let expected = 0;
  const end = cfg.windowEnd;
  while (clock() < cfg.start) await sleep(1);

  await new Promise((done) => {
    const send = () => {
      const room = Math.floor(Math.random() * cfg.rooms);
      const sentAt = clock();
      const body = JSON.stringify({ room: `r${room}`, sentAt });
      inflight++;
      const req = http.request({
        agent,
        host: url.hostname,
        port: url.port,
        method: 'POST',
        path: `${url.pathname.replace(/\/$/, '')}/classes/Message`,
        headers: {
          'X-Parse-Application-Id': cfg.appId,
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(body),
        },
      }, (res) => {
        res.resume();
        res.on('end', () => {
          inflight--;
          const counted = sentAt >= cfg.windowStart && sentAt < cfg.windowEnd;
          if (res.statusCode === 201) {
            if (counted) {
              ok++;
              expected += roomSize(room, cfg.subscribers, cfg.rooms);
              restTimes.push(clock() - sentAt);
            }
          } else {
            errors++;
          }
          pump();
        });
      });
      req.on('error', () => { inflight--; errors++; pump(); });
      req.end(body);
    };
    const pump = () => {
      const now = clock();
      if (now >= end) {
        if (inflight === 0) { clearInterval(timer); done(); }
        return;
      }
      let due = Math.floor((now - cfg.start) * cfg.rate / 1000) - issued;
      if (due > burst) {
        skipped += due - burst;
        issued += due - burst;
        due = burst;
      }
      while (due > 0 && inflight < cfg.concurrency) {
        send();
        issued++;
        due--;
      }
    };
    const timer = setInterval(pump, 1);
  });
  agent.destroy();
  restTimes.sort((a, b) => a - b);
  const at = (q) => restTimes[Math.min(restTimes.length - 1, Math.floor(q * restTimes.length))];
  parentPort.postMessage({ ok, errors, skipped, expected, restP50: at(0.5), restP99: at(0.99) });
}

function rssKiB(pid) {
  if (!pid) return NaN;
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(line.split(/\s+/)[1]);
}

// utime + stime of a process, in seconds.
function cpuSeconds(pid, clkTck) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clkTck;
}

function cpuSnapshot(cfg) {
  return {
    server: cfg.serverPid ? cpuSeconds(cfg.serverPid, cfg.clkTck) : NaN,
    other: cfg.otherPids.reduce((sum, pid) => sum + cpuSeconds(pid, cfg.clkTck), 0),
  };
}

const mib = (kib) => (kib / 1024).toFixed(0);
const ms = (x) => (Number.isFinite(x) ? x.toFixed(1) : '-');

function report(s) {
  console.log(`${s.label}: writes ${s.writes} in ${s.rate.toFixed(0)}/s (target ${s.rateTarget}/s; ${s.writeErrors} errors, ${s.writesSkipped} tokens dropped), REST create p50 ${ms(s.restP50)} ms p99 ${ms(s.restP99)} ms`);
  console.log(`${s.label}: events ${s.delivered} of ${s.expected} expected; latency p50 ${ms(s.p50)} ms, p99 ${ms(s.p99)} ms, max ${ms(s.max)} ms`);
  console.log(`${s.label}: server RSS peak ${mib(s.rssPeakKiB)} MiB, CPU ${s.serverCpuSeconds?.toFixed(1)} s over the window and drain` +
    (s.otherCpuSeconds ? ` (+ ${s.otherCpuSeconds.toFixed(1)} s in other processes)` : '') +
    `; load generator CPU ${s.loadCpuSeconds.toFixed(1)} s; sockets closed ${s.closed}, socket errors ${s.errors}, server error messages ${s.serverErrors}`);
}

// Last, so every class and constant above is initialised.
if (isMainThread) {
  await main();
} else {
  await writer(workerData);
}
