/* profile_event.c - per-event CPU of the worker's pure hot path, for make bench.
 *
 *   profile-event BODY_FILE SECRET ITERATIONS
 *
 * Signs BODY_FILE once (ts = now), prepares the secret's keyed HMAC state as
 * endpoints.c does, then runs ITERATIONS times exactly what
 * webhook.c does for a delivery before the database round trip: sig_parse +
 * sig_verify (HMAC-SHA256 over "ts:body") + event_parse (full yajl validation
 * and the envelope) + binding the seven text parameters as store.c does
 * (libpq's own Bind message is counted in the whole-worker callgrind run).
 * Prints one JSON line: iterations, body bytes, native CPU ns per event (process
 * CPU time, so a busy machine slows the figure less than wall time would).
 * Under callgrind, --toggle-collect=profile_one counts only the loop body.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "event.h"
#include "sig.h"

static volatile size_t sink;

/* The parameter array store.c hands to PQexecPrepared; libpq strlen()s each. */
__attribute__((noinline)) static void bind_params(const struct event_envelope *ev, const char *endpoint_id,
                                                  const char *environment, const char *body)
{
    const char *params[7] = {ev->event_id, ev->event_type, ev->occurred_at,
                             ev->notification_id[0] ? ev->notification_id : NULL,
                             endpoint_id, environment, body};
    size_t total = 0;
    for (int i = 0; i < 7; i++)
        if (params[i]) total += strlen(params[i]);
    sink = total;
}

__attribute__((noinline)) static int profile_one(const char *header, const unsigned char *body, size_t len,
                                                 const struct sig_secret *secret, int64_t now)
{
    struct sig_header hdr;
    struct event_envelope ev;
    const char *detail = NULL;

    if (sig_parse(header, strlen(header), &hdr) != SIG_OK) return -1;
    if (sig_verify(&hdr, body, len, secret, 1, now, 300) != SIG_OK) return -2;
    if (event_parse(body, len, &ev, &detail) != EVENT_OK) return -3;
    bind_params(&ev, "ep_0123456789abcdefghij", "sandbox", (const char *)body);
    return 0;
}

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    FILE *f;
    unsigned char *body;
    long len;
    long iterations;
    char header[SIG_HEADER_BUF];
    struct sig_secret secret = {0};
    crypto_auth_hmacsha256_state keyed;
    int64_t ts = (int64_t)time(NULL);
    double t0, t1;

    if (argc != 4) {
        fprintf(stderr, "usage: %s BODY_FILE SECRET ITERATIONS\n", argv[0]);
        return 2;
    }
    iterations = strtol(argv[3], NULL, 10);
    if (sodium_init() < 0 || iterations <= 0) return 2;
    f = fopen(argv[1], "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) <= 0) {
        perror(argv[1]);
        return 2;
    }
    rewind(f);
    body = malloc((size_t)len + 1);
    if (body == NULL || fread(body, 1, (size_t)len, f) != (size_t)len) return 2;
    body[len] = '\0'; /* the worker's body buffer is NUL-terminated too */
    fclose(f);

    secret.key = argv[2];
    secret.len = strlen(argv[2]);
    sig_format(&secret, ts, body, (size_t)len, header);
    sig_prepare(&secret, &keyed); /* as endpoints.c does when it loads a secret */
    if (profile_one(header, body, (size_t)len, &secret, ts) != 0) {
        fprintf(stderr, "the event does not verify or parse\n");
        return 1;
    }
    t0 = cpu_ns();
    for (long i = 0; i < iterations; i++)
        if (profile_one(header, body, (size_t)len, &secret, ts) != 0) return 1;
    t1 = cpu_ns();
    printf("{\"iterations\": %ld, \"body_bytes\": %ld, \"ns_per_event\": %.1f}\n", iterations, len,
           (t1 - t0) / (double)iterations);
    free(body);
    return 0;
}
