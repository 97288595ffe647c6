/* serve.c - pre-fork supervisor in the manner of fcgiwrap and spawn-fcgi.
 *
 * The supervisor only opens the socket, forks workers and watches signals
 * with sigtimedwait(), so it holds no database connection and cannot be
 * wedged by a slow request. A worker that dies is replaced; one that dies
 * right after starting is replaced after a pause, so a broken configuration
 * does not turn into a fork storm.
 */
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "log.h"
#include "stats.h"
#include "worker.h"

#define LISTEN_BACKLOG 1024
#define RESPAWN_PAUSE_MS 1000
#define STOP_GRACE_MS 30000
#define TICK_MS 250
/* systemd socket activation passes its first socket as fd 3. */
#define SD_LISTEN_FDS_START 3

struct slot {
    pid_t pid;               /* 0 = not running */
    long long started_ms;
    long long respawn_at_ms; /* when to start it again, 0 = now */
};

struct supervisor {
    pid_t pid;
    const struct config *cfg;
    struct masterkey key; /* handed to each new worker; re-read on SIGHUP */
    int listen_fd;
    struct slot slots[MAX_WORKERS];
    int stopping;
    long long stop_deadline_ms;
    struct stats *stats;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* fd handed over by systemd (LISTEN_PID/LISTEN_FDS) or, as spawn-fcgi and
 * inetd-style managers do, on fd 0. -1 when neither is a listening socket. */
static int inherited_listener(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    int on = 0, fd = 0;
    socklen_t len = sizeof on;

    if (pid && fds && atol(pid) == (long)getpid() && atoi(fds) >= 1) fd = SD_LISTEN_FDS_START;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) != 0 || !on) return -1;
    return fd;
}

_Static_assert(MAX_LISTEN_PATH_LEN < sizeof ((struct sockaddr_un){0}).sun_path,
               "a --listen path and its terminator fit a unix socket address");

/* Only a stale socket (nobody accepting on it) may be replaced at a unix
 * socket path. */
static int unix_path_free(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, live;

    /* config_parse took only a path that fits sa.sun_path (asserted above). */
    if (lstat(path, &st) != 0) return 0;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket; refusing to replace it", path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    live = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0) close(fd);
    if (live) {
        snprintf(err, errlen, "%s is in use by a running server", path);
        return -1;
    }
    return 0;
}

/* The listening sockets are made here, not by FCGX_OpenSocket, which prints
 * and exits on any failure; libfcgi accepts on any listening socket. A unix
 * socket is bound with socket_mode exactly, whatever the umask. */
static int listen_unix(const char *path, unsigned mode, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, bound = 0, saved;
    mode_t umask_was;

    if (unix_path_free(path, err, errlen) != 0) return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) goto fail;
    if (unlink(path) != 0 && errno != ENOENT) goto fail;
    /* The mode comes from the umask at bind: a chmod by path afterwards would follow a link that whoever
     * may write the directory put there meanwhile. The mode is never wider than asked. */
    umask_was = umask(~(mode_t)mode & 0777);
    bound = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    saved = errno;
    umask(umask_was);
    errno = saved;
    if (!bound || listen(fd, LISTEN_BACKLOG) != 0) goto fail;
    return fd;
fail:
    saved = errno;
    snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(saved));
    if (bound) unlink(path);
    if (fd >= 0) close(fd);
    return -1;
}

/* bind_listen's answer when an IPv6 socket cannot take IPv4 too. */
#define LISTEN_NO_DUAL_STACK (-2)

/* One listening socket on addr, or -1 with errno set (LISTEN_NO_DUAL_STACK
 * when dual_stack was asked and refused: listening on IPv6 alone would leave
 * IPv4 clients out, unsaid). */
static int bind_listen(const struct addrinfo *ai, int dual_stack)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol), one = 1, off = 0, saved, rc = -1;

    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (dual_stack && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0) {
        rc = LISTEN_NO_DUAL_STACK;
        goto fail;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0) return fd;
fail:
    saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* HOST:PORT, [IPv6]:PORT, or :PORT for every address (IPv6 and IPv4 on one
 * socket where the kernel has IPv6). serve has one listening socket, so a
 * HOST that names several addresses (localhost: ::1 and 127.0.0.1) is
 * refused rather than half served. */
static int listen_tcp(const struct config *cfg, char *err, size_t errlen)
{
    const struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM,
                                   .ai_family = AF_UNSPEC};
    const char *whole = cfg->listen, *host = cfg->listen_host;
    struct addrinfo *list = NULL;
    int fd = -1, rc;

    rc = getaddrinfo(*host ? host : NULL, cfg->listen_port, &hints, &list);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %.200s: %s", whole, gai_strerror(rc));
        return -1;
    }
    if (*host && list->ai_next) {
        snprintf(err, errlen, "cannot listen on %.120s: the name has several addresses; name one (such as "
                              "127.0.0.1 or [::1])", whole);
        freeaddrinfo(list);
        return -1;
    }
    if (*host) {
        fd = bind_listen(list, 0);
    } else {
        /* Every address: the IPv6 wildcard, which takes IPv4 too; without IPv6, the IPv4 one. */
        for (const struct addrinfo *ai = list; ai && fd == -1; ai = ai->ai_next)
            if (ai->ai_family == AF_INET6) fd = bind_listen(ai, 1);
        for (const struct addrinfo *ai = list; ai && fd == -1; ai = ai->ai_next)
            if (ai->ai_family == AF_INET) fd = bind_listen(ai, 0);
    }
    if (fd == LISTEN_NO_DUAL_STACK)
        snprintf(err, errlen, "cannot listen on %.120s: the IPv6 socket cannot take IPv4 too (IPV6_V6ONLY): %s",
                 whole, strerror(errno));
    else if (fd < 0)
        snprintf(err, errlen, "cannot listen on %.200s: %s", whole, strerror(errno));
    freeaddrinfo(list);
    return fd < 0 ? -1 : fd;
}

static int open_listener(const struct config *cfg, char *err, size_t errlen)
{
    int fd;

    if (cfg->listen == NULL) {
        fd = inherited_listener();
        if (fd < 0)
            snprintf(err, errlen, "no --listen given and no listening socket was inherited "
                                  "(fd 0, or fd 3 with systemd socket activation)");
        return fd;
    }
    if (cfg->listen_path) return listen_unix(cfg->listen_path, cfg->socket_mode, err, errlen);
    return listen_tcp(cfg, err, errlen);
}

static void start_worker(struct supervisor *sv, struct slot *slot)
{
    pid_t pid = fork();

    if (pid < 0) {
        log_line(LOG_ERROR, "event=fork_failed reason=\"%s\"", strerror(errno));
        slot->respawn_at_ms = now_ms() + RESPAWN_PAUSE_MS;
        return;
    }
    if (pid == 0) {
        /* Signals stay blocked until worker_run has its handlers in place. */
        /* Workers never outlive a supervisor that was killed outright. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != sv->pid) _exit(0);
        _exit(worker_run(sv->cfg, &sv->key, sv->listen_fd, sv->stats));
    }
    slot->pid = pid;
    slot->started_ms = now_ms();
    slot->respawn_at_ms = 0;
}

static struct slot *slot_of(struct supervisor *sv, pid_t pid)
{
    for (int i = 0; i < sv->cfg->workers; i++)
        if (sv->slots[i].pid == pid) return &sv->slots[i];
    return NULL;
}

static void reap(struct supervisor *sv)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct slot *slot = slot_of(sv, pid);
        if (slot == NULL) continue;
        if (WIFSIGNALED(status))
            log_line(sv->stopping ? LOG_INFO : LOG_WARN, "event=worker_exited worker=%ld signal=%d",
                     (long)pid, WTERMSIG(status));
        else
            log_line(sv->stopping ? LOG_INFO : LOG_WARN, "event=worker_exited worker=%ld status=%d",
                     (long)pid, WEXITSTATUS(status));
        slot->pid = 0;
        if (!sv->stopping) stats_count(sv->stats, STATS_WORKER_RESTARTS);
        slot->respawn_at_ms = now_ms() - slot->started_ms < RESPAWN_PAUSE_MS
                                  ? now_ms() + RESPAWN_PAUSE_MS : 0;
    }
}

static void signal_workers(struct supervisor *sv, int sig)
{
    for (int i = 0; i < sv->cfg->workers; i++)
        if (sv->slots[i].pid > 0) kill(sv->slots[i].pid, sig);
}

static int running(const struct supervisor *sv)
{
    int n = 0;
    for (int i = 0; i < sv->cfg->workers; i++) n += sv->slots[i].pid > 0;
    return n;
}

static void begin_stop(struct supervisor *sv)
{
    if (sv->stopping) return;
    sv->stopping = 1;
    sv->stop_deadline_ms = now_ms() + STOP_GRACE_MS;
    log_line(LOG_INFO, "event=stopping workers=%d", running(sv));
    signal_workers(sv, SIGTERM);
}

static void tick(struct supervisor *sv)
{
    if (sv->stopping) {
        if (now_ms() > sv->stop_deadline_ms) signal_workers(sv, SIGKILL);
        return;
    }
    for (int i = 0; i < sv->cfg->workers; i++) {
        struct slot *slot = &sv->slots[i];
        if (slot->pid == 0 && now_ms() >= slot->respawn_at_ms) start_worker(sv, slot);
    }
}

void serve_hold_reload(void)
{
    sigset_t hup;

    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigprocmask(SIG_BLOCK, &hup, NULL);
}

/* systemd's readiness notification (sd_notify(3): one datagram to
 * $NOTIFY_SOCKET, a path or an abstract name written with '@'). With
 * Type=notify, systemd holds a reload back until this, and a start that
 * fails is reported as failed instead of as a service that died. */
static void notify_ready(void)
{
    static const char ready[] = "READY=1";
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = path ? strlen(path) : 0;
    int fd = -1;

    /* No such socket: not started by systemd with Type=notify. */
    if (len < 2 || len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) goto out;
    memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, ready, sizeof ready - 1, MSG_NOSIGNAL, (struct sockaddr *)&addr,
                         (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) != (ssize_t)(sizeof ready - 1))
        log_line(LOG_WARN, "event=notify_failed reason=\"%s\"", strerror(errno));
out:
    if (fd >= 0) close(fd);
}

const char *serve_refusal(void)
{
    /* libfcgi's own accept would have let only these addresses connect; the
     * workers accept themselves, and an access rule taken for granted but
     * not applied is worse than none. */
    if (getenv("FCGI_WEB_SERVER_ADDRS"))
        return "FCGI_WEB_SERVER_ADDRS is not supported: listen on a unix socket, or on loopback, and firewall the "
               "port (docs/security.md)";
    return NULL;
}

int serve_run(const struct config *cfg, const struct masterkey *mk)
{
    struct supervisor sv;
    struct timespec timeout = {0, TICK_MS * 1000000L};
    char err[256];
    const char *refusal = serve_refusal();
    sigset_t watched;
    static const int defaulted[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGALRM};

    memset(&sv, 0, sizeof sv);
    if (geteuid() == 0)
        log_line(LOG_WARN, "event=running_as_root reason=\"serve needs no privilege and its workers face the "
                           "internet: run it as its own user\"");
    sv.pid = getpid();
    sv.cfg = cfg;
    sv.key = *mk;
    /* Before FCGX_Init, which would otherwise install a SIGUSR1 handler whose
     * effect every worker forked later inherits, and a SIGTERM handler that
     * would swallow a stop sent during start-up: blocked, it waits for the
     * loop below. */
    signal(SIGUSR1, SIG_IGN);
    sigemptyset(&watched);
    sigaddset(&watched, SIGCHLD);
    sigaddset(&watched, SIGTERM);
    sigaddset(&watched, SIGINT);
    sigaddset(&watched, SIGHUP);
    /* Exactly these blocked, whatever the parent left blocked: a blocked SIGALRM would keep the workers' request
     * deadline from cutting a stalled peer off. */
    sigprocmask(SIG_SETMASK, &watched, NULL);
    /* Nor what it left ignored (nohup, some process managers): with SIGCHLD ignored the kernel reaps workers
     * unseen and none is replaced, and an ignored stop or reload signal never arrives. Blocked first, so that a
     * SIGHUP in between waits instead of ending serve. */
    for (size_t i = 0; i < sizeof defaulted / sizeof defaulted[0]; i++) signal(defaulted[i], SIG_DFL);
    if (FCGX_Init() != 0) {
        log_line(LOG_ERROR, "event=fcgi_init_failed");
        return 1;
    }
    if (refusal != NULL) {
        log_line(LOG_ERROR, "event=listen_failed reason=\"%s\"", refusal);
        return 1;
    }
    sv.listen_fd = open_listener(cfg, err, sizeof err);
    if (sv.listen_fd < 0) {
        log_line(LOG_ERROR, "event=listen_failed reason=\"%s\"", err);
        return 1;
    }
    /* Workers wait in ppoll(); whoever loses the race to accept gets EAGAIN
     * instead of blocking where signals cannot reach it. */
    if (fcntl(sv.listen_fd, F_SETFL, fcntl(sv.listen_fd, F_GETFL) | O_NONBLOCK) != 0) {
        log_line(LOG_ERROR, "event=listen_failed reason=\"%s\"", strerror(errno));
        return 1;
    }
    {
        const char *note = NULL;
        sv.stats = stats_create(cfg->stats_file, &note);
        if (sv.stats == NULL) {
            log_line(LOG_ERROR, "event=stats_failed reason=\"cannot map shared counters\"");
            return 1;
        }
        if (note) log_line(LOG_WARN, "event=stats_private file=%s reason=\"%s\"", cfg->stats_file, note);
    }
    signal(SIGPIPE, SIG_IGN);

    log_line(LOG_INFO, "event=serving listen=%s workers=%d max_body=%zu",
             cfg->listen ? cfg->listen : (sv.listen_fd == SD_LISTEN_FDS_START ? "fd:3" : "fd:0"),
             cfg->workers, cfg->max_body);
    tick(&sv);
    notify_ready();
    while (!sv.stopping || running(&sv) > 0) {
        int sig = sigtimedwait(&watched, NULL, &timeout);
        switch (sig) {
        case SIGCHLD: reap(&sv); break;
        case SIGTERM:
        case SIGINT: begin_stop(&sv); break;
        case SIGHUP:
            log_line(LOG_INFO, "event=reload");
            if (cfg->key_file && masterkey_load(cfg->key_file, &sv.key, err, sizeof err) != 0)
                log_line(LOG_ERROR, "event=key_reload_failed reason=\"%s\" kept=previous", err);
            signal_workers(&sv, SIGHUP);
            break;
        default: break; /* timeout */
        }
        if (sig < 0 || sig == SIGCHLD) tick(&sv);
    }
    if (cfg->listen_path) unlink(cfg->listen_path);
    stats_close(sv.stats);
    masterkey_wipe(&sv.key);
    log_line(LOG_INFO, "event=stopped");
    return 0;
}
