/* limits.h - every bound paddlehook puts on input, in one place.
 *
 * Each limit is checked before any allocation or work that depends on the
 * input, and each has a documented error when exceeded (README, "HTTP contract").
 */
#ifndef PADDLEHOOK_LIMITS_H
#define PADDLEHOOK_LIMITS_H

/* Request body: default and hard ceiling for --max-body. */
#define MAX_BODY_DEFAULT (1024 * 1024)
#define MAX_BODY_CEILING (64 * 1024 * 1024)

/* Paddle-Signature header: Paddle sends ~80 bytes; rotation adds a few h1. */
#define MAX_SIG_HEADER 2048
#define MAX_SIG_H1 8

/* Unix seconds in the header: 12 digits reach year 33658, enough for any
 * clock and small enough that arithmetic on it cannot overflow. */
#define MAX_SIG_TS_DIGITS 12

/* Signature tolerance default and ceiling, seconds. */
#define SIG_TOLERANCE_DEFAULT 300
#define SIG_TOLERANCE_MAX (7 * 24 * 3600)

/* JSON nesting: Paddle's deepest payloads are under 10 levels. */
#define MAX_JSON_DEPTH 64

/* Envelope fields. Paddle ids are a 4-char prefix plus 26 base32 chars. */
#define MAX_ID_LEN 64
#define MAX_EVENT_TYPE_LEN 64
#define MAX_TIMESTAMP_LEN 40
/* PostgreSQL's limit for a UTC offset in a timestamp (+15:59); beyond it
 * the cast fails and the event would get the wrong kind of 400. */
#define MAX_UTC_OFFSET_HOURS 15

/* Endpoint secrets (pdl_ntfset_... is ~70 chars) and names. */
#define MAX_SECRET_LEN 256
#define MAX_ENDPOINT_NAME_LEN 128
#define MAX_SECRETS_PER_ENDPOINT 4
#define MAX_ENDPOINTS 4096

/* Request URI as seen from nginx. */
#define MAX_URI_LEN 512

/* Workers a supervisor may run. */
#define MAX_WORKERS 256

/* --listen: a host name (DNS allows 253), a port's digits, and a unix
 * socket's path, its terminator not counted (struct sockaddr_un holds 108
 * bytes with it). */
#define MAX_LISTEN_HOST_LEN 255
#define MAX_LISTEN_PORT_DIGITS 5
#define MAX_LISTEN_PATH_LEN 107

#endif
