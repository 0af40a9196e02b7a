/* SPDX-License-Identifier: Apache-2.0 */
/*
 * persistent_kernel/cuda/dev.cuh: small device helpers of the step's kernels (kernels.cu):
 * storage-type conversion, 16-byte vector unpacking, streaming loads, programmatic dependent
 * launch, warp reductions. CUDA C++ only; everything is inline and lives in
 * namespace pk_dev.
 */
#ifndef OFFPATH_PK_CUDA_DEV_CUH
#define OFFPATH_PK_CUDA_DEV_CUH

#include <stdint.h>

#include <cuda_bf16.h>

namespace pk_dev {

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }

/* 16 bytes of T as fp32: 8 bf16 or 4 float. */
template <typename T> struct vec16;
template <> struct vec16<bf16> {
	static constexpr int n = 8;
	__device__ __forceinline__ static void unpack(const uint4 &u, float *f)
	{
		const __nv_bfloat162 *p = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			float2 t = __bfloat1622float2(p[i]);
			f[2 * i] = t.x;
			f[2 * i + 1] = t.y;
		}
	}
};
template <> struct vec16<float> {
	static constexpr int n = 4;
	__device__ __forceinline__ static void unpack(const uint4 &u, float *f)
	{
		f[0] = __uint_as_float(u.x);
		f[1] = __uint_as_float(u.y);
		f[2] = __uint_as_float(u.z);
		f[3] = __uint_as_float(u.w);
	}
};

/* Streaming 16-byte load of read-once weights: bypass L1 allocation. */
__device__ __forceinline__ uint4 ld_stream(const void *p)
{
	uint4 r;
	/* not volatile: a pure load of read-only data, free to be hoisted and batched */
	asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
		     : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
		     : "l"(p));
	return r;
}

/* Programmatic dependent launch (PDL; the step's kernels are launched with it, kernels.cu
 * launch()). pdl_trigger: this block no longer holds back the launch of the next kernel in the
 * stream, whose blocks may then become resident and run their prologue (loads of weights or of
 * anything else no kernel of the step writes) while this grid drains. pdl_wait: block until
 * every grid this one depends on has completed and its memory operations are visible to this
 * grid (griddepcontrol.wait: completion + flush, so it is the acquire edge for everything the
 * previous kernel wrote; no fence is needed beside it). Both are no-ops in a kernel launched
 * without the attribute (then the launch itself waited for the previous kernel). A kernel
 * launched with it must call pdl_wait before it reads or writes anything an earlier kernel of
 * the stream touches. */
__device__ __forceinline__ void pdl_trigger()
{
	asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
__device__ __forceinline__ void pdl_wait()
{
	asm volatile("griddepcontrol.wait;" ::: "memory");
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

} /* namespace pk_dev */

#endif
