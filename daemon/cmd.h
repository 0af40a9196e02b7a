/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon/cmd.h: offpathd's subcommands. Each takes the arguments after its name, logs its own
 * errors once, and returns the process exit code. Called only from main() on the main thread.
 */
#ifndef OFFPATH_DAEMON_CMD_H
#define OFFPATH_DAEMON_CMD_H

int cmd_generate(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
