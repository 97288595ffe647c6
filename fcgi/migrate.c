/* migrate.c - idempotent schema migrations, recorded in a table. */
#include "migrate.h"

#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "embedded.h"

#define MIGRATE_LOCK_KEY "hashtext('paddlehook.migrate')"
#define MIGRATE_LOCK "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")"
#define MIGRATE_TRY_LOCK "SELECT pg_try_advisory_lock(" MIGRATE_LOCK_KEY ")"
/* Who holds it: a bigint advisory key is split into classid (high half) and objid. */
#define MIGRATE_LOCK_HOLDER                                                                   \
    "SELECT coalesce(string_agg(pid::text, ','), '?') FROM pg_locks WHERE locktype = 'advisory' AND granted " \
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "                       \
    "AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = " MIGRATE_LOCK_KEY "::bigint"
/* Waiting for the lock, or for deliveries in flight (0012 sleeps up to 5 s),
 * a database's or role's statement_timeout must not cut migrate off. */
#define MIGRATE_NO_TIMEOUT "SET statement_timeout = 0"
#define MIGRATE_UNLOCK "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"
#define MIGRATE_BOOTSTRAP                                                        \
    "SET client_min_messages = warning;"                                         \
    "CREATE SCHEMA IF NOT EXISTS paddle;"                                        \
    "CREATE TABLE IF NOT EXISTS paddle.schema_migrations ("                      \
    " version text PRIMARY KEY,"                                                 \
    " applied_at timestamptz NOT NULL DEFAULT now());"                           \
    "SET client_min_messages = notice" /* what a migration says is logged */
/* Whatever the database's or role's default: a migration that waits for
 * deliveries in flight must see what they commit while it waits. */
/* Who owns schema paddle, if it exists, and whether this session's role may act as that owner. */
#define MIGRATE_OWNER                                                                         \
    "SELECT pg_catalog.quote_ident(r.rolname), pg_catalog.quote_ident(current_user), "       \
    "pg_catalog.pg_has_role(n.nspowner, 'MEMBER') "                                            \
    "FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'paddle'"
#define MIGRATE_RECORDED "SELECT EXISTS (SELECT FROM paddle.schema_migrations WHERE version = $1)"

static int is_applied(PGconn *conn, const char *version, int *applied, char *err, size_t errlen)
{
    const char *params[1] = {version};
    PGresult *res = PQexecParams(conn, "SELECT 1 FROM paddle.schema_migrations WHERE version = $1",
                                 1, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK;

    if (ok) *applied = PQntuples(res) > 0;
    else db_error_line(conn, res, err, errlen);
    PQclear(res);
    return ok ? 0 : -1;
}

static int apply_one(PGconn *conn, const char *conninfo, const struct embedded_file *m, char *err,
                     size_t errlen)
{
    const char *params[1] = {m->name};
    PGresult *res = NULL;
    char why[512];
    int rc = -1;
    enum db_commit_outcome outcome;

    if (db_exec(conn, DB_BEGIN_READ_COMMITTED, why, sizeof why) != 0) goto fail;
    if (db_exec(conn, m->text, why, sizeof why) != 0) goto fail;
    res = PQexecParams(conn, "INSERT INTO paddle.schema_migrations (version) VALUES ($1)", 1, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        db_error_line(conn, res, why, sizeof why);
        goto fail;
    }
    outcome = db_commit(conn, conninfo, &(struct db_change){MIGRATE_RECORDED, 1, {m->name}}, why, sizeof why);
    if (outcome == DB_NOT_COMMITTED) goto fail;
    if (outcome == DB_COMMIT_UNKNOWN) {
        snprintf(err, errlen, "migration %s may or may not have been applied (%s); run migrate again, it "
                 "applies only what is missing", m->name, why);
        goto out;
    }
    rc = 0;
    goto out;
fail:
    snprintf(err, errlen, "migration %s failed: %s", m->name, why);
    if (PQtransactionStatus(conn) != PQTRANS_IDLE) PQclear(PQexec(conn, "ROLLBACK")); /* a failed COMMIT ended it */
out:
    PQclear(res);
    return rc;
}

/* The migration lock; when another session holds it (another migrate, or
 * one whose client was killed and whose transaction has not ended yet), says
 * so and who before waiting for it. */
static int take_lock(PGconn *conn, char *why, size_t whylen)
{
    PGresult *tried = db_query(conn, MIGRATE_NO_TIMEOUT "; " MIGRATE_TRY_LOCK, why, whylen), *holder = NULL;
    int rc = tried ? 0 : -1;

    if (tried && strcmp(PQgetvalue(tried, 0, 0), "t") != 0) {
        holder = db_query(conn, MIGRATE_LOCK_HOLDER, why, whylen);
        log_line(LOG_WARN, "event=migrate_waiting holder_pid=%s reason=\"another session holds the migration "
                 "lock; waiting for it\"", holder ? PQgetvalue(holder, 0, 0) : "?");
        rc = db_exec(conn, MIGRATE_LOCK, why, whylen);
    }
    PQclear(tried);
    PQclear(holder);
    return rc;
}

/* A role that does not own the schema (the workers', say) fails on its
 * first statement with a message about something else (CREATE on the
 * database): say what is wrong instead. */
static int check_owner(PGconn *conn, char *err, size_t errlen)
{
    char why[512];
    PGresult *res = db_query(conn, MIGRATE_OWNER, why, sizeof why);
    int rc = -1;

    if (res == NULL) snprintf(err, errlen, "cannot read who owns schema paddle: %s", why);
    else if (PQntuples(res) == 0 || PQgetvalue(res, 0, 2)[0] == 't') rc = 0;
    else
        snprintf(err, errlen, "migrate runs as the role that owns schema paddle, %s; this connection's role is %s",
                 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
    PQclear(res);
    return rc;
}

int migrate_apply(PGconn *conn, const char *conninfo, unsigned *applied, char *err, size_t errlen)
{
    char why[512];
    int rc = -1;

    *applied = 0;
    if (check_owner(conn, err, errlen) != 0) return -1;
    if (take_lock(conn, why, sizeof why) != 0) {
        snprintf(err, errlen, "cannot take the migration lock: %s", why);
        return -1;
    }
    if (db_exec(conn, MIGRATE_BOOTSTRAP, why, sizeof why) != 0) {
        snprintf(err, errlen, "cannot create paddle.schema_migrations: %s", why);
        goto out;
    }
    for (unsigned i = 0; i < migrations_count; i++) {
        int done = 0;
        if (is_applied(conn, migrations[i].name, &done, why, sizeof why) != 0) {
            snprintf(err, errlen, "cannot read paddle.schema_migrations: %s", why);
            goto out;
        }
        if (done) continue;
        if (apply_one(conn, conninfo, &migrations[i], err, errlen) != 0) goto out;
        log_line(LOG_INFO, "event=migration_applied version=%s", migrations[i].name);
        (*applied)++;
        /* Its commit was found to have taken place after the answer was lost. */
        if (PQstatus(conn) != CONNECTION_OK) {
            snprintf(err, errlen, "the connection was lost after migration %s was applied; run migrate again, it "
                     "applies only what is missing", migrations[i].name);
            goto out;
        }
    }
    rc = 0;
out:
    db_exec(conn, MIGRATE_UNLOCK, why, sizeof why);
    return rc;
}
