/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/api_pvt.h: helpers shared by the API layer's files (api.c, sse.c, chat.c, stop.c): a
 * bounded output buffer that counts what it could not write, and a UTF-8 decoder step.
 * Not part of the interface. Threading: no state.
 */
#ifndef OFFPATH_DAEMON_API_PVT_H
#define OFFPATH_DAEMON_API_PVT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Output into out[0..cap); len counts every byte asked for, so len > cap means "did not fit". */
struct api_wbuf {
	char *p;
	size_t cap;
	size_t len;
};

static inline void api_w_put(struct api_wbuf *w, const char *s, size_t n)
{
	if (w->len < w->cap) {
		size_t room = w->cap - w->len;
		memcpy(w->p + w->len, s, n < room ? n : room);
	}
	w->len += n;
}

static inline void api_w_str(struct api_wbuf *w, const char *s)
{
	api_w_put(w, s, strlen(s));
}

static inline void api_w_ch(struct api_wbuf *w, char c)
{
	if (w->len < w->cap)
		w->p[w->len] = c;
	w->len++;
}

/* NUL-terminate when there is room; returns len. */
static inline size_t api_w_end(struct api_wbuf *w)
{
	if (w->len < w->cap)
		w->p[w->len] = '\0';
	else if (w->cap)
		w->p[w->cap - 1] = '\0';
	return w->len;
}

/*
 * One step of strict UTF-8 decoding at s[0..len), len >= 1. Returns the number of bytes consumed
 * and sets *valid: a valid sequence (no overlongs, no surrogates, <= U+10FFFF), or else the
 * maximal invalid subpart (the bytes WHATWG decoders turn into one U+FFFD).
 */
static inline size_t api_utf8_step(const unsigned char *s, size_t len, bool *valid)
{
	unsigned char b = s[0];
	unsigned char lo = 0x80, hi = 0xBF;
	size_t need, i;

	if (b < 0x80) {
		*valid = true;
		return 1;
	}
	if (b >= 0xC2 && b <= 0xDF) {
		need = 1;
	} else if (b >= 0xE0 && b <= 0xEF) {
		need = 2;
		if (b == 0xE0)
			lo = 0xA0;
		else if (b == 0xED)
			hi = 0x9F;
	} else if (b >= 0xF0 && b <= 0xF4) {
		need = 3;
		if (b == 0xF0)
			lo = 0x90;
		else if (b == 0xF4)
			hi = 0x8F;
	} else {
		*valid = false;
		return 1;
	}
	for (i = 1; i <= need; i++) {
		if (i >= len || s[i] < lo || s[i] > hi) {
			*valid = false;
			return i;
		}
		lo = 0x80;
		hi = 0xBF;
	}
	*valid = true;
	return need + 1;
}

static inline bool api_utf8_valid(const char *s, size_t len)
{
	size_t i = 0;
	bool ok;

	while (i < len) {
		i += api_utf8_step((const unsigned char *)s + i, len - i, &ok);
		if (!ok)
			return false;
	}
	return true;
}

struct api_error;
/* {"error":{...}} (api.c). */
void api_w_error(struct api_wbuf *w, const struct api_error *err);
/* JSON string contents, escaped as sse_json_escape() (sse.c). */
void api_w_esc(struct api_wbuf *w, const char *s, size_t len);

#endif /* OFFPATH_DAEMON_API_PVT_H */
