/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/gpu/test_pk_devlaunch.cu: the step captured as a graph instantiated with
 * cudaGraphInstantiateFlagDeviceLaunch and fired from a kernel that itself runs inside a
 * device-launchable graph (the persistent scheduler's way, notes/device-launch.md). The
 * "scheduler" kernel runs N greedy decode steps with no host involvement: it writes the batch
 * descriptor (token = the last sampled one, position + 1), fires the step graph
 * (cudaStreamGraphFireAndForget, alternating two instantiations), spins on the step's `done`
 * counter, and records each token. Pass: the same N tokens as the host-driven loop replaying a
 * normal graph of the same step, and the fire-to-done latency is printed.
 * Needs -rdc=true and cudadevrt. Exit 0 pass, 1 fail, 77 no GPU.
 */
#include "gpu_test.h"
#include "step.h"

#define N_STEPS 24

__device__ __forceinline__ unsigned long long ld_acquire(const unsigned long long *p)
{
	unsigned long long v;
	/* A-done: acquire, gpu scope; pairs with k_done's release (fence + atomicAdd) */
	asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
	return v;
}

__device__ __forceinline__ unsigned long long globaltimer_ns(void)
{
	unsigned long long t;
	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

__global__ void k_sched(cudaGraphExec_t e0, cudaGraphExec_t e1, struct pk_step_batch b, int pos0,
			int32_t first_tok, int32_t *toks, long long *cycles, int *status)
{
	int32_t tok = first_tok;
	long long total = 0;
	for (int i = 0; i < N_STEPS; i++) {
		b.tok_id[0] = tok;
		b.tok_pos[0] = pos0 + i;
		/* R-batch: the descriptor is visible to the fired graph's kernels before launch */
		__threadfence();
		unsigned long long before = ld_acquire(b.done);
		unsigned long long t0 = globaltimer_ns();
		cudaError_t e = cudaGraphLaunch((i & 1) ? e1 : e0, cudaStreamGraphFireAndForget);
		if (e != cudaSuccess) {
			*status = 1000 + (int)e;
			return;
		}
		while (ld_acquire(b.done) == before)
			;
		total += (long long)(globaltimer_ns() - t0);
		tok = b.out_token[0];
		toks[i] = tok;
	}
	*cycles = total;
	*status = 0;
}

int main(int argc, char **argv)
{
	gt_require_gpu("test_pk_devlaunch");
	if (argc < 2) {
		printf("test_pk_devlaunch: SKIP: usage: test_pk_devlaunch MODEL_DIR [bf16|f32]\n");
		return 77;
	}
	struct pk_step_opts o;
	gt_step_opts(&o, argc > 2 && !strcmp(argv[2], "f32"), 32, 1, 512);
	struct mdl *m;
	struct pk_step *s;
	if (gt_open_step("test_pk_devlaunch", argv[1], &o, &m, &s))
		return 1;
	int vocab = pk_step_vocab(s), mp = pk_step_max_pages_per_seq(s);
	const struct pk_step_batch *b = pk_step_batch(s);
	cudaStream_t st;
	CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));

	/* prompt of 20 tokens, prefilled by the host path */
	uint64_t rng = 4242;
	int32_t prompt[20], pos[20], sq[20], lt = 19, row = 0;
	for (int i = 0; i < 20; i++) {
		prompt[i] = (int32_t)(gt_rng_next(&rng) % (uint64_t)vocab);
		pos[i] = i;
		sq[i] = 0;
	}
	int32_t *pt = (int32_t *)malloc(4 * (size_t)mp);
	struct pk_sampling sp;
	memset(&sp, 0, sizeof(sp));
	cudaGraphExec_t host1, dev0, dev1;
	CKR(pk_step_graph(s, 1, 0, st, &host1));
	CKR(pk_step_graph(s, 1, cudaGraphInstantiateFlagDeviceLaunch, st, &dev0));
	CKR(pk_step_graph(s, 1, cudaGraphInstantiateFlagDeviceLaunch, st, &dev1));

	int32_t ref[N_STEPS], got[N_STEPS];
	for (int pass = 0; pass < 2; pass++) {
		/* each pass on its own pages */
		for (int i = 0; i < mp; i++)
			pt[i] = pass * mp + i;
		struct pk_step_host_batch hb = {20, 1, 1, prompt, pos, sq, &lt, &row, pt, &sp};
		CKR(pk_step_batch_upload(s, &hb, st));
		CKR(pk_step_record(s, pk_step_bucket(s, 20), st));
		int32_t first;
		CK(cudaMemcpyAsync(&first, b->out_token, 4, cudaMemcpyDeviceToHost, st));
		CK(cudaStreamSynchronize(st));
		/* switch the descriptor to single-token decode */
		int32_t one = 1, zero = 0;
		CK(cudaMemcpy(b->n_tokens, &one, 4, cudaMemcpyHostToDevice));
		CK(cudaMemcpy(b->logit_tok, &zero, 4, cudaMemcpyHostToDevice));
		CK(cudaMemcpy(b->n_logits, &one, 4, cudaMemcpyHostToDevice));
		if (pass == 0) {
			int32_t tok = first;
			for (int i = 0; i < N_STEPS; i++) {
				int32_t p = 20 + i;
				CK(cudaMemcpyAsync(b->tok_id, &tok, 4, cudaMemcpyHostToDevice, st));
				CK(cudaMemcpyAsync(b->tok_pos, &p, 4, cudaMemcpyHostToDevice, st));
				CK(cudaGraphLaunch(host1, st));
				CK(cudaMemcpyAsync(&tok, b->out_token, 4, cudaMemcpyDeviceToHost, st));
				CK(cudaStreamSynchronize(st));
				ref[i] = tok;
			}
		} else {
			/* the scheduler kernel inside a device-launchable graph */
			int32_t *dtoks;
			long long *dcyc, cyc = 0;
			int *dstat, stat = -1;
			CK(cudaMalloc(&dtoks, 4 * N_STEPS));
			CK(cudaMalloc(&dcyc, 8));
			CK(cudaMalloc(&dstat, 4));
			CK(cudaMemset(dstat, 0xff, 4));
			cudaGraph_t g;
			cudaGraphExec_t ge;
			CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
			k_sched<<<1, 1, 0, st>>>(dev0, dev1, *b, 20, first, dtoks, dcyc, dstat);
			CK(cudaStreamEndCapture(st, &g));
			CK(cudaGraphInstantiateWithFlags(&ge, g, cudaGraphInstantiateFlagDeviceLaunch));
			CK(cudaGraphUpload(ge, st));
			CK(cudaGraphLaunch(ge, st));
			CK(cudaStreamSynchronize(st));
			CK(cudaMemcpy(got, dtoks, 4 * N_STEPS, cudaMemcpyDeviceToHost));
			CK(cudaMemcpy(&cyc, dcyc, 8, cudaMemcpyDeviceToHost));
			CK(cudaMemcpy(&stat, dstat, 4, cudaMemcpyDeviceToHost));
			if (stat) {
				printf("  device launch: scheduler status %d (1000 + cudaError)\n", stat);
				return 1;
			}
			printf("  device-launched step (fire -> done seen, whole step): %.1f us mean over "
			       "%d steps (%%globaltimer)\n", (double)cyc / N_STEPS / 1000.0, N_STEPS);
			cudaGraphExecDestroy(ge);
			cudaGraphDestroy(g);
			cudaFree(dtoks);
			cudaFree(dcyc);
			cudaFree(dstat);
		}
	}
	int same = 0;
	for (int i = 0; i < N_STEPS; i++)
		same += ref[i] == got[i];
	printf("  device-launched greedy decode == host-driven: %d/%d tokens  %s\n", same, N_STEPS,
	       same == N_STEPS ? "ok" : "FAIL");
	cudaGraphExecDestroy(host1);
	cudaGraphExecDestroy(dev0);
	cudaGraphExecDestroy(dev1);
	cudaStreamDestroy(st);
	free(pt);
	pk_step_destroy(s);
	mdl_close(m);
	printf("test_pk_devlaunch: %s\n", same == N_STEPS ? "PASS" : "FAIL");
	return same == N_STEPS ? 0 : 1;
}
