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

// The web API classes (Headers, Response, URL, URLSearchParams,
// TextEncoder/Decoder, crypto) are built on first use of any of their
// names: most steps use none, and building them on every step would cost
// every step.
let web = null;
function webGlobals() {
  if (web) return web;
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
    #body = '';
    #bytes = null;
    constructor(body = null, init = {}) {
      const status = init.status === undefined ? 200 : Number(init.status);
      if (!Number.isInteger(status) || status < 200 || status > 599) {
        throw new RangeError(`Response status must be an integer from 200 to 599, got ${init.status}`);
      }
      this.status = status;
      this.statusText = init.statusText === undefined ? '' : String(init.statusText);
      this.headers = new Headers(init.headers);
      this.url = '';
      this.redirected = false;
      if (body != null && typeof body === 'object' && (body instanceof ArrayBuffer || ArrayBuffer.isView(body))) {
        this.#bytes = body instanceof ArrayBuffer ? new Uint8Array(body.slice(0)) : new Uint8Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
      } else {
        this.#body = body == null ? '' : String(body);
      }
    }
    static json(data, init = {}) {
      const r = new Response(toJson(data, 'Response.json'), init);
      if (!r.headers.has('content-type')) r.headers.set('content-type', 'application/json');
      return r;
    }
    // A fetched response: any status, the body as text or as bytes.
    static _fromFetch(r) {
      const res = new Response(r.text === undefined ? null : r.text, { statusText: r.statusText, headers: r.headers });
      res.status = r.status;
      res.url = r.url;
      res.redirected = r.redirected;
      if (r.base64 !== undefined) res.#bytes = Uint8Array.from(atob(r.base64), (c) => c.charCodeAt(0));
      return res;
    }
    get ok() { return this.status >= 200 && this.status < 300; }
    async text() { return this.bodyText(); }
    async json() { return JSON.parse(this.bodyText()); }
    async arrayBuffer() {
      const bytes = this.#bytes || new TextEncoder().encode(this.#body);
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    }
    bodyText() { return this.#bytes ? new TextDecoder().decode(this.#bytes) : this.#body; }
  }

  // URLSearchParams: application/x-www-form-urlencoded pairs, in order.
  const formEncode = (s) =>
    encodeURIComponent(s).replace(/%20/g, '+').replace(/[!'()~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const formDecode = (s) => {
    try {
      return decodeURIComponent(s.replace(/\+/g, ' '));
    } catch (_) {
      return s;
    }
  };
  class URLSearchParams {
    #pairs = [];
    #onChange = null;
    constructor(init = '') {
      if (init instanceof URLSearchParams) {
        this.#pairs = [...init.#pairs];
      } else if (typeof init === 'string') {
        this.#parse(init);
      } else if (Array.isArray(init)) {
        for (const pair of init) {
          if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError('URLSearchParams: each pair must be [name, value]');
          this.#pairs.push([String(pair[0]), String(pair[1])]);
        }
      } else if (init && typeof init === 'object') {
        for (const [k, v] of Object.entries(init)) this.#pairs.push([k, String(v)]);
      }
    }
    #parse(text) {
      this.#pairs = [];
      for (const part of String(text).replace(/^\?/, '').split('&')) {
        if (part === '') continue;
        const eq = part.indexOf('=');
        const [k, v] = eq < 0 ? [part, ''] : [part.slice(0, eq), part.slice(eq + 1)];
        this.#pairs.push([formDecode(k), formDecode(v)]);
      }
    }
    static _bind(params, text, onChange) {
      params.#parse(text);
      params.#onChange = onChange;
      return params;
    }
    #changed() { if (this.#onChange) this.#onChange(this.toString()); }
    get size() { return this.#pairs.length; }
    append(k, v) { this.#pairs.push([String(k), String(v)]); this.#changed(); }
    delete(k) { this.#pairs = this.#pairs.filter(([n]) => n !== String(k)); this.#changed(); }
    get(k) { const p = this.#pairs.find(([n]) => n === String(k)); return p ? p[1] : null; }
    getAll(k) { return this.#pairs.filter(([n]) => n === String(k)).map(([, v]) => v); }
    has(k) { return this.#pairs.some(([n]) => n === String(k)); }
    set(k, v) {
      const name = String(k);
      const i = this.#pairs.findIndex(([n]) => n === name);
      if (i < 0) this.#pairs.push([name, String(v)]);
      else this.#pairs = [...this.#pairs.slice(0, i), [name, String(v)], ...this.#pairs.slice(i + 1).filter(([n]) => n !== name)];
      this.#changed();
    }
    sort() { this.#pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)); this.#changed(); }
    forEach(fn, thisArg) { for (const [k, v] of this.#pairs) fn.call(thisArg, v, k, this); }
    entries() { return this.#pairs.map((p) => [...p])[Symbol.iterator](); }
    keys() { return this.#pairs.map(([k]) => k)[Symbol.iterator](); }
    values() { return this.#pairs.map(([, v]) => v)[Symbol.iterator](); }
    [Symbol.iterator]() { return this.entries(); }
    toString() { return this.#pairs.map(([k, v]) => `${formEncode(k)}=${formEncode(v)}`).join('&'); }
  }

  // URL: parsed by the host (the WHATWG-conformant `url` crate).
  class URL {
    #parts;
    #params;
    constructor(input, base) {
      const text = input instanceof URL ? input.href : String(input);
      this.#set(host.parseUrl(text, base === undefined ? null : String(base instanceof URL ? base.href : base)));
    }
    #set(json) {
      this.#parts = JSON.parse(json);
      this.#params = URLSearchParams._bind(new URLSearchParams(), this.#parts.search, (q) => {
        this.search = q;
      });
    }
    #with(part, value) {
      const p = this.#parts;
      const auth = p.username ? `${p.username}${p.password ? `:${p.password}` : ''}@` : '';
      const next = { ...p, [part]: value };
      const href = `${next.protocol}//${auth}${next.host}${next.pathname}${next.search}${next.hash}`;
      this.#set(host.parseUrl(href, null));
    }
    static canParse(input, base) {
      try {
        new URL(input, base);
        return true;
      } catch (_) {
        return false;
      }
    }
    get href() { return this.#parts.href; }
    get origin() { return this.#parts.origin; }
    get protocol() { return this.#parts.protocol; }
    get username() { return this.#parts.username; }
    get password() { return this.#parts.password; }
    get host() { return this.#parts.host; }
    get hostname() { return this.#parts.hostname; }
    get port() { return this.#parts.port; }
    get pathname() { return this.#parts.pathname; }
    set pathname(v) { this.#with('pathname', String(v).startsWith('/') ? String(v) : `/${v}`); }
    get search() { return this.#parts.search; }
    set search(v) { const q = String(v).replace(/^\?/, ''); this.#with('search', q ? `?${q}` : ''); }
    get hash() { return this.#parts.hash; }
    set hash(v) { const h = String(v).replace(/^#/, ''); this.#with('hash', h ? `#${h}` : ''); }
    get searchParams() { return this.#params; }
    toString() { return this.href; }
    toJSON() { return this.href; }
  }

  // UTF-8 both ways, over the (lazily installed) typed arrays.
  class TextEncoder {
    get encoding() { return 'utf-8'; }
    encode(input = '') {
      const s = String(input);
      const out = [];
      for (const ch of s) {
        let c = ch.codePointAt(0);
        if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
        if (c < 0x80) out.push(c);
        else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
        else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
        else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      }
      return new Uint8Array(out);
    }
  }
  class TextDecoder {
    constructor(label = 'utf-8') {
      if (!/^utf-?8$/i.test(String(label))) throw new RangeError(`TextDecoder: only utf-8 is supported, not '${label}'`);
    }
    get encoding() { return 'utf-8'; }
    decode(input) {
      if (input === undefined) return '';
      const b = input instanceof ArrayBuffer ? new Uint8Array(input) : ArrayBuffer.isView(input) ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength) : null;
      if (!b) throw new TypeError('TextDecoder.decode expects an ArrayBuffer or a typed array');
      let out = '';
      for (let i = 0; i < b.length; ) {
        const x = b[i];
        const need = x < 0x80 ? 0 : x >= 0xf0 && x < 0xf8 ? 3 : x >= 0xe0 ? 2 : x >= 0xc0 ? 1 : -1;
        let c = need === 0 ? x : need === 1 ? x & 31 : need === 2 ? x & 15 : x & 7;
        let ok = need >= 0 && i + need < b.length;
        for (let k = 1; ok && k <= need; k++) {
          const y = b[i + k];
          if (y === undefined || (y & 0xc0) !== 0x80) ok = false;
          else c = (c << 6) | (y & 63);
        }
        if (!ok) {
          out += '\ufffd';
          i += 1;
          continue;
        }
        out += String.fromCodePoint(c);
        i += need + 1;
      }
      return out;
    }
  }

  const hex = (bytes) => bytes.map((b) => b.toString(16).padStart(2, '0')).join('');
  const cryptoApi = Object.freeze({
    randomUUID() {
      const b = host.randomBytes(16);
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const h = hex(b);
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    },
    getRandomValues(array) {
      if (!ArrayBuffer.isView(array) || array instanceof Float32Array || array instanceof Float64Array) {
        throw new TypeError('crypto.getRandomValues expects an integer typed array');
      }
      const bytes = host.randomBytes(array.byteLength);
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(bytes);
      return array;
    },
  });
  web = { Headers, Response, URL, URLSearchParams, TextEncoder, TextDecoder, crypto: cryptoApi };
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
globalThis.fetch = async function fetch(input, init = {}) {
  const { Headers, Response, URL, URLSearchParams } = webGlobals();
  const url =
    input instanceof URL ? input.href : input && typeof input === 'object' && typeof input.url === 'string' ? input.url : String(input);
  const method = String(init.method || 'GET').toUpperCase();
  const headers = new Headers(init.headers);
  const b = init.body;
  let text = null;
  let bytes = null;
  if (b instanceof URLSearchParams) {
    text = b.toString();
    if (!headers.has('content-type')) headers.set('content-type', 'application/x-www-form-urlencoded;charset=UTF-8');
  } else if (b != null && typeof b === 'object' && (b instanceof ArrayBuffer || ArrayBuffer.isView(b))) {
    bytes = Array.from(b instanceof ArrayBuffer ? new Uint8Array(b) : new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  } else if (b != null) {
    text = String(b);
    if (!headers.has('content-type')) headers.set('content-type', 'text/plain;charset=UTF-8');
  }
  const r = JSON.parse(host.fetch(url, method, JSON.stringify([...headers]), text, bytes));
  return Response._fromFetch(r);
};

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
