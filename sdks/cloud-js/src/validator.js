'use strict';

// Validators as Parse Server 9 runs them (triggers.js maybeRunValidator and
// builtInTriggerValidator). A validator's `rateLimit` is not run here: the
// runner puts it in the hook's registry entry and oxbase's API counts it.

const { resolveError, VALIDATION_ERROR } = require('./errors');

/**
 * Runs `validator` (a function or an options object) for `request`. Throws
 * {code, message} (code 142 by default) when it refuses.
 */
async function runValidator(validator, request, ctx) {
  if (!validator) return;
  if (typeof validator === 'object' && validator.skipWithMasterKey && request.master) {
    request.skipWithMasterKey = true;
  }
  try {
    if (typeof validator === 'object') await builtInValidator(validator, request, ctx);
    else await validator(request);
  } catch (e) {
    const { code, message } = resolveError(e, ctx.Parse, VALIDATION_ERROR, 'Validation failed.');
    throw new ctx.Parse.Error(code, message);
  }
}

async function builtInValidator(options, request, ctx) {
  if (request.master && !options.validateMasterKey) return;
  let reqUser = request.user;
  if (!reqUser && request.object && request.object.className === '_User' && !request.object.existed()) {
    reqUser = request.object;
  }
  if ((options.requireUser || options.requireAnyUserRoles || options.requireAllUserRoles) && !reqUser) {
    throw 'Validation failed. Please login to continue.';
  }
  if (options.requireMaster && !request.master) {
    throw 'Validation failed. Master key is required to complete this request.';
  }
  let params = request.params || {};
  if (request.object) params = request.object.toJSON();
  const requiredParam = (key) => {
    if (params[key] == null) throw `Validation failed. Please specify data for ${key}.`;
  };
  const validateOptions = async (opt, key, val) => {
    let opts = opt.options;
    if (typeof opts === 'function') {
      try {
        const result = await opts(val);
        if (!result && result != null) throw opt.error || `Validation failed. Invalid value for ${key}.`;
      } catch (e) {
        if (!e) throw opt.error || `Validation failed. Invalid value for ${key}.`;
        throw opt.error || e.message || e;
      }
      return;
    }
    if (!Array.isArray(opts)) opts = [opt.options];
    if (!opts.includes(val)) {
      throw opt.error || `Validation failed. Invalid option for ${key}. Expected: ${opts.join(', ')}`;
    }
  };
  const getType = (fn) => {
    const match = fn && fn.toString().match(/^\s*function (\w+)/);
    return (match ? match[1] : '').toLowerCase();
  };
  if (Array.isArray(options.fields)) {
    for (const key of options.fields) requiredParam(key);
  } else {
    const pending = [];
    for (const key in options.fields) {
      const opt = options.fields[key];
      let val = params[key];
      if (typeof opt === 'string') requiredParam(opt);
      if (opt && typeof opt === 'object') {
        if (opt.default != null && val == null) {
          val = opt.default;
          params[key] = val;
          if (request.object) request.object.set(key, val);
        }
        if (opt.constant && request.object) {
          if (request.original) request.object.revert(key);
          else if (opt.default != null) request.object.set(key, opt.default);
        }
        if (opt.required) requiredParam(key);
        const optional = !opt.required && val === undefined;
        if (!optional) {
          if (opt.type) {
            const type = getType(opt.type);
            const valType = Array.isArray(val) ? 'array' : typeof val;
            if (valType !== type) throw `Validation failed. Invalid type for ${key}. Expected: ${type}`;
          }
          if (opt.options) pending.push(validateOptions(opt, key, val));
        }
      }
    }
    await Promise.all(pending);
  }
  let userRoles = options.requireAnyUserRoles;
  let requireAllRoles = options.requireAllUserRoles;
  const [roles, resolvedAny, resolvedAll] = await Promise.all([
    userRoles || requireAllRoles ? ctx.getUserRoles(reqUser) : undefined,
    typeof userRoles === 'function' ? userRoles() : undefined,
    typeof requireAllRoles === 'function' ? requireAllRoles() : undefined,
  ]);
  if (resolvedAny && Array.isArray(resolvedAny)) userRoles = resolvedAny;
  if (resolvedAll && Array.isArray(resolvedAll)) requireAllRoles = resolvedAll;
  if (userRoles) {
    if (!userRoles.some((r) => roles.includes(`role:${r}`))) {
      throw 'Validation failed. User does not match the required roles.';
    }
  }
  if (requireAllRoles) {
    for (const r of requireAllRoles) {
      if (!roles.includes(`role:${r}`)) throw 'Validation failed. User does not match all the required roles.';
    }
  }
  const userKeys = options.requireUserKeys || [];
  if (Array.isArray(userKeys)) {
    for (const key of userKeys) {
      if (!reqUser) throw 'Please login to make this request.';
      if (reqUser.get(key) == null) throw `Validation failed. Please set data for ${key} on your account.`;
    }
  } else if (typeof userKeys === 'object') {
    const pending = [];
    for (const key in userKeys) {
      const opt = userKeys[key];
      if (opt.options) pending.push(validateOptions(opt, key, reqUser.get(key)));
    }
    await Promise.all(pending);
  }
}

/**
 * The user's roles as Parse Server's Auth#getUserRoles lists them:
 * `role:<name>` for every role holding the user, directly or through the
 * roles it inherits. Read with the master key; kept a few seconds per user.
 */
function createRoleLoader(Parse, ttlMs = 5000) {
  const cache = new Map();
  const load = async (user) => {
    const names = new Set();
    const seen = new Set();
    let frontier = await new Parse.Query(Parse.Role).equalTo('users', user).limit(1000).find({ useMasterKey: true });
    while (frontier.length) {
      const next = [];
      for (const role of frontier) {
        if (seen.has(role.id)) continue;
        seen.add(role.id);
        names.add(role.get('name'));
        next.push(role);
      }
      if (!next.length) break;
      frontier = await new Parse.Query(Parse.Role).containedIn('roles', next).limit(1000).find({ useMasterKey: true });
    }
    return [...names].map((n) => `role:${n}`);
  };
  return (user) => {
    if (!user || !user.id) return Promise.resolve([]);
    const now = Date.now();
    const hit = cache.get(user.id);
    if (hit && hit.expires > now) return hit.promise;
    const promise = load(user);
    cache.set(user.id, { promise, expires: now + ttlMs });
    promise.catch(() => cache.delete(user.id));
    if (cache.size > 10000) {
      for (const [k, v] of cache) if (v.expires <= now) cache.delete(k);
    }
    return promise;
  };
}

module.exports = { runValidator, createRoleLoader };
