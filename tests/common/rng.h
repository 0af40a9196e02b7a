/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/common/rng.h: test_rng_next(), Marsaglia's xorshift64 (shifts 13, 7, 17), the
 * reproducible pseudo-random source of the C tests' random cases (fixed seed per test, so a
 * failure replays).
 * Ownership: the caller owns the 64-bit state; any non-zero seed.
 * Threading: one state per thread.
 */
#ifndef OFFPATH_TESTS_RNG_H
#define OFFPATH_TESTS_RNG_H

#include <stdint.h>

/* Advances *s and returns the new state. */
static inline uint64_t test_rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#endif
