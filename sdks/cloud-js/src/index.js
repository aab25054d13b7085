'use strict';

const { start } = require('./runner');
const { httpRequest } = require('./http-request');
const { createLogger } = require('./logger');

module.exports = { start, httpRequest, createLogger };
