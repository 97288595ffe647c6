/* db.h - opening PostgreSQL connections and classifying their errors. */
#ifndef PADDLEHOOK_DB_H
#define PADDLEHOOK_DB_H

#include <stddef.h>

#include <libpq-fe.h>

/* libpq's connect_timeout for every connection (per host), unless the
 * conninfo says otherwise: well inside Paddle's 5-second window. */
#define DB_CONNECT_TIMEOUT_S 3

/* Channel the endpoint tables' trigger NOTIFYs (sql/migrations/0021), so
 * running workers reload at once. */
#define DB_ENDPOINTS_CHANNEL "paddlehook_endpoints"

/* Whatever the role's or database's default: paddlehook's transactions read
 * what was committed while they waited for a lock. */
#define DB_BEGIN_READ_COMMITTED "BEGIN ISOLATION LEVEL READ COMMITTED"

/* Every session of ours resolves names in pg_catalog only (pg_temp last): a
 * function or operator that another role put in a schema on the default
 * search_path (public is writable by every role before PostgreSQL 15) would
 * otherwise stand in for a built-in inside paddle's functions and run with
 * this session's rights. */
#define DB_PIN_SEARCH_PATH "SET search_path = pg_catalog, pg_temp"

/* A 2xx, or a command's "done", promises the change survives a crash;
 * synchronous_commit = off (a common throughput setting) would break that
 * promise, so it is raised to local for the session (a row when it was).
 * Stronger settings (remote_apply, ...) are kept. */
#define DB_DURABLE_COMMIT "SELECT set_config('synchronous_commit', 'local', false) " \
                          "WHERE current_setting('synchronous_commit') = 'off'"

/* 0 when libpq can read `conninfo`, else -1 with libpq's reason in err, less
 * what it quotes of the string (a password may be in it). */
int db_conninfo_check(const char *conninfo, char *err, size_t errlen);

/* Connects with `conninfo` (a URI or key=value string; "" = libpq defaults).
 * NULL with a reason in err on failure. The caller pins the search_path. */
PGconn *db_connect(const char *conninfo, char *err, size_t errlen);

/* For commands: db_connect with the search_path pinned and commits made
 * durable, and the server told to stop the session's statement within a
 * second of the command's end (interrupted or killed mid-statement), so that
 * a rebuild or migration nobody waits for no longer holds its locks. */
PGconn *db_connect_command(const char *conninfo, char *err, size_t errlen);

/* 1 when a failed result means "try again later" (connection lost, server
 * shutting down or overloaded, lock or statement timeout, serialization). */
int db_error_is_transient(PGconn *conn, const PGresult *res);

/* 1 when the server rejected the data itself (SQLSTATE class 22). */
int db_error_is_data(const PGresult *res);

/* For commands: db_connect_command, or NULL after saying why on stderr. */
PGconn *db_connect_or_say(const char *conninfo);

/* Runs a parameterless query; its rows, or NULL with a reason in err. */
PGresult *db_query(PGconn *conn, const char *sql, char *err, size_t errlen);

/* Runs a parameterless command; 0 on success, -1 with a reason in err. */
int db_exec(PGconn *conn, const char *sql, char *err, size_t errlen);

enum db_commit_outcome { DB_COMMITTED, DB_NOT_COMMITTED, DB_COMMIT_UNKNOWN };

/* What a transaction changed, to look for after a lost answer to its
 * COMMIT: a query with text parameters whose one row is true when the
 * change is in the database. */
struct db_change {
    const char *sql;
    int n_params;
    const char *params[2];
};

/* COMMIT of the open transaction (for commands): DB_NOT_COMMITTED with the
 * server's reason in err. When the connection is lost before the answer (a
 * restart, a failover, a wait for a synchronous standby ended by a
 * shutdown), the server may have committed: it says so on stderr and asks
 * on new connections to conninfo, for 10 s and a connection attempt then
 * under way, what became of the transaction, looking for change when given (NULL: the transaction's
 * status alone, which a failover can mislead). DB_COMMIT_UNKNOWN if it
 * cannot tell; err then says why. */
enum db_commit_outcome db_commit(PGconn *conn, const char *conninfo, const struct db_change *change, char *err,
                                 size_t errlen);

/* CLOCK_MONOTONIC in milliseconds, for deadlines. */
long long db_now_ms(void);

/* The result of the command just sent with a PQsend* function, waiting no
 * later than deadline_ms (db_now_ms). libpq's own waits have no limit, and a
 * server that stops answering (frozen, its storage hung: statement_timeout
 * cannot fire then) would hold the caller as long. Like PQexec: the last
 * result, an error winning over later ones. NULL when the connection failed
 * or, with *timed_out set, when time ran out: the connection is then in an
 * unknown state and must be closed. */
PGresult *db_result_by(PGconn *conn, long long deadline_ms, int *timed_out);

/* First line of the server's or libpq's error message, for logs. */
void db_error_line(PGconn *conn, const PGresult *res, char *buf, size_t len);

/* For commands: db_error_line on stderr, as "paddlehook: LINE". */
void db_say_error(PGconn *conn, const PGresult *res);

#endif
