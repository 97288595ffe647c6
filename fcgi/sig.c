/* sig.c - Paddle-Signature parsing and HMAC-SHA256 verification.
 *
 * Paddle signs "<ts>:<raw body>" with the endpoint's secret string as the key
 * and sends "ts=<unix seconds>;h1=<hex>". Several h1 values are allowed so
 * that an endpoint can hold an old and a new secret during rotation.
 */
#include "sig.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

static int is_space(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && is_space(**s)) { (*s)++; (*len)--; }
    while (*len > 0 && is_space((*s)[*len - 1])) (*len)--;
}

static int parse_ts(const char *v, size_t len, int64_t *ts)
{
    int64_t x = 0;
    if (len == 0 || len > MAX_SIG_TS_DIGITS) return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    *ts = x;
    return 0;
}

static int parse_h1(const char *v, size_t len, unsigned char out[SIG_HMAC_BYTES])
{
    size_t bin_len = 0;
    const char *end = NULL;
    if (len != 2 * SIG_HMAC_BYTES) return -1;
    if (sodium_hex2bin(out, SIG_HMAC_BYTES, v, len, NULL, &bin_len, &end) != 0) return -1;
    return (bin_len == SIG_HMAC_BYTES && end == v + len) ? 0 : -1;
}

enum sig_result sig_parse(const char *header, size_t len, struct sig_header *out)
{
    int have_ts = 0, saw_h1 = 0;
    const char *p, *end;

    memset(out, 0, sizeof *out);
    if (header == NULL || len == 0) return SIG_MISSING;
    p = header;
    end = header + len;
    if (len > MAX_SIG_HEADER) return SIG_MALFORMED;
    /* Proxies join a repeated header with ", "; Paddle never sends a comma. */
    if (memchr(header, ',', len) != NULL) return SIG_MALFORMED;

    while (p <= end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *part_end = semi ? semi : end;
        const char *part = p, *eq;
        size_t part_len = (size_t)(part_end - p);

        trim(&part, &part_len);
        eq = memchr(part, '=', part_len);
        if (part_len == 0 || eq == NULL || eq == part) return SIG_MALFORMED;

        size_t key_len = (size_t)(eq - part);
        const char *val = eq + 1;
        size_t val_len = part_len - key_len - 1;
        if (key_len == 2 && memcmp(part, "ts", 2) == 0) {
            if (have_ts || parse_ts(val, val_len, &out->ts) != 0) return SIG_MALFORMED;
            have_ts = 1;
        } else if (key_len == 2 && memcmp(part, "h1", 2) == 0) {
            if (++saw_h1 > MAX_SIG_H1) return SIG_MALFORMED;
            if (parse_h1(val, val_len, out->h1[out->n_h1]) == 0) out->n_h1++;
        }
        if (semi == NULL) break;
        p = semi + 1;
    }
    if (!have_ts || out->n_h1 == 0) return SIG_MALFORMED;
    return SIG_OK;
}

void sig_prepare(struct sig_secret *secret, crypto_auth_hmacsha256_state *keyed)
{
    crypto_auth_hmacsha256_init(keyed, (const unsigned char *)secret->key, secret->len);
    secret->keyed = keyed;
}

void sig_compute(const struct sig_secret *secret, int64_t ts,
                 const unsigned char *body, size_t body_len,
                 unsigned char out[SIG_HMAC_BYTES])
{
    crypto_auth_hmacsha256_state st;
    char prefix[MAX_SIG_TS_DIGITS + 24];
    int n = snprintf(prefix, sizeof prefix, "%" PRId64 ":", ts);

    if (secret->keyed)
        st = *secret->keyed;
    else
        crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret->key, secret->len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)prefix, (size_t)n);
    crypto_auth_hmacsha256_update(&st, body, body_len);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

enum sig_result sig_verify(const struct sig_header *hdr, const unsigned char *body,
                           size_t body_len, const struct sig_secret *secrets,
                           size_t n_secrets, int64_t now, int64_t tolerance)
{
    int matched = 0;

    if (hdr->ts > now + tolerance || hdr->ts < now - tolerance) return SIG_TS_OUT_OF_RANGE;
    for (size_t s = 0; s < n_secrets; s++) {
        unsigned char mac[SIG_HMAC_BYTES];
        sig_compute(&secrets[s], hdr->ts, body, body_len, mac);
        /* Every pair is compared so timing says nothing about which matched. */
        for (size_t i = 0; i < hdr->n_h1; i++)
            matched |= sodium_memcmp(mac, hdr->h1[i], SIG_HMAC_BYTES) == 0;
        sodium_memzero(mac, sizeof mac);
    }
    return matched ? SIG_OK : SIG_MISMATCH;
}

void sig_format(const struct sig_secret *secret, int64_t ts,
                const unsigned char *body, size_t body_len, char buf[SIG_HEADER_BUF])
{
    unsigned char mac[SIG_HMAC_BYTES];
    char hex[2 * SIG_HMAC_BYTES + 1];

    sig_compute(secret, ts, body, body_len, mac);
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    snprintf(buf, SIG_HEADER_BUF, "ts=%" PRId64 ";h1=%s", ts, hex);
}

const char *sig_result_name(enum sig_result r)
{
    switch (r) {
    case SIG_OK: return "ok";
    case SIG_MISSING: return "missing_signature";
    case SIG_MALFORMED: return "invalid_signature";
    case SIG_TS_OUT_OF_RANGE: return "timestamp_out_of_range";
    case SIG_MISMATCH: return "invalid_signature";
    }
    return "invalid_signature";
}
