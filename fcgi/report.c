/* report.c - `paddlehook report` and `paddlehook reproject`: the report
 * views of sql/, chosen and filtered here, written by reportfmt.c.
 *
 * The view, its time column and its ordering come from paddle.report_catalog,
 * so adding a report is a migration, not a code change. User input (the
 * report name, environment, date) only ever travels as query parameters;
 * identifiers read from the catalog are quoted with PQescapeIdentifier.
 */
#include "report.h"

#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "db.h"
#include "reportfmt.h"
#include "shown.h"

/* The catalog is the user's own table: its text is shown, cut to these. */
#define REPORT_NAME_SHOWN_MAX 256
#define REPORT_DESCRIPTION_SHOWN_MAX 1024

#define REPORT_SQL_MAX 2048
#define ORDER_TERMS_MAX 8

#define SQL_CATALOG_LIST "SELECT name, description FROM paddle.report_catalog ORDER BY name"
#define SQL_CATALOG_ONE \
    "SELECT view_name, time_column, order_by FROM paddle.report_catalog WHERE name = $1"

static PGresult *query(PGconn *conn, const char *sql, int n, const char *const *values)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
        db_say_error(conn, res);
        PQclear(res);
        return NULL;
    }
    return res;
}

static int list_reports(PGconn *conn)
{
    PGresult *res = query(conn, SQL_CATALOG_LIST, 0, NULL);
    if (res == NULL) return 1;
    printf("reports (paddlehook report NAME [--environment sandbox|live] [--since DATE] "
           "[--format table|csv|json]):\n");
    for (int r = 0; r < PQntuples(res); r++) {
        char name[REPORT_NAME_SHOWN_MAX], description[REPORT_DESCRIPTION_SHOWN_MAX];
        shown_copy(name, sizeof name, PQgetvalue(res, r, 0));
        shown_copy(description, sizeof description, PQgetvalue(res, r, 1));
        printf("  %-28s %s\n", name, description);
    }
    PQclear(res);
    return 0;
}

/* Appends the identifier, quoted, to sql. */
static int append_ident(PGconn *conn, char *sql, size_t cap, const char *ident, size_t len)
{
    char *quoted = PQescapeIdentifier(conn, ident, len);
    size_t used = strlen(sql);
    int n;

    if (quoted == NULL) return -1;
    n = snprintf(sql + used, cap - used, "%s", quoted);
    PQfreemem(quoted);
    return n < 0 || (size_t)n >= cap - used ? -1 : 0;
}

static int append(char *sql, size_t cap, const char *text)
{
    size_t used = strlen(sql);
    int n = snprintf(sql + used, cap - used, "%s", text);
    return n < 0 || (size_t)n >= cap - used ? -1 : 0;
}

/* order_by is "col [ASC|DESC], ..." from the catalog; each column is quoted. */
static int append_order(PGconn *conn, char *sql, size_t cap, const char *order_by)
{
    const char *p = order_by;
    int terms = 0;

    while (*p && terms++ < ORDER_TERMS_MAX) {
        size_t term_len = strcspn(p, ","), col_len;
        const char *dir = "";
        while (*p == ' ') { p++; term_len--; }
        col_len = strcspn(p, " ,");
        if (col_len > term_len) col_len = term_len;
        if (strncmp(p + col_len, " DESC", 5) == 0 || strncmp(p + col_len, " desc", 5) == 0) dir = " DESC";
        if (append(sql, cap, terms > 1 ? ", " : " ORDER BY ") != 0 ||
            append_ident(conn, sql, cap, p, col_len) != 0 || append(sql, cap, dir) != 0)
            return -1;
        p += term_len;
        if (*p == ',') p++;
    }
    return 0;
}

/* 0: since is absent or a value PostgreSQL reads as the type in sql (as the
 * command's own query will read it); 2: it is not, a usage error; 1: the
 * database failed. Each but 0 said. */
static int check_since(PGconn *conn, const char *command, const char *since, const char *sql)
{
    const char *params[1] = {since};
    PGresult *res;
    const char *state;
    int rc;

    if (since == NULL) return 0;
    res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        rc = 0;
    } else if (state && strncmp(state, "22", 2) == 0) {
        /* Class 22, data exception: the value itself (22007 invalid_datetime_format, 22008 out of range). */
        fprintf(stderr, "paddlehook %s: --since: %s\n", command, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        rc = 2;
    } else {
        db_say_error(conn, res);
        rc = 1;
    }
    PQclear(res);
    return rc;
}

static int show_report(const struct config *cfg, PGconn *conn)
{
    const char *name[1] = {cfg->args[0]};
    const char *params[2] = {cfg->environment, cfg->since};
    char sql[REPORT_SQL_MAX] = "SELECT * FROM paddle.";
    PGresult *cat = NULL, *res = NULL;
    int rc = 1;

    cat = query(conn, SQL_CATALOG_ONE, 1, name);
    if (cat == NULL) goto out;
    if (PQntuples(cat) != 1) {
        fprintf(stderr, "paddlehook report: no report named '%s'; 'paddlehook report' lists them\n", cfg->args[0]);
        rc = 2; /* an operand that names nothing: a usage error, as simulate's */
        goto out;
    }
    if (append_ident(conn, sql, sizeof sql, PQgetvalue(cat, 0, 0), (size_t)PQgetlength(cat, 0, 0)) != 0 ||
        append(sql, sizeof sql, " WHERE ($1::text IS NULL OR environment = $1)") != 0)
        goto bad_catalog;
    if (!PQgetisnull(cat, 0, 1)) {
        if (append(sql, sizeof sql, " AND ($2::date IS NULL OR ") != 0 ||
            append_ident(conn, sql, sizeof sql, PQgetvalue(cat, 0, 1), (size_t)PQgetlength(cat, 0, 1)) != 0 ||
            append(sql, sizeof sql, " >= $2::date)") != 0)
            goto bad_catalog;
    } else if (cfg->since) {
        fprintf(stderr, "paddlehook report: '%s' has no time column; --since does not apply\n", cfg->args[0]);
        rc = 2;
        goto out;
    } else if (append(sql, sizeof sql, " AND $2::date IS NULL") != 0) {
        goto bad_catalog;
    }
    if (append_order(conn, sql, sizeof sql, PQgetvalue(cat, 0, 2)) != 0) goto bad_catalog;

    if (strcmp(cfg->format, "table") != 0) {
        if (reportfmt_stream(conn, sql, params, strcmp(cfg->format, "json") == 0) != 0) goto out;
    } else {
        /* A table is as wide as its widest cell: it needs every row first. */
        if ((res = query(conn, sql, 2, params)) == NULL) goto out;
        if (reportfmt_table(res) != 0) goto out;
    }
    rc = 0;
    goto out;
bad_catalog:
    fprintf(stderr, "paddlehook: paddle.report_catalog entry for '%s' is invalid\n", cfg->args[0]);
out:
    PQclear(res);
    PQclear(cat);
    return rc;
}

int report_cmd_run(const struct config *cfg)
{
    char err[512];
    PGconn *conn;
    int rc;

    conn = db_connect_or_say(cfg->db);
    if (conn == NULL) return 1;
    /* Report queries are short-lived; JIT compilation only adds seconds to them. A report view may be the
     * user's own (paddle.report_catalog), written for the role's usual search_path: it runs in that one, as
     * it would in psql, not in the pinned one of paddlehook's other sessions. */
    if (db_exec(conn, "SET jit = off; RESET search_path", err, sizeof err) != 0) {
        fprintf(stderr, "paddlehook: %s\n", err);
        rc = 1;
    } else if ((rc = check_since(conn, "report", cfg->since, "SELECT $1::date")) == 0) {
        rc = cfg->n_args == 0 ? list_reports(conn) : show_report(cfg, conn);
    }
    PQfinish(conn);
    return rc;
}

int report_reproject_run(const struct config *cfg)
{
    const char *params[1] = {cfg->since};
    char err[512];
    PGconn *conn = db_connect_or_say(cfg->db);
    PGresult *res = NULL;
    int rc = 1;
    enum db_commit_outcome outcome;

    if (conn == NULL) return 1;
    if ((rc = check_since(conn, "reproject", cfg->since, "SELECT $1::timestamptz")) != 0) goto out;
    rc = 1;
    /* One transaction: readers see the old state until the new one commits. The rebuild is one statement,
     * as long as the event log makes it: a database's or role's statement_timeout must not cut it off. */
    if (db_exec(conn, DB_BEGIN_READ_COMMITTED "; SET LOCAL statement_timeout = 0", err, sizeof err) != 0) goto fail;
    res = PQexecParams(conn, "SELECT paddle.reproject($1::timestamptz)", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_error_line(conn, res, err, sizeof err);
        goto fail;
    }
    /* Nothing to look for: a rebuild rewrites rows as they were. */
    outcome = db_commit(conn, cfg->db, NULL, err, sizeof err);
    if (outcome == DB_NOT_COMMITTED) goto fail;
    if (outcome == DB_COMMIT_UNKNOWN) {
        fprintf(stderr, "paddlehook: %s; the rebuild may or may not have taken effect; it can always be run "
                        "again\n", err);
        goto out;
    }
    printf("replayed %s event(s)%s%s into the state tables\n", PQgetvalue(res, 0, 0),
           cfg->since ? " of entities changed since " : "", cfg->since ? cfg->since : "");
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "paddlehook: reproject failed, nothing changed: %s\n", err);
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}
