/* Scenario templates: offsets, timestamps, stable fresh ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "template.h"

static void test_offsets(void)
{
    static const struct { const char *s; long long v; } good[] = {
        {"0", 0}, {"+30d", 30 * 86400}, {"-2h", -7200}, {"+1d+30m", 86400 + 1800}, {"45s", 45}, {"+1m-1s", 59}};
    static const char *bad[] = {"", "+", "30", "+30x", "d", "+1d+", "1.5h"};
    long long v;

    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        tap_ok(template_offset(good[i].s, &v) == 0 && v == good[i].v, "offset %s = %lld s", good[i].s, good[i].v);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        tap_ok(template_offset(bad[i], &v) != 0, "offset '%s' is rejected", bad[i]);
}

static void test_expand(void)
{
    char err[128], t[TEMPLATE_TS_LEN + 1];
    char *out = template_expand("{\"a\":\"{{id:ctm:x}}\",\"b\":\"{{id:ctm:x}}\",\"c\":\"{{id:ctm:y}}\","
                                "\"t\":\"{{time:+1d}}\"}", 1700000000, err, sizeof err);
    char a[64] = "", b[64] = "", c[64] = "", ts[64] = "";

    tap_ok(out != NULL, "a template expands (%s)", out ? "ok" : err);
    if (out && sscanf(out, "{\"a\":\"%63[^\"]\",\"b\":\"%63[^\"]\",\"c\":\"%63[^\"]\",\"t\":\"%63[^\"]\"}", a, b, c, ts) == 4) {
        tap_ok(strcmp(a, b) == 0, "one key gives one id within a run");
        tap_ok(strcmp(a, c) != 0, "different labels give different ids");
        tap_ok(strncmp(a, "ctm_01", 6) == 0 && strlen(a) == 30, "ids look like Paddle's (%s)", a);
        tap_ok(strcmp(ts, "2023-11-15T22:13:20.000000Z") == 0, "time placeholder is base + offset (%s)", ts);
    } else {
        tap_ok(0, "expanded template has the expected shape");
    }
    free(out);
    template_time(0, 0, t);
    tap_ok(strcmp(t, "1970-01-01T00:00:00.000000Z") == 0, "template_time formats RFC 3339");
    template_time(86400, 42, t);
    tap_ok(strcmp(t, "1970-01-02T00:00:00.000042Z") == 0, "template_time carries microseconds");
    tap_ok(template_expand("{{nope}}", 0, err, sizeof err) == NULL, "unknown placeholder is an error");
    tap_ok(template_expand("{{id:ctm:x", 0, err, sizeof err) == NULL, "unterminated placeholder is an error");
    tap_ok(template_expand("{{id:CTM:x}}", 0, err, sizeof err) == NULL, "id prefix must be lower-case letters");
    tap_ok(template_expand("{{time:soon}}", 0, err, sizeof err) == NULL, "bad time offset is an error");
    out = template_expand("no placeholders", 0, err, sizeof err);
    tap_ok(out && strcmp(out, "no placeholders") == 0, "text without placeholders is unchanged");
    free(out);
}

void test_template(void)
{
    test_offsets();
    test_expand();
}
