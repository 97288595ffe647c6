/* rekey.c - `paddlehook rekey`: every endpoint secret re-sealed from the old
 * master key to the new one, in one transaction. */
#include "rekey.h"

#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "db.h"
#include "endpoint_cmd.h"
#include "limits.h"
#include "masterkey.h"

/* Functions of sql/migrations/0021_endpoint_functions.sql; the secrets table's
 * trigger tells running workers when the transaction commits. */
#define SQL_SECRETS "SELECT id, sealed_hex FROM paddle.lock_endpoint_secrets(true)"
#define SQL_RESEAL "SELECT paddle.endpoint_reseal_secret($1::bigint, $2::bytea)"

/* Re-seals every secret; proof_hex gets the last one as stored, to look for
 * after a lost answer to the COMMIT. */
static int reseal(PGconn *conn, const struct masterkey *old_key, const struct masterkey *new_key, int *count,
                  char proof_hex[ENDPOINT_SEALED_HEX_MAX])
{
    char err[512];
    PGresult *res = db_query(conn, SQL_SECRETS, err, sizeof err);
    int rc = -1;

    if (res == NULL) {
        fprintf(stderr, "paddlehook: %s\n", err);
        return -1;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        unsigned char sealed[MAX_SECRET_LEN + MASTERKEY_SEAL_OVERHEAD], plain[MAX_SECRET_LEN];
        size_t len = 0;
        PGresult *up;
        int ok;

        if (masterkey_open_hex(old_key, PQgetvalue(res, r, 1), plain, sizeof plain, &len) != 0) {
            fprintf(stderr, "paddlehook: secret %s was not sealed with the old key; nothing changed\n",
                    PQgetvalue(res, r, 0));
            goto out;
        }
        masterkey_seal(new_key, plain, len, sealed, sizeof sealed);
        sodium_memzero(plain, sizeof plain);
        sodium_bin2hex(proof_hex, ENDPOINT_SEALED_HEX_MAX, sealed, len + MASTERKEY_SEAL_OVERHEAD);
        {
            const char *values[2] = {PQgetvalue(res, r, 0), (const char *)sealed};
            const int lengths[2] = {0, (int)(len + MASTERKEY_SEAL_OVERHEAD)};
            const int formats[2] = {0, 1};
            up = PQexecParams(conn, SQL_RESEAL, 2, NULL, values, lengths, formats, 0);
        }
        ok = PQresultStatus(up) == PGRES_TUPLES_OK;
        if (!ok) db_error_line(conn, up, err, sizeof err);
        PQclear(up);
        if (!ok) {
            fprintf(stderr, "paddlehook: %s\n", err);
            goto out;
        }
        (*count)++;
    }
    rc = 0;
out:
    PQclear(res);
    return rc;
}

int rekey_run(const struct config *cfg)
{
    struct masterkey old_key, new_key;
    char err[512] = "";
    PGconn *conn = NULL;
    int count = 0, rc = 1;
    enum db_commit_outcome outcome = DB_NOT_COMMITTED;
    char proof_hex[ENDPOINT_SEALED_HEX_MAX] = "";
    struct db_change change = {ENDPOINT_SECRET_STORED_SQL, 1, {proof_hex}};

    memset(&old_key, 0, sizeof old_key);
    memset(&new_key, 0, sizeof new_key);
    if (cfg->old_key_file == NULL || cfg->key_file == NULL) {
        fprintf(stderr, "usage: paddlehook rekey --old-key-file OLD --key-file NEW\n");
        return 2;
    }
    if (masterkey_load(cfg->old_key_file, &old_key, err, sizeof err) != 0 ||
        masterkey_load(cfg->key_file, &new_key, err, sizeof err) != 0) {
        fprintf(stderr, "paddlehook: %s\n", err);
        goto out;
    }
    if ((conn = db_connect_or_say(cfg->db)) == NULL) goto out;
    /* One transaction: every secret moves to the new key, or none does. */
    if (db_exec(conn, DB_BEGIN_READ_COMMITTED, err, sizeof err) == 0 &&
        reseal(conn, &old_key, &new_key, &count, proof_hex) == 0)
        outcome = db_commit(conn, cfg->db, count > 0 ? &change : NULL, err, sizeof err);
    else
        PQclear(PQexec(conn, "ROLLBACK"));
    if (outcome == DB_NOT_COMMITTED) {
        if (*err) fprintf(stderr, "paddlehook: %s\n", err);
        fprintf(stderr, "paddlehook: rekey failed; every secret is still sealed with the old key\n");
        goto out;
    }
    if (outcome == DB_COMMIT_UNKNOWN) {
        fprintf(stderr, "paddlehook: %s\n", err);
        fprintf(stderr, "paddlehook: the rekey may or may not have taken effect: keep both key files, and "
                        "run `paddlehook check-config --key-file %s` once the database answers: it says "
                        "whether the stored secrets open with the new key\n", cfg->key_file);
        goto out;
    }
    printf("re-sealed %d endpoint secret(s) with %s; put the new key where serve's key_file points and "
           "reload serve (SIGHUP, systemctl reload paddlehook); running workers keep verifying with the "
           "secrets they hold until then\n", count, cfg->key_file);
    rc = 0;
out:
    PQfinish(conn);
    masterkey_wipe(&old_key);
    masterkey_wipe(&new_key);
    return rc;
}
