'use strict';

// Parse.Cloud.httpRequest as Parse Server 9 provides it (lib/request.js), on
// Node's global fetch: same options, same response object, rejects with the
// response for statuses below 200 or from 400 on.

const querystring = require('node:querystring');

class HTTPResponse {
  constructor(status, headers, buffer) {
    this.status = status;
    this.headers = headers;
    this.cookies = headers['set-cookie'];
    this.buffer = buffer;
    let text;
    let data;
    let parsed = false;
    Object.defineProperty(this, 'body', { get: () => buffer });
    Object.defineProperty(this, 'text', {
      enumerable: true,
      get: () => {
        if (text === undefined) text = buffer.toString('utf-8');
        return text;
      },
    });
    Object.defineProperty(this, 'data', {
      enumerable: true,
      get: () => {
        if (!parsed) {
          parsed = true;
          try {
            data = JSON.parse(this.text);
          } catch {
            /* not JSON */
          }
        }
        return data;
      },
    });
  }
}

function encodeBody(body, headers) {
  if (body === undefined || body === null || typeof body !== 'object' || Buffer.isBuffer(body) || body instanceof Uint8Array) {
    return body;
  }
  const keys = Object.keys(headers).filter((k) => /content-type/i.test(k));
  if (keys.length === 0) {
    // Parse's documented default: x-www-form-urlencoded.
    headers['Content-Type'] = 'application/x-www-form-urlencoded';
    return querystring.stringify(body);
  }
  const type = String(headers[keys[0]]);
  if (/application\/json/i.test(type)) return JSON.stringify(body);
  if (/application\/x-www-form-urlencoded/i.test(type)) return querystring.stringify(body);
  return body;
}

async function httpRequest(options) {
  if (!options || typeof options.url !== 'string') throw new TypeError('httpRequest: options.url is required');
  const url = new URL(options.url);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw `Unsupported protocol ${url.protocol}`;
  }
  const headers = {};
  for (const [k, v] of Object.entries(options.headers || {})) {
    if (v !== undefined) headers[k] = v;
  }
  const body = encodeBody(options.body, headers);
  let qs;
  if (options.params && typeof options.params === 'object') qs = { ...options.params };
  else if (typeof options.params === 'string') qs = querystring.parse(options.params);
  if (url.search) {
    qs = Object.assign({}, qs, querystring.parse(url.search.slice(1)));
  }
  url.search = qs ? querystring.stringify(qs) : '';
  if (url.username || url.password) {
    const auth = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
    url.username = '';
    url.password = '';
    if (!Object.keys(headers).some((k) => k.toLowerCase() === 'authorization')) {
      headers.Authorization = `Basic ${Buffer.from(auth).toString('base64')}`;
    }
  }
  const method = (options.method || 'GET').toUpperCase();
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined || body === null || method === 'GET' || method === 'HEAD' ? undefined : body,
    redirect: options.followRedirects === true ? 'follow' : 'manual',
  });
  const buffer = Buffer.from(await res.arrayBuffer());
  const outHeaders = {};
  for (const [k, v] of res.headers) {
    if (k !== 'set-cookie') outHeaders[k] = v;
  }
  const cookies = typeof res.headers.getSetCookie === 'function' ? res.headers.getSetCookie() : [];
  if (cookies.length) outHeaders['set-cookie'] = cookies;
  const response = new HTTPResponse(res.status, outHeaders, buffer);
  if (response.status < 200 || response.status >= 400) throw response;
  return response;
}

module.exports = { httpRequest, HTTPResponse };
