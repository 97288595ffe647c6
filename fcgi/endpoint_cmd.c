/* endpoint_cmd.c - endpoint administration. Secrets come from stdin, never
 * argv (argv is visible to every local user), and are sealed with the master
 * key before they reach PostgreSQL. The rules are functions of the schema
 * (0021); the endpoint tables' triggers NOTIFY running workers, so they reload
 * exactly when a change commits. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "db.h"
#include "endpoint_cmd.h"
#include "limits.h"
#include "masterkey.h"
#include "shown.h"

#define ENDPOINT_ID_PREFIX "ep_"
#define ENDPOINT_ID_RANDOM_CHARS 20
#define SECRET_HINT_CHARS 4

/* After a lost answer to a commit: said, since the command cannot tell. */
#define OUTCOME_UNKNOWN "paddlehook: the connection was lost before the database answered: the change may " \
                        "or may not have been made; `paddlehook endpoint list` shows what is stored\n"
/* Functions and views of sql/migrations/0021_endpoint_functions.sql. */
#define SQL_LOCK_ACTIVE "SELECT sealed_hex FROM paddle.lock_endpoint_secrets(false)"
#define SQL_ADD "SELECT paddle.endpoint_add($1, $2, $3, $4::integer, $5::bytea, $6)"
#define SQL_ROTATE "SELECT paddle.endpoint_add_secret($1, $2::bytea, $3, $4::integer)"
#define SQL_RETIRE "SELECT paddle.endpoint_retire_older_secrets($1)"
#define SQL_SET_ENABLED "SELECT paddle.endpoint_set_enabled($1, $2::boolean)"
#define SQL_SET_TOLERANCE "SELECT paddle.endpoint_set_tolerance($1, $2::integer)"
#define SQL_NAMED "SELECT id FROM paddle.endpoints WHERE name = $1"
#define SQL_ACTIVE_COUNT "SELECT active_secrets FROM paddle.endpoint_overview WHERE id = $1"
#define SQL_LIST                                                                              \
    "SELECT id, name, environment, tolerance_seconds, enabled, active_secret_hints "          \
    "FROM paddle.endpoint_overview ORDER BY created_at, id"

/* The terminal's settings while the secret prompt has echo off, for the
 * handlers below (a signal handler gets no context). prompt_fd < 0: no prompt. */
static struct termios prompt_saved, prompt_quiet;
static volatile sig_atomic_t prompt_fd = -1;
static const int prompt_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};
#define PROMPT_SIGNALS (sizeof prompt_signals / sizeof prompt_signals[0])

/* A signal that ends or stops the command at the prompt must not leave the
 * terminal without echo: echo back on, then the signal's default action. A
 * stop that is continued turns echo off again for the rest of the secret.
 * Only async-signal-safe calls (tcsetattr, sigaction, sigprocmask, raise). */
static void on_prompt_signal(int sig)
{
    int saved_errno = errno;
    struct sigaction dfl, mine;
    sigset_t just;

    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, &mine);
    if (prompt_fd >= 0) tcsetattr(prompt_fd, TCSANOW, &prompt_saved);
    sigemptyset(&just);
    sigaddset(&just, sig);
    sigprocmask(SIG_UNBLOCK, &just, NULL); /* blocked while its handler runs */
    raise(sig);
    sigaction(sig, &mine, NULL);
    if (prompt_fd >= 0) tcsetattr(prompt_fd, TCSANOW, &prompt_quiet);
    errno = saved_errno;
}

/* Echo back as it was, then the signal handlers: a signal in between finds echo already on. */
static int prompt_end(const struct sigaction prev[PROMPT_SIGNALS], char *err, size_t errlen)
{
    int rc = tcsetattr(prompt_fd, TCSANOW, &prompt_saved);

    if (rc != 0 && err)
        snprintf(err, errlen, "cannot turn terminal echo back on (`stty echo` does): %s", strerror(errno));
    prompt_fd = -1;
    for (size_t i = 0; i < PROMPT_SIGNALS; i++) sigaction(prompt_signals[i], &prev[i], NULL);
    return rc;
}

/* Turns echo off on fd, with the handlers above in place of prev's (a signal
 * that was ignored stays ignored). */
static int prompt_begin(int fd, const struct termios *old, struct sigaction prev[PROMPT_SIGNALS], char *err,
                        size_t errlen)
{
    struct sigaction sa;

    prompt_saved = *old;
    prompt_quiet = *old;
    prompt_quiet.c_lflag &= ~(tcflag_t)ECHO;
    prompt_fd = fd;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_prompt_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* the prompt's read goes on after a stop */
    for (size_t i = 0; i < PROMPT_SIGNALS; i++) {
        sigaction(prompt_signals[i], NULL, &prev[i]);
        if (prev[i].sa_handler != SIG_IGN) sigaction(prompt_signals[i], &sa, NULL);
    }
    if (tcsetattr(fd, TCSANOW, &prompt_quiet) != 0) {
        snprintf(err, errlen, "cannot turn off terminal echo for the secret: %s", strerror(errno));
        prompt_end(prev, NULL, 0);
        return -1;
    }
    return 0;
}

int endpoint_cmd_read_secret(FILE *in, char *buf, size_t cap, char *err, size_t errlen)
{
    struct termios old;
    struct sigaction prev[PROMPT_SIGNALS];
    int tty = isatty(fileno(in)) && tcgetattr(fileno(in), &old) == 0, c, read_failed;
    size_t len;

    if (tty) {
        fprintf(stderr, "Endpoint secret (pdl_ntfset_...): ");
        if (prompt_begin(fileno(in), &old, prev, err, errlen) != 0) goto fail;
    }
    /* Byte by byte, not with fgets: a NUL inside the line must be seen (and
     * refused), not cut the secret short where it stands. len == cap: longer. */
    for (len = 0; len < cap && (c = getc(in)) != EOF && c != '\n'; len++)
        if (len < cap - 1) buf[len] = (char)c;
    read_failed = ferror(in);
    if (read_failed) snprintf(err, errlen, "cannot read the secret: %s", strerror(errno));
    if (tty) {
        fputc('\n', stderr);
        /* The read's error, if any, is the one to say; echo goes back on either way. */
        if (prompt_end(prev, read_failed ? NULL : err, errlen) != 0) goto fail;
    }
    if (read_failed) goto fail;
    if (len > 0 && len < cap && buf[len - 1] == '\r') len--;
    if (len > MAX_SECRET_LEN || len >= cap) {
        snprintf(err, errlen, "the secret is longer than %d characters", MAX_SECRET_LEN);
        goto fail;
    }
    buf[len] = '\0';
    if (len == 0) {
        snprintf(err, errlen, "no secret on standard input");
        goto fail;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] <= ' ' || (unsigned char)buf[i] >= 0x7f) {
            snprintf(err, errlen, "the secret must be printable ASCII without spaces");
            goto fail;
        }
    return (int)len;
fail:
    sodium_memzero(buf, cap);
    return -1;
}

/* Locks the secrets (against a concurrent rekey or rotation) and tells whether
 * the active ones are sealed with mk: at least one of them opens with it, or
 * there is none. A secret sealed with another key (the one `rekey` just
 * replaced, a wrong --key-file) would be one no worker can open. */
static int lock_secrets_sealed_with(PGconn *conn, const struct masterkey *mk, char *err, size_t errlen)
{
    PGresult *res = db_query(conn, SQL_LOCK_ACTIVE, err, errlen);
    int rows, opened = 0;

    if (res == NULL) return 0;
    rows = PQntuples(res);
    for (int r = 0; r < rows && !opened; r++) {
        unsigned char plain[MAX_SECRET_LEN];
        size_t len = 0;

        opened = masterkey_open_hex(mk, PQgetvalue(res, r, 0), plain, sizeof plain, &len) == 0;
        sodium_memzero(plain, sizeof plain);
    }
    PQclear(res);
    if (rows > 0 && !opened)
        snprintf(err, errlen, "none of the stored secrets opens with this master key; use the key file "
                              "serve uses (after a rekey, the new one); nothing changed");
    return rows == 0 || opened;
}

/* Opens the transaction that stores a new secret: the secrets table locked
 * against a concurrent rekey, and the key checked against what is stored. */
static int begin_secret_change(PGconn *conn, const struct masterkey *mk)
{
    char err[512] = "";

    if (db_exec(conn, DB_BEGIN_READ_COMMITTED, err, sizeof err) == 0 &&
        lock_secrets_sealed_with(conn, mk, err, sizeof err))
        return 0;
    fprintf(stderr, "paddlehook: %s\n", err);
    PQclear(PQexec(conn, "ROLLBACK"));
    return -1;
}

/* Commits what begin_secret_change began if stored (the statement's result,
 * or NULL when it failed and said why); rolls it back otherwise. */
static int end_secret_change(const struct config *cfg, PGconn *conn, PGresult *stored, const unsigned char *sealed,
                             size_t sealed_len)
{
    char err[512], hex[ENDPOINT_SEALED_HEX_MAX];
    struct db_change change = {ENDPOINT_SECRET_STORED_SQL, 1, {hex}};
    enum db_commit_outcome outcome;

    if (stored == NULL) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return -1;
    }
    sodium_bin2hex(hex, sizeof hex, sealed, sealed_len);
    outcome = db_commit(conn, cfg->db, &change, err, sizeof err);
    if (outcome != DB_COMMITTED) fprintf(stderr, "paddlehook: %s\n", err);
    if (outcome == DB_COMMIT_UNKNOWN) fprintf(stderr, "%s", OUTCOME_UNKNOWN);
    return outcome == DB_COMMITTED ? 0 : -1;
}

/* Reads a secret from stdin and seals it (sealed/hint are filled), then opens
 * the transaction that will store it (begin_secret_change). */
static int sealed_secret_from_stdin(const struct config *cfg, PGconn *conn, unsigned char *sealed,
                                    size_t sealed_cap, size_t *sealed_len,
                                    char hint[SECRET_HINT_CHARS + 1])
{
    struct masterkey mk;
    char secret[MAX_SECRET_LEN + 2], err[256];
    int len, rc = -1;

    if (masterkey_load(cfg->key_file, &mk, err, sizeof err) != 0) goto fail;
    len = endpoint_cmd_read_secret(stdin, secret, sizeof secret, err, sizeof err);
    if (len < 0) goto fail;
    if (strncmp(secret, "pdl_", 4) != 0)
        fprintf(stderr, "warning: Paddle endpoint secrets start with pdl_ntfset_; storing it anyway\n");
    if (masterkey_seal(&mk, (unsigned char *)secret, (size_t)len, sealed, sealed_cap) != 0) {
        snprintf(err, sizeof err, "cannot seal the secret");
        goto fail;
    }
    *sealed_len = (size_t)len + MASTERKEY_SEAL_OVERHEAD;
    {
        size_t from = len > SECRET_HINT_CHARS ? (size_t)len - SECRET_HINT_CHARS : 0;
        size_t n = (size_t)len - from;
        memcpy(hint, secret + from, n);
        hint[n] = '\0';
    }
    rc = begin_secret_change(conn, &mk);
    goto out;
fail:
    fprintf(stderr, "paddlehook: %s\n", err);
out:
    sodium_memzero(secret, sizeof secret);
    masterkey_wipe(&mk);
    return rc;
}

enum statement_kind { READS, WRITES };

static PGresult *run(PGconn *conn, enum statement_kind kind, const char *sql, int n, const char *const *values,
                     const int *lengths, const int *formats)
{
    int may_commit = kind == WRITES && PQtransactionStatus(conn) == PQTRANS_IDLE;
    PGresult *res = PQexecParams(conn, sql, n, NULL, values, lengths, formats, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_say_error(conn, res);
        /* A write of its own commits as it ends: the lost answer may have been a commit. */
        if (may_commit && PQstatus(conn) != CONNECTION_OK) fprintf(stderr, "%s", OUTCOME_UNKNOWN);
        PQclear(res);
        return NULL;
    }
    return res;
}

static void new_endpoint_id(char *out, size_t cap)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    size_t p = (size_t)snprintf(out, cap, "%s", ENDPOINT_ID_PREFIX);
    for (int i = 0; i < ENDPOINT_ID_RANDOM_CHARS && p + 1 < cap; i++)
        out[p++] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
    out[p] = '\0';
}

static int cmd_add(const struct config *cfg, PGconn *conn)
{
    unsigned char sealed[MAX_SECRET_LEN + MASTERKEY_SEAL_OVERHEAD];
    char id[MAX_ID_LEN + 1], hint[SECRET_HINT_CHARS + 1], tolerance[16], name[SHOWN_FIELD_MAX];
    const char *environment = cfg->environment ? cfg->environment : "sandbox";
    size_t sealed_len = 0;
    PGresult *res;

    /* Before the secret is asked for; the unique name still guards against an add racing this one. */
    {
        const char *values[1] = {cfg->args[1]};
        res = run(conn, READS, SQL_NAMED, 1, values, NULL, NULL);
    }
    if (res == NULL) return 1;
    if (PQntuples(res) > 0) {
        char taken[SHOWN_FIELD_MAX];
        shown_copy(name, sizeof name, cfg->args[1]);
        shown_copy(taken, sizeof taken, PQgetvalue(res, 0, 0));
        fprintf(stderr, "paddlehook: endpoint %s is named %s already; choose another name, or give it a new "
                        "secret with 'paddlehook endpoint rotate %s'\n", taken, name, taken);
        PQclear(res);
        return 1;
    }
    PQclear(res);
    if (sealed_secret_from_stdin(cfg, conn, sealed, sizeof sealed, &sealed_len, hint) != 0) return 1;
    new_endpoint_id(id, sizeof id);
    snprintf(tolerance, sizeof tolerance, "%d", cfg->tolerance);
    {
        const char *values[6] = {id, cfg->args[1], environment, tolerance, (char *)sealed, hint};
        const int lengths[6] = {0, 0, 0, 0, (int)sealed_len, 0};
        const int formats[6] = {0, 0, 0, 0, 1, 0};
        res = run(conn, WRITES, SQL_ADD, 6, values, lengths, formats);
    }
    if (end_secret_change(cfg, conn, res, sealed, sealed_len) != 0) {
        PQclear(res);
        return 1;
    }
    PQclear(res);
    shown_copy(name, sizeof name, cfg->args[1]);
    printf("endpoint %s added (%s, tolerance %ds, secret ...%s)\n", name, environment, cfg->tolerance, hint);
    printf("webhook URL path: /paddle/webhooks/%s\n", id);
    printf("%s\n", id);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        /* Committed already: the id must not be lost with the output. */
        fprintf(stderr, "paddlehook: endpoint %s was added, but its id could not be written out; "
                        "'paddlehook endpoint list' shows it\n", id);
        return 1;
    }
    return 0;
}

static int cmd_rotate(const struct config *cfg, PGconn *conn)
{
    unsigned char sealed[MAX_SECRET_LEN + MASTERKEY_SEAL_OVERHEAD];
    char hint[SECRET_HINT_CHARS + 1], max_active[16];
    const char *values[4] = {cfg->args[1], (char *)sealed, hint, max_active};
    const int formats[4] = {0, 1, 0, 0};
    int lengths[4] = {0, 0, 0, 0}, added, rc = 1;
    size_t sealed_len = 0;
    PGresult *res, *count = NULL;

    if (sealed_secret_from_stdin(cfg, conn, sealed, sizeof sealed, &sealed_len, hint) != 0) return 1;
    lengths[1] = (int)sealed_len;
    snprintf(max_active, sizeof max_active, "%d", MAX_SECRETS_PER_ENDPOINT);
    res = run(conn, WRITES, SQL_ROTATE, 4, values, lengths, formats);
    added = res && PQgetvalue(res, 0, 0)[0] == 't';
    /* What verifies once this commits, counted while the transaction holds the secrets locked. */
    if (added && (count = run(conn, READS, SQL_ACTIVE_COUNT, 1, values, NULL, NULL)) == NULL) {
        PQclear(res);
        res = NULL;
    }
    if (end_secret_change(cfg, conn, res, sealed, sealed_len) != 0) goto out;
    if (!added) {
        fprintf(stderr, "paddlehook: no endpoint %s, or it already has %d active secrets "
                        "(retire one first)\n", cfg->args[1], MAX_SECRETS_PER_ENDPOINT);
        goto out;
    }
    if (atoi(PQgetvalue(count, 0, 0)) > 1)
        printf("endpoint %s: secret ...%s added; old and new secrets both verify until "
               "'paddlehook endpoint retire-secret %s'\n", cfg->args[1], hint, cfg->args[1]);
    else
        printf("endpoint %s: secret ...%s added; it is the only one that verifies\n", cfg->args[1], hint);
    rc = 0;
out:
    PQclear(count);
    PQclear(res);
    return rc;
}

static int cmd_retire(const struct config *cfg, PGconn *conn)
{
    const char *values[1] = {cfg->args[1]};
    PGresult *res = run(conn, WRITES, SQL_RETIRE, 1, values, NULL, NULL);
    long n;

    if (res == NULL) return 1;
    n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (n == 0) {
        fprintf(stderr, "paddlehook: endpoint %s has no older secret to retire\n", cfg->args[1]);
        return 1;
    }
    printf("endpoint %s: %ld older secret%s retired; only the newest verifies now\n", cfg->args[1], n,
           n == 1 ? "" : "s");
    return 0;
}

/* One setting of one endpoint through a function of 0021 or 0024 that answers whether the endpoint exists. */
static int set_endpoint(PGconn *conn, const char *sql, const char *id, const char *value)
{
    const char *values[2] = {id, value};
    PGresult *res = run(conn, WRITES, sql, 2, values, NULL, NULL);
    int found;

    if (res == NULL) return -1;
    found = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!found) fprintf(stderr, "paddlehook: no endpoint %s\n", id);
    return found ? 0 : -1;
}

static int cmd_set_enabled(const struct config *cfg, PGconn *conn, int enabled)
{
    if (set_endpoint(conn, SQL_SET_ENABLED, cfg->args[1], enabled ? "true" : "false") != 0) return 1;
    printf("endpoint %s %s\n", cfg->args[1], enabled ? "enabled" : "disabled");
    return 0;
}

static int cmd_enable(const struct config *cfg, PGconn *conn)
{
    return cmd_set_enabled(cfg, conn, 1);
}

static int cmd_disable(const struct config *cfg, PGconn *conn)
{
    return cmd_set_enabled(cfg, conn, 0);
}

static int cmd_set_tolerance(const struct config *cfg, PGconn *conn)
{
    if (set_endpoint(conn, SQL_SET_TOLERANCE, cfg->args[1], cfg->args[2]) != 0) return 1;
    printf("endpoint %s: tolerance %ss\n", cfg->args[1], cfg->args[2]);
    return 0;
}

static int cmd_list(const struct config *cfg, PGconn *conn)
{
    PGresult *res = run(conn, READS, SQL_LIST, 0, NULL, NULL, NULL);

    (void)cfg; /* the actions' shape: list takes no operand */
    if (res == NULL) return 1;
    printf("%-24s %-20s %-8s %-9s %-8s %s\n", "ID", "NAME", "ENV", "TOLERANCE", "STATE", "SECRETS");
    for (int r = 0; r < PQntuples(res); r++) {
        char id[SHOWN_FIELD_MAX], name[SHOWN_FIELD_MAX], hints[SHOWN_FIELD_MAX];
        /* All of it as shown: anyone who may write these tables chooses the text. */
        shown_copy(id, sizeof id, PQgetvalue(res, r, 0));
        shown_copy(name, sizeof name, PQgetvalue(res, r, 1));
        shown_copy(hints, sizeof hints, PQgetisnull(res, r, 5) ? "(none)" : PQgetvalue(res, r, 5));
        printf("%-24s %-20s %-8s %-9s %-8s %s\n", id, name, PQgetvalue(res, r, 2), PQgetvalue(res, r, 3),
               PQgetvalue(res, r, 4)[0] == 't' ? "enabled" : "disabled", hints);
    }
    PQclear(res);
    return 0;
}

/* Each action with its operands (the action's own included), its usage, and
 * whether it changes an existing endpoint (its output then only reports a
 * change already committed). */
static const struct action {
    const char *name;
    int n_args;
    const char *usage;
    int (*run)(const struct config *cfg, PGconn *conn);
    int changes_endpoint;
} actions[] = {
    {"add", 2, "add NAME [--environment sandbox|live] [--tolerance SECONDS] < secret", cmd_add, 0},
    {"list", 1, "list", cmd_list, 0},
    {"rotate", 2, "rotate ID < secret", cmd_rotate, 1},
    {"retire-secret", 2, "retire-secret ID", cmd_retire, 1},
    {"disable", 2, "disable ID", cmd_disable, 1},
    {"enable", 2, "enable ID", cmd_enable, 1},
    {"set-tolerance", 3, "set-tolerance ID SECONDS", cmd_set_tolerance, 1},
};

int endpoint_cmd_run(const struct config *cfg)
{
    const struct action *act = NULL;
    PGconn *conn;
    long seconds;
    int rc;

    for (size_t i = 0; cfg->n_args > 0 && i < sizeof actions / sizeof actions[0]; i++)
        if (strcmp(actions[i].name, cfg->args[0]) == 0) act = &actions[i];
    if (act == NULL) {
        fprintf(stderr, "usage: paddlehook endpoint add|list|rotate|retire-secret|disable|enable|set-tolerance "
                        "...\n");
        return 2;
    }
    /* Usage is checked before connecting: a usage error is one without a database too. */
    if (cfg->n_args != act->n_args) {
        fprintf(stderr, "usage: paddlehook endpoint %s\n", act->usage);
        return 2;
    }
    if (strcmp(act->name, "add") == 0 && (cfg->args[1][0] == '\0' || strlen(cfg->args[1]) > MAX_ENDPOINT_NAME_LEN)) {
        fprintf(stderr, "paddlehook endpoint: a name is 1 to %d bytes long\n", MAX_ENDPOINT_NAME_LEN);
        return 2;
    }
    /* Digits only: the operand goes to the database and into the output as it is. */
    if (strcmp(act->name, "set-tolerance") == 0 &&
        (strspn(cfg->args[2], "0123456789") != strlen(cfg->args[2]) ||
         config_parse_long(cfg->args[2], 1, SIG_TOLERANCE_MAX, &seconds) != 0)) {
        fprintf(stderr, "paddlehook endpoint: a tolerance is 1 to %d seconds\n", SIG_TOLERANCE_MAX);
        return 2;
    }
    conn = db_connect_or_say(cfg->db);
    if (conn == NULL) return 1;
    rc = act->run(cfg, conn);
    /* The change has committed by now: its lost report must not read as a failed change (add says which id
     * it stored itself). */
    if (rc == 0 && act->changes_endpoint && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "paddlehook endpoint %s: done, but its output could not be written; 'paddlehook endpoint "
                        "list' shows the endpoint\n", act->name);
        rc = 1;
    }
    PQfinish(conn);
    return rc;
}
