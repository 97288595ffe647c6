/* admin.c - the operator's commands: status, check-config, rekey.
 *
 * status joins what only the database knows (endpoints) with what only the
 * running server knows (every outcome, including requests that never
 * reached the database, from the shared stats file).
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "db.h"
#include "embedded.h"
#include "endpoint_cmd.h"
#include "limits.h"
#include "masterkey.h"
#include "stats.h"
#include "store.h"

#define SQL_ENDPOINTS                                                                         \
    "SELECT e.id, e.name, e.environment, CASE WHEN e.enabled THEN 'enabled' ELSE 'disabled' END, " \
    "count(s.id) FROM paddle.endpoints e LEFT JOIN paddle.endpoint_secrets s "               \
    "ON s.endpoint_id = e.id AND s.retired_at IS NULL GROUP BY e.id ORDER BY e.created_at, e.id"
#define SQL_LAST_EVENTS                                                                       \
    "SELECT endpoint_id, to_char(max(received_at) AT TIME ZONE 'UTC', "                       \
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM paddle.payment_events GROUP BY endpoint_id"
#define SQL_CONSUMERS                                                                         \
    "SELECT consumer, queued, coalesce(floor(extract(epoch FROM oldest_queued_at))::bigint, 0) " \
    "FROM paddle.consumer_backlog ORDER BY consumer"
/* The partial index payment_events_projection_error_idx makes both parts cheap. */
#define SQL_PROJECTION_ERRORS                                                                 \
    "SELECT (SELECT count(*) FROM paddle.payment_events WHERE projection_error IS NOT NULL), " \
    "e.event_id, e.event_type, floor(extract(epoch FROM e.received_at))::bigint FROM (SELECT) one "   \
    "LEFT JOIN LATERAL (SELECT event_id, event_type, received_at FROM paddle.payment_events "   \
    "WHERE projection_error IS NOT NULL ORDER BY received_at DESC LIMIT 1) e ON true"
#define SQL_SECRETS "SELECT id, encode(sealed, 'hex') FROM paddle.endpoint_secrets ORDER BY id FOR UPDATE"
#define SQL_RESEAL "UPDATE paddle.endpoint_secrets SET sealed = $2::bytea WHERE id = $1"
#define SQL_NOTIFY "SELECT pg_notify('" DB_ENDPOINTS_CHANNEL "', 'rekey')"
#define SQL_APPLIED "SELECT version FROM paddle.schema_migrations"
#define SQL_ACTIVE_SECRETS                                                                    \
    "SELECT endpoint_id, encode(sealed, 'hex') FROM paddle.endpoint_secrets WHERE retired_at IS NULL"
#define CHECK_ENDPOINT "ep_paddlehook_check_config"
/* A rebuild (reproject) holds the state tables: say so after a while instead of waiting for it. */
#define SQL_DRY_RUN_BEGIN                                                                     \
    "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '15s'"

/* check-config's dry run: what a worker does with deliveries, in a
 * transaction that is rolled back. One event of each projected entity (with
 * items, so that item rows are written), then a live event replacing a
 * sandbox one with its id. {event_id, event_type, environment, payload,
 * expected result}. */
static const char *const dry_run[][5] = {
    {"evt_paddlehook_check_1", "customer.created", "live",
     "{\"data\":{\"id\":\"ctm_paddlehook_check\",\"email\":\"check@example.com\",\"status\":\"active\"}}",
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

static PGresult *query(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) return res;
    db_error_line(conn, res, err, errlen);
    PQclear(res);
    return NULL;
}

static PGconn *connect_or_say(const struct config *cfg)
{
    char err[512];
    PGconn *conn = db_connect(cfg->db, err, sizeof err);
    if (conn == NULL) fprintf(stderr, "paddlehook: cannot connect to the database: %s\n", err);
    return conn;
}

static void format_ago(long long t, char *buf, size_t cap)
{
    long long ago = (long long)time(NULL) - t;
    struct tm tm;
    time_t tt = (time_t)t;
    char when[32];

    gmtime_r(&tt, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (ago < 120) snprintf(buf, cap, "%s (%llds ago)", when, ago);
    else if (ago < 7200) snprintf(buf, cap, "%s (%lldm ago)", when, ago / 60);
    else snprintf(buf, cap, "%s (%lldh ago)", when, ago / 3600);
}

/* The application's consumer queues (docs/consumers.md), when there are any:
 * a queue whose oldest row keeps ageing has a consumer that stopped claiming. */
static void print_consumers(PGconn *conn)
{
    char err[512];
    PGresult *res = query(conn, SQL_CONSUMERS, err, sizeof err);

    if (res == NULL) {
        printf("\nnote: consumer queues not shown: %s\n", err);
        return;
    }
    int width = (int)strlen("CONSUMER");
    for (int r = 0; r < PQntuples(res); r++)
        if (PQgetlength(res, r, 0) > width) width = PQgetlength(res, r, 0);
    if (PQntuples(res) > 0) printf("\n%-*s %10s  %s\n", width, "CONSUMER", "QUEUED", "OLDEST QUEUED");
    for (int r = 0; r < PQntuples(res); r++) {
        char when[64] = "-";
        long long oldest = strtoll(PQgetvalue(res, r, 2), NULL, 10);
        if (oldest > 0) format_ago(oldest, when, sizeof when);
        printf("%-*s %10s  %s\n", width, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), when);
    }
    PQclear(res);
}

/* Stored events whose projection failed for a reason in their data: the state
 * tables lack what they carried until someone mends it and replays them. */
static void print_projection_errors(PGconn *conn)
{
    char err[512], when[64] = "-";
    PGresult *res = query(conn, SQL_PROJECTION_ERRORS, err, sizeof err);

    if (res == NULL) {
        printf("\nnote: projection errors not shown: %s\n", err);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "0") == 0) {
        printf("\nprojection errors: none\n");
    } else {
        format_ago(strtoll(PQgetvalue(res, 0, 3), NULL, 10), when, sizeof when);
        printf("\nprojection errors: %s stored event(s) missing from the state tables; newest %s %s, received %s\n"
               "  the errors: paddle.payment_events.projection_error; once mended: SELECT paddle.reproject_event(event_id)\n",
               PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), when);
    }
    PQclear(res);
}

int admin_status(const struct config *cfg)
{
    struct stats *st = stats_open_readonly(cfg->stats_file);
    PGresult *eps = NULL, *last = NULL;
    char err[512];
    PGconn *conn = connect_or_say(cfg);
    int rc = 1;

    if (conn == NULL) goto out;
    if ((eps = query(conn, SQL_ENDPOINTS, err, sizeof err)) == NULL) {
        fprintf(stderr, "paddlehook: %s\n", err);
        goto out;
    }
    /* Without the live counters, fall back to the event log for "last event". */
    if (st == NULL && (last = query(conn, SQL_LAST_EVENTS, err, sizeof err)) == NULL) {
        fprintf(stderr, "paddlehook: %s\n", err);
        goto out;
    }
    if (st == NULL)
        printf("note: no live counters at %s (is `paddlehook serve` running with this --stats-file?);\n"
               "      showing the last stored event only\n\n", cfg->stats_file);
    printf("%-24s %-16s %-8s %-8s %-7s %-36s %-13s %-13s %-13s %s\n", "ENDPOINT", "NAME", "ENV", "STATE",
           "SECRETS", "LAST EVENT STORED", "STORED 1h/1d", "DUPS 1h/1d", "SIG FAIL 1h/1d", "ERRORS 1h/1d");
    for (int r = 0; r < PQntuples(eps); r++) {
        const char *id = PQgetvalue(eps, r, 0);
        struct stats_window hour = {0}, day = {0};
        char when[64] = "-", c1[32] = "-", c2[32] = "-", c3[32] = "-", c4[32] = "-";
        long long last_at = 0;

        if (st && stats_endpoint_windows(st, id, &hour, &day, &last_at) == 0) {
            if (last_at) format_ago(last_at, when, sizeof when);
            snprintf(c1, sizeof c1, "%llu/%llu", hour.stored, day.stored);
            snprintf(c2, sizeof c2, "%llu/%llu", hour.duplicate, day.duplicate);
            snprintf(c3, sizeof c3, "%llu/%llu", hour.signature_failures, day.signature_failures);
            snprintf(c4, sizeof c4, "%llu/%llu", hour.other_errors, day.other_errors);
        } else if (st) {
            snprintf(c1, sizeof c1, "0/0");
            snprintf(c2, sizeof c2, "0/0");
            snprintf(c3, sizeof c3, "0/0");
            snprintf(c4, sizeof c4, "0/0");
        }
        for (int l = 0; last && l < PQntuples(last); l++)
            if (strcmp(PQgetvalue(last, l, 0), id) == 0) snprintf(when, sizeof when, "%s", PQgetvalue(last, l, 1));
        printf("%-24s %-16s %-8s %-8s %-7s %-36s %-13s %-13s %-13s %s\n", id, PQgetvalue(eps, r, 1),
               PQgetvalue(eps, r, 2), PQgetvalue(eps, r, 3), PQgetvalue(eps, r, 4), when, c1, c2, c3, c4);
    }
    print_consumers(conn);
    print_projection_errors(conn);
    rc = 0;
out:
    PQclear(last);
    PQclear(eps);
    PQfinish(conn);
    stats_close(st);
    return rc;
}

/* One line per check: "ok" or "problem", and the reason in plain words. */
static int check(int ok, const char *what, const char *detail)
{
    printf("%-8s %s%s%s\n", ok ? "ok" : "PROBLEM", what, detail && *detail ? ": " : "", detail ? detail : "");
    return ok ? 0 : 1;
}

static int check_secrets(PGconn *conn, const struct masterkey *mk)
{
    char err[512], detail[600];
    PGresult *res = query(conn, SQL_ACTIVE_SECRETS, err, sizeof err);
    int bad = 0, n;

    if (res == NULL) return check(0, "endpoint secrets readable", err);
    n = PQntuples(res);
    for (int r = 0; r < n; r++) {
        unsigned char sealed[MAX_SECRET_LEN + MASTERKEY_SEAL_OVERHEAD], plain[MAX_SECRET_LEN];
        const char *hex = PQgetvalue(res, r, 1);
        size_t sealed_len = 0, len = 0;
        if (sodium_hex2bin(sealed, sizeof sealed, hex, strlen(hex), NULL, &sealed_len, NULL) != 0 ||
            masterkey_open(mk, sealed, sealed_len, plain, sizeof plain, &len) != 0)
            bad++;
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
        int denied = state && strcmp(state, "42501") == 0;
        PQclear(res);
        return denied ? check(1, "schema", "this role may not read paddle.schema_migrations (the owner's); the "
                                           "deliveries check covers what serve needs")
                      : check(0, "schema", "paddle.schema_migrations is missing: run `paddlehook migrate`");
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

int admin_check_config(const struct config *cfg)
{
    struct masterkey mk;
    char detail[600];
    PGconn *conn = NULL;
    int problems = 0, have_key;

    snprintf(detail, sizeof detail, "%s", cfg->config_file ? cfg->config_file : "none (defaults, environment, options)");
    check(1, "config file", detail);
    have_key = masterkey_load(cfg->key_file, &mk, detail, sizeof detail) == 0;
    problems += check(have_key, "master key", have_key ? cfg->key_file : detail);
    if (cfg->listen && strncmp(cfg->listen, "unix:", 5) == 0) {
        char dir[MAX_URI_LEN];
        parent_dir(cfg->listen + 5, dir, sizeof dir);
        snprintf(detail, sizeof detail, "%s %s", dir, access(dir, W_OK) == 0 ? "is writable" : strerror(errno));
        problems += check(access(dir, W_OK) == 0, "socket directory", detail);
    }
    {
        char dir[MAX_URI_LEN];
        parent_dir(cfg->stats_file, dir, sizeof dir);
        snprintf(detail, sizeof detail, "%s: %s", cfg->stats_file,
                 access(dir, W_OK) == 0 ? "can be created" : "its directory is not writable; metrics stay private to serve and `status` cannot read them");
        check(1, "stats file", detail);
    }
    conn = db_connect(cfg->db, detail, sizeof detail);
    problems += check(conn != NULL, "database connection", conn ? PQdb(conn) : detail);
    if (conn) {
        problems += check_schema(conn);
        if (have_key) problems += check_secrets(conn, &mk);
        problems += check_deliveries(conn);
    }
    PQfinish(conn);
    masterkey_wipe(&mk);
    printf("%s\n", problems ? "configuration has problems" : "configuration is good");
    return problems ? 1 : 0;
}

static int reseal(PGconn *conn, const struct masterkey *old_key, const struct masterkey *new_key, int *count)
{
    char err[512];
    PGresult *res = db_exec(conn, ENDPOINT_SECRETS_LOCK_SQL, err, sizeof err) == 0
                        ? query(conn, SQL_SECRETS, err, sizeof err) : NULL;
    int rc = -1;

    if (res == NULL) {
        fprintf(stderr, "paddlehook: %s\n", err);
        return -1;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        unsigned char sealed[MAX_SECRET_LEN + MASTERKEY_SEAL_OVERHEAD], plain[MAX_SECRET_LEN];
        const char *hex = PQgetvalue(res, r, 1);
        size_t sealed_len = 0, len = 0;
        PGresult *up;
        int ok;

        if (sodium_hex2bin(sealed, sizeof sealed, hex, strlen(hex), NULL, &sealed_len, NULL) != 0 ||
            masterkey_open(old_key, sealed, sealed_len, plain, sizeof plain, &len) != 0) {
            fprintf(stderr, "paddlehook: secret %s was not sealed with the old key; nothing changed\n",
                    PQgetvalue(res, r, 0));
            goto out;
        }
        masterkey_seal(new_key, plain, len, sealed, sizeof sealed);
        sodium_memzero(plain, sizeof plain);
        {
            const char *values[2] = {PQgetvalue(res, r, 0), (const char *)sealed};
            const int lengths[2] = {0, (int)(len + MASTERKEY_SEAL_OVERHEAD)};
            const int formats[2] = {0, 1};
            up = PQexecParams(conn, SQL_RESEAL, 2, NULL, values, lengths, formats, 0);
        }
        ok = PQresultStatus(up) == PGRES_COMMAND_OK;
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

int admin_rekey(const struct config *cfg)
{
    struct masterkey old_key, new_key;
    char err[512];
    PGconn *conn = NULL;
    int count = 0, rc = 1;

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
    if ((conn = connect_or_say(cfg)) == NULL) goto out;
    /* One transaction: every secret moves to the new key, or none does. */
    if (db_exec(conn, "BEGIN", err, sizeof err) != 0 || reseal(conn, &old_key, &new_key, &count) != 0 ||
        db_exec(conn, SQL_NOTIFY, err, sizeof err) != 0 || db_exec(conn, "COMMIT", err, sizeof err) != 0) {
        db_exec(conn, "ROLLBACK", err, sizeof err);
        fprintf(stderr, "paddlehook: rekey failed; every secret is still sealed with the old key\n");
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
