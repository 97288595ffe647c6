/* store.c - one connection per worker, one prepared statement per event.
 *
 * paddle.ingest_event() deduplicates, stores and projects in a single
 * autocommit statement, so a successful result means the event is durably
 * committed: only then may the worker answer 2xx.
 */
#include "store.h"

#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"

#define STORE_RETRY_MS 100
/* A connect may take the whole connect timeout: start one only with that
 * much of the delivery's time left. */
#define STORE_CONNECT_MIN_MS (DB_CONNECT_TIMEOUT_S * 1000)
#define INGEST_STMT "paddlehook_ingest"
/* Keep every statement inside Paddle's 5-second delivery window. The
 * upserts and the consumer queues rely on READ COMMITTED, whatever the
 * role's or database's default. An idle worker keeps its session (a
 * database's idle_session_timeout would end it over and over). */
#define SESSION_SETUP DB_PIN_SEARCH_PATH "; SET statement_timeout = '4s'; SET lock_timeout = '3s'; " \
                      "SET idle_session_timeout = 0; " \
                      "SET default_transaction_isolation = 'read committed'; " \
                      "LISTEN " DB_ENDPOINTS_CHANNEL

void store_init(struct store *s, const char *conninfo, struct stats *stats)
{
    memset(s, 0, sizeof *s);
    s->conninfo = conninfo;
    s->stats = stats;
}

static void drop(struct store *s)
{
    PQfinish(s->conn);
    s->conn = NULL;
    s->prepared = 0;
}

void store_close(struct store *s) { drop(s); }

/* A connection found closed or broken: said, counted and dropped. */
static void drop_lost(struct store *s)
{
    log_line(LOG_WARN, "event=db_connection_lost");
    stats_count(s->stats, STATS_DB_ERRORS);
    drop(s);
}

/* The reply to the command just sent (sent = what the PQsend* call
 * returned), by the request's deadline (store_set_deadline) or within
 * STORE_TIMEOUT_MS. No reply on a connection that is still up (time ran
 * out: a frozen server; or the wait itself failed) leaves it mid-command: it
 * is dropped, and after a timeout s->gave_up is set. */
static PGresult *reply(struct store *s, int sent)
{
    long long start = db_now_ms();
    long long deadline = s->deadline_ms > 0 ? s->deadline_ms : start + STORE_TIMEOUT_MS;
    PGresult *res = NULL;
    char err[256];
    int timed_out = 0;

    if (sent) res = db_result_by(s->conn, deadline, &timed_out);
    if (res != NULL || PQstatus(s->conn) != CONNECTION_OK) return res;
    if (timed_out) {
        /* Counted here; a wait failure is counted where it is classified. */
        log_line(LOG_ERROR, "event=db_timeout waited_ms=%lld", db_now_ms() - start);
        stats_count(s->stats, STATS_DB_ERRORS);
        s->gave_up = 1;
    } else {
        db_error_line(s->conn, NULL, err, sizeof err);
        log_line(LOG_ERROR, "event=db_wait_failed reason=\"%s\"", err);
    }
    drop(s);
    return NULL;
}

/* Runs sql on the connection (the session set-up, or store_query): 0, with
 * the result in *out when out is given, or -1 with a reason in err. */
static int run(struct store *s, const char *sql, ExecStatusType want, PGresult **out, char *err,
               size_t errlen)
{
    PGresult *res = reply(s, PQsendQuery(s->conn, sql));
    int ok = PQresultStatus(res) == want;

    if (ok && out) {
        *out = res;
        return 0;
    }
    if (!ok && s->conn == NULL)
        snprintf(err, errlen, "%s", s->gave_up ? "no answer in time" : "the connection was closed");
    else if (!ok)
        db_error_line(s->conn, res, err, errlen);
    PQclear(res);
    return ok ? 0 : -1;
}

/* synchronous_commit raised from off (DB_DURABLE_COMMIT), said when it was. */
static int make_commits_durable(struct store *s, char *err, size_t errlen)
{
    PGresult *raised = NULL;

    if (run(s, DB_DURABLE_COMMIT, PGRES_TUPLES_OK, &raised, err, errlen) != 0) return -1;
    if (PQntuples(raised) > 0)
        log_line(LOG_WARN, "event=synchronous_commit_raised from=off to=local "
                 "reason=\"an acknowledged event must survive a database crash\"");
    PQclear(raised);
    return 0;
}

int store_ready(struct store *s)
{
    char err[256];

    if (s->conn && PQstatus(s->conn) == CONNECTION_OK) return 0;
    if (s->conn) drop_lost(s);
    if (db_now_ms() < s->next_attempt_ms) return -1;
    /* Too little of the delivery's time left to connect: answer 503 now;
     * the next delivery (or the idle worker) connects. */
    if (s->deadline_ms > 0 && s->deadline_ms - db_now_ms() < STORE_CONNECT_MIN_MS) return -1;
    s->gave_up = 0;
    s->conn = db_connect(s->conninfo, err, sizeof err);
    if (s->conn == NULL) goto fail;
    /* Non-blocking from the start, so that every command, the set-up too,
     * waits through reply() and its deadline. */
    if (PQsetnonblocking(s->conn, 1) != 0) {
        snprintf(err, sizeof err, "cannot make the connection non-blocking");
        goto fail;
    }
    if (run(s, SESSION_SETUP, PGRES_COMMAND_OK, NULL, err, sizeof err) != 0 ||
        make_commits_durable(s, err, sizeof err) != 0)
        goto fail;
    s->reconnected = 1;
    stats_count(s->stats, STATS_DB_RECONNECTS);
    log_line(LOG_INFO, "event=db_connected");
    return 0;
fail:
    log_line(LOG_ERROR, "event=db_connect_failed reason=\"%s\"", err);
    if (!s->gave_up) stats_count(s->stats, STATS_DB_ERRORS); /* reply() counted a timeout */
    drop(s);
    s->next_attempt_ms = db_now_ms() + STORE_RETRY_MS;
    return -1;
}

void store_reload_session(struct store *s)
{
    char err[256];

    if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK) return;
    s->gave_up = 0;
    /* The server's configuration as it is now: the session value raised earlier is dropped first. */
    if (run(s, "RESET synchronous_commit", PGRES_COMMAND_OK, NULL, err, sizeof err) == 0 &&
        make_commits_durable(s, err, sizeof err) == 0)
        return;
    /* A new session gets it right from the start. */
    log_line(LOG_ERROR, "event=session_reload_failed reason=\"%s\"", err);
    if (!s->gave_up) stats_count(s->stats, STATS_DB_ERRORS); /* reply() counted a timeout */
    drop(s);
}

void store_set_deadline(struct store *s, long long at_ms) { s->deadline_ms = at_ms; }

static int prepare(struct store *s)
{
    PGresult *res;
    int ok;

    if (s->prepared) return 0;
    res = reply(s, PQsendPrepare(s->conn, INGEST_STMT, STORE_INGEST_SQL, STORE_INGEST_PARAMS, NULL));
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok && !s->gave_up) {
        /* reply() logged a connection it lost; a refusal is logged here. Both are counted here. */
        char err[256];
        if (s->conn) {
            db_error_line(s->conn, res, err, sizeof err);
            log_line(LOG_ERROR, "event=db_prepare_failed reason=\"%s\"", err);
        }
        stats_count(s->stats, STATS_DB_ERRORS);
    }
    PQclear(res);
    s->prepared = ok;
    return ok ? 0 : -1;
}

static enum store_result classify_failure(struct store *s, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char err[256];
    enum store_result r = STORE_ERROR;

    /* The statement vanished (DISCARD ALL, a pooler): prepare it again next time. */
    if (state && strcmp(state, "26000") == 0) s->prepared = 0;
    if (s->conn == NULL)
        snprintf(err, sizeof err, "the connection was closed");
    else
        db_error_line(s->conn, res, err, sizeof err);
    stats_count(s->stats, STATS_DB_ERRORS);
    if (db_error_is_transient(s->conn, res)) r = STORE_UNAVAILABLE;
    else if (db_error_is_data(res)) r = STORE_BAD_PAYLOAD;
    log_line(r == STORE_BAD_PAYLOAD ? LOG_WARN : LOG_ERROR, "event=db_error outcome=%s reason=\"%s\"",
             store_result_name(r), err);
    if (PQstatus(s->conn) != CONNECTION_OK) drop(s);
    return r;
}

static enum store_result ingest_once(struct store *s, const struct event_envelope *ev,
                                    const char *endpoint_id, const char *environment,
                                    const char *body)
{
    const char *params[STORE_INGEST_PARAMS] = {ev->event_id, ev->event_type, ev->occurred_at,
                                               ev->notification_id[0] ? ev->notification_id : NULL,
                                               endpoint_id, environment, body};
    enum store_result r = STORE_ERROR;
    PGresult *res = NULL;

    /* The delivery's time is spent (a slow sender, a slow reload): the server
     * would commit an event answered 503, and the connection would be dropped
     * for a reply that cannot come in time. */
    if (s->deadline_ms > 0 && db_now_ms() >= s->deadline_ms) {
        log_line(LOG_WARN, "event=deadline_passed step=ingest");
        return STORE_UNAVAILABLE;
    }
    if (store_ready(s) != 0) return STORE_UNAVAILABLE;
    if (prepare(s) != 0) {
        r = PQstatus(s->conn) == CONNECTION_OK ? STORE_ERROR : STORE_UNAVAILABLE;
        if (r == STORE_UNAVAILABLE) drop(s);
        return r;
    }
    res = reply(s, PQsendQueryPrepared(s->conn, INGEST_STMT, STORE_INGEST_PARAMS, params, NULL, NULL, 0));
    if (s->gave_up) return STORE_UNAVAILABLE;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        r = classify_failure(s, res);
        goto out;
    }
    r = strcmp(PQgetvalue(res, 0, 0), "duplicate") == 0           ? STORE_DUPLICATE
        : strcmp(PQgetvalue(res, 0, 0), "replaced_sandbox") == 0  ? STORE_REPLACED_SANDBOX
        : strcmp(PQgetvalue(res, 0, 0), "projection_failed") == 0 ? STORE_PROJECTION_FAILED
                                                                  : STORE_STORED;
out:
    PQclear(res);
    return r;
}

/* A connection that was idle across a server restart fails on first use;
 * such a failure earns one retry on a fresh connection. Retrying is safe:
 * if the first attempt did commit, the retry reports a duplicate. */
static int was_stale(const struct store *s, int had_connection)
{
    return had_connection && s->conn == NULL && !s->gave_up;
}

enum store_result store_ingest(struct store *s, const struct event_envelope *ev,
                               const char *endpoint_id, const char *environment,
                               const char *body)
{
    int had_connection = s->conn != NULL;
    enum store_result r;

    s->gave_up = 0;
    r = ingest_once(s, ev, endpoint_id, environment, body);

    if ((r == STORE_UNAVAILABLE && was_stale(s, had_connection)) ||
        (r == STORE_ERROR && s->conn != NULL && !s->prepared))
        r = ingest_once(s, ev, endpoint_id, environment, body);
    return r;
}

static int ping_once(struct store *s, int *writable)
{
    PGresult *res;
    int ok;

    if (store_ready(s) != 0) return -1;
    res = reply(s, PQsendQuery(s->conn, "SELECT current_setting('transaction_read_only') = 'off'"));
    ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    if (ok) *writable = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    else if (!s->gave_up) classify_failure(s, res);
    PQclear(res);
    return ok ? 0 : -1;
}

int store_ping(struct store *s, int *writable)
{
    int had_connection = s->conn != NULL;
    int rc;

    s->gave_up = 0;
    rc = ping_once(s, writable);

    if (rc != 0 && was_stale(s, had_connection)) rc = ping_once(s, writable);
    return rc;
}

PGresult *store_query(struct store *s, const char *sql, char *err, size_t errlen)
{
    PGresult *res = NULL;

    s->gave_up = 0;
    if (store_ready(s) != 0) {
        snprintf(err, errlen, "no database connection");
        return NULL;
    }
    if (run(s, sql, PGRES_TUPLES_OK, &res, err, errlen) != 0 && s->conn != NULL &&
        PQstatus(s->conn) == CONNECTION_OK)
        stats_count(s->stats, STATS_DB_ERRORS); /* refused; a lost connection or a timeout is counted as such */
    return res;
}

int store_endpoints_changed(struct store *s, int read_socket)
{
    PGnotify *n;
    int changed = 0;

    if (s->conn == NULL) return 0;
    /* Broken under a query (a failed reload), or the server went away while
     * we were idle: drop it, so the caller reconnects before the request. */
    if (PQstatus(s->conn) != CONNECTION_OK || (read_socket && PQconsumeInput(s->conn) == 0)) {
        drop_lost(s);
        return 0;
    }
    while ((n = PQnotifies(s->conn)) != NULL) {
        changed = 1;
        PQfreemem(n);
    }
    return changed;
}

int store_socket(const struct store *s)
{
    return s->conn ? PQsocket(s->conn) : -1;
}

const char *store_result_name(enum store_result r)
{
    switch (r) {
    case STORE_STORED: return "stored";
    case STORE_DUPLICATE: return "duplicate";
    case STORE_REPLACED_SANDBOX: return "replaced_sandbox";
    case STORE_PROJECTION_FAILED: return "projection_failed";
    case STORE_UNAVAILABLE: return "database_unavailable";
    case STORE_BAD_PAYLOAD: return "unsupported_json";
    case STORE_ERROR: return "internal_error";
    }
    return "internal_error";
}
