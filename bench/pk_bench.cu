/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/pk_bench.cu: decode step time replayed as a CUDA graph, beside the bandwidth floor
 * measured in the same run.
 *
 * For each model shape (Llama-3.2-1B, Qwen2.5-1.5B, Llama-3.1-8B, bf16; the shapes of
 * offpath-mkmodel's 1b / 1.5b / 8b rows, weights drawn on the GPU so no multi-GB file is
 * needed), batch 1/8/64 and context 512/4096: every sequence decodes
 * one token at position ctx-1 (attending to ctx positions of random bf16 KV). The step graph for
 * the batch's bucket is replayed; the median of the timed replays is reported.
 * Floor = (weight bytes + KV bytes read) / copy bandwidth, the copy bandwidth measured here as
 * (bytes read + bytes written) / time of a 2 GiB device-to-device cudaMemcpy.
 * Usage: pk_bench [SHAPE-SUBSTRING [BATCHES]], e.g. pk_bench Qwen 1,8 (BATCHES <= 64).
 * The path column says which kernels the bucket ran (pk_step_path).
 * PK_BENCH_SAMPLING=T,K,P: every sequence samples at temperature T, top-k K, top-p P (default
 * greedy).
 * PK_BENCH_BREAKDOWN=1: after each row, the step's kernels grouped by function and grid, each
 * group replayed alone as a chain in its graph order (so weights still come from DRAM, not L2):
 * launches, total and per-launch microseconds, the same chain of empty kernels (the fixed cost
 * of a launch), and the sums beside the whole step.
 * PK_BENCH_TRACE=1 (a build with meson -Dpk_trace=true): after each row, one replay's kernel
 * timeline (timeline() below says what the columns mean).
 * Output: one table (markdown) on stdout. Exit 0, 1 on error, 77 without a GPU.
 */
#include <algorithm>
#include <errno.h>
#include <cxxabi.h>
#include <vector>
#include <time.h>

#include "../tests/gpu/gpu_test.h"
#include "step.h"
#include "step_pvt.h"

struct shape {
	const char *name;
	enum mdl_arch arch;
	int hidden, layers, heads, kv, hd, inter, vocab;
	double theta;
	bool tie, bias, qkn;
};

static const struct shape shapes[] = {
	{"Llama-3.2-1B", MDL_ARCH_LLAMA, 2048, 16, 32, 8, 64, 8192, 128256, 500000.0, true, false, false},
	{"Qwen2.5-1.5B", MDL_ARCH_QWEN2, 1536, 28, 12, 2, 128, 8960, 151936, 1000000.0, true, true, false},
	{"Llama-3.1-8B", MDL_ARCH_LLAMA, 4096, 32, 32, 8, 128, 14336, 128256, 500000.0, false, false, false},
};

static double copy_bw(void)
{
	size_t n = 2ull << 30;
	void *a, *b;
	CK(cudaMalloc(&a, n));
	CK(cudaMalloc(&b, n));
	CK(cudaMemset(a, 1, n));
	cudaEvent_t e0, e1;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	float best = 1e30f;
	for (int i = 0; i < 6; i++) {
		CK(cudaEventRecord(e0));
		CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice));
		CK(cudaEventRecord(e1));
		CK(cudaEventSynchronize(e1));
		float ms;
		CK(cudaEventElapsedTime(&ms, e0, e1));
		if (i >= 1)
			best = std::min(best, ms);
	}
	cudaFree(a);
	cudaFree(b);
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	return 2.0 * (double)n / (best * 1e-3);
}

/* Median time of reps replays of ge (after 3 warm-up replays), ms. */
static double exec_ms(cudaGraphExec_t ge, cudaStream_t st, int reps)
{
	for (int w = 0; w < 3; w++)
		CK(cudaGraphLaunch(ge, st));
	CK(cudaStreamSynchronize(st));
	cudaEvent_t e0, e1;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	std::vector<float> ts;
	for (int r = 0; r < reps; r++) {
		CK(cudaEventRecord(e0, st));
		CK(cudaGraphLaunch(ge, st));
		CK(cudaEventRecord(e1, st));
		CK(cudaEventSynchronize(e1));
		float ms;
		CK(cudaEventElapsedTime(&ms, e0, e1));
		ts.push_back(ms);
	}
	CK(cudaGetLastError());
	std::sort(ts.begin(), ts.end());
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	return ts[ts.size() / 2];
}

static double graph_ms(cudaGraph_t g, cudaStream_t st, int reps)
{
	cudaGraphExec_t ge;
	CK(cudaGraphInstantiate(&ge, g, 0));
	double ms = exec_ms(ge, st, reps);
	cudaGraphExecDestroy(ge);
	return ms;
}

/* A kernel that does nothing: its chain, with a group's grid and block, is the fixed cost of
 * that many launches in a graph. */
__global__ void k_nop(void) {}

static bool same_launch(const cudaKernelNodeParams &a, const cudaKernelNodeParams &b)
{
	return a.func == b.func && a.gridDim.x == b.gridDim.x && a.gridDim.y == b.gridDim.y &&
	       a.gridDim.z == b.gridDim.z;
}

/* Time of a chain of the graph's kernel nodes that launch like `key` (same function and grid),
 * in graph order; with nop, the same number of empty kernels of that grid and block. */
static double chain_ms(const std::vector<cudaGraphNode_t> &nodes, const cudaKernelNodeParams &key,
		       bool nop, int *cnt, cudaStream_t st)
{
	cudaGraph_t c;
	CK(cudaGraphCreate(&c, 0));
	cudaGraphNode_t prev = NULL;
	*cnt = 0;
	for (cudaGraphNode_t node : nodes) {
		cudaGraphNodeType t;
		cudaKernelNodeParams p;
		CK(cudaGraphNodeGetType(node, &t));
		if (t != cudaGraphNodeTypeKernel ||
		    cudaGraphKernelNodeGetParams(node, &p) != cudaSuccess || !same_launch(p, key))
			continue;
		if (nop) {
			p.func = (void *)k_nop;
			p.kernelParams = NULL;
			p.extra = NULL;
			p.sharedMemBytes = 0;
		}
		cudaGraphNode_t nn;
		CK(cudaGraphAddKernelNode(&nn, c, prev ? &prev : NULL, prev ? 1 : 0, &p));
		prev = nn;
		(*cnt)++;
	}
	double ms = graph_ms(c, st, 10);
	cudaGraphDestroy(c);
	return ms;
}

/* Per-launch-kind time of one bucket's step (PK_BENCH_BREAKDOWN): kernels grouped by function
 * and grid (so the O and down projections, or QKV and the LM head, are separate rows). The
 * chains run without programmatic edges and on inputs the other kernels did not prepare: a cost
 * model, not a replay. The empty column is the same chain of empty kernels. */
static void breakdown(struct pk_step *s, int bucket, double step_ms, cudaStream_t st)
{
	cudaGraph_t g;
	CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
	CKR(pk_step_record(s, bucket, st));
	CK(cudaStreamEndCapture(st, &g));
	size_t n = 0;
	CK(cudaGraphGetNodes(g, NULL, &n));
	std::vector<cudaGraphNode_t> nodes(n);
	CK(cudaGraphGetNodes(g, nodes.data(), &n));
	std::vector<cudaKernelNodeParams> keys;
	for (size_t i = 0; i < n; i++) {
		cudaGraphNodeType t;
		CK(cudaGraphNodeGetType(nodes[i], &t));
		cudaKernelNodeParams p;
		if (t == cudaGraphNodeTypeKernel &&
		    cudaGraphKernelNodeGetParams(nodes[i], &p) == cudaSuccess &&
		    std::none_of(keys.begin(), keys.end(),
				 [&](const cudaKernelNodeParams &k) { return same_launch(k, p); }))
			keys.push_back(p);
	}
	printf("\n| kernel (bucket %d) | grid | launches | total us | us/launch | empty us/launch |\n"
	       "|---|---|---:|---:|---:|---:|\n",
	       bucket);
	double sum = 0.0, sum_nop = 0.0;
	for (const cudaKernelNodeParams &k : keys) {
		int cnt;
		double ms = chain_ms(nodes, k, false, &cnt, st);
		double nop = chain_ms(nodes, k, true, &cnt, st);
		sum += ms;
		sum_nop += nop;
		const char *mangled = NULL;
		char name[72] = "?";
		if (cudaFuncGetName(&mangled, k.func) == cudaSuccess && mangled) {
			int stt = 0;
			char *dm = abi::__cxa_demangle(mangled, NULL, NULL, &stt);
			snprintf(name, sizeof(name), "%s", dm && !stt ? dm : mangled);
			free(dm);
			for (char *q = name; *q; q++)
				if (*q == '|')
					*q = '/';
		}
		printf("| %s | %ux%ux%u | %d | %.1f | %.2f | %.2f |\n", name, k.gridDim.x,
		       k.gridDim.y, k.gridDim.z, cnt, ms * 1e3, ms * 1e3 / cnt, nop * 1e3 / cnt);
	}
	printf("| sum of chains | | | %.1f | | %.1f total |\n| whole step | | | %.1f | | |\n\n",
	       sum * 1e3, sum_nop * 1e3, step_ms * 1e3);
	cudaGraphDestroy(g);
}

/* PK_BENCH_TRACE (a build with -Dpk_trace=true): one replay's kernel timeline. Each kernel
 * launch (an instance) is told apart by its blocks' entry records; per kind, the mean over the
 * step of: release = first block past pdl_wait minus the previous instance's last exit (what a
 * kernel boundary costs on the critical path), staged = last block with its input staged minus
 * first release, work = last exit minus first release; and one middle layer in full. */
struct tr_inst {
	int kind, variant;
	unsigned grid;
	double entry0 = 1e30, entry1 = 0, wait0 = 1e30, wait1 = 0, staged1 = 0, exit1 = 0;
	double mark1 = 0, mark2 = 0;
};

static const char *tr_name(const tr_inst &x)
{
	static char b[48];
	const char *v[] = {"x->y",    "x->acc",    "x->swiglu",   "?",
			   "norm->y", "norm->acc", "norm->swiglu"};
	switch (x.kind) {
	case PK_TR_GEMV1: snprintf(b, sizeof(b), "gemv1 %s", v[x.variant % 7]); break;
	case PK_TR_QKV_POST: return "qkv_post";
	case PK_TR_ATTN: return "attention";
	case PK_TR_MERGE: return "attn merge";
	default: return "?";
	}
	return b;
}

static void timeline(cudaGraphExec_t ge, cudaStream_t st)
{
	if (pk_trace_reset(st) == -ENOTSUP) {
		printf("\n(PK_BENCH_TRACE: this build records nothing; meson -Dpk_trace=true)\n");
		return;
	}
	CK(cudaGraphLaunch(ge, st));
	std::vector<pk_trace_rec> r(1 << 20);
	unsigned dropped;
	int n = pk_trace_read(r.data(), (int)r.size(), &dropped);
	if (n < 0) {
		printf("\n(PK_BENCH_TRACE: read failed)\n");
		return;
	}
	r.resize(n);
	std::sort(r.begin(), r.end(),
		  [](const pk_trace_rec &a, const pk_trace_rec &b) { return a.t_ns < b.t_ns; });
	/* instances: per (kind, variant, grid), every grid-th entry opens the next one */
	std::vector<tr_inst> in;
	std::vector<std::pair<unsigned long long, int>> open; /* key -> current instance */
	std::vector<unsigned> seen;
	for (const pk_trace_rec &x : r) {
		unsigned long long key = ((unsigned long long)x.kind << 48) |
					 ((unsigned long long)x.variant << 32) | x.grid;
		size_t k = 0;
		while (k < open.size() && open[k].first != key)
			k++;
		if (x.phase == PK_TR_ENTRY && (k == open.size() || seen[k] == x.grid)) {
			tr_inst t;
			t.kind = x.kind, t.variant = x.variant, t.grid = x.grid;
			in.push_back(t);
			if (k == open.size()) {
				open.push_back({key, 0});
				seen.push_back(0);
			}
			open[k].second = (int)in.size() - 1;
			seen[k] = 0;
		}
		if (k == open.size())
			continue;
		tr_inst &t = in[open[k].second];
		double us = x.t_ns * 1e-3;
		if (x.phase == PK_TR_ENTRY) {
			seen[k]++;
			t.entry0 = std::min(t.entry0, us), t.entry1 = std::max(t.entry1, us);
		} else if (x.phase == PK_TR_WAITED) {
			t.wait0 = std::min(t.wait0, us), t.wait1 = std::max(t.wait1, us);
		} else if (x.phase == PK_TR_STAGED) {
			t.staged1 = std::max(t.staged1, us);
		} else if (x.phase == PK_TR_MARK1) {
			t.mark1 = std::max(t.mark1, us);
		} else if (x.phase == PK_TR_MARK2) {
			t.mark2 = std::max(t.mark2, us);
		} else {
			t.exit1 = std::max(t.exit1, us);
		}
	}
	std::sort(in.begin(), in.end(),
		  [](const tr_inst &a, const tr_inst &b) { return a.entry0 < b.entry0; });
	printf("\n%d records (%u dropped), %zu launches traced\n", n, dropped, in.size());
	printf("\n| kernel | grid | launches | release us | staged us | work us | mark1 us | "
	       "mark2 us |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
	std::vector<int> done(in.size(), 0);
	for (size_t i = 1; i < in.size(); i++) {
		if (done[i])
			continue;
		double rel = 0, stg = 0, wk = 0, m1 = 0, m2 = 0;
		int c = 0;
		for (size_t j = i; j < in.size(); j++) {
			if (in[j].kind != in[i].kind || in[j].variant != in[i].variant ||
			    in[j].grid != in[i].grid)
				continue;
			done[j] = 1;
			rel += in[j].wait0 - in[j - 1].exit1;
			stg += in[j].staged1 > 0 ? in[j].staged1 - in[j].wait0 : 0;
			wk += in[j].exit1 - in[j].wait0;
			m1 += in[j].mark1 > 0 ? in[j].mark1 - in[j].wait0 : 0;
			m2 += in[j].mark2 > 0 ? in[j].mark2 - in[j].wait0 : 0;
			c++;
		}
		printf("| %s | %u | %d | %.2f | %.2f | %.2f | %.2f | %.2f |\n", tr_name(in[i]),
		       in[i].grid, c, rel / c, stg / c, wk / c, m1 / c, m2 / c);
	}
	size_t a = in.size() / 2, b = std::min(in.size(), a + 9);
	if (a == 0)
		return;
	double t0 = in[a].entry0;
	printf("\nmiddle of the step, us from the first entry below:\n\n"
	       "| kernel | grid | first entry | last entry | first released | last released | "
	       "last staged | last exit |\n"
	       "|---|---:|---:|---:|---:|---:|---:|---:|\n");
	for (size_t i = a; i < b; i++)
		printf("| %s | %u | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", tr_name(in[i]),
		       in[i].grid, in[i].entry0 - t0, in[i].entry1 - t0, in[i].wait0 - t0,
		       in[i].wait1 - t0, in[i].staged1 > 0 ? in[i].staged1 - t0 : 0,
		       in[i].exit1 - t0);
	printf("\n");
}

static void cfg_of(const struct shape *s, struct mdl_config *c)
{
	memset(c, 0, sizeof(*c));
	c->arch = s->arch;
	c->vocab_size = s->vocab;
	c->hidden = s->hidden;
	c->intermediate = s->inter;
	c->n_layers = s->layers;
	c->n_heads = s->heads;
	c->n_kv_heads = s->kv;
	c->head_dim = s->hd;
	c->max_pos = 131072;
	c->rms_eps = 1e-5f;
	c->rope.type = MDL_ROPE_DEFAULT;
	c->rope.theta = s->theta;
	c->tie_embeddings = s->tie;
	c->attn_bias = s->bias;
	c->qk_norm = s->qkn;
	c->dtype = MDL_BF16;
}

int main(int argc, char **argv)
{
	gt_require_gpu("pk_bench");
	int reps = 30;
	const char *only = argc > 1 ? argv[1] : NULL;
	cudaDeviceProp prop;
	CK(cudaGetDeviceProperties(&prop, 0));
	double bw = copy_bw();
	time_t now = time(NULL);
	char date[32];
	strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&now));
	printf("pk_bench: %s, %d SMs, %.0f GiB; copy bandwidth %.2f TB/s (read+write); %s\n",
	       prop.name, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, bw / 1e12,
	       date);
	printf("\n| model (bf16) | batch | ctx | path | step ms | floor ms | step/floor | tokens/s | weight+KV GB/s |\n");
	printf("|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
	cudaStream_t st;
	CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
	int batches[3] = {1, 8, 64}, nb = 3, ctxs[] = {512, 4096};
	if (argc > 2) { /* a comma-separated subset of batch sizes */
		nb = 0;
		for (char *p = argv[2]; *p && nb < 3;) {
			batches[nb++] = (int)strtol(p, &p, 10);
			p += *p == ',';
		}
	}
	for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
		const struct shape *sh = &shapes[si];
		if (only && !strstr(sh->name, only))
			continue;
		struct mdl_config cfg;
		cfg_of(sh, &cfg);
		struct pk_step_opts o;
		memset(&o, 0, sizeof(o));
		o.dtype = PK_STEP_BF16;
		o.page_tokens = 16;
		o.max_tokens = 64;
		o.max_seqs = 64;
		o.max_logits = 64;
		o.max_ctx = 4096;
		size_t kvtok = (size_t)2 * sh->layers * 2 * sh->kv * sh->hd;
		o.kv_bytes = kvtok * 64 * 4096 + kvtok * 16 * 16;
		struct pk_step *s;
		char err[256];
		if (pk_step_create_random(&s, &cfg, 1234 + si, 0.02f, &o, err, sizeof(err))) {
			fprintf(stderr, "pk_bench: %s: %s\n", sh->name, err);
			return 1;
		}
		int mp = pk_step_max_pages_per_seq(s);
		const struct pk_step_batch *b = pk_step_batch(s);
		for (int bi = 0; bi < nb; bi++)
			for (int ci = 0; ci < 2; ci++) {
				int B = batches[bi], C = ctxs[ci];
				if (B < 1 || B > 64)
					continue;
				int32_t tok[64], pos[64], sq[64], lt[64], row[64];
				int32_t *pt = (int32_t *)malloc(4 * (size_t)B * mp);
				struct pk_sampling sp[64];
				memset(sp, 0, sizeof(sp));
				const char *smp = getenv("PK_BENCH_SAMPLING");
				for (int i = 0; smp && i < 64; i++) {
					sscanf(smp, "%f,%d,%f", &sp[i].temperature, &sp[i].top_k,
					       &sp[i].top_p);
					sp[i].seed = 7 + i;
				}
				uint64_t rng = 99 + B * 7 + C;
				for (int i = 0; i < B; i++) {
					tok[i] = (int32_t)(gt_rng_next(&rng) % (uint64_t)sh->vocab);
					pos[i] = C - 1;
					sq[i] = i;
					lt[i] = i;
					row[i] = i;
					for (int p = 0; p < mp; p++)
						pt[(size_t)i * mp + p] = i * mp + p;
				}
				struct pk_step_host_batch hb = {B, B, B, tok, pos, sq, lt, row, pt, sp};
				CKR(pk_step_batch_upload(s, &hb, st));
				cudaGraphExec_t ge;
				CKR(pk_step_graph(s, pk_step_bucket(s, B), 0, st, &ge));
				double med = exec_ms(ge, st, reps);
				double bytes = (double)pk_step_weight_bytes(s) +
					       (double)B * C * pk_step_kv_bytes_per_token(s);
				double floor_ms = bytes / bw * 1e3;
				printf("| %s | %d | %d | %s | %.3f | %.3f | %.2fx | %.0f | %.0f |\n", sh->name,
				       B, C, pk_step_path(s, pk_step_bucket(s, B)), med, floor_ms, med / floor_ms, B / (med * 1e-3), bytes / (med * 1e-3) / 1e9);
				fflush(stdout);
				(void)b;
				if (getenv("PK_BENCH_BREAKDOWN"))
					breakdown(s, pk_step_bucket(s, B), med, st);
				if (getenv("PK_BENCH_TRACE"))
					timeline(ge, st);
				cudaGraphExecDestroy(ge);
				free(pt);
			}
		pk_step_destroy(s);
	}
	cudaStreamDestroy(st);
	return 0;
}
