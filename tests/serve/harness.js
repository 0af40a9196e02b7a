// SPDX-License-Identifier: Apache-2.0
// tests/serve/harness.js: shared pieces of the `offpathd serve` end-to-end tests (node >= 18, no
// packages besides the npm references in $OFFPATH_NPM). Writes a fresh tiny model with
// offpath-mkmodel, starts the server on a free port, waits for its ready line, talks HTTP over real
// sockets (node's http module, raw TCP for malformed requests, curl), parses SSE strictly and
// Prometheus text, runs `offpathd generate` for reference outputs, and on any failure prints the
// server's stderr. Exit codes: 0 pass, 1 fail, 77 skip.
//
// usage from a test: const h = require('./harness'); h.main(async (t) => { ... t.check(...) ... });
// The test's argv: OFFPATHD MKMODEL (meson passes the built targets); without them
// $OFFPATH_BUILD/daemon/offpathd and $OFFPATH_BUILD/tools/offpath-mkmodel are used.
'use strict';

const cp = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');

const BUILD = process.env.OFFPATH_BUILD || '';
const NPM = process.env.OFFPATH_NPM || '';
const OFFPATHD = process.argv[2] || path.join(BUILD, 'daemon', 'offpathd');
const MKMODEL = process.argv[3] || path.join(BUILD, 'tools', 'offpath-mkmodel');

const servers = []; // every server started, killed at exit
const tmpdirs = [];
let current = null; // the test context, for fail()

class Skip extends Error {}
class Fatal extends Error {}

function log(...a) {
	console.log(...a);
}

function sleep(ms) {
	return new Promise((r) => setTimeout(r, ms));
}

// Reject after ms with a message naming what timed out.
function within(ms, what, p) {
	let timer;
	return Promise.race([
		p,
		new Promise((_, rej) => {
			timer = setTimeout(() => rej(new Fatal(`timed out after ${ms} ms: ${what}`)), ms);
		}),
	]).finally(() => clearTimeout(timer));
}

function tmpdir(tag) {
	const d = fs.mkdtempSync(path.join(os.tmpdir(), `offpath-serve-${tag}-`));
	tmpdirs.push(d);
	return d;
}

// A tiny Qwen3 model (bf16, seed 1) in a fresh directory; returns {dir, config}.
function mkModel(tag = 'model') {
	if (!fs.existsSync(MKMODEL))
		throw new Skip(`no offpath-mkmodel at ${MKMODEL}`);
	if (!NPM || !fs.existsSync(NPM))
		throw new Skip(`no npm reference packages at '${NPM}' (run scripts/deps.sh)`);
	const dir = path.join(tmpdir(tag), 'm');
	const r = cp.spawnSync(MKMODEL, ['--arch', 'qwen3', '--size', 'tiny', '--dtype', 'bf16',
		'--seed', '1', '--out', dir, '--npm', NPM], {encoding: 'utf8'});
	if (r.status !== 0)
		throw new Fatal(`offpath-mkmodel failed (${r.status}): ${r.stderr}`);
	const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
	return {dir, config};
}

function freePort() {
	return new Promise((resolve, reject) => {
		const s = net.createServer();
		s.on('error', reject);
		s.listen(0, '127.0.0.1', () => {
			const p = s.address().port;
			s.close(() => resolve(p));
		});
	});
}

// Start `offpathd serve --model DIR --listen 127.0.0.1:PORT ARGS...` and wait for the line
// "listening on 127.0.0.1:PORT" on its stderr. Returns a handle:
//   {port, proc, stderr(), exited (promise of {code, signal}), stop(sig), kill()}.
async function startServer(model, args = [], {readyMs = 60000} = {}) {
	if (!fs.existsSync(OFFPATHD))
		throw new Skip(`no offpathd at ${OFFPATHD}`);
	let lastErr = '';
	for (let attempt = 0; attempt < 3; attempt++) {
		const port = await freePort();
		const argv = ['serve', '--model', model.dir, '--listen', `127.0.0.1:${port}`, ...args];
		log(`+ ${OFFPATHD} ${argv.join(' ')}`);
		const proc = cp.spawn(OFFPATHD, argv, {stdio: ['ignore', 'pipe', 'pipe']});
		let err = '';
		let out = '';
		const srv = {
			port, proc, argv, exitInfo: null,
			stderr: () => err,
			stdout: () => out,
		};
		srv.exited = new Promise((resolve) => {
			proc.on('exit', (code, signal) => {
				srv.exitInfo = {code, signal};
				resolve(srv.exitInfo);
			});
		});
		proc.stdout.on('data', (d) => { out += d; });
		let onReady;
		const ready = new Promise((r) => { onReady = r; });
		proc.stderr.on('data', (d) => {
			err += d;
			const m = /listening on 127\.0\.0\.1:(\d+)/.exec(err);
			if (m)
				onReady(Number(m[1]));
		});
		srv.stop = async (sig = 'SIGTERM', ms = 20000) => {
			if (srv.exitInfo)
				return srv.exitInfo;
			proc.kill(sig);
			return within(ms, `offpathd to exit after ${sig}`, srv.exited);
		};
		srv.kill = () => {
			if (!srv.exitInfo)
				proc.kill('SIGKILL');
		};
		servers.push(srv);
		const r = await within(readyMs, 'the "listening on" line',
			Promise.race([ready, srv.exited.then((e) => e)]));
		if (typeof r === 'number') {
			srv.port = r;
			if (current)
				current.server = srv;
			return srv;
		}
		lastErr = `offpathd exited (code ${r.code}, signal ${r.signal}) before it was ready:\n${err}`;
		if (!/in use|EADDRINUSE/i.test(err))
			break;
	}
	throw new Fatal(lastErr);
}

// One HTTP request on a fresh connection. body: undefined, a string/Buffer (sent as is), or an
// object (JSON). Returns {status, headers, body (string), raw (Buffer), json (parsed or null)}.
// After timeoutMs the connection is closed (so the server cancels the request) and it rejects.
function request(port, method, pth, body, {headers = {}, timeoutMs = 60000} = {}) {
	return new Promise((resolve, reject) => {
		let data = body;
		const hdrs = {...headers};
		if (data !== undefined && !Buffer.isBuffer(data) && typeof data !== 'string') {
			data = JSON.stringify(data);
			if (!hdrs['Content-Type'])
				hdrs['Content-Type'] = 'application/json';
		}
		if (data !== undefined)
			hdrs['Content-Length'] = Buffer.byteLength(data);
		const req = http.request({host: '127.0.0.1', port, method, path: pth, headers: hdrs,
			agent: false}, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => {
				const raw = Buffer.concat(chunks);
				const text = raw.toString('utf8');
				let json = null;
				try {
					json = JSON.parse(text);
				} catch (e) { /* not JSON */ }
				resolve({status: res.statusCode, headers: res.headers, body: text, raw, json});
			});
			res.on('error', reject);
		});
		const timer = setTimeout(() => req.destroy(
			new Fatal(`timed out after ${timeoutMs} ms: ${method} ${pth}`)), timeoutMs);
		req.on('close', () => clearTimeout(timer));
		req.on('error', reject);
		if (data !== undefined)
			req.write(data);
		req.end();
	});
}

// Raw bytes over TCP; reads until the server closes or a complete response (head + Content-Length
// body, or a chunked body's last chunk) has arrived. Returns {status, headers, body, raw}; status 0
// when nothing parseable came back. Write errors (the server may answer before reading it all) are
// ignored.
function rawRequest(port, bytes, {timeoutMs = 20000} = {}) {
	return within(timeoutMs, 'raw request', new Promise((resolve) => {
		const sock = net.connect(port, '127.0.0.1');
		let buf = Buffer.alloc(0);
		let done = false;
		const finish = () => {
			if (done)
				return;
			done = true;
			sock.destroy();
			resolve(parseResponse(buf));
		};
		sock.on('data', (d) => {
			buf = Buffer.concat([buf, d]);
			const r = parseResponse(buf);
			if (r.complete)
				finish();
		});
		sock.on('end', finish);
		sock.on('close', finish);
		sock.on('error', () => {}); // EPIPE/ECONNRESET after an early answer; 'close' follows
		sock.on('connect', () => {
			for (const b of Array.isArray(bytes) ? bytes : [bytes])
				sock.write(b);
		});
	}));
}

function parseResponse(buf) {
	const end = buf.indexOf('\r\n\r\n');
	if (end < 0)
		return {status: 0, headers: {}, body: '', raw: buf, complete: false};
	const head = buf.subarray(0, end).toString('latin1').split('\r\n');
	const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]);
	const headers = {};
	for (const l of head.slice(1)) {
		const i = l.indexOf(':');
		if (i > 0)
			headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
	}
	let body = buf.subarray(end + 4);
	let complete = false;
	if (headers['content-length'] !== undefined) {
		const n = Number(headers['content-length']);
		complete = body.length >= n;
		body = body.subarray(0, n);
	} else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
		const d = dechunk(body);
		complete = d.complete;
		body = d.body;
	}
	let json = null;
	try {
		json = JSON.parse(body.toString('utf8'));
	} catch (e) { /* not JSON */ }
	return {status: m ? Number(m[1]) : 0, headers, body: body.toString('utf8'), raw: buf, json,
		complete};
}

function dechunk(b) {
	const parts = [];
	let i = 0;
	for (;;) {
		const e = b.indexOf('\r\n', i);
		if (e < 0)
			return {body: Buffer.concat(parts), complete: false};
		const n = parseInt(b.subarray(i, e).toString('latin1'), 16);
		if (Number.isNaN(n))
			return {body: Buffer.concat(parts), complete: false};
		if (n === 0)
			return {body: Buffer.concat(parts), complete: true};
		parts.push(b.subarray(e + 2, e + 2 + n));
		i = e + 2 + n + 2;
	}
}

// Parse an SSE body strictly as OpenAI streams it: only `data: PAYLOAD\n\n` blocks, the last one
// `data: [DONE]`. Returns {events: [parsed JSON...], done: bool, errors: [strings]}.
function parseSSE(text) {
	const errors = [];
	const events = [];
	let done = false;
	if (!text.endsWith('\n\n'))
		errors.push('stream does not end with a blank line');
	const blocks = text.split('\n\n');
	blocks.pop(); // the part after the last "\n\n" (empty when well formed)
	for (const b of blocks) {
		if (done) {
			errors.push(`data after [DONE]: ${JSON.stringify(b)}`);
			continue;
		}
		if (!b.startsWith('data: ') || b.indexOf('\n') >= 0) {
			errors.push(`not a single "data: " line: ${JSON.stringify(b.slice(0, 200))}`);
			continue;
		}
		const payload = b.slice(6);
		if (payload === '[DONE]') {
			done = true;
			continue;
		}
		try {
			events.push(JSON.parse(payload));
		} catch (e) {
			errors.push(`not JSON: ${JSON.stringify(payload.slice(0, 200))}`);
		}
	}
	if (!done)
		errors.push('no "data: [DONE]" at the end');
	return {events, done, errors};
}

// POST a streaming request and collect the SSE body (rawBody: send this string instead of
// JSON.stringify(body)). opts.onBlock(count, req, res) is called as each SSE block arrives (a test
// may destroy the request there; set req.offpathCancelled first); onRequest(req) gets the request
// at once. Returns {status, headers, body, sse, json, aborted}.
function streamRequest(port, pth, body,
	{timeoutMs = 120000, onBlock = null, rawBody = null, onRequest = null} = {}) {
	return within(timeoutMs, `streaming POST ${pth}`, new Promise((resolve, reject) => {
		const data = rawBody !== null ? rawBody : JSON.stringify(body);
		const req = http.request({host: '127.0.0.1', port, method: 'POST', path: pth, agent: false,
			headers: {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data)}},
		(res) => {
			const chunks = [];
			let blocks = 0;
			let seen = '';
			res.on('data', (c) => {
				chunks.push(c);
				if (onBlock) {
					seen += c.toString('latin1');
					const n = seen.split('\n\n').length - 1;
					while (blocks < n)
						onBlock(++blocks, req, res);
				}
			});
			const end = (aborted) => {
				const text = Buffer.concat(chunks).toString('utf8');
				resolve({status: res.statusCode, headers: res.headers, body: text, aborted,
					sse: res.statusCode === 200 ? parseSSE(text) : null,
					json: (() => { try { return JSON.parse(text); } catch (e) { return null; } })()});
			};
			res.on('end', () => end(false));
			res.on('aborted', () => end(true));
			res.on('error', () => end(true));
			res.on('close', () => end(!res.complete));
		});
		if (onRequest)
			onRequest(req);
		req.on('error', (e) => {
			if (req.destroyed && req.offpathCancelled)
				resolve({status: 0, aborted: true, body: ''});
			else
				reject(e);
		});
		req.write(data);
		req.end();
	}));
}

// Prometheus text exposition: {samples: Map('name{labels}' -> number), types: Map(name -> type),
// errors: [...]}. Checks each line's syntax.
function parseMetrics(text) {
	const samples = new Map();
	const types = new Map();
	const errors = [];
	const sampleRe = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?$/;
	for (const line of text.split('\n')) {
		if (line === '')
			continue;
		if (line.startsWith('#')) {
			const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$/.exec(line);
			if (!m)
				errors.push(`bad comment line: ${line}`);
			else if (m[1] === 'TYPE')
				types.set(m[2], m[3]);
			continue;
		}
		const m = sampleRe.exec(line);
		if (!m) {
			errors.push(`bad sample line: ${line}`);
			continue;
		}
		const v = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
		if (Number.isNaN(v) && m[3] !== 'NaN')
			errors.push(`bad value: ${line}`);
		samples.set(m[1] + (m[2] || ''), v);
	}
	return {samples, types, errors};
}

async function getMetrics(port) {
	const r = await request(port, 'GET', '/metrics');
	if (r.status !== 200)
		throw new Fatal(`GET /metrics: status ${r.status}: ${r.body.slice(0, 300)}`);
	return parseMetrics(r.body);
}

// A gauge or counter without labels, or the sum over all its label sets.
function metric(m, name) {
	let sum = null;
	for (const [k, v] of m.samples)
		if (k === name || k.startsWith(name + '{'))
			sum = (sum || 0) + v;
	return sum;
}

// Poll /metrics until pred(metrics) holds or ms pass; returns [ok, last metrics, elapsed ms].
async function waitMetrics(port, ms, pred) {
	const t0 = Date.now();
	for (;;) {
		const m = await getMetrics(port);
		if (pred(m))
			return [true, m, Date.now() - t0];
		if (Date.now() - t0 > ms)
			return [false, m, Date.now() - t0];
		await sleep(50);
	}
}

// Wait (up to ms) until no KV page is used and nothing runs or waits; returns waitMetrics' result.
function waitIdle(port, ms = 5000) {
	return waitMetrics(port, ms, (m) => metric(m, 'offpath_kv_pages_used') === 0 &&
		metric(m, 'offpath_requests_running') === 0 && metric(m, 'offpath_queue_depth') === 0);
}

// The generated-tokens counter (the spec's name, or metrics.h's), or null.
function genTokens(m) {
	for (const n of ['offpath_tokens_generated_total', 'offpath_generation_tokens_total'])
		if (metric(m, n) !== null)
			return metric(m, n);
	return null;
}

// `offpathd generate` with the same parameters as an API request: the reference output (stdout
// minus its one trailing newline). p: {prompt, max_tokens, temperature, top_p, top_k, seed,
// ignore_eos}.
function generate(model, p) {
	const args = ['generate', '--model', model.dir, '--prompt', p.prompt,
		'--max-tokens', String(p.max_tokens)];
	if (p.temperature !== undefined)
		args.push('--temperature', String(p.temperature));
	if (p.top_p !== undefined)
		args.push('--top-p', String(p.top_p));
	if (p.top_k !== undefined)
		args.push('--top-k', String(p.top_k));
	if (p.seed !== undefined)
		args.push('--seed', String(p.seed));
	if (p.ignore_eos)
		args.push('--ignore-eos');
	return new Promise((resolve, reject) => {
		const proc = cp.spawn(OFFPATHD, args, {stdio: ['ignore', 'pipe', 'pipe']});
		const out = [];
		let err = '';
		proc.stdout.on('data', (d) => out.push(d));
		proc.stderr.on('data', (d) => { err += d; });
		proc.on('exit', (code) => {
			const text = Buffer.concat(out).toString('utf8');
			if (code !== 0 || !text.endsWith('\n'))
				reject(new Fatal(`offpathd ${args.join(' ')}: exit ${code}: ${err}`));
			else
				resolve(text.slice(0, -1));
		});
	});
}

// Run fn with at most `limit` of them at once.
async function pool(items, limit, fn) {
	const out = new Array(items.length);
	let next = 0;
	const worker = async () => {
		while (next < items.length) {
			const i = next++;
			out[i] = await fn(items[i], i);
		}
	};
	await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker));
	return out;
}

// The test context: check() records failures and keeps going; fatal problems throw.
class Ctx {
	constructor() {
		this.fails = 0;
		this.checks = 0;
		this.server = null;
		this.section = '';
	}
	check(cond, msg, detail) {
		this.checks++;
		if (cond)
			return true;
		this.fails++;
		log(`FAIL [${this.section}] ${msg}`);
		if (detail !== undefined)
			log('  ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)).slice(0, 2000));
		return false;
	}
	eq(a, b, msg) {
		return this.check(a === b, `${msg}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`);
	}
	begin(name) {
		this.section = name;
		log(`== ${name}`);
	}
	// An OpenAI error body: {"error":{"message","type","param","code"}} with a non-empty message.
	errorBody(r, status, what) {
		const ok = this.check(r.status === status, `${what}: status ${r.status}, want ${status}`,
			r.body);
		const e = r.json && r.json.error;
		const shape = e && typeof e === 'object' && typeof e.message === 'string' &&
			e.message.length > 0 && typeof e.type === 'string' && 'param' in e && 'code' in e;
		this.check(shape, `${what}: not an OpenAI error body`, r.body);
		return ok && shape;
	}
}

function cleanup() {
	for (const s of servers)
		s.kill();
	for (const d of tmpdirs)
		fs.rmSync(d, {recursive: true, force: true});
}

// Run a test body; prints the server's stderr when anything failed.
function main(body) {
	const t = new Ctx();
	current = t;
	const guard = setTimeout(() => {
		log('FAIL: the whole test timed out (240 s)');
		dumpServers();
		cleanup();
		process.exit(1);
	}, 240000);
	(async () => {
		let rc = 0;
		try {
			await body(t);
			if (t.fails)
				rc = 1;
		} catch (e) {
			if (e instanceof Skip) {
				log(`skip: ${e.message}`);
				rc = 77;
			} else {
				log(`FAIL [${t.section}] ${e instanceof Fatal ? e.message : e.stack}`);
				rc = 1;
			}
		}
		if (rc === 1)
			dumpServers();
		else if (rc === 0)
			log(`pass: ${t.checks} checks`);
		clearTimeout(guard);
		cleanup();
		process.exit(rc);
	})();
}

function dumpServers() {
	for (const s of servers) {
		const tail = s.stderr().slice(-6000);
		log(`---- offpathd ${s.argv.join(' ')} (port ${s.port}, ` +
			`${s.exitInfo ? `exited ${JSON.stringify(s.exitInfo)}` : 'running'}) stderr:`);
		log(tail || '(empty)');
	}
}

process.on('exit', () => {
	for (const s of servers)
		s.kill();
});

module.exports = {
	NPM, OFFPATHD, MKMODEL, Skip, Fatal, main, mkModel, startServer, request, rawRequest,
	streamRequest, parseSSE, parseMetrics, getMetrics, metric, waitMetrics, waitIdle, genTokens,
	generate, pool, sleep, within, log,
	tmpdir,
};
