/* SPDX-License-Identifier: Apache-2.0 */
/*
 * model/st_writer.h: writes one safetensors file (the Hugging Face format: 8-byte little-endian
 * header length, a JSON header, then the raw tensor bytes) without holding the tensors in memory.
 * The caller declares every tensor (name, dtype, shape), calls mdl_stw_begin() which lays the file
 * out and writes the header, then streams the bytes of each tensor, in any order and from any
 * number of threads, with mdl_stw_pwrite(); mdl_stw_finish() checks that every byte was written.
 *
 * Layout, as the reference writer (safetensors' Rust serialize, used by torch save_file and
 * transformers save_pretrained) makes it: tensors sorted by dtype (F32, then BF16, then F16) and
 * then by name in byte order; the header lists "__metadata__" first ({"format":"pt"}) and then the
 * tensors in that same order, compact JSON, padded with spaces so that the data starts on an 8-byte
 * boundary; data offsets are contiguous, the first tensor at 0.
 *
 * Ownership: mdl_stw_create() creates the writer and the file (truncating an existing one);
 *   mdl_stw_destroy() closes it, and removes the file when mdl_stw_finish() did not succeed.
 * Threading: create, add, begin, finish and destroy on one thread. Between begin and finish any
 *   number of threads may call mdl_stw_pwrite() on disjoint byte ranges.
 * Errors: 0 or a negative errno; err (always NUL-terminated) gets "<file>: <problem>". Nothing is
 *   logged.
 */
#ifndef OFFPATH_MODEL_ST_WRITER_H
#define OFFPATH_MODEL_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "mdl.h"

struct mdl_stw;

/* Create path (mode 0644, truncated) and an empty writer for it. */
int mdl_stw_create(struct mdl_stw **out, const char *path, char *err, size_t errlen);

/* Declare a tensor before mdl_stw_begin(). Names are unique, 1..255 bytes; 0 <= ndim <= 4 and
 * every dimension >= 0. -EEXIST for a duplicate name, -EINVAL for a bad argument, -EBUSY after
 * begin. */
int mdl_stw_add(struct mdl_stw *w, const char *name, enum mdl_dtype dt, int ndim,
                const int64_t *shape, char *err, size_t errlen);

/* Sort, assign offsets, write the header and size the file. No more mdl_stw_add() after this. */
int mdl_stw_begin(struct mdl_stw *w, char *err, size_t errlen);

/* Number of declared tensors; after begin, index i runs over them in file order. */
int mdl_stw_count(const struct mdl_stw *w);
/* Index of the tensor called name (after begin), or -ENOENT. O(n). */
int mdl_stw_find(const struct mdl_stw *w, const char *name);
const char *mdl_stw_name(const struct mdl_stw *w, int i);
uint64_t mdl_stw_nbytes(const struct mdl_stw *w, int i);
/* Byte offset of tensor i from the start of the file (header included). */
uint64_t mdl_stw_file_offset(const struct mdl_stw *w, int i);
/* Bytes before the data: 8 + header length. Valid after begin. */
uint64_t mdl_stw_header_bytes(const struct mdl_stw *w);

/* Write n bytes at byte offset off inside tensor i. Thread-safe for disjoint ranges. -ERANGE when
 * the range leaves the tensor; -EIO etc. from the file system. */
int mdl_stw_pwrite(struct mdl_stw *w, int i, uint64_t off, const void *buf, size_t n, char *err,
                   size_t errlen);

/* Check that each tensor received exactly its size in bytes (-EIO otherwise, naming the first
 * short tensor) and close the file. */
int mdl_stw_finish(struct mdl_stw *w, char *err, size_t errlen);

void mdl_stw_destroy(struct mdl_stw *w);

#endif
