// The checks after a scenario: every acknowledged write is in the store,
// read back over REST with the master key, and has its event in the
// JetStream stream OXBASE_EVENTS, with no event id twice and no event for a
// write that did not commit.

import { connect } from 'nats';
import { call } from './load.mjs';
import { sleep } from './procs.mjs';

const PAGE = 1000;

/** A request that must succeed eventually (the system may still recover). */
async function callUntilOk(base, method, path, options, within = 60_000) {
  const deadline = Date.now() + within;
  for (;;) {
    const answer = await call(base, method, path, options);
    if (answer.ok) return answer.body;
    if (Date.now() > deadline) {
      throw new Error(`${method} ${path}: ${answer.reason} ${JSON.stringify(answer.body)}`);
    }
    await sleep(500);
  }
}

/**
 * Every object of `className`, by objectId: pages in objectId order with
 * an `objectId > last` constraint, so no `skip` limit applies.
 */
export async function readStore(base, className) {
  const stored = new Map();
  let last = null;
  for (;;) {
    const where = last === null ? {} : { objectId: { $gt: last } };
    const query = new URLSearchParams({ where: JSON.stringify(where), order: 'objectId', limit: String(PAGE) });
    const body = await callUntilOk(base, 'GET', `/classes/${className}?${query}`, { master: true });
    for (const object of body.results) stored.set(object.objectId, object);
    if (body.results.length < PAGE) return stored;
    last = body.results.at(-1).objectId;
  }
}

/** Waits until the outbox of the API at `base` is empty (the gauge refreshes each second). */
export async function waitDrained(base, within = 120_000) {
  const deadline = Date.now() + within;
  let zeros = 0;
  for (;;) {
    let backlog = null;
    try {
      const text = await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
      const line = text.split('\n').find((l) => l.startsWith('oxbase_outbox_backlog '));
      backlog = line ? Number(line.split(' ')[1]) : null;
    } catch {
      backlog = null;
    }
    zeros = backlog === 0 ? zeros + 1 : 0;
    if (zeros >= 2) return;
    if (Date.now() > deadline) throw new Error(`outbox backlog still ${backlog} after ${within} ms`);
    await sleep(1000);
  }
}

/**
 * The messages of `stream` on `subject`, in stream order: `{ seq, msgId,
 * event }` (the payload parsed as JSON), read with an ordered consumer.
 */
export async function readStream(servers, stream, subject, within = 60_000) {
  const nc = await connect({ servers, maxReconnectAttempts: -1 });
  try {
    const deadline = Date.now() + within;
    let total;
    let jsm;
    for (;;) {
      try {
        jsm = await nc.jetstreamManager();
        const info = await jsm.streams.info(stream, { subjects_filter: subject });
        total = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
        break;
      } catch (err) {
        // A cluster that just lost or regained a node may still be electing.
        if (Date.now() > deadline) throw err;
        await sleep(500);
      }
    }
    const out = [];
    if (total === 0) return out;
    const consumer = await nc.jetstream().consumers.get(stream, { filterSubjects: [subject] });
    const messages = await consumer.consume({ max_messages: 1000 });
    const timer = setTimeout(() => messages.stop(), within);
    for await (const m of messages) {
      out.push({
        seq: m.seq,
        subject: m.subject,
        msgId: m.headers?.get('Nats-Msg-Id') ?? null,
        event: JSON.parse(new TextDecoder().decode(m.data)),
      });
      if (out.length >= total || m.info.pending === 0) break;
    }
    clearTimeout(timer);
    await messages.close?.();
    return out;
  } finally {
    await nc.close();
  }
}

export function readEvents(servers, className) {
  return readStream(servers, 'OXBASE_EVENTS', `oxbase.events.${className}.>`);
}

/**
 * Compares what the load saw acknowledged with the store and the events.
 * Counts: `lost` acknowledged writes the store does not show (a missing
 * object, or a stored `n` below an acknowledged one: `n` only grows per
 * object); `eventsLost` acknowledged writes without their event;
 * `duplicateEvents` event ids (or writes) seen twice; `phantomEvents`
 * events of writes that did not commit (an object whose last event is not
 * its stored state, or that is not stored); `storedWithoutEvent` stored
 * objects with no event at all.
 */
export function checkWrites(writes, stored, events) {
  const result = {
    acknowledged: writes.length,
    stored: stored.size,
    events: events.length,
    lost: 0,
    eventsLost: 0,
    duplicateEvents: 0,
    phantomEvents: 0,
    storedWithoutEvent: 0,
    examples: [],
  };
  const example = (what) => {
    if (result.examples.length < 10) result.examples.push(what);
  };

  const ids = new Set();
  const writesSeen = new Set();
  const lastEvent = new Map();
  for (const { seq, msgId, event } of events) {
    if (ids.has(event.id) || (msgId !== null && msgId !== event.id)) {
      result.duplicateEvents++;
      example(`event ${event.id} (seq ${seq}, Nats-Msg-Id ${msgId}) seen twice or mislabelled`);
    }
    ids.add(event.id);
    const object = event.data?.object ?? {};
    const kind = event.type.split('.').at(-1);
    const key = `${kind}:${object.objectId}:${object.n}`;
    if (writesSeen.has(key)) {
      result.duplicateEvents++;
      example(`write ${key} has two events (second: ${event.id})`);
    }
    writesSeen.add(key);
    lastEvent.set(object.objectId, object);
  }

  const maxAcked = new Map();
  for (const write of writes) {
    maxAcked.set(write.id, Math.max(maxAcked.get(write.id) ?? -Infinity, write.n));
    const object = stored.get(write.id);
    if (!object) {
      result.lost++;
      example(`acknowledged ${write.op} ${write.id} n=${write.n} is not stored`);
    } else if (!(object.n >= write.n)) {
      result.lost++;
      example(`acknowledged ${write.op} ${write.id} n=${write.n}, stored n=${object.n}`);
    }
    const kind = write.op === 'create' ? 'created' : 'updated';
    if (!writesSeen.has(`${kind}:${write.id}:${write.n}`)) {
      result.eventsLost++;
      example(`acknowledged ${write.op} ${write.id} n=${write.n} has no event`);
    }
  }

  for (const [id, object] of lastEvent) {
    const row = stored.get(id);
    if (!row || row.n !== object.n) {
      result.phantomEvents++;
      example(`last event of ${id} has n=${object.n}, stored ${row ? `n=${row.n}` : 'nothing'}`);
    }
  }
  for (const id of stored.keys()) {
    if (!lastEvent.has(id)) {
      result.storedWithoutEvent++;
      example(`stored object ${id} has no event`);
    }
  }
  return result;
}

/** Reads the store and the events back and checks the load's writes. */
export async function verifyWrites({ base, servers, className, writes }) {
  await waitDrained(base);
  const stored = await readStore(base, className);
  const events = await readEvents(servers, className);
  return { ...checkWrites(writes, stored, events), eventList: events };
}
