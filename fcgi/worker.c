/* worker.c - a worker's life: wait for a request, handle it, repeat.
 *
 * SIGTERM, SIGINT and SIGHUP stay blocked and arrive through a signalfd that
 * is polled with the sockets: a signal is neither lost between a check and a
 * blocking call, nor interrupts libfcgi halfway through reading a request, and
 * a stop is seen even while requests keep arriving.
 *
 * The worker accepts connections itself and hands each to libfcgi, which
 * only reads requests from it (its request is set up without a listening
 * socket). Accepting inside libfcgi would take the next queued connection
 * when one ends without a request, and that connection would inherit the
 * time its predecessor had used of the request deadline.
 *
 * When nginx asks to keep the connection (fastcgi_keep_conn on), the worker
 * waits for the next request on it and on the listening socket together. A
 * new connection waiting while the kept one is idle is accepted and the kept
 * one closed, so that no request queues behind an idle connection (nginx
 * retries a request it sent on a cached connection that closed under it:
 * the snippet's fastcgi_next_upstream allows it for POST, non_idempotent).
 *
 * The database socket is polled too: endpoint change notifications and a
 * connection the server closed are dealt with as they arrive, so a request
 * costs no extra read to look for them.
 */
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>
#include <sodium.h>

#include "db.h"
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
 * dropped. Database waits retry on EINTR (db.c) under their own deadline,
 * so a slow database is not affected. */
#define REQUEST_DEADLINE_S 5
/* After the deadline SIGALRM repeats this often while the connection is
 * served: libfcgi closes a connection by reading until the peer is quiet for
 * 2 s, and a peer trickling a byte a second would keep it reading for good.
 * Each repeat ends such a read, so a connection is gone about a second past
 * its deadline. */
#define DEADLINE_REPEAT_S 1
/* Unread request body drained to keep a connection for the next request; a
 * larger rest (a rejected upload) closes the connection instead. */
#define KEEP_CONN_DRAIN_MAX (64 * 1024)
#define DRAIN_DEADLINE_S 1
/* Without a database connection an idle worker tries again after 2 s, then
 * less often while the database stays away (a connect to a host that drops
 * packets blocks for the connect timeout), so that a delivery after an outage
 * finds it connected, its endpoints loaded. */
#define IDLE_RECONNECT_MS 2000
#define IDLE_RECONNECT_MAX_MS 30000

static void on_deadline(int sig) { (void)sig; }

/* Blocks stop and reload signals and returns a signalfd for them, -1 on error. */
static int install_handlers(void)
{
    struct sigaction sa;
    sigset_t set;

    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the deadline must interrupt a blocking read */
    sa.sa_handler = on_deadline;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    /* libfcgi turns SIGUSR1 into "stop accepting" for good; we don't use it. */
    sigaction(SIGUSR1, &sa, NULL);

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* Only these: SIGALRM, the request deadline, must get through. */
    sigprocmask(SIG_SETMASK, &set, NULL);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* Reads the pending stop and reload signals into the worker's flags. */
static void take_signals(struct worker *w, int sig_fd)
{
    struct signalfd_siginfo si;

    while (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) w->reload_requested = 1;
        else w->stop_requested = 1;
    }
}

static int reload(struct worker *w, const char *why)
{
    char err[256];

    w->next_reload_ms = db_now_ms() + RELOAD_MIN_INTERVAL_MS;
    w->endpoints_stale = 1;
    if (store_ready(&w->store) != 0) return -1;
    if (endpoints_load(&w->store, &w->key, &w->endpoints, err, sizeof err) != 0) {
        log_line(LOG_ERROR, "event=endpoints_load_failed reason=\"%s\"", err);
        /* A live connection refused the query. A lost one is the unreachable case (endpoints_trusted), but
         * never clears what an earlier refusal set: only a reload that succeeds does. */
        if (w->store.conn != NULL && PQstatus(w->store.conn) == CONNECTION_OK) w->endpoints_failed = 1;
        return -1;
    }
    if (w->endpoints.unreadable && w->cfg->key_file) {
        /* Re-keyed, and perhaps the new key file is already in place. */
        struct masterkey fresh;
        if (masterkey_load(w->cfg->key_file, &fresh, err, sizeof err) == 0 &&
            sodium_memcmp(fresh.key, w->key.key, sizeof fresh.key) != 0) {
            w->key = fresh;
            if (endpoints_load(&w->store, &w->key, &w->endpoints, err, sizeof err) != 0)
                log_line(LOG_ERROR, "event=endpoints_load_failed reason=\"%s\"", err);
            else
                log_line(LOG_INFO, "event=key_reloaded why=secrets_sealed_with_new_key");
        }
        masterkey_wipe(&fresh);
    }
    w->endpoints_loaded = 1;
    w->endpoints_stale = 0;
    w->endpoints_failed = 0;
    log_line(LOG_DEBUG, "event=endpoints_loaded count=%zu why=%s", w->endpoints.n, why);
    return 0;
}

/* Whether the endpoints table may decide a request: loaded, and the last
 * reload did not fail on a database that answered (it may have been for a
 * change: an endpoint disabled, a secret retired). While the database is
 * unreachable the table as it was still tells a bad signature (401); nothing
 * can be stored then anyway. */
static int endpoints_trusted(const struct worker *w)
{
    return w->endpoints_loaded && !w->endpoints_failed;
}

/* Applies changes announced by the endpoint commands and reconnects a lost
 * connection. read_socket: the database socket polled readable; otherwise
 * only notifications libpq read along with the last result are looked at, so
 * the per-request check costs no syscall. */
static void refresh(struct worker *w, int read_socket)
{
    int changed = store_endpoints_changed(&w->store, read_socket) | w->change_pending;

    w->change_pending = 0;

    /* A connection found dead just now: reconnect first, so that the request
     * is checked against endpoints as they are, not as they were. */
    if (w->store.conn == NULL) store_ready(&w->store);

    /* NOTIFYs sent while the connection was down are lost with it. */
    if (w->store.conn == NULL) w->endpoints_stale = 1;
    else w->idle_reconnect_ms = IDLE_RECONNECT_MS;

    if (w->reload_requested) {
        char err[256];
        w->reload_requested = 0;
        store_reload_session(&w->store);
        /* A rotated master key (`paddlehook rekey`) takes effect here. */
        if (w->cfg->key_file && masterkey_load(w->cfg->key_file, &w->key, err, sizeof err) != 0)
            log_line(LOG_ERROR, "event=key_reload_failed reason=\"%s\" kept=previous", err);
        /* Said at info level: an operator's reload shows that it took effect, worker by worker. */
        log_line(LOG_INFO, "event=reloaded endpoints=%s", reload(w, "sighup") == 0 ? "loaded" : "kept");
    } else if (changed || w->store.reconnected || (!endpoints_trusted(w) && db_now_ms() >= w->next_reload_ms)) {
        /* A reload that failed is tried again, at most once per RELOAD_MIN_INTERVAL_MS: until one
         * succeeds, a change it would have brought (an endpoint disabled, a secret retired) is unknown. */
        const char *why = changed ? "notify" : w->store.reconnected ? "connect" : "retry";
        if (store_ready(&w->store) == 0) {
            w->store.reconnected = 0;
            reload(w, why);
        }
    }
}

enum endpoint_lookup worker_endpoint(struct worker *w, const char *id, const struct endpoint **out)
{
    *out = endpoints_find(&w->endpoints, id);
    if (*out == NULL && db_now_ms() >= w->next_reload_ms) {
        /* Added a moment ago and its notification not read yet? */
        reload(w, "miss");
        *out = endpoints_find(&w->endpoints, id);
    }
    /* A 503 makes Paddle retry. */
    if (!endpoints_trusted(w)) return ENDPOINT_UNAVAILABLE;
    if (*out) return ENDPOINT_FOUND;
    /* Unknown only if the table is current: with the database unreachable the
     * endpoint may have been added since. */
    return w->endpoints_stale ? ENDPOINT_UNAVAILABLE : ENDPOINT_UNKNOWN;
}

enum wake { WAKE_NONE, WAKE_DB, WAKE_LISTEN, WAKE_KEPT };

/* Sleeps until the listening socket has a connection, the kept connection
 * (kept_fd >= 0) has data or hung up, the database sent something (a
 * notification, or its connection closed) or, without a connection, it is time
 * to reconnect (WAKE_DB), or a stop/reload signal arrives (then the flags are
 * set and WAKE_NONE returned). The database goes first, so a request is
 * checked against current endpoints; then the kept connection. */
static enum wake wait_for_work(struct worker *w, int sig_fd, int listen_fd, int kept_fd)
{
    /* A change notification that came in with a query's results (a reload's, a delivery's) will not make the
     * socket readable: remembered, it is applied at once, not at the next request. No syscall to look. */
    w->change_pending |= store_endpoints_changed(&w->store, 0);
    int db_fd = store_socket(&w->store);
    struct pollfd pfd[4] = {{.fd = sig_fd, .events = POLLIN}, {.fd = db_fd, .events = POLLIN},
                            {.fd = listen_fd, .events = POLLIN}, {.fd = kept_fd, .events = POLLIN}};
    /* A negative fd is skipped. Connected, an idle worker whose endpoints are
     * not current wakes to load them again. */
    int n = poll(pfd, 4, db_fd < 0            ? w->idle_reconnect_ms
                         : w->change_pending    ? 0
                         : endpoints_trusted(w) ? -1
                                                : RELOAD_MIN_INTERVAL_MS);

    if (n == 0) {
        /* Back off until a connection succeeds (refresh() then resets it). */
        if (db_fd < 0)
            w->idle_reconnect_ms = w->idle_reconnect_ms * 2 > IDLE_RECONNECT_MAX_MS ? IDLE_RECONNECT_MAX_MS
                                                                                    : w->idle_reconnect_ms * 2;
        return WAKE_DB;
    }
    if (n < 0) return WAKE_NONE; /* EINTR: none is expected (the deadline is off here); look again */
    if (pfd[0].revents) {
        take_signals(w, sig_fd);
        return WAKE_NONE;
    }
    if (pfd[1].revents) return WAKE_DB;
    if (pfd[3].revents) return WAKE_KEPT;
    return WAKE_LISTEN;
}

/* A kept connection that is idle has nothing of ours on it: closed at once.
 * libfcgi's own close would read from the peer until it is quiet for 2 s,
 * with no deadline armed to cut a peer that keeps sending. */
static void drop_idle_connection(FCGX_Request *fcgx)
{
    if (fcgx->ipcFd >= 0) close(fcgx->ipcFd);
    fcgx->ipcFd = -1;
}

/* Takes a waiting connection into fcgx; a kept one, idle, is dropped for it
 * (nothing of ours is lost). 0 when fcgx now holds the new connection, -1
 * with errno set when there was none (EAGAIN: another worker was faster;
 * ours is kept). FCGX_Accept_r reads the request from ipcFd when it is set;
 * it first finishes the previous request, which closes ipcFd unless
 * keepConnection is set (the new request's begin record then sets it).
 * tcp: no Nagle delay between the records of an answer, as libfcgi's own
 * accept did; set per connection, since one queued before serve started
 * inherits nothing from its listening socket. */
static int take_connection(FCGX_Request *fcgx, int listen_fd, int tcp)
{
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0) return -1;
    if (tcp) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    drop_idle_connection(fcgx);
    fcgx->ipcFd = fd;
    fcgx->keepConnection = 1;
    return 0;
}

/* seconds 0 disarms the timer. */
static void set_deadline(int seconds)
{
    struct itimerval t = {.it_value = {.tv_sec = seconds},
                          .it_interval = {.tv_sec = seconds ? DEADLINE_REPEAT_S : 0}};
    setitimer(ITIMER_REAL, &t, NULL);
}

/* libfcgi keeps the connection after FCGX_Finish_r only when nginx asked for
 * it and the request's input was read to its end (otherwise the next request
 * would start in the middle of this one's body). ipcFd and keepConnection are
 * FCGX_Request fields fcgiapp.h marks as internal; unchanged since libfcgi 2.4. */
/* Ends the request; 0 when its answer was written whole to nginx's
 * connection. The streams are closed as FCGX_Finish_r closes them (which
 * then only frees them), to learn whether the writes failed. */
static int finish_request(FCGX_Request *fcgx, int tcp)
{
    int failed = 0;

    if (fcgx->keepConnection && !FCGX_HasSeenEOF(fcgx->in)) {
        char rest[4096];
        size_t drained = 0;
        int n;

        set_deadline(DRAIN_DEADLINE_S); /* the request's own may be spent */
        while (drained < KEEP_CONN_DRAIN_MAX && (n = FCGX_GetStr(rest, sizeof rest, fcgx->in)) > 0)
            drained += (size_t)n;
        if (!FCGX_HasSeenEOF(fcgx->in)) fcgx->keepConnection = 0;
    }
    /* Over TCP the first write after nginx hung up succeeds (the refusal comes back after it): a hang-up is
     * looked for before writing. A unix socket refuses that write itself. A peer that only shut its sending
     * side looks the same, and is counted too: nginx never does that. */
    if (tcp) {
        struct pollfd hung = {.fd = fcgx->ipcFd, .events = POLLRDHUP};
        failed = poll(&hung, 1, 0) == 1 && (hung.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
    }
    failed |= FCGX_FClose(fcgx->err) != 0;
    failed |= FCGX_FClose(fcgx->out) != 0;
    FCGX_Finish_r(fcgx);
    return failed ? -1 : 0;
}

/* EAGAIN: another worker took the connection. Anything else (EMFILE,
 * ENOBUFS, ...) is logged, counted and waited out, so that a listening socket
 * that stays readable cannot spin the worker. -1 when the worker should give
 * up. */
static int accept_failed(int err, int *failures)
{
    struct timespec pause = {0, ACCEPT_BACKOFF_MS * 1000000L};

    if (err == EAGAIN || err == EWOULDBLOCK || err == ECONNABORTED) return 0;
    log_line(LOG_WARN, "event=accept_failed reason=\"%s\"", strerror(err));
    if (++*failures > MAX_ACCEPT_FAILURES) {
        log_line(LOG_ERROR, "event=accept_failing");
        return -1;
    }
    nanosleep(&pause, NULL);
    return 0;
}

int worker_run(const struct config *cfg, const struct masterkey *mk, int listen_fd,
               struct stats *stats)
{
    struct worker w;
    FCGX_Request fcgx;
    int accept_failures = 0, rc = 1, sig_fd, domain = 0, listen_tcp;
    socklen_t domain_len = sizeof domain;

    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.key = *mk;
    w.stats = stats;
    w.idle_reconnect_ms = IDLE_RECONNECT_MS;
    store_init(&w.store, cfg->db, stats);
    sig_fd = install_handlers();

    w.body = malloc(cfg->max_body + 1);
    if (sig_fd < 0 || w.body == NULL || FCGX_Init() != 0 ||
        FCGX_InitRequest(&fcgx, -1, 0) != 0) {
        log_line(LOG_ERROR, "event=worker_init_failed");
        goto out;
    }
    getsockopt(listen_fd, SOL_SOCKET, SO_DOMAIN, &domain, &domain_len);
    listen_tcp = domain == AF_INET || domain == AF_INET6;
    refresh(&w, 1);
    log_line(LOG_INFO, "event=worker_started");
    while (!w.stop_requested) {
        enum wake wake = wait_for_work(&w, sig_fd, listen_fd, fcgx.ipcFd);
        if (w.reload_requested || wake == WAKE_DB) refresh(&w, wake == WAKE_DB);
        if (wake == WAKE_NONE || wake == WAKE_DB) continue;
        if (wake == WAKE_LISTEN) {
            if (take_connection(&fcgx, listen_fd, listen_tcp) != 0) {
                if (accept_failed(errno, &accept_failures) != 0) goto out;
                continue;
            }
            accept_failures = 0;
        }
        /* The request began when the socket woke us (a connection, or a kept
         * one's first record): its database time counts from then, however
         * slow its parameters. */
        long long began_ms = db_now_ms();
        set_deadline(REQUEST_DEADLINE_S);
        store_set_deadline(&w.store, began_ms + STORE_TIMEOUT_MS);
        /* Without a listening socket libfcgi cannot accept: it fails only
         * when the connection carried no request (closed, cut by the deadline,
         * or not FastCGI), and has closed it then. */
        if (FCGX_Accept_r(&fcgx) < 0) {
            set_deadline(0);
            store_set_deadline(&w.store, 0);
            /* nginx closes kept connections it no longer needs, but opens one
             * only to send a request: a new one without a request is a peer
             * that stalled, one that does not speak FastCGI (an nginx
             * location with proxy_pass instead of fastcgi_pass), or a probe
             * (a health check, a second serve testing the socket path). */
            if (wake == WAKE_LISTEN)
                log_line(LOG_WARN, "event=connection_without_request waited_ms=%lld", db_now_ms() - began_ms);
            continue;
        }
        refresh(&w, 0);
        {
            struct http_request req;
            struct webhook_outcome outcome;
            http_request_init(&req, &fcgx);
            webhook_handle(&w, &req, &outcome);
            if (finish_request(&fcgx, listen_tcp) != 0) webhook_answer_lost(&w, &outcome);
        }
        /* Disarmed only once libfcgi has closed or kept the connection: its
         * close may read from a peer until the repeats stop it. */
        set_deadline(0);
        store_set_deadline(&w.store, 0);
    }
    drop_idle_connection(&fcgx);
    FCGX_Free(&fcgx, 1);
    log_line(LOG_INFO, "event=worker_stopped");
    rc = 0;
out:
    if (sig_fd >= 0) close(sig_fd);
    endpoints_free(&w.endpoints);
    masterkey_wipe(&w.key);
    store_close(&w.store);
    free(w.body);
    return rc;
}
