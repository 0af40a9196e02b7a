/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/ring.h: the host/GPU ring ABI. Everything that crosses the boundary between the
 * host threads and the persistent scheduler (GPU kernel, or its CPU emulation) has its layout here,
 * and nowhere else. docs/ring-abi.md has the pictures and the fence table.
 *
 * Three single-producer single-consumer rings, one layout family:
 *   request ring  host -> scheduler  struct ring_req_rec + prompt tokens in a FIFO token arena
 *   token ring    scheduler -> host  struct ring_tok_rec (one generated token, one prompt
 *                                    position's logprob, or a final notice)
 *   control ring  host -> scheduler  struct ring_ctl_rec (cancel id, drain, shutdown)
 *
 * Memory of one ring, from a RING_LINE-aligned base:
 *   [struct ring_hdr: 3 lines: config | producer line | consumer line]
 *   [n_slots slots of the ring's slot size]        n_slots a power of two
 *   [arena_tokens int32 prompt tokens]              request ring only, else 0
 *
 * Slot protocol (sequence numbers, never booleans; a reused slot can't look new):
 *   slot i starts with seq = i.  The producer at position p owns slot p%n when seq == p; it writes
 *   the payload, then publishes seq = p+1 (release). The consumer at position c may read slot c%n
 *   when seq == c+1 (acquire); when done it hands the slot back with seq = c+n (release). Neither
 *   side ever waits: claim/peek return "full"/"empty" and the caller decides (429, hold, retry).
 *
 * Ownership: the caller allocates the memory (malloc for the CPU backend, cudaHostAlloc(Mapped) for
 *   the GPU) of ring_bytes() bytes and calls ring_init() once before either side starts; it frees
 *   it after both sides stopped. The ring holds no pointers, so host and GPU may map it anywhere.
 * Threading: exactly one producer thread (or GPU thread) and one consumer per ring. Functions named
 *   *_sp_* are producer-only, *_sc_* consumer-only. Several host producers (tokenizer threads) must
 *   serialize on a lock of their own around ring_req_sp_push().
 */
#ifndef OFFPATH_PK_RING_H
#define OFFPATH_PK_RING_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include "pk_atomic.h"

#define RING_MAGIC     0x676e6952u /* "Ring" little-endian */
#define RING_VERSION   2u /* 2: RING_MAX_TOP 20, 256-byte token slots, prompt logprobs */
#define RING_LINE      128 /* spacing of independently written fields: 2 x86 lines (adjacent-line
			    * prefetch) and one GPU L2 line */
#define RING_MAX_STOP  8   /* stop token ids per request */
#define RING_MAX_TOP   20  /* top-N logprobs per token (OpenAI's top_logprobs maximum) */
#define RING_MAX_SLOTS (1u << 20)
#define RING_MAX_ARENA (1u << 28) /* tokens */

enum ring_kind {
	RING_KIND_REQ = 1,
	RING_KIND_TOK = 2,
	RING_KIND_CTL = 3,
};

/* Finish reason in ring_tok_rec.finish; NONE on every token but the last of a request. */
enum ring_finish {
	RING_FINISH_NONE = 0,
	RING_FINISH_STOP = 1,      /* EOS id or one of the request's stop ids was generated */
	RING_FINISH_LENGTH = 2,    /* max_tokens generated, or the context is full */
	RING_FINISH_CANCELLED = 3, /* a control-ring cancel, or shutdown */
	RING_FINISH_ERROR = 4,     /* rejected: ring_tok_rec.err says why; no token */
};

/* ring_tok_rec.flags */
#define RING_TOK_FIRST 0x1u /* first generated token of the request */
#define RING_TOK_LAST  0x2u /* no more records for this request id */
#define RING_TOK_NOTOK 0x4u /* token/logprob/top fields are not valid (cancel, error notices) */
#define RING_TOK_PROMPT 0x8u /* a prompt position's logprob (RING_REQ_PROMPT_LOGPROBS), not a
			      * generated token: token = prompt[pos], logprob and top-N from the
			      * logits at pos - 1. For pos = 1 .. prompt_len-1 in order, all before
			      * the first generated token; never FIRST. LAST (finish LENGTH) on the
			      * last one when max_tokens is 0. */

enum ring_ctl_op {
	RING_CTL_CANCEL = 1,   /* id: request to cancel; pages freed at once, a CANCELLED notice follows */
	RING_CTL_DRAIN = 2,    /* stop taking requests; finish the running ones */
	RING_CTL_SHUTDOWN = 3, /* cancel everything, emit notices, and exit the loop */
};

/* ---- the header: three lines, one writer each ---------------------------------------------- */
struct ring_hdr {
	/* line 0: written by ring_init() before either side starts; read-only afterwards. */
	uint32_t magic;
	uint32_t version;
	uint32_t kind;       /* enum ring_kind */
	uint32_t n_slots;    /* power of two */
	uint32_t slot_bytes; /* sizeof the kind's slot */
	uint32_t arena_tokens;
	uint64_t bytes; /* ring_bytes() of this ring */
	uint8_t pad0[RING_LINE - 32];
	/* line 1: producer-owned. prod = slots published so far; arena_head = monotonic token offset
	 * one past the last prompt written. Written by the producer only. */
	uint64_t prod;
	uint64_t arena_head;
	uint8_t pad1[RING_LINE - 16];
	/* line 2: consumer-owned. cons = slots handed back; arena_tail = monotonic token offset one
	 * past the last prompt the consumer finished reading. Written by the consumer only. */
	uint64_t cons;
	uint64_t arena_tail;
	uint8_t pad2[RING_LINE - 16];
};

/* ---- request ring: host -> scheduler ------------------------------------------------------- */
struct ring_req_rec {
	uint64_t id;         /* host-chosen, unique among live requests; echoed on every token */
	uint64_t seed;       /* sampling seed (counter-based RNG, model/sample.h) */
	uint64_t prompt_off; /* set by ring_req_sp_push(): monotonic arena offset of the prompt */
	uint32_t prompt_len; /* tokens, >= 1 */
	float temperature;   /* <= 0: greedy */
	float top_p;         /* >= 1 or <= 0: off */
	int32_t top_k;       /* <= 0: off */
	int32_t max_tokens;  /* >= 1: most tokens to generate; 0 only with RING_REQ_PROMPT_LOGPROBS
			      * (score the prompt, generate nothing) */
	uint16_t n_stop;     /* 0..RING_MAX_STOP valid entries in stop_ids */
	uint16_t n_top;      /* 0..RING_MAX_TOP: top-N logprobs wanted on each token */
	int32_t stop_ids[RING_MAX_STOP];
	uint32_t flags; /* RING_REQ_* */
	uint32_t reserved;
};

/* ring_req_rec.flags */
#define RING_REQ_IGNORE_EOS     0x1u /* the model's EOS ids do not stop it (stop_ids still do) */
#define RING_REQ_PROMPT_LOGPROBS 0x2u /* emit a RING_TOK_PROMPT record (logprob + n_top
				       * alternatives) for every prompt position 1 .. prompt_len-1
				       * before the first generated token (OpenAI echo + logprobs) */

struct ring_req_slot {
	uint64_t seq; /* see the slot protocol above; R1/A1 and R2/A2 in docs/ring-abi.md */
	struct ring_req_rec rec;
	uint8_t pad[128 - 8 - sizeof(struct ring_req_rec)];
};

/* ---- token ring: scheduler -> host --------------------------------------------------------- */
struct ring_tok_rec {
	uint64_t id;   /* the request's id */
	uint64_t t_ns; /* producer clock when the token was sampled: %globaltimer on the GPU,
			* CLOCK_MONOTONIC in the CPU emulation */
	int32_t token; /* generated token id (a prompt id with RING_TOK_PROMPT); -1 with NOTOK */
	float logprob; /* log p(token) under the unmodified distribution */
	int32_t pos;   /* position of this token in the sequence (prompt_len + index generated;
			* the prompt position with RING_TOK_PROMPT) */
	uint16_t flags;    /* RING_TOK_* */
	uint8_t finish;    /* enum ring_finish; != NONE only with RING_TOK_LAST */
	uint8_t n_top;     /* valid entries in top_ids/top_lps, best first */
	int32_t err;       /* 0, or a negative errno with RING_FINISH_ERROR: -E2BIG prompt longer
			    * than the context, -EINVAL bad parameters or token id */
	int32_t top_ids[RING_MAX_TOP];
	float top_lps[RING_MAX_TOP];
	uint32_t reserved;
};

struct ring_tok_slot {
	uint64_t seq;
	struct ring_tok_rec rec;
	uint8_t pad[256 - 8 - sizeof(struct ring_tok_rec)]; /* 256 B: a power of two; each
							     * slot covers two whole lines */
};

/* ---- control ring: host -> scheduler ------------------------------------------------------- */
struct ring_ctl_rec {
	uint64_t id; /* request id for CANCEL, else 0 */
	uint32_t op; /* enum ring_ctl_op */
	uint32_t arg;
};

struct ring_ctl_slot {
	uint64_t seq;
	struct ring_ctl_rec rec;
	uint8_t pad[64 - 8 - sizeof(struct ring_ctl_rec)];
};

/* The layout is the ABI: nvcc must compute the same numbers. */
#if defined(__cplusplus)
#define RING_SA static_assert
#else
#define RING_SA _Static_assert
#endif
RING_SA(sizeof(struct ring_hdr) == 3 * RING_LINE, "ring_hdr is three lines");
RING_SA(offsetof(struct ring_hdr, prod) == 1 * RING_LINE, "producer line");
RING_SA(offsetof(struct ring_hdr, cons) == 2 * RING_LINE, "consumer line");
RING_SA(sizeof(struct ring_req_rec) == 88, "ring_req_rec layout");
RING_SA(offsetof(struct ring_req_rec, stop_ids) == 48, "ring_req_rec.stop_ids");
RING_SA(sizeof(struct ring_req_slot) == 128, "ring_req_slot is 128 bytes");
RING_SA(offsetof(struct ring_req_slot, rec) == 8, "ring_req_slot.rec");
RING_SA(sizeof(struct ring_tok_rec) == 200, "ring_tok_rec layout");
RING_SA(offsetof(struct ring_tok_rec, top_ids) == 36, "ring_tok_rec.top_ids");
RING_SA(offsetof(struct ring_tok_rec, top_lps) == 116, "ring_tok_rec.top_lps");
RING_SA(offsetof(struct ring_tok_rec, reserved) == 196, "ring_tok_rec.reserved");
RING_SA(sizeof(struct ring_tok_slot) == 256, "ring_tok_slot is 256 bytes");
RING_SA(offsetof(struct ring_tok_slot, rec) == 8, "ring_tok_slot.rec");
RING_SA(sizeof(struct ring_ctl_rec) == 16, "ring_ctl_rec layout");
RING_SA(sizeof(struct ring_ctl_slot) == 64, "ring_ctl_slot is 64 bytes");

/* ---- sizing and setup ---------------------------------------------------------------------- */

PK_INLINE uint32_t ring_slot_bytes(uint32_t kind)
{
	return kind == RING_KIND_REQ   ? (uint32_t)sizeof(struct ring_req_slot)
	       : kind == RING_KIND_TOK ? (uint32_t)sizeof(struct ring_tok_slot)
	       : kind == RING_KIND_CTL ? (uint32_t)sizeof(struct ring_ctl_slot)
				       : 0u;
}

/* Bytes a ring needs; 0 when the arguments are invalid (n_slots not a power of two in
 * [2, RING_MAX_SLOTS], arena_tokens nonzero on a non-request ring or zero on a request ring). */
PK_INLINE uint64_t ring_bytes(uint32_t kind, uint32_t n_slots, uint32_t arena_tokens)
{
	uint32_t sb = ring_slot_bytes(kind);

	if (!sb || n_slots < 2 || n_slots > RING_MAX_SLOTS || (n_slots & (n_slots - 1)))
		return 0;
	if ((kind == RING_KIND_REQ) != (arena_tokens != 0) || arena_tokens > RING_MAX_ARENA)
		return 0;
	return sizeof(struct ring_hdr) + (uint64_t)n_slots * sb + (uint64_t)arena_tokens * 4u;
}

/* Lay out a ring in mem (RING_LINE-aligned, `bytes` >= ring_bytes()). Call before either side
 * starts; the thread that starts them publishes the memory (pthread_create, kernel launch).
 * Returns 0, or -EINVAL. */
PK_INLINE int ring_init(struct ring_hdr *h, uint64_t bytes, uint32_t kind, uint32_t n_slots,
			uint32_t arena_tokens)
{
	uint64_t need = ring_bytes(kind, n_slots, arena_tokens);
	uint32_t sb = ring_slot_bytes(kind);
	uint8_t *p = (uint8_t *)h;
	uint64_t i;

	if (!need || bytes < need || ((uintptr_t)h % RING_LINE))
		return -EINVAL;
	for (i = 0; i < sizeof(*h); i++)
		p[i] = 0;
	h->magic = RING_MAGIC;
	h->version = RING_VERSION;
	h->kind = kind;
	h->n_slots = n_slots;
	h->slot_bytes = sb;
	h->arena_tokens = arena_tokens;
	h->bytes = need;
	for (i = 0; i < n_slots; i++)
		*(uint64_t *)(p + sizeof(*h) + i * sb) = i; /* slot i free for lap 0 */
	return 0;
}

/* 0 when h looks like an initialized ring of this kind (the other side checks once at start). */
PK_INLINE int ring_check(const struct ring_hdr *h, uint32_t kind)
{
	if (h->magic != RING_MAGIC || h->version != RING_VERSION || h->kind != kind ||
	    h->slot_bytes != ring_slot_bytes(kind) ||
	    h->bytes != ring_bytes(kind, h->n_slots, h->arena_tokens))
		return -EINVAL;
	return 0;
}

/* ---- generic slot protocol (both rings use it; typed wrappers below) ------------------------- */

PK_INLINE uint8_t *ring_slot_at(const struct ring_hdr *h, uint64_t pos)
{
	return (uint8_t *)h + sizeof(*h) + (uint64_t)(pos & (h->n_slots - 1)) * h->slot_bytes;
}

/* Producer: the slot for the next record, or NULL when the ring is full. Cheap; call again later. */
PK_INLINE uint8_t *ring_sp_claim(struct ring_hdr *h)
{
	uint64_t p = pk_ld_relaxed_u64(&h->prod); /* own field: only this thread writes it */
	uint8_t *s = ring_slot_at(h, p);

	/* A2: acquire, system scope; pairs with R2 in ring_sc_release(): the consumer's reads of the
	 * previous lap's payload are done before we overwrite it. */
	if (pk_ld_acquire_u64((const uint64_t *)s) != p)
		return NULL;
	return s;
}

/* Producer: publish the slot ring_sp_claim() returned, after filling its payload. */
PK_INLINE void ring_sp_publish(struct ring_hdr *h, uint8_t *s)
{
	uint64_t p = pk_ld_relaxed_u64(&h->prod);

	/* R1: release, system scope; pairs with A1 in ring_sc_peek(): payload visible before seq. */
	pk_st_release_u64((uint64_t *)s, p + 1);
	/* R3: release; pairs with A3 in ring_sc_count()/monitors. Informational: nobody needs prod
	 * for correctness, the per-slot seq is the handshake. */
	pk_st_release_u64(&h->prod, p + 1);
}

/* Consumer: the next published slot, or NULL when the ring is empty. */
PK_INLINE uint8_t *ring_sc_peek(const struct ring_hdr *h)
{
	uint64_t c = pk_ld_relaxed_u64(&h->cons); /* own field */
	uint8_t *s = ring_slot_at(h, c);

	/* A1: acquire, system scope; pairs with R1 in ring_sp_publish(). */
	if (pk_ld_acquire_u64((const uint64_t *)s) != c + 1)
		return NULL;
	return s;
}

/* Consumer: hand the slot ring_sc_peek() returned back to the producer, once done reading it. */
PK_INLINE void ring_sc_release(struct ring_hdr *h, uint8_t *s)
{
	uint64_t c = pk_ld_relaxed_u64(&h->cons);

	/* R2: release, system scope; pairs with A2 in ring_sp_claim(): our payload reads happen
	 * before the producer's next-lap writes. */
	pk_st_release_u64((uint64_t *)s, c + h->n_slots);
	/* R4: release; pairs with A4 in ring_sp_free(): the slot's seq (R2) is visible before cons. */
	pk_st_release_u64(&h->cons, c + 1);
}

/* Producer: slots it can claim right now without failing (a lower bound; never too high). */
PK_INLINE uint32_t ring_sp_free(const struct ring_hdr *h)
{
	uint64_t p = pk_ld_relaxed_u64(&h->prod);
	/* A4: acquire; pairs with R4 in ring_sc_release(). */
	uint64_t c = pk_ld_acquire_u64(&h->cons);

	return h->n_slots - (uint32_t)(p - c);
}

/* Anyone: records published and not yet released (a snapshot, for metrics). */
PK_INLINE uint32_t ring_sc_count(const struct ring_hdr *h)
{
	uint64_t c = pk_ld_acquire_u64(&h->cons);
	uint64_t p = pk_ld_acquire_u64(&h->prod); /* A3: pairs with R3 */

	return p > c ? (uint32_t)(p - c) : 0u;
}

/* ---- request ring -------------------------------------------------------------------------- */

PK_INLINE int32_t *ring_req_arena(const struct ring_hdr *h)
{
	return (int32_t *)((uint8_t *)h + sizeof(*h) + (uint64_t)h->n_slots * h->slot_bytes);
}

/* Host, single producer: enqueue one request and its prompt. rec->prompt_off and prompt_len are
 * filled here. Returns 0; -EAGAIN when the slots or the arena are full (answer 429, or retry);
 * -E2BIG when the prompt can never fit (longer than the arena); -EINVAL for n == 0. */
PK_INLINE int ring_req_sp_push(struct ring_hdr *h, const struct ring_req_rec *rec,
			       const int32_t *prompt, uint32_t n)
{
	uint64_t A = h->arena_tokens, head, tail, start, i;
	int32_t *arena = ring_req_arena(h);
	struct ring_req_slot *s;

	if (n == 0)
		return -EINVAL;
	if (n > A)
		return -E2BIG;
	s = (struct ring_req_slot *)ring_sp_claim(h);
	if (!s)
		return -EAGAIN;
	head = pk_ld_relaxed_u64(&h->arena_head); /* own field */
	/* A5: acquire, system scope; pairs with R5 in ring_req_sc_pop(): the consumer finished reading
	 * the prompt tokens below arena_tail before we overwrite them. */
	tail = pk_ld_acquire_u64(&h->arena_tail);
	start = head;
	if (head % A + n > A) /* prompts are contiguous: skip the arena's tail end */
		start = head + (A - head % A);
	/* Live tokens are [tail, head); the new ones must end before tail's slot one lap on. When
	 * nothing is live (tail == head) any placement fits, the skipped tail end included. */
	if (tail != head && start + n - tail > A)
		return -EAGAIN;
	for (i = 0; i < n; i++)
		arena[(start + i) % A] = prompt[i];
	s->rec = *rec;
	s->rec.prompt_off = start;
	s->rec.prompt_len = n;
	/* Only the producer reads arena_head back; relaxed is enough. The consumer derives the
	 * reclaimed range from the slot (prompt_off + prompt_len), never from arena_head. */
	pk_st_relaxed_u64(&h->arena_head, start + n);
	ring_sp_publish(h, (uint8_t *)s); /* R1 covers the arena tokens and the record */
	return 0;
}

/* Scheduler, single consumer: the next request, or NULL. Valid until ring_req_sc_pop(). */
PK_INLINE const struct ring_req_rec *ring_req_sc_peek(const struct ring_hdr *h)
{
	struct ring_req_slot *s = (struct ring_req_slot *)ring_sc_peek(h);

	return s ? &s->rec : (const struct ring_req_rec *)0;
}

/* The prompt of a peeked request: prompt_len contiguous tokens. */
PK_INLINE const int32_t *ring_req_prompt(const struct ring_hdr *h, const struct ring_req_rec *r)
{
	return ring_req_arena(h) + r->prompt_off % h->arena_tokens;
}

/* Scheduler: done with the peeked request and its prompt (copied out or rejected). */
PK_INLINE void ring_req_sc_pop(struct ring_hdr *h)
{
	struct ring_req_slot *s = (struct ring_req_slot *)ring_sc_peek(h);

	if (!s)
		return;
	/* R5: release, system scope; pairs with A5 in ring_req_sp_push(). */
	pk_st_release_u64(&h->arena_tail, s->rec.prompt_off + s->rec.prompt_len);
	ring_sc_release(h, (uint8_t *)s);
}

/* ---- token ring ---------------------------------------------------------------------------- */

/* Scheduler, single producer: append one record. Returns 0 or -EAGAIN when full; it never waits.
 * The scheduler checks ring_sp_free() before a step, so -EAGAIN here is a bug, not flow control. */
PK_INLINE int ring_tok_sp_push(struct ring_hdr *h, const struct ring_tok_rec *rec)
{
	struct ring_tok_slot *s = (struct ring_tok_slot *)ring_sp_claim(h);

	if (!s)
		return -EAGAIN;
	s->rec = *rec;
	ring_sp_publish(h, (uint8_t *)s);
	return 0;
}

/* Host, single consumer: copy out up to max records; returns how many (0 when empty). */
PK_INLINE uint32_t ring_tok_sc_pop_burst(struct ring_hdr *h, struct ring_tok_rec *out, uint32_t max)
{
	uint32_t k;

	for (k = 0; k < max; k++) {
		struct ring_tok_slot *s = (struct ring_tok_slot *)ring_sc_peek(h);

		if (!s)
			break;
		out[k] = s->rec;
		ring_sc_release(h, (uint8_t *)s);
	}
	return k;
}

/* ---- control ring -------------------------------------------------------------------------- */

/* Host, single producer. Returns 0 or -EAGAIN when full (retry; the ring is small and drained
 * every scheduler iteration). */
PK_INLINE int ring_ctl_sp_push(struct ring_hdr *h, uint32_t op, uint64_t id)
{
	struct ring_ctl_slot *s = (struct ring_ctl_slot *)ring_sp_claim(h);

	if (!s)
		return -EAGAIN;
	s->rec.id = id;
	s->rec.op = op;
	s->rec.arg = 0;
	ring_sp_publish(h, (uint8_t *)s);
	return 0;
}

/* Scheduler, single consumer: copy out the next control record; 1 when one was taken, else 0. */
PK_INLINE int ring_ctl_sc_pop(struct ring_hdr *h, struct ring_ctl_rec *out)
{
	struct ring_ctl_slot *s = (struct ring_ctl_slot *)ring_sc_peek(h);

	if (!s)
		return 0;
	*out = s->rec;
	ring_sc_release(h, (uint8_t *)s);
	return 1;
}

#endif
