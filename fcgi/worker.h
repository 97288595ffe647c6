/* worker.h - one worker process: accept FastCGI requests until told to stop. */
#ifndef PADDLEHOOK_WORKER_H
#define PADDLEHOOK_WORKER_H

#include "config.h"
#include "endpoints.h"
#include "masterkey.h"
#include "stats.h"
#include "store.h"

struct worker {
    const struct config *cfg;
    struct masterkey key; /* re-read from the key file on SIGHUP */
    struct store store;
    struct endpoint_table endpoints;
    int endpoints_loaded;
    int endpoints_stale;  /* the last reload failed: a miss may be an endpoint added since */
    int endpoints_failed; /* ... and the database answered: the table may be out of date (retried) */
    int stop_requested;   /* SIGTERM/SIGINT seen */
    int reload_requested; /* SIGHUP seen */
    int change_pending;   /* a change notification came in with a query's results, not yet applied */
    long long next_reload_ms;
    int idle_reconnect_ms; /* without a database connection, an idle worker's next try */
    unsigned char *body; /* cfg->max_body + 1 bytes, reused by every request */
    struct stats *stats; /* shared with the supervisor and the other workers */
};

enum endpoint_lookup { ENDPOINT_FOUND, ENDPOINT_UNKNOWN, ENDPOINT_UNAVAILABLE };

/* Finds an endpoint, reloading from the database (rate-limited) on a miss. */
enum endpoint_lookup worker_endpoint(struct worker *w, const char *id, const struct endpoint **out);

/* Runs the accept loop on listen_fd; returns the process exit status. */
int worker_run(const struct config *cfg, const struct masterkey *mk, int listen_fd,
               struct stats *stats);

#endif
