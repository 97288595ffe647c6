/* endpoints.h - the worker's in-memory copy of the endpoints and their
 * decrypted secrets, loaded from PostgreSQL at connect, on NOTIFY and SIGHUP. */
#ifndef PADDLEHOOK_ENDPOINTS_H
#define PADDLEHOOK_ENDPOINTS_H

#include <stddef.h>

#include "limits.h"
#include "masterkey.h"
#include "sig.h"
#include "store.h"

struct endpoint {
    char id[MAX_ID_LEN + 1];
    char environment[8];
    int tolerance;
    int enabled;
    size_t n_secrets;
    struct sig_secret secrets[MAX_SECRETS_PER_ENDPOINT]; /* keys point into the table's vault */
    long long secret_ids[MAX_SECRETS_PER_ENDPOINT];      /* endpoint_secrets.id of each */
    size_t n_unopened; /* stored secrets that did not open with the master key */
    long long unopened_ids[MAX_SECRETS_PER_ENDPOINT];
};

struct endpoint_table {
    struct endpoint *items; /* sorted by id */
    size_t n;
    unsigned char *vault;   /* sodium_malloc'd secret bytes */
    size_t vault_len;
    size_t unreadable;      /* endpoints with a secret the master key did not open */
};

/* Replaces *t with the endpoints in the database. A secret that does not
 * open with mk (the database was re-keyed before this process re-read its
 * key file) is replaced by the copy *t already held of it, if any, so a key
 * rotation never opens a window of rejected deliveries. On failure
 * *t is left as it was and -1 is returned with a reason in err. Queries on
 * the worker's connection (store_query: same time limit as an ingest). */
int endpoints_load(struct store *s, const struct masterkey *mk, struct endpoint_table *t,
                   char *err, size_t errlen);

const struct endpoint *endpoints_find(const struct endpoint_table *t, const char *id);

void endpoints_free(struct endpoint_table *t);

#endif
