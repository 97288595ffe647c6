/* worker.c - a worker's life: wait for a request, handle it, repeat.
 *
 * SIGTERM and SIGHUP only set flags, and they are blocked at all times except
 * inside ppoll() on the (non-blocking) listening socket. So a signal can
 * neither be lost between a flag check and a blocking call, nor interrupt
 * libfcgi halfway through reading an accepted request.
 *
 * When nginx asks to keep the connection (fastcgi_keep_conn on), the worker
 * waits for the next request on it and on the listening socket together. A
 * new connection waiting while the kept one is idle wins: the kept one is
 * closed, so that no request queues behind an idle connection (nginx retries a
 * request it sent on a cached connection that closed under it).
 */
#include "worker.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/time.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fcgiapp.h>
#include <sodium.h>

#include "http.h"
#include "log.h"
#include "webhook.h"

#define RELOAD_MIN_INTERVAL_MS 1000
/* accept() failing this often in a row means the socket is broken: exit and
 * let the supervisor start a fresh worker. */
#define MAX_ACCEPT_FAILURES 100
#define ACCEPT_BACKOFF_MS 10
/* A peer that starts a request and stalls must not hold a worker: past this
 * deadline SIGALRM interrupts libfcgi's blocking read and the connection is
 * dropped. libpq retries its own waits on EINTR, so a slow database is not
 * affected. */
#define REQUEST_DEADLINE_S 5
/* Unread request body drained to keep a connection for the next request; a
 * larger rest (a rejected upload) closes the connection instead. */
#define KEEP_CONN_DRAIN_MAX (64 * 1024)

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void on_stop(int sig) { (void)sig; stop_requested = 1; }
static void on_deadline(int sig) { (void)sig; }
static void on_reload(int sig) { (void)sig; reload_requested = 1; }

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void install_handlers(sigset_t *handled)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the signal must interrupt accept() */
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_reload;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_deadline;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    /* libfcgi turns SIGUSR1 into "stop accepting" for good; we don't use it. */
    sigaction(SIGUSR1, &sa, NULL);

    sigemptyset(handled);
    sigaddset(handled, SIGTERM);
    sigaddset(handled, SIGINT);
    sigaddset(handled, SIGHUP);
}

static int reload(struct worker *w, const char *why)
{
    char err[256];

    w->next_reload_ms = now_ms() + RELOAD_MIN_INTERVAL_MS;
    w->endpoints_stale = 1;
    if (store_ready(&w->store) != 0) return -1;
    if (endpoints_load(w->store.conn, &w->key, &w->endpoints, err, sizeof err) != 0) {
        log_line(LOG_ERROR, "event=endpoints_load_failed reason=\"%s\"", err);
        return -1;
    }
    if (w->endpoints.unreadable && w->cfg->key_file) {
        /* Re-keyed, and perhaps the new key file is already in place. */
        struct masterkey fresh;
        if (masterkey_load(w->cfg->key_file, &fresh, err, sizeof err) == 0 &&
            sodium_memcmp(fresh.key, w->key.key, sizeof fresh.key) != 0) {
            w->key = fresh;
            if (endpoints_load(w->store.conn, &w->key, &w->endpoints, err, sizeof err) != 0)
                log_line(LOG_ERROR, "event=endpoints_load_failed reason=\"%s\"", err);
            else
                log_line(LOG_INFO, "event=key_reloaded why=secrets_sealed_with_new_key");
        }
        masterkey_wipe(&fresh);
    }
    w->endpoints_loaded = 1;
    w->endpoints_stale = 0;
    log_line(LOG_DEBUG, "event=endpoints_loaded count=%zu why=%s", w->endpoints.n, why);
    return 0;
}

/* Cheap per-request check for changes announced by the endpoint commands. */
static void refresh(struct worker *w)
{
    int changed = store_endpoints_changed(&w->store);

    /* A connection found dead just now: reconnect first, so that the request
     * is checked against endpoints as they are, not as they were. */
    if (w->store.conn == NULL) store_ready(&w->store);

    if (reload_requested) {
        char err[256];
        reload_requested = 0;
        /* A rotated master key (`paddlehook rekey`) takes effect here. */
        if (w->cfg->key_file && masterkey_load(w->cfg->key_file, &w->key, err, sizeof err) != 0)
            log_line(LOG_ERROR, "event=key_reload_failed reason=\"%s\" kept=previous", err);
        reload(w, "sighup");
    } else if (changed || w->store.reconnected || !w->endpoints_loaded) {
        if (store_ready(&w->store) == 0) {
            w->store.reconnected = 0;
            reload(w, changed ? "notify" : "connect");
        }
    }
}

enum endpoint_lookup worker_endpoint(struct worker *w, const char *id, const struct endpoint **out)
{
    *out = endpoints_find(&w->endpoints, id);
    if (*out == NULL && now_ms() >= w->next_reload_ms) {
        /* Added a moment ago and its notification not read yet? */
        reload(w, "miss");
        *out = endpoints_find(&w->endpoints, id);
    }
    if (*out) return ENDPOINT_FOUND;
    /* Unknown only if the table is current: with the database unreachable the
     * endpoint may have been added since, and a 503 makes Paddle retry. */
    return w->endpoints_loaded && !w->endpoints_stale ? ENDPOINT_UNKNOWN : ENDPOINT_UNAVAILABLE;
}

enum wake { WAKE_SIGNAL, WAKE_LISTEN, WAKE_KEPT };

/* Sleeps in ppoll() with the signals unblocked until the listening socket has
 * a connection, the kept connection (kept_fd >= 0) has data or hung up, or a
 * signal arrives. The kept connection wins when both are ready. */
static enum wake wait_for_work(int listen_fd, int kept_fd, const sigset_t *waiting_mask)
{
    struct pollfd pfd[2] = {{.fd = listen_fd, .events = POLLIN}, {.fd = kept_fd, .events = POLLIN}};
    int n = ppoll(pfd, kept_fd >= 0 ? 2 : 1, NULL, waiting_mask);

    if (n <= 0) return WAKE_SIGNAL;
    if (kept_fd >= 0 && pfd[1].revents) return WAKE_KEPT;
    return WAKE_LISTEN;
}

/* libfcgi keeps the connection after FCGX_Finish_r only when nginx asked for
 * it and the request's input was read to its end (otherwise the next request
 * would start in the middle of this one's body). ipcFd and keepConnection are
 * fields of libfcgi's public FCGX_Request. */
static void finish_request(FCGX_Request *fcgx)
{
    if (fcgx->keepConnection && !FCGX_HasSeenEOF(fcgx->in)) {
        char rest[4096];
        size_t drained = 0;
        int n;
        while (drained < KEEP_CONN_DRAIN_MAX && (n = FCGX_GetStr(rest, sizeof rest, fcgx->in)) > 0)
            drained += (size_t)n;
        if (!FCGX_HasSeenEOF(fcgx->in)) fcgx->keepConnection = 0;
    }
    FCGX_Finish_r(fcgx);
}

static void set_deadline(int seconds)
{
    struct itimerval t = {.it_value = {.tv_sec = seconds}};
    setitimer(ITIMER_REAL, &t, NULL);
}

static void backoff(void)
{
    struct timespec ts = {0, ACCEPT_BACKOFF_MS * 1000000L};
    nanosleep(&ts, NULL);
}

int worker_run(const struct config *cfg, const struct masterkey *mk, int listen_fd,
               struct stats *stats)
{
    struct worker w;
    FCGX_Request fcgx;
    sigset_t handled, waiting_mask;
    int accepted, accept_failures = 0, rc = 1;

    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.key = *mk;
    w.stats = stats;
    store_init(&w.store, cfg->db, stats);
    install_handlers(&handled);
    sigprocmask(SIG_BLOCK, &handled, &waiting_mask);
    sigdelset(&waiting_mask, SIGTERM);
    sigdelset(&waiting_mask, SIGINT);
    sigdelset(&waiting_mask, SIGHUP);

    w.body = malloc(cfg->max_body + 1);
    if (w.body == NULL || FCGX_Init() != 0 ||
        FCGX_InitRequest(&fcgx, listen_fd, 0) != 0) {
        log_line(LOG_ERROR, "event=worker_init_failed");
        goto out;
    }
    refresh(&w);
    log_line(LOG_INFO, "event=worker_started");
    while (!stop_requested) {
        enum wake wake;
        if (reload_requested) refresh(&w);
        wake = wait_for_work(listen_fd, fcgx.ipcFd, &waiting_mask);
        if (wake == WAKE_SIGNAL) continue;
        if (wake == WAKE_LISTEN && fcgx.ipcFd >= 0) FCGX_Free(&fcgx, 1); /* give up the idle one */
        set_deadline(REQUEST_DEADLINE_S);
        if ((accepted = FCGX_Accept_r(&fcgx)) < 0) {
            set_deadline(0);
            /* libfcgi returns -errno; EAGAIN: another worker took the connection. */
            if (-accepted == EAGAIN || -accepted == EWOULDBLOCK) continue;
            log_line(LOG_WARN, "event=accept_failed reason=\"%s\"", strerror(-accepted));
            if (++accept_failures > MAX_ACCEPT_FAILURES) {
                log_line(LOG_ERROR, "event=accept_failing");
                goto out;
            }
            backoff();
            continue;
        }
        accept_failures = 0;
        refresh(&w);
        {
            struct http_request req;
            http_request_init(&req, &fcgx);
            webhook_handle(&w, &req);
        }
        /* The deadline stays armed: if it fires later, ppoll() returns EINTR and
         * the loop goes on; the next request re-arms it. One syscall less. */
        finish_request(&fcgx);
    }
    FCGX_Free(&fcgx, 1);
    log_line(LOG_INFO, "event=worker_stopped");
    rc = 0;
out:
    endpoints_free(&w.endpoints);
    masterkey_wipe(&w.key);
    store_close(&w.store);
    free(w.body);
    return rc;
}
