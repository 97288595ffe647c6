/* rekey.h - `paddlehook rekey`. */
#ifndef PADDLEHOOK_REKEY_H
#define PADDLEHOOK_REKEY_H

#include "config.h"

/* Re-seals every endpoint secret from --old-key-file to --key-file; exit status. */
int rekey_run(const struct config *cfg);

#endif
