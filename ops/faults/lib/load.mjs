// Steady REST load from several concurrent writers. Every request is paced
// (a writer that falls behind does not burst to catch up), spread round
// robin over the given API processes, and recorded: what was acknowledged,
// what failed and why, and how long each took. A request that failed may
// or may not have committed, so it counts as neither acknowledged nor lost.

import { sleep } from './procs.mjs';

export const APP_ID = 'faults';
export const MASTER_KEY = 'faults-master';

/** The reason class of a request that got no answer. */
export function classifyError(err) {
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') return 'timeout';
  const code = err?.cause?.code ?? err?.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE') return 'connection reset';
  return code ?? String(err?.message ?? err);
}

/**
 * One REST request. Resolves `{ ok, status, body, reason, headers }`; never throws,
 * so a writer can count whatever happened.
 */
export async function call(base, method, path, { body, master = false, timeoutMs = 10_000, headers = {} } = {}) {
  const init = {
    method,
    headers: { 'X-Parse-Application-Id': APP_ID, ...headers },
    signal: AbortSignal.timeout(timeoutMs),
  };
  if (master) init.headers['X-Parse-Master-Key'] = MASTER_KEY;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  let text;
  try {
    response = await fetch(`${base}/parse${path}`, init);
    text = await response.text();
  } catch (err) {
    return { ok: false, status: 0, reason: classifyError(err) };
  }
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  if (response.ok) return { ok: true, status: response.status, body: parsed, headers: response.headers };
  const code = parsed && typeof parsed === 'object' ? parsed.code : undefined;
  const reason = `HTTP ${response.status}${code !== undefined ? ` code ${code}` : ''}`;
  return { ok: false, status: response.status, body: parsed ?? text, reason };
}

export function percentile(values, p) {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * A paced load. `step(writer, n)` returns the request to send for global
 * sequence number `n` ({ method, path, body }) and `acked(writer, n,
 * answer)` records an acknowledged one; the writer state is the load's
 * own, one object per writer.
 */
export class Load {
  constructor({ name, bases, writers, rate, timeoutMs = 10_000, step, acked, master = false }) {
    Object.assign(this, { name, bases, writers, rate, timeoutMs, step, ackedHook: acked, master });
    this.counter = 0;
    this.sent = 0;
    this.attempted = 0;
    this.ackedCount = 0;
    this.failures = new Map();
    this.failureSamples = new Map();
    this.failureTimes = [];
    this.failureBases = [];
    this.ackTimes = [];
    this.ackBases = [];
    this.latencies = [];
    this.marks = [];
    this.stopped = false;
  }

  start() {
    this.t0 = Date.now();
    this.tasks = Array.from({ length: this.writers }, (_, w) => this.writer({ id: w, own: [] }));
    return this;
  }

  /** Notes a fault or a restore (`kind`) on the load's clock. */
  mark(label, kind) {
    this.marks.push({ label, at: Date.now() - this.t0, kind });
  }

  async stop() {
    this.stopped = true;
    await Promise.all(this.tasks);
    this.duration = Date.now() - this.t0;
    return this;
  }

  async writer(state) {
    const period = (this.writers * 1000) / this.rate;
    // Writers start spread over one period, not all at once.
    let next = Date.now() + (state.id * period) / this.writers;
    while (!this.stopped) {
      const wait = next - Date.now();
      if (wait > 0) await sleep(wait);
      if (this.stopped) break;
      next = Math.max(next + period, Date.now());
      await this.once(state);
    }
  }

  async once(state) {
    const n = ++this.counter;
    const request = this.step(state, n);
    const base = this.bases[this.sent++ % this.bases.length];
    this.attempted++;
    const started = Date.now();
    const answer = await call(base, request.method, request.path, {
      body: request.body,
      master: this.master,
      timeoutMs: this.timeoutMs,
    });
    const at = Date.now() - this.t0;
    if (answer.ok) {
      this.ackedCount++;
      this.ackTimes.push(at);
      this.ackBases.push(base);
      this.latencies.push(Date.now() - started);
      this.ackedHook(state, n, answer.body, base, answer);
    } else {
      this.failures.set(answer.reason, (this.failures.get(answer.reason) ?? 0) + 1);
      if (!this.failureSamples.has(answer.reason)) {
        this.failureSamples.set(answer.reason, {
          request: `${request.method} ${request.path}`,
          answer: answer.body,
          base,
          at,
        });
      }
      this.failureTimes.push(at);
      this.failureBases.push(base);
      state.lastFailure = answer;
    }
  }

  /** Acknowledgements per second over [from, to) ms of the load's clock, from `base` or all. */
  ackRate(from, to, base) {
    if (to <= from) return 0;
    const acks = this.ackTimes.filter((t, i) => t >= from && t < to && (!base || this.ackBases[i] === base)).length;
    return (acks * 1000) / (to - from);
  }

  failuresAt(from, to, base) {
    return this.failureTimes.filter((t, i) => t >= from && t < to && (!base || this.failureBases[i] === base)).length;
  }

  /** The longest stretch with no acknowledged request, in ms. */
  longestAckGap() {
    let gap = 0;
    let previous = 0;
    for (const t of this.ackTimes) {
      gap = Math.max(gap, t - previous);
      previous = t;
    }
    return Math.max(gap, this.duration - previous);
  }

  /** `acked/failed` for each second of the load. */
  perSecond() {
    const seconds = Math.ceil(this.duration / 1000);
    const acked = new Array(seconds).fill(0);
    const failed = new Array(seconds).fill(0);
    for (const t of this.ackTimes) acked[Math.min(seconds - 1, Math.floor(t / 1000))]++;
    for (const t of this.failureTimes) failed[Math.min(seconds - 1, Math.floor(t / 1000))]++;
    return acked.map((a, i) => `${a}/${failed[i]}`);
  }

  summary() {
    const first = this.marks[0]?.at;
    const steady = first !== undefined ? this.ackRate(1000, first) : this.ackRate(1000, this.duration);
    return {
      name: this.name,
      durationMs: this.duration,
      attempted: this.attempted,
      acked: this.ackedCount,
      failed: this.attempted - this.ackedCount,
      failures: Object.fromEntries(this.failures),
      failureSamples: Object.fromEntries(this.failureSamples),
      p50: percentile(this.latencies, 50),
      p99: percentile(this.latencies, 99),
      max: percentile(this.latencies, 100),
      steadyRate: steady,
      longestAckGapMs: this.longestAckGap(),
      errorWindowMs: this.failureTimes.length
        ? this.failureTimes.at(-1) - this.failureTimes[0]
        : 0,
      firstFailureMs: this.failureTimes[0],
      lastFailureMs: this.failureTimes.at(-1),
      marks: this.marks,
      perSecond: this.perSecond(),
    };
  }
}

/**
 * Creates and updates of objects of `className`: each writer creates an
 * object every `createEvery` steps (and when it has none) and otherwise
 * sets `n` on one of its own objects, so one object's updates are
 * sequential and its `n` only grows. `writes` lists what was acknowledged.
 */
export function objectLoad({ className, bases, writers = 4, rate = 40, createEvery = 4, timeoutMs }) {
  const writes = [];
  const load = new Load({
    name: `objects ${className}`,
    bases,
    writers,
    rate,
    timeoutMs,
    step(state, n) {
      state.steps = (state.steps ?? 0) + 1;
      if (state.own.length === 0 || state.steps % createEvery === 0) {
        state.pending = { op: 'create', n };
        return { method: 'POST', path: `/classes/${className}`, body: { n, writer: state.id } };
      }
      const id = state.own[state.steps % state.own.length];
      state.pending = { op: 'update', n, id };
      return { method: 'PUT', path: `/classes/${className}/${id}`, body: { n } };
    },
    acked(state, n, body, base) {
      const { op, id } = state.pending;
      const objectId = op === 'create' ? body.objectId : id;
      if (op === 'create') state.own.push(objectId);
      writes.push({ op, id: objectId, n, base });
    },
  });
  load.writes = writes;
  return load;
}
