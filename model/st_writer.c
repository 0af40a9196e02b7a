/* SPDX-License-Identifier: Apache-2.0 */
/* model/st_writer.c: streaming safetensors writer (see st_writer.h for the layout rules). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdl_pvt.h"
#include "st_writer.h"

#define STW_NAME_MAX 255

struct stw_tensor {
	char *name;
	enum mdl_dtype dtype;
	int ndim;
	int64_t shape[MDL_MAX_DIMS];
	uint64_t nbytes;
	uint64_t off; /* from the start of the data section */
	/* Bytes written so far: relaxed adds from writer threads; read by finish() after the
	 * threads were joined (the join orders them). */
	_Atomic uint64_t written;
};

struct mdl_stw {
	char *path;
	int fd;
	bool begun;
	bool finished;
	int n, cap;
	struct stw_tensor *t;
	uint64_t data_start; /* 8 + header length */
};

static int stw_err(char *err, size_t errlen, int rc, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* mdl_err() that returns rc, for `return stw_err(...)`. */
static int stw_err(char *err, size_t errlen, int rc, const char *path, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	mdl_verr(err, errlen, path, fmt, ap);
	va_end(ap);
	return rc;
}

int mdl_stw_create(struct mdl_stw **out, const char *path, char *err, size_t errlen)
{
	*out = NULL;
	struct mdl_stw *w = calloc(1, sizeof(*w));
	if (!w)
		return stw_err(err, errlen, -ENOMEM, path, "out of memory");
	w->path = strdup(path);
	if (!w->path) {
		free(w);
		return stw_err(err, errlen, -ENOMEM, path, "out of memory");
	}
	w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		int rc = -errno;
		free(w->path);
		free(w);
		return stw_err(err, errlen, rc, path, "cannot create: %s", strerror(-rc));
	}
	*out = w;
	return 0;
}

int mdl_stw_add(struct mdl_stw *w, const char *name, enum mdl_dtype dt, int ndim,
                const int64_t *shape, char *err, size_t errlen)
{
	if (w->begun)
		return stw_err(err, errlen, -EBUSY, w->path, "tensor %s declared after begin",
		               name);
	size_t len = strlen(name);
	if (len == 0 || len > STW_NAME_MAX)
		return stw_err(err, errlen, -EINVAL, w->path, "tensor name of %zu bytes", len);
	size_t esz = mdl_dtype_size(dt);
	if (esz == 0)
		return stw_err(err, errlen, -EINVAL, w->path, "tensor %s: bad dtype %d", name,
		               (int)dt);
	if (ndim < 0 || ndim > MDL_MAX_DIMS)
		return stw_err(err, errlen, -EINVAL, w->path, "tensor %s: %d dimensions", name,
		               ndim);
	uint64_t numel = 1;
	for (int d = 0; d < ndim; d++) {
		if (shape[d] < 0 || (shape[d] > 0 && numel > (UINT64_MAX / 8) / (uint64_t)shape[d]))
			return stw_err(err, errlen, -EINVAL, w->path,
			               "tensor %s: bad dimension %" PRId64, name, shape[d]);
		numel *= (uint64_t)shape[d];
	}
	for (int i = 0; i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return stw_err(err, errlen, -EEXIST, w->path, "tensor %s declared twice",
			               name);
	if (w->n == w->cap) {
		int ncap = w->cap ? 2 * w->cap : 64;
		struct stw_tensor *nt = realloc(w->t, (size_t)ncap * sizeof(*nt));
		if (!nt)
			return stw_err(err, errlen, -ENOMEM, w->path, "out of memory");
		w->t = nt;
		w->cap = ncap;
	}
	struct stw_tensor *t = &w->t[w->n];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	if (!t->name)
		return stw_err(err, errlen, -ENOMEM, w->path, "out of memory");
	t->dtype = dt;
	t->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		t->shape[d] = shape[d];
	t->nbytes = numel * esz;
	atomic_init(&t->written, 0);
	w->n++;
	return 0;
}

/* safetensors' Rust Dtype enum order: F16 < BF16 < F32; files list the larger first. */
static int stw_dtype_rank(enum mdl_dtype dt)
{
	switch (dt) {
	case MDL_F16:
		return 0;
	case MDL_BF16:
		return 1;
	case MDL_F32:
		return 2;
	}
	return -1;
}

static int stw_cmp(const void *a, const void *b)
{
	const struct stw_tensor *x = a, *y = b;
	int rx = stw_dtype_rank(x->dtype), ry = stw_dtype_rank(y->dtype);
	if (rx != ry)
		return ry - rx;
	return strcmp(x->name, y->name);
}

/* A growable string for the header. */
struct stw_buf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void buf_put(struct stw_buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 4096;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void buf_printf(struct stw_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct stw_buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (k > 0)
		buf_put(b, tmp, (size_t)k < sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1);
}

/* JSON string, escaped as serde_json does: ", \ and control characters. */
static void buf_json_str(struct stw_buf *b, const char *s)
{
	buf_put(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			buf_put(b, e, 2);
		} else if (c == '\n') {
			buf_put(b, "\\n", 2);
		} else if (c == '\t') {
			buf_put(b, "\\t", 2);
		} else if (c == '\r') {
			buf_put(b, "\\r", 2);
		} else if (c < 0x20) {
			buf_printf(b, "\\u%04x", c);
		} else {
			buf_put(b, (const char *)&c, 1);
		}
	}
	buf_put(b, "\"", 1);
}

static int stw_write_all(int fd, const void *p, size_t n, uint64_t off)
{
	const char *c = p;
	while (n) {
		ssize_t k = pwrite(fd, c, n, (off_t)off);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			return -EIO;
		c += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
	return 0;
}

int mdl_stw_begin(struct mdl_stw *w, char *err, size_t errlen)
{
	if (w->begun)
		return stw_err(err, errlen, -EBUSY, w->path, "begin called twice");
	qsort(w->t, (size_t)w->n, sizeof(*w->t), stw_cmp);
	struct stw_buf b = {0};
	uint64_t off = 0;
	buf_put(&b, "{\"__metadata__\":{\"format\":\"pt\"}", 31);
	for (int i = 0; i < w->n; i++) {
		struct stw_tensor *t = &w->t[i];
		t->off = off;
		buf_put(&b, ",", 1);
		buf_json_str(&b, t->name);
		buf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", mdl_dtype_name(t->dtype));
		for (int d = 0; d < t->ndim; d++)
			buf_printf(&b, "%s%" PRId64, d ? "," : "", t->shape[d]);
		buf_printf(&b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off,
		           off + t->nbytes);
		off += t->nbytes;
	}
	buf_put(&b, "}", 1);
	while (!b.oom && (8 + b.len) % 8)
		buf_put(&b, " ", 1);
	if (b.oom) {
		free(b.p);
		return stw_err(err, errlen, -ENOMEM, w->path, "out of memory for the header");
	}
	uint8_t len8[8];
	for (int k = 0; k < 8; k++)
		len8[k] = (uint8_t)((uint64_t)b.len >> (8 * k));
	int rc = stw_write_all(w->fd, len8, 8, 0);
	if (rc == 0)
		rc = stw_write_all(w->fd, b.p, b.len, 8);
	w->data_start = 8 + b.len;
	free(b.p);
	if (rc)
		return stw_err(err, errlen, rc, w->path, "cannot write the header: %s",
		               strerror(-rc));
	/* Reserve the whole file so the data writes do not fragment it; file systems without
	 * fallocate (or with it refused) still get the right size from ftruncate. */
	uint64_t total = w->data_start + off;
	if (fallocate(w->fd, 0, 0, (off_t)total) != 0 && ftruncate(w->fd, (off_t)total) != 0) {
		rc = -errno;
		return stw_err(err, errlen, rc, w->path,
		               "cannot size the file to %" PRIu64 " bytes: %s (disk full?)", total,
		               strerror(-rc));
	}
	w->begun = true;
	return 0;
}

int mdl_stw_count(const struct mdl_stw *w)
{
	return w->n;
}

int mdl_stw_find(const struct mdl_stw *w, const char *name)
{
	for (int i = 0; i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return i;
	return -ENOENT;
}

const char *mdl_stw_name(const struct mdl_stw *w, int i)
{
	return w->t[i].name;
}

uint64_t mdl_stw_nbytes(const struct mdl_stw *w, int i)
{
	return w->t[i].nbytes;
}

uint64_t mdl_stw_file_offset(const struct mdl_stw *w, int i)
{
	return w->data_start + w->t[i].off;
}

uint64_t mdl_stw_header_bytes(const struct mdl_stw *w)
{
	return w->data_start;
}

int mdl_stw_pwrite(struct mdl_stw *w, int i, uint64_t off, const void *buf, size_t n, char *err,
                   size_t errlen)
{
	if (!w->begun || w->finished)
		return stw_err(err, errlen, -EBUSY, w->path, "write outside begin..finish");
	if (i < 0 || i >= w->n)
		return stw_err(err, errlen, -ERANGE, w->path, "no tensor %d", i);
	struct stw_tensor *t = &w->t[i];
	if (off > t->nbytes || n > t->nbytes - off)
		return stw_err(err, errlen, -ERANGE, w->path,
		               "tensor %s: write of %zu bytes at %" PRIu64 " past its %" PRIu64
		               " bytes",
		               t->name, n, off, t->nbytes);
	int rc = stw_write_all(w->fd, buf, n, w->data_start + t->off + off);
	if (rc)
		return stw_err(err, errlen, rc, w->path, "tensor %s: write failed: %s", t->name,
		               strerror(-rc));
	atomic_fetch_add_explicit(&t->written, n, memory_order_relaxed);
	return 0;
}

int mdl_stw_finish(struct mdl_stw *w, char *err, size_t errlen)
{
	if (!w->begun || w->finished)
		return stw_err(err, errlen, -EBUSY, w->path, "finish without begin, or twice");
	for (int i = 0; i < w->n; i++) {
		uint64_t got = atomic_load_explicit(&w->t[i].written, memory_order_relaxed);
		if (got != w->t[i].nbytes)
			return stw_err(err, errlen, -EIO, w->path,
			               "tensor %s: %" PRIu64 " of %" PRIu64 " bytes written",
			               w->t[i].name, got, w->t[i].nbytes);
	}
	int rc = close(w->fd);
	w->fd = -1;
	if (rc != 0) {
		rc = -errno;
		return stw_err(err, errlen, rc, w->path, "close failed: %s", strerror(-rc));
	}
	w->finished = true;
	return 0;
}

void mdl_stw_destroy(struct mdl_stw *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (!w->finished)
		unlink(w->path);
	for (int i = 0; i < w->n; i++)
		free(w->t[i].name);
	free(w->t);
	free(w->path);
	free(w);
}
