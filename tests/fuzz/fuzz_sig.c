/* fuzz_sig.c - libFuzzer target for the Paddle-Signature parser and verifier.
 *
 * Input: the header value, a '\n', then the body (no '\n': the whole input is
 * the header and the body is empty; an empty input: no header at all, NULL). Beyond memory safety (ASan/UBSan), the
 * target checks properties a reviewer would otherwise take on trust:
 *
 *   - sig_parse agrees with an independent, deliberately naive re-reading of
 *     the header grammar (README, "HTTP contract"; sig.h);
 *   - a parsed header is within the limits (1..MAX_SIG_H1 h1, ts <= 12 digits);
 *   - sig_verify accepts only when some h1 equals an HMAC computed here with
 *     libsodium's one-shot API over "<ts>:<body>", and honours the tolerance
 *     exactly at its edges (accepts at now +/- tolerance, rejects one beyond);
 *   - sig_format output round-trips through sig_parse + sig_verify.
 *
 * The secrets include those of paddle-fixtures/signature-vectors.json, so the
 * seeds made from those vectors reach the "valid" branch.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "sig.h"

static const struct sig_secret secrets[] = {
#define S(x) {.key = x, .len = sizeof(x) - 1}
    S("pdl_ntfset_01hs0t3tw21j988db1pam5xg8m_GrOWLNef+vmtjJYq4mSnHNzvc8uWoJ1I"),
    S("pdl_ntf_01hbpjmytsa32fhr36nqgc3kgb_WvRO0eL4Bj9rgYYIBZY6wZhG4EHy9jzh"),
    S("pdl_ntfset_01hsdn8d43dt7mezr1ef2jtbaw_hKkRiCGyyRhbFwIUuqiTBgI7gnWoV0Gr"),
    S("VALID_SECRET"),
    S("pdl_ntfset_01j00000000000000000000000_fuzzfuzzfuzzfuzzfuzzfuzzfuzz"),
#undef S
};
#define N_SECRETS (sizeof secrets / sizeof secrets[0])

/* The same secrets with keyed HMAC states, as the worker verifies with them. */
static struct sig_secret prepared[N_SECRETS];
static crypto_auth_hmacsha256_state keyed[N_SECRETS];

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_sig: property violated: " __VA_ARGS__);     \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* ---- the reference reading of the header -------------------------------- */

struct ref {
    enum sig_result r;
    int64_t ts;
    size_t n_h1;
    unsigned char h1[MAX_SIG_H1][SIG_HMAC_BYTES];
};

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Splits on ';' into a table of parts first, then judges each: a different
 * shape from sig.c's single pass on purpose. */
static void ref_parse(const unsigned char *h, size_t len, struct ref *out)
{
    size_t starts[MAX_SIG_HEADER + 1], ends[MAX_SIG_HEADER + 1], n = 0, s = 0;
    int ts_seen = 0, h1_seen = 0;

    memset(out, 0, sizeof *out);
    out->r = SIG_MALFORMED;
    if (len == 0) {
        out->r = SIG_MISSING;
        return;
    }
    if (len > MAX_SIG_HEADER) return;
    for (size_t i = 0; i < len; i++)
        if (h[i] == ',') return;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || h[i] == ';') {
            starts[n] = s;
            ends[n] = i;
            n++;
            s = i + 1;
        }
    }
    for (size_t k = 0; k < n; k++) {
        size_t a = starts[k], b = ends[k], eq;
        while (a < b && (h[a] == ' ' || h[a] == '\t')) a++;
        while (b > a && (h[b - 1] == ' ' || h[b - 1] == '\t')) b--;
        if (a == b) return; /* empty part */
        for (eq = a; eq < b && h[eq] != '='; eq++) {}
        if (eq == b || eq == a) return; /* no '=' or empty key */
        if (eq - a == 2 && h[a] == 't' && h[a + 1] == 's') {
            size_t d = b - eq - 1;
            int64_t v = 0;
            if (ts_seen || d == 0 || d > 12) return;
            for (size_t i = eq + 1; i < b; i++) {
                if (h[i] < '0' || h[i] > '9') return;
                v = v * 10 + (h[i] - '0');
            }
            out->ts = v;
            ts_seen = 1;
        } else if (eq - a == 2 && h[a] == 'h' && h[a + 1] == '1') {
            int ok = b - eq - 1 == 64;
            unsigned char mac[SIG_HMAC_BYTES];
            if (++h1_seen > MAX_SIG_H1) return;
            for (size_t i = 0; ok && i < 32; i++) {
                int hi = hexval(h[eq + 1 + 2 * i]), lo = hexval(h[eq + 2 + 2 * i]);
                if (hi < 0 || lo < 0) ok = 0;
                else mac[i] = (unsigned char)(hi << 4 | lo);
            }
            if (ok) memcpy(out->h1[out->n_h1++], mac, sizeof mac);
        }
    }
    if (ts_seen && out->n_h1 > 0) out->r = SIG_OK;
}

/* ---- HMAC computed independently of sig_compute ------------------------- */

static int any_h1_matches(const struct sig_header *hdr, const unsigned char *body, size_t len)
{
    char prefix[32];
    int plen = snprintf(prefix, sizeof prefix, "%" PRId64 ":", hdr->ts);
    unsigned char *msg = malloc((size_t)plen + len + 1);
    int found = 0;

    if (msg == NULL) abort();
    memcpy(msg, prefix, (size_t)plen);
    if (len) memcpy(msg + plen, body, len);
    for (size_t s = 0; s < N_SECRETS; s++) {
        unsigned char mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, (const unsigned char *)secrets[s].key, secrets[s].len);
        crypto_auth_hmacsha256_update(&st, msg, (size_t)plen + len);
        crypto_auth_hmacsha256_final(&st, mac);
        for (size_t i = 0; i < hdr->n_h1; i++)
            if (memcmp(mac, hdr->h1[i], sizeof mac) == 0) found = 1;
    }
    free(msg);
    return found;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (sodium_init() < 0) abort();
    for (size_t i = 0; i < N_SECRETS; i++) {
        prepared[i] = secrets[i];
        sig_prepare(&prepared[i], &keyed[i]);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t hlen = nl ? (size_t)(nl - data) : size;
    const unsigned char *body = nl ? nl + 1 : data + size;
    size_t blen = nl ? size - hlen - 1 : 0;
    /* Exact-size heap copies so ASan sees any read past either end. */
    char *header = malloc(hlen ? hlen : 1);
    unsigned char *b = malloc(blen ? blen : 1);
    struct sig_header hdr;
    struct ref ref;
    enum sig_result r;

    if (header == NULL || b == NULL) abort();
    if (hlen) memcpy(header, data, hlen);
    if (blen) memcpy(b, body, blen);

    /* The worker passes NULL, 0 when the header is absent (an empty input
     * here); "" when it is present but empty (a lone '\n'). */
    r = sig_parse(size == 0 ? NULL : header, hlen, &hdr);
    ref_parse((const unsigned char *)header, hlen, &ref);
    CHECK(r == ref.r, "sig_parse says %s, the reference reading says %s", sig_result_name(r),
          sig_result_name(ref.r));
    if (r == SIG_OK) {
        CHECK(hdr.n_h1 >= 1 && hdr.n_h1 <= MAX_SIG_H1, "n_h1 = %zu", hdr.n_h1);
        CHECK(hdr.ts >= 0 && hdr.ts <= INT64_C(999999999999), "ts = %" PRId64, hdr.ts);
        CHECK(hdr.ts == ref.ts, "ts %" PRId64 " vs reference %" PRId64, hdr.ts, ref.ts);
        CHECK(hdr.n_h1 == ref.n_h1 && memcmp(hdr.h1, ref.h1, hdr.n_h1 * SIG_HMAC_BYTES) == 0,
              "the usable h1 values differ from the reference");

        int64_t tol = 300;
        int truth = any_h1_matches(&hdr, b, blen);
        enum sig_result v = sig_verify(&hdr, b, blen, secrets, N_SECRETS, hdr.ts, tol);
        CHECK(v == (truth ? SIG_OK : SIG_MISMATCH), "verify at now=ts gave %s, HMAC says %d",
              sig_result_name(v), truth);
        v = sig_verify(&hdr, b, blen, prepared, N_SECRETS, hdr.ts, tol);
        CHECK(v == (truth ? SIG_OK : SIG_MISMATCH), "verify with keyed states gave %s, HMAC says %d",
              sig_result_name(v), truth);
        /* Tolerance edges, both directions. */
        v = sig_verify(&hdr, b, blen, secrets, N_SECRETS, hdr.ts + tol, tol);
        CHECK(v != SIG_TS_OUT_OF_RANGE, "ts exactly tolerance old was refused");
        v = sig_verify(&hdr, b, blen, secrets, N_SECRETS, hdr.ts - tol, tol);
        CHECK(v != SIG_TS_OUT_OF_RANGE, "ts exactly tolerance ahead was refused");
        v = sig_verify(&hdr, b, blen, secrets, N_SECRETS, hdr.ts + tol + 1, tol);
        CHECK(v == SIG_TS_OUT_OF_RANGE, "ts one second too old was accepted");
        v = sig_verify(&hdr, b, blen, secrets, N_SECRETS, hdr.ts - tol - 1, tol);
        CHECK(v == SIG_TS_OUT_OF_RANGE, "ts one second in the future was accepted");
        /* No secret at all never verifies. */
        v = sig_verify(&hdr, b, blen, secrets, 0, hdr.ts, tol);
        CHECK(v == SIG_MISMATCH, "verified without any secret");
    } else {
        CHECK(r == SIG_MISSING || r == SIG_MALFORMED, "sig_parse returned %d", (int)r);
        CHECK(r != SIG_MISSING || hlen == 0, "non-empty header reported missing");
    }

    /* What we sign, we accept: for every secret, at a ts taken from the input. */
    {
        char buf[SIG_HEADER_BUF];
        int64_t ts = 0;
        for (size_t i = 0; i < hlen && i < 12; i++) ts = ts * 10 + ((unsigned char)header[i] % 10);
        for (size_t s = 0; s < N_SECRETS; s++) {
            struct sig_header h2;
            sig_format(&secrets[s], ts, b, blen, buf);
            CHECK(sig_parse(buf, strlen(buf), &h2) == SIG_OK, "own header %s does not parse", buf);
            CHECK(sig_verify(&h2, b, blen, &secrets[s], 1, ts, 5) == SIG_OK, "own header does not verify");
            if (blen > 0) { /* one flipped bit of the body must break it */
                b[blen / 2] ^= 1;
                CHECK(sig_verify(&h2, b, blen, &secrets[s], 1, ts, 5) == SIG_MISMATCH,
                      "a changed body still verifies");
                b[blen / 2] ^= 1;
            }
        }
    }
    free(header);
    free(b);
    return 0;
}
