/* report.c - print the report views of sql/ as a table, CSV or JSON.
 *
 * The view, its time column and its ordering come from paddle.report_catalog,
 * so adding a report is a migration, not a code change. User input (the
 * report name, environment, date) only ever travels as query parameters;
 * identifiers read from the catalog are quoted with PQescapeIdentifier.
 */
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <yajl/yajl_gen.h>

#include "db.h"
#include "shown.h"

/* The catalog is the user's own table: its text is shown, cut to these. */
#define REPORT_NAME_SHOWN_MAX 256
#define REPORT_DESCRIPTION_SHOWN_MAX 1024

#define REPORT_SQL_MAX 2048
#define REPORT_MAX_COLUMNS 64
#define ORDER_TERMS_MAX 8

/* PostgreSQL type oids printed unquoted / right-aligned. */
#define OID_BOOL 16
#define OID_NAME 19
#define OID_TEXT 25
#define OID_BPCHAR 1042
#define OID_VARCHAR 1043
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_NUMERIC 1700

#define SQL_CATALOG_LIST "SELECT name, description FROM paddle.report_catalog ORDER BY name"
#define SQL_CATALOG_ONE \
    "SELECT view_name, time_column, order_by FROM paddle.report_catalog WHERE name = $1"

static int is_number_type(Oid t)
{
    return t == OID_INT8 || t == OID_INT2 || t == OID_INT4 || t == OID_FLOAT4 || t == OID_FLOAT8 ||
           t == OID_NUMERIC;
}

/* NaN and ±Infinity (numeric and float) have no JSON number: they are written as strings. */
static int is_json_number(const char *v)
{
    const char *digits = v[0] == '-' ? v + 1 : v;
    return *digits >= '0' && *digits <= '9';
}

static int is_text_type(Oid t)
{
    return t == OID_TEXT || t == OID_VARCHAR || t == OID_BPCHAR || t == OID_NAME;
}

static PGresult *query(PGconn *conn, const char *sql, int n, const char *const *values)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
        char err[512];
        db_error_line(conn, res, err, sizeof err);
        fprintf(stderr, "paddlehook: %s\n", err);
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

/* Report cells carry text from checkout forms (utm_* values, names): shown
 * raw, a control character could move the terminal's cursor or fake a row. */
static void print_cell(const char *v, size_t width, int right, int first)
{
    size_t pad = width - shown_len(v);

    if (!first) fputs("  ", stdout);
    for (size_t i = 0; right && i < pad; i++) putchar(' ');
    shown_put(stdout, v);
    for (size_t i = 0; !right && i < pad; i++) putchar(' ');
}

static void print_table(const PGresult *res)
{
    int cols = PQnfields(res), rows = PQntuples(res);
    size_t width[REPORT_MAX_COLUMNS];

    for (int c = 0; c < cols; c++) {
        width[c] = shown_len(PQfname(res, c));
        for (int r = 0; r < rows; r++) {
            size_t shown = shown_len(PQgetvalue(res, r, c));
            if (shown > width[c]) width[c] = shown;
        }
    }
    for (int c = 0; c < cols; c++) print_cell(PQfname(res, c), width[c], 0, c == 0);
    putchar('\n');
    for (int c = 0; c < cols; c++) {
        printf("%s", c ? "  " : "");
        for (size_t i = 0; i < width[c]; i++) putchar('-');
    }
    putchar('\n');
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            const char *v = PQgetisnull(res, r, c) ? "" : PQgetvalue(res, r, c);
            print_cell(v, width[c], is_number_type(PQftype(res, c)), c == 0);
        }
        putchar('\n');
    }
    printf("(%d row%s)\n", rows, rows == 1 ? "" : "s");
}

/* Whether a spreadsheet may take v for a formula: = + - @ first, after any
 * blanks or line breaks (some trim them), in their full-width forms too
 * (U+FF1D, U+FF0B, U+FF0D, U+FF20, which some convert), or a tab or CR
 * first. */
static int starts_like_formula(const char *v)
{
    static const char *const wide[] = {"\xef\xbc\x9d", "\xef\xbc\x8b", "\xef\xbc\x8d", "\xef\xbc\xa0"};

    if (*v == '\t' || *v == '\r') return 1;
    v += strspn(v, " \t\r\n");
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        if (strncmp(v, wide[i], 3) == 0) return 1;
    return *v != '\0' && strchr("=+-@", *v) != NULL;
}

/* text: a text cell that starts like a formula gets a leading ', so that a
 * spreadsheet opening the file shows it instead of running it; numbers,
 * dates and intervals are written as they are (PostgreSQL prints them, not a
 * buyer). On a terminal, control characters are shown as \xNN; into a file
 * or a pipe, cells are written as stored. -1: out of memory (said). */
static int print_csv_field(const char *v, int text, int on_terminal)
{
    const char *guard = text && starts_like_formula(v) ? "'" : "";
    char *shown = NULL;

    if (on_terminal) {
        size_t cap = SHOWN_COPY_CAP(strlen(v));
        if ((shown = malloc(cap)) == NULL) {
            fprintf(stderr, "paddlehook: out of memory\n");
            return -1;
        }
        shown_copy(shown, cap, v);
        v = shown;
    }
    if (strpbrk(v, ",\"\r\n") == NULL) {
        printf("%s%s", guard, v);
    } else {
        printf("\"%s", guard);
        for (const char *p = v; *p; p++) {
            if (*p == '"') putchar('"');
            putchar(*p);
        }
        putchar('"');
    }
    free(shown);
    return 0;
}

static int print_csv_row(const PGresult *res, int r, int on_terminal)
{
    for (int c = 0; c < PQnfields(res); c++) {
        if (c) putchar(',');
        if (r < 0 && print_csv_field(PQfname(res, c), 1, on_terminal) != 0) return -1;
        if (r >= 0 && !PQgetisnull(res, r, c) &&
            print_csv_field(PQgetvalue(res, r, c), is_text_type(PQftype(res, c)), on_terminal) != 0)
            return -1;
    }
    fputs("\r\n", stdout);
    return 0;
}

/* Writes yajl's JSON with DEL and C1 controls (U+0080-U+009F) as \u
 * escapes, as it writes C0 ones: a JSON reader gets the same text, and the
 * output cannot drive a terminal. Such bytes occur only inside strings, and
 * buf is valid UTF-8 (yajl checked), so 0xc2 always leads a character. */
static void put_json(const unsigned char *buf, size_t len)
{
    size_t run = 0;

    for (size_t i = 0; i < len; i++) {
        int del = buf[i] == 0x7f, c1 = buf[i] == 0xc2 && i + 1 < len && buf[i + 1] <= 0x9f;
        if (!del && !c1) continue;
        fwrite(buf + run, 1, i - run, stdout);
        if (c1) i++;
        printf("\\u%04x", buf[i]);
        run = i + 1;
    }
    fwrite(buf + run, 1, len - run, stdout);
}

/* Writes what g holds so far and empties it: memory for one row, not the report. -1: yajl refused
 * something before (statuses OR-ed in st: yajl_gen_status_ok is 0). */
static int flush_json(yajl_gen g, int st)
{
    const unsigned char *buf;
    size_t len;

    if ((st | yajl_gen_get_buf(g, &buf, &len)) != 0) {
        fprintf(stderr, "paddlehook: cannot make the report's JSON: is every cell valid UTF-8?\n");
        return -1;
    }
    put_json(buf, len);
    yajl_gen_clear(g);
    return 0;
}

static int print_json_row(yajl_gen g, const PGresult *res, int r)
{
    int st = yajl_gen_map_open(g);

    for (int c = 0; c < PQnfields(res); c++) {
        const char *name = PQfname(res, c), *v = PQgetvalue(res, r, c);
        Oid t = PQftype(res, c);
        st |= yajl_gen_string(g, (const unsigned char *)name, strlen(name));
        if (PQgetisnull(res, r, c)) st |= yajl_gen_null(g);
        else if (t == OID_BOOL) st |= yajl_gen_bool(g, v[0] == 't');
        /* numeric stays exact: its digits are written as they are. */
        else if (is_number_type(t) && is_json_number(v)) st |= yajl_gen_number(g, v, strlen(v));
        else st |= yajl_gen_string(g, (const unsigned char *)v, strlen(v));
    }
    return flush_json(g, st | yajl_gen_map_close(g));
}

/* csv and json are written row by row as PostgreSQL sends them (single-row
 * mode), so a report of any length needs the memory of one row. A failure
 * part way is said, and the command exits 1 after what was written. */
static int stream_report(PGconn *conn, const char *sql, const char *const *params, int json)
{
    int on_terminal = isatty(fileno(stdout)), started = 0, rc = -1;
    yajl_gen g = NULL;
    PGresult *res = NULL;

    if (json && (g = yajl_gen_alloc(NULL)) == NULL) {
        fprintf(stderr, "paddlehook: out of memory\n");
        return -1;
    }
    if (g) {
        yajl_gen_config(g, yajl_gen_beautify, 1);
        yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    }
    if (!PQsendQueryParams(conn, sql, 2, NULL, params, NULL, NULL, 0) || !PQsetSingleRowMode(conn)) {
        fprintf(stderr, "paddlehook: %s", PQerrorMessage(conn));
        goto out;
    }
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType status = PQresultStatus(res);
        if (status != PGRES_SINGLE_TUPLE && status != PGRES_TUPLES_OK) {
            char err[512];
            db_error_line(conn, res, err, sizeof err);
            fprintf(stderr, "paddlehook: %s\n", err);
            goto out;
        }
        if (!started) {
            if (json ? flush_json(g, yajl_gen_array_open(g)) != 0 : print_csv_row(res, -1, on_terminal) != 0)
                goto out;
            started = 1;
        }
        if (PQntuples(res) == 1 &&
            (json ? print_json_row(g, res, 0) != 0 : print_csv_row(res, 0, on_terminal) != 0))
            goto out;
        PQclear(res);
        res = NULL;
        /* The rest would go nowhere; main says the output was lost, and exits 1. */
        if (ferror(stdout)) break;
    }
    if (json && flush_json(g, yajl_gen_array_close(g)) != 0) goto out;
    rc = 0;
out:
    PQclear(res);
    if (g) yajl_gen_free(g);
    return rc;
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
        char err[512];
        db_error_line(conn, res, err, sizeof err);
        fprintf(stderr, "paddlehook: %s\n", err);
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
        if (stream_report(conn, sql, params, strcmp(cfg->format, "json") == 0) != 0) goto out;
    } else {
        /* A table is as wide as its widest cell: it needs every row first. */
        if ((res = query(conn, sql, 2, params)) == NULL) goto out;
        if (PQnfields(res) > REPORT_MAX_COLUMNS) {
            fprintf(stderr, "paddlehook report: a table shows at most %d columns; --format csv or json shows "
                            "all of them\n", REPORT_MAX_COLUMNS);
            goto out;
        }
        print_table(res);
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
