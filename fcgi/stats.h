/* stats.h - delivery counters shared by the supervisor and its workers.
 *
 * One file-backed shared mapping (--stats-file) created by `serve`: workers
 * add to it with atomic operations, GET /paddle/metrics renders it for
 * Prometheus, and `paddlehook status` maps it read-only. */
#ifndef PADDLEHOOK_STATS_H
#define PADDLEHOOK_STATS_H

#include <stddef.h>

/* Endpoints counted on their own (time windows, metrics labels) per serve. */
#define STATS_MAX_ENDPOINTS 128

struct stats;
struct endpoint_table;

enum stats_counter {
    STATS_DB_ERRORS,
    STATS_DB_RECONNECTS,
    STATS_WORKER_RESTARTS,
    STATS_DELIVERIES_UNCOUNTED, /* every series of paddlehook_deliveries_total was taken */
    STATS_ANSWERS_LOST,         /* an answer could not be written to nginx's connection */
    STATS_COUNTER_COUNT
};

/* Per-endpoint time windows reported by `paddlehook status`. */
struct stats_window {
    unsigned long long stored, duplicate, signature_failures, other_errors;
};

/* Creates (or reuses) the file at path and maps it shared; the caller holds
 * an exclusive lock on it while it runs. path NULL or unusable: anonymous
 * shared memory (metrics work, `status` cannot see them); *note explains. */
struct stats *stats_create(const char *path, const char **note);

/* A private copy of an existing stats file (for `status`), to free with
 * stats_snapshot_free; *live: a serve runs with it. NULL when absent,
 * unreadable, short or of another layout, with why said in why. */
struct stats *stats_snapshot(const char *path, int *live, char *why, size_t whylen);
void stats_snapshot_free(struct stats *st);

/* Unmaps what stats_create returned. */
void stats_close(struct stats *st);

/* One request's outcome ("stored", "invalid_signature", ...). endpoint_id
 * NULL for requests that named no known endpoint; event_type NULL when the
 * body was not parsed. ingest_ms < 0 when the request did not reach the
 * database. */
void stats_record(struct stats *st, const char *endpoint_id, const char *event_type,
                  const char *outcome, double ingest_ms);

void stats_count(struct stats *st, enum stats_counter c);

/* Prometheus text exposition into out. endpoints (may be NULL) adds the
 * number of active secrets per endpoint. */
void stats_render_prometheus(const struct stats *st, const struct endpoint_table *endpoints,
                             void (*emit)(void *ctx, const char *text), void *ctx);

/* Counts for one endpoint over the last hour and the last day. 0 when known. */
int stats_endpoint_windows(const struct stats *st, const char *endpoint_id, struct stats_window *hour,
                           struct stats_window *day, long long *last_event_at);

/* When the serve that made st started (unix seconds): the counters cover the time since. */
long long stats_started_at(const struct stats *st);

/* The endpoint counted in slot i (0 to STATS_MAX_ENDPOINTS - 1), or NULL when the slot is free. */
const char *stats_endpoint_at(const struct stats *st, size_t i);

/* 1 when every endpoint slot is taken: an endpoint without one is then not
 * counted on its own (its deliveries go to the series of endpoint ""). */
int stats_endpoints_full(const struct stats *st);

#endif
