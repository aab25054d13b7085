// What the services deliver to, counting every delivery: an afterSave
// webhook, a NATS job worker, LiveQuery subscribers and a fake FCM.

import http from 'node:http';
import { connect } from 'nats';
import WebSocket from 'ws';
import { APP_ID, MASTER_KEY } from './load.mjs';
import { sleep } from './procs.mjs';

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString()));
    req.on('error', reject);
  });
}

function listen(server, port) {
  return new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
}

/** An afterSave webhook that answers success and records each delivery. */
export class WebhookCounter {
  constructor() {
    this.deliveries = [];
    this.server = http.createServer(async (req, res) => {
      const body = JSON.parse(await readBody(req));
      this.deliveries.push({
        eventId: body.eventId,
        idempotencyKey: req.headers['idempotency-key'],
        objectId: body.object?.objectId,
        n: body.object?.n,
        at: Date.now(),
      });
      res.setHeader('Content-Type', 'application/json');
      res.end('{"success":true}');
    });
  }

  async listen(port) {
    await listen(this.server, port);
    this.url = `http://127.0.0.1:${port}/`;
    return this;
  }

  close() {
    this.server.closeAllConnections?.();
    this.server.close();
  }

  /**
   * Compares the deliveries with the events they are for: `lost` events
   * never delivered, `duplicates` deliveries beyond the first of an event,
   * and the longest time from an event's acknowledgement to its first
   * delivery.
   */
  check(events, ackedAt) {
    const byEvent = new Map();
    for (const d of this.deliveries) {
      byEvent.set(d.eventId, [...(byEvent.get(d.eventId) ?? []), d]);
    }
    let lost = 0;
    let duplicates = 0;
    let maxDelay = 0;
    const examples = [];
    for (const { event } of events) {
      const got = byEvent.get(event.id) ?? [];
      if (got.length === 0) {
        lost++;
        if (examples.length < 10) examples.push(`event ${event.id} (${event.subject}) never delivered`);
        continue;
      }
      duplicates += got.length - 1;
      const object = event.data.object;
      const acked = ackedAt.get(`${object.objectId}:${object.n}`);
      if (acked !== undefined) maxDelay = Math.max(maxDelay, got[0].at - acked);
    }
    const known = new Set(events.map((e) => e.event.id));
    const strangers = this.deliveries.filter((d) => !known.has(d.eventId)).length;
    return { deliveries: this.deliveries.length, lost, duplicates, strangers, maxDelayMs: maxDelay, examples };
  }
}

/**
 * A NATS worker for job `name` on `queue` (a queue group, like a real
 * deployment's) that takes `runMs` per run, answers success, and counts
 * runs per job id.
 */
export class JobWorker {
  constructor({ servers, queue = 'default', name, runMs = 200 }) {
    Object.assign(this, { servers, queue, name, runMs });
    this.runs = new Map();
  }

  async start() {
    this.nc = await connect({ servers: this.servers, maxReconnectAttempts: -1 });
    const sub = this.nc.subscribe(`oxbase.jobs.run.${this.queue}.${this.name}`, { queue: 'faults' });
    (async () => {
      for await (const m of sub) {
        const run = JSON.parse(new TextDecoder().decode(m.data));
        const list = this.runs.get(run.id) ?? [];
        list.push({ attempt: run.attempt, at: Date.now() });
        this.runs.set(run.id, list);
        setTimeout(() => m.respond(new TextEncoder().encode('{"success":true}')), this.runMs);
      }
    })();
    await this.nc.flush();
    return this;
  }

  /** Records each job published to the ready queues: `slot id -> [job id]`. */
  async watchEnqueued() {
    this.enqueued = new Map();
    const sub = this.nc.subscribe('oxbase.jobs.ready.>');
    (async () => {
      for await (const m of sub) {
        try {
          const record = JSON.parse(new TextDecoder().decode(m.data));
          if (record.idempotencyKey) {
            const list = this.enqueued.get(record.idempotencyKey) ?? [];
            list.push(record.id);
            this.enqueued.set(record.idempotencyKey, list);
          }
        } catch {
          // not a job record
        }
      }
    })();
    await this.nc.flush();
  }

  async close() {
    await this.nc?.drain();
  }
}

/**
 * LiveQuery subscribers to every object of `className`. Each keeps the
 * `eventId` of the last event it got and, when its connection drops,
 * reconnects to the next LiveQuery address with `lastEventId`, as the
 * resume extension is meant to be used.
 */
export class LiveQuerySubscribers {
  constructor({ urls, className, count }) {
    Object.assign(this, { urls, className, count });
    this.subscribers = [];
  }

  async start() {
    const ready = [];
    for (let i = 0; i < this.count; i++) {
      const sub = { index: i, urlIndex: i % this.urls.length, events: [], lastEventId: null, reconnects: 0, errors: [] };
      this.subscribers.push(sub);
      ready.push(new Promise((resolve) => this.open(sub, resolve)));
    }
    await Promise.all(ready);
    return this;
  }

  open(sub, onSubscribed) {
    if (this.closed) return;
    const url = this.urls[sub.urlIndex % this.urls.length];
    const ws = new WebSocket(url);
    sub.ws = ws;
    let subscribed = false;
    ws.on('open', () => {
      ws.send(JSON.stringify({ op: 'connect', applicationId: APP_ID, masterKey: MASTER_KEY }));
    });
    ws.on('message', (data) => {
      const message = JSON.parse(data.toString());
      switch (message.op) {
        case 'connected': {
          const subscribe = { op: 'subscribe', requestId: 1, query: { className: this.className, where: {} } };
          if (sub.lastEventId !== null) subscribe.lastEventId = sub.lastEventId;
          ws.send(JSON.stringify(subscribe));
          break;
        }
        case 'subscribed':
          subscribed = true;
          onSubscribed?.();
          break;
        case 'create':
        case 'update':
        case 'enter':
        case 'leave':
        case 'delete':
          sub.events.push({ op: message.op, eventId: message.eventId, objectId: message.object?.objectId, n: message.object?.n });
          sub.lastEventId = message.eventId;
          break;
        case 'error':
          sub.errors.push(message);
          break;
        default:
          break;
      }
    });
    const retry = () => {
      if (sub.ws !== ws || this.closed) return;
      sub.ws = null;
      sub.reconnects++;
      sub.urlIndex++;
      setTimeout(() => this.open(sub, subscribed ? null : onSubscribed), 200);
    };
    ws.on('close', retry);
    ws.on('error', () => ws.terminate());
  }

  close() {
    this.closed = true;
    for (const sub of this.subscribers) sub.ws?.terminate();
  }

  /**
   * Each subscriber must have got every event of the stream on its class,
   * once: `lost` counts (subscriber, event) pairs missing, `duplicates`
   * pairs got more than once.
   */
  check(events) {
    const expected = events.map((e) => String(e.seq));
    let lost = 0;
    let duplicates = 0;
    const examples = [];
    for (const sub of this.subscribers) {
      const got = new Map();
      for (const e of sub.events) got.set(e.eventId, (got.get(e.eventId) ?? 0) + 1);
      for (const id of expected) {
        const times = got.get(id) ?? 0;
        if (times === 0) {
          lost++;
          if (examples.length < 10) examples.push(`subscriber ${sub.index} never got event ${id}`);
        }
        duplicates += Math.max(0, times - 1);
      }
      const known = new Set(expected);
      for (const id of got.keys()) {
        if (!known.has(id) && examples.length < 10) examples.push(`subscriber ${sub.index} got unknown event ${id}`);
      }
    }
    return {
      subscribers: this.subscribers.length,
      received: this.subscribers.reduce((a, s) => a + s.events.length, 0),
      expected: expected.length * this.subscribers.length,
      lost,
      duplicates,
      reconnects: this.subscribers.reduce((a, s) => a + s.reconnects, 0),
      errors: this.subscribers.flatMap((s) => s.errors).slice(0, 5),
      examples,
    };
  }

  /** Waits until every subscriber has `total` events or `within` ms passed. */
  async settle(total, within = 60_000) {
    const deadline = Date.now() + within;
    while (Date.now() < deadline) {
      if (this.subscribers.every((s) => new Set(s.events.map((e) => e.eventId)).size >= total)) return;
      await sleep(500);
    }
  }
}

/**
 * A stand-in for FCM HTTP v1: an OAuth token endpoint and
 * `messages:send`, answering each message after `latencyMs` and counting
 * notifications per (push, device token).
 */
export class FakeFcm {
  constructor({ latencyMs = 20 } = {}) {
    this.latencyMs = latencyMs;
    this.notifications = new Map();
    this.server = http.createServer(async (req, res) => {
      const body = await readBody(req);
      res.setHeader('Content-Type', 'application/json');
      if (req.url.startsWith('/token')) {
        res.end(JSON.stringify({ access_token: 'fake-token', expires_in: 3600, token_type: 'Bearer' }));
        return;
      }
      const { message } = JSON.parse(body);
      const pushId = message.data?.push_id;
      const key = `${pushId} ${message.token}`;
      this.notifications.set(key, (this.notifications.get(key) ?? 0) + 1);
      await sleep(this.latencyMs);
      res.end(JSON.stringify({ name: `projects/faults/messages/${this.notifications.size}` }));
    });
  }

  async listen(port) {
    await listen(this.server, port);
    this.base = `http://127.0.0.1:${port}`;
    return this;
  }

  close() {
    this.server.closeAllConnections?.();
    this.server.close();
  }

  /** Each acknowledged push must reach each device: lost and duplicate pairs. */
  check(pushIds, tokens) {
    let lost = 0;
    let duplicates = 0;
    const examples = [];
    for (const push of pushIds) {
      for (const token of tokens) {
        const times = this.notifications.get(`${push} ${token}`) ?? 0;
        if (times === 0) {
          lost++;
          if (examples.length < 10) examples.push(`push ${push} never reached ${token}`);
        }
        duplicates += Math.max(0, times - 1);
      }
    }
    const sent = [...this.notifications.values()].reduce((a, b) => a + b, 0);
    return { expected: pushIds.length * tokens.length, sent, lost, duplicates, examples };
  }
}
