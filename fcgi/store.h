/* store.h - the worker's one persistent PostgreSQL connection: ingest an
 * event in one round trip, health checks, endpoint change notifications. */
#ifndef PADDLEHOOK_STORE_H
#define PADDLEHOOK_STORE_H

#include <stddef.h>

#include <libpq-fe.h>

#include "event.h"
#include "stats.h"

/* The server ends a slow statement itself (statement_timeout); this limit is
 * for a server that cannot answer at all (frozen, its storage hung). Every
 * database wait of one delivery ends within it, inside Paddle's 5 seconds. */
#define STORE_TIMEOUT_MS 4500

/* The one call per delivery: event_id, event_type, occurred_at,
 * notification_id, endpoint_id, environment, payload. */
#define STORE_INGEST_SQL "SELECT paddle.ingest_event($1, $2, $3::timestamptz, $4, $5, $6, $7::jsonb)"
#define STORE_INGEST_PARAMS 7

enum store_result {
    STORE_STORED = 0,
    STORE_DUPLICATE,
    STORE_REPLACED_SANDBOX, /* stored: a live delivery replaced the event a sandbox endpoint stored under its id */
    STORE_PROJECTION_FAILED, /* stored, with the projection error its data caused: the state tables lack it */
    STORE_UNAVAILABLE, /* database down or busy: answer 503, Paddle retries */
    STORE_BAD_PAYLOAD, /* PostgreSQL refused the JSON (e.g. \u0000 in jsonb) */
    STORE_ERROR        /* anything else: answer 500 and log */
};

struct store {
    const char *conninfo;
    PGconn *conn;
    int prepared;
    long long next_attempt_ms; /* no reconnect storm while the database is down */
    int reconnected;           /* set on every new connection; cleared by the caller */
    int gave_up;               /* the last call dropped the connection: no answer in time */
    long long deadline_ms;     /* the current request's (db_now_ms), 0 between requests */
    struct stats *stats;       /* counts connections and errors; may be NULL */
};

void store_init(struct store *s, const char *conninfo, struct stats *stats);

/* Connects if needed (rate-limited). 0 when a connection is ready. */
int store_ready(struct store *s);

/* Every database wait of the request being served ends by at_ms (db_now_ms);
 * 0 between requests, when each round trip gets STORE_TIMEOUT_MS. */
void store_set_deadline(struct store *s, long long at_ms);

/* For a reload (SIGHUP): the session takes the server's synchronous_commit
 * again (raised from off), so that a change made there since it connected
 * applies; a session that fails to is dropped. */
void store_reload_session(struct store *s);

enum store_result store_ingest(struct store *s, const struct event_envelope *ev,
                               const char *endpoint_id, const char *environment,
                               const char *body);

/* 0 when the database answers a trivial query; *writable then says whether
 * this session may write (not a standby, not read-only by default). */
int store_ping(struct store *s, int *writable);

/* Runs a parameterless query on the worker's connection, within the same
 * time limit as an ingest. Its rows, or NULL with a reason in err. */
PGresult *store_query(struct store *s, const char *sql, char *err, size_t errlen);

/* 1 when an endpoint change was announced since the last call. Never blocks.
 * With read_socket, first reads what the server sent (call it when the socket
 * polled readable: a notification, or the connection closing); without, only
 * looks at notifications libpq already read with a query's result, no syscall. */
int store_endpoints_changed(struct store *s, int read_socket);

/* The connection's socket for poll(), or -1 without a connection. */
int store_socket(const struct store *s);

const char *store_result_name(enum store_result r);

void store_close(struct store *s);

#endif
