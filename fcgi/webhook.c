/* webhook.c - the HTTP contract (README, "HTTP contract").
 *
 * Order matters: cheap checks first, the signature before any JSON parsing,
 * and ingest_event only for a request that is signed and well formed. (An
 * endpoint id this worker does not know makes it reload the endpoints, at
 * most once per RELOAD_MIN_INTERVAL_MS.)
 */
#include "webhook.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "log.h"
#include "sig.h"

#define RETRY_AFTER "Retry-After: 5\r\n"

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void respond_error(struct http_request *req, struct webhook_outcome *o, int code, const char *err,
                  const char *message, const char *headers)
{
    o->code = code;
    o->word = err;
    http_respond_error(req, code, err, message, headers);
}

static int valid_endpoint_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > MAX_ID_LEN) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

static void handle_healthz(struct worker *w, struct http_request *req, struct webhook_outcome *o)
{
    int writable = 0;
    const char *down;

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        respond_error(req, o, 405, "method_not_allowed", "use GET", "Allow: GET, HEAD\r\n");
        return;
    }
    /* What a delivery would meet: healthy only if events can be stored. */
    down = store_ping(&w->store, &writable) != 0 ? "the database is not reachable"
           : !writable                           ? "the database accepts no writes (a standby, or read-only)"
           : w->endpoints_failed                 ? "endpoints cannot be loaded"
                                                 : NULL;
    if (down) {
        respond_error(req, o, 503, "database_unavailable", down, RETRY_AFTER);
        return;
    }
    o->code = 200;
    o->word = "ok";
    http_respond_status(req, 200, "ok");
}

static void handle_event(struct worker *w, struct http_request *req, struct webhook_outcome *o,
                         const struct endpoint *ep, size_t len)
{
    struct event_envelope ev;
    struct sig_header hdr;
    const char *detail = NULL;
    enum sig_result sr;
    enum event_error er;
    enum store_result st;

    if (http_read_body(req, w->body, len) != 0) {
        respond_error(req, o, 400, "incomplete_body",
                      "the body does not match its Content-Length, or did not end properly", NULL);
        return;
    }
    sr = req->signature_count > 1
             ? SIG_MALFORMED
             : sig_parse(req->signature, req->signature ? strlen(req->signature) : 0, &hdr);
    if (sr == SIG_OK) {
        int64_t now = (int64_t)time(NULL);
        sr = sig_verify(&hdr, w->body, len, ep->secrets, ep->n_secrets, now, ep->tolerance);
        o->skew = (long long)(now - hdr.ts);
    }
    switch (sr) {
    case SIG_OK: break;
    case SIG_MISSING:
        respond_error(req, o, 401, "missing_signature", "the Paddle-Signature header is missing", NULL);
        return;
    case SIG_MALFORMED:
        respond_error(req, o, 401, "invalid_signature", "the Paddle-Signature header is malformed", NULL);
        return;
    case SIG_TS_OUT_OF_RANGE:
        /* The operator's question is which clock is off, and by how much. */
        o->has_skew = 1;
        respond_error(req, o, 401, "timestamp_out_of_range",
              "the signature timestamp is outside the endpoint's tolerance", NULL);
        return;
    case SIG_MISMATCH:
        respond_error(req, o, 401, "invalid_signature", "no signature matches this endpoint's secrets", NULL);
        return;
    }
    er = event_parse(w->body, len, &ev, &detail);
    if (er != EVENT_OK) {
        respond_error(req, o, 400, event_error_code(er), detail ? detail : "invalid notification", NULL);
        return;
    }
    memcpy(o->event_id, ev.event_id, sizeof o->event_id);
    memcpy(o->event_type, ev.event_type, sizeof o->event_type);
    o->reached_database = 1;
    st = store_ingest(&w->store, &ev, ep->id, ep->environment, (const char *)w->body);
    switch (st) {
    case STORE_STORED:
    case STORE_DUPLICATE:
        o->code = 200;
        o->word = store_result_name(st);
        http_respond_status(req, 200, o->word);
        break;
    case STORE_REPLACED_SANDBOX:
    case STORE_PROJECTION_FAILED:
        /* Stored, as far as Paddle is concerned, but the operator has something to look into: a sandbox
         * secret that was misused, or state tables that lack the event (a retry would fail the same way). */
        o->code = 200;
        o->word = store_result_name(st);
        o->warn = 1;
        http_respond_status(req, 200, store_result_name(STORE_STORED));
        break;
    case STORE_UNAVAILABLE:
        respond_error(req, o, 503, "database_unavailable", "the database is unavailable; retry later", RETRY_AFTER);
        break;
    case STORE_BAD_PAYLOAD:
        respond_error(req, o, 400, "unsupported_json",
              "PostgreSQL cannot store this JSON (for example a \\u0000 escape)", NULL);
        break;
    case STORE_ERROR:
        respond_error(req, o, 500, "internal_error", "the event could not be stored; see the server log", NULL);
        break;
    }
}

static void handle_webhook(struct worker *w, struct http_request *req, struct webhook_outcome *o)
{
    const char *id = req->path + strlen(WEBHOOK_PATH_PREFIX);
    const struct endpoint *ep = NULL;
    size_t len = 0;

    if (strcmp(req->method, "POST") != 0) {
        respond_error(req, o, 405, "method_not_allowed", "webhooks are delivered with POST", "Allow: POST\r\n");
        return;
    }
    if (!valid_endpoint_id(id)) {
        respond_error(req, o, 404, "unknown_endpoint", "no endpoint has this id", NULL);
        return;
    }
    snprintf(o->endpoint_id, sizeof o->endpoint_id, "%s", id);
    if (http_content_length(req, &len) != 0) {
        respond_error(req, o, 411, "length_required", "a Content-Length header is required", NULL);
        return;
    }
    if (len > w->cfg->max_body) {
        respond_error(req, o, 413, "body_too_large", "request body exceeds the configured limit", NULL);
        return;
    }
    if (len == 0) {
        respond_error(req, o, 400, "empty_body", "the request body is empty", NULL);
        return;
    }
    switch (worker_endpoint(w, id, &ep)) {
    case ENDPOINT_FOUND:
        o->endpoint_known = 1;
        break;
    case ENDPOINT_UNKNOWN:
        respond_error(req, o, 404, "unknown_endpoint", "no endpoint has this id", NULL);
        return;
    case ENDPOINT_UNAVAILABLE:
        respond_error(req, o, 503, "database_unavailable", "endpoints cannot be loaded; retry later", RETRY_AFTER);
        return;
    }
    if (!ep->enabled) {
        respond_error(req, o, 410, "endpoint_disabled", "this endpoint is disabled", NULL);
        return;
    }
    if (ep->n_secrets == 0) {
        /* None of its secrets opens with this worker's master key (the key file does not match the
         * database), or it has none left (deleted in SQL); logged at load. The sender is not at fault, so
         * not a 401. Paddle retries a 503. */
        respond_error(req, o, 503, "secrets_unavailable", "this endpoint's secrets cannot be opened; retry later",
                      RETRY_AFTER);
        return;
    }
    handle_event(w, req, o, ep, len);
}

static void emit_to_request(void *ctx, const char *text)
{
    struct http_request *req = ctx;
    FCGX_PutS(text, req->fcgx->out);
}

static void handle_metrics(struct worker *w, struct http_request *req, struct webhook_outcome *o)
{
    if (strcmp(req->method, "GET") != 0) {
        respond_error(req, o, 405, "method_not_allowed", "use GET", "Allow: GET\r\n");
        return;
    }
    o->code = 200;
    o->word = "ok";
    FCGX_PutS("Status: 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
              "Cache-Control: no-store\r\n\r\n", req->fcgx->out);
    stats_render_prometheus(w->stats, &w->endpoints, emit_to_request, req);
}

/* The request line is written before the answer leaves (libfcgi holds it
 * until the request ends): whoever has the answer finds the line logged. */
void webhook_handle(struct worker *w, struct http_request *req, struct webhook_outcome *o)
{
    long long start = now_us();
    int delivery = strncmp(req->path, WEBHOOK_PATH_PREFIX, strlen(WEBHOOK_PATH_PREFIX)) == 0;
    double duration_ms;
    char skew[32] = "";

    memset(o, 0, sizeof *o);
    if (delivery)
        handle_webhook(w, req, o);
    else if (strcmp(req->path, HEALTHZ_PATH) == 0)
        handle_healthz(w, req, o);
    else if (strcmp(req->path, METRICS_PATH) == 0)
        handle_metrics(w, req, o);
    else
        respond_error(req, o, 404, "not_found", "no such path", NULL);

    duration_ms = (double)(now_us() - start) / 1000.0;
    /* Only deliveries are counted; an unknown endpoint id is attacker-chosen,
     * so it never becomes a label. */
    if (delivery)
        stats_record(w->stats, o->endpoint_known ? o->endpoint_id : NULL,
                     o->event_type[0] ? o->event_type : NULL, o->word, o->reached_database ? duration_ms : -1);
    if (o->has_skew) snprintf(skew, sizeof skew, " skew=%lld", o->skew);
    log_line(o->code >= 500 || o->warn ? LOG_WARN : LOG_INFO,
             "event=request endpoint=%s event_id=%s event_type=%s status=%d outcome=%s "
             "duration_ms=%.3f%s",
             o->endpoint_id[0] ? o->endpoint_id : "-", o->event_id[0] ? o->event_id : "-",
             o->event_type[0] ? o->event_type : "-", o->code, o->word, duration_ms, skew);
}

void webhook_answer_lost(struct worker *w, const struct webhook_outcome *o)
{
    stats_count(w->stats, STATS_ANSWERS_LOST);
    log_line(LOG_WARN, "event=answer_lost endpoint=%s event_id=%s status=%d outcome=%s reason=\"nginx no longer "
             "took the answer: it, or its client, gave up first\"",
             o->endpoint_id[0] ? o->endpoint_id : "-", o->event_id[0] ? o->event_id : "-", o->code, o->word);
}
