/* serve.h - the supervisor: one listening socket, N pre-forked workers. */
#ifndef PADDLEHOOK_SERVE_H
#define PADDLEHOOK_SERVE_H

#include "config.h"
#include "masterkey.h"

/* Blocks SIGHUP until serve_run watches for it: called first thing, so that a
 * reload sent during start-up is not fatal. */
void serve_hold_reload(void);

/* Why serve would refuse to start in this process's environment, or NULL:
 * check-config says it too. */
const char *serve_refusal(void);

/* Runs until SIGTERM/SIGINT; returns the process exit status. */
int serve_run(const struct config *cfg, const struct masterkey *mk);

#endif
