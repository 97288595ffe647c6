/* reportfmt.c - a report's rows as a table, CSV or JSON, each safe to
 * show: text in them comes partly from buyers (docs/reports.md). */
#include "reportfmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yajl/yajl_gen.h>

#include "db.h"
#include "shown.h"

/* A table's widths are kept per column. */
#define REPORT_MAX_COLUMNS 64

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

int reportfmt_table(const PGresult *res)
{
    int cols = PQnfields(res), rows = PQntuples(res);
    size_t width[REPORT_MAX_COLUMNS];

    if (cols > REPORT_MAX_COLUMNS) {
        fprintf(stderr, "paddlehook report: a table shows at most %d columns; --format csv or json shows all of "
                        "them\n", REPORT_MAX_COLUMNS);
        return -1;
    }
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
    return 0;
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
int reportfmt_stream(PGconn *conn, const char *sql, const char *const *params, int json)
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
            db_say_error(conn, res);
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

