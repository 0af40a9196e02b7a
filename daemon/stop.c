/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/stop.c: incremental stop-string matcher; see stop.h.
 * Cost per push: O((held + len) * n_stop) byte compares in the common case (a memcmp only where the
 * last byte of a stop string matches), n_stop <= 4 and held < 256: no need for Aho-Corasick.
 */
#include "stop.h"

#include <errno.h>
#include <string.h>

int stop_init(struct stop_matcher *m, const char *const *stops, const size_t *lens, int n)
{
	int i;

	memset(m, 0, sizeof(*m));
	m->matched = -1;
	if (n < 0 || n > API_MAX_STOP)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (lens[i] == 0 || lens[i] > API_STOP_MAX_LEN)
			return -EINVAL;
		memcpy(m->str[i], stops[i], lens[i]);
		m->len[i] = lens[i];
	}
	m->n = n;
	return 0;
}

void stop_reset(struct stop_matcher *m)
{
	m->held = 0;
	m->matched = -1;
}

/* Is w[p..wl) a proper prefix of some stop string? */
static int is_partial(const struct stop_matcher *m, const char *w, size_t p, size_t wl)
{
	int i;

	for (i = 0; i < m->n; i++) {
		if (wl - p < m->len[i] && memcmp(w + p, m->str[i], wl - p) == 0)
			return 1;
	}
	return 0;
}

int stop_push(struct stop_matcher *m, const char *text, size_t len, char *out, size_t cap,
	      size_t *out_len)
{
	size_t wl = m->held + len, e, p, maxl = 0;
	int i;

	if (cap < wl)
		return -ENOBUFS;
	memcpy(out, m->hold, m->held);
	memcpy(out + m->held, text, len);
	for (i = 0; i < m->n; i++)
		maxl = m->len[i] > maxl ? m->len[i] : maxl;

	/* The first end offset at which a stop string completes. Ends at or before `held` were
	 * checked on earlier pushes (none completed there), so start after it. */
	for (e = m->held + 1; e <= wl; e++) {
		int best = -1;

		for (i = 0; i < m->n; i++) {
			size_t l = m->len[i];

			if (l <= e && out[e - 1] == m->str[i][l - 1] &&
			    memcmp(out + e - l, m->str[i], l) == 0 &&
			    (best < 0 || l > m->len[best]))
				best = i;
		}
		if (best >= 0) {
			m->matched = best;
			m->held = 0;
			*out_len = e - m->len[best];
			return 1;
		}
	}

	/* Hold back the longest suffix that may still become a stop string. */
	if (maxl == 0)
		p = wl;
	else
		p = wl >= maxl ? wl - maxl + 1 : 0;
	for (; p < wl; p++) {
		if (is_partial(m, out, p, wl))
			break;
	}
	m->held = wl - p;
	memcpy(m->hold, out + p, m->held);
	*out_len = p;
	return 0;
}

size_t stop_flush(struct stop_matcher *m, char *out, size_t cap)
{
	size_t n = m->held < cap ? m->held : cap;

	memcpy(out, m->hold, n);
	m->held = 0;
	return n;
}
