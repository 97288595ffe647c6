/* simulate.h - `paddlehook simulate`: send a scenario's signed events to any
 * receiver, the way Paddle would deliver them. */
#ifndef PADDLEHOOK_SIMULATE_H
#define PADDLEHOOK_SIMULATE_H

#include <stddef.h>

#include "config.h"

/* Returns the process exit status: 0 when every delivery got a 2xx. */
int simulate_run(const struct config *cfg);

#endif
