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
 * Output: one table (markdown) on stdout. Exit 0, 1 on error, 77 without a GPU.
 */
#include <algorithm>
#include <cxxabi.h>
#include <vector>
#include <time.h>

#include "../tests/gpu/gpu_test.h"
#include "step.h"

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
				cudaGraphExecDestroy(ge);
				free(pt);
			}
		pk_step_destroy(s);
	}
	cudaStreamDestroy(st);
	return 0;
}
