/* sig.h - the Paddle-Signature header: parse, verify, sign. Pure: no I/O. */
#ifndef PADDLEHOOK_SIG_H
#define PADDLEHOOK_SIG_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "limits.h"

#define SIG_HMAC_BYTES 32
/* "ts=" + 12 digits + ";h1=" + 64 hex + NUL */
#define SIG_HEADER_BUF 96

enum sig_result {
    SIG_OK = 0,
    SIG_MISSING,          /* no header, or an empty one */
    SIG_MALFORMED,        /* not ts=<digits>;h1=<hex>[;...] */
    SIG_TS_OUT_OF_RANGE,  /* ts further from now than the tolerance */
    SIG_MISMATCH          /* no h1 matches any secret */
};

struct sig_header {
    int64_t ts;
    size_t n_h1;
    unsigned char h1[MAX_SIG_H1][SIG_HMAC_BYTES];
};

struct sig_secret {
    const char *key;
    size_t len;
    /* HMAC state after absorbing the key (sig_prepare), or NULL. It is as
     * secret as the key: keep it in the same guarded memory. */
    const crypto_auth_hmacsha256_state *keyed;
};

/* Parses `header` (len bytes, need not be NUL-terminated). Keys may come in any
 * order; unknown keys are ignored; exactly one ts; h1 values that are not 64 hex
 * digits are skipped (they can never match); at least one usable h1. */
enum sig_result sig_parse(const char *header, size_t len, struct sig_header *out);

/* Checks ts against now +/- tolerance, then accepts when any h1 equals
 * HMAC-SHA256(secret, ts ":" body) for any secret, compared in constant time. */
enum sig_result sig_verify(const struct sig_header *hdr, const unsigned char *body,
                           size_t body_len, const struct sig_secret *secrets,
                           size_t n_secrets, int64_t now, int64_t tolerance);

/* Absorbs secret's key into *keyed once and points secret->keyed at it, so
 * that each verification starts from it instead of re-hashing the key (a key
 * longer than a SHA-256 block, as Paddle's are, costs four compressions). */
void sig_prepare(struct sig_secret *secret, crypto_auth_hmacsha256_state *keyed);

/* HMAC-SHA256(secret, ts ":" body). */
void sig_compute(const struct sig_secret *secret, int64_t ts,
                 const unsigned char *body, size_t body_len,
                 unsigned char out[SIG_HMAC_BYTES]);

/* Writes "ts=<ts>;h1=<hex>" into buf (SIG_HEADER_BUF bytes). */
void sig_format(const struct sig_secret *secret, int64_t ts,
                const unsigned char *body, size_t body_len, char buf[SIG_HEADER_BUF]);

const char *sig_result_name(enum sig_result r);

#endif
