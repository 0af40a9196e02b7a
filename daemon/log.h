/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/log.h: the daemon's log, one line per event on stderr:
 * "<ISO time> <level> <module>: <message>". Modules below the daemon never log; they return
 * negative errno (and a message buffer for untrusted input) and the daemon logs once here.
 * Threading: any thread; each line is written with one write(2) so lines never interleave.
 * Not for the hot path: it formats and makes a system call.
 */
#ifndef OFFPATH_DAEMON_LOG_H
#define OFFPATH_DAEMON_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_set_level(enum log_level lvl);
void log_msg(enum log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(mod, ...) log_msg(LOG_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_msg(LOG_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_msg(LOG_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...) log_msg(LOG_DEBUG, mod, __VA_ARGS__)

#endif
