/* stats.c - lock-free counters in one shared mapping.
 *
 * Slots (an endpoint, or an endpoint x event type x outcome series) are
 * claimed with compare-and-swap and never freed, so the mapping has a fixed
 * size and a worker killed at any instant leaves it consistent: a slot its
 * claimer died filling is taken over by the next process that finds it (the
 * claim holds the claimer's pid). Counts are exact (atomic adds), unless a
 * live claimer stays off the CPU for STATS_CLAIM_WAIT_NS while another process
 * looks for the same key, which then claims a second slot for it; the time
 * windows may drop an increment racing a bucket's turn of the minute.
 */
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "endpoints.h"
#include "limits.h"

#define STATS_MAGIC 0x70686b73u
#define STATS_VERSION 6u /* the layout: bump when it changes (outcomes[] sizes the windows) */
#define STATS_MAX_SERIES 4096
#define STATS_MINUTES 60
#define STATS_HOURS 24
#define STATS_CLAIM_SPINS 1000
/* A claimer fills its slot in microseconds of its own CPU time, but a busy
 * host can keep it off the CPU for several scheduler ticks. */
#define STATS_CLAIM_WAIT_NS 100000000L
#define STATS_LINE_MAX 512
#define STATS_FILE_MODE 0640
/* How long serve waits for a `status` to let go of the file: 50 x 2 ms. */
#define STATS_LOCK_TRIES 50
#define STATS_LOCK_PAUSE_NS 2000000L

/* A slot's state: free, ready, or being filled by the process whose pid is
 * state - SLOT_CLAIMED_BY (one word, so claiming and naming the claimer are
 * one compare-and-swap). */
enum slot_state { SLOT_FREE = 0, SLOT_READY = 1, SLOT_CLAIMED_BY = 2 };

static const char *const outcomes[] = {
    "stored", "duplicate", "missing_signature", "invalid_signature", "timestamp_out_of_range",
    "malformed_json", "missing_field", "invalid_field", "empty_body", "nesting_too_deep",
    "incomplete_body", "unsupported_json", "unknown_endpoint", "endpoint_disabled",
    "method_not_allowed", "length_required", "body_too_large", "database_unavailable",
    "internal_error", "not_found", "ok", "secrets_unavailable", "replaced_sandbox", "projection_failed",
    "other",
};
#define OUTCOME_COUNT (sizeof outcomes / sizeof outcomes[0])
#define OUTCOME_OTHER (OUTCOME_COUNT - 1)

/* Upper bounds of the ingest latency histogram, in milliseconds. */
static const double buckets_ms[] = {1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};
#define BUCKET_COUNT (sizeof buckets_ms / sizeof buckets_ms[0])

struct window_bucket {
    uint64_t period; /* minute or hour number since the epoch */
    uint64_t counts[OUTCOME_COUNT];
};

struct endpoint_slot {
    uint32_t state;
    char id[MAX_ID_LEN + 1];
    uint64_t last_event_at;
    struct window_bucket minutes[STATS_MINUTES];
    struct window_bucket hours[STATS_HOURS];
};

struct series_slot {
    uint32_t state;
    int32_t endpoint; /* index into endpoints, -1 = none */
    uint32_t outcome;
    char event_type[MAX_EVENT_TYPE_LEN + 1];
    uint64_t count;
};

struct stats {
    uint32_t magic, version;
    uint64_t started_at; /* unix seconds: the counters cover the time since serve made them */
    uint64_t counters[STATS_COUNTER_COUNT];
    uint64_t histogram[BUCKET_COUNT + 1];
    uint64_t histogram_sum_us; /* the count is the sum of the buckets */
    struct endpoint_slot endpoints[STATS_MAX_ENDPOINTS];
    struct series_slot series[STATS_MAX_SERIES];
};

static uint64_t load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static void add(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

static uint32_t hash(const char *a, const char *b, uint32_t c)
{
    uint32_t h = 2166136261u ^ c;
    for (; a && *a; a++) h = (h ^ (unsigned char)*a) * 16777619u;
    for (; b && *b; b++) h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

static struct stats *map(int fd, int writable)
{
    void *p = mmap(NULL, sizeof(struct stats), writable ? PROT_READ | PROT_WRITE : PROT_READ,
                   fd >= 0 ? MAP_SHARED : MAP_SHARED | MAP_ANONYMOUS, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* The stats file, opened for writing only if it is this user's own regular
 * file: serve truncates and maps it, and whoever may write its directory
 * (the service user, /run/paddlehook) must not make serve, run as another
 * user such as root, truncate some other file through a link. -1 with *note
 * set otherwise. */
static int open_own_file(const char *path, const char **note)
{
    struct stat sb;
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, STATS_FILE_MODE);

    if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_uid == geteuid() && sb.st_nlink == 1 &&
        fchmod(fd, STATS_FILE_MODE) == 0)
        return fd;
    *note = fd < 0 && errno == ELOOP ? "stats file is a symbolic link; not followed"
            : fd < 0                ? "stats file cannot be created; `paddlehook status` will not see live counters"
                                    : "stats file is not a regular file of this user's own; not used";
    if (fd >= 0) close(fd);
    return -1;
}

/* The file's lock for as long as serve runs. A `status` looking whether a
 * serve holds it takes a shared lock for a moment: waited out, briefly,
 * where another serve holds it for good. */
static int take_file(int fd)
{
    const struct timespec pause = {0, STATS_LOCK_PAUSE_NS};

    for (int tries = 0; tries < STATS_LOCK_TRIES; tries++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
        if (errno != EWOULDBLOCK) break;
        nanosleep(&pause, NULL);
    }
    return -1;
}

struct stats *stats_create(const char *path, const char **note)
{
    struct stats *st = NULL;
    int fd;

    *note = NULL;
    fd = path && *path ? open_own_file(path, note) : -1;
    if (fd >= 0 && take_file(fd) != 0) {
        *note = "stats file is in use by another paddlehook serve; counters are private to this one";
        close(fd);
        fd = -1;
    } else if (fd >= 0 && ftruncate(fd, 0) == 0 && posix_fallocate(fd, 0, sizeof(struct stats)) == 0) {
        /* Allocated, not sparse: on a full file system (a small /run) a worker
         * would die of SIGBUS at its first write to a page with no room. */
        st = map(fd, 1);
    } else if (fd >= 0) {
        *note = "stats file cannot be sized (is its file system full?); `paddlehook status` will not see live "
                "counters";
    }
    /* The descriptor (and its lock) stays open for the life of the process. */
    if (st == NULL) {
        if (fd >= 0) close(fd);
        st = map(-1, 1);
    }
    if (st) {
        /* The layout's marks last: a status reading meanwhile finds the file whole or not at all. */
        st->started_at = (uint64_t)time(NULL);
        st->version = STATS_VERSION;
        st->magic = STATS_MAGIC;
    }
    return st;
}

struct stats *stats_snapshot(const char *path, int *live, char *why, size_t whylen)
{
    struct stats *st = malloc(sizeof *st);
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(why, whylen, "%s", errno == ENOENT ? "no such file: is `paddlehook serve` running with this "
                                                      "--stats-file?" : strerror(errno));
        goto fail;
    }
    if (st == NULL) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    /* read(), not a mapping: a serve starting meanwhile truncates the file,
     * and touching a mapped page past its end would be SIGBUS. */
    while (got < sizeof *st) {
        ssize_t n = read(fd, (char *)st + got, sizeof *st - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            snprintf(why, whylen, "%s", n < 0 ? strerror(errno) : "shorter than the counters: is serve starting?");
            goto fail;
        }
        got += (size_t)n;
    }
    if (st->magic != STATS_MAGIC || st->version != STATS_VERSION) {
        snprintf(why, whylen, "not counters of this version of paddlehook: restart serve after an upgrade");
        goto fail;
    }
    /* A running serve holds the file locked for as long as it runs. */
    *live = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return st;
fail:
    if (fd >= 0) close(fd);
    free(st);
    return NULL;
}

void stats_snapshot_free(struct stats *st) { free(st); }

void stats_close(struct stats *st)
{
    if (st) munmap(st, sizeof *st);
}

static int is_claimed(uint32_t state) { return state >= SLOT_CLAIMED_BY; }

/* A claimer that no longer exists will never fill its slot. Nor will this
 * process, which fills a slot before its next lookup, if the dead claimer's
 * pid has come back as its own. */
static int claimer_gone(uint32_t state)
{
    pid_t pid = (pid_t)(state - SLOT_CLAIMED_BY);
    return pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH);
}

/* The state of a slot another process is claiming, once it is filled: spins,
 * then yields (the claimer may be off the CPU), for at most
 * STATS_CLAIM_WAIT_NS. */
static uint32_t wait_claimed(const uint32_t *state_p, uint32_t state)
{
    struct timespec start, now;

    for (int spin = 0; is_claimed(state) && spin < STATS_CLAIM_SPINS; spin++)
        state = __atomic_load_n(state_p, __ATOMIC_ACQUIRE);
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (is_claimed(state)) {
        sched_yield();
        state = __atomic_load_n(state_p, __ATOMIC_ACQUIRE);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) > STATS_CLAIM_WAIT_NS)
            break;
    }
    return state;
}

enum slot_turn { SLOT_TAKEN, SLOT_COMPARE, SLOT_PASS };

/* What a lookup does with one slot: fill it (now claimed by this process),
 * compare its key (ready), or pass it. A slot another process is claiming may
 * be for the same key: wait for it to be filled and compare, else two slots
 * would count one key; if its claimer died, take it over. */
static enum slot_turn slot_turn(uint32_t *state_p)
{
    uint32_t state = __atomic_load_n(state_p, __ATOMIC_ACQUIRE);

    if (state == SLOT_READY) return SLOT_COMPARE; /* every lookup but a series' first: no system call */
    if (state == SLOT_FREE &&
        __atomic_compare_exchange_n(state_p, &state, SLOT_CLAIMED_BY + (uint32_t)getpid(), 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        return SLOT_TAKEN;
    if (is_claimed(state) && !claimer_gone(state)) state = wait_claimed(state_p, state);
    if (is_claimed(state) && claimer_gone(state)) {
        if (__atomic_compare_exchange_n(state_p, &state, SLOT_CLAIMED_BY + (uint32_t)getpid(), 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return SLOT_TAKEN;
        if (is_claimed(state)) state = wait_claimed(state_p, state); /* another process took it over */
    }
    return state == SLOT_READY ? SLOT_COMPARE : SLOT_PASS;
}

/* Finds or claims the slot whose `matches` says so; `fill` writes every key
 * field (a slot taken over holds the dead claimer's partial key). */
#define CLAIM(table, n, start, matches, fill)                                                 \
    do {                                                                                      \
        for (uint32_t probe = 0; probe < (n); probe++) {                                      \
            __typeof__(&(table)[0]) s = &(table)[((start) + probe) % (n)];                     \
            enum slot_turn turn = slot_turn(&s->state);                                       \
            if (turn == SLOT_TAKEN) {                                                         \
                fill;                                                                         \
                __atomic_store_n(&s->state, SLOT_READY, __ATOMIC_RELEASE);                    \
                return s;                                                                     \
            }                                                                                 \
            if (turn == SLOT_COMPARE && (matches)) return s;                                  \
        }                                                                                     \
        return NULL;                                                                          \
    } while (0)

static struct endpoint_slot *endpoint_slot(struct stats *st, const char *id)
{
    CLAIM(st->endpoints, STATS_MAX_ENDPOINTS, hash(id, NULL, 0), strcmp(s->id, id) == 0,
          snprintf(s->id, sizeof s->id, "%s", id));
}

static struct series_slot *series_slot(struct stats *st, int32_t endpoint, const char *event_type,
                                       uint32_t outcome)
{
    CLAIM(st->series, STATS_MAX_SERIES, hash(event_type, NULL, (uint32_t)endpoint * 31u + outcome),
          s->endpoint == endpoint && s->outcome == outcome && strcmp(s->event_type, event_type) == 0,
          (s->endpoint = endpoint, s->outcome = outcome,
           snprintf(s->event_type, sizeof s->event_type, "%s", event_type)));
}

static const struct endpoint_slot *find_endpoint(const struct stats *st, const char *id)
{
    uint32_t start = hash(id, NULL, 0);
    for (uint32_t probe = 0; probe < STATS_MAX_ENDPOINTS; probe++) {
        const struct endpoint_slot *s = &st->endpoints[(start + probe) % STATS_MAX_ENDPOINTS];
        uint32_t state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
        if (state == SLOT_FREE) return NULL;
        if (state == SLOT_READY && strcmp(s->id, id) == 0) return s;
    }
    return NULL;
}

/* An outcome that stored the event (a replaced sandbox event, or one whose projection failed, is stored too). */
static int outcome_stored(uint32_t o)
{
    return strcmp(outcomes[o], "stored") == 0 || strcmp(outcomes[o], "replaced_sandbox") == 0 ||
           strcmp(outcomes[o], "projection_failed") == 0;
}

static uint32_t outcome_index(const char *outcome)
{
    for (uint32_t i = 0; i < OUTCOME_COUNT; i++)
        if (strcmp(outcomes[i], outcome) == 0) return i;
    return OUTCOME_OTHER;
}

static void window_add(struct window_bucket *ring, size_t n, uint64_t period, uint32_t outcome)
{
    struct window_bucket *b = &ring[period % n];
    uint64_t seen = load(&b->period);

    if (seen != period && __atomic_compare_exchange_n(&b->period, &seen, period, 0, __ATOMIC_ACQ_REL,
                                                      __ATOMIC_ACQUIRE))
        for (size_t i = 0; i < OUTCOME_COUNT; i++) __atomic_store_n(&b->counts[i], 0, __ATOMIC_RELAXED);
    add(&b->counts[outcome], 1);
}

void stats_record(struct stats *st, const char *endpoint_id, const char *event_type,
                  const char *outcome, double ingest_ms)
{
    uint32_t o = outcome_index(outcome);
    struct endpoint_slot *ep;
    struct series_slot *se;
    uint64_t now = (uint64_t)time(NULL);

    if (st == NULL) return;
    ep = endpoint_id ? endpoint_slot(st, endpoint_id) : NULL;
    se = series_slot(st, ep ? (int32_t)(ep - st->endpoints) : -1, event_type ? event_type : "", o);
    if (se) add(&se->count, 1);
    else add(&st->counters[STATS_DELIVERIES_UNCOUNTED], 1);
    if (ep) {
        window_add(ep->minutes, STATS_MINUTES, now / 60, o);
        window_add(ep->hours, STATS_HOURS, now / 3600, o);
        if (outcome_stored(o)) __atomic_store_n(&ep->last_event_at, now, __ATOMIC_RELAXED);
    }
    if (ingest_ms >= 0) {
        size_t b = 0;
        while (b < BUCKET_COUNT && ingest_ms > buckets_ms[b]) b++;
        add(&st->histogram[b], 1);
        add(&st->histogram_sum_us, (uint64_t)(ingest_ms * 1000.0));
    }
}

void stats_count(struct stats *st, enum stats_counter c)
{
    if (st) add(&st->counters[c], 1);
}

static void emitf(void (*emit)(void *, const char *), void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void emitf(void (*emit)(void *, const char *), void *ctx, const char *fmt, ...)
{
    char line[STATS_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    emit(ctx, line);
}

void stats_render_prometheus(const struct stats *st, const struct endpoint_table *endpoints,
                             void (*emit)(void *ctx, const char *text), void *ctx)
{
    static const struct { enum stats_counter c; const char *name, *help; } counters[] = {
        {STATS_DB_ERRORS, "paddlehook_db_errors_total", "Database errors seen by workers: failed statements and timeouts, lost connections, failed connection attempts."},
        {STATS_DB_RECONNECTS, "paddlehook_db_reconnects_total", "Database connections (re)established by workers."},
        {STATS_WORKER_RESTARTS, "paddlehook_worker_restarts_total", "Workers that exited unexpectedly and were replaced."},
        {STATS_DELIVERIES_UNCOUNTED, "paddlehook_deliveries_uncounted_total", "Webhook requests left out of paddlehook_deliveries_total because all its series were taken."},
        {STATS_ANSWERS_LOST, "paddlehook_answers_lost_total", "Answers that could not be written to nginx's connection: nginx or its client gave up first (a stored event is answered duplicate when Paddle retries)."},
    };
    uint64_t cumulative = 0;

    emit(ctx, "# HELP paddlehook_deliveries_total Webhook requests by endpoint, event type and outcome.\n"
              "# TYPE paddlehook_deliveries_total counter\n");
    for (size_t i = 0; i < STATS_MAX_SERIES; i++) {
        const struct series_slot *s = &st->series[i];
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != SLOT_READY) continue;
        emitf(emit, ctx, "paddlehook_deliveries_total{endpoint=\"%s\",event_type=\"%s\",outcome=\"%s\"} %llu\n",
              s->endpoint >= 0 ? st->endpoints[s->endpoint].id : "", s->event_type, outcomes[s->outcome],
              (unsigned long long)load(&s->count));
    }
    emit(ctx, "# HELP paddlehook_ingest_duration_seconds Time to verify, parse and commit a delivery.\n"
              "# TYPE paddlehook_ingest_duration_seconds histogram\n");
    for (size_t b = 0; b <= BUCKET_COUNT; b++) {
        cumulative += load(&st->histogram[b]);
        if (b < BUCKET_COUNT)
            emitf(emit, ctx, "paddlehook_ingest_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets_ms[b] / 1000.0,
                  (unsigned long long)cumulative);
        else
            emitf(emit, ctx, "paddlehook_ingest_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                  (unsigned long long)cumulative);
    }
    /* _count is the +Inf bucket, as the format requires (a counter of its own,
     * read at another moment, differed from it under load). */
    emitf(emit, ctx, "paddlehook_ingest_duration_seconds_sum %.6f\npaddlehook_ingest_duration_seconds_count %llu\n",
          (double)load(&st->histogram_sum_us) / 1e6, (unsigned long long)cumulative);
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        emitf(emit, ctx, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counters[i].name, counters[i].help,
              counters[i].name, counters[i].name, (unsigned long long)load(&st->counters[counters[i].c]));
    if (endpoints) {
        emit(ctx, "# HELP paddlehook_endpoint_secrets Active secrets per endpoint (2 during a rotation).\n"
                  "# TYPE paddlehook_endpoint_secrets gauge\n");
        for (size_t i = 0; i < endpoints->n; i++)
            emitf(emit, ctx, "paddlehook_endpoint_secrets{endpoint=\"%s\",enabled=\"%s\"} %zu\n",
                  endpoints->items[i].id, endpoints->items[i].enabled ? "true" : "false",
                  endpoints->items[i].n_secrets);
    }
}

static void window_sum(const struct window_bucket *ring, size_t n, uint64_t now_period, struct stats_window *w)
{
    memset(w, 0, sizeof *w);
    for (size_t i = 0; i < n; i++) {
        const struct window_bucket *b = &ring[i];
        uint64_t period = load(&b->period);
        if (period + n <= now_period || period > now_period) continue;
        for (uint32_t o = 0; o < OUTCOME_COUNT; o++) {
            uint64_t c = load(&b->counts[o]);
            if (outcome_stored(o)) w->stored += c;
            else if (strcmp(outcomes[o], "duplicate") == 0) w->duplicate += c;
            else if (strcmp(outcomes[o], "missing_signature") == 0 || strcmp(outcomes[o], "invalid_signature") == 0 ||
                     strcmp(outcomes[o], "timestamp_out_of_range") == 0)
                w->signature_failures += c;
            else w->other_errors += c;
        }
    }
}

int stats_endpoints_full(const struct stats *st)
{
    for (size_t i = 0; i < STATS_MAX_ENDPOINTS; i++)
        if (__atomic_load_n(&st->endpoints[i].state, __ATOMIC_ACQUIRE) == SLOT_FREE) return 0;
    return 1;
}

int stats_endpoint_windows(const struct stats *st, const char *endpoint_id, struct stats_window *hour,
                           struct stats_window *day, long long *last_event_at)
{
    const struct endpoint_slot *ep = find_endpoint(st, endpoint_id);
    uint64_t now = (uint64_t)time(NULL);

    if (ep == NULL) return -1;
    window_sum(ep->minutes, STATS_MINUTES, now / 60, hour);
    window_sum(ep->hours, STATS_HOURS, now / 3600, day);
    *last_event_at = (long long)load(&ep->last_event_at);
    return 0;
}

long long stats_started_at(const struct stats *st) { return (long long)st->started_at; }

const char *stats_endpoint_at(const struct stats *st, size_t i)
{
    if (i >= STATS_MAX_ENDPOINTS || __atomic_load_n(&st->endpoints[i].state, __ATOMIC_ACQUIRE) != SLOT_READY)
        return NULL;
    return st->endpoints[i].id;
}
