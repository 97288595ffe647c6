/* endpoint_cmd.h - `paddlehook endpoint ...`: manage endpoints and secrets. */
#ifndef PADDLEHOOK_ENDPOINT_CMD_H
#define PADDLEHOOK_ENDPOINT_CMD_H

#include "config.h"
#include "limits.h"
#include "masterkey.h"

/* After a lost answer to the COMMIT that stored a sealed secret: whether it
 * is there ($1: the sealed bytes in hex). */
#define ENDPOINT_SECRET_STORED_SQL "SELECT paddle.endpoint_secret_stored($1)"
#define ENDPOINT_SEALED_HEX_MAX ((MAX_SECRET_LEN + MASTERKEY_SEAL_OVERHEAD) * 2 + 1)

/* cfg->args[0] is the action (add, list, rotate, retire-secret, disable,
 * enable). Returns the process exit status. */
int endpoint_cmd_run(const struct config *cfg);

/* Reads a secret from stdin (no echo on a terminal) into buf. Shared with
 * commands that take secrets. Returns its length, or -1 with err set. */
int endpoint_cmd_read_secret(FILE *in, char *buf, size_t cap, char *err, size_t errlen);

#endif
