// Starts the target named by CLOUD_TARGET (parse | oxbase) and points the
// Parse JS SDK at it. Also starts the "quote service", a local HTTP server
// that cloud code calls with Parse.Cloud.httpRequest; its URL goes into
// Parse Config (quoteServiceUrl), as an app would configure it.
import http from 'node:http';
import Parse from 'parse/node';
import { APP_ID, MASTER_KEY } from './common.mjs';

export const TARGET = process.env.CLOUD_TARGET || 'parse';
if (!['parse', 'oxbase'].includes(TARGET)) throw new Error(`CLOUD_TARGET must be parse or oxbase, not ${TARGET}`);

function installTrace() {
  const rest = Parse.CoreManager.getRESTController();
  const original = rest.ajax;
  rest.ajax = async function traced(method, url, data, headers, options) {
    process.stderr.write(`[sdk] ${method} ${url}\n[sdk]   body: ${data}\n`);
    try {
      const res = await original.call(this, method, url, data, headers, options);
      process.stderr.write(`[sdk]   -> ${JSON.stringify(res.response)}\n`);
      return res;
    } catch (err) {
      process.stderr.write(`[sdk]   -> error ${err && (err.code ?? '')} ${err && err.message}\n`);
      throw err;
    }
  };
}

/** The quote service: GET /quote?topic=, POST /quotes. Records what it was sent. */
async function startQuoteService() {
  const received = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://localhost');
      received.push({ method: req.method, path: url.pathname, headers: req.headers, body });
      res.setHeader('Content-Type', 'application/json');
      if (req.method === 'GET' && url.pathname === '/quote') {
        res.end(JSON.stringify({ quote: 'Done is better than perfect.', topic: url.searchParams.get('topic'), apiKey: req.headers['x-api-key'] ?? null }));
      } else if (req.method === 'POST' && url.pathname === '/quotes') {
        let parsed = null;
        try {
          parsed = JSON.parse(body);
        } catch {
          // left null
        }
        res.statusCode = 201;
        res.end(JSON.stringify({ stored: parsed && parsed.quote }));
      } else {
        res.statusCode = 404;
        res.end('{"error":"not found"}');
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, received, close: () => new Promise((r) => server.close(r)) };
}

export async function startTarget(options = {}) {
  const harness = TARGET === 'parse' ? await import('./harness-parse.mjs') : await import('./harness-oxbase.mjs');
  const target = await harness.startTarget(options);
  Parse.initialize(APP_ID, undefined, MASTER_KEY);
  Parse.serverURL = target.serverURL;
  if (process.env.CLOUD_TESTS_TRACE && !Parse.CoreManager.getRESTController().ajax.name.startsWith('traced')) installTrace();
  const quotes = await startQuoteService();
  await Parse.Config.save({ quoteServiceUrl: quotes.url });
  const stop = async () => {
    await quotes.close();
    await target.stop();
  };
  return { ...target, quotes, stop };
}

export { Parse };
