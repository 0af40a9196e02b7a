/* SPDX-License-Identifier: Apache-2.0 */
/* model/half.c: dtype sizes and names, bf16/fp16 <-> fp32 conversion, element access. */
#include <math.h>
#include <string.h>

#include "mdl.h"

size_t mdl_dtype_size(enum mdl_dtype dt)
{
	switch (dt) {
	case MDL_F32:
		return 4;
	case MDL_F16:
	case MDL_BF16:
		return 2;
	}
	return 0;
}

const char *mdl_dtype_name(enum mdl_dtype dt)
{
	switch (dt) {
	case MDL_F32:
		return "F32";
	case MDL_F16:
		return "F16";
	case MDL_BF16:
		return "BF16";
	}
	return "?";
}

const char *mdl_arch_name(enum mdl_arch arch)
{
	switch (arch) {
	case MDL_ARCH_LLAMA:
		return "llama";
	case MDL_ARCH_QWEN2:
		return "qwen2";
	case MDL_ARCH_QWEN3:
		return "qwen3";
	}
	return "?";
}

float mdl_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

uint16_t mdl_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet and a NaN */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
	return (uint16_t)(u >> 16);
}

float mdl_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t man = h & 0x3ffu;
	uint32_t u;
	if (exp == 0x1f) {
		u = sign | 0x7f800000u | (man << 13);
	} else if (exp != 0) {
		u = sign | ((exp + 112u) << 23) | (man << 13);
	} else if (man == 0) {
		u = sign;
	} else { /* subnormal: value = man * 2^-24 */
		float f = ldexpf((float)man, -24);
		memcpy(&u, &f, 4);
		u |= sign;
	}
	float f;
	memcpy(&f, &u, 4);
	return f;
}

uint16_t mdl_f32_to_f16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
	uint32_t a = u & 0x7fffffffu;
	if (a > 0x7f800000u)
		return sign | 0x7e00u; /* NaN */
	if (a >= 0x477ff000u)          /* rounds to >= 65520: infinity */
		return sign | 0x7c00u;
	if (a < 0x38800000u) { /* below 2^-14: subnormal or zero, in units of 2^-24 */
		float v;
		memcpy(&v, &a, 4);
		return sign | (uint16_t)lrintf(ldexpf(v, 24)); /* lrintf rounds to nearest even */
	}
	uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
	return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

size_t mdl_tensor_numel(const struct mdl_tensor *t)
{
	size_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= (size_t)t->shape[i];
	return n;
}

float mdl_tensor_get(const struct mdl_tensor *t, size_t i)
{
	switch (t->dtype) {
	case MDL_F32: {
		float f;
		memcpy(&f, (const char *)t->data + 4 * i, 4);
		return f;
	}
	case MDL_F16:
		return mdl_f16_to_f32(((const uint16_t *)t->data)[i]);
	case MDL_BF16:
		return mdl_bf16_to_f32(((const uint16_t *)t->data)[i]);
	}
	return NAN;
}
