/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/pk_atomic.h: the few atomic operations that cross the host/GPU boundary, as one
 * macro layer so the ring ABI and the scheduler compile unchanged as host C (<stdatomic.h>,
 * explicit memory_order) and, later, as CUDA device code (system-scope cuda::atomic_ref, which
 * nvcc lowers to ld.acquire.sys / st.release.sys on sm_70+).
 *
 * The shared fields are plain uint64_t in the ring layouts (no _Atomic in the ABI, because C and
 * CUDA disagree on _Atomic); every access to one goes through these helpers and nothing else.
 *
 * Ownership: nothing to own; header only.
 * Threading: any thread or GPU thread. Scope is always "system" (host + every device), because the
 *   rings live in pinned host memory that the GPU maps.
 */
#ifndef OFFPATH_PK_ATOMIC_H
#define OFFPATH_PK_ATOMIC_H

#include <stdint.h>

#if defined(__CUDACC__)
/* ---- device (and nvcc host) branch: system-scope atomic_ref ---------------------------------- */
#include <cuda/atomic>
#define PK_HD __host__ __device__
#define PK_INLINE static inline __host__ __device__

PK_INLINE uint64_t pk_ld_acquire_u64(const uint64_t *p)
{
	return cuda::atomic_ref<const uint64_t, cuda::thread_scope_system>(*p).load(
		cuda::memory_order_acquire);
}
PK_INLINE uint64_t pk_ld_relaxed_u64(const uint64_t *p)
{
	return cuda::atomic_ref<const uint64_t, cuda::thread_scope_system>(*p).load(
		cuda::memory_order_relaxed);
}
PK_INLINE void pk_st_release_u64(uint64_t *p, uint64_t v)
{
	cuda::atomic_ref<uint64_t, cuda::thread_scope_system>(*p).store(v, cuda::memory_order_release);
}
PK_INLINE void pk_st_relaxed_u64(uint64_t *p, uint64_t v)
{
	cuda::atomic_ref<uint64_t, cuda::thread_scope_system>(*p).store(v, cuda::memory_order_relaxed);
}
#else
/* ---- host branch: C11 atomics on the same bytes ----------------------------------------------- */
#include <stdatomic.h>
#define PK_HD
#define PK_INLINE static inline

/* The casts are sound on gcc/clang: _Atomic uint64_t has the size and alignment of uint64_t on
 * every target we build (static-asserted below), and the fields are 8-byte aligned in the ABI. */
_Static_assert(sizeof(_Atomic uint64_t) == sizeof(uint64_t), "_Atomic uint64_t is not plain");
_Static_assert(_Alignof(_Atomic uint64_t) == _Alignof(uint64_t), "_Atomic uint64_t alignment");

PK_INLINE uint64_t pk_ld_acquire_u64(const uint64_t *p)
{
	return atomic_load_explicit((const _Atomic uint64_t *)p, memory_order_acquire);
}
PK_INLINE uint64_t pk_ld_relaxed_u64(const uint64_t *p)
{
	return atomic_load_explicit((const _Atomic uint64_t *)p, memory_order_relaxed);
}
PK_INLINE void pk_st_release_u64(uint64_t *p, uint64_t v)
{
	atomic_store_explicit((_Atomic uint64_t *)p, v, memory_order_release);
}
PK_INLINE void pk_st_relaxed_u64(uint64_t *p, uint64_t v)
{
	atomic_store_explicit((_Atomic uint64_t *)p, v, memory_order_relaxed);
}
#endif

#endif
