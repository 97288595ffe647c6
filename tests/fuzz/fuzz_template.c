/* fuzz_template.c - libFuzzer target for simulate's scenario templates.
 *
 * Input: a template (NUL-terminated copy of the bytes up to the first NUL).
 * The base time is fixed so runs are reproducible. Checks, besides ASan/UBSan:
 *
 *   - template_expand returns either a string or NULL with a non-empty,
 *     NUL-terminated reason that fits the caller's buffer;
 *   - an expansion contains no "{{" (every placeholder was replaced), and the
 *     text outside placeholders is copied unchanged (the expansion of a
 *     template without "{{" is the template itself);
 *   - each {{time:X}} expands to a timestamp event_is_timestamp accepts, equal
 *     to template_time(base + template_offset(X));
 *   - one {{id:P:L}} key gives one id everywhere in a run; ids look like
 *     Paddle's (P_01 + 24 base32 characters).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "event.h"
#include "limits.h"
#include "template.h"

#define BASE 1767225600LL /* 2026-01-01T00:00:00Z */
#define ERRLEN 96

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_template: property violated: " __VA_ARGS__); \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (sodium_init() < 0) abort();
    return 0;
}

struct seen_id {
    char key[64];
    char id[MAX_ID_LEN + 1];
};

/* Walks the template and its expansion side by side. */
static void check_expansion(const char *t, const char *out)
{
    struct seen_id ids[64];
    size_t n_ids = 0;
    const char *p = t, *q = out;

    for (;;) {
        const char *open = strstr(p, "{{"), *close;
        size_t lit = open ? (size_t)(open - p) : strlen(p);
        CHECK(strncmp(p, q, lit) == 0, "literal text changed");
        p += lit;
        q += lit;
        if (open == NULL) break;
        close = strstr(open, "}}");
        CHECK(close != NULL, "expanded despite an unterminated placeholder");
        char key[64];
        size_t klen = (size_t)(close - open - 2);
        CHECK(klen > 0 && klen < sizeof key, "placeholder length %zu accepted", klen);
        memcpy(key, open + 2, klen);
        key[klen] = '\0';
        if (strncmp(key, "time:", 5) == 0) {
            long long off;
            char want[TEMPLATE_TS_LEN + 1];
            CHECK(template_offset(key + 5, &off) == 0, "bad offset %s accepted", key);
            template_time(BASE + off, 0, want);
            CHECK(strncmp(q, want, strlen(want)) == 0, "{{%s}} did not expand to %s", key, want);
            /* Years 1..9999 only: offsets of millions of days are accepted and
             * give wider years, harmless for the compiled-in scenarios. */
            if (BASE + off >= -62135596800LL && BASE + off <= 253402300799LL)
                CHECK(event_is_timestamp(want, strlen(want)), "time %s is not RFC 3339", want);
            q += strlen(want);
        } else {
            CHECK(strncmp(key, "id:", 3) == 0, "unknown placeholder {{%s}} accepted", key);
            const char *colon = strchr(key + 3, ':');
            size_t plen = colon ? (size_t)(colon - key - 3) : strlen(key + 3);
            size_t idlen = 0;
            while (q[idlen] && ((q[idlen] >= 'a' && q[idlen] <= 'z') || (q[idlen] >= '0' && q[idlen] <= '9') ||
                                q[idlen] == '_'))
                idlen++;
            /* The literal after the placeholder may itself start with id characters. */
            CHECK(idlen >= plen + 27 && q[plen] == '_' && strncmp(q, key + 3, plen) == 0 &&
                      strncmp(q + plen, "_01", 3) == 0,
                  "{{%s}} gave '%.40s'", key, q);
            idlen = plen + 27;
            int found = 0;
            for (size_t i = 0; i < n_ids; i++) {
                if (strcmp(ids[i].key, key) == 0) {
                    CHECK(strncmp(ids[i].id, q, idlen) == 0, "key %s gave two different ids", key);
                    found = 1;
                } else {
                    CHECK(strncmp(ids[i].id, q, idlen) != 0 || strlen(ids[i].id) != idlen,
                          "keys %s and %s gave the same id", ids[i].key, key);
                }
            }
            if (!found) {
                CHECK(n_ids < 64, "more than 64 distinct ids accepted");
                snprintf(ids[n_ids].key, sizeof ids[n_ids].key, "%s", key);
                memcpy(ids[n_ids].id, q, idlen);
                ids[n_ids].id[idlen] = '\0';
                n_ids++;
            }
            q += idlen;
        }
        p = close + 2;
    }
    CHECK(*q == '\0', "expansion has trailing bytes");
    CHECK(strstr(out, "{{") == NULL, "expansion still contains {{");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *t = malloc(size + 1), *out;
    char err[ERRLEN + 8];

    if (t == NULL) abort();
    memcpy(t, data, size);
    t[size] = '\0';

    memset(err, 'X', sizeof err);
    out = template_expand(t, BASE, err, ERRLEN);
    if (out == NULL) {
        CHECK(memchr(err, '\0', ERRLEN) != NULL && err[0] != '\0', "no NUL-terminated reason");
        CHECK(memcmp(err + ERRLEN, "XXXXXXXX", 8) == 0, "reason written past errlen");
    } else {
        check_expansion(t, out);
        if (strstr(t, "{{") == NULL) CHECK(strcmp(t, out) == 0, "template without placeholders changed");
        free(out);
    }

    /* template_offset on short inputs (simulate passes it the "at" field). */
    if (size <= 64) {
        long long off;
        if (template_offset(t, &off) == 0)
            CHECK(off > -10000000000000000LL && off < 10000000000000000LL, "offset %lld", off);
    }
    free(t);
    return 0;
}
