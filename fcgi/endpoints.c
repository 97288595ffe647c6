/* endpoints.c - load and look up endpoints. Secrets are opened with the
 * master key into one guarded sodium_malloc region, wiped when replaced. */
#include "endpoints.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define ENDPOINTS_QUERY                                                                  \
    "SELECT e.id, e.environment, e.tolerance_seconds, e.enabled, encode(s.sealed, 'hex'), s.id " \
    "FROM paddle.endpoints e LEFT JOIN paddle.endpoint_secrets s "                        \
    "ON s.endpoint_id = e.id AND s.retired_at IS NULL "                                   \
    "ORDER BY e.id, s.id DESC"

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct endpoint *)a)->id, ((const struct endpoint *)b)->id);
}

/* Opens one hex-encoded sealed secret into the vault at *used. */
static int open_secret(const struct masterkey *mk, const char *hex, unsigned char *vault,
                       size_t cap, size_t *used, struct sig_secret *out)
{
    size_t len = 0;

    if (masterkey_open_hex(mk, hex, vault + *used, cap - *used, &len) != 0) return -1;
    out->key = (const char *)vault + *used;
    out->len = len;
    *used += len;
    return 0;
}

/* Adds to e the secrets the previous table held for those of its active
 * secrets that did not open: only those, so a secret retired meanwhile stops
 * verifying even before this process has the new key. */
static void keep_previous(const struct endpoint_table *prev, struct endpoint *e, unsigned char *vault,
                          size_t cap, size_t *used)
{
    const struct endpoint *old = endpoints_find(prev, e->id);
    size_t kept = 0;

    for (size_t i = 0; old && i < old->n_secrets; i++) {
        const struct sig_secret *s = &old->secrets[i];
        int active = 0;

        for (size_t k = 0; k < e->n_unopened; k++) active |= e->unopened_ids[k] == old->secret_ids[i];
        if (!active || e->n_secrets == MAX_SECRETS_PER_ENDPOINT || *used + s->len > cap) continue;
        memcpy(vault + *used, s->key, s->len);
        e->secrets[e->n_secrets] = (struct sig_secret){.key = (const char *)vault + *used, .len = s->len};
        e->secret_ids[e->n_secrets++] = old->secret_ids[i];
        *used += s->len;
        kept++;
    }
    log_line(LOG_WARN, "event=endpoint_secret_unreadable endpoint=%s kept=%zu "
             "reason=\"not sealed with the loaded master key; reload (SIGHUP) after rekey\"", e->id, kept);
}

/* Puts each secret's keyed HMAC state into the vault after the keys. */
static int prepare_secrets(struct endpoint_table *t, size_t used)
{
    const size_t state_size = sizeof(crypto_auth_hmacsha256_state);
    const size_t align = _Alignof(crypto_auth_hmacsha256_state);
    uintptr_t at = (uintptr_t)(t->vault + used);

    used += (align - at % align) % align;
    for (size_t i = 0; i < t->n; i++) {
        for (size_t k = 0; k < t->items[i].n_secrets; k++) {
            if (used + state_size > t->vault_len) return -1;
            sig_prepare(&t->items[i].secrets[k], (crypto_auth_hmacsha256_state *)(void *)(t->vault + used));
            used += state_size;
        }
    }
    return 0;
}

/* Endpoints in an ENDPOINTS_QUERY result, whose rows come ordered by endpoint. */
static size_t count_endpoints(const PGresult *res)
{
    size_t n = 0;

    for (int r = 0; r < PQntuples(res); r++)
        n += r == 0 || strcmp(PQgetvalue(res, r, 0), PQgetvalue(res, r - 1, 0)) != 0;
    return n;
}

int endpoints_load(struct store *s, const struct masterkey *mk, struct endpoint_table *t,
                   char *err, size_t errlen)
{
    struct endpoint_table next = {0};
    PGresult *res = store_query(s, ENDPOINTS_QUERY, err, errlen);
    size_t rows, used = 0;
    int rc = -1;

    if (res == NULL) goto out;
    rows = (size_t)PQntuples(res);
    if (count_endpoints(res) > MAX_ENDPOINTS) {
        snprintf(err, errlen, "more than %d endpoints", MAX_ENDPOINTS);
        goto out;
    }
    /* A row per active secret: what is allocated below stays bounded. */
    if (rows > MAX_ENDPOINTS * MAX_SECRETS_PER_ENDPOINT) {
        snprintf(err, errlen, "more than %d active secrets", MAX_ENDPOINTS * MAX_SECRETS_PER_ENDPOINT);
        goto out;
    }
    next.items = calloc(rows ? rows : 1, sizeof *next.items);
    /* Room for every key and its keyed HMAC state, plus alignment. */
    next.vault_len = (rows + t->n * MAX_SECRETS_PER_ENDPOINT + 1) *
                         (MAX_SECRET_LEN + sizeof(crypto_auth_hmacsha256_state)) +
                     _Alignof(crypto_auth_hmacsha256_state);
    next.vault = sodium_malloc(next.vault_len);
    if (next.items == NULL || next.vault == NULL) {
        snprintf(err, errlen, "out of memory loading endpoints");
        goto out;
    }
    for (size_t r = 0; r < rows; r++) {
        const char *id = PQgetvalue(res, (int)r, 0);
        struct endpoint *e = next.n ? &next.items[next.n - 1] : NULL;

        if (e == NULL || strcmp(e->id, id) != 0) {
            e = &next.items[next.n++];
            snprintf(e->id, sizeof e->id, "%s", id);
            snprintf(e->environment, sizeof e->environment, "%s", PQgetvalue(res, (int)r, 1));
            e->tolerance = atoi(PQgetvalue(res, (int)r, 2));
            e->enabled = PQgetvalue(res, (int)r, 3)[0] == 't';
        }
        if (PQgetisnull(res, (int)r, 4) || e->n_secrets + e->n_unopened == MAX_SECRETS_PER_ENDPOINT) continue;
        if (open_secret(mk, PQgetvalue(res, (int)r, 4), next.vault, next.vault_len, &used,
                        &e->secrets[e->n_secrets]) != 0) {
            e->unopened_ids[e->n_unopened++] = atoll(PQgetvalue(res, (int)r, 5));
            continue;
        }
        e->secret_ids[e->n_secrets++] = atoll(PQgetvalue(res, (int)r, 5));
    }
    for (size_t i = 0; i < next.n; i++) {
        /* Only SQL leaves an endpoint so (deploy.md, "Lost master key"): its deliveries get 503 without it. */
        if (next.items[i].enabled && next.items[i].n_secrets + next.items[i].n_unopened == 0)
            log_line(LOG_ERROR, "event=endpoint_without_secret endpoint=%s reason=\"no active secret; "
                     "`paddlehook endpoint rotate` gives it one\"", next.items[i].id);
        if (next.items[i].n_unopened == 0) continue;
        next.unreadable++;
        if (endpoints_find(t, next.items[i].id)) keep_previous(t, &next.items[i], next.vault, next.vault_len, &used);
        else log_line(LOG_ERROR, "event=endpoint_secret_unreadable endpoint=%s "
                      "reason=\"not sealed with the loaded master key\"", next.items[i].id);
    }
    if (prepare_secrets(&next, used) != 0) {
        snprintf(err, errlen, "internal error: the secrets vault is too small");
        goto out;
    }
    qsort(next.items, next.n, sizeof *next.items, by_id);
    sodium_mprotect_readonly(next.vault);
    endpoints_free(t);
    *t = next;
    memset(&next, 0, sizeof next);
    rc = 0;
out:
    endpoints_free(&next);
    PQclear(res);
    return rc;
}

const struct endpoint *endpoints_find(const struct endpoint_table *t, const char *id)
{
    struct endpoint key;
    if (t->items == NULL || strlen(id) >= sizeof key.id) return NULL;
    snprintf(key.id, sizeof key.id, "%s", id);
    return bsearch(&key, t->items, t->n, sizeof *t->items, by_id);
}

void endpoints_free(struct endpoint_table *t)
{
    free(t->items);
    if (t->vault) sodium_free(t->vault); /* sodium_free wipes before releasing */
    memset(t, 0, sizeof *t);
}
