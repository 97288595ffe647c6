/* simulate.h - `paddlehook simulate`: send a scenario's signed events to any
 * receiver, the way Paddle would deliver them. */
#ifndef PADDLEHOOK_SIMULATE_H
#define PADDLEHOOK_SIMULATE_H

#include <stddef.h>

#include "config.h"

/* Returns the process exit status: 0 when every delivery got a 2xx. */
int simulate_run(const struct config *cfg);

/* Expands {{id:PREFIX:LABEL}} and {{time:OFFSET}} in a scenario template.
 * base is the unix time offsets count from. Returns a malloc'd string, or
 * NULL with err set. Pure, for unit tests. */
char *simulate_expand(const char *tmpl, long long base, char *err, size_t errlen);

/* Parses an offset such as "+30d", "-2h", "+1d+30m", "0" into seconds. */
int simulate_offset(const char *s, long long *seconds);

#endif
