'use strict';

// The runner: loads a Parse Server cloud file, registers its functions, jobs
// and triggers in oxbase's hook registry (the JetStream KV bucket
// <PREFIX>_HOOKS) and answers oxbase's calls over NATS, following
// cloud-protocol.md. Request objects and replies follow Parse Server 9.

const path = require('node:path');
const Module = require('node:module');
const { connect, ErrorCode } = require('nats');
const { createRegistry, installCloud } = require('./cloud');
const { runValidator, createRoleLoader } = require('./validator');
const {
  resolveError,
  notSupported,
  SCRIPT_FAILED,
  INVALID_JSON,
  FILE_SAVE_ERROR,
  FILE_DELETE_ERROR,
} = require('./errors');
const { createLogger } = require('./logger');

const MAX_REPLY_BYTES = 1024 * 1024;
const SYSTEM_KEYS = new Set(['objectId', 'createdAt', 'updatedAt', 'className', '__type']);
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const SUCCESS_TRUE = encoder.encode('{"success":true}');

let started = false;

/** The Parse SDK copy the runner serves: `parse/node` from this package. */
function loadParse() {
  // eslint-disable-next-line global-require
  return require('parse/node');
}

/** Cloud code's own `require('parse/node')` gets the runner's initialized SDK. */
function shareParse(Parse) {
  const originalLoad = Module._load;
  Module._load = function load(request, parent, isMain) {
    if (request === 'parse/node' || request === 'parse') return Parse;
    return originalLoad.call(this, request, parent, isMain);
  };
  return () => {
    Module._load = originalLoad;
  };
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k) || !deepEqual(a[k], b[k])) return false;
  }
  return true;
}

/**
 * Starts a runner. Options: cloud (path of the cloud file, or a function
 * called with Parse), serverURL, appId, masterKey, javascriptKey, natsUrl,
 * prefix, queueGroup, log (a logger), ignoreUnsupported, onReady.
 * Resolves to {stop(), registry, counts, nc}.
 */
async function start(options = {}) {
  if (started) throw new Error('oxbase-cloud: start() can run once per process (the Parse SDK is global)');
  const serverURL = options.serverURL || process.env.PARSE_SERVER_URL;
  const appId = options.appId || process.env.PARSE_APP_ID;
  const masterKey = options.masterKey || process.env.PARSE_MASTER_KEY;
  const javascriptKey = options.javascriptKey || process.env.PARSE_JAVASCRIPT_KEY;
  const natsUrl = options.natsUrl || process.env.NATS_URL || 'nats://127.0.0.1:4222';
  const prefix = options.prefix || process.env.OXBASE_PREFIX || 'oxbase';
  const queueGroup = options.queueGroup || process.env.OXBASE_QUEUE_GROUP || 'oxbase-cloud';
  const log = options.log || createLogger();
  if (!serverURL) throw new Error('oxbase-cloud: the server URL is required (--server-url or PARSE_SERVER_URL)');
  if (!appId) throw new Error('oxbase-cloud: the app id is required (--app-id or PARSE_APP_ID)');
  if (!masterKey) throw new Error('oxbase-cloud: the master key is required (--master-key or PARSE_MASTER_KEY)');
  if (!options.cloud) throw new Error('oxbase-cloud: the cloud code file is required');
  started = true;

  const Parse = loadParse();
  Parse.initialize(appId, javascriptKey || 'unused', masterKey);
  Parse.serverURL = serverURL;
  // Parse Server runs cloud code with single instance mode off, so two
  // Parse.Objects with the same id (object and original) keep their own state.
  Parse.Object.disableSingleInstance();
  global.Parse = Parse;
  const unshare = shareParse(Parse);
  const encode = require('parse/lib/node/encode.js').default;
  const { SetOp, UnsetOp } = { SetOp: Parse.Op.Set, UnsetOp: Parse.Op.Unset };

  const registry = createRegistry();
  installCloud(Parse, registry, { ignoreUnsupported: !!options.ignoreUnsupported, warn: (m) => log.warn(m) });
  if (typeof options.cloud === 'function') {
    await options.cloud(Parse);
  } else {
    const file = path.resolve(String(options.cloud));
    // eslint-disable-next-line global-require, import/no-dynamic-require
    const loaded = require(file);
    if (loaded && typeof loaded.then === 'function') await loaded;
  }

  const getUserRoles = createRoleLoader(Parse);
  const ctx = { Parse, getUserRoles };

  // ---------------------------------------------------------------- helpers

  const fromJSON = (json, className) => {
    if (json.className === className) return Parse.Object.fromJSON(json);
    return Parse.Object.fromJSON({ ...json, className });
  };

  const defineUser = (request, wireUser) => {
    if (!wireUser || typeof wireUser !== 'object') return;
    let value;
    let built = false;
    Object.defineProperty(request, 'user', {
      enumerable: true,
      configurable: true,
      get() {
        if (!built) {
          built = true;
          value = fromJSON(wireUser, '_User');
        }
        return value;
      },
      set(v) {
        built = true;
        value = v;
      },
    });
  };

  // afterSave/afterDelete get a pointer: the user is read with the master
  // key (as Parse Server's request.user is a whole user), kept 2 s.
  const userCache = new Map();
  const fetchUser = async (pointer) => {
    if (!pointer || !pointer.objectId) return undefined;
    if (pointer.__type !== 'Pointer') return fromJSON(pointer, '_User');
    const now = Date.now();
    let hit = userCache.get(pointer.objectId);
    if (!hit || hit.expires <= now) {
      const promise = new Parse.Query(Parse.User)
        .get(pointer.objectId, { useMasterKey: true, json: true })
        .then((u) => (u && typeof u.toJSON === 'function' ? u.toJSON() : u));
      hit = { promise, expires: now + 2000 };
      userCache.set(pointer.objectId, hit);
      promise.catch(() => userCache.delete(pointer.objectId));
      if (userCache.size > 5000) for (const [k, v] of userCache) if (v.expires <= now) userCache.delete(k);
    }
    try {
      return fromJSON(await hit.promise, '_User');
    } catch {
      return Parse.User.createWithoutData(pointer.objectId);
    }
  };

  // FunctionsRouter's parseParams: Date, File and Pointer values become SDK
  // objects, the rest stays JSON. The params are fresh from JSON.parse, so
  // they are rewritten in place.
  const decodeParam = (v) => {
    if (v === null || typeof v !== 'object') return v;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) v[i] = decodeParam(v[i]);
      return v;
    }
    if (v.__type === 'Date') return Object.assign(new Date(v.iso), v);
    if (v.__type === 'File') return Parse.File.fromJSON(v);
    if (v.__type === 'Pointer') return Parse.Object.fromJSON({ __type: 'Pointer', className: v.className, objectId: v.objectId });
    for (const k in v) v[k] = decodeParam(v[k]);
    return v;
  };
  const decodeParams = (params) => {
    if (!params || typeof params !== 'object' || Array.isArray(params)) return {};
    for (const k in params) params[k] = decodeParam(params[k]);
    return params;
  };

  const baseRequest = (body, triggerName) => {
    const request = { triggerName, master: !!body.master, isReadOnly: false, log, headers: body.headers || {}, ip: body.ip };
    if (body.installationId) request.installationId = body.installationId;
    return request;
  };

  // beforeSave's object as Parse Server builds it: the stored object with the
  // request's changes set on it, so dirty()/dirtyKeys() name what the request
  // changes.
  const buildBeforeSaveObject = (json, original, className) => {
    const Ctor = Parse.Object.fromJSON({ className }).constructor;
    const readOnly = typeof Ctor.readOnlyAttributes === 'function' ? Ctor.readOnlyAttributes() : [];
    // Read-only attributes (a _User's sessionToken, ...) cannot be set():
    // they go into the base data, with the request's values.
    let base = original ? { ...original, className } : { className };
    if (readOnly.length) {
      if (!original) base = { className };
      for (const k of readOnly) {
        if (json[k] !== undefined) base[k] = json[k];
        else delete base[k];
      }
    }
    const object = Parse.Object.fromJSON(base);
    const changes = {};
    let any = false;
    for (const key in json) {
      if (SYSTEM_KEYS.has(key) || readOnly.includes(key)) continue;
      if (original && deepEqual(json[key], original[key])) continue;
      changes[key] = Parse._decode(key, json[key]);
      any = true;
    }
    if (any) object.set(changes, { ignoreValidation: true });
    if (original) {
      for (const key in original) {
        if (!SYSTEM_KEYS.has(key) && !readOnly.includes(key) && !(key in json)) object.unset(key, { ignoreValidation: true });
      }
    }
    return object;
  };

  // What beforeSave answers: the whole object when the hook changed it.
  const beforeSaveResult = (object, received) => {
    const attrs = object.attributes;
    const pending = object._getPendingOps()[0] || {};
    const seen = [object.id ? `${object.className}:${object.id}` : object];
    const out = {};
    let changed = false;
    for (const key in attrs) {
      if (key === 'createdAt' || key === 'updatedAt' || key === 'objectId') continue;
      const op = pending[key];
      let v;
      if (op instanceof UnsetOp || attrs[key] === undefined) {
        if (key in received) {
          out[key] = { __op: 'Delete' };
          changed = true;
        }
        continue;
      }
      if (op && !(op instanceof SetOp)) {
        v = op.toJSON();
        changed = true;
      } else {
        v = encode(attrs[key], false, true, seen);
        if (!changed && !deepEqual(v, received[key])) changed = true;
      }
      out[key] = v;
    }
    for (const key in received) {
      if (SYSTEM_KEYS.has(key)) {
        if (key !== '__type') out[key] = received[key];
        continue;
      }
      if (!(key in attrs) || attrs[key] === undefined) {
        out[key] = { __op: 'Delete' };
        changed = true;
      }
    }
    return changed ? out : true;
  };

  // Parse Server's toJSONwithObjects, with values encoded; `className`, when
  // given, is the one the JSON names.
  const toJSONwithObjects = (object, className) => {
    if (!object || typeof object.toJSON !== 'function') return object;
    const json = object.toJSON();
    const pending = object._getPendingOps()[0] || {};
    for (const key in pending) {
      const val = object.get(key);
      json[key] = val && typeof val._toFullJSON === 'function' ? val._toFullJSON() : encode(val);
    }
    if (className) json.className = className;
    else if (object.className && !json.className) json.className = object.className;
    return json;
  };

  // ---------------------------------------------------------------- calls

  async function callFunction(entry, name, body) {
    const request = {
      params: decodeParams(body.params),
      master: !!body.master,
      isReadOnly: false,
      log,
      headers: body.headers || {},
      ip: body.ip,
      functionName: name,
      context: body.context || {},
    };
    if (body.installationId) request.installationId = body.installationId;
    defineUser(request, body.user);
    try {
      if (entry.validator) await runValidator(entry.validator, request, ctx);
      const fn = entry.handler;
      let result;
      if (fn.length >= 2) result = await expressStyle(fn, request);
      else result = await fn(request);
      return { success: result === undefined ? null : encode(result) };
    } catch (e) {
      return { error: resolveError(e, Parse) };
    }
  }

  function expressStyle(fn, request) {
    return new Promise((resolve, reject) => {
      let sent = false;
      const response = {
        success(result) {
          if (sent) throw new Error('Cannot call success() after response has already been sent.');
          sent = true;
          resolve(result);
        },
        error(message) {
          if (sent) throw new Error('Cannot call error() after response has already been sent.');
          sent = true;
          reject(message);
        },
        status() {
          throw notSupported('response.status() in a cloud function');
        },
        header() {
          throw notSupported('response.header() in a cloud function');
        },
      };
      Promise.resolve()
        .then(() => fn(request, response))
        .then(
          (result) => {
            if (!sent && result !== undefined) {
              sent = true;
              resolve(result);
            }
          },
          (e) => {
            if (!sent) {
              sent = true;
              reject(e);
            }
          },
        );
    });
  }

  async function callObjectTrigger(entry, body) {
    const { triggerName, className } = entry;
    const json = body.object;
    if (!json || typeof json !== 'object') {
      return { error: { code: INVALID_JSON, message: `${triggerName}: the call has no object` } };
    }
    const request = baseRequest(body, triggerName);
    let received;
    let contextBefore;
    if (triggerName === 'beforeSave') {
      received = json;
      request.object = buildBeforeSaveObject(json, body.original, className);
    } else {
      request.object = fromJSON(json, className);
      if (triggerName === 'afterSave' && !body.original) request.object._setExisted(false);
    }
    if (body.original && typeof body.original === 'object') request.original = fromJSON(body.original, className);
    request.context = body.context || {};
    const before = triggerName === 'beforeSave' || triggerName === 'beforeDelete';
    if (before) contextBefore = JSON.stringify(request.context);
    const after = triggerName === 'afterSave' || triggerName === 'afterDelete';
    if (after) {
      const user = await fetchUser(body.user);
      if (user) request.user = user;
    } else {
      defineUser(request, body.user);
    }
    try {
      if (entry.validator) await runValidator(entry.validator, request, ctx);
      if (!request.skipWithMasterKey) await entry.handler(request);
    } catch (e) {
      return { error: resolveError(e, Parse, SCRIPT_FAILED, 'Script failed. Unknown error.') };
    }
    if (!before) return SUCCESS_TRUE;
    const reply = { success: triggerName === 'beforeSave' ? beforeSaveResult(request.object, received) : true };
    const contextAfter = JSON.stringify(request.context);
    if (contextAfter !== contextBefore && request.context && typeof request.context === 'object') {
      reply.context = request.context;
    }
    return reply.success === true && !reply.context ? SUCCESS_TRUE : reply;
  }

  async function callBeforeFind(entry, body) {
    const { className } = entry;
    const request = baseRequest(body, 'beforeFind');
    request.query = Parse.Query.fromJSON(className, body.query || {});
    request.count = !!body.count;
    request.isGet = !!body.isGet;
    request.context = body.context || {};
    defineUser(request, body.user);
    const before = JSON.stringify(request.query.toJSON());
    let result;
    try {
      if (entry.validator) await runValidator(entry.validator, request, ctx);
      if (request.skipWithMasterKey) return SUCCESS_TRUE;
      result = await entry.handler(request);
    } catch (e) {
      return { error: resolveError(e, Parse, SCRIPT_FAILED, 'Script failed. Unknown error.') };
    }
    if (result instanceof Parse.Object || (Array.isArray(result) && result.length && result.every((o) => o instanceof Parse.Object))) {
      return { error: { code: SCRIPT_FAILED, message: notSupported('Returning objects from beforeFind').message } };
    }
    const query = result instanceof Parse.Query ? result : request.query;
    const json = query.toJSON();
    if (JSON.stringify(json) === before) return SUCCESS_TRUE;
    return { success: { query: json } };
  }

  async function callAfterFind(entry, body) {
    const { className } = entry;
    const request = baseRequest(body, 'afterFind');
    const objects = (Array.isArray(body.objects) ? body.objects : []).map((o) => fromJSON(o, o.className || className));
    const built = objects.slice();
    request.objects = objects;
    request.query = Parse.Query.fromJSON(className, body.query || {});
    request.context = body.context || {};
    if (body.isGet !== undefined) request.isGet = !!body.isGet;
    defineUser(request, body.user);
    let result;
    try {
      if (entry.validator) await runValidator(entry.validator, request, ctx);
      if (request.skipWithMasterKey) return SUCCESS_TRUE;
      result = await entry.handler(request);
    } catch (e) {
      return { error: resolveError(e, Parse, SCRIPT_FAILED, 'Script failed. Unknown error.') };
    }
    const list = result || request.objects;
    if (!Array.isArray(list)) return SUCCESS_TRUE;
    const untouched =
      list.length === built.length && list.every((o, i) => o === built[i] && o instanceof Parse.Object && !o.dirty());
    if (untouched) return SUCCESS_TRUE;
    return { success: list.map((o) => toJSONwithObjects(o)) };
  }

  async function callFileTrigger(entry, body) {
    const { triggerName } = entry;
    const wire = body.file || {};
    const request = baseRequest(body, triggerName);
    let file;
    if (triggerName === 'beforeSaveFile') {
      file = new Parse.File(wire.name, wire.base64 !== undefined ? { base64: wire.base64 } : undefined, wire.contentType);
    } else {
      file = new Parse.File(wire.name);
      if (wire.url) file._url = wire.url;
    }
    request.file = file;
    request.fileSize = body.fileSize === undefined ? null : body.fileSize;
    if (body.contentLength !== undefined) request.contentLength = body.contentLength;
    defineUser(request, body.user);
    const save = triggerName === 'beforeSaveFile' || triggerName === 'afterSaveFile';
    const defaults = save
      ? [FILE_SAVE_ERROR, `Could not store file: ${wire.name}.`]
      : [FILE_DELETE_ERROR, 'Could not delete file.'];
    let result;
    try {
      if (entry.validator) await runValidator(entry.validator, request, ctx);
      if (request.skipWithMasterKey) return SUCCESS_TRUE;
      result = await entry.handler(request);
    } catch (e) {
      return { error: resolveError(e, Parse, defaults[0], defaults[1]) };
    }
    if (triggerName !== 'beforeSaveFile' || !result || result === file || typeof result._name !== 'string') return SUCCESS_TRUE;
    if (typeof result.url === 'function' && result.url()) {
      return { error: { code: FILE_SAVE_ERROR, message: notSupported('Returning an already saved Parse.File from beforeSaveFile').message } };
    }
    const out = { name: result._name };
    const src = result._source || {};
    if (typeof result._data === 'string') out.base64 = result._data;
    else if (src.format === 'buffer' && src.buffer) out.base64 = Buffer.from(src.buffer).toString('base64');
    else if (src.format === 'base64' && typeof src.base64 === 'string') out.base64 = src.base64;
    else if (src.format) {
      return { error: { code: FILE_SAVE_ERROR, message: notSupported(`A Parse.File made from a ${src.format} in beforeSaveFile`).message } };
    }
    if (src.type) out.contentType = src.type;
    return { success: { file: out } };
  }

  // ---------------------------------------------------------------- LiveQuery

  // The LiveQuery request objects are Parse Server's (ParseLiveQueryServer):
  // `useMasterKey` rather than `master`, no headers, ip or log.

  // Runs a LiveQuery trigger's validator and handler; answers the error
  // reply, or null once the handler has run (or was skipped).
  const runLiveQueryHandler = async (entry, request) => {
    try {
      if (entry.validator) await runValidator(entry.validator, request, ctx);
      if (!request.skipWithMasterKey) await entry.handler(request);
      return null;
    } catch (e) {
      return { error: resolveError(e, Parse) };
    }
  };

  async function callBeforeConnect(entry, body) {
    const request = {
      event: body.event || 'connect',
      clients: body.clients || 0,
      subscriptions: body.subscriptions || 0,
      useMasterKey: !!body.master,
      installationId: body.installationId,
      sessionToken: body.sessionToken,
      user: undefined,
    };
    defineUser(request, body.user);
    return (await runLiveQueryHandler(entry, request)) || SUCCESS_TRUE;
  }

  // The wire has `keys` and `watch` as arrays of field names (a
  // comma-separated string is taken too); Parse.Query's JSON has them comma
  // separated.
  const fieldList = (v) => (typeof v === 'string' ? v.split(',') : Array.isArray(v) ? v.map(String) : []);
  const subscriptionQuery = (query) => {
    const json = query.toJSON();
    const out = { where: json.where || {} };
    if (json.keys) out.keys = fieldList(json.keys);
    if (json.watch) out.watch = fieldList(json.watch);
    return out;
  };

  async function callBeforeSubscribe(entry, body) {
    const { className } = entry;
    const wire = body.query && typeof body.query === 'object' ? body.query : {};
    const query = new Parse.Query(className);
    query.withJSON({ where: wire.where || {} });
    // Not through withJSON, which keeps `watch` as an extra option that
    // toJSON() would send back over the handler's own changes.
    const keys = fieldList(wire.keys);
    const watch = fieldList(wire.watch);
    if (keys.length) query.select(keys);
    if (watch.length) query.watch(watch);
    const request = {
      op: 'subscribe',
      query,
      master: !!body.master,
      useMasterKey: !!body.master,
      installationId: body.installationId,
      sessionToken: body.sessionToken,
    };
    defineUser(request, body.user);
    const before = JSON.stringify(subscriptionQuery(query));
    const failed = await runLiveQueryHandler(entry, request);
    if (failed) return failed;
    // As in Parse Server, the handler changes the subscription through
    // request.query; what it returns does not count.
    if (!(request.query instanceof Parse.Query)) return SUCCESS_TRUE;
    const after = subscriptionQuery(request.query);
    return JSON.stringify(after) === before ? SUCCESS_TRUE : { success: { query: after } };
  }

  async function callAfterEvent(entry, body) {
    const { className } = entry;
    if (!body.object || typeof body.object !== 'object') {
      return { error: { code: INVALID_JSON, message: 'afterEvent: the call has no object' } };
    }
    const request = {
      event: body.event,
      sessionToken: body.sessionToken,
      object: fromJSON(body.object, className),
      clients: body.clients || 0,
      subscriptions: body.subscriptions || 0,
      useMasterKey: !!body.master,
      installationId: body.installationId,
      sendEvent: true,
    };
    if (body.original && typeof body.original === 'object') request.original = fromJSON(body.original, className);
    defineUser(request, body.user);
    const failed = await runLiveQueryHandler(entry, request);
    if (failed) return failed;
    if (!request.sendEvent) return { success: { sendEvent: false } };
    // Parse Server sends what the handler left in object and original when
    // they are still Parse.Objects; only the changed ones travel back.
    const success = {};
    for (const key of ['object', 'original']) {
      const value = request[key];
      if (!value || typeof value.toJSON !== 'function') continue;
      const json = toJSONwithObjects(value, value.className || className);
      if (!deepEqual(json, body[key])) success[key] = json;
    }
    return Object.keys(success).length ? { success } : SUCCESS_TRUE;
  }

  async function callJob(name, handler, body) {
    const progressSubject = typeof body.progressSubject === 'string' ? body.progressSubject : null;
    const publish = (payload) => {
      if (!progressSubject || nc.isClosed()) return;
      try {
        nc.publish(progressSubject, encoder.encode(JSON.stringify(payload)));
      } catch {
        /* the connection is going away */
      }
    };
    const request = {
      params: decodeParams(body.payload && typeof body.payload === 'object' ? body.payload : {}),
      log,
      headers: {},
      jobName: name,
      jobId: body.id,
      message: (text) => {
        publish({ message: typeof text === 'string' ? text : JSON.stringify(text) });
        return Promise.resolve();
      },
    };
    let timer = null;
    const hb = Number(body.heartbeatMs);
    if (progressSubject && hb > 0) {
      timer = setInterval(() => publish({}), Math.max(50, Math.floor(hb / 3)));
    }
    try {
      const result = await handler(request);
      return { success: result === undefined ? null : encode(result) };
    } catch (e) {
      return { error: resolveError(e, Parse) };
    } finally {
      if (timer) clearInterval(timer);
    }
  }

  // ---------------------------------------------------------------- NATS

  const nc = await connect({ servers: natsUrl.split(','), name: 'oxbase-cloud', maxReconnectAttempts: -1 });
  let inflight = 0;
  let idle = null;
  const finished = () => {
    inflight -= 1;
    if (inflight === 0 && idle) idle();
  };

  const trace = !!(options.trace || process.env.OXBASE_CLOUD_TRACE);
  const respond = (msg, reply) => {
    if (trace) {
      const shown = reply instanceof Uint8Array ? decoder.decode(reply) : JSON.stringify(reply);
      log.error(`[oxbase-cloud] <- ${msg.subject} ${shown}`);
    }
    if (!msg.reply) return;
    let data;
    if (reply instanceof Uint8Array) data = reply;
    else {
      let text;
      try {
        text = JSON.stringify(reply);
      } catch (e) {
        text = JSON.stringify({ error: { code: SCRIPT_FAILED, message: `oxbase-cloud: cannot encode the result: ${e.message}` } });
      }
      data = encoder.encode(text);
      if (data.length > MAX_REPLY_BYTES) {
        data = encoder.encode(
          JSON.stringify({ error: { code: SCRIPT_FAILED, message: `oxbase-cloud: the reply is ${data.length} bytes, over the 1 MiB limit` } }),
        );
      }
    }
    try {
      msg.respond(data);
    } catch (e) {
      log.error(`oxbase-cloud: cannot reply on ${msg.subject}: ${e.message}`);
    }
  };

  const handle = (fn) => (err, msg) => {
    if (err) {
      log.error(`oxbase-cloud: subscription error: ${err.message}`);
      return;
    }
    inflight += 1;
    if (trace) log.error(`[oxbase-cloud] -> ${msg.subject} ${decoder.decode(msg.data)}`);
    let body;
    try {
      body = JSON.parse(decoder.decode(msg.data));
      if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('the body is not a JSON object');
    } catch (e) {
      respond(msg, { error: { code: INVALID_JSON, message: `Invalid request: ${e.message}` } });
      finished();
      return;
    }
    let p;
    try {
      p = fn(body);
    } catch (e) {
      p = Promise.resolve({ error: resolveError(e, Parse) });
    }
    p.then(
      (reply) => respond(msg, reply),
      (e) => respond(msg, { error: resolveError(e, Parse) }),
    ).finally(finished);
  };

  const subs = [];
  const sub = (subject, fn) => subs.push(nc.subscribe(subject, { queue: queueGroup, callback: handle(fn) }));
  const keys = new Map(); // KV key -> value
  // A validator's rateLimit is counted by oxbase's API, as Parse Server
  // counts it in its own: the entry carries it.
  const withRateLimit = (value, validator) => {
    if (!validator || typeof validator !== 'object' || !validator.rateLimit) return value;
    const { redisUrl, ...rateLimit } = validator.rateLimit;
    return { ...value, rateLimit };
  };

  for (const [name, entry] of registry.functions) {
    sub(`${prefix}.functions.${name}`, (body) => callFunction(entry, name, body));
    keys.set(`function.${name}`, withRateLimit({ functionName: name, nats: true }, entry.validator));
  }
  for (const [name, handler] of registry.jobs) {
    sub(`${prefix}.jobs.run.*.${name}`, (body) => callJob(name, handler, body));
    keys.set(`job.${name}`, { jobName: name, nats: true });
  }
  for (const entry of registry.triggers.values()) {
    const { triggerName, className } = entry;
    let fn;
    if (triggerName === 'beforeFind') fn = (body) => callBeforeFind(entry, body);
    else if (triggerName === 'afterFind') fn = (body) => callAfterFind(entry, body);
    else if (triggerName === 'beforeConnect') fn = (body) => callBeforeConnect(entry, body);
    else if (triggerName === 'beforeSubscribe') fn = (body) => callBeforeSubscribe(entry, body);
    else if (triggerName === 'afterEvent') fn = (body) => callAfterEvent(entry, body);
    else if (triggerName.endsWith('File')) fn = (body) => callFileTrigger(entry, body);
    else fn = (body) => callObjectTrigger(entry, body);
    sub(`${prefix}.triggers.${triggerName}.${className}`, fn);
    keys.set(`trigger.${className}.${triggerName}`, withRateLimit({ className, triggerName, nats: true }, entry.validator));
  }
  const presenceSubject = `${prefix}.cloud.presence.${queueGroup}`;
  const presence = nc.subscribe(presenceSubject, {
    queue: queueGroup,
    callback: (err, msg) => {
      if (!err && msg.reply) msg.respond(encoder.encode('{}'));
    },
  });
  await nc.flush();

  const bucket = `${prefix.toUpperCase().replace(/\./g, '_')}_HOOKS`;
  const kv = await nc.jetstream().views.kv(bucket, { history: 1 });
  for (const [key, value] of keys) await kv.put(key, encoder.encode(JSON.stringify(value)));

  const counts = { functions: registry.functions.size, jobs: registry.jobs.size, triggers: registry.triggers.size };
  log.info(
    `oxbase-cloud ready: ${counts.functions} function(s), ${counts.triggers} trigger(s), ${counts.jobs} job(s) on ${natsUrl} (prefix ${prefix}, queue group ${queueGroup})`,
  );

  let stopping = null;
  const stop = ({ timeoutMs = 30_000 } = {}) => {
    if (stopping) return stopping;
    stopping = (async () => {
      // 1. No new calls; the ones already delivered finish and are answered.
      await Promise.allSettled(subs.map((s) => s.drain()));
      if (inflight > 0) {
        await new Promise((resolve) => {
          idle = resolve;
          setTimeout(resolve, timeoutMs).unref();
        });
      }
      await presence.drain().catch(() => {});
      // 2. Withdraw the keys, unless another runner of this queue group still serves.
      let last = false;
      try {
        await nc.request(presenceSubject, encoder.encode('{}'), { timeout: 2000 });
      } catch (e) {
        if (e && e.code === ErrorCode.NoResponders) last = true;
        else log.warn(`oxbase-cloud: presence check failed (${e && e.message}); leaving the hooks registered`);
      }
      if (last) {
        for (const key of keys.keys()) {
          try {
            await kv.delete(key);
          } catch (e) {
            log.warn(`oxbase-cloud: cannot withdraw ${key}: ${e.message}`);
          }
        }
        log.info(`oxbase-cloud: withdrew ${keys.size} hook(s)`);
      } else {
        log.info('oxbase-cloud: another runner still serves this queue group; hooks left registered');
      }
      await nc.drain().catch(() => {});
      unshare();
    })();
    return stopping;
  };

  if (typeof options.onReady === 'function') options.onReady(counts);
  return { stop, registry, counts, nc, Parse, closed: nc.closed() };
}

module.exports = { start };
