/* Event envelope parsing: every fixture, and every way a body can be wrong. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "tap.h"

static enum event_error parse(const char *body, struct event_envelope *ev)
{
    return event_parse((const unsigned char *)body, strlen(body), ev, NULL);
}

static int is_json(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".json") == 0;
}

/* Every complete notification in envelopes/ and signed/ parses, and its
 * event_type matches the file it came from. */
static void test_fixture_dir(const char *sub, int names_are_types)
{
    char dir[512];
    struct dirent **list = NULL;
    int n;

    snprintf(dir, sizeof dir, "%s/%s", tap_fixtures_dir(), sub);
    n = scandir(dir, &list, NULL, alphasort);
    tap_ok(n > 2, "fixture directory %s is readable", dir);
    for (int i = 0; i < n; i++) {
        char path[1024];
        size_t len = 0;
        char *body;
        struct event_envelope ev;
        const char *detail = NULL;
        enum event_error e;

        if (!is_json(list[i]->d_name)) {
            free(list[i]);
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
        body = tap_read_file(path, &len);
        e = body ? event_parse((unsigned char *)body, len, &ev, &detail) : EVENT_EMPTY;
        if (names_are_types) {
            size_t tn = strlen(list[i]->d_name) - 5;
            tap_ok(e == EVENT_OK && strlen(ev.event_type) == tn &&
                       strncmp(ev.event_type, list[i]->d_name, tn) == 0 &&
                       strncmp(ev.event_id, "evt_", 4) == 0 && ev.notification_id[0] != '\0',
                   "%s/%s parses (%s)", sub, list[i]->d_name, e == EVENT_OK ? ev.event_type : detail);
        } else {
            tap_ok(e == EVENT_OK, "%s/%s parses (%s)", sub, list[i]->d_name,
                   e == EVENT_OK ? ev.event_type : detail);
        }
        free(body);
        free(list[i]);
    }
    free(list);
}

#define ENV_HEAD "{\"event_id\":\"evt_01\",\"event_type\":\"customer.created\","
#define GOOD ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38.286848Z\",\"notification_id\":\"ntf_01\",\"data\":{}}"

/* Strict UTF-8 in a body that is otherwise a valid notification, the
 * sequence at every offset of two 32-byte blocks (the ASCII fast path) and
 * with 0 or 39 ASCII bytes after it, in a buffer of exactly the body's size
 * (no NUL after it: ASan sees a read past the end). */
static void test_utf8(struct event_envelope *ev)
{
    static const struct { const char *bytes, *what; int ok; } cases[] = {
        {"\xc3\xa9", "U+00E9", 1},           {"\xe2\x82\xac", "U+20AC", 1},
        {"\xf0\x9f\x92\xb3", "U+1F4B3", 1},  {"\xef\xbf\xbf", "U+FFFF", 1},
        {"\xf4\x8f\xbf\xbf", "U+10FFFF", 1}, {"\xc2\x80", "U+0080", 1},
        {"\xc0\xaf", "overlong /", 0},     {"\xc1\xbf", "overlong 2-byte", 0},
        {"\xe0\x80\xaf", "overlong 3-byte", 0}, {"\xf0\x80\x80\xaf", "overlong 4-byte", 0},
        {"\xed\xa0\x80", "surrogate D800", 0}, {"\xed\xbf\xbf", "surrogate DFFF", 0},
        {"\xf4\x90\x80\x80", "past U+10FFFF", 0}, {"\xf5\x80\x80\x80", "lead F5", 0},
        {"\xc3", "truncated 2-byte", 0},    {"\xe2\x82", "truncated 3-byte", 0},
        {"\x80", "lone continuation", 0},   {"\xc3\x28", "bad continuation", 0},
    };
    static const char ascii[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int all = 1;
        for (int pad = 0; pad < 64; pad++) {
            for (int tail = 0; tail <= 39; tail += 39) {
                char body[512];
                int n = snprintf(body, sizeof body,
                                 "{\"event_id\":\"evt_1\",\"event_type\":\"x.y\",\"occurred_at\":"
                                 "\"2024-01-01T00:00:00Z\",\"data\":{\"s\":\"%.*s%s%.*s\"}}",
                                 pad, ascii, cases[c].bytes, tail, ascii);
                unsigned char *exact = malloc((size_t)n);
                if (exact == NULL) abort();
                memcpy(exact, body, (size_t)n);
                all &= (event_parse(exact, (size_t)n, ev, NULL) == EVENT_OK) == cases[c].ok;
                free(exact);
            }
        }
        tap_ok(all, "UTF-8 %s is %s", cases[c].what, cases[c].ok ? "accepted" : "malformed_json");
    }
    tap_ok(event_parse((const unsigned char *)"{\"a\":\"\xc3", 7, ev, NULL) == EVENT_MALFORMED_JSON,
           "a sequence cut by the end of the body");
    {
        /* Cut by the end of the buffer itself: nothing past it is read (ASan). */
        static const char *cut[] = {"{\"a\":\"\xc3", "{\"a\":\"\xe2\x82", "{\"a\":\"\xf0\x9f\x92"};
        int all = 1;
        for (size_t c = 0; c < sizeof cut / sizeof cut[0]; c++) {
            size_t n = strlen(cut[c]);
            unsigned char *exact = malloc(n);
            if (exact == NULL) abort();
            memcpy(exact, cut[c], n);
            all &= event_parse(exact, n, ev, NULL) == EVENT_MALFORMED_JSON;
            free(exact);
        }
        tap_ok(all, "a sequence cut by the end of the buffer is malformed_json");
    }
}

static void test_envelope_rules(void)
{
    struct event_envelope ev;
    char *deep;
    size_t depth = MAX_JSON_DEPTH + 1;

    tap_ok(parse(GOOD, &ev) == EVENT_OK && strcmp(ev.event_id, "evt_01") == 0 &&
               strcmp(ev.occurred_at, "2024-03-15T10:32:38.286848Z") == 0 &&
               strcmp(ev.notification_id, "ntf_01") == 0,
           "a minimal envelope parses and its fields are copied");
    tap_ok(event_parse((const unsigned char *)"", 0, &ev, NULL) == EVENT_EMPTY, "empty body");
    tap_ok(parse("{", &ev) == EVENT_MALFORMED_JSON, "truncated JSON");
    tap_ok(parse("[1,2]", &ev) == EVENT_MALFORMED_JSON, "top-level array");
    tap_ok(parse("\"x\"", &ev) == EVENT_MALFORMED_JSON, "top-level string");
    tap_ok(parse(GOOD " {}", &ev) == EVENT_MALFORMED_JSON, "trailing second value");
    tap_ok(parse("{\"a\":1 /* c */}", &ev) == EVENT_MALFORMED_JSON, "comments are not JSON");
    tap_ok(parse("{\"event_id\":\"evt_\xff\"}", &ev) == EVENT_MALFORMED_JSON, "invalid UTF-8");
    test_utf8(&ev);
    tap_ok(parse("\xef\xbb\xbf" GOOD, &ev) == EVENT_MALFORMED_JSON, "a byte-order mark is not JSON");
    tap_ok(event_parse((const unsigned char *)GOOD, sizeof GOOD, &ev, NULL) == EVENT_MALFORMED_JSON,
           "a NUL byte after the body");
    tap_ok(parse("{\"event_type\":\"a.b\",\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{}}", &ev) ==
               EVENT_MISSING_FIELD, "missing event_id");
    tap_ok(parse("{\"event_id\":\"e\",\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{}}", &ev) ==
               EVENT_MISSING_FIELD, "missing event_type");
    tap_ok(parse(ENV_HEAD "\"data\":{}}", &ev) == EVENT_MISSING_FIELD, "missing occurred_at");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\"}", &ev) == EVENT_MISSING_FIELD, "missing data");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{}}", &ev) == EVENT_OK &&
               ev.notification_id[0] == '\0', "notification_id is optional");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"notification_id\":null,\"data\":{}}", &ev) ==
               EVENT_OK, "notification_id may be null");
    tap_ok(parse("{\"event_id\":12,\"event_type\":\"a.b\",\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{}}", &ev) ==
               EVENT_INVALID_FIELD, "numeric event_id");
    tap_ok(parse("{\"event_id\":\"x'; DROP TABLE t;--\",\"event_type\":\"a.b\",\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{}}", &ev) ==
               EVENT_INVALID_FIELD, "event_id with SQL metacharacters");
    {
        /* Ids are letters, digits, '_' and '-': any other character is refused, one at a time. */
        static const char others[] = ".:/ %;,+@#~'";
        int all = 1;
        for (const char *c = others; *c; c++) {
            char body[256];
            snprintf(body, sizeof body, "{\"event_id\":\"evt%c1\",\"event_type\":\"a.b\",\"occurred_at\":"
                     "\"2024-03-15T10:32:38Z\",\"data\":{}}", *c);
            all &= parse(body, &ev) == EVENT_INVALID_FIELD;
        }
        tap_ok(all, "an event_id with any character but letters, digits, '_' and '-' is invalid_field");
    }
    tap_ok(parse("{\"event_id\":\"e\",\"event_type\":\"A B\",\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{}}", &ev) ==
               EVENT_INVALID_FIELD, "event_type with spaces");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"yesterday\",\"data\":{}}", &ev) == EVENT_INVALID_FIELD,
           "occurred_at not a timestamp");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":{},\"data\":{}}", &ev) == EVENT_INVALID_FIELD, "occurred_at an object");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":\"x\"}", &ev) == EVENT_INVALID_FIELD,
           "data a string");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":[]}", &ev) == EVENT_INVALID_FIELD,
           "data an array");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":null}", &ev) == EVENT_INVALID_FIELD,
           "data null");
    tap_ok(parse(ENV_HEAD "\"event_id\":\"evt_02\",\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{}}", &ev) ==
               EVENT_INVALID_FIELD, "an envelope field twice");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{\"n\":1e999999,\"m\":-123456789012345678901234567890}}", &ev) ==
               EVENT_OK, "huge numbers inside data are fine (not converted)");
    tap_ok(parse(ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{\"k\":1,\"k\":2}}", &ev) == EVENT_OK,
           "duplicate keys inside data are left to jsonb (last wins)");

    deep = malloc(2 * depth + 256);
    {
        size_t p = (size_t)sprintf(deep, ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":");
        for (size_t i = 1; i < depth; i++) deep[p++] = '[';
        for (size_t i = 1; i < depth; i++) deep[p++] = ']';
        deep[p++] = '}';
        deep[p] = '\0';
        tap_ok(parse(deep, &ev) == EVENT_INVALID_FIELD, "deep data array is still just not an object");
        p = (size_t)sprintf(deep, ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{\"x\":");
        for (size_t i = 2; i < depth; i++) deep[p++] = '[';
        for (size_t i = 2; i < depth; i++) deep[p++] = ']';
        deep[p++] = '}';
        deep[p++] = '}';
        deep[p] = '\0';
        tap_ok(parse(deep, &ev) == EVENT_TOO_DEEP, "nesting deeper than %d is rejected", MAX_JSON_DEPTH);
    }
    free(deep);
}

static void test_timestamps(void)
{
    static const char *good[] = {"2024-03-15T10:32:38Z", "2024-03-15T10:32:38.1Z", "2024-03-15T10:32:38.123456789Z",
                                 "2024-03-15T10:32:38+02:00", "2024-03-15t10:32:38.5-05:30",
                                 "2024-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "2024-03-15T10:32:38+15:59",
                                 "2024-03-15T10:32:38-15:00"};
    static const char *bad[] = {"2024-03-15 10:32:38Z", "2024-03-15T10:32:38", "2024-13-15T10:32:38Z",
                                "2024-03-15T24:00:00Z", "2024-03-15T10:32:38.Z", "2024-03-15T10:32:38.1234567890Z",
                                "2024-03-15T10:32:38+2:00", "0000-03-15T10:32:38Z", "2024-03-15T10:32:38ZZ",
                                "2024-02-30T10:32:38Z", "2023-02-29T10:32:38Z", "2024-04-31T00:00:00Z",
                                "2024-03-15T10:32:38+16:00", "2024-03-15T10:32:38-23:59",
                                /* PostgreSQL refuses these too: century years are leap years
                                 * only when divisible by 400; an offset has at most 59 minutes. */
                                "2100-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
                                "2024-03-15T10:32:38+15:60", "2024-03-15T10:32:38-05:99"};
    /* Cut short, in a buffer of exactly their length (ASan sees a read past the end). */
    static const char *cut[] = {"2024-03-15T10:32:38", "2024-03-15T10:32:38.", "2024-03-15T10:32:38+02:0",
                                "2024-03-15T10", "2024"};
    for (size_t i = 0; i < sizeof cut / sizeof *cut; i++) {
        size_t n = strlen(cut[i]);
        char *exact = malloc(n);
        if (exact == NULL) abort();
        memcpy(exact, cut[i], n);
        tap_ok(!event_is_timestamp(exact, n), "timestamp cut short is rejected without reading past it: %s", cut[i]);
        free(exact);
    }
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        tap_ok(event_is_timestamp(good[i], strlen(good[i])), "timestamp accepted: %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        tap_ok(!event_is_timestamp(bad[i], strlen(bad[i])), "timestamp rejected: %s", bad[i]);
}

/* Envelope fields up to their limits are accepted and copied whole; one
 * character more is invalid_field (never cut short, never written past the
 * end of the envelope). Nesting exactly at the limit is accepted. */
static void test_envelope_limits(void)
{
    struct event_envelope ev;
    char id[MAX_ID_LEN + 2], type[MAX_EVENT_TYPE_LEN + 2], body[1024], *deep;
    size_t p;

    memset(id, 'a', sizeof id);
    memset(type, 'b', sizeof type);
    id[MAX_ID_LEN] = '\0';
    type[MAX_EVENT_TYPE_LEN] = '\0';
    snprintf(body, sizeof body, "{\"event_id\":\"%s\",\"event_type\":\"%s\",\"occurred_at\":"
             "\"2024-03-15T10:32:38Z\",\"notification_id\":\"%s\",\"data\":{}}", id, type, id);
    tap_ok(parse(body, &ev) == EVENT_OK && strcmp(ev.event_id, id) == 0 && strcmp(ev.event_type, type) == 0 &&
               strcmp(ev.notification_id, id) == 0,
           "ids of exactly %d and an event_type of exactly %d characters are accepted whole", MAX_ID_LEN,
           MAX_EVENT_TYPE_LEN);
    id[MAX_ID_LEN] = 'a';
    id[MAX_ID_LEN + 1] = '\0';
    snprintf(body, sizeof body, ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"notification_id\":\"%s\","
             "\"data\":{}}", id);
    tap_ok(parse(body, &ev) == EVENT_INVALID_FIELD, "a notification_id of %d characters is invalid_field",
           MAX_ID_LEN + 1);
    snprintf(body, sizeof body, "{\"event_id\":\"%s\",\"event_type\":\"a.b\",\"occurred_at\":"
             "\"2024-03-15T10:32:38Z\",\"data\":{}}", id);
    tap_ok(parse(body, &ev) == EVENT_INVALID_FIELD, "an event_id of %d characters is invalid_field", MAX_ID_LEN + 1);
    type[MAX_EVENT_TYPE_LEN] = 'b';
    type[MAX_EVENT_TYPE_LEN + 1] = '\0';
    snprintf(body, sizeof body, "{\"event_id\":\"e\",\"event_type\":\"%s\",\"occurred_at\":"
             "\"2024-03-15T10:32:38Z\",\"data\":{}}", type);
    tap_ok(parse(body, &ev) == EVENT_INVALID_FIELD, "an event_type of %d characters is invalid_field",
           MAX_EVENT_TYPE_LEN + 1);

    /* The envelope is level 1 and data level 2: data holds MAX_JSON_DEPTH - 2 more arrays. */
    deep = malloc(2 * MAX_JSON_DEPTH + 256);
    if (deep == NULL) abort();
    p = (size_t)sprintf(deep, ENV_HEAD "\"occurred_at\":\"2024-03-15T10:32:38Z\",\"data\":{\"x\":");
    for (int i = 2; i < MAX_JSON_DEPTH; i++) deep[p++] = '[';
    for (int i = 2; i < MAX_JSON_DEPTH; i++) deep[p++] = ']';
    deep[p++] = '}';
    deep[p++] = '}';
    deep[p] = '\0';
    tap_ok(parse(deep, &ev) == EVENT_OK, "nesting of exactly %d levels is accepted", MAX_JSON_DEPTH);
    free(deep);
}

void test_event(void)
{
    test_fixture_dir("envelopes", 1);
    test_fixture_dir("signed", 0);
    test_envelope_rules();
    test_envelope_limits();
    test_timestamps();
}
