// The web API classes (Headers, Response, URL, URLSearchParams,
// TextEncoder/Decoder, crypto) and fetch. Loaded from its own bytecode the
// first time a step uses any of them (see the prelude's webGlobals): most
// steps use none, and reading this code on every step would cost every step.

export function build(host, toJson) {
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
  const fetchImpl = async function fetch(input, init = {}) {
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
  return { Headers, Response, URL, URLSearchParams, TextEncoder, TextDecoder, crypto: cryptoApi, fetch: fetchImpl };
}
