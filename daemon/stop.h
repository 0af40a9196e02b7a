/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/stop.h: incremental stop-string matching over a detokenized stream. Text arrives in
 * pieces (one per token, from tok_stream_push); a stop string may span pieces. Text that could
 * still be the start of a stop string is held back until it is decided; everything before it is
 * released. The request stops at the first point of the stream where some stop string is complete
 * (the smallest end offset; among stop strings ending there, the longest), and the output is cut
 * just before that stop string. The result does not depend on how the text was split into pieces.
 *
 * Ownership: struct stop_matcher is plain memory owned by the caller, one per request; stop_init()
 *   copies the stop strings into it. Nothing allocates.
 * Threading: a matcher is used by one thread at a time (the egress thread of its request).
 */
#ifndef OFFPATH_DAEMON_STOP_H
#define OFFPATH_DAEMON_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "api.h"

struct stop_matcher {
	int n;                                  /* stop strings; 0: everything passes through */
	size_t len[API_MAX_STOP];
	char str[API_MAX_STOP][API_STOP_MAX_LEN];
	size_t held;                            /* bytes held back, < the longest stop string */
	char hold[API_STOP_MAX_LEN];
	int matched;                            /* index of the stop string that matched, or -1 */
};

/* n <= API_MAX_STOP strings of 1..API_STOP_MAX_LEN bytes. Returns 0 or -EINVAL. */
int stop_init(struct stop_matcher *m, const char *const *stops, const size_t *lens, int n);
void stop_reset(struct stop_matcher *m);

/*
 * Feed len bytes of text. out (cap >= held + len: STOP_OUT_CAP(len) is always enough) gets the
 * text now safe to emit, *out_len its length. Returns 1 when a stop string completed (out then
 * holds everything before it; the caller cancels the request and calls nothing more but
 * stop_reset), 0 otherwise, -ENOBUFS when cap is too small (nothing consumed).
 */
int stop_push(struct stop_matcher *m, const char *text, size_t len, char *out, size_t cap,
	      size_t *out_len);
#define STOP_OUT_CAP(len) ((len) + API_STOP_MAX_LEN)

/* The stream ended without a stop string (EOS, length): release the held text (<= cap bytes of
 * API_STOP_MAX_LEN). Returns its length. */
size_t stop_flush(struct stop_matcher *m, char *out, size_t cap);

#endif /* OFFPATH_DAEMON_STOP_H */
