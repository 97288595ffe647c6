/* status.h - `paddlehook status`. */
#ifndef PADDLEHOOK_STATUS_H
#define PADDLEHOOK_STATUS_H

#include "config.h"

/* Per endpoint: last event, counts by outcome over the last hour and day;
 * consumer queues; stored events whose projection failed. Exit status. */
int status_run(const struct config *cfg);

#endif
