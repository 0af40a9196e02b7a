/* SPDX-License-Identifier: Apache-2.0 */
/* persistent_kernel/emu_cpu.c: the CPU emulation's compute: mdl_cpu_step + mdl_sample (emu.h). */
#include <errno.h>
#include <stdlib.h>

#include "emu.h"

struct emu_cpu {
	struct mdl_cpu *cpu;
	struct mdl_sampler *smp;
};

static int cpu_step(void *ctx, const struct mdl_cpu_seq *seqs, int n)
{
	return mdl_cpu_step(((struct emu_cpu *)ctx)->cpu, seqs, n);
}

static int32_t cpu_sample(void *ctx, const float *logits, const struct mdl_sampling *p,
			  uint64_t counter, float *logprob)
{
	return mdl_sample(((struct emu_cpu *)ctx)->smp, logits, p, counter, logprob);
}

static void cpu_fini(void *ctx)
{
	struct emu_cpu *ec = ctx;

	if (!ec)
		return;
	mdl_sampler_destroy(ec->smp);
	mdl_cpu_destroy(ec->cpu);
	free(ec);
}

int pk_emu_cpu_create(struct pk_backend **out, const struct mdl *m, const struct pk_emu_opts *o,
		      int n_threads)
{
	struct pk_emu_opts eo = *o;
	struct mdl_cpu_opts co;
	struct pk_emu_compute c;
	struct emu_cpu *ec;
	int i, rc;

	*out = NULL;
	if (eo.sched.vocab_size == 0)
		eo.sched.vocab_size = m->cfg.vocab_size;
	if (eo.sched.n_eos == 0) {
		eo.sched.n_eos = m->cfg.n_eos < SCHED_MAX_EOS ? m->cfg.n_eos : SCHED_MAX_EOS;
		for (i = 0; i < eo.sched.n_eos; i++)
			eo.sched.eos_ids[i] = m->cfg.eos_ids[i];
	}
	if (eo.sched.max_ctx > m->cfg.max_pos)
		return -EINVAL;
	ec = calloc(1, sizeof(*ec));
	if (!ec)
		return -ENOMEM;
	co.n_pages = eo.sched.n_pages;
	co.page_tokens = eo.sched.page_tokens;
	co.max_tokens = eo.sched.step_tokens;
	co.max_seqs = eo.sched.max_seqs;
	co.n_threads = n_threads;
	rc = mdl_cpu_create(&ec->cpu, m, &co);
	if (rc)
		goto out;
	rc = mdl_sampler_create(&ec->smp, m->cfg.vocab_size);
	if (rc)
		goto out;
	c.ctx = ec;
	c.vocab_size = m->cfg.vocab_size;
	c.step = cpu_step;
	c.sample = cpu_sample;
	c.fini = cpu_fini;
	rc = pk_emu_create(out, &eo, &c);
	if (rc == 0)
		return 0;
out:
	cpu_fini(ec);
	return rc;
}
