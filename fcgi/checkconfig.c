/* checkconfig.c - `paddlehook check-config`: the configuration, key file,
 * database, schema and secrets checked in plain words, and a dry run of
 * deliveries as the connection's role, rolled back. */
#include "checkconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "db.h"
#include "embedded.h"
#include "limits.h"
#include "masterkey.h"
#include "serve.h"
#include "shown.h"
#include "store.h"

#define SQL_APPLIED "SELECT version FROM paddle.schema_migrations"
#define SQL_ACTIVE_SECRETS                                                                    \
    "SELECT endpoint_id, encode(sealed, 'hex') FROM paddle.endpoint_secrets WHERE retired_at IS NULL"
/* An endpoint can be left so by SQL only (deploy.md's lost master key): every delivery to it gets 503. */
#define SQL_ENDPOINTS_WITHOUT_SECRET                                                          \
    "SELECT string_agg(e.id, ', ' ORDER BY e.id) FROM paddle.endpoints e WHERE e.enabled AND NOT EXISTS " \
    "(SELECT FROM paddle.endpoint_secrets s WHERE s.endpoint_id = e.id AND s.retired_at IS NULL)"
#define CHECK_ENDPOINT "ep_paddlehook_check_config"
/* Schemas every role may create objects in (public before PostgreSQL 15). */
#define SQL_OPEN_SCHEMAS                                                                      \
    "SELECT string_agg(quote_ident(nspname), ', ' ORDER BY nspname) FROM pg_catalog.pg_namespace "   \
    "WHERE pg_catalog.has_schema_privilege('public', oid, 'CREATE')"
/* paddle's functions that run with their owner's rights and that PUBLIC may
 * call: the migrations revoke that from each, and a restore without the
 * roles the dump grants to loses the revoke with the failed grant. */
#define SQL_PUBLIC_DEFINERS                                                                   \
    "SELECT string_agg(p.oid::pg_catalog.regprocedure::text, ', ' ORDER BY p.oid::pg_catalog.regprocedure::text) " \
    "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "      \
    "WHERE n.nspname = 'paddle' AND p.prosecdef "                                              \
    "AND pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')"
/* A rebuild (reproject) holds the state tables: say so after a while instead of waiting for it. */
#define SQL_DRY_RUN_BEGIN                                                                     \
    DB_BEGIN_READ_COMMITTED "; SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '15s'"

/* check-config's dry run: what a worker does with deliveries, in a
 * transaction that is rolled back. One event of each projected entity (with
 * items, so that item rows are written), then a live event replacing a
 * sandbox one with its id. {event_id, event_type, environment, payload,
 * expected result}. */
static const char *const dry_run[][5] = {
    {"evt_paddlehook_check_1", "customer.created", "live",
     "{\"data\":{\"id\":\"ctm_paddlehook_check\",\"email\":\"check@example.com\",\"status\":\"active\","
     "\"name\":\"Ch\\u00e9ck \\u65e5\\u672c\"}}",
     "stored"},
    {"evt_paddlehook_check_2", "subscription.created", "live",
     "{\"data\":{\"id\":\"sub_paddlehook_check\",\"status\":\"active\",\"customer_id\":\"ctm_paddlehook_check\","
     "\"currency_code\":\"USD\",\"items\":[{\"status\":\"active\",\"quantity\":1,\"recurring\":true,"
     "\"price\":{\"id\":\"pri_paddlehook_check\",\"unit_price\":{\"amount\":\"1000\",\"currency_code\":\"USD\"},"
     "\"billing_cycle\":{\"interval\":\"month\",\"frequency\":1}}}]}}",
     "stored"},
    {"evt_paddlehook_check_3", "transaction.completed", "live",
     "{\"data\":{\"id\":\"txn_paddlehook_check\",\"status\":\"completed\",\"customer_id\":\"ctm_paddlehook_check\","
     "\"currency_code\":\"USD\",\"items\":[{\"price\":{\"id\":\"pri_paddlehook_check\"},\"quantity\":1}],"
     "\"details\":{\"totals\":{\"total\":\"1000\",\"currency_code\":\"USD\"},"
     "\"line_items\":[{\"price_id\":\"pri_paddlehook_check\",\"quantity\":1,\"totals\":{\"total\":\"1000\"}}]}}}",
     "stored"},
    {"evt_paddlehook_check_4", "adjustment.created", "live",
     "{\"data\":{\"id\":\"adj_paddlehook_check\",\"action\":\"refund\",\"status\":\"approved\","
     "\"transaction_id\":\"txn_paddlehook_check\",\"currency_code\":\"USD\","
     "\"items\":[{\"item_id\":\"txnitm_paddlehook_check\",\"type\":\"full\",\"amount\":\"1000\"}]}}",
     "stored"},
    {"evt_paddlehook_check_5", "address.created", "live",
     "{\"data\":{\"id\":\"add_paddlehook_check\",\"customer_id\":\"ctm_paddlehook_check\","
     "\"country_code\":\"US\",\"status\":\"active\"}}",
     "stored"},
    {"evt_paddlehook_check_6", "business.created", "live",
     "{\"data\":{\"id\":\"biz_paddlehook_check\",\"customer_id\":\"ctm_paddlehook_check\","
     "\"name\":\"Check Ltd\",\"status\":\"active\"}}",
     "stored"},
    {"evt_paddlehook_check_7", "product.created", "live",
     "{\"data\":{\"id\":\"pro_paddlehook_check\",\"name\":\"Check\",\"status\":\"active\"}}", "stored"},
    {"evt_paddlehook_check_8", "price.created", "live",
     "{\"data\":{\"id\":\"pri_paddlehook_check\",\"product_id\":\"pro_paddlehook_check\","
     "\"unit_price\":{\"amount\":\"1000\",\"currency_code\":\"USD\"}}}",
     "stored"},
    {"evt_paddlehook_check_9", "discount.created", "live",
     "{\"data\":{\"id\":\"dsc_paddlehook_check\",\"code\":\"CHECK\",\"type\":\"percentage\","
     "\"amount\":\"10\"}}",
     "stored"},
    {"evt_paddlehook_check_10", "customer.updated", "sandbox",
     "{\"data\":{\"id\":\"ctm_paddlehook_check_sandbox\"}}", "stored"},
    {"evt_paddlehook_check_10", "customer.updated", "live",
     "{\"data\":{\"id\":\"ctm_paddlehook_check_sandbox\"}}", "replaced_sandbox"},
};

/* One line per check: its verdict, and the reason in plain words. The
 * detail may quote the database (names, ids, errors): shown safe. */
static void say(const char *verdict, const char *what, const char *detail)
{
    printf("%-8s %s%s", verdict, what, detail && *detail ? ": " : "");
    if (detail) shown_put(stdout, detail);
    putchar('\n');
}

/* "ok" or "PROBLEM": 1 for a problem, to be counted. */
static int check(int ok, const char *what, const char *detail)
{
    say(ok ? "ok" : "PROBLEM", what, detail);
    return ok ? 0 : 1;
}

static int check_secrets(PGconn *conn, const struct masterkey *mk)
{
    char err[512], detail[600];
    PGresult *res = db_query(conn, SQL_ACTIVE_SECRETS, err, sizeof err);
    int bad = 0, n;

    if (res == NULL) return check(0, "endpoint secrets readable", err);
    n = PQntuples(res);
    for (int r = 0; r < n; r++) {
        unsigned char plain[MAX_SECRET_LEN];
        size_t len = 0;
        if (masterkey_open_hex(mk, PQgetvalue(res, r, 1), plain, sizeof plain, &len) != 0) bad++;
        sodium_memzero(plain, sizeof plain);
    }
    PQclear(res);
    snprintf(detail, sizeof detail, bad ? "%d of %d active secrets were sealed with another master key"
                                        : "%d active secrets open with this master key", bad ? bad : n, n);
    return check(bad == 0, "endpoint secrets", detail);
}

/* The role serve connects as may not read the migration log (docs/security.md); the dry run below then
 * tells whether the schema serves deliveries. */
static int check_schema(PGconn *conn)
{
    char missing[512] = "";
    PGresult *res = PQexec(conn, SQL_APPLIED);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* Undefined table or schema: not migrated. Anything else (a lock
         * held, a timeout, a lost connection) is no sign of that. */
        int denied = state && strcmp(state, "42501") == 0;
        int absent = state && (strcmp(state, "42P01") == 0 || strcmp(state, "3F000") == 0);
        char why[300], detail[400];
        db_error_line(conn, res, why, sizeof why);
        snprintf(detail, sizeof detail, "cannot read paddle.schema_migrations: %s", why);
        PQclear(res);
        return denied   ? check(1, "schema", "this role may not read paddle.schema_migrations (the owner's); the "
                                             "deliveries check covers what serve needs")
               : absent ? check(0, "schema", "paddle.schema_migrations is missing: run `paddlehook migrate`")
                        : check(0, "schema", detail);
    }
    for (unsigned i = 0; i < migrations_count; i++) {
        int found = 0;
        for (int r = 0; r < PQntuples(res) && !found; r++) found = strcmp(PQgetvalue(res, r, 0), migrations[i].name) == 0;
        if (!found) {
            size_t used = strlen(missing);
            snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "", migrations[i].name);
        }
    }
    PQclear(res);
    if (*missing) {
        char detail[700];
        snprintf(detail, sizeof detail, "not applied: %s; run `paddlehook migrate`", missing);
        return check(0, "schema", detail);
    }
    return check(1, "schema", "every migration of this version is applied");
}

/* One check whose query names what is wrong (open to every role, say), or
 * NULL if nothing is: the problem names it twice, in the finding and in the
 * statement that mends it (problem[0] list problem[1] list problem[2]), or
 * once if problem[1] is NULL (problem[0] list problem[2]). */
static int check_lists_none(PGconn *conn, const char *what, const char *sql, const char *const problem[3],
                           const char *fine)
{
    char err[256], detail[2048];
    PGresult *res = db_query(conn, sql, err, sizeof err);
    const char *open = res && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0) : NULL;
    int ok;

    if (res == NULL) snprintf(detail, sizeof detail, "cannot ask the database: %s", err);
    else if (open && problem[1] == NULL) snprintf(detail, sizeof detail, "%s%s%s", problem[0], open, problem[2]);
    else if (open) snprintf(detail, sizeof detail, "%s%s%s%s%s", problem[0], open, problem[1], open, problem[2]);
    else snprintf(detail, sizeof detail, "%s", fine);
    ok = res != NULL && open == NULL;
    PQclear(res);
    return check(ok, what, detail);
}

/* A schema every role may create in lets any role put a function where a
 * session with the default search_path (psql, a BI tool) finds it before a
 * built-in, inside paddle's functions and views: PostgreSQL's own advice is
 * to revoke that (the default from PostgreSQL 15 on). */
static int check_open_schemas(PGconn *conn)
{
    static const char *const problem[3] = {
        "every role may create objects in ",
        ", which any session that searches it may run instead of a built-in: REVOKE CREATE ON SCHEMA ",
        " FROM PUBLIC"};
    return check_lists_none(conn, "schemas", SQL_OPEN_SCHEMAS, problem, "no schema is open to every role");
}

/* Every role that may use the schema (the worker's among them) could take
 * consumers' events or rewrite stored ones through such a function. */
static int check_public_definers(PGconn *conn)
{
    static const char *const problem[3] = {
        "every role may call ",
        (", which run with their owner's rights (a restore into a cluster without the roles the dump grants to "
         "drops these revokes): as the schema's owner, REVOKE EXECUTE ON FUNCTION "),
        " FROM PUBLIC"};
    return check_lists_none(conn, "function grants", SQL_PUBLIC_DEFINERS, problem,
                           "paddle's functions with their owner's rights are not granted to PUBLIC");
}

/* Only SQL leaves an enabled endpoint without a secret (deploy.md's lost
 * master key); every delivery to it then gets 503 secrets_unavailable. */
static int check_endpoints_have_secrets(PGconn *conn)
{
    static const char *const problem[3] = {
        "enabled without an active secret, so every delivery to it gets 503 secrets_unavailable: ", NULL,
        "; give each a secret with `paddlehook endpoint rotate ID` (the secret on stdin), or disable it"};
    return check_lists_none(conn, "endpoints", SQL_ENDPOINTS_WITHOUT_SECRET, problem,
                           "every enabled endpoint has an active secret");
}

/* Runs the dry run as this connection's role and rolls it back: a grant
 * missing for serve's role, or a schema serve cannot use, fails here instead
 * of on Paddle's deliveries. */
static int check_deliveries(PGconn *conn)
{
    char err[512] = "", occurred_at[32];
    const char *failed = NULL;
    time_t now = time(NULL);
    struct tm tm;

    strftime(occurred_at, sizeof occurred_at, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    if (db_exec(conn, SQL_DRY_RUN_BEGIN, err, sizeof err) != 0) goto out;
    for (size_t i = 0; i < sizeof dry_run / sizeof dry_run[0] && failed == NULL; i++) {
        /* As store.c sends it; no notification id. */
        const char *values[STORE_INGEST_PARAMS] = {dry_run[i][0], dry_run[i][1], occurred_at, NULL,
                                                   CHECK_ENDPOINT, dry_run[i][2], dry_run[i][3]};
        PGresult *res = PQexecParams(conn, STORE_INGEST_SQL, STORE_INGEST_PARAMS, NULL, values, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            db_error_line(conn, res, err, sizeof err);
            failed = dry_run[i][1];
        } else if (strcmp(PQgetvalue(res, 0, 0), dry_run[i][4]) != 0) {
            snprintf(err, sizeof err, "paddle.ingest_event answered %s, not %s", PQgetvalue(res, 0, 0),
                     dry_run[i][4]);
            failed = dry_run[i][1];
        }
        PQclear(res);
    }
out:
    PQclear(PQexec(conn, "ROLLBACK"));
    if (*err) {
        char detail[700];
        snprintf(detail, sizeof detail, "%s%s%s", failed ? failed : "", failed ? ": " : "", err);
        return check(0, "deliveries", detail);
    }
    return check(1, "deliveries", "this role can store and project every entity type (a dry run, rolled back)");
}

/* The directory a file at path is created in: "/" for /x, "." for x. */
static void parent_dir(const char *path, char *dir, size_t cap)
{
    char *slash;

    snprintf(dir, cap, "%s", path);
    slash = strrchr(dir, '/');
    if (slash == NULL) snprintf(dir, cap, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
}

int checkconfig_run(const struct config *cfg)
{
    struct masterkey mk;
    char detail[600];
    PGconn *conn = NULL;
    const char *refusal = serve_refusal();
    int problems = 0, have_key;

    snprintf(detail, sizeof detail, "%s", cfg->config_file ? cfg->config_file : "none (defaults, environment, options)");
    check(1, "config file", detail);
    have_key = masterkey_load(cfg->key_file, &mk, detail, sizeof detail) == 0;
    problems += check(have_key, "master key", have_key ? cfg->key_file : detail);
    problems += check(refusal == NULL, "listen",
                      refusal       ? refusal
                      : cfg->listen ? cfg->listen
                                    : "the socket serve inherits (fd 3 from a systemd socket unit, else fd 0 as "
                                      "spawn-fcgi hands it over)");
    if (cfg->listen_path) {
        char dir[MAX_URI_LEN];
        parent_dir(cfg->listen_path, dir, sizeof dir);
        snprintf(detail, sizeof detail, "%s %s", dir, access(dir, W_OK) == 0 ? "is writable" : strerror(errno));
        problems += check(access(dir, W_OK) == 0, "socket directory", detail);
        /* nginx needs write permission on the socket, and runs as a user of its own. */
        snprintf(detail, sizeof detail, "%04o%s", cfg->socket_mode,
                 cfg->socket_mode & 022 ? ""
                                        : ": only serve's own user may connect, so nginx, running as another "
                                          "user, would get 503 worker_unavailable (0660 with nginx in serve's "
                                          "group)");
        say(cfg->socket_mode & 022 ? "ok" : "WARN", "socket mode", detail);
    }
    {
        char dir[MAX_URI_LEN];
        int writable;
        parent_dir(cfg->stats_file, dir, sizeof dir);
        writable = access(dir, W_OK) == 0;
        snprintf(detail, sizeof detail, "%s: %s", cfg->stats_file,
                 writable ? "can be created"
                          : "its directory is not writable; metrics stay private to serve and `status` cannot read "
                            "them");
        say(writable ? "ok" : "WARN", "stats file", detail);
    }
    conn = db_connect_command(cfg->db, detail, sizeof detail);
    problems += check(conn != NULL, "database connection", conn ? PQdb(conn) : detail);
    if (conn) {
        problems += check_schema(conn);
        problems += check_open_schemas(conn);
        problems += check_public_definers(conn);
        problems += check_endpoints_have_secrets(conn);
        if (have_key) problems += check_secrets(conn, &mk);
        problems += check_deliveries(conn);
    }
    PQfinish(conn);
    masterkey_wipe(&mk);
    printf("%s\n", problems ? "configuration has problems" : "configuration is good");
    return problems ? 1 : 0;
}
