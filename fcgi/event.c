/* event.c - streaming validation of a notification with yajl.
 *
 * The body is parsed once, by callbacks, so nothing but the five envelope
 * fields is copied; depth is counted on the way so a hostile body cannot make
 * the parser recurse or allocate without bound.
 */
#include "event.h"

#include <stdint.h>
#include <string.h>

#include <yajl/yajl_parse.h>

enum field { F_NONE, F_EVENT_ID, F_EVENT_TYPE, F_OCCURRED_AT, F_NOTIFICATION_ID, F_DATA, F_COUNT };

struct parse_state {
    struct event_envelope *out;
    int depth;
    enum field pending;       /* top-level key whose value comes next */
    int seen[F_COUNT];
    enum event_error err;
    const char *detail;
};

static int fail(struct parse_state *st, enum event_error err, const char *detail)
{
    st->err = err;
    st->detail = detail;
    return 0; /* tells yajl to stop */
}

static int is_id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

static int is_type_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

static int all_chars(const unsigned char *s, size_t len, int (*ok)(unsigned char))
{
    for (size_t i = 0; i < len; i++)
        if (!ok(s[i])) return 0;
    return 1;
}

static int digits(const char *s, size_t n, int lo, int hi)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    return v >= lo && v <= hi;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

static int number(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    return v;
}

int event_is_timestamp(const char *s, size_t len)
{
    size_t i = 19;
    /* YYYY-MM-DDTHH:MM:SS */
    if (len < 20 || len > MAX_TIMESTAMP_LEN) return 0;
    if (!digits(s, 4, 1, 9999) || s[4] != '-' || !digits(s + 5, 2, 1, 12) || s[7] != '-' ||
        !digits(s + 8, 2, 1, 31) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, 0, 23) ||
        s[13] != ':' || !digits(s + 14, 2, 0, 59) || s[16] != ':' || !digits(s + 17, 2, 0, 59))
        return 0;
    /* PostgreSQL refuses 2024-02-30; so must we, or it becomes a 400 of the wrong kind. */
    if (number(s + 8, 2) > days_in_month(number(s, 4), number(s + 5, 2))) return 0;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9') i++;
        if (i == start || i - start > 9) return 0;
    }
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) return i + 1 == len;
    if (i + 6 == len && (s[i] == '+' || s[i] == '-'))
        return digits(s + i + 1, 2, 0, MAX_UTC_OFFSET_HOURS) && s[i + 3] == ':' && digits(s + i + 4, 2, 0, 59);
    return 0;
}

static int copy_field(char *dst, size_t cap, const unsigned char *s, size_t len,
                      int (*ok)(unsigned char))
{
    if (len == 0 || len >= cap || !all_chars(s, len, ok)) return 0;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 1;
}

/* A scalar or container arrives as the value of a top-level key. */
static int top_value(struct parse_state *st, int is_string, const unsigned char *s, size_t len,
                     int is_null)
{
    enum field f = st->pending;
    struct event_envelope *o = st->out;

    st->pending = F_NONE;
    switch (f) {
    case F_EVENT_ID:
        if (!is_string || !copy_field(o->event_id, sizeof o->event_id, s, len, is_id_char))
            return fail(st, EVENT_INVALID_FIELD, "event_id must be a short string of letters, digits, '_' or '-'");
        return 1;
    case F_EVENT_TYPE:
        if (!is_string || !copy_field(o->event_type, sizeof o->event_type, s, len, is_type_char))
            return fail(st, EVENT_INVALID_FIELD, "event_type must be a short string like \"transaction.completed\"");
        return 1;
    case F_OCCURRED_AT:
        if (!is_string || !event_is_timestamp((const char *)s, len))
            return fail(st, EVENT_INVALID_FIELD, "occurred_at must be an RFC 3339 timestamp");
        memcpy(o->occurred_at, s, len);
        o->occurred_at[len] = '\0';
        return 1;
    case F_NOTIFICATION_ID:
        if (is_null) return 1;
        if (!is_string || !copy_field(o->notification_id, sizeof o->notification_id, s, len, is_id_char))
            return fail(st, EVENT_INVALID_FIELD, "notification_id must be a short id string or null");
        return 1;
    case F_DATA:
        return fail(st, EVENT_INVALID_FIELD, "data must be a JSON object");
    case F_NONE:
    case F_COUNT:
        break;
    }
    return 1;
}

static int on_scalar(void *ctx)
{
    struct parse_state *st = ctx;
    if (st->depth == 0) return fail(st, EVENT_MALFORMED_JSON, "a notification is a JSON object");
    return st->depth == 1 ? top_value(st, 0, NULL, 0, 0) : 1;
}

static int on_null(void *ctx)
{
    struct parse_state *st = ctx;
    if (st->depth == 0) return fail(st, EVENT_MALFORMED_JSON, "a notification is a JSON object");
    return st->depth == 1 ? top_value(st, 0, NULL, 0, 1) : 1;
}

static int on_boolean(void *ctx, int v) { (void)v; return on_scalar(ctx); }
static int on_number(void *ctx, const char *s, size_t len) { (void)s; (void)len; return on_scalar(ctx); }

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    struct parse_state *st = ctx;
    if (st->depth == 0) return fail(st, EVENT_MALFORMED_JSON, "a notification is a JSON object");
    return st->depth == 1 ? top_value(st, 1, s, len, 0) : 1;
}

static int open_container(struct parse_state *st, int is_map)
{
    if (st->depth == 0 && !is_map) return fail(st, EVENT_MALFORMED_JSON, "a notification is a JSON object");
    if (st->depth == 1) {
        if (st->pending == F_DATA && !is_map) return fail(st, EVENT_INVALID_FIELD, "data must be a JSON object");
        if (st->pending != F_DATA && st->pending != F_NONE) return top_value(st, 0, NULL, 0, 0);
        st->pending = F_NONE;
    }
    if (++st->depth > MAX_JSON_DEPTH) return fail(st, EVENT_TOO_DEEP, "JSON nesting is too deep");
    return 1;
}

static int on_start_map(void *ctx) { return open_container(ctx, 1); }
static int on_start_array(void *ctx) { return open_container(ctx, 0); }

static int on_end(void *ctx)
{
    struct parse_state *st = ctx;
    st->depth--;
    return 1;
}

static int on_map_key(void *ctx, const unsigned char *key, size_t len)
{
    static const struct { const char *name; enum field f; } fields[] = {
        {"event_id", F_EVENT_ID}, {"event_type", F_EVENT_TYPE}, {"occurred_at", F_OCCURRED_AT},
        {"notification_id", F_NOTIFICATION_ID}, {"data", F_DATA},
    };
    struct parse_state *st = ctx;

    if (st->depth != 1) return 1;
    st->pending = F_NONE;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strlen(fields[i].name) == len && memcmp(fields[i].name, key, len) == 0) {
            if (st->seen[fields[i].f]++)
                return fail(st, EVENT_INVALID_FIELD, "an envelope field appears twice");
            st->pending = fields[i].f;
        }
    }
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

/* Strict UTF-8 (RFC 3629). yajl checks only the shape of multi-byte
 * sequences: overlong forms, surrogates and code points past U+10FFFF would
 * reach PostgreSQL, which refuses them as a database error. */
static int utf8_valid(const unsigned char *s, size_t len)
{
    static const uint64_t high_bits = 0x8080808080808080ULL;
    size_t i = 0;

    while (i < len) {
        uint32_t cp, min;
        size_t more;
        uint64_t w[4];

        /* ASCII 32 bytes at a time: Paddle escapes everything else as \uXXXX. */
        if (len - i >= sizeof w && (memcpy(w, s + i, sizeof w), ((w[0] | w[1] | w[2] | w[3]) & high_bits) == 0)) {
            i += sizeof w;
            continue;
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if (s[i] >= 0xc2 && s[i] <= 0xdf) more = 1, cp = s[i] & 0x1fu, min = 0x80;
        else if (s[i] >= 0xe0 && s[i] <= 0xef) more = 2, cp = s[i] & 0x0fu, min = 0x800;
        else if (s[i] >= 0xf0 && s[i] <= 0xf4) more = 3, cp = s[i] & 0x07u, min = 0x10000;
        else return 0;
        if (len - i - 1 < more) return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += more + 1;
    }
    return 1;
}

enum event_error event_parse(const unsigned char *body, size_t len,
                             struct event_envelope *out, const char **detail)
{
    struct parse_state st = {.out = out, .err = EVENT_OK, .detail = NULL};
    yajl_handle h = NULL;

    memset(out, 0, sizeof *out);
    if (len == 0) {
        fail(&st, EVENT_EMPTY, "the request body is empty");
        goto out;
    }
    if (!utf8_valid(body, len)) {
        fail(&st, EVENT_MALFORMED_JSON, "the body is not valid UTF-8");
        goto out;
    }
    h = yajl_alloc(&callbacks, NULL, &st);
    if (h == NULL) {
        fail(&st, EVENT_MALFORMED_JSON, "out of memory");
        goto out;
    }
    if ((yajl_parse(h, body, len) != yajl_status_ok || yajl_complete_parse(h) != yajl_status_ok) &&
        st.err == EVENT_OK)
        fail(&st, EVENT_MALFORMED_JSON, "the body is not valid JSON (or not valid UTF-8)");
    if (st.err != EVENT_OK) goto out;

    if (!st.seen[F_EVENT_ID]) fail(&st, EVENT_MISSING_FIELD, "event_id is missing");
    else if (!st.seen[F_EVENT_TYPE]) fail(&st, EVENT_MISSING_FIELD, "event_type is missing");
    else if (!st.seen[F_OCCURRED_AT]) fail(&st, EVENT_MISSING_FIELD, "occurred_at is missing");
    else if (!st.seen[F_DATA]) fail(&st, EVENT_MISSING_FIELD, "data is missing");
out:
    if (h) yajl_free(h);
    if (detail) *detail = st.detail;
    return st.err;
}

const char *event_error_code(enum event_error e)
{
    switch (e) {
    case EVENT_OK: return "ok";
    case EVENT_EMPTY: return "empty_body";
    case EVENT_MALFORMED_JSON: return "malformed_json";
    case EVENT_TOO_DEEP: return "nesting_too_deep";
    case EVENT_MISSING_FIELD: return "missing_field";
    case EVENT_INVALID_FIELD: return "invalid_field";
    }
    return "malformed_json";
}
