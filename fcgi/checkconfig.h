/* checkconfig.h - `paddlehook check-config`. */
#ifndef PADDLEHOOK_CHECKCONFIG_H
#define PADDLEHOOK_CHECKCONFIG_H

#include "config.h"

/* Validates config, key file, database, schema, secrets and a dry run of
 * deliveries; exit status 1 on any problem. */
int checkconfig_run(const struct config *cfg);

#endif
