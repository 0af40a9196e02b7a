// SPDX-License-Identifier: Apache-2.0
// tests/serve/serve_drain.js: SIGTERM while streams are in flight, twice.
//   1. default drain timeout: the in-flight streams finish (their finish_reason, then
//      `data: [DONE]`), a request arriving during the drain gets 503 with an OpenAI error body (or
//      finds the listener closed), the process exits 0.
//   2. --drain-timeout-ms 300 with streams far too long for it: every stream is ended early with
//      finish_reason "abort" or an error event, then `data: [DONE]`; nothing hangs; exit 0 within
//      a few seconds.
// usage: node serve_drain.js OFFPATHD MKMODEL. Exit 0 pass, 1 fail, 77 skip.
'use strict';

const h = require('./harness');

const N = 4;
const EXIT_MS = 40000; // drain + exit, generous for a 2-core CI machine under load

async function drain(t, model, {tag, args, long, cut, exitMs}) {
	const srv = await h.startServer(model, ['--max-queue', '64', ...args]);
	const port = srv.port;

	t.begin(`${tag}: streams in flight`);
	let started = 0;
	let allStarted;
	const go = new Promise((r) => { allStarted = r; });
	const streams = Array.from({length: N}, (_, i) => h.streamRequest(port, '/v1/completions',
		{prompt: `Drain test ${i}`, max_tokens: long, ignore_eos: true, seed: i, stream: true},
		{timeoutMs: exitMs + 30000, onBlock: (n) => {
			if (n === 1 && ++started === N)
				allStarted();
		}}).catch((e) => ({error: String(e)})));
	await h.within(30000, `all ${N} streams to start`, go);

	t.begin(`${tag}: SIGTERM`);
	const tTerm = Date.now();
	srv.proc.kill('SIGTERM');
	await h.sleep(100);
	let late;
	try {
		late = await h.request(port, 'POST', '/v1/completions',
			{prompt: 'too late', max_tokens: 4}, {timeoutMs: 10000});
	} catch (e) {
		late = {error: e};
	}
	if (late.error) {
		const refused = /ECONNREFUSED|ECONNRESET|socket hang up/.test(String(late.error));
		t.check(refused, 'a request during the drain: refused or answered 503', String(late.error));
		h.log(`  a request during the drain: ${late.error.code || late.error} (listener closed)`);
	} else {
		t.errorBody(late, 503, 'a request during the drain');
	}

	t.begin(`${tag}: streams end`);
	const ends = await Promise.all(streams);
	h.log(`  streams ended ${Date.now() - tTerm} ms after SIGTERM`);
	const kinds = {};
	for (const [i, r] of ends.entries()) {
		if (!t.check(!r.error && r.status === 200 && r.sse, `stream ${i} ended without a response`,
			r.error || r.status))
			continue;
		t.check(!r.aborted, `stream ${i} was cut without its end events`, r.body.slice(-300));
		t.check(r.sse.errors.length === 0, `stream ${i} framing ([DONE] last)`, r.sse.errors);
		const ev = r.sse.events;
		const lastEv = ev[ev.length - 1];
		let kind;
		if (lastEv && lastEv.error) {
			kind = 'error';
			t.check(typeof lastEv.error.message === 'string' && lastEv.error.message.length > 0,
				`stream ${i}: error event with a message`, lastEv);
		} else {
			const withCh = ev.filter((e) => e.choices && e.choices.length);
			kind = withCh.length ? withCh[withCh.length - 1].choices[0].finish_reason : null;
		}
		kinds[kind] = (kinds[kind] || 0) + 1;
		if (cut)
			t.check(kind === 'abort' || kind === 'error',
				`stream ${i}: ended early by the drain timeout (finish_reason "abort" or an error event)`,
				kind);
		else
			t.check(kind === 'length', `stream ${i}: finished (finish_reason "length")`, kind);
	}
	h.log(`  how the streams ended: ${JSON.stringify(kinds)}`);

	t.begin(`${tag}: exit`);
	const ex = await h.within(exitMs, 'offpathd to exit after SIGTERM', srv.exited)
		.catch((e) => ({error: String(e)}));
	h.log(`  exited ${Date.now() - tTerm} ms after SIGTERM: ${JSON.stringify(ex)}`);
	t.check(ex.code === 0 && ex.signal === null, 'exit status 0 after SIGTERM', ex);
}

h.main(async (t) => {
	const model = h.mkModel('drain');
	await drain(t, model, {tag: 'drain', args: [], long: 200, cut: false, exitMs: EXIT_MS});
	await drain(t, model, {tag: 'drain timeout', args: ['--drain-timeout-ms', '300'], long: 3000,
		cut: true, exitMs: 10000});
});
