/* SPDX-License-Identifier: Apache-2.0 */
/* model/safetensors.c: safetensors header parsing and validation, read-only mmap. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "safetensors.h"
#include "mdl_pvt.h"

struct st_dtype {
	const char *name;
	int dtype;     /* enum mdl_dtype, or -1: known to the format, not computable here */
	unsigned bits; /* element size in bits */
};

/* Every dtype the reference implementation knows; only the first three can be viewed. */
static const struct st_dtype st_dtypes[] = {
    {"F32", MDL_F32, 32}, {"F16", MDL_F16, 16}, {"BF16", MDL_BF16, 16}, {"F64", -1, 64},
    {"I64", -1, 64},      {"I32", -1, 32},      {"I16", -1, 16},        {"I8", -1, 8},
    {"U64", -1, 64},      {"U32", -1, 32},      {"U16", -1, 16},        {"U8", -1, 8},
    {"BOOL", -1, 8},      {"F8_E4M3", -1, 8},   {"F8_E5M2", -1, 8},     {"F8_E8M0", -1, 8},
    {"F6_E2M3", -1, 6},   {"F6_E3M2", -1, 6},   {"F4", -1, 4},          {"C64", -1, 64},
};

static const struct st_dtype *st_dtype_lookup(const char *s)
{
	for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
		if (strcmp(st_dtypes[i].name, s) == 0)
			return &st_dtypes[i];
	return NULL;
}

static int st_cmp_offsets(const void *a, const void *b)
{
	const struct mdl_st_tensor *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

static int st_cmp_names(const void *a, const void *b)
{
	const struct mdl_st_tensor *x = a, *y = b;
	return strcmp(x->name, y->name);
}

/* A JSON integer that is >= 0; false for reals, strings, negatives. */
static bool st_get_u64(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v))
		return false;
	json_int_t i = json_integer_value(v);
	if (i < 0)
		return false;
	*out = (uint64_t)i;
	return true;
}

/* Parse one header entry into t. The caller owns t->name already. */
static int st_parse_entry(struct mdl_st_file *f, struct mdl_st_tensor *t, const json_t *v,
                          char *err, size_t errlen)
{
	const char *nm = t->name;
	if (!json_is_object(v)) {
		mdl_err(err, errlen, f->path, "tensor '%s': entry is not a JSON object", nm);
		return -EINVAL;
	}
	const json_t *jd = json_object_get(v, "dtype");
	const json_t *js = json_object_get(v, "shape");
	const json_t *jo = json_object_get(v, "data_offsets");
	if (!json_is_string(jd)) {
		mdl_err(err, errlen, f->path, "tensor '%s': \"dtype\" missing or not a string", nm);
		return -EINVAL;
	}
	const struct st_dtype *dt = st_dtype_lookup(json_string_value(jd));
	if (!dt) {
		mdl_err(err, errlen, f->path, "tensor '%s': unknown dtype '%.32s'", nm,
		        json_string_value(jd));
		return -EINVAL;
	}
	t->dtype = dt->dtype;
	snprintf(t->dtype_str, sizeof(t->dtype_str), "%s", dt->name);

	if (!json_is_array(js)) {
		mdl_err(err, errlen, f->path, "tensor '%s': \"shape\" missing or not an array", nm);
		return -EINVAL;
	}
	size_t nd = json_array_size(js);
	if (nd > MDL_MAX_DIMS) {
		mdl_err(err, errlen, f->path, "tensor '%s': %zu dims, at most %d supported", nm, nd,
		        MDL_MAX_DIMS);
		return -EINVAL;
	}
	t->ndim = (int)nd;
	uint64_t numel = 1;
	bool overflow = false;
	for (size_t i = 0; i < nd; i++) {
		uint64_t d;
		if (!st_get_u64(json_array_get(js, i), &d)) {
			mdl_err(err, errlen, f->path,
			        "tensor '%s': shape[%zu] is not a non-negative integer", nm, i);
			return -EINVAL;
		}
		t->shape[i] = (int64_t)d; /* d <= INT64_MAX: it came from a json_int_t >= 0 */
		if (__builtin_mul_overflow(numel, d, &numel))
			overflow = true;
	}
	uint64_t bits = 0;
	if (overflow || __builtin_mul_overflow(numel, (uint64_t)dt->bits, &bits)) {
		mdl_err(err, errlen, f->path, "tensor '%s': shape product overflows 64 bits", nm);
		return -EOVERFLOW;
	}
	if (bits % 8 != 0) {
		mdl_err(err, errlen, f->path,
		        "tensor '%s': %" PRIu64 " elements of %s do not fill whole bytes", nm,
		        numel, dt->name);
		return -EINVAL;
	}
	uint64_t need = bits / 8;

	if (!json_is_array(jo) || json_array_size(jo) != 2) {
		mdl_err(err, errlen, f->path,
		        "tensor '%s': \"data_offsets\" missing or not an array of 2 integers", nm);
		return -EINVAL;
	}
	if (!st_get_u64(json_array_get(jo, 0), &t->begin) ||
	    !st_get_u64(json_array_get(jo, 1), &t->end)) {
		mdl_err(err, errlen, f->path,
		        "tensor '%s': data_offsets are not non-negative integers", nm);
		return -EINVAL;
	}
	if (t->end < t->begin) {
		mdl_err(err, errlen, f->path,
		        "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before begin", nm,
		        t->begin, t->end);
		return -EINVAL;
	}
	if (t->end > f->buf_len) {
		mdl_err(err, errlen, f->path,
		        "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
		        "] out of range (data buffer is %zu bytes; file truncated?)",
		        nm, t->begin, t->end, f->buf_len);
		return -EINVAL;
	}
	if (t->end - t->begin != need) {
		mdl_err(err, errlen, f->path,
		        "tensor '%s': size mismatch: shape needs %" PRIu64
		        " bytes of %s but data_offsets span %" PRIu64,
		        nm, need, dt->name, t->end - t->begin);
		return -EINVAL;
	}
	t->data = f->buf + t->begin;
	t->nbytes = (size_t)need;
	return 0;
}

static int st_check_metadata(struct mdl_st_file *f, const json_t *v, char *err, size_t errlen)
{
	if (!json_is_object(v)) {
		mdl_err(err, errlen, f->path, "\"__metadata__\" is not a JSON object");
		return -EINVAL;
	}
	const char *k;
	const json_t *mv;
	json_object_foreach((json_t *)v, k, mv)
	{
		if (!json_is_string(mv)) {
			mdl_err(err, errlen, f->path, "\"__metadata__\" value '%s' is not a string",
			        k);
			return -EINVAL;
		}
	}
	return 0;
}

/* Sorted by offset, consecutive tensors must touch: no overlap (two names for the same bytes),
 * no hole (bytes nobody accounts for), as the format requires. */
static int st_check_coverage(struct mdl_st_file *f, char *err, size_t errlen)
{
	if (f->n_tensors > 1)
		qsort(f->tensors, f->n_tensors, sizeof(*f->tensors), st_cmp_offsets);
	uint64_t pos = 0;
	const char *prev = NULL;
	for (size_t i = 0; i < f->n_tensors; i++) {
		const struct mdl_st_tensor *t = &f->tensors[i];
		if (t->begin < pos) {
			mdl_err(err, errlen, f->path,
			        "tensors '%s' and '%s' overlap (byte %" PRIu64 " < %" PRIu64 ")",
			        prev, t->name, t->begin, pos);
			return -EINVAL;
		}
		if (t->begin > pos) {
			mdl_err(err, errlen, f->path,
			        "hole of %" PRIu64 " bytes before tensor '%s' (the format requires "
			        "tensors to cover the data buffer without gaps)",
			        t->begin - pos, t->name);
			return -EINVAL;
		}
		pos = t->end;
		prev = t->name;
	}
	if (pos != f->buf_len) {
		mdl_err(err, errlen, f->path,
		        "%" PRIu64 " bytes after the last tensor are not covered by any tensor",
		        (uint64_t)f->buf_len - pos);
		return -EINVAL;
	}
	if (f->n_tensors > 1)
		qsort(f->tensors, f->n_tensors, sizeof(*f->tensors), st_cmp_names);
	for (size_t i = 1; i < f->n_tensors; i++) {
		if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
			mdl_err(err, errlen, f->path, "duplicate tensor name '%s'",
			        f->tensors[i].name);
			return -EINVAL;
		}
	}
	return 0;
}

/* Parse the image at (p, len) into f; f->path is set. */
static int st_parse(struct mdl_st_file *f, const uint8_t *p, size_t len, char *err, size_t errlen)
{
	if (len < 8) {
		mdl_err(err, errlen, f->path,
		        "truncated: %zu bytes, need at least 8 for the header length", len);
		return -EINVAL;
	}
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = (hlen << 8) | p[i];
	if (hlen > MDL_ST_MAX_HEADER) {
		mdl_err(err, errlen, f->path,
		        "header length %" PRIu64 " exceeds the %u byte limit (corrupt file?)", hlen,
		        MDL_ST_MAX_HEADER);
		return -EINVAL;
	}
	if (hlen > len - 8) {
		mdl_err(err, errlen, f->path,
		        "header length %" PRIu64 " points past the end of the file (%zu bytes; "
		        "truncated?)",
		        hlen, len);
		return -EINVAL;
	}
	if (hlen < 2 || p[8] != '{') {
		mdl_err(err, errlen, f->path, "header is not a JSON object (must start with '{')");
		return -EINVAL;
	}
	f->buf = p + 8 + hlen;
	f->buf_len = len - 8 - (size_t)hlen;

	json_error_t je;
	json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		if (strstr(je.text, "duplicate object key"))
			mdl_err(err, errlen, f->path, "duplicate tensor name in header: %s",
			        je.text);
		else
			mdl_err(err, errlen, f->path,
			        "invalid JSON header: %s (line %d, column %d)", je.text, je.line,
			        je.column);
		return -EINVAL;
	}
	int rc = 0;
	if (!json_is_object(root)) {
		mdl_err(err, errlen, f->path, "header is not a JSON object");
		rc = -EINVAL;
		goto out;
	}
	size_t n = json_object_size(root);
	if (json_object_get(root, "__metadata__"))
		n--;
	if (n > 0) {
		f->tensors = calloc(n, sizeof(*f->tensors));
		if (!f->tensors) {
			mdl_err(err, errlen, f->path, "out of memory for %zu tensor entries", n);
			rc = -ENOMEM;
			goto out;
		}
	}
	const char *key;
	json_t *val;
	json_object_foreach(root, key, val)
	{
		if (strcmp(key, "__metadata__") == 0) {
			rc = st_check_metadata(f, val, err, errlen);
			if (rc)
				goto out;
			continue;
		}
		struct mdl_st_tensor *t = &f->tensors[f->n_tensors];
		t->name = strdup(key);
		if (!t->name) {
			mdl_err(err, errlen, f->path, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		f->n_tensors++;
		rc = st_parse_entry(f, t, val, err, errlen);
		if (rc)
			goto out;
	}
	rc = st_check_coverage(f, err, errlen);
out:
	json_decref(root);
	return rc;
}

static struct mdl_st_file *st_new(const char *label)
{
	struct mdl_st_file *f = calloc(1, sizeof(*f));
	if (f)
		snprintf(f->path, sizeof(f->path), "%s", label);
	return f;
}

int mdl_st_open_mem(struct mdl_st_file **out, const void *buf, size_t len, const char *label,
                    char *err, size_t errlen)
{
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	struct mdl_st_file *f = st_new(label);
	if (!f) {
		mdl_err(err, errlen, label, "out of memory");
		return -ENOMEM;
	}
	int rc = st_parse(f, buf, len, err, errlen);
	if (rc) {
		mdl_st_close(f);
		return rc;
	}
	*out = f;
	return 0;
}

int mdl_st_open(struct mdl_st_file **out, const char *path, char *err, size_t errlen)
{
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	int rc;
	struct mdl_st_file *f = st_new(path);
	if (!f) {
		mdl_err(err, errlen, path, "out of memory");
		return -ENOMEM;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block us */
	if (fd < 0) {
		rc = -errno;
		mdl_err(err, errlen, path, "cannot open: %s", strerror(errno));
		goto fail;
	}
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		mdl_err(err, errlen, path, "cannot stat: %s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = -EINVAL;
		mdl_err(err, errlen, path, "not a regular file");
		goto fail;
	}
	if (sb.st_size < 8) {
		rc = -EINVAL;
		mdl_err(err, errlen, path,
		        "truncated: %lld bytes, need at least 8 for the header length",
		        (long long)sb.st_size);
		goto fail;
	}
	if ((uint64_t)sb.st_size > SIZE_MAX) {
		rc = -EFBIG;
		mdl_err(err, errlen, path, "file too large to map");
		goto fail;
	}
	f->map_len = (size_t)sb.st_size;
	f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f->map == MAP_FAILED) {
		f->map = NULL;
		rc = -errno;
		mdl_err(err, errlen, path, "cannot mmap %zu bytes: %s", f->map_len,
		        strerror(errno));
		goto fail;
	}
	close(fd);
	fd = -1;
	rc = st_parse(f, f->map, f->map_len, err, errlen);
	if (rc)
		goto fail;
	*out = f;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	mdl_st_close(f);
	return rc;
}

void mdl_st_close(struct mdl_st_file *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n_tensors; i++)
		free(f->tensors[i].name);
	free(f->tensors);
	if (f->map)
		munmap(f->map, f->map_len);
	free(f);
}

const struct mdl_st_tensor *mdl_st_find(const struct mdl_st_file *f, const char *name)
{
	size_t lo = 0, hi = f->n_tensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, f->tensors[mid].name);
		if (c == 0)
			return &f->tensors[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int mdl_st_view(const struct mdl_st_file *f, const char *name, struct mdl_tensor *out, char *err,
                size_t errlen)
{
	const struct mdl_st_tensor *t = mdl_st_find(f, name);
	if (!t) {
		mdl_err(err, errlen, f->path, "missing tensor '%s'", name);
		return -ENOENT;
	}
	if (t->dtype < 0) {
		mdl_err(err, errlen, f->path,
		        "tensor '%s': dtype %s is not supported (F32, F16 or BF16 only)", name,
		        t->dtype_str);
		return -ENOTSUP;
	}
	size_t esz = mdl_dtype_size((enum mdl_dtype)t->dtype);
	if (t->nbytes > 0 && (uintptr_t)t->data % esz != 0) {
		mdl_err(err, errlen, f->path,
		        "tensor '%s': data is not aligned to its %zu-byte elements (header length "
		        "not padded to a multiple of 8)",
		        name, esz);
		return -EINVAL;
	}
	memset(out, 0, sizeof(*out));
	out->dtype = (enum mdl_dtype)t->dtype;
	out->ndim = t->ndim;
	for (int i = 0; i < t->ndim; i++)
		out->shape[i] = t->shape[i];
	out->data = t->data;
	out->nbytes = t->nbytes;
	return 0;
}
