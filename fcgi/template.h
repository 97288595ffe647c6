/* template.h - scenario templates: placeholders for ids and times. Pure
 * apart from drawing random ids, so unit tests can call it. */
#ifndef PADDLEHOOK_TEMPLATE_H
#define PADDLEHOOK_TEMPLATE_H

#include <stddef.h>

#define TEMPLATE_TS_LEN 27 /* 2026-01-01T00:00:00.000000Z */

/* Expands {{id:PREFIX:LABEL}} (a fresh Paddle-style id, the same for every
 * use of one key) and {{time:OFFSET}} (RFC 3339 at base + OFFSET). Returns a
 * malloc'd string, or NULL with a reason in err. */
char *template_expand(const char *tmpl, long long base, char *err, size_t errlen);

/* "+30d", "-2h", "+1d+30m", "0" -> seconds. 0, or -1 when malformed. */
int template_offset(const char *s, long long *seconds);

/* Unix seconds + microseconds -> "YYYY-MM-DDTHH:MM:SS.uuuuuuZ". */
void template_time(long long t, int micros, char out[TEMPLATE_TS_LEN + 1]);

/* "PREFIX_01" + 24 random base32 characters, like Paddle's ids. */
void template_id(const char *prefix, char *out, size_t cap);

#endif
