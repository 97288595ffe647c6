/* fuzz_event.c - libFuzzer target for the notification envelope parser.
 *
 * Input: a request body. Besides memory safety (ASan/UBSan, and no stack
 * exhaustion on deep nesting), the target checks:
 *
 *   - a body event_parse accepts holds no NUL byte (the worker hands the body
 *     to libpq as a C string: a NUL would store something other than what
 *     was signed);
 *   - the envelope fields it returns are NUL-terminated, within their limits,
 *     of the documented characters, and equal to what an independent parse
 *     (yajl's tree API) finds at the top level, where each envelope key
 *     occurs exactly once;
 *   - occurred_at is accepted only as a real calendar timestamp, and
 *     event_is_timestamp agrees with a second, table-driven reading of
 *     RFC 3339 (also run directly on short inputs).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "event.h"

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_event: property violated: " __VA_ARGS__);   \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* "dddd-dd-ddTdd:dd:dd" then [.d{1,9}] then Z | +hh:mm | -hh:mm. */
static int ref_timestamp(const char *s, size_t len)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int f[6], fi = 0, cur = -1;
    size_t i, frac = 0;

    if (len > MAX_TIMESTAMP_LEN || len < sizeof shape - 1 + 1) return 0;
    for (i = 0; i < sizeof shape - 1; i++) {
        char want = shape[i], c = s[i];
        if (want == 'd') {
            if (c < '0' || c > '9') return 0;
            cur = (cur < 0 ? 0 : cur) * 10 + (c - '0');
        } else {
            if (want == 'T' ? (c != 'T' && c != 't') : c != want) return 0;
            f[fi++] = cur;
            cur = -1;
        }
    }
    f[fi] = cur;
    int y = f[0], mo = f[1], d = f[2], hh = f[3], mi = f[4], ss = f[5];
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || hh > 23 || mi > 59 || ss > 59) return 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap)) return 0;
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) frac++;
        if (frac < 1 || frac > 9) return 0;
    }
    if (i + 1 == len && (s[i] == 'Z' || s[i] == 'z')) return 1;
    if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        for (size_t k = i + 1; k < len; k++)
            if (k != i + 3 && (s[k] < '0' || s[k] > '9')) return 0;
        return (s[i + 1] - '0') * 10 + (s[i + 2] - '0') <= 15 &&   /* PostgreSQL's offset limit */
               (s[i + 4] - '0') * 10 + (s[i + 5] - '0') <= 59;
    }
    return 0;
}

static int chars_ok(const char *s, const char *extra, int upper)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr(extra, c) ||
            (upper && c >= 'A' && c <= 'Z'))
            continue;
        return 0;
    }
    return 1;
}

static void check_field(const char *what, const char *got, size_t cap, yajl_val top, const char *key,
                        int optional)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(top, path, yajl_t_any);
    size_t n = strnlen(got, cap + 1);

    CHECK(n <= cap, "%s is not NUL-terminated within %zu bytes", what, cap);
    if (optional && (v == NULL || YAJL_IS_NULL(v))) {
        CHECK(n == 0, "%s is set though absent or null", what);
        return;
    }
    CHECK(v != NULL && YAJL_IS_STRING(v), "%s accepted but the tree has no string there", what);
    CHECK(strcmp(YAJL_GET_STRING(v), got) == 0, "%s '%s' differs from the tree's '%s'", what, got,
          YAJL_GET_STRING(v));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *body = malloc(size ? size : 1); /* exact size: overreads trap */
    struct event_envelope ev;
    const char *detail = NULL;
    enum event_error e;

    if (body == NULL) abort();
    if (size) memcpy(body, data, size);

    if (size <= 64) {
        int a = event_is_timestamp((const char *)body, size), b = ref_timestamp((const char *)body, size);
        CHECK(a == b, "event_is_timestamp(\"%.*s\") = %d, reference = %d", (int)size, (const char *)body, a, b);
    }

    e = event_parse(body, size, &ev, &detail);
    CHECK(e >= EVENT_OK && e <= EVENT_INVALID_FIELD, "event_parse returned %d", (int)e);
    CHECK(strcmp(event_error_code(e), "") != 0, "empty error code");
    CHECK(e == EVENT_OK || (detail != NULL && *detail), "error %s without a detail", event_error_code(e));
    CHECK((e == EVENT_EMPTY) == (size == 0), "empty_body iff no bytes (got %s for %zu bytes)",
          event_error_code(e), size);

    if (e == EVENT_OK) {
        char *text = malloc(size + 1), errbuf[128];
        yajl_val top;

        CHECK(memchr(body, '\0', size) == NULL, "a body with a NUL byte was accepted");
        CHECK(*ev.event_id && chars_ok(ev.event_id, "_-", 1), "event_id '%s'", ev.event_id);
        CHECK(*ev.event_type && chars_ok(ev.event_type, "_.", 0), "event_type '%s'", ev.event_type);
        CHECK(chars_ok(ev.notification_id, "_-", 1), "notification_id '%s'", ev.notification_id);
        CHECK(ref_timestamp(ev.occurred_at, strlen(ev.occurred_at)), "occurred_at '%s'", ev.occurred_at);

        if (text == NULL) abort();
        /* yajl_tree keeps keys as C strings: "a\u0000b" becomes "a" there, so
         * it is no reference for bodies with an escaped NUL (PostgreSQL
         * refuses those anyway: unsupported_json). */
        if (memmem(body, size, "\\u0000", 6) != NULL) {
            free(text);
            free(body);
            return 0;
        }
        memcpy(text, body, size);
        text[size] = '\0';
        top = yajl_tree_parse(text, errbuf, sizeof errbuf);
        CHECK(top != NULL, "accepted body is rejected by yajl_tree: %s", errbuf);
        CHECK(YAJL_IS_OBJECT(top), "accepted body is not an object");
        {
            static const char *keys[] = {"event_id", "event_type", "occurred_at", "notification_id", "data"};
            for (size_t k = 0; k < 5; k++) {
                int count = 0;
                for (size_t i = 0; i < top->u.object.len; i++)
                    count += strcmp(top->u.object.keys[i], keys[k]) == 0;
                CHECK(count <= 1, "key %s occurs %d times in an accepted envelope", keys[k], count);
                CHECK(count == 1 || k == 3, "required key %s absent from an accepted envelope", keys[k]);
            }
            const char *path[] = {"data", NULL};
            CHECK(YAJL_IS_OBJECT(yajl_tree_get(top, path, yajl_t_any)), "data is not an object");
        }
        check_field("event_id", ev.event_id, MAX_ID_LEN, top, "event_id", 0);
        check_field("event_type", ev.event_type, MAX_EVENT_TYPE_LEN, top, "event_type", 0);
        check_field("occurred_at", ev.occurred_at, MAX_TIMESTAMP_LEN, top, "occurred_at", 0);
        check_field("notification_id", ev.notification_id, MAX_ID_LEN, top, "notification_id", 1);
        yajl_tree_free(top);
        free(text);
    }
    free(body);
    return 0;
}
