/* reportfmt.h - writing a report's rows to stdout. */
#ifndef PADDLEHOOK_REPORTFMT_H
#define PADDLEHOOK_REPORTFMT_H

#include <libpq-fe.h>

/* Writes res as a table, control characters shown as \xNN. -1 when it has
 * more columns than a table shows (said). */
int reportfmt_table(const PGresult *res);

/* Runs sql with its two params and writes the rows as CSV or JSON while
 * PostgreSQL sends them. -1 when the query or the JSON failed (said); a lost
 * output is left to the caller to notice (ferror). */
int reportfmt_stream(PGconn *conn, const char *sql, const char *const *params, int json);

#endif
