/* commands.h - the subcommands other than `endpoint`. Each returns the
 * process exit status (0 ok, 1 failure, 2 usage). */
#ifndef PADDLEHOOK_COMMANDS_H
#define PADDLEHOOK_COMMANDS_H

#include "config.h"

int command_migrate(const struct config *cfg);
int command_keygen(const struct config *cfg);
int command_sign(const struct config *cfg);
int command_serve(const struct config *cfg);

#endif
