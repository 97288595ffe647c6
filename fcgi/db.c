/* db.c - libpq connection set-up shared by the worker and the commands;
 * server notices become log lines. */
#include "db.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* Connecting must fit well inside Paddle's 5-second window, and a server that
 * vanishes from the network must be noticed in seconds, not at TCP's pace. */
#define TEXT_(x) #x
#define TEXT(x) TEXT_(x)
#define DB_CONNECT_TIMEOUT TEXT(DB_CONNECT_TIMEOUT_S)
#define DB_TCP_USER_TIMEOUT_MS "10000"
#define DB_CLIENT_CHECK "SET client_connection_check_interval = '1s'"
/* How long a command asks what became of a commit whose answer it lost. */
#define DB_OUTCOME_WAIT_MS 10000
#define DB_OUTCOME_ASK_INTERVAL_MS 200

/* First line of msg, safe inside a log line's quotes: messages may quote input. */
static void one_line(const char *msg, char *buf, size_t len)
{
    snprintf(buf, len, "%s", msg);
    buf[strcspn(buf, "\n")] = '\0';
    for (char *p = buf; *p; p++)
        if (*p == '"' || (unsigned char)*p < 0x20) *p = '\'';
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* Server notices and the goodbye of a terminated session become log lines
 * instead of libpq's raw multi-line text on stderr. */
static void log_notice(void *arg, const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    char level[16], msg[256], more[256];
    int serious;

    (void)arg;
    if (severity == NULL) severity = PQresultErrorField(res, PG_DIAG_SEVERITY);
    /* IF [NOT] EXISTS on what is already so says nothing: "... already exists, skipping" (duplicate schema,
     * table or object) and, in English, "... does not exist, skipping" (SQLSTATE 00000). */
    if (severity && strcmp(severity, "NOTICE") == 0 && state &&
        (strcmp(state, "42P06") == 0 || strcmp(state, "42P07") == 0 || strcmp(state, "42710") == 0 ||
         (strcmp(state, "00000") == 0 && primary && ends_with(primary, ", skipping"))))
        return;
    one_line(severity ? severity : "NOTICE", level, sizeof level);
    one_line(detail ? detail : "", more, sizeof more);
    one_line(primary ? primary : PQresultErrorMessage(res), msg, sizeof msg);
    serious = strcmp(level, "WARNING") == 0 || strcmp(level, "ERROR") == 0 || strcmp(level, "FATAL") == 0 ||
              strcmp(level, "PANIC") == 0;
    log_line(serious ? LOG_WARN : LOG_INFO, "event=db_notice severity=%s message=\"%s\"%s%s%s", level, msg,
             detail ? " detail=\"" : "", more, detail ? "\"" : "");
}

/* libpq's words on a connection string it cannot read, without what they
 * quote of it: from the first quoted span that is not one of the separators
 * it names ("=", "]", ":", "/") to the last quote, which may be the whole
 * string, password and all. */
static void without_quoted_value(const char *msg, char *buf, size_t len)
{
    const char *open = msg, *close, *last = strrchr(msg, '"');

    while ((open = strchr(open, '"')) != NULL && (close = strchr(open + 1, '"')) != NULL && close - open == 2 &&
           strchr("=]:/", open[1]) != NULL)
        open = close + 1;
    if (open == NULL || last == NULL || last <= open)
        snprintf(buf, len, "%s", msg);
    else
        snprintf(buf, len, "%.*s\"...\"%s", (int)(open - msg), msg, last + 1);
}

/* Whether a URI's user name or password holds a raw @ or /: libpq then
 * reads their tail as the host, port or database name, which its errors
 * quote and a server logs. As libpq reads it, the user and password end at
 * the first @ before any /, and the hosts at the next / or ?: an @ in the
 * hosts, an @ in the path with a / after it, or an @ in the path of a URI
 * that names no user before its hosts, is such a tail (an @ in a database
 * name after a user, or in a query value, is not). A tail taken for the
 * port is found once parsed. */
static int uri_userinfo_unescaped(const char *uri)
{
    const char *start = strstr(uri, "://") + 3;
    size_t credentials = strcspn(start, "@/");
    const char *hosts = start[credentials] == '@' ? start + credentials + 1 : start;
    size_t hosts_len = strcspn(hosts, "/?");
    const char *path = hosts + hosts_len;
    size_t path_len = *path == '/' ? strcspn(path, "?") : 0;
    const char *path_at = memchr(path, '@', path_len);

    return memchr(hosts, '@', hosts_len) != NULL ||
           (path_at && (hosts == start || memchr(path_at, '/', path_len - (size_t)(path_at - path))));
}

/* A port that is no list of numbers: in a URI, the tail of a password. */
static int port_not_numbers(const PQconninfoOption *opts)
{
    for (; opts->keyword; opts++)
        if (strcmp(opts->keyword, "port") == 0 && opts->val && strspn(opts->val, "0123456789,") != strlen(opts->val))
            return 1;
    return 0;
}

int db_conninfo_check(const char *conninfo, char *err, size_t errlen)
{
    char *why = NULL, redacted[512];
    PQconninfoOption *opts;
    int uri = strncmp(conninfo, "postgresql://", 13) == 0 || strncmp(conninfo, "postgres://", 11) == 0;
    int unescaped, parsed;

    /* As libpq reads it: a URI or key=value pairs, else the name of a database, which a mistyped URI would be
     * (and the server would log it, password and all). */
    if (!uri && strchr(conninfo, '=') == NULL) {
        if (strstr(conninfo, "://") == NULL && strncmp(conninfo, "postgres:", 9) != 0 &&
            strncmp(conninfo, "postgresql:", 11) != 0)
            return 0;
        snprintf(err, errlen, "a connection URI starts with postgresql:// or postgres://");
        return -1;
    }
    unescaped = uri && uri_userinfo_unescaped(conninfo);
    opts = unescaped ? NULL : PQconninfoParse(conninfo, &why);
    parsed = opts != NULL;
    unescaped |= parsed && uri && port_not_numbers(opts);
    PQconninfoFree(opts);
    if (unescaped) {
        snprintf(err, errlen, "the URI has an @ or / where libpq would take part of the password for the host, "
                              "port or database: write them percent-encoded in a user name or password (%%40, "
                              "%%2F)");
        PQfreemem(why);
        return -1;
    }
    if (parsed) return 0;
    without_quoted_value(why ? why : "out of memory", redacted, sizeof redacted);
    one_line(redacted, err, errlen);
    PQfreemem(why);
    return -1;
}

PGconn *db_connect(const char *conninfo, char *err, size_t errlen)
{
    /* Our defaults come first so that anything in conninfo overrides them. */
    const char *const keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
                                "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                                "client_encoding", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {DB_CONNECT_TIMEOUT, "1", "30", "10", "3", DB_TCP_USER_TIMEOUT_MS,
                                "UTF8", "paddlehook", conninfo ? conninfo : "", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    const char *encoding;

    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        db_error_line(conn, NULL, err, errlen);
        goto fail;
    }
    /* Paddle's text is Unicode: a database of another encoding refuses what it cannot hold (SQL_ASCII all of
     * it) when a delivery carries it, so every such delivery would fail, at random, and forever. */
    encoding = PQparameterStatus(conn, "server_encoding");
    if (encoding == NULL || strcmp(encoding, "UTF8") != 0) {
        snprintf(err, errlen, "database %s is encoded %s; paddlehook needs a UTF8 database, or the names and "
                 "addresses Paddle sends in other scripts cannot be stored (docs/deploy.md, section 2)", PQdb(conn),
                 encoding ? encoding : "(unknown)");
        goto fail;
    }
    PQsetNoticeReceiver(conn, log_notice, NULL);
    return conn;
fail:
    PQfinish(conn);
    return NULL;
}

int db_error_is_transient(PGconn *conn, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (conn == NULL || PQstatus(conn) != CONNECTION_OK || state == NULL) return 1;
    return strncmp(state, "08", 2) == 0 ||    /* connection exception */
           strncmp(state, "53", 2) == 0 ||    /* insufficient resources */
           strncmp(state, "57P", 3) == 0 ||   /* shutting down, cannot connect now */
           strcmp(state, "57014") == 0 ||     /* statement timeout / cancel */
           strcmp(state, "55P03") == 0 ||     /* lock not available */
           strcmp(state, "40001") == 0 ||     /* serialization failure */
           strcmp(state, "40P01") == 0 ||     /* deadlock detected */
           strcmp(state, "25006") == 0;       /* read-only transaction (failover) */
}

int db_error_is_data(const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state != NULL && strncmp(state, "22", 2) == 0;
}

PGconn *db_connect_command(const char *conninfo, char *err, size_t errlen)
{
    PGconn *conn = db_connect(conninfo, err, errlen);
    char ignored[64];

    if (conn && db_exec(conn, DB_PIN_SEARCH_PATH "; " DB_DURABLE_COMMIT, err, errlen) != 0) {
        PQfinish(conn);
        conn = NULL;
    }
    /* A server that cannot watch its clients (not Linux, macOS or BSD) refuses it: commands work without. */
    if (conn) db_exec(conn, DB_CLIENT_CHECK, ignored, sizeof ignored);
    return conn;
}

PGconn *db_connect_or_say(const char *conninfo)
{
    char err[512];
    PGconn *conn = db_connect_command(conninfo, err, sizeof err);

    if (conn == NULL) fprintf(stderr, "paddlehook: cannot connect to the database: %s\n", err);
    return conn;
}

PGresult *db_query(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);

    if (PQresultStatus(res) == PGRES_TUPLES_OK) return res;
    db_error_line(conn, res, err, errlen);
    PQclear(res);
    return NULL;
}

int db_exec(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

    if (!ok) db_error_line(conn, res, err, errlen);
    PQclear(res);
    return ok ? 0 : -1;
}

/* pg_xact_status of xid on conn: "committed", "aborted", "in progress";
 * "standby" when a standby answered (it may lag); or "" when the server
 * cannot say (an id it never gave out, after a failover; a failed query).
 * why says why for "". */
static const char *xact_status(PGconn *conn, const char *xid, char *why, size_t whylen)
{
    const char *params[1] = {xid};
    PGresult *res = PQexecParams(conn, "SELECT pg_is_in_recovery(), pg_xact_status($1::xid8)", 1, NULL, params,
                                 NULL, NULL, 0);
    const char *status = "";

    if (PQresultStatus(res) != PGRES_TUPLES_OK) db_error_line(conn, res, why, whylen);
    else if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) status = "standby";
    else if (PQgetisnull(res, 0, 1)) snprintf(why, whylen, "the server does not know the transaction");
    else if (strcmp(PQgetvalue(res, 0, 1), "committed") == 0) status = "committed";
    else if (strcmp(PQgetvalue(res, 0, 1), "aborted") == 0) status = "aborted";
    else if (strcmp(PQgetvalue(res, 0, 1), "in progress") == 0) status = "in progress";
    PQclear(res);
    return status;
}

/* Whether the change is in the database (its query answers true): 1, 0, or
 * -1 when the query failed (why says so). */
static int change_present(PGconn *conn, const struct db_change *change, char *why, size_t whylen)
{
    PGresult *res = PQexecParams(conn, change->sql, change->n_params, NULL, change->params, NULL, NULL, 0);
    int present = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        present = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    else
        db_error_line(conn, res, why, whylen);
    PQclear(res);
    return present;
}

/* What became of transaction xid, asked on new connections for
 * DB_OUTCOME_WAIT_MS (and a connection attempt under way then): while the
 * server restarts, and while the transaction is "in progress" (a commit that
 * waits for a synchronous standby is durable here but not done until the
 * standby answers). A transaction id says nothing once another server
 * answers (a failover: the same id may have gone to another's transaction),
 * so where the change can be looked for, it decides. A standby's word is not
 * taken. The verdict goes to err, but for DB_COMMITTED. */
static enum db_commit_outcome ask_outcome(const char *conninfo, const char *xid, const struct db_change *change,
                                          char *err, size_t errlen)
{
    enum db_commit_outcome outcome = DB_COMMIT_UNKNOWN;
    long long until = db_now_ms() + DB_OUTCOME_WAIT_MS;
    char why[256] = "no answer";
    const char *status = "";
    PGconn *conn = NULL;
    int present;

    fprintf(stderr, "paddlehook: the connection was lost while committing (%s); asking the database what "
                    "became of the transaction\n", err);
    for (;;) {
        if (conn == NULL) conn = db_connect_command(conninfo, why, sizeof why);
        if (conn != NULL) status = xact_status(conn, xid, why, sizeof why);
        if (conn != NULL && PQstatus(conn) != CONNECTION_OK) {
            PQfinish(conn);
            conn = NULL;
        }
        if ((conn != NULL && strcmp(status, "in progress") != 0) || db_now_ms() >= until) break;
        nanosleep(&(struct timespec){.tv_nsec = DB_OUTCOME_ASK_INTERVAL_MS * 1000000L}, NULL);
    }
    if (conn == NULL || strcmp(status, "standby") == 0) {
        snprintf(err, errlen, "the database cannot tell: %s", conn == NULL ? why : "a standby answered");
    } else if (strcmp(status, "in progress") == 0) {
        snprintf(err, errlen, "the transaction was still committing after %d s (a synchronous standby that does "
                              "not answer?)", DB_OUTCOME_WAIT_MS / 1000);
    } else if (change != NULL && (present = change_present(conn, change, why, sizeof why)) >= 0) {
        outcome = present ? DB_COMMITTED : DB_NOT_COMMITTED;
        snprintf(err, errlen, "%s", present ? "" : "the database does not hold the change: it did not commit");
    } else if (change == NULL && *status != '\0') {
        outcome = strcmp(status, "committed") == 0 ? DB_COMMITTED : DB_NOT_COMMITTED;
        snprintf(err, errlen, "%s", outcome == DB_COMMITTED ? "" : "the database says the transaction did not commit");
    } else {
        snprintf(err, errlen, "the database cannot tell: %s", why);
    }
    PQfinish(conn);
    return outcome;
}

enum db_commit_outcome db_commit(PGconn *conn, const char *conninfo, const struct db_change *change, char *err,
                                 size_t errlen)
{
    PGresult *res = db_query(conn, "SELECT pg_current_xact_id()::text", err, errlen);
    enum db_commit_outcome outcome = DB_NOT_COMMITTED;
    char xid[32];

    /* COMMIT not sent: a transaction the server saw fail, or lost with its connection, is rolled back. */
    if (res == NULL) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return outcome;
    }
    snprintf(xid, sizeof xid, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (db_exec(conn, "COMMIT", err, errlen) == 0) outcome = DB_COMMITTED;
    else if (PQstatus(conn) != CONNECTION_OK) outcome = ask_outcome(conninfo, xid, change, err, errlen);
    return outcome;
}

void db_error_line(PGconn *conn, const PGresult *res, char *buf, size_t len)
{
    const char *msg = res ? PQresultErrorMessage(res) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    size_t used;

    if (msg == NULL || *msg == '\0') msg = conn ? PQerrorMessage(conn) : "out of memory";
    if (msg == NULL || *msg == '\0') msg = "unknown database error";
    one_line(msg, buf, len);
    /* One of paddle's tables, functions or its schema that does not exist: most often a binary newer than the
     * schema (a user's own view in `report` may miss objects of its own: no hint for those). */
    if (state && (strcmp(state, "42P01") == 0 || strcmp(state, "42883") == 0 || strcmp(state, "3F000") == 0) &&
        (strstr(msg, "paddle.") || strstr(msg, "\"paddle\"")) && (used = strlen(buf)) + 1 < len)
        snprintf(buf + used, len - used, " (is the schema older than this paddlehook? `paddlehook migrate` "
                                         "applies what is missing)");
}

long long db_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 when the socket is ready for `events`, 0 when the deadline passed first,
 * -1 on error. Signals (the request deadline) only shorten a wait. */
static int wait_socket(PGconn *conn, short events, long long deadline_ms)
{
    struct pollfd p = {.fd = PQsocket(conn), .events = events};

    if (p.fd < 0) return -1;
    for (;;) {
        long long left = deadline_ms - db_now_ms();
        int rc;

        if (left <= 0) return 0;
        rc = poll(&p, 1, (int)left);
        if (rc > 0) return 1;
        if (rc < 0 && errno != EINTR) return -1;
    }
}

PGresult *db_result_by(PGconn *conn, long long deadline_ms, int *timed_out)
{
    PGresult *kept = NULL, *res;
    int ready = -1, unsent;

    *timed_out = 0;
    /* A non-blocking connection may still hold part of the command. */
    while ((unsent = PQflush(conn)) == 1) {
        if ((ready = wait_socket(conn, POLLIN | POLLOUT, deadline_ms)) <= 0) goto stop;
        if (PQconsumeInput(conn) == 0) goto lost;
    }
    if (unsent < 0) goto lost;
    for (;;) {
        while (PQisBusy(conn)) {
            if ((ready = wait_socket(conn, POLLIN, deadline_ms)) <= 0) goto stop;
            if (PQconsumeInput(conn) == 0) goto lost;
        }
        if ((res = PQgetResult(conn)) == NULL) break;
        /* As PQexec: the last result, unless an earlier one was an error. */
        if (kept && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(kept);
            kept = res;
        }
    }
    return kept;
lost:
    /* A closed connection: the server's own error if it sent one (why it
     * ended the session), else libpq's. One still up (a failed read or
     * write) is left mid-command, for the caller to close. */
    if (PQstatus(conn) != CONNECTION_OK) {
        if (kept && PQresultStatus(kept) == PGRES_FATAL_ERROR) return kept;
        PQclear(kept);
        return PQgetResult(conn);
    }
stop:
    *timed_out = ready == 0;
    PQclear(kept);
    return NULL;
}

void db_say_error(PGconn *conn, const PGresult *res)
{
    char err[512];

    db_error_line(conn, res, err, sizeof err);
    fprintf(stderr, "paddlehook: %s\n", err);
}
