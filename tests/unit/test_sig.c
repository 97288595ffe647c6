/* Paddle-Signature: every vector in the Paddle fixtures, plus the parser's
 * edge cases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "sig.h"
#include "tap.h"

static const char *str_at(yajl_val obj, const char *key)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_string);
    return v ? YAJL_GET_STRING(v) : NULL;
}

static void run_vector(yajl_val vec, size_t index)
{
    const char *path_now[] = {"now", NULL}, *path_valid[] = {"valid", NULL},
               *path_secrets[] = {"secrets", NULL};
    const char *header = str_at(vec, "header"), *body = str_at(vec, "body"),
               *body_file = str_at(vec, "body_file"), *secret = str_at(vec, "secret"),
               *name = str_at(vec, "case");
    yajl_val now_v = yajl_tree_get(vec, path_now, yajl_t_number);
    yajl_val secrets_v = yajl_tree_get(vec, path_secrets, yajl_t_array);
    int expect = YAJL_IS_TRUE(yajl_tree_get(vec, path_valid, yajl_t_any));
    struct sig_secret secrets[8];
    size_t n_secrets = 0, body_len = 0;
    char *file_body = NULL;
    struct sig_header hdr;
    enum sig_result r;

    if (body_file) {
        char path[512];
        snprintf(path, sizeof path, "%s/signed/%s", tap_fixtures_dir(), body_file);
        file_body = tap_read_file(path, &body_len);
        body = file_body;
    } else if (body) {
        body_len = strlen(body);
    }
    if (secret) secrets[n_secrets++] = (struct sig_secret){.key = secret, .len = strlen(secret)};
    if (secrets_v)
        for (size_t i = 0; i < YAJL_GET_ARRAY(secrets_v)->len && n_secrets < 8; i++) {
            const char *s = YAJL_GET_STRING(YAJL_GET_ARRAY(secrets_v)->values[i]);
            secrets[n_secrets++] = (struct sig_secret){.key = s, .len = strlen(s)};
        }
    if (body == NULL || header == NULL) {
        tap_ok(0, "vector %zu: unreadable (body or header missing)", index);
        free(file_body);
        return;
    }
    r = sig_parse(header, strlen(header), &hdr);
    if (r == SIG_OK) {
        /* Vectors without "now" are checked with the time check disabled;
         * those with it use the SDKs' 5-second tolerance. */
        int64_t now = now_v ? YAJL_GET_INTEGER(now_v) : hdr.ts;
        r = sig_verify(&hdr, (const unsigned char *)body, body_len, secrets, n_secrets, now, 5);
    }
    tap_ok((r == SIG_OK) == expect, "vector %zu (%s): expected %s, got %s", index,
           name ? name : "python/php", expect ? "valid" : "invalid", sig_result_name(r));
    if (r != SIG_MALFORMED && r != SIG_MISSING) {
        /* The worker verifies with prepared secrets: same answer. */
        crypto_auth_hmacsha256_state keyed[8];
        int64_t now = now_v ? YAJL_GET_INTEGER(now_v) : hdr.ts;
        for (size_t i = 0; i < n_secrets; i++) sig_prepare(&secrets[i], &keyed[i]);
        tap_ok(sig_verify(&hdr, (const unsigned char *)body, body_len, secrets, n_secrets, now, 5) == r,
               "vector %zu (%s): prepared secrets agree", index, name ? name : "python/php");
    }
    free(file_body);
}

static void test_vectors(void)
{
    char path[512], errbuf[256];
    const char *path_vectors[] = {"vectors", NULL};
    size_t len = 0;
    char *text;
    yajl_val root, vectors;

    snprintf(path, sizeof path, "%s/signature-vectors.json", tap_fixtures_dir());
    text = tap_read_file(path, &len);
    root = text ? yajl_tree_parse(text, errbuf, sizeof errbuf) : NULL;
    vectors = root ? yajl_tree_get(root, path_vectors, yajl_t_array) : NULL;
    tap_ok(vectors != NULL && YAJL_GET_ARRAY(vectors)->len >= 20, "signature-vectors.json loads (%s)", path);
    if (vectors)
        for (size_t i = 0; i < YAJL_GET_ARRAY(vectors)->len; i++)
            run_vector(YAJL_GET_ARRAY(vectors)->values[i], i);
    yajl_tree_free(root);
    free(text);
}

static enum sig_result parse(const char *h)
{
    struct sig_header hdr;
    return sig_parse(h, h ? strlen(h) : 0, &hdr);
}

#define HEX64 "a300428748dce5c70e4da19bffd60769591ea969c99dea3105d0ec9612cf43f9"

static void test_parser_edges(void)
{
    char big[MAX_SIG_HEADER + 64];
    struct sig_header hdr;

    tap_ok(parse(NULL) == SIG_MISSING, "no header is missing_signature");
    tap_ok(parse("") == SIG_MISSING, "empty header is missing_signature");
    tap_ok(parse("ts=1;h1=" HEX64) == SIG_OK, "minimal header parses");
    tap_ok(parse("h1=" HEX64 ";ts=1") == SIG_OK, "keys in any order");
    tap_ok(parse("ts=1; h1=" HEX64) == SIG_OK, "space after ';' is tolerated");
    tap_ok(parse("ts=1;h1=" HEX64 ";v2=whatever") == SIG_OK, "unknown keys are ignored");
    tap_ok(parse("ts=1;ts=2;h1=" HEX64) == SIG_MALFORMED, "duplicated ts is malformed");
    tap_ok(parse("ts=1;h1=" HEX64 ";") == SIG_MALFORMED, "trailing ';' is malformed");
    tap_ok(parse("ts=;h1=" HEX64) == SIG_MALFORMED, "empty ts is malformed");
    tap_ok(parse("ts=-5;h1=" HEX64) == SIG_MALFORMED, "negative ts is malformed");
    tap_ok(parse("ts=1234567890123;h1=" HEX64) == SIG_MALFORMED, "13-digit ts is malformed (overflow guard)");
    tap_ok(parse("ts=99999999999999999999999;h1=" HEX64) == SIG_MALFORMED, "huge ts is malformed");
    tap_ok(parse("ts=1;h1=zz00428748dce5c70e4da19bffd60769591ea969c99dea3105d0ec9612cf43f9") == SIG_MALFORMED,
           "non-hex h1 alone is malformed");
    tap_ok(parse("ts=1;h1=" HEX64 "00") == SIG_MALFORMED, "over-long h1 alone is malformed");
    tap_ok(parse("ts=1") == SIG_MALFORMED, "no h1 is malformed");
    tap_ok(parse("garbage") == SIG_MALFORMED, "no '=' is malformed");
    tap_ok(parse("=1;h1=" HEX64) == SIG_MALFORMED, "empty key is malformed");
    tap_ok(parse("ts=1;h1=" HEX64 ", ts=1;h1=" HEX64) == SIG_MALFORMED,
           "a header joined from two (', ') is malformed");

    {
        size_t p = (size_t)snprintf(big, sizeof big, "ts=1");
        for (int i = 0; i <= MAX_SIG_H1; i++)
            p += (size_t)snprintf(big + p, sizeof big - p, ";h1=" HEX64);
        tap_ok(parse(big) == SIG_MALFORMED, "more than %d h1 values is malformed", MAX_SIG_H1);
    }
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "ts=1;h1=" HEX64 ";x=", 8 + 64 + 3);
    tap_ok(sig_parse(big, strlen(big), &hdr) == SIG_MALFORMED, "header over %d bytes is malformed",
           MAX_SIG_HEADER);
    tap_ok(sig_parse("ts=1;h1=" HEX64, 5, &hdr) == SIG_MALFORMED, "length is respected, not NUL");
}

/* Each limit is a bound, not a step short of it: a header exactly at a limit
 * is still one Paddle may send. */
static void test_parser_limits(void)
{
    static const char ts12[] = "ts=999999999999;h1=" HEX64;
    char big[MAX_SIG_HEADER + 64];
    struct sig_header hdr;
    size_t p;

    p = (size_t)snprintf(big, sizeof big, "ts=1");
    for (int i = 0; i < MAX_SIG_H1; i++) p += (size_t)snprintf(big + p, sizeof big - p, ";h1=" HEX64);
    tap_ok(sig_parse(big, p, &hdr) == SIG_OK && hdr.n_h1 == MAX_SIG_H1, "exactly %d h1 values parse",
           MAX_SIG_H1);

    p = (size_t)snprintf(big, sizeof big, "ts=1;h1=" HEX64 ";x=");
    memset(big + p, 'a', MAX_SIG_HEADER - p);
    big[MAX_SIG_HEADER] = '\0';
    tap_ok(strlen(big) == MAX_SIG_HEADER && sig_parse(big, MAX_SIG_HEADER, &hdr) == SIG_OK,
           "a header of exactly %d bytes parses", MAX_SIG_HEADER);

    tap_ok(sig_parse(ts12, strlen(ts12), &hdr) == SIG_OK && hdr.ts == 999999999999LL,
           "a ts of exactly %d digits parses", MAX_SIG_TS_DIGITS);
    tap_ok(parse("ts=1;=x;h1=" HEX64) == SIG_MALFORMED,
           "an empty key is malformed even beside a valid ts and h1");
}

static void test_roundtrip_and_window(void)
{
    const char *body = "{\"event_id\":\"evt_1\"}";
    struct sig_secret good = {.key = "pdl_ntfset_good", .len = 15}, bad = {.key = "pdl_ntfset_bad", .len = 14};
    struct sig_secret both[2] = {bad, good};
    char header[SIG_HEADER_BUF];
    struct sig_header hdr;
    const unsigned char *b = (const unsigned char *)body;
    size_t n = strlen(body);

    sig_format(&good, 1700000000, b, n, header);
    tap_ok(sig_parse(header, strlen(header), &hdr) == SIG_OK, "sig_format output parses");
    tap_ok(sig_verify(&hdr, b, n, &good, 1, 1700000000, 300) == SIG_OK, "signed body verifies");
    tap_ok(sig_verify(&hdr, b, n, both, 2, 1700000000, 300) == SIG_OK, "any of several secrets verifies");
    tap_ok(sig_verify(&hdr, b, n, &bad, 1, 1700000000, 300) == SIG_MISMATCH, "wrong secret fails");
    tap_ok(sig_verify(&hdr, b, n - 1, &good, 1, 1700000000, 300) == SIG_MISMATCH, "changed body fails");
    tap_ok(sig_verify(&hdr, b, n, &good, 0, 1700000000, 300) == SIG_MISMATCH, "no secrets never verifies");
    tap_ok(sig_verify(&hdr, b, n, &good, 1, 1700000300, 300) == SIG_OK, "ts exactly tolerance old verifies");
    tap_ok(sig_verify(&hdr, b, n, &good, 1, 1700000301, 300) == SIG_TS_OUT_OF_RANGE, "ts too old is rejected");
    tap_ok(sig_verify(&hdr, b, n, &good, 1, 1699999699, 300) == SIG_TS_OUT_OF_RANGE,
           "ts too far in the future is rejected");
    tap_ok(sig_verify(&hdr, b, n, &good, 1, 1699999700, 300) == SIG_OK,
           "ts exactly tolerance in the future verifies");
    for (char *p = header; *p; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
    tap_ok(sig_parse(header, strlen(header), &hdr) == SIG_OK &&
               sig_verify(&hdr, b, n, &good, 1, 1700000000, 300) == SIG_OK,
           "upper-case hex h1 verifies");
}

/* A prepared secret (keyed state computed once) gives the same HMAC as the
 * key itself, for keys shorter and longer than a SHA-256 block. */
static void test_prepared_secrets(void)
{
    static const char *keys[] = {"pdl_ntfset_good",
                                 "pdl_ntfset_01m8rzznf9x0c5wv62jnczz00f_/UQYUd+sfD4G3Lf1U3eQuIlM9RlMARUU"};
    const unsigned char *body = (const unsigned char *)"{\"event_id\":\"evt_1\"}";
    size_t n = strlen((const char *)body);

    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        struct sig_secret plain = {.key = keys[i], .len = strlen(keys[i])}, prepared = plain;
        crypto_auth_hmacsha256_state keyed;
        unsigned char a[SIG_HMAC_BYTES], b[SIG_HMAC_BYTES];
        char header[SIG_HEADER_BUF];
        struct sig_header hdr;

        sig_prepare(&prepared, &keyed);
        sig_compute(&plain, 1700000000, body, n, a);
        sig_compute(&prepared, 1700000000, body, n, b);
        tap_ok(prepared.keyed == &keyed && memcmp(a, b, sizeof a) == 0,
               "prepared secret gives the same HMAC (key of %zu bytes)", plain.len);
        sig_compute(&prepared, 1700000000, body, n, b);
        tap_ok(memcmp(a, b, sizeof a) == 0, "a prepared state is reused unchanged (key of %zu bytes)", plain.len);
        sig_format(&plain, 1700000000, body, n, header);
        tap_ok(sig_parse(header, strlen(header), &hdr) == SIG_OK &&
                   sig_verify(&hdr, body, n - 1, &prepared, 1, 1700000000, 300) == SIG_MISMATCH,
               "a prepared secret still rejects a changed body (key of %zu bytes)", plain.len);
    }
}

void test_sig(void)
{
    test_vectors();
    test_parser_edges();
    test_parser_limits();
    test_roundtrip_and_window();
    test_prepared_secrets();
}
