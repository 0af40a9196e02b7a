/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/model/fuzz_st.c: libFuzzer target for the safetensors header parser and validator
 * (mdl_st_open_mem), plus a view of every tensor it accepts, so that any byte range the
 * validator lets through is read in full under ASan. Built by fuzz_safetensors.sh with clang.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mdl.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[MDL_ERR_LEN];
	struct mdl_st_file *f = NULL;
	int rc = mdl_st_open_mem(&f, data, size, "fuzz", err, sizeof(err));
	if (rc < 0) {
		/* every failure explains itself */
		if (strncmp(err, "fuzz: ", 6) != 0 || err[6] == '\0')
			__builtin_trap();
		return 0;
	}
	volatile uint8_t sink = 0;
	for (size_t i = 0; i < f->n_tensors; i++) {
		const struct mdl_st_tensor *t = &f->tensors[i];
		if (mdl_st_find(f, t->name) != t)
			__builtin_trap();
		const uint8_t *p = t->data;
		for (size_t k = 0; k < t->nbytes; k++)
			sink ^= p[k];
		struct mdl_tensor v;
		if (mdl_st_view(f, t->name, &v, err, sizeof(err)) == 0 &&
		    mdl_tensor_numel(&v) * mdl_dtype_size(v.dtype) != v.nbytes)
			__builtin_trap();
	}
	(void)sink;
	mdl_st_close(f);
	return 0;
}
