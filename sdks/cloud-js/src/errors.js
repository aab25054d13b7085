'use strict';

// Error handling as Parse Server 9 does it (triggers.js `resolveError`): a
// Parse.Error keeps its code and message; a string or an Error becomes the
// default code of the place it was thrown (141 SCRIPT_FAILED for functions
// and triggers, 142 VALIDATION_ERROR for validators, 130 FILE_SAVE_ERROR for
// file saves, 153 FILE_DELETE_ERROR for file deletes); nothing at all becomes
// the default code with the default message.

const SCRIPT_FAILED = 141;
const VALIDATION_ERROR = 142;
const INVALID_JSON = 107;
const CONNECTION_FAILED = 100;
const FILE_SAVE_ERROR = 130;
const FILE_DELETE_ERROR = 153;

/** A Parse.Error from any copy of the SDK (cloud code may bundle its own). */
function isParseError(e, Parse) {
  if (!e || typeof e !== 'object') return false;
  if (e instanceof Parse.Error) return true;
  return typeof e.code === 'number' && e.constructor && e.constructor.name === 'ParseError';
}

/** Returns {code, message} for a thrown value, as Parse Server's resolveError. */
function resolveError(e, Parse, code = SCRIPT_FAILED, defaultMessage = 'Script failed.') {
  if (!e) return { code, message: defaultMessage };
  if (isParseError(e, Parse)) return { code: e.code, message: stringMessage(e.message) };
  if (typeof e === 'string') return { code, message: e };
  return { code, message: stringMessage(e.message || e) };
}

function stringMessage(m) {
  if (typeof m === 'string') return m;
  if (m === undefined || m === null) return '';
  try {
    return JSON.stringify(m);
  } catch {
    return String(m);
  }
}

/** Thrown for Parse Server APIs this runner does not provide. */
function notSupported(what) {
  return new Error(`${what} is not supported yet by oxbase-cloud`);
}

module.exports = {
  SCRIPT_FAILED,
  VALIDATION_ERROR,
  INVALID_JSON,
  CONNECTION_FAILED,
  FILE_SAVE_ERROR,
  FILE_DELETE_ERROR,
  isParseError,
  resolveError,
  notSupported,
};
