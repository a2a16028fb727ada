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

// Headers and Response, as much of the web API as a step needs to answer an
// HTTP trigger; case-insensitive names, insertion order kept.
class Headers {
  #map = new Map();
  constructor(init) {
    if (init == null) return;
    const pairs = init instanceof Headers ? init.entries() : Array.isArray(init) ? init : Object.entries(init);
    for (const [k, v] of pairs) this.append(k, v);
  }
  append(name, value) {
    const key = String(name).toLowerCase();
    const prev = this.#map.get(key);
    this.#map.set(key, prev === undefined ? String(value) : `${prev}, ${value}`);
  }
  set(name, value) { this.#map.set(String(name).toLowerCase(), String(value)); }
  get(name) { const v = this.#map.get(String(name).toLowerCase()); return v === undefined ? null : v; }
  has(name) { return this.#map.has(String(name).toLowerCase()); }
  delete(name) { this.#map.delete(String(name).toLowerCase()); }
  forEach(fn, thisArg) { for (const [k, v] of this.#map) fn.call(thisArg, v, k, this); }
  entries() { return this.#map.entries(); }
  keys() { return this.#map.keys(); }
  values() { return this.#map.values(); }
  [Symbol.iterator]() { return this.#map.entries(); }
}

class Response {
  #body;
  constructor(body = null, init = {}) {
    const status = init.status === undefined ? 200 : Number(init.status);
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      throw new RangeError(`Response status must be an integer from 200 to 599, got ${init.status}`);
    }
    this.status = status;
    this.statusText = init.statusText === undefined ? '' : String(init.statusText);
    this.headers = new Headers(init.headers);
    this.#body = body == null ? '' : typeof body === 'string' ? body : String(body);
  }
  static json(data, init = {}) {
    const r = new Response(toJson(data, 'Response.json'), init);
    if (!r.headers.has('content-type')) r.headers.set('content-type', 'application/json');
    return r;
  }
  get ok() { return this.status >= 200 && this.status < 300; }
  async text() { return this.#body; }
  async json() { return JSON.parse(this.#body); }
  bodyText() { return this.#body; }
}
globalThis.Headers = Headers;
globalThis.Response = Response;

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

function makeStore(name) {
  const op = (opName, key, arg) => {
    if (typeof key !== 'string') {
      throw new TypeError(`${name}.${opName}: the key must be a string, got ${typeof key}`);
    }
    const result = host.op(opName, key, arg);
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

function makeApi(meta, isHook) {
  const hookOnly = (what) => async () => {
    throw new Error(
      `api.${what} cannot be called from ${meta.action}: hooks run after the run's last step, so they cannot start new ones`
    );
  };
  return Object.freeze({
    run: Object.freeze({ ...meta }),
    runStore: makeStore('runStore'),
    async dedupe(key, ttlSeconds = 86400) {
      if (typeof key !== 'string' || key === '') {
        throw new TypeError(`api.dedupe: the key must be a non-empty string, got ${format([key])}`);
      }
      if (typeof ttlSeconds !== 'number' || !(ttlSeconds > 0) || !Number.isFinite(ttlSeconds)) {
        throw new TypeError(`api.dedupe('${key}', ${format([ttlSeconds])}): the TTL must be a positive number of seconds`);
      }
      return JSON.parse(host.op('dedupe', key, String(ttlSeconds)));
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
    waitForEvent: isHook ? hookOnly('waitForEvent') : undefined,
    csv: isHook
      ? Object.freeze({ importCSV: hookOnly('csv.importCSV'), readCSVChunk: hookOnly('csv.readCSVChunk'), deleteCSV: hookOnly('csv.deleteCSV') })
      : undefined,
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
      if (value instanceof Response) {
        const headers = [...value.headers.entries()];
        return JSON.stringify({ ok: true, returned: { response: { status: value.status, headers, body: value.bodyText() } } });
      }
      if (value !== undefined) {
        return JSON.stringify({ ok: true, returned: { json: toJson(value, `the value ${action} returned`) } });
      }
    }
    return '{"ok":true}';
  } catch (e) {
    if (e instanceof EndSignal) return '{"ok":true}';
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
