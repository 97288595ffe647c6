/* worker.c - a worker's life: accept a request, handle it, repeat.
 *
 * SIGTERM and SIGHUP only set flags; they are blocked while a request is
 * handled, so an in-flight request always finishes, and unblocked around
 * accept(), which they interrupt (FCGI_FAIL_ACCEPT_ON_INTR).
 */
#include "worker.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fcgiapp.h>

#include "http.h"
#include "log.h"
#include "webhook.h"

#define RELOAD_MIN_INTERVAL_MS 1000
/* accept() failing this often in a row means the socket is broken: exit and
 * let the supervisor start a fresh worker. */
#define MAX_ACCEPT_FAILURES 100

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void on_stop(int sig) { (void)sig; stop_requested = 1; }
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
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    sigemptyset(handled);
    sigaddset(handled, SIGTERM);
    sigaddset(handled, SIGINT);
    sigaddset(handled, SIGHUP);
}

static int reload(struct worker *w, const char *why)
{
    char err[256];

    w->next_reload_ms = now_ms() + RELOAD_MIN_INTERVAL_MS;
    if (store_ready(&w->store) != 0) return -1;
    if (endpoints_load(w->store.conn, w->mk, &w->endpoints, err, sizeof err) != 0) {
        log_line(LOG_ERROR, "event=endpoints_load_failed reason=\"%s\"", err);
        return -1;
    }
    w->endpoints_loaded = 1;
    log_line(LOG_DEBUG, "event=endpoints_loaded count=%zu why=%s", w->endpoints.n, why);
    return 0;
}

/* Cheap per-request check for changes announced by the endpoint commands. */
static void refresh(struct worker *w)
{
    int changed = store_endpoints_changed(&w->store);

    if (reload_requested) {
        reload_requested = 0;
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
    return w->endpoints_loaded ? ENDPOINT_UNKNOWN : ENDPOINT_UNAVAILABLE;
}

int worker_run(const struct config *cfg, const struct masterkey *mk, int listen_fd)
{
    struct worker w;
    FCGX_Request fcgx;
    sigset_t handled;
    int accept_failures = 0, rc = 1;

    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.mk = mk;
    store_init(&w.store, cfg->db);
    install_handlers(&handled);
    sigprocmask(SIG_BLOCK, &handled, NULL);

    w.body = malloc(cfg->max_body + 1);
    if (w.body == NULL || FCGX_Init() != 0 ||
        FCGX_InitRequest(&fcgx, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) != 0) {
        log_line(LOG_ERROR, "event=worker_init_failed");
        goto out;
    }
    refresh(&w);
    log_line(LOG_INFO, "event=worker_started");
    while (!stop_requested) {
        int accepted;

        sigprocmask(SIG_UNBLOCK, &handled, NULL);
        accepted = stop_requested ? -1 : FCGX_Accept_r(&fcgx);
        sigprocmask(SIG_BLOCK, &handled, NULL);
        if (accepted < 0) {
            if (stop_requested) break;
            if (reload_requested) {
                refresh(&w);
                continue;
            }
            if (++accept_failures > MAX_ACCEPT_FAILURES) {
                log_line(LOG_ERROR, "event=accept_failing");
                goto out;
            }
            continue;
        }
        accept_failures = 0;
        refresh(&w);
        {
            struct http_request req;
            http_request_init(&req, &fcgx);
            webhook_handle(&w, &req);
        }
        FCGX_Finish_r(&fcgx);
    }
    log_line(LOG_INFO, "event=worker_stopped");
    rc = 0;
out:
    endpoints_free(&w.endpoints);
    store_close(&w.store);
    free(w.body);
    return rc;
}
