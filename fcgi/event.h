/* event.h - validate a Paddle notification body and pick out its envelope.
 * Pure: bytes in, struct out. The body itself is stored verbatim. */
#ifndef PADDLEHOOK_EVENT_H
#define PADDLEHOOK_EVENT_H

#include <stddef.h>

#include "limits.h"

enum event_error {
    EVENT_OK = 0,
    EVENT_EMPTY,          /* no bytes at all */
    EVENT_MALFORMED_JSON, /* not one valid UTF-8 JSON object */
    EVENT_TOO_DEEP,       /* nesting beyond MAX_JSON_DEPTH */
    EVENT_MISSING_FIELD,  /* event_id, event_type, occurred_at or data absent */
    EVENT_INVALID_FIELD   /* present with the wrong type or format */
};

struct event_envelope {
    char event_id[MAX_ID_LEN + 1];
    char event_type[MAX_EVENT_TYPE_LEN + 1];
    char occurred_at[MAX_TIMESTAMP_LEN + 1];
    char notification_id[MAX_ID_LEN + 1]; /* "" when absent or null */
};

/* Validates the whole body as JSON (strict UTF-8, no comments, one value,
 * depth <= MAX_JSON_DEPTH) and fills `out`. On error, *detail (if not NULL)
 * points to a static human-readable reason. */
enum event_error event_parse(const unsigned char *body, size_t len,
                             struct event_envelope *out, const char **detail);

/* Machine-readable error code for the HTTP response. */
const char *event_error_code(enum event_error e);

/* 1 when s is an RFC 3339 timestamp ("2024-03-15T10:32:38.286848Z"). */
int event_is_timestamp(const char *s, size_t len);

#endif
