// SPDX-License-Identifier: Apache-2.0
// tests/serve/serve_concurrent.js: 64 streaming clients at once, over 8 distinct parameter sets
// (seed, temperature, top_p, top_k, prompt, endpoint shape); every client's text must equal
// `offpathd generate` run once per parameter set, i.e. continuous batching changes nothing in what
// a request gets. Then the server is idle again: no KV pages used, nothing running or queued, and
// the generated-token counter grew by exactly 64 x max_tokens.
// usage: node serve_concurrent.js OFFPATHD MKMODEL. Exit 0 pass, 1 fail, 77 skip.
'use strict';

const os = require('os');
const h = require('./harness');

const N_CLIENTS = 64;
const MAX_TOKENS = 16;

const SETS = [
	{prompt: 'Hello', temperature: 1.0, seed: 1},
	{prompt: 'Hello', temperature: 1.0, seed: 2},
	{prompt: 'The meaning of life is', temperature: 0.7, top_p: 0.9, seed: 3},
	{prompt: 'The meaning of life is', temperature: 0, seed: 4},
	{prompt: 'def fibonacci(n):', temperature: 1.2, top_k: 20, seed: 5},
	{prompt: '日本語のテキスト', temperature: 0.8, top_p: 0.5, top_k: 100, seed: 6},
	{prompt: 'A much longer prompt, so that prefill and decode of different lengths share ' +
		'the batch: one two three four five six seven eight nine ten.', temperature: 1.0, seed: 7},
	{prompt: 'x', temperature: 1.5, top_p: 0.95, seed: 9007199254740993n}, // 2^53 + 1: exact only as an integer,
];

h.main(async (t) => {
	const model = h.mkModel('conc');
	const params = SETS.map((s) => ({...s, max_tokens: MAX_TOKENS, ignore_eos: true}));

	t.begin('references from offpathd generate');
	const t0 = Date.now();
	const refs = await h.pool(params, Math.max(1, os.cpus().length),
		(p) => h.generate(model, {...p, seed: p.seed.toString()}));
	h.log(`  ${refs.length} references in ${Date.now() - t0} ms`);
	t.check(new Set(refs).size === refs.length, 'the 8 parameter sets give 8 different texts', refs);

	const srv = await h.startServer(model, ['--max-queue', '256']);
	const port = srv.port;
	const met0 = await h.getMetrics(port);

	t.begin(`${N_CLIENTS} concurrent streaming clients`);
	const t1 = Date.now();
	const results = await Promise.all(Array.from({length: N_CLIENTS}, (_, i) => {
		const p = params[i % params.length];
		// a seed above 2^53 has to go out as a JSON integer, not a double
		const body = {...p, seed: 0, stream: true, stream_options: {include_usage: (i & 1) === 1}};
		const json = JSON.stringify(body).replace('"seed":0', `"seed":${p.seed.toString()}`);
		return h.streamRequest(port, '/v1/completions', null, {timeoutMs: 180000, rawBody: json});
	}));
	h.log(`  ${N_CLIENTS} streams in ${Date.now() - t1} ms`);
	let bad = 0;
	for (const [i, r] of results.entries()) {
		const want = refs[i % refs.length];
		let ok = r.status === 200 && r.sse && r.sse.errors.length === 0;
		let text = null;
		if (ok) {
			const ev = r.sse.events.filter((e) => e.choices && e.choices.length);
			text = ev.map((e) => e.choices[0].text).join('');
			ok = text === want && ev[ev.length - 1].choices[0].finish_reason === 'length';
			if (ok && (i & 1)) {
				const u = r.sse.events[r.sse.events.length - 1].usage;
				ok = u && u.completion_tokens === MAX_TOKENS;
			}
		}
		if (!ok && bad++ < 4)
			t.check(false, `client ${i} (set ${i % refs.length}): status ${r.status}`,
				{got: text, want, sse: r.sse && r.sse.errors, body: r.body.slice(0, 500)});
	}
	t.check(bad === 0, `${bad} of ${N_CLIENTS} clients got a wrong stream`);

	t.begin('idle again');
	const [, met1] = await h.waitIdle(port, 5000);
	t.eq(h.metric(met1, 'offpath_kv_pages_used'), 0, 'kv pages used');
	t.eq(h.metric(met1, 'offpath_requests_running'), 0, 'requests running');
	t.eq(h.metric(met1, 'offpath_queue_depth'), 0, 'queue depth');
	const g0 = h.genTokens(met0);
	const g1 = h.genTokens(met1);
	t.check(g0 !== null && g1 - g0 === N_CLIENTS * MAX_TOKENS,
		`generated-token counter grew by ${N_CLIENTS} x ${MAX_TOKENS}`, [g0, g1]);

	const ex = await srv.stop('SIGTERM', 10000);
	t.check(ex.code === 0, 'exit status after SIGTERM', ex);
});
