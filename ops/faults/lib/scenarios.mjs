// The fault scenarios. Each starts its own NATS, oxbase processes and
// store under `ctx.out/<scenario>`, runs a steady load for `ctx.loadSeconds`
// while faults are injected at fixed points of it, then checks what was
// acknowledged against the store, the event stream and the deliveries.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { connect } from 'nats';
import { call, Load, objectLoad } from './load.mjs';
import { natsServer, oxbase, freePort, sleep, Postgres, tmpfs, httpOk } from './procs.mjs';
import { FakeFcm, JobWorker, LiveQuerySubscribers, WebhookCounter } from './sinks.mjs';
import { verifyWrites } from './verify.mjs';

class Stack {
  constructor(ctx, name) {
    this.ctx = ctx;
    this.dir = path.join(ctx.out, name);
    fs.mkdirSync(this.dir, { recursive: true });
    this.nodes = [];
  }

  async nats() {
    const node = natsServer({ bin: this.ctx.natsBin, dir: this.dir, name: 'n0', port: await freePort() });
    await node.start();
    this.nodes = [node];
    return node;
  }

  async natsCluster(size) {
    const ports = await Promise.all(Array.from({ length: size }, freePort));
    const clusterPorts = await Promise.all(Array.from({ length: size }, freePort));
    this.nodes = ports.map((port, i) =>
      natsServer({
        bin: this.ctx.natsBin,
        dir: this.dir,
        name: `n${i}`,
        port,
        cluster: { port: clusterPorts[i], routes: clusterPorts },
      }),
    );
    for (const node of this.nodes) node.spawn();
    for (const node of this.nodes) await node.waitReady();
    return this.nodes;
  }

  get natsUrl() {
    return this.nodes.map((n) => n.url).join(',');
  }

  get natsServers() {
    return this.nodes.map((n) => n.url);
  }

  /** `oxbase <command>` on this stack's NATS and store; not started. */
  async oxbase(command, env = {}, label) {
    return oxbase({
      bin: this.ctx.bin,
      dir: this.dir,
      command,
      port: await freePort(),
      label,
      env: { OXBASE_DATA_DIR: path.join(this.dir, 'data'), OXBASE_NATS_URL: this.natsUrl, ...env },
    });
  }
}

/**
 * Polls `/ready` of each process every 250 ms while the load runs and
 * adds up how long each answered anything but 200.
 */
class ReadyProbe {
  constructor(procs) {
    this.procs = procs;
    this.figures = new Map(procs.map((p) => [p.name, { notReadyMs: 0, answers: {} }]));
  }

  start() {
    this.running = true;
    this.task = (async () => {
      let previous = Date.now();
      while (this.running) {
        await sleep(250);
        const now = Date.now();
        await Promise.all(
          this.procs.map(async (proc) => {
            let answer = 'no answer';
            try {
              const response = await fetch(`${proc.base}/ready`, { signal: AbortSignal.timeout(1000) });
              await response.arrayBuffer();
              answer = String(response.status);
            } catch {
              // refused or timed out: counted as no answer
            }
            const figure = this.figures.get(proc.name);
            figure.answers[answer] = (figure.answers[answer] ?? 0) + 1;
            if (answer !== '200') figure.notReadyMs += now - previous;
          }),
        );
        previous = now;
      }
    })();
    return this;
  }

  async stop() {
    this.running = false;
    await this.task;
    return [...this.figures].map(
      ([name, f]) =>
        `${name}: not ready for ${(f.notReadyMs / 1000).toFixed(1)} s (${Object.entries(f.answers)
          .map(([a, n]) => `${a}: ${n}`)
          .join(', ')})`,
    );
  }
}

/**
 * Runs the load until `ctx.loadSeconds`, carrying out each step at its
 * time: `{ at (s), label, kind: 'fault' | 'restore', run }`. A restore's
 * mark is when it began; `<label> done` when it finished.
 */
async function timeline(loads, steps, seconds, probed = []) {
  const [load] = loads;
  const probe = new ReadyProbe(probed).start();
  for (const step of steps) {
    const wait = step.at * 1000 - (Date.now() - load.t0);
    if (wait > 0) await sleep(wait);
    for (const l of loads) l.mark(step.label, step.kind);
    await step.run();
    for (const l of loads) l.mark(`${step.label} done`, `${step.kind} done`);
  }
  const rest = seconds * 1000 - (Date.now() - load.t0);
  if (rest > 0) await sleep(rest);
  await Promise.all(loads.map((l) => l.stop()));
  load.readiness = await probe.stop();
}

/** Fault times for two faults in `seconds` of load, each lasting `down` s. */
function twoFaults(seconds, down) {
  const first = Math.round(seconds * 0.25);
  const second = Math.round(seconds * 0.6);
  return { first, firstBack: first + down, second, secondBack: second + down };
}

/**
 * How the load rode the faults: `held`, the acknowledgement rate while a
 * fault lasted (from each fault to the end of the restore after it) as a
 * share of the rate before the first; and `recoveryMs`, the longest time
 * from the end of a restore (the process ready again, the database
 * accepting connections, the space freed) to the last failed request after
 * it, before the next fault (0 when none failed after it).
 */
function faultFigures(load) {
  const summary = load.summary();
  const faults = load.marks.filter((m) => m.kind === 'fault');
  const restoreEnds = load.marks.filter((m) => m.kind === 'restore done');
  if (faults.length === 0) return { held: null, recoveryMs: null, summary };
  let acks = 0;
  let span = 0;
  for (const fault of faults) {
    const end = restoreEnds.find((r) => r.at > fault.at)?.at ?? summary.durationMs;
    acks += load.ackTimes.filter((t) => t >= fault.at && t < end).length;
    span += end - fault.at;
  }
  const held = summary.steadyRate > 0 && span > 0 ? (acks * 1000) / span / summary.steadyRate : null;
  let recoveryMs = 0;
  for (const restored of restoreEnds) {
    const next = faults.find((f) => f.at > restored.at)?.at ?? summary.durationMs;
    const after = load.failureTimes.filter((t) => t >= restored.at && t < next);
    if (after.length) recoveryMs = Math.max(recoveryMs, after.at(-1) - restored.at);
  }
  return { held, recoveryMs, summary };
}

function row(scenario, { load, verify, deliveries, notes = [], extra = {} }) {
  const { held, recoveryMs, summary } = faultFigures(load);
  return {
    scenario,
    seconds: Math.round(summary.durationMs / 1000),
    attempted: summary.attempted,
    acked: summary.acked,
    failed: summary.failed,
    failures: summary.failures,
    failureSamples: summary.failureSamples,
    lost: verify.lost,
    eventsLost: verify.eventsLost,
    duplicateEvents: verify.duplicateEvents,
    phantomEvents: verify.phantomEvents,
    storedWithoutEvent: verify.storedWithoutEvent,
    examples: verify.examples,
    p50: summary.p50,
    p99: summary.p99,
    maxLatency: summary.max,
    steadyRate: summary.steadyRate,
    held,
    recoveryMs,
    longestAckGapMs: summary.longestAckGapMs,
    marks: summary.marks,
    perSecond: summary.perSecond,
    readiness: load.readiness,
    deliveries,
    notes,
    ...extra,
  };
}

/** When each acknowledged write was acknowledged, by `objectId:n`. */
function ackTimes(load) {
  const at = new Map();
  load.writes.forEach((w, i) => at.set(`${w.id}:${w.n}`, load.t0 + load.ackTimes[i]));
  return at;
}

/**
 * How the process that stayed up served its share while the other was
 * down: its acknowledgement rate then against before the first kill.
 */
function survivorFigures(load, outages) {
  const kills = load.marks.filter((m) => m.kind === 'fault');
  const back = load.marks.filter((m) => m.kind === 'restore done');
  const before = kills[0].at;
  const lines = [];
  let worst = Infinity;
  outages.forEach(({ down, survivor }, i) => {
    const from = kills[i].at;
    const to = back.find((r) => r.at > from)?.at ?? load.duration;
    const steady = load.ackRate(1000, before, survivor);
    const during = load.ackRate(from, to, survivor);
    worst = Math.min(worst, steady > 0 ? during / steady : 0);
    lines.push(
      `while ${down} was down (${((to - from) / 1000).toFixed(1)} s) the other acknowledged ${during.toFixed(1)}/s (before: ${steady.toFixed(1)}/s) with ${load.failuresAt(from, to, survivor)} failures`,
    );
  });
  return { held: worst, lines };
}

// ---------------------------------------------------------------------------

/** Two `oxbase api` processes on one store, each killed -9 and restarted. */
async function apiKill(ctx, { name, slug, database }) {
  const stack = new Stack(ctx, slug);
  await stack.nats();
  let env = {};
  const notes = [];
  if (database === 'postgres') {
    const pg = new Postgres({ port: await freePort(), keepLog: path.join(stack.dir, 'postgres.log') });
    await pg.init();
    env = { OXBASE_DATABASE_URI: pg.uri };
    notes.push('two `oxbase api` on one PostgreSQL database');
  } else {
    notes.push('two `oxbase api` on one SQLite file (WAL)');
  }
  const a = await stack.oxbase('api', env, 'api-a');
  const b = await stack.oxbase('api', env, 'api-b');
  await a.start();
  await b.start();
  const className = 'FaultApi';
  const load = objectLoad({ className, bases: [a.base, b.base], rate: ctx.rate }).start();
  const t = twoFaults(ctx.loadSeconds, 5);
  await timeline(
    [load],
    [
      { at: t.first, label: 'kill -9 api A', kind: 'fault', run: () => a.kill9() },
      { at: t.firstBack, label: 'restart api A', kind: 'restore', run: () => a.start() },
      { at: t.second, label: 'kill -9 api B', kind: 'fault', run: () => b.kill9() },
      { at: t.secondBack, label: 'restart api B', kind: 'restore', run: () => b.start() },
    ],
    ctx.loadSeconds,
    [a, b],
  );
  const verify = await verifyWrites({ base: a.base, servers: stack.natsServers, className, writes: load.writes });
  notes.push('requests alternate between the two; a request to the dead one fails and is not retried');
  const survivors = survivorFigures(load, [
    { down: 'A', survivor: b.base },
    { down: 'B', survivor: a.base },
  ]);
  notes.push(...survivors.lines);
  // The load held is the survivor's: half the requests went to the dead process by design.
  return row(name, { load, verify, notes, extra: { held: survivors.held, heldNote: 'the survivor' } });
}

/** afterSave deliveries through two `oxbase triggers`, each killed -9 and restarted. */
async function triggersKill(ctx) {
  const stack = new Stack(ctx, 'triggers-kill');
  await stack.nats();
  const api = await (await stack.oxbase('api')).start();
  const t1 = await (await stack.oxbase('triggers', {}, 'triggers-1')).start();
  const t2 = await (await stack.oxbase('triggers', {}, 'triggers-2')).start();
  const webhook = await new WebhookCounter().listen(await freePort());
  const className = 'FaultTriggers';
  const hook = await call(api.base, 'POST', '/hooks/triggers', {
    master: true,
    body: { className, triggerName: 'afterSave', url: webhook.url },
  });
  if (!hook.ok) throw new Error(`registering the hook: ${hook.reason} ${JSON.stringify(hook.body)}`);
  await sleep(2000);
  const load = objectLoad({ className, bases: [api.base], rate: ctx.rate }).start();
  const t = twoFaults(ctx.loadSeconds, 5);
  await timeline(
    [load],
    [
      { at: t.first, label: 'kill -9 triggers 1', kind: 'fault', run: () => t1.kill9() },
      { at: t.firstBack, label: 'restart triggers 1', kind: 'restore', run: () => t1.start() },
      { at: t.second, label: 'kill -9 triggers 2', kind: 'fault', run: () => t2.kill9() },
      { at: t.secondBack, label: 'restart triggers 2', kind: 'restore', run: () => t2.start() },
    ],
    ctx.loadSeconds,
    [api, t1, t2],
  );
  const verify = await verifyWrites({ base: api.base, servers: stack.natsServers, className, writes: load.writes });
  const deliveries = await settleWebhook(webhook, verify.eventList, ackTimes(load));
  webhook.close();
  return row('kill -9 triggers', {
    load,
    verify,
    deliveries: { kind: 'afterSave webhook deliveries', ...deliveries },
    notes: ['two `oxbase triggers`, one afterSave webhook on the class; each process killed once'],
  });
}

/** Waits for a delivery of every event (at most 3 minutes), then 3 s for late duplicates. */
async function settleWebhook(webhook, events, acked) {
  const started = Date.now();
  const ids = new Set(events.map((e) => e.event.id));
  while (Date.now() - started < 180_000) {
    const delivered = new Set(webhook.deliveries.map((d) => d.eventId));
    if ([...ids].every((id) => delivered.has(id))) break;
    await sleep(500);
  }
  await sleep(3000);
  return { ...webhook.check(events, acked), settledMs: Date.now() - started - 3000 };
}

/** Jobs submitted under load, run by a NATS worker through two `oxbase jobs`, each killed -9. */
async function jobsKill(ctx) {
  const stack = new Stack(ctx, 'jobs-kill');
  await stack.nats();
  const api = await (await stack.oxbase('api')).start();
  const j1 = await (await stack.oxbase('jobs', {}, 'jobs-1')).start();
  const j2 = await (await stack.oxbase('jobs', {}, 'jobs-2')).start();
  const worker = await new JobWorker({ servers: stack.natsServers, name: 'fault-job', runMs: 500 }).start();
  const className = 'FaultJobs';
  const objects = objectLoad({ className, bases: [api.base], rate: ctx.rate }).start();
  const jobs = [];
  const submits = new Load({
    name: 'job submissions',
    bases: [api.base],
    writers: 2,
    rate: ctx.jobRate,
    master: true,
    step: (state, n) => ({ method: 'POST', path: '/queues/default/jobs', body: { name: 'fault-job', payload: { n } } }),
    acked: (state, n, body) => jobs.push({ id: body.job.id, n }),
  }).start();
  const t = twoFaults(ctx.loadSeconds, 5);
  await timeline(
    [objects, submits],
    [
      { at: t.first, label: 'kill -9 jobs 1', kind: 'fault', run: () => j1.kill9() },
      { at: t.firstBack, label: 'restart jobs 1', kind: 'restore', run: () => j1.start() },
      { at: t.second, label: 'kill -9 jobs 2', kind: 'fault', run: () => j2.kill9() },
      { at: t.secondBack, label: 'restart jobs 2', kind: 'restore', run: () => j2.start() },
    ],
    ctx.loadSeconds,
    [api, j1, j2],
  );
  const verify = await verifyWrites({ base: api.base, servers: stack.natsServers, className, writes: objects.writes });
  // A job whose process died mid-run runs again after `ack_wait_ms` (30 s).
  const started = Date.now();
  let states = {};
  let unfinished = jobs;
  while (Date.now() - started < 180_000) {
    states = await jobStates(api.base, unfinished);
    unfinished = unfinished.filter((j) => states[j.id] !== 'succeeded');
    if (unfinished.length === 0) break;
    await sleep(2000);
  }
  const settledMs = Date.now() - started;
  await sleep(2000);
  const stateCounts = {};
  for (const job of jobs) {
    const state = unfinished.includes(job) ? states[job.id] ?? 'unknown' : 'succeeded';
    stateCounts[state] = (stateCounts[state] ?? 0) + 1;
  }
  const neverRan = jobs.filter((j) => !worker.runs.has(j.id));
  const twice = jobs.filter((j) => (worker.runs.get(j.id)?.length ?? 0) > 1);
  // A second run is expected only of a job whose first run was in flight
  // on a process when it was killed.
  const kills = objects.marks.filter((m) => m.kind === 'fault').map((m) => objects.t0 + m.at);
  const unexplained = twice.filter((j) => {
    const first = worker.runs.get(j.id)[0].at;
    return !kills.some((k) => k >= first - 50 && k <= first + worker.runMs + 200);
  });
  await worker.close();
  const submitSummary = submits.summary();
  return row('kill -9 jobs', {
    load: objects,
    verify,
    deliveries: {
      kind: 'jobs',
      submitted: submitSummary.attempted,
      acknowledged: jobs.length,
      submitFailures: submitSummary.failures,
      lost: new Set([...neverRan, ...unfinished]).size,
      neverRan: neverRan.length,
      notSucceeded: unfinished.length,
      duplicates: twice.length,
      duplicatesNotInFlightAtAKill: unexplained.length,
      states: stateCounts,
      runs: [...worker.runs.values()].reduce((a, r) => a + r.length, 0),
      settledMs,
      examples: [
        ...[...new Set([...neverRan, ...unfinished])].map((j) => `job ${j.id} n=${j.n}: ${states[j.id]}`),
        ...unexplained.map((j) => `job ${j.id} ran twice, first run not in flight at a kill`),
      ].slice(0, 10),
    },
    notes: ['two `oxbase jobs`, a NATS worker taking 500 ms per run; each process killed once, jobs in flight'],
  });
}

async function jobStates(base, jobs) {
  const states = {};
  const queue = [...jobs];
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (queue.length) {
        const job = queue.shift();
        const answer = await call(base, 'GET', `/queues/default/jobs/${job.id}`, { master: true });
        states[job.id] = answer.ok ? answer.body.state ?? answer.body.job?.state : `HTTP ${answer.status}`;
      }
    }),
  );
  return states;
}

/** A schedule every second, fired through two `oxbase cron`, each killed -9. */
async function cronKill(ctx) {
  const stack = new Stack(ctx, 'cron-kill');
  await stack.nats();
  const api = await (await stack.oxbase('api')).start();
  await (await stack.oxbase('jobs', {}, 'jobs')).start();
  const cronEnv = { OXBASE_CRON__HISTORY: '1000' };
  const c1 = await (await stack.oxbase('cron', cronEnv, 'cron-1')).start();
  const c2 = await (await stack.oxbase('cron', cronEnv, 'cron-2')).start();
  const worker = await new JobWorker({ servers: stack.natsServers, name: 'tick', runMs: 10 }).start();
  await worker.watchEnqueued();
  const created = await call(api.base, 'POST', '/cron/schedules', {
    master: true,
    body: { name: 'tick', cron: '@every 1s', job: { name: 'tick', payload: {} } },
  });
  if (!created.ok) throw new Error(`creating the schedule: ${created.reason} ${JSON.stringify(created.body)}`);
  const since = created.body.since;
  const className = 'FaultCron';
  const load = objectLoad({ className, bases: [api.base], rate: ctx.rate }).start();
  const t = twoFaults(ctx.loadSeconds, 5);
  await timeline(
    [load],
    [
      { at: t.first, label: 'kill -9 cron 1', kind: 'fault', run: () => c1.kill9() },
      { at: t.firstBack, label: 'restart cron 1', kind: 'restore', run: () => c1.start() },
      { at: t.second, label: 'kill -9 cron 2', kind: 'fault', run: () => c2.kill9() },
      { at: t.secondBack, label: 'restart cron 2', kind: 'restore', run: () => c2.start() },
    ],
    ctx.loadSeconds,
    [api, c1, c2],
  );
  const end = Date.now();
  const verify = await verifyWrites({ base: api.base, servers: stack.natsServers, className, writes: load.writes });
  // A claim of a killed process is taken over after a lease (5 s) or two.
  await sleep(Math.max(0, 20_000 - (Date.now() - end)));
  const runs = await call(api.base, 'GET', '/cron/schedules/tick/runs?limit=1000', { master: true });
  const outcomes = {};
  const recorded = new Map();
  for (const run of runs.body?.results ?? []) {
    outcomes[run.outcome] = (outcomes[run.outcome] ?? 0) + 1;
    recorded.set(run.slot, (recorded.get(run.slot) ?? 0) + 1);
  }
  const recordedTwice = [...recorded.values()].filter((n) => n > 1).length;
  let ticks = 0;
  let missed = 0;
  let doubled = 0;
  let runsLost = 0;
  let runsTwice = 0;
  const examples = [];
  for (let at = (Math.floor(since / 1000) + 1) * 1000; at <= end; at += 1000) {
    ticks++;
    const slot = `tick@${at}`;
    const jobs = worker.enqueued.get(slot) ?? [];
    if (jobs.length === 0) {
      missed++;
      if (examples.length < 10) examples.push(`${slot} never enqueued (recorded ${recorded.get(slot) ?? 0} times)`);
      continue;
    }
    if (jobs.length > 1) {
      doubled++;
      if (examples.length < 10) examples.push(`${slot} enqueued ${jobs.length} times`);
    }
    const ran = worker.runs.get(jobs[0])?.length ?? 0;
    if (ran === 0) runsLost++;
    if (ran > 1) runsTwice++;
  }
  await worker.close();
  return row('kill -9 cron', {
    load,
    verify,
    deliveries: {
      kind: 'cron ticks (@every 1s)',
      ticks,
      lost: missed + runsLost,
      missed,
      duplicates: doubled + runsTwice,
      doubled,
      jobsNeverRan: runsLost,
      jobsRanTwice: runsTwice,
      recordedOutcomes: outcomes,
      runsRecordedTwice: recordedTwice,
      examples,
    },
    notes: ['two `oxbase cron` and one `oxbase jobs`; each cron process killed once'],
  });
}

/** LiveQuery subscribers across two `oxbase livequery`, each killed -9; they resume with lastEventId. */
async function livequeryKill(ctx) {
  const stack = new Stack(ctx, 'livequery-kill');
  await stack.nats();
  const api = await (await stack.oxbase('api')).start();
  const l1 = await (await stack.oxbase('livequery', {}, 'livequery-1')).start();
  const l2 = await (await stack.oxbase('livequery', {}, 'livequery-2')).start();
  const className = 'FaultLive';
  const subscribers = await new LiveQuerySubscribers({
    urls: [`ws://127.0.0.1:${l1.port}/`, `ws://127.0.0.1:${l2.port}/`],
    className,
    count: ctx.subscribers,
  }).start();
  const load = objectLoad({ className, bases: [api.base], rate: ctx.rate }).start();
  const t = twoFaults(ctx.loadSeconds, 5);
  await timeline(
    [load],
    [
      { at: t.first, label: 'kill -9 livequery 1', kind: 'fault', run: () => l1.kill9() },
      { at: t.firstBack, label: 'restart livequery 1', kind: 'restore', run: () => l1.start() },
      { at: t.second, label: 'kill -9 livequery 2', kind: 'fault', run: () => l2.kill9() },
      { at: t.secondBack, label: 'restart livequery 2', kind: 'restore', run: () => l2.start() },
    ],
    ctx.loadSeconds,
    [api, l1, l2],
  );
  const verify = await verifyWrites({ base: api.base, servers: stack.natsServers, className, writes: load.writes });
  await subscribers.settle(verify.eventList.length);
  await sleep(2000);
  subscribers.close();
  return row('kill -9 livequery', {
    load,
    verify,
    deliveries: { kind: `LiveQuery events to ${ctx.subscribers} subscribers`, ...subscribers.check(verify.eventList) },
    notes: [
      'two `oxbase livequery`, subscribers split over them; a dropped subscriber reconnects to the other with lastEventId',
    ],
  });
}

/** Pushes to android installations through two `oxbase push`, each killed -9, to a fake FCM. */
async function pushKill(ctx) {
  const stack = new Stack(ctx, 'push-kill');
  await stack.nats();
  const fcm = await new FakeFcm({ latencyMs: 500 }).listen(await freePort());
  const { privateKey } = crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const account = path.join(stack.dir, 'fcm-service-account.json');
  fs.writeFileSync(
    account,
    JSON.stringify({
      type: 'service_account',
      project_id: 'faults',
      client_email: 'faults@faults.iam.gserviceaccount.com',
      private_key: privateKey,
      token_uri: `${fcm.base}/token`,
    }),
  );
  const pushEnv = {
    OXBASE_PUSH__FCM__SERVICE_ACCOUNT: account,
    OXBASE_PUSH__FCM__ENDPOINT: fcm.base,
    OXBASE_PUSH__BATCH_SIZE: '100',
  };
  const api = await (await stack.oxbase('api', pushEnv)).start();
  const tokens = [];
  for (let i = 0; i < ctx.devices; i++) {
    const token = `fault-device-${i}`;
    const answer = await call(api.base, 'POST', '/installations', {
      master: true,
      body: { deviceType: 'android', deviceToken: token, installationId: crypto.randomUUID(), channels: ['faults'] },
    });
    if (!answer.ok) throw new Error(`creating an installation: ${answer.reason} ${JSON.stringify(answer.body)}`);
    tokens.push(token);
  }
  const p1 = await (await stack.oxbase('push', pushEnv, 'push-1')).start();
  const p2 = await (await stack.oxbase('push', pushEnv, 'push-2')).start();
  const className = 'FaultPush';
  const objects = objectLoad({ className, bases: [api.base], rate: ctx.rate }).start();
  const pushIds = [];
  const pushes = new Load({
    name: 'pushes',
    bases: [api.base],
    writers: 1,
    rate: ctx.pushRate,
    master: true,
    step: (state, n) => ({ method: 'POST', path: '/push', body: { channels: ['faults'], data: { alert: `push ${n}` } } }),
    acked: (state, n, body, base, answer) => pushIds.push(answer.headers.get('x-parse-push-status-id')),
  }).start();
  const t = twoFaults(ctx.loadSeconds, 5);
  await timeline(
    [objects, pushes],
    [
      { at: t.first, label: 'kill -9 push 1', kind: 'fault', run: () => p1.kill9() },
      { at: t.firstBack, label: 'restart push 1', kind: 'restore', run: () => p1.start() },
      { at: t.second, label: 'kill -9 push 2', kind: 'fault', run: () => p2.kill9() },
      { at: t.secondBack, label: 'restart push 2', kind: 'restore', run: () => p2.start() },
    ],
    ctx.loadSeconds,
    [api, p1, p2],
  );
  const verify = await verifyWrites({ base: api.base, servers: stack.natsServers, className, writes: objects.writes });
  // A batch of a killed process goes to another after `ack_wait_ms` (30 s).
  const started = Date.now();
  let statuses = {};
  while (Date.now() - started < 180_000) {
    statuses = {};
    for (const id of pushIds) {
      const answer = await call(api.base, 'GET', `/classes/_PushStatus/${id}`, { master: true });
      const status = answer.ok ? answer.body.status : `HTTP ${answer.status}`;
      statuses[status] = (statuses[status] ?? 0) + 1;
    }
    if ((statuses.succeeded ?? 0) === pushIds.length) break;
    await sleep(2000);
  }
  const settledMs = Date.now() - started;
  await sleep(2000);
  fcm.close();
  return row('kill -9 push', {
    load: objects,
    verify,
    deliveries: {
      kind: `notifications (${pushIds.length} pushes x ${tokens.length} android devices)`,
      pushes: pushIds.length,
      pushFailures: pushes.summary().failures,
      statuses,
      settledMs,
      ...fcm.check(pushIds, tokens),
    },
    notes: ['two `oxbase push`, batches of 100 devices, a fake FCM taking 500 ms per message, so that batches are in flight at the kills; each process killed once'],
  });
}

/** nats-server killed -9 and restarted under load: a single node, or one node of three. */
async function natsKill(ctx, { cluster }) {
  const name = cluster ? 'nats-cluster-node-kill' : 'nats-kill';
  const stack = new Stack(ctx, name);
  const env = {};
  if (cluster) {
    await stack.natsCluster(3);
    Object.assign(env, {
      OXBASE_EVENTS__STREAM__REPLICAS: '3',
      OXBASE_TRIGGERS__REPLICAS: '3',
      OXBASE_JOBS__REPLICAS: '3',
      OXBASE_CRON__REPLICAS: '3',
      OXBASE_PUSH__REPLICAS: '3',
    });
  } else {
    await stack.nats();
  }
  const api = await (await stack.oxbase('api', env)).start();
  const triggers = await (await stack.oxbase('triggers', env, 'triggers')).start();
  const webhook = await new WebhookCounter().listen(await freePort());
  const className = 'FaultNats';
  const hook = await call(api.base, 'POST', '/hooks/triggers', {
    master: true,
    body: { className, triggerName: 'afterSave', url: webhook.url },
  });
  if (!hook.ok) throw new Error(`registering the hook: ${hook.reason} ${JSON.stringify(hook.body)}`);
  await sleep(2000);

  let victim = stack.nodes[0];
  const notes = [];
  if (cluster) {
    const leader = await streamLeader(stack.natsServers, 'OXBASE_EVENTS');
    victim = stack.nodes.find((n) => n.nodeName === leader) ?? victim;
    notes.push(`3-node cluster, streams at 3 replicas; killed ${victim.nodeName}, the OXBASE_EVENTS leader`);
  } else {
    notes.push('one nats-server, killed -9, restarted on the same store after 10 s');
  }
  notes.push('one `oxbase triggers` with an afterSave webhook on the class');
  const load = objectLoad({ className, bases: [api.base], rate: ctx.rate }).start();
  const first = Math.round(ctx.loadSeconds * 0.33);
  await timeline(
    [load],
    [
      { at: first, label: `kill -9 nats ${victim.nodeName}`, kind: 'fault', run: () => victim.kill9() },
      { at: first + 10, label: `restart nats ${victim.nodeName}`, kind: 'restore', run: () => victim.start() },
    ],
    ctx.loadSeconds,
    [api, triggers],
  );
  const verify = await verifyWrites({ base: api.base, servers: stack.natsServers, className, writes: load.writes });
  const deliveries = await settleWebhook(webhook, verify.eventList, ackTimes(load));
  webhook.close();
  return row(cluster ? 'nats-server: one node of three killed -9' : 'nats-server killed -9 (single node)', {
    load,
    verify,
    deliveries: { kind: 'afterSave webhook deliveries', ...deliveries },
    notes,
  });
}

async function streamLeader(servers, stream) {
  const nc = await connect({ servers });
  try {
    const jsm = await nc.jetstreamManager();
    return (await jsm.streams.info(stream)).cluster?.leader;
  } finally {
    await nc.close();
  }
}

/** PostgreSQL stopped (fast, then immediate: a crash) and started again under load. */
async function postgresRestart(ctx) {
  const stack = new Stack(ctx, 'postgres-restart');
  await stack.nats();
  const pg = new Postgres({ port: await freePort(), keepLog: path.join(stack.dir, 'postgres.log') });
  await pg.init();
  const api = await (await stack.oxbase('api', { OXBASE_DATABASE_URI: pg.uri })).start();
  const className = 'FaultPostgres';
  const load = objectLoad({ className, bases: [api.base], rate: ctx.rate }).start();
  const t = twoFaults(ctx.loadSeconds, 5);
  await timeline(
    [load],
    [
      { at: t.first, label: 'pg_ctl stop -m fast', kind: 'fault', run: () => pg.stop('fast') },
      { at: t.firstBack, label: 'pg_ctl start', kind: 'restore', run: () => pg.start() },
      { at: t.second, label: 'pg_ctl stop -m immediate (crash)', kind: 'fault', run: () => pg.stop('immediate') },
      { at: t.secondBack, label: 'pg_ctl start (crash recovery)', kind: 'restore', run: () => pg.start() },
    ],
    ctx.loadSeconds,
    [api],
  );
  const verify = await verifyWrites({ base: api.base, servers: stack.natsServers, className, writes: load.writes });
  return row('PostgreSQL restarted (fast, then immediate)', {
    load,
    verify,
    notes: [
      'a private PostgreSQL (initdb under /tmp), stopped for 5 s twice: `-m fast` as `pg_ctlcluster restart` does, then `-m immediate`, a crash with WAL recovery',
    ],
  });
}

/** The SQLite data directory on a 20 MiB tmpfs, filled to the last byte, then freed. */
async function diskFull(ctx) {
  const stack = new Stack(ctx, 'disk-full');
  await stack.nats();
  const mount = `/tmp/oxfaults-full-${process.pid}`;
  tmpfs(mount, 20);
  const api = await (await stack.oxbase('api', { OXBASE_DATA_DIR: mount })).start();
  const className = 'FaultDisk';
  const load = objectLoad({ className, bases: [api.base], rate: ctx.rate }).start();
  const filler = path.join(mount, 'filler');
  const t = twoFaults(ctx.loadSeconds, Math.round(ctx.loadSeconds * 0.35));
  let filled = 0;
  let usedBefore = '';
  await timeline(
    [load],
    [
      {
        at: t.first,
        label: 'fill the data directory',
        kind: 'fault',
        run: async () => {
          usedBefore = usage(mount);
          filled = await fill(filler);
        },
      },
      {
        at: t.firstBack,
        label: 'delete the filler',
        kind: 'restore',
        run: () => fs.promises.rm(filler),
      },
    ],
    ctx.loadSeconds,
    [api],
  );
  const healthy = await httpOk(`${api.base}/health`);
  const alive = api.alive;
  const verify = await verifyWrites({ base: api.base, servers: stack.natsServers, className, writes: load.writes });
  return row('disk full (SQLite data dir)', {
    load,
    verify,
    notes: [
      `the data dir on a 20 MiB tmpfs (before filling: ${usedBefore}); ${Math.round(filled / 1024)} KiB filler written until ENOSPC, kept ${t.firstBack - t.first} s, then deleted`,
      `the api process ${alive ? 'stayed up' : 'DIED'}; /health ${healthy ? 'answered' : 'did not answer'}`,
    ],
  });
}

/** The files of `dir` and their sizes, for the report. */
function usage(dir) {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => {
      const file = path.join(e.parentPath ?? e.path, e.name);
      return `${path.relative(dir, file)} ${Math.round(fs.statSync(file).size / 1024)} KiB`;
    })
    .join(', ');
}

/** Writes `file` until the filesystem refuses a byte more; returns the bytes written. */
async function fill(file) {
  const handle = await fs.promises.open(file, 'w');
  let written = 0;
  try {
    for (const size of [1 << 20, 1 << 12, 1]) {
      const chunk = Buffer.alloc(size, 0x61);
      for (;;) {
        try {
          const { bytesWritten } = await handle.write(chunk);
          written += bytesWritten;
          if (bytesWritten < size) break;
        } catch (err) {
          if (err.code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
  } finally {
    await handle.close();
  }
  return written;
}

export const SCENARIOS = {
  'api-kill': (ctx) => apiKill(ctx, { name: 'kill -9 api (SQLite)', slug: 'api-kill', database: 'sqlite' }),
  'api-kill-pg': (ctx) => apiKill(ctx, { name: 'kill -9 api (PostgreSQL)', slug: 'api-kill-pg', database: 'postgres' }),
  'triggers-kill': triggersKill,
  'jobs-kill': jobsKill,
  'cron-kill': cronKill,
  'livequery-kill': livequeryKill,
  'push-kill': pushKill,
  'nats-kill': (ctx) => natsKill(ctx, { cluster: false }),
  'nats-cluster-kill': (ctx) => natsKill(ctx, { cluster: true }),
  'postgres-restart': postgresRestart,
  'disk-full': diskFull,
};
