/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model/safetensors.h: a reader for one safetensors file (8-byte little-endian header length,
 * a JSON header naming each tensor's dtype, shape and byte range, then the byte buffer). The
 * file is untrusted: the header is parsed and every tensor entry is checked (dtype known, at most
 * MDL_MAX_DIMS dims, no negative dims, size = product(shape) * element size without overflow,
 * byte ranges inside the buffer, no overlaps, no holes, no duplicate names) before any tensor
 * is handed out. docs/model-formats.md lists the checks and why.
 *
 * Ownership: mdl_st_open() maps the file read-only and returns a struct mdl_st_file that owns
 *   the map and the tensor table; mdl_st_close() releases both. mdl_st_open_mem() parses a
 *   caller-owned buffer which must outlive the returned struct (the fuzz target uses it).
 *   Tensor data pointers point into the map/buffer.
 * Threading: open and close on one thread; after open the struct is immutable and any thread
 *   may call mdl_st_find() / mdl_st_view() concurrently.
 * Errors: 0 or a negative errno; err (always NUL-terminated when errlen > 0) receives
 *   "<file>: <problem>", naming the tensor where one is involved. Nothing is logged.
 */
#ifndef OFFPATH_MODEL_SAFETENSORS_H
#define OFFPATH_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mdl.h"

/* Largest JSON header accepted, as in the reference implementation (100 MB). */
#define MDL_ST_MAX_HEADER (100u * 1000u * 1000u)

/* One entry of the header. dtype is an enum mdl_dtype, or -1 for a dtype that the format knows
 * (F64, I8, F8_E4M3, ...) but offpath cannot compute with: such entries are checked like the
 * others and fail only in mdl_st_view(). */
struct mdl_st_tensor {
	char *name;         /* owned by the mdl_st_file */
	int dtype;          /* enum mdl_dtype, or -1: unsupported (see dtype_str) */
	char dtype_str[16]; /* as written in the header, e.g. "BF16" */
	int ndim;           /* 0..MDL_MAX_DIMS; 0 is a scalar */
	int64_t shape[MDL_MAX_DIMS];
	uint64_t begin, end; /* byte range relative to the start of the data buffer */
	const void *data;    /* buffer + begin */
	size_t nbytes;       /* end - begin */
};

struct mdl_st_file {
	char path[4096]; /* the name used in error messages */
	void *map;       /* mmap of the whole file; NULL for mdl_st_open_mem() */
	size_t map_len;
	const uint8_t *buf; /* the data buffer (after the header) */
	size_t buf_len;
	struct mdl_st_tensor *tensors; /* n_tensors entries, sorted by name */
	size_t n_tensors;
};

/* Map path read-only and parse its header. */
int mdl_st_open(struct mdl_st_file **out, const char *path, char *err, size_t errlen);

/* Parse an in-memory file image (header length + header + data). label names it in errors.
 * buf must stay valid and unchanged until mdl_st_close(). */
int mdl_st_open_mem(struct mdl_st_file **out, const void *buf, size_t len, const char *label,
                    char *err, size_t errlen);

/* NULL-safe. */
void mdl_st_close(struct mdl_st_file *f);

/* The entry called name, or NULL. O(log n) binary search over the sorted table. */
const struct mdl_st_tensor *mdl_st_find(const struct mdl_st_file *f, const char *name);

/* Fill out with a view of tensor name. -ENOENT when absent, -ENOTSUP when its dtype is not
 * F32/F16/BF16, -EINVAL when its data is not aligned to its element size (only possible with a
 * header whose length is not padded to a multiple of 8, which the reference writers never emit). */
int mdl_st_view(const struct mdl_st_file *f, const char *name, struct mdl_tensor *out, char *err,
                size_t errlen);

#endif
