/* webhook.h - routing and handling of one HTTP request. */
#ifndef PADDLEHOOK_WEBHOOK_H
#define PADDLEHOOK_WEBHOOK_H

#include "http.h"
#include "limits.h"
#include "worker.h"

#define WEBHOOK_PATH_PREFIX "/paddle/webhooks/"
#define HEALTHZ_PATH "/paddle/healthz"
#define METRICS_PATH "/paddle/metrics"

/* What one request came to. */
struct webhook_outcome {
    int code;
    const char *word; /* status or error code */
    char endpoint_id[MAX_ID_LEN + 1]; /* "" when the path names none */
    int endpoint_known;     /* endpoint_id names a configured endpoint */
    int reached_database;   /* the delivery was handed to ingest_event */
    int warn;               /* log at warn level although the answer is not an error */
    int has_skew;           /* timestamp_out_of_range: skew is by how much */
    long long skew;         /* seconds the signature's ts is behind the worker's clock (< 0: ahead) */
    char event_id[MAX_ID_LEN + 1];
    char event_type[MAX_EVENT_TYPE_LEN + 1];
};

/* Answers one request, logs and counts it, and says what it came to in o. */
void webhook_handle(struct worker *w, struct http_request *req, struct webhook_outcome *o);

/* Logs and counts an answer that could not be written to nginx's connection
 * (nginx, or its client, gave up first; a stored event is then answered
 * duplicate when Paddle retries). */
void webhook_answer_lost(struct worker *w, const struct webhook_outcome *o);

#endif
