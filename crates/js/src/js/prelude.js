// flowstate's prelude: runs in every step's fresh context before the
// workflow's code. It builds `api`, `console` and `$end` over the host's
// native calls (globalThis.__flowstate, removed before user code runs) and
// invokes the step method. Everything that crosses to the host is JSON text.

const host = globalThis.__flowstate;
delete globalThis.__flowstate;

// Typed arrays are installed on first use: most steps never touch them,
// and they are a third of the cost of a fresh context.
const TYPED_ARRAY_GLOBALS = [
  'ArrayBuffer', 'SharedArrayBuffer', 'Atomics', 'DataView', 'Int8Array', 'Uint8Array',
  'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array',
  'BigInt64Array', 'BigUint64Array', 'Float16Array', 'Float32Array', 'Float64Array',
];
if (typeof host.typedArrays === 'function' && !('ArrayBuffer' in globalThis)) {
  let installed = false;
  const install = () => {
    if (installed) return;
    installed = true;
    for (const name of TYPED_ARRAY_GLOBALS) delete globalThis[name];
    host.typedArrays();
  };
  for (const name of TYPED_ARRAY_GLOBALS) {
    Object.defineProperty(globalThis, name, {
      configurable: true,
      enumerable: false,
      get() {
        install();
        return globalThis[name];
      },
      set(value) {
        install();
        globalThis[name] = value;
      },
    });
  }
}

// The web API classes and fetch live in web.js, loaded on first use.
let web = null;
function webGlobals() {
  if (!web) web = host.loadWeb()(host, toJson);
  return web;
}
for (const name of ['Headers', 'Response', 'URL', 'URLSearchParams', 'TextEncoder', 'TextDecoder', 'crypto']) {
  Object.defineProperty(globalThis, name, {
    configurable: true,
    enumerable: false,
    get() {
      const value = webGlobals()[name];
      Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
      return value;
    },
    set(value) {
      Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
    },
  });
}

// env: the workflow's variables and secrets, read from the host on first use.
Object.defineProperty(globalThis, 'env', {
  configurable: true,
  enumerable: false,
  get() {
    const value = Object.freeze(JSON.parse(host.env()));
    Object.defineProperty(globalThis, 'env', { value, configurable: true, enumerable: false });
    return value;
  },
});

// fetch: the host performs the request (see fetch.rs: timeouts, size cap,
// deny-list); a failure rejects with a TypeError that says why.
globalThis.fetch = (input, init) => webGlobals().fetch(input, init);

// setTimeout: the host keeps the clock; callbacks wait here by id.
const timers = new Map();
let nextTimer = 0;
globalThis.setTimeout = (fn, ms = 0, ...args) => {
  if (typeof fn !== 'function') throw new TypeError('setTimeout expects a function');
  const id = ++nextTimer;
  timers.set(id, () => fn(...args));
  host.setTimer(id, Number(ms) || 0);
  return id;
};
globalThis.clearTimeout = (id) => {
  timers.delete(id);
};
export function fireTimer(id) {
  const fn = timers.get(id);
  timers.delete(id);
  if (fn) fn();
}


class EndSignal {
  constructor(reason) {
    this.reason = reason;
  }
}

// JSON.stringify drops functions and mangles other values silently; a
// workflow author deserves an error that says which value and where.
function toJson(value, what) {
  const ancestors = [];
  const check = (v, path) => {
    switch (typeof v) {
      case 'function':
        throw new TypeError(`${what} is not JSON-serialisable: ${path} is a function; pass plain data`);
      case 'bigint':
        throw new TypeError(`${what} is not JSON-serialisable: ${path} is a BigInt; convert it with String() or Number() first`);
      case 'symbol':
        throw new TypeError(`${what} is not JSON-serialisable: ${path} is a Symbol`);
      case 'object': {
        if (v === null || typeof v.toJSON === 'function') return;
        if (ancestors.includes(v)) {
          throw new TypeError(`${what} is not JSON-serialisable: ${path} refers back to an enclosing object (a cycle)`);
        }
        ancestors.push(v);
        if (Array.isArray(v)) {
          for (let i = 0; i < v.length; i++) check(v[i], `${path}[${i}]`);
        } else {
          for (const k of Object.keys(v)) {
            if (v[k] !== undefined) check(v[k], `${path}.${k}`);
          }
        }
        ancestors.pop();
      }
    }
  };
  check(value, 'the value');
  const text = JSON.stringify(value);
  return text === undefined ? 'null' : text;
}

function format(args) {
  return args
    .map((a) => {
      if (typeof a === 'string') return a;
      if (a instanceof Error) return a.stack ? `${a.name}: ${a.message}\n${a.stack}`.trimEnd() : `${a.name}: ${a.message}`;
      if (a === undefined) return 'undefined';
      if (typeof a === 'function') return `[Function ${a.name || 'anonymous'}]`;
      if (typeof a === 'bigint') return `${a}n`;
      try {
        const text = JSON.stringify(a);
        return text === undefined ? String(a) : text;
      } catch (_) {
        return String(a);
      }
    })
    .join(' ');
}

const log = (level) => (...args) => host.log(level, format(args));

globalThis.console = Object.freeze({
  log: log('log'),
  info: log('info'),
  debug: log('log'),
  warn: log('warn'),
  error: log('error'),
});

function end(reason) {
  const text = reason === undefined ? '' : typeof reason === 'string' ? reason : format([reason]);
  host.end(text);
  throw new EndSignal(text);
}
globalThis.$end = end;

// $checkpoint and this.$checkpoint: read from the host on first use. A
// changed value (assigned, or mutated in place) goes back to the host when
// the step ends and is written at its commit, compare-and-set against the
// version read here.
const checkpoints = new Map();
function checkpointSlot(scope) {
  let slot = checkpoints.get(scope);
  if (!slot) {
    const text = host.checkpointRead(scope);
    slot = { text: text ?? null, value: text == null ? undefined : JSON.parse(text), assigned: false };
    checkpoints.set(scope, slot);
  }
  return slot;
}
function defineCheckpoint(target, scope) {
  Object.defineProperty(target, '$checkpoint', {
    configurable: true,
    enumerable: false,
    get: () => checkpointSlot(scope).value,
    set: (value) => {
      const slot = checkpoints.get(scope);
      if (slot) {
        slot.value = value;
        slot.assigned = true;
      } else {
        // Assigned without being read: a write that depends on nothing.
        checkpoints.set(scope, { text: undefined, value, assigned: true });
      }
    },
  });
}
defineCheckpoint(globalThis, '');
function flushCheckpoints() {
  for (const [scope, slot] of checkpoints) {
    const what = scope === '' ? '$checkpoint' : 'this.$checkpoint';
    const text = slot.value === undefined ? null : toJson(slot.value, what);
    if (!slot.assigned && text === slot.text) continue;
    const refused = host.checkpointWrite(scope, text);
    if (refused) {
      const e = new RangeError(refused);
      e.name = 'CheckpointTooLarge';
      throw e;
    }
  }
}

function makeStore(name, scope) {
  const op = (opName, key, arg) => {
    if (typeof key !== 'string') {
      throw new TypeError(`${name}.${opName}: the key must be a string, got ${typeof key}`);
    }
    const result = host.op(scope, opName, key, arg);
    return result === 'null' ? null : JSON.parse(result);
  };
  return Object.freeze({
    async get(key) {
      return op('get', key, null);
    },
    async set(key, value) {
      op('set', key, toJson(value, `${name}.set('${key}')`));
    },
    async push(key, item) {
      op('push', key, toJson(item, `${name}.push('${key}')`));
    },
    async increment(key, delta = 1) {
      if (typeof delta !== 'number' || !Number.isFinite(delta)) {
        throw new TypeError(`${name}.increment('${key}', ${format([delta])}): the delta must be a finite number`);
      }
      return op('increment', key, String(delta));
    },
    async delete(key) {
      op('delete', key, null);
    },
  });
}

// api.csv: the host downloads, parses and stores (see csv_import.rs).
const checkKey = (what, key) => {
  if (typeof key !== 'string' || key === '') {
    throw new TypeError(`api.csv.${what}: the key must be the string importCSV returned, got ${format([key])}`);
  }
};
const csvApi = Object.freeze({
  async importCSV(url, options = {}) {
    const href = url && typeof url === 'object' && typeof url.href === 'string' ? url.href : url;
    if (typeof href !== 'string') {
      throw new TypeError(`api.csv.importCSV: the URL must be a string, got ${format([url])}`);
    }
    const { chunkSize = 500, delimiter = ',' } = options ?? {};
    if (typeof chunkSize !== 'number' || !Number.isInteger(chunkSize)) {
      throw new TypeError(`api.csv.importCSV: chunkSize must be a whole number of rows, got ${format([chunkSize])}`);
    }
    return JSON.parse(host.csvImport(href, chunkSize, String(delimiter)));
  },
  async readCSVChunk(key, index) {
    checkKey('readCSVChunk', key);
    if (!Number.isInteger(index) || index < 0) {
      throw new TypeError(`api.csv.readCSVChunk('${key}', ${format([index])}): the index must be a whole number from 0`);
    }
    const rows = host.csvRead(key, index);
    return rows == null ? null : JSON.parse(rows);
  },
  async deleteCSV(key) {
    checkKey('deleteCSV', key);
    host.csvDelete(key);
  },
});

function makeApi(meta, isHook) {
  const hookOnly = (what) => async () => {
    throw new Error(
      `api.${what} cannot be called from ${meta.action}: hooks run after the run's last step, so they cannot start new ones`
    );
  };
  return Object.freeze({
    run: Object.freeze({ ...meta }),
    runStore: makeStore('runStore', 'run'),
    workflowStore: makeStore('workflowStore', 'workflow'),
    async dedupe(key, ttlSeconds = 86400) {
      if (typeof key !== 'string' || key === '') {
        throw new TypeError(`api.dedupe: the key must be a non-empty string, got ${format([key])}`);
      }
      if (typeof ttlSeconds !== 'number' || !(ttlSeconds > 0) || !Number.isFinite(ttlSeconds)) {
        throw new TypeError(`api.dedupe('${key}', ${format([ttlSeconds])}): the TTL must be a positive number of seconds`);
      }
      return JSON.parse(host.op('run', 'dedupe', key, String(ttlSeconds)));
    },
    log: log('log'),
    end,
    scheduleNextStep: isHook
      ? hookOnly('scheduleNextStep')
      : async (options) => {
          if (options === null || typeof options !== 'object') {
            throw new TypeError('api.scheduleNextStep expects an object: { delay, action, payload }');
          }
          const { delay, action, payload } = options;
          host.schedule(
            action,
            toJson(delay === undefined ? null : delay, 'delay'),
            toJson(payload === undefined ? null : payload, `the payload for '${action}'`)
          );
        },
    waitForEvent: isHook
      ? hookOnly('waitForEvent')
      : async (options) => {
          if (options === null || typeof options !== 'object') {
            throw new TypeError('api.waitForEvent expects an object: { action, payload, timeout, redirect_url }');
          }
          const { action, payload, timeout, redirect_url: redirect } = options;
          if (redirect != null && typeof redirect !== 'string') {
            throw new TypeError(`api.waitForEvent: redirect_url must be a URL string, got ${format([redirect])}`);
          }
          return JSON.parse(
            host.wait(
              action,
              toJson(timeout === undefined ? null : timeout, 'timeout'),
              toJson(payload === undefined ? null : payload, `the payload for '${action}'`),
              redirect ?? null
            )
          );
        },
    csv: isHook
      ? Object.freeze({ importCSV: hookOnly('csv.importCSV'), readCSVChunk: hookOnly('csv.readCSVChunk'), deleteCSV: hookOnly('csv.deleteCSV') })
      : csvApi,
  });
}

// The author's frames only: cut where flowstate's own begin.
function authorStack(stack) {
  if (typeof stack !== 'string') return null;
  const lines = stack.split('\n');
  // The prelude's bytecode has no debug info: its frames read `(<null>...`.
  let end = lines.findIndex((l) => l.includes('flowstate:prelude') || l.includes('(<null>'));
  if (end < 0) return stack;
  if (end > 0 && lines[end - 1].includes('at call (native)')) end -= 1;
  return lines.slice(0, end).join('\n');
}

function describe(e) {
  if (e instanceof Error) {
    return { name: e.name || 'Error', message: String(e.message), stack: authorStack(e.stack) };
  }
  return { name: 'Error', message: `a non-Error value was thrown: ${format([e])}`, stack: null };
}

// Runs one step; resolves to JSON text describing how it ended.
export async function runStep(Workflow, kind, action, dataJson, headersJson, errorJson, meta) {
  try {
    if (typeof Workflow !== 'function') {
      throw new TypeError('the workflow does not define a class named Workflow');
    }
    const instance = new Workflow();
    const method = instance[action];
    if (typeof method !== 'function') {
      throw new TypeError(`Workflow has no method '${action}'`);
    }
    const api = makeApi(meta, kind !== 'action');
    defineCheckpoint(instance, action);
    if (kind === 'complete_hook') {
      await method.call(instance, api);
    } else if (kind === 'error_hook') {
      const info = JSON.parse(errorJson);
      const err = new Error(info.message);
      err.name = info.name;
      if (info.stack) err.stack = info.stack;
      await method.call(instance, err, api);
    } else {
      const value = await method.call(instance, JSON.parse(dataJson), JSON.parse(headersJson), api);
      flushCheckpoints();
      if (web && value instanceof web.Response) {
        const headers = [...value.headers.entries()];
        return JSON.stringify({ ok: true, returned: { response: { status: value.status, headers, body: value.bodyText() } } });
      }
      if (value !== undefined) {
        return JSON.stringify({ ok: true, returned: { json: toJson(value, `the value ${action} returned`) } });
      }
    }
    flushCheckpoints();
    return '{"ok":true}';
  } catch (e) {
    if (e instanceof EndSignal) {
      // The run ends either way; a checkpoint that cannot be kept is said so.
      try {
        flushCheckpoints();
      } catch (refused) {
        host.log('error', `${refused.name}: ${refused.message}`);
      }
      return '{"ok":true}';
    }
    return JSON.stringify({ ok: false, ...describe(e) });
  }
}

// Lists a class's step methods, for deploy-time checks.
export function describeWorkflow(Workflow) {
  if (typeof Workflow !== 'function') return null;
  const names = [];
  for (let proto = Workflow.prototype; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name !== 'constructor' && typeof proto[name] === 'function' && !names.includes(name)) names.push(name);
    }
  }
  return JSON.stringify(names);
}
