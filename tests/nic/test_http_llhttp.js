// SPDX-License-Identifier: Apache-2.0
// Differential test: nic/http.h (via http_verdict) against llhttp, the parser inside Node.js
// (strict mode), which nobody on this project wrote. Cases: valid requests, plus every single-byte
// insertion/replacement of a set of tricky bytes at every position of them.
// Rules: whatever llhttp rejects, we must reject (we are at least as strict); when both accept a
// complete request, method, target, version, keep-alive, header fields and body must agree.
// Usage: node test_http_llhttp.js <path to http_verdict>
'use strict';
const { execFileSync } = require('child_process');

let HTTPParser;
try {
  HTTPParser = process.binding('http_parser').HTTPParser;
} catch (e) {
  console.log('SKIP: this node has no http_parser binding');
  process.exit(77);
}
const methods = process.binding('http_parser').methods;

function llhttp(buf) {
  const p = new HTTPParser();
  p.initialize(HTTPParser.REQUEST, {});
  let got = null;
  let done = false;
  const body = [];
  p[HTTPParser.kOnHeadersComplete] = (vM, vm, headers, method, url, sc, sm, upg, ka) => {
    if (!done) got = { v: vM * 10 + vm, headers, m: methods[method], u: url, ka: !!ka, upg };
  };
  p[HTTPParser.kOnHeaders] = (headers, url) => {
    if (!done && got === null) { pending.headers.push(...headers); pending.url += url; }
  };
  const pending = { headers: [], url: '' };
  p[HTTPParser.kOnBody] = (b) => { if (!done) body.push(Buffer.from(b)); };
  p[HTTPParser.kOnMessageComplete] = () => { done = true; };
  const r = p.execute(buf);
  if (done) {
    if (!got.headers || got.headers.length === 0) got.headers = pending.headers;
    if (!got.u) got.u = pending.url;
    got.b = Buffer.concat(body);
    return { verdict: 'done', req: got };
  }
  if (r instanceof Error) return { verdict: 'error', code: r.code };
  return { verdict: 'more' };
}

const base = [
  'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
  'GET /v1/models?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nX-Pad:  v a l \r\n\r\n',
  'POST /v1/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"prompt":1}\n',
  'GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n',
  'DELETE /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
  'PUT /z HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n',
  '\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n',
];
const tricky = ['\r', '\n', ' ', '\t', ':', '\0', '\x7f', ',', '0', 'a', '\x01', '\xe9', '/', '"', 'A'];
const cases = [];
for (const s of base) {
  cases.push(Buffer.from(s, 'latin1'));
  for (let i = 0; i <= s.length; i++) {
    for (const t of tricky) {
      cases.push(Buffer.from(s.slice(0, i) + t + s.slice(i), 'latin1'));
      if (i < s.length) cases.push(Buffer.from(s.slice(0, i) + t + s.slice(i + 1), 'latin1'));
    }
    if (i < s.length) cases.push(Buffer.from(s.slice(0, i) + s.slice(i + 1), 'latin1'));
  }
}
const extra = [
  'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx',
  'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy',
  'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx',
  'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n',
  'GET / HTTP/1.1\nHost: a\n\n',
];
for (const s of extra) cases.push(Buffer.from(s, 'latin1'));

const input = Buffer.concat(cases.flatMap((c) => {
  const l = Buffer.alloc(4); l.writeUInt32LE(c.length); return [l, c];
}));
const out = execFileSync(process.argv[2], { input, maxBuffer: 1 << 28 }).toString().trim().split('\n');
if (out.length !== cases.length) { console.log(`FAIL: ${out.length} verdicts for ${cases.length} cases`); process.exit(1); }

const hx = (h) => Buffer.from(h, 'hex').toString('latin1');
const trimOWS = (s) => s.replace(/^[ \t]+|[ \t]+$/g, '');
let bad = 0, both = 0, stricter = 0, othermethod = 0;
const known = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS']);
const show = (b) => JSON.stringify(b.toString('latin1'));
for (let i = 0; i < cases.length; i++) {
  const ours = JSON.parse(out[i]);
  const ref = llhttp(cases[i]);
  const fail = (why) => { if (bad++ < 60) console.log(`MISMATCH ${why}: ${show(cases[i])} ours=${out[i].slice(0, 120)} llhttp=${ref.verdict}${ref.code ? ' ' + ref.code : ''}`); };
  if (ref.verdict === 'error') {
    // Documented difference: llhttp knows a fixed list of methods; RFC 9110 9.1 lets any token be
    // a method, and we hand it to the app as HTTP_M_OTHER (it answers 501).
    if (ref.code === 'HPE_INVALID_METHOD' && ours.rc === 1 && !known.has(hx(ours.m))) { othermethod++; continue; }
    if (ours.rc >= 0) fail('llhttp rejects, we accept');
    continue;
  }
  if (ours.rc < 0) { stricter++; continue; }
  if (ref.verdict === 'more') {
    if (ours.rc === 1) fail('we complete a request llhttp still waits on');
    continue;
  }
  if (ours.rc === 0) { fail('llhttp completes a request we still wait on'); continue; }
  both++;
  const q = ref.req;
  const oh = ours.h.map(([n, v]) => [hx(n), hx(v)]);
  const rh = [];
  for (let j = 0; j < q.headers.length; j += 2) rh.push([q.headers[j], trimOWS(q.headers[j + 1])]);
  if (hx(ours.m) !== q.m) fail(`method ${hx(ours.m)} vs ${q.m}`);
  else if (hx(ours.u) !== q.u) fail(`target ${hx(ours.u)} vs ${q.u}`);
  else if (ours.v !== q.v) fail(`version ${ours.v} vs ${q.v}`);
  // Documented difference: llhttp keeps a trailing HTAB in a Connection token ("keep-alive\t"
  // is then not keep-alive); RFC 9110 5.5 excludes OWS from the value, and so do we.
  else if (!!ours.ka !== q.ka && !/connection:[^\r]*\t\r\n/i.test(cases[i].toString('latin1'))) fail(`keep-alive ${ours.ka} vs ${q.ka}`);
  else if (JSON.stringify(oh) !== JSON.stringify(rh)) fail(`headers ${JSON.stringify(oh)} vs ${JSON.stringify(rh)}`);
  else if (hx(ours.b) !== q.b.toString('latin1')) fail('body');
}
console.log(`${cases.length} cases: ${both} parsed alike by both, ${stricter} rejected only by us, ${othermethod} unknown methods we pass to the app, ${bad} mismatches`);
process.exit(bad ? 1 : 0);
