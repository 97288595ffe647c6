/* admin.h - operator commands: `status`, `check-config`, `rekey`. Each
 * returns the process exit status. */
#ifndef PADDLEHOOK_ADMIN_H
#define PADDLEHOOK_ADMIN_H

#include "config.h"

/* Per endpoint: last event, counts by outcome over the last hour and day. */
int admin_status(const struct config *cfg);

/* Validates config, key file, database, schema and secrets; 1 on any problem. */
int admin_check_config(const struct config *cfg);

/* Re-seals every endpoint secret from --old-key-file to --key-file. */
int admin_rekey(const struct config *cfg);

#endif
