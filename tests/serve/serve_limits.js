// SPDX-License-Identifier: Apache-2.0
// tests/serve/serve_limits.js: `offpathd serve` when clients go away and when the queue is full.
//   - cancellation: long streaming and non-streaming requests whose clients disconnect; their KV
//     pages come back (offpath_kv_pages_used returns to 0 while the requests would still have been
//     generating), nothing stays running or queued, the token counter stops moving and stays far
//     below what the requests asked for; a good request is served afterwards
//   - a full queue (--max-queue 2, 100 requests at once): some get 429 with a
//     Retry-After header and an OpenAI error body, every other one completes correctly, and once the
//     burst is over a new request is served
// usage: node serve_limits.js OFFPATHD MKMODEL. Exit 0 pass, 1 fail, 77 skip.
'use strict';

const http = require('http');
const h = require('./harness');

const LONG = 1000; // tokens asked for by the requests that get cancelled
const N_BURST = 100; // requests at once against --max-queue 2

// A non-streaming request whose client disconnects after ms.
function abandon(port, body, ms) {
	return new Promise((resolve) => {
		const data = JSON.stringify(body);
		const req = http.request({host: '127.0.0.1', port, method: 'POST', path: '/v1/completions',
			agent: false, headers: {'Content-Type': 'application/json',
				'Content-Length': Buffer.byteLength(data)}}, (res) => {
			res.resume();
			res.on('end', () => resolve(`finished with ${res.statusCode} before the disconnect`));
		});
		req.on('error', () => resolve('disconnected'));
		req.write(data);
		req.end();
		setTimeout(() => {
			req.destroy();
			resolve('disconnected');
		}, ms);
	});
}

h.main(async (t) => {
	const model = h.mkModel('limits');

	t.begin('client disconnects');
	const srv = await h.startServer(model, ['--max-queue', '64']);
	const port = srv.port;
	const met0 = await h.getMetrics(port);
	const g0 = h.genTokens(met0);
	t.check(g0 !== null, 'a generated-token counter exists');
	const kvTotal = h.metric(met0, 'offpath_kv_pages_free');
	t.check(kvTotal > 0 && h.metric(met0, 'offpath_kv_pages_used') === 0, 'idle KV pool', kvTotal);

	// Streams: each drops its connection after its second SSE block; 2 s after the first one does
	// (or 20 s after the start, whichever comes first) every stream still open is dropped too, so
	// requests still waiting in the queue are cancelled as well. The first stream to get its second
	// block takes a metrics snapshot while everything is still generating.
	let busy = null;
	let snapshotting = null;
	const N_STREAM = 6;
	const reqs = [];
	const cut = (r) => {
		r.offpathCancelled = true;
		r.destroy();
	};
	let cutAll = setTimeout(() => reqs.forEach(cut), 20000);
	const streams = Array.from({length: N_STREAM}, (_, i) => {
		const req = {prompt: `Stream number ${i} goes on and on`, max_tokens: LONG, ignore_eos: true,
			temperature: 1, seed: 100 + i, stream: true};
		return h.streamRequest(port, '/v1/completions', req, {timeoutMs: 60000,
			onRequest: (r) => reqs.push(r),
			onBlock: (n, creq) => {
				if (n !== 2)
					return;
				if (!snapshotting) {
					snapshotting = h.getMetrics(port).then((m) => { busy = m; });
					clearTimeout(cutAll);
					cutAll = setTimeout(() => reqs.forEach(cut), 2000);
				}
				snapshotting.then(() => cut(creq));
			}});
	});
	const others = [
		abandon(port, {prompt: 'A non-streaming request', max_tokens: LONG, ignore_eos: true,
			seed: 1}, 700),
		abandon(port, {prompt: 'Another one', max_tokens: LONG, ignore_eos: true, seed: 2}, 900),
	];
	const ends = await Promise.all(streams.map((p) => p.catch((e) => ({error: String(e)}))));
	clearTimeout(cutAll);
	const oends = await Promise.all(others);
	const tCancel = Date.now();
	for (const [i, r] of ends.entries())
		t.check(r.aborted === true, `stream ${i} was cut by the client as planned`,
			{status: r.status, error: r.error, body: (r.body || '').slice(0, 300)});
	for (const [i, r] of oends.entries())
		t.eq(r, 'disconnected', `non-streaming request ${i}`);
	if (t.check(busy !== null, 'metrics snapshot while streaming')) {
		t.check(h.metric(busy, 'offpath_kv_pages_used') > 0, 'KV pages in use while streaming',
			h.metric(busy, 'offpath_kv_pages_used'));
		t.check(h.metric(busy, 'offpath_requests_running') > 0, 'requests running while streaming',
			h.metric(busy, 'offpath_requests_running'));
		t.eq(h.metric(busy, 'offpath_kv_pages_used') + h.metric(busy, 'offpath_kv_pages_free'),
			kvTotal, 'used + free is the pool size while streaming');
	}
	const [idle, met1, ms] = await h.waitMetrics(port, 10000, (m) =>
		h.metric(m, 'offpath_kv_pages_used') === 0 && h.metric(m, 'offpath_requests_running') === 0 &&
		h.metric(m, 'offpath_queue_depth') === 0);
	h.log(`  idle ${Date.now() - tCancel} ms after the last disconnect (polled ${ms} ms)`);
	t.check(idle, 'KV pages back, nothing running or queued within 10 s of the disconnects', {
		kv_used: h.metric(met1, 'offpath_kv_pages_used'),
		running: h.metric(met1, 'offpath_requests_running'),
		queue: h.metric(met1, 'offpath_queue_depth')});
	t.eq(h.metric(met1, 'offpath_kv_pages_free'), kvTotal, 'all KV pages free again');
	const g1 = h.genTokens(met1);
	await h.sleep(500);
	const met2 = await h.getMetrics(port);
	const g2 = h.genTokens(met2);
	t.eq(g2, g1, 'the generated-token counter stopped moving');
	t.check(g1 - g0 < (N_STREAM + 2) * LONG / 2,
		`the cancelled requests generated far fewer than the ${(N_STREAM + 2) * LONG} tokens asked for`,
		g1 - g0);

	t.begin('a good request after the disconnects');
	const p = {prompt: 'After the storm', max_tokens: 8, temperature: 0.5, seed: 77, ignore_eos: true};
	const ref = await h.generate(model, p);
	const good = await h.request(port, 'POST', '/v1/completions', p);
	t.eq(good.status, 200, 'status');
	t.eq(good.json && good.json.choices && good.json.choices[0].text, ref,
		'text vs offpathd generate');
	const ex = await srv.stop('SIGTERM', 10000);
	t.check(ex.code === 0, 'exit status after SIGTERM', ex);

	t.begin('429 when the queue is full');
	// --max-queue is the request ring's size (a power of two); with it at 2 the server holds at most
	// 2 + the scheduler's table (64) requests, so 100 at once must overflow.
	const srv2 = await h.startServer(model, ['--max-queue', '2']);
	const q = {prompt: 'Queue', max_tokens: 24, temperature: 0.9, seed: 9, ignore_eos: true};
	const qref = await h.generate(model, q);
	const burst = await Promise.all(Array.from({length: N_BURST},
		() => h.request(srv2.port, 'POST', '/v1/completions', q, {timeoutMs: 120000})));
	const by = {};
	for (const r of burst)
		by[r.status] = (by[r.status] || 0) + 1;
	h.log(`  statuses: ${JSON.stringify(by)}`);
	t.check(by[429] > 0, 'some requests got 429', by);
	t.check((by[429] || 0) + (by[200] || 0) === N_BURST, 'every request got 200 or 429', by);
	let shown = 0;
	for (const r of burst) {
		if (r.status === 429) {
			const ra = r.headers['retry-after'];
			if (!t.check(ra !== undefined && /^\d+$/.test(ra), '429 has a Retry-After in seconds',
				r.headers) && shown++ > 2)
				break;
			if (!t.errorBody(r, 429, '429 body') && shown++ > 2)
				break;
		} else if (r.status === 200) {
			if (!t.eq(r.json && r.json.choices && r.json.choices[0].text, qref,
				'a 200 in the burst vs offpathd generate') && shown++ > 2)
				break;
		}
	}
	const after = await h.request(srv2.port, 'POST', '/v1/completions', q);
	t.eq(after.status, 200, 'a request after the burst');
	const [idle2, met3] = await h.waitMetrics(srv2.port, 5000,
		(m) => h.metric(m, 'offpath_kv_pages_used') === 0);
	t.check(idle2, 'no KV pages used after the burst', h.metric(met3, 'offpath_kv_pages_used'));
	const ex2 = await srv2.stop('SIGTERM', 10000);
	t.check(ex2.code === 0, 'exit status after SIGTERM', ex2);
});
