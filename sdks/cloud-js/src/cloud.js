'use strict';

// Parse.Cloud.define / job / beforeSave / ... as Parse Server 9 declares them
// (lib/cloud-code/Parse.Cloud.js), recording handlers in a registry that the
// runner serves over NATS instead of an in-process trigger store.

const { notSupported } = require('./errors');
const { httpRequest } = require('./http-request');

const NAME_RE = /^[A-Za-z0-9_-]{1,128}$/;

const OBJECT_TRIGGERS = ['beforeSave', 'afterSave', 'beforeDelete', 'afterDelete', 'beforeFind', 'afterFind'];
// Parse's pseudo-class of beforeConnect, '@Connect', as a registry key and a
// NATS subject can hold it.
const CONNECT_CLASS = '_Connect';
// Parse's trigger type on the @File class -> the wire's trigger name.
const FILE_TRIGGERS = {
  beforeSave: 'beforeSaveFile',
  afterSave: 'afterSaveFile',
  beforeDelete: 'beforeDeleteFile',
  afterDelete: 'afterDeleteFile',
};

function createRegistry() {
  return {
    functions: new Map(), // name -> {handler, validator}
    jobs: new Map(), // name -> handler
    triggers: new Map(), // `${triggerName}.${className}` (wire names) -> {triggerName, className, handler, validator}
  };
}

function isParseObjectConstructor(object) {
  return typeof object === 'function' && Object.prototype.hasOwnProperty.call(object, 'className');
}

/** Parse Server's getClassName: 'X', Parse.Object subclasses, Parse.User, Parse.File -> '@File'. */
function getClassName(parseClass) {
  if (parseClass && parseClass.className) return parseClass.className;
  if (parseClass && parseClass.name) return parseClass.name.replace('Parse', '@');
  return parseClass;
}

function validateClassNameForTriggers(className, type) {
  if (typeof className !== 'string' || !className) {
    throw new Error(`Parse.Cloud.${type}: a class name (string or Parse.Object subclass) is required`);
  }
  if (type === 'beforeSave' && className === '_PushStatus') throw 'Only afterSave is allowed on _PushStatus';
  if ((type === 'beforeLogin' || type === 'afterLogin' || type === 'beforePasswordResetRequest') && className !== '_User') {
    throw 'Only the _User class is allowed for the beforeLogin, afterLogin, and beforePasswordResetRequest triggers';
  }
  if (type === 'afterLogout' && className !== '_Session') {
    throw 'Only the _Session class is allowed for the afterLogout trigger.';
  }
  if (className === '_Session' && type !== 'afterLogout') {
    throw 'Only the afterLogout trigger is allowed for the _Session class.';
  }
}

// Parse Server's validateValidator: unknown keys or wrong types throw at
// definition time, with Parse Server's messages.
function validateValidator(validator) {
  if (!validator || typeof validator === 'function') return;
  const fieldOptions = {
    type: ['Any'],
    constant: [Boolean],
    default: ['Any'],
    options: [Array, 'function', 'Any'],
    required: [Boolean],
    error: [String],
  };
  const allowedKeys = {
    requireUser: [Boolean],
    requireAnyUserRoles: [Array, 'function'],
    requireAllUserRoles: [Array, 'function'],
    requireMaster: [Boolean],
    validateMasterKey: [Boolean],
    skipWithMasterKey: [Boolean],
    requireUserKeys: [Array, Object],
    fields: [Array, Object],
    rateLimit: [Object],
  };
  const getType = (fn) => {
    if (Array.isArray(fn)) return 'array';
    if (fn === 'Any' || fn === 'function') return fn;
    if (typeof fn === 'function') {
      const match = fn.toString().match(/^\s*function (\w+)/);
      return (match ? match[1] : 'function').toLowerCase();
    }
    return typeof fn;
  };
  const checkKey = (key, data, param) => {
    const parameter = data[key];
    if (!parameter) throw `${key} is not a supported parameter for Cloud Function validations.`;
    const types = parameter.map(getType);
    const type = getType(param);
    if (!types.includes(type) && !types.includes('Any')) {
      throw `Invalid type for Cloud Function validation key ${key}. Expected ${types.join('|')}, actual ${type}`;
    }
  };
  for (const key in validator) {
    checkKey(key, allowedKeys, validator[key]);
    if (key === 'fields' || key === 'requireUserKeys') {
      const values = validator[key];
      if (Array.isArray(values)) continue;
      for (const value in values) {
        const data = values[value];
        for (const subKey in data) checkKey(subKey, fieldOptions, data[subKey]);
      }
    }
  }
  if (validator.rateLimit) {
    const allowed = [
      'requestTimeWindow',
      'requestCount',
      'errorResponseMessage',
      'includeMasterKey',
      'includeInternalRequests',
      'requestMethods',
      'zone',
      'redisUrl',
    ];
    for (const key in validator.rateLimit) {
      if (!allowed.includes(key)) throw `Invalid rate limit option "${key}"`;
    }
  }
}

/**
 * Installs Parse.Cloud.* (Parse Server's cloud API) on the given Parse SDK.
 * `options.ignoreUnsupported` turns the "not supported yet" errors of
 * definitions into warnings.
 */
function installCloud(Parse, registry, options = {}) {
  const warn = options.warn || ((m) => process.stderr.write(`oxbase-cloud: ${m}\n`));
  const unsupported = (what) => {
    const err = notSupported(what);
    if (options.ignoreUnsupported) {
      warn(`${err.message}; ignored`);
      return;
    }
    throw err;
  };

  // `api` is the Parse.Cloud method's name, where it differs from the
  // trigger's (afterLiveQueryEvent registers afterEvent).
  const addTrigger = (type, parseClass, handler, validator, api = type) => {
    const className = getClassName(parseClass);
    validateValidator(validator);
    if (typeof handler !== 'function') throw new Error(`Parse.Cloud.${api}: the handler must be a function`);
    if (className === '@File') {
      if (!FILE_TRIGGERS[type]) return unsupported(`Parse.Cloud.${api} on Parse.File`);
      return addWire(FILE_TRIGGERS[type], '_File', handler, validator);
    }
    if (className === '@Config') return unsupported(`Parse.Cloud.${api} on Parse.Config`);
    if (typeof className === 'string' && className.startsWith('@')) return unsupported(`Parse.Cloud.${api} on ${className}`);
    validateClassNameForTriggers(className, type);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(className)) {
      throw new Error(`Parse.Cloud.${api}: invalid class name ${JSON.stringify(className)}`);
    }
    return addWire(type, className, handler, validator);
  };

  const addWire = (triggerName, className, handler, validator) => {
    const key = `${triggerName}.${className}`;
    if (registry.triggers.has(key)) {
      warn(`Warning: Duplicate cloud functions exist for ${className}. Only the last one will be used and the others will be ignored.`);
    }
    registry.triggers.set(key, { triggerName, className, handler, validator: validator || null });
  };

  const cloud = {
    define(functionName, handler, validator) {
      validateValidator(validator);
      if (typeof functionName !== 'string' || !NAME_RE.test(functionName)) {
        // Parse Server allows dotted (namespaced) names; a NATS subject token cannot hold them.
        throw notSupported(`Cloud function name ${JSON.stringify(functionName)} (only 1 to 128 of A-Z a-z 0-9 _ -)`);
      }
      if (typeof handler !== 'function') throw new Error('Parse.Cloud.define: the handler must be a function');
      if (registry.functions.has(functionName)) {
        warn(`Warning: Duplicate cloud functions exist for ${functionName}. Only the last one will be used and the others will be ignored.`);
      }
      registry.functions.set(functionName, { handler, validator: validator || null });
    },
    job(jobName, handler) {
      if (typeof jobName !== 'string' || !NAME_RE.test(jobName)) {
        throw notSupported(`Job name ${JSON.stringify(jobName)} (only 1 to 128 of A-Z a-z 0-9 _ -)`);
      }
      if (typeof handler !== 'function') throw new Error('Parse.Cloud.job: the handler must be a function');
      registry.jobs.set(jobName, handler);
    },
    beforeLogin(handler, validator) {
      let className = '_User';
      if (typeof handler === 'string' || isParseObjectConstructor(handler)) {
        className = getClassName(handler);
        handler = arguments[1];
        validator = arguments.length >= 2 ? arguments[2] : null;
      }
      validateClassNameForTriggers(className, 'beforeLogin');
      validateValidator(validator);
      addWire('beforeLogin', className, handler, validator);
    },
    afterLogin(handler, validator) {
      let className = '_User';
      if (typeof handler === 'string' || isParseObjectConstructor(handler)) {
        className = getClassName(handler);
        handler = arguments[1];
        validator = arguments[2];
      }
      validateClassNameForTriggers(className, 'afterLogin');
      validateValidator(validator);
      addWire('afterLogin', className, handler, validator);
    },
    afterLogout(handler, validator) {
      let className = '_Session';
      if (typeof handler === 'string' || isParseObjectConstructor(handler)) {
        className = getClassName(handler);
        handler = arguments[1];
        validator = arguments[2];
      }
      validateClassNameForTriggers(className, 'afterLogout');
      validateValidator(validator);
      addWire('afterLogout', className, handler, validator);
    },
    // The pre-Parse-Server-6 file trigger names, kept as aliases of
    // beforeSave(Parse.File, ...) and so on.
    beforeSaveFile(handler, validator) {
      addTrigger('beforeSave', '@File', handler, validator);
    },
    afterSaveFile(handler, validator) {
      addTrigger('afterSave', '@File', handler, validator);
    },
    beforeDeleteFile(handler, validator) {
      addTrigger('beforeDelete', '@File', handler, validator);
    },
    afterDeleteFile(handler, validator) {
      addTrigger('afterDelete', '@File', handler, validator);
    },
    beforePasswordResetRequest(handler, validator) {
      let className = '_User';
      if (typeof handler === 'string' || isParseObjectConstructor(handler)) {
        className = getClassName(handler);
        handler = arguments[1];
        validator = arguments.length >= 2 ? arguments[2] : null;
      }
      validateClassNameForTriggers(className, 'beforePasswordResetRequest');
      if (typeof handler !== 'function') {
        throw new Error('Parse.Cloud.beforePasswordResetRequest: the handler must be a function');
      }
      // Parse Server 9 takes only the validator's rateLimit for this
      // trigger (on POST /requestPasswordReset); it runs no validation.
      const rateLimit = validator && typeof validator === 'object' ? validator.rateLimit : undefined;
      addWire('beforePasswordResetRequest', className, handler, rateLimit ? { rateLimit } : null);
    },
    beforeConnect(handler, validator) {
      validateValidator(validator);
      if (typeof handler !== 'function') throw new Error('Parse.Cloud.beforeConnect: the handler must be a function');
      addWire('beforeConnect', CONNECT_CLASS, handler, validator);
    },
    beforeSubscribe(parseClass, handler, validator) {
      addTrigger('beforeSubscribe', parseClass, handler, validator);
    },
    afterLiveQueryEvent(parseClass, handler, validator) {
      addTrigger('afterEvent', parseClass, handler, validator, 'afterLiveQueryEvent');
    },
    onLiveQueryEvent() {
      unsupported('Parse.Cloud.onLiveQueryEvent (LiveQuery)');
    },
    sendEmail() {
      throw notSupported('Parse.Cloud.sendEmail');
    },
    httpRequest,
    useMasterKey() {
      // eslint-disable-next-line no-console
      console.warn(
        'Parse.Cloud.useMasterKey is deprecated (and has no effect anymore) on parse-server, please refer to the cloud code migration notes: http://docs.parseplatform.org/parse-server/guide/#master-key-must-be-passed-explicitly',
      );
    },
    _removeAllHooks() {
      registry.functions.clear();
      registry.jobs.clear();
      registry.triggers.clear();
    },
  };
  for (const type of OBJECT_TRIGGERS) {
    cloud[type] = (parseClass, handler, validator) => addTrigger(type, parseClass, handler, validator);
  }
  Object.assign(Parse.Cloud, cloud);
  return Parse.Cloud;
}

module.exports = { createRegistry, installCloud, getClassName, validateValidator, FILE_TRIGGERS, CONNECT_CLASS };
