// The fault campaign: runs the named scenarios (all by default) one after
// the other and prints one table row per scenario, then the details.
//
//   node campaign.mjs [scenario...]
//
// Settings come from the environment (run.sh sets them): OXBASE_BIN,
// NATS_SERVER, FAULTS_OUT, LOAD_SECONDS, RATE, JOB_RATE, PUSH_RATE,
// DEVICES, SUBSCRIBERS.

import fs from 'node:fs';
import path from 'node:path';
import { teardown } from './lib/procs.mjs';
import { SCENARIOS } from './lib/scenarios.mjs';

const env = process.env;
const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(SCENARIOS);
for (const name of names) {
  if (!SCENARIOS[name]) {
    console.error(`unknown scenario ${name}; known: ${Object.keys(SCENARIOS).join(' ')}`);
    process.exit(2);
  }
}

const ctx = {
  bin: env.OXBASE_BIN,
  natsBin: env.NATS_SERVER,
  out: env.FAULTS_OUT,
  loadSeconds: Number(env.LOAD_SECONDS ?? 60),
  rate: Number(env.RATE ?? 40),
  jobRate: Number(env.JOB_RATE ?? 10),
  pushRate: Number(env.PUSH_RATE ?? 0.5),
  devices: Number(env.DEVICES ?? 1000),
  subscribers: Number(env.SUBSCRIBERS ?? 20),
};
fs.mkdirSync(ctx.out, { recursive: true });

const HEADER = [
  'scenario', 'load', 'writes attempted', 'writes acked', 'failed requests (reason)', 'writes lost',
  'events lost', 'deliveries lost / dup', 'p99 ms', 'load held', 'recovery',
];

function reasons(failures) {
  const list = Object.entries(failures ?? {}).sort((a, b) => b[1] - a[1]);
  return list.length ? ` (${list.map(([r, n]) => `${r}: ${n}`).join(', ')})` : '';
}

function deliveriesCell(d) {
  if (!d) return 'n/a';
  return `${d.lost} / ${d.duplicates}`;
}

function cells(r) {
  if (r.error) return [r.scenario, 'ERROR', '', '', '', '', '', '', '', '', r.error.split('\n')[0]];
  const lost = r.lost + (r.phantomEvents ? ` (+${r.phantomEvents} phantom)` : '');
  const events = r.eventsLost + (r.duplicateEvents ? ` (${r.duplicateEvents} dup)` : '');
  return [
    r.scenario,
    `${r.seconds} s`,
    r.attempted,
    r.acked,
    `${r.failed}${reasons(r.failures)}`,
    lost,
    events,
    deliveriesCell(r.deliveries),
    r.p99,
    r.held === null ? 'n/a' : `${Math.round(r.held * 100)}%${r.heldNote ? ` (${r.heldNote})` : ''}`,
    r.recoveryMs === null ? 'n/a' : `${(r.recoveryMs / 1000).toFixed(1)} s`,
  ];
}

function table(rows) {
  const lines = [`| ${HEADER.join(' | ')} |`, `|${HEADER.map(() => ' --- ').join('|')}|`];
  for (const r of rows) lines.push(`| ${cells(r).join(' | ')} |`);
  return lines.join('\n');
}

function details(r) {
  const lines = [`### ${r.scenario}`, ''];
  if (r.error) return [...lines, '```', r.error, '```', ''].join('\n');
  for (const note of r.notes ?? []) lines.push(`- ${note}`);
  lines.push(
    `- steady rate ${r.steadyRate.toFixed(1)} acks/s before the first fault; latency p50 ${r.p50} ms, p99 ${r.p99} ms, max ${r.maxLatency} ms; longest stretch without an ack ${(r.longestAckGapMs / 1000).toFixed(1)} s`,
  );
  lines.push(`- timeline: ${r.marks.map((m) => `${(m.at / 1000).toFixed(1)} s ${m.label}`).join('; ')}`);
  lines.push(`- acked/failed per second: ${r.perSecond.join(' ')}`);
  for (const line of r.readiness ?? []) lines.push(`- /ready of ${line}`);
  lines.push(
    `- store and stream: ${r.acked} acked writes, ${r.lost} lost, ${r.eventsLost} without their event, ${r.duplicateEvents} duplicate events, ${r.phantomEvents} events of uncommitted writes, ${r.storedWithoutEvent} stored objects without an event`,
  );
  for (const [reason, sample] of Object.entries(r.failureSamples ?? {})) {
    lines.push(`- first \`${reason}\` at ${(sample.at / 1000).toFixed(1)} s: \`${sample.request}\` → \`${JSON.stringify(sample.answer) ?? ''}\``);
  }
  if (r.deliveries) {
    const { examples, ...figures } = r.deliveries;
    lines.push(`- deliveries: \`${JSON.stringify(figures)}\``);
    for (const e of examples ?? []) lines.push(`  - ${e}`);
  }
  for (const e of r.examples ?? []) lines.push(`  - ${e}`);
  lines.push('');
  return lines.join('\n');
}

const rows = [];
const resultsFile = path.join(ctx.out, 'results.json');
for (const name of names) {
  const started = Date.now();
  console.error(`==> ${name}`);
  let result;
  try {
    result = await SCENARIOS[name](ctx);
  } catch (err) {
    result = { scenario: name, error: err.stack ?? String(err) };
  } finally {
    teardown();
  }
  result.id = name;
  result.wallSeconds = Math.round((Date.now() - started) / 1000);
  rows.push(result);
  fs.writeFileSync(resultsFile, JSON.stringify(rows, null, 2));
  console.error(table([result]).split('\n').at(-1));
}

console.log(table(rows));
console.log('');
console.log(rows.map(details).join('\n'));
