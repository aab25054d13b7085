'use strict';

// request.log: Parse Server's logger methods, info/debug to stdout and
// warn/error to stderr, one line each.

const util = require('node:util');

function line(args) {
  return `${util.format(...args)}\n`;
}

function createLogger({ out = process.stdout, err = process.stderr } = {}) {
  const info = (...args) => out.write(line(args));
  const error = (...args) => err.write(line(args));
  return {
    info,
    log: info,
    debug: info,
    verbose: info,
    silly: info,
    warn: error,
    error,
  };
}

module.exports = { createLogger };
