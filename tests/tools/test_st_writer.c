/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/tools/test_st_writer.c: the safetensors writer (model/st_writer.c). Writes files with
 * mixed dtypes from several threads and checks the bytes against the format's rules (header length,
 * order by dtype then name, 8-byte alignment with space padding, contiguous offsets), then reopens
 * them with the project's reader (mdl_st_open) when it is built; and the error paths: duplicate
 * names, late declarations, writes outside a tensor, short tensors at finish, unwritable paths.
 * Exit 0 pass, 1 fail.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "files.h"
#include "mdl.h"
#include "st_writer.h"
#ifdef HAVE_ST_READER
#include "safetensors.h"
#endif

struct job {
	struct mdl_stw *w;
	int idx;
	int part, nparts;
	int rc;
};

/* Tensor bytes: byte j of tensor i is (i * 31 + j) & 0xff. Each job writes one slice. */
static void *writer_thread(void *arg)
{
	struct job *j = arg;
	uint64_t n = mdl_stw_nbytes(j->w, j->idx);
	uint64_t a = n * (uint64_t)j->part / (uint64_t)j->nparts;
	uint64_t b = n * (uint64_t)(j->part + 1) / (uint64_t)j->nparts;
	unsigned char *buf = malloc(b - a + 1);
	for (uint64_t k = a; k < b; k++)
		buf[k - a] = (unsigned char)((j->idx * 31 + (int)k) & 0xff);
	char err[256];
	j->rc = mdl_stw_pwrite(j->w, j->idx, a, buf, b - a, err, sizeof(err));
	if (j->rc)
		fprintf(stderr, "pwrite: %s\n", err);
	free(buf);
	return NULL;
}

static void test_layout(const char *dir)
{
	char path[512], err[512];
	snprintf(path, sizeof(path), "%s/a.safetensors", dir);
	struct mdl_stw *w;
	CHECK(mdl_stw_create(&w, path, err, sizeof(err)) == 0);
	int64_t s1[2] = {3, 5}, s2[1] = {7}, s3[2] = {2, 2}, s4[1] = {0};
	CHECK(mdl_stw_add(w, "zeta.weight", MDL_BF16, 2, s1, err, sizeof(err)) == 0);
	CHECK(mdl_stw_add(w, "alpha.bias", MDL_F16, 1, s2, err, sizeof(err)) == 0);
	CHECK(mdl_stw_add(w, "beta", MDL_F32, 2, s3, err, sizeof(err)) == 0);
	CHECK(mdl_stw_add(w, "a\"q", MDL_BF16, 1, s2, err, sizeof(err)) == 0);
	CHECK(mdl_stw_add(w, "empty", MDL_F32, 1, s4, err, sizeof(err)) == 0);
	CHECK(mdl_stw_add(w, "beta", MDL_F32, 1, s2, err, sizeof(err)) == -EEXIST);
	CHECK(strstr(err, path) && strstr(err, "beta"));
	CHECK(mdl_stw_add(w, "x", MDL_F32, 5, s1, err, sizeof(err)) == -EINVAL);
	CHECK(mdl_stw_add(w, "", MDL_F32, 1, s2, err, sizeof(err)) == -EINVAL);
	int64_t neg[1] = {-1};
	CHECK(mdl_stw_add(w, "neg", MDL_F32, 1, neg, err, sizeof(err)) == -EINVAL);
	CHECK(mdl_stw_begin(w, err, sizeof(err)) == 0);
	CHECK(mdl_stw_add(w, "late", MDL_F32, 1, s2, err, sizeof(err)) == -EBUSY);
	CHECK(mdl_stw_count(w) == 5);
	/* Order: F32 (beta, empty), BF16 (a"q, zeta.weight), F16 (alpha.bias). */
	const char *order[] = {"beta", "empty", "a\"q", "zeta.weight", "alpha.bias"};
	for (int i = 0; i < 5 && i < mdl_stw_count(w); i++)
		CHECK(strcmp(mdl_stw_name(w, i), order[i]) == 0);
	CHECK(mdl_stw_find(w, "zeta.weight") == 3);
	CHECK(mdl_stw_find(w, "nope") == -ENOENT);
	CHECK(mdl_stw_header_bytes(w) % 8 == 0);
	CHECK(mdl_stw_pwrite(w, 3, 29, "xx", 2, err, sizeof(err)) == -ERANGE);
	CHECK(strstr(err, "zeta.weight") != NULL);
	CHECK(mdl_stw_pwrite(w, 9, 0, "xx", 2, err, sizeof(err)) == -ERANGE);

	struct job jobs[16];
	pthread_t th[16];
	int nj = 0;
	for (int i = 0; i < 5; i++)
		for (int p = 0; p < 3; p++)
			jobs[nj++] = (struct job){.w = w, .idx = i, .part = p, .nparts = 3};
	for (int i = 0; i < nj; i++)
		pthread_create(&th[i], NULL, writer_thread, &jobs[i]);
	for (int i = 0; i < nj; i++) {
		pthread_join(th[i], NULL);
		CHECK(jobs[i].rc == 0);
	}
	CHECK(mdl_stw_finish(w, err, sizeof(err)) == 0);
	mdl_stw_destroy(w);

	size_t len;
	char *f = test_slurp(path, &len);
	CHECK(f != NULL);
	if (!f)
		return;
	uint64_t hl = 0;
	for (int k = 0; k < 8; k++)
		hl |= (uint64_t)(unsigned char)f[k] << (8 * k);
	CHECK((8 + hl) % 8 == 0);
	char *hdr = strndup(f + 8, hl);
	const char *want =
	    "{\"__metadata__\":{\"format\":\"pt\"},"
	    "\"beta\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	    "\"empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,16]},"
	    "\"a\\\"q\":{\"dtype\":\"BF16\",\"shape\":[7],\"data_offsets\":[16,30]},"
	    "\"zeta.weight\":{\"dtype\":\"BF16\",\"shape\":[3,5],\"data_offsets\":[30,60]},"
	    "\"alpha.bias\":{\"dtype\":\"F16\",\"shape\":[7],\"data_offsets\":[60,74]}}";
	size_t wl = strlen(want);
	CHECK(hl >= wl && hl - wl < 8 && strncmp(hdr, want, wl) == 0);
	for (size_t k = wl; k < hl; k++)
		CHECK(hdr[k] == ' ');
	if (strncmp(hdr, want, wl) != 0)
		fprintf(stderr, "header: %s\n", hdr);
	CHECK(len == 8 + hl + 74);
	/* Data bytes: tensor i in file order holds (i * 31 + j) & 0xff. */
	uint64_t off[5] = {0, 16, 16, 30, 60}, nb[5] = {16, 0, 14, 30, 14};
	for (int i = 0; i < 5; i++)
		for (uint64_t j = 0; j < nb[i]; j++)
			CHECK((unsigned char)f[8 + hl + off[i] + j] == ((i * 31 + (int)j) & 0xff));
	free(hdr);
	free(f);

#ifdef HAVE_ST_READER
	struct mdl_st_file *sf = NULL;
	int rc = mdl_st_open(&sf, path, err, sizeof(err));
	CHECK(rc == 0);
	if (rc)
		fprintf(stderr, "mdl_st_open: %s\n", err);
	if (sf) {
		CHECK(sf->n_tensors == 5);
		struct mdl_tensor t;
		CHECK(mdl_st_view(sf, "zeta.weight", &t, err, sizeof(err)) == 0);
		CHECK(t.dtype == MDL_BF16 && t.ndim == 2 && t.shape[0] == 3 && t.shape[1] == 5);
		CHECK(t.nbytes == 30 &&
		      ((const unsigned char *)t.data)[1] == ((3 * 31 + 1) & 0xff));
		CHECK(mdl_st_view(sf, "beta", &t, err, sizeof(err)) == 0);
		CHECK(t.dtype == MDL_F32 && t.nbytes == 16);
		mdl_st_close(sf);
	}
#endif
}

static void test_errors(const char *dir)
{
	char path[512], err[512];
	struct mdl_stw *w;
	/* a short tensor at finish: error names the file and the tensor, destroy removes the file
	 */
	snprintf(path, sizeof(path), "%s/short.safetensors", dir);
	CHECK(mdl_stw_create(&w, path, err, sizeof(err)) == 0);
	int64_t s[1] = {4};
	CHECK(mdl_stw_add(w, "t", MDL_F32, 1, s, err, sizeof(err)) == 0);
	CHECK(mdl_stw_pwrite(w, 0, 0, "abcd", 4, err, sizeof(err)) == -EBUSY);
	CHECK(mdl_stw_finish(w, err, sizeof(err)) == -EBUSY);
	CHECK(mdl_stw_begin(w, err, sizeof(err)) == 0);
	CHECK(mdl_stw_begin(w, err, sizeof(err)) == -EBUSY);
	CHECK(mdl_stw_pwrite(w, 0, 0, "abcd", 4, err, sizeof(err)) == 0);
	CHECK(mdl_stw_finish(w, err, sizeof(err)) == -EIO);
	CHECK(strstr(err, path) && strstr(err, "t: 4 of 16 bytes"));
	mdl_stw_destroy(w);
	struct stat st;
	CHECK(stat(path, &st) != 0);

	/* a path that cannot be created */
	snprintf(path, sizeof(path), "%s/no/such/dir/x.safetensors", dir);
	CHECK(mdl_stw_create(&w, path, err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, path) != NULL);
}

int main(void)
{
	char dir[] = "/tmp/offpath-stw-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_layout(dir);
	test_errors(dir);
	test_rm_rf(dir);
	if (check_exit())
		return 1;
	printf("test_st_writer: ok\n");
	return 0;
}
